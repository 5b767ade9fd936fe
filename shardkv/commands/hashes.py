"""Hash commands, through collections.Fields: a small hash is read into a dict for one command,
a large one is read and changed in place through its table (collstore.py)."""

from __future__ import annotations

from shardkv import errors, protocol
from shardkv.commands.args import (
    INT64_MAX,
    INT64_MIN,
    ShardCtx,
    add_to_long_double,
    maybe_int,
    parse_int,
    parse_long_double,
)
from shardkv.commands.collections import Fields, field_in, reply_budget
from shardkv.commands.notify import GENERIC, HASH, notify
from shardkv.commands.sets import random_count, scan_step
from shardkv.commands.table import command
from shardkv.errors import CommandError
from shardkv.layout import TYPE_HASH
from shardkv.native import is_infinite


def _fields(ctx: ShardCtx, key: bytes) -> Fields:
    return Fields(ctx, key, TYPE_HASH)


def _hset(ctx: ShardCtx, argv: list[bytes]) -> int:
    if len(argv) % 2:
        raise CommandError(errors.wrong_arity(argv[0].decode(errors="replace").lower()))
    added = _fields(ctx, argv[1]).set_many(dict(zip(argv[2::2], argv[3::2], strict=True)))
    notify(ctx, HASH, b"hset", argv[1])  # even if no field changed, as Redis does
    return added


@command("hset", -4, "write denyoom fast", keys=(1, 1, 1), group="hash", summary="Set the value of hash fields")
def hset(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    return protocol.integer(_hset(ctx, argv))


@command("hmset", -4, "write denyoom fast", keys=(1, 1, 1), group="hash", summary="Set several hash fields")
def hmset(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    _hset(ctx, argv)
    return protocol.OK


@command("hsetnx", 4, "write denyoom fast", keys=(1, 1, 1), group="hash",
         summary="Set a hash field, only if it does not exist")
def hsetnx(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    fields = _fields(ctx, argv[1])
    if fields.contains(argv[2]):
        return protocol.ZERO
    fields.set_many({argv[2]: argv[3]})
    notify(ctx, HASH, b"hset", argv[1])
    return protocol.ONE


@command("hget", 3, "readonly fast", keys=(1, 1, 1), group="hash", summary="Get the value of a hash field")
def hget(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    value = field_in(ctx, argv[1], TYPE_HASH, argv[2])
    return protocol.bulk(value) if value is not None else protocol.null(ctx.proto)


@command("hmget", -3, "readonly fast", keys=(1, 1, 1), group="hash", summary="Get the values of hash fields")
def hmget(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    fields = _fields(ctx, argv[1])
    null = protocol.null(ctx.proto)
    return protocol.array([null if v is None else protocol.bulk(v) for v in map(fields.get, argv[2:])])


@command("hdel", -3, "write fast", keys=(1, 1, 1), group="hash", summary="Delete hash fields")
def hdel(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    fields = _fields(ctx, argv[1])
    removed = fields.delete_many(argv[2:])
    if removed:
        notify(ctx, HASH, b"hdel", argv[1])
        if not len(fields):
            notify(ctx, GENERIC, b"del", argv[1])
    return protocol.integer(removed)


@command("hlen", 2, "readonly fast", keys=(1, 1, 1), group="hash", summary="Number of fields in a hash")
def hlen(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    return protocol.integer(len(_fields(ctx, argv[1])))


@command("hstrlen", 3, "readonly fast", keys=(1, 1, 1), group="hash", summary="Length of a hash field's value")
def hstrlen(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    return protocol.integer(len(field_in(ctx, argv[1], TYPE_HASH, argv[2]) or b""))


@command("hexists", 3, "readonly fast", keys=(1, 1, 1), group="hash", summary="Does a hash field exist")
def hexists(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    return protocol.ONE if field_in(ctx, argv[1], TYPE_HASH, argv[2]) is not None else protocol.ZERO


@command("hkeys", 2, "readonly", keys=(1, 1, 1), group="hash", summary="All the fields of a hash")
def hkeys(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    return protocol.bulk_array(reply_budget(ctx).bulks(_fields(ctx, argv[1]).names()))


@command("hvals", 2, "readonly", keys=(1, 1, 1), group="hash", summary="All the values of a hash")
def hvals(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    return protocol.bulk_array(reply_budget(ctx).bulks([v for _, v in _fields(ctx, argv[1]).entries()]))


@command("hgetall", 2, "readonly", keys=(1, 1, 1), group="hash", summary="All the fields and values of a hash")
def hgetall(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    entries = _fields(ctx, argv[1]).entries()
    reply_budget(ctx).bulks([x for entry in entries for x in entry])
    return protocol.map_reply(ctx.proto, [(protocol.bulk(f), protocol.bulk(v)) for f, v in entries])


@command("hincrby", 4, "write denyoom fast", keys=(1, 1, 1), group="hash",
         summary="Increment the integer value of a hash field")
def hincrby(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    delta = parse_int(argv[3])
    fields = _fields(ctx, argv[1])
    current = 0
    old = fields.get(argv[2])
    if old is not None:
        n = maybe_int(old)
        if n is None:
            raise CommandError("ERR hash value is not an integer")
        current = n
    result = current + delta
    if not INT64_MIN <= result <= INT64_MAX:
        raise CommandError(errors.INCR_OVERFLOW)
    fields.set_many({argv[2]: b"%d" % result})
    notify(ctx, HASH, b"hincrby", argv[1])
    return protocol.integer(result)


@command("hincrbyfloat", 4, "write denyoom fast", keys=(1, 1, 1), group="hash",
         summary="Increment the float value of a hash field")
def hincrbyfloat(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    parse_long_double(argv[3])
    if is_infinite(argv[3]):  # as a long double: 1e400 is a number
        raise CommandError("ERR value is NaN or Infinity")
    fields = _fields(ctx, argv[1])
    text = add_to_long_double(fields.get(argv[2]), argv[3], "ERR hash value is not a float")
    fields.set_many({argv[2]: text})
    notify(ctx, HASH, b"hincrbyfloat", argv[1])
    return protocol.bulk(text)


@command("hrandfield", -2, "readonly", keys=(1, 1, 1), group="hash", summary="Random fields of a hash")
def hrandfield(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    count = random_count(argv[2]) if len(argv) >= 3 else None  # Redis's order: count, syntax, range
    if len(argv) > 4 or (len(argv) == 4 and argv[3].upper() != b"WITHVALUES"):
        raise CommandError(errors.SYNTAX)
    with_values = len(argv) == 4
    if with_values and count is not None and not -(INT64_MAX // 2) <= count <= INT64_MAX // 2:
        raise CommandError("ERR value is out of range")
    fields = _fields(ctx, argv[1])
    if count is None:
        picked = fields.random_entries(1)
        return protocol.bulk(picked[0][0]) if picked else protocol.null(ctx.proto)
    budget = reply_budget(ctx)
    if count < 0:
        entries = fields.random_repeats(-count, budget, with_values)
    else:
        entries = fields.random_distinct(count)
        budget.bulks([x for entry in entries for x in (entry if with_values else entry[:1])])
    if not with_values:
        return protocol.bulk_array([f for f, _ in entries])
    if ctx.proto == 3:
        return protocol.array([protocol.bulk_array([f, v]) for f, v in entries])
    return protocol.bulk_array([x for entry in entries for x in entry])


@command("hscan", -3, "readonly", keys=(1, 1, 1), group="hash", summary="Incrementally iterate hash fields")
def hscan(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    cursor, entries = scan_step(ctx, argv, TYPE_HASH)
    return protocol.array([protocol.bulk(b"%d" % cursor), protocol.bulk_array([x for entry in entries for x in entry])])
