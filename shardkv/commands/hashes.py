"""Hash commands.  Fields and values are kept packed as field, value, field, value ... (see
collections.py); a dict is built for the duration of one command."""

from __future__ import annotations

import math
import random

from shardkv import errors, protocol
from shardkv.commands.args import INT64_MAX, INT64_MIN, ShardCtx, maybe_int, parse_float, parse_int
from shardkv.commands.collections import Found, load, random_pick, save
from shardkv.commands.sets import scan_args
from shardkv.commands.strings import format_float_human
from shardkv.commands.table import command
from shardkv.errors import CommandError
from shardkv.store import TYPE_HASH


def _load(ctx: ShardCtx, key: bytes) -> tuple[Found, dict[bytes, bytes]]:
    found, items = load(ctx, key, TYPE_HASH)
    pairs = items or []
    return found, dict(zip(pairs[0::2], pairs[1::2], strict=True))


def _save(ctx: ShardCtx, key: bytes, fields: dict[bytes, bytes], found: Found) -> None:
    items: list[bytes] = []
    for f, v in fields.items():
        items += (f, v)
    save(ctx, key, TYPE_HASH, items, found)


def _hset(ctx: ShardCtx, argv: list[bytes]) -> int:
    if len(argv) % 2:
        raise CommandError(errors.wrong_arity(argv[0].decode(errors="replace").lower()))
    found, fields = _load(ctx, argv[1])
    added = 0
    for f, v in zip(argv[2::2], argv[3::2], strict=True):
        if f not in fields:
            added += 1
        fields[f] = v
    _save(ctx, argv[1], fields, found)
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
    found, fields = _load(ctx, argv[1])
    if argv[2] in fields:
        return protocol.ZERO
    fields[argv[2]] = argv[3]
    _save(ctx, argv[1], fields, found)
    return protocol.ONE


@command("hget", 3, "readonly fast", keys=(1, 1, 1), group="hash", summary="Get the value of a hash field")
def hget(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    value = _load(ctx, argv[1])[1].get(argv[2])
    return protocol.bulk(value) if value is not None else protocol.null(ctx.proto)


@command("hmget", -3, "readonly fast", keys=(1, 1, 1), group="hash", summary="Get the values of hash fields")
def hmget(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    fields = _load(ctx, argv[1])[1]
    null = protocol.null(ctx.proto)
    return protocol.array([protocol.bulk(fields[f]) if f in fields else null for f in argv[2:]])


@command("hdel", -3, "write fast", keys=(1, 1, 1), group="hash", summary="Delete hash fields")
def hdel(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    found, fields = _load(ctx, argv[1])
    removed = sum(1 for f in set(argv[2:]) if fields.pop(f, None) is not None)
    if removed:
        _save(ctx, argv[1], fields, found)
    return protocol.integer(removed)


@command("hlen", 2, "readonly fast", keys=(1, 1, 1), group="hash", summary="Number of fields in a hash")
def hlen(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    return protocol.integer(len(_load(ctx, argv[1])[1]))


@command("hstrlen", 3, "readonly fast", keys=(1, 1, 1), group="hash", summary="Length of a hash field's value")
def hstrlen(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    return protocol.integer(len(_load(ctx, argv[1])[1].get(argv[2], b"")))


@command("hexists", 3, "readonly fast", keys=(1, 1, 1), group="hash", summary="Does a hash field exist")
def hexists(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    return protocol.ONE if argv[2] in _load(ctx, argv[1])[1] else protocol.ZERO


@command("hkeys", 2, "readonly", keys=(1, 1, 1), group="hash", summary="All the fields of a hash")
def hkeys(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    return protocol.bulk_array(list(_load(ctx, argv[1])[1]))


@command("hvals", 2, "readonly", keys=(1, 1, 1), group="hash", summary="All the values of a hash")
def hvals(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    return protocol.bulk_array(list(_load(ctx, argv[1])[1].values()))


@command("hgetall", 2, "readonly", keys=(1, 1, 1), group="hash", summary="All the fields and values of a hash")
def hgetall(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    fields = _load(ctx, argv[1])[1]
    return protocol.map_reply(ctx.proto, [(protocol.bulk(f), protocol.bulk(v)) for f, v in fields.items()])


@command("hincrby", 4, "write denyoom fast", keys=(1, 1, 1), group="hash",
         summary="Increment the integer value of a hash field")
def hincrby(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    delta = parse_int(argv[3])
    found, fields = _load(ctx, argv[1])
    current = 0
    if argv[2] in fields:
        n = maybe_int(fields[argv[2]])
        if n is None:
            raise CommandError("ERR hash value is not an integer")
        current = n
    result = current + delta
    if not INT64_MIN <= result <= INT64_MAX:
        raise CommandError(errors.INCR_OVERFLOW)
    fields[argv[2]] = b"%d" % result
    _save(ctx, argv[1], fields, found)
    return protocol.integer(result)


@command("hincrbyfloat", 4, "write denyoom fast", keys=(1, 1, 1), group="hash",
         summary="Increment the float value of a hash field")
def hincrbyfloat(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    delta = parse_float(argv[3])
    if math.isinf(delta):
        raise CommandError("ERR value is NaN or Infinity")
    found, fields = _load(ctx, argv[1])
    current = 0.0
    if argv[2] in fields:
        try:
            current = parse_float(fields[argv[2]])
        except CommandError:
            raise CommandError("ERR hash value is not a float") from None
    result = current + delta
    if math.isnan(result) or math.isinf(result):
        raise CommandError("ERR increment would produce NaN or Infinity")
    text = format_float_human(result)
    fields[argv[2]] = text
    _save(ctx, argv[1], fields, found)
    return protocol.bulk(text)


@command("hrandfield", -2, "readonly", keys=(1, 1, 1), group="hash", summary="Random fields of a hash")
def hrandfield(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    if len(argv) > 4 or (len(argv) == 4 and argv[3].upper() != b"WITHVALUES"):
        raise CommandError(errors.SYNTAX)
    count = parse_int(argv[2]) if len(argv) >= 3 else None
    with_values = len(argv) == 4
    if count is not None and not -(1 << 62) <= count <= (1 << 62):
        raise CommandError("ERR value is out of range")
    fields = _load(ctx, argv[1])[1]
    names = list(fields)
    if count is None:
        return protocol.bulk(random.choice(names)) if names else protocol.null(ctx.proto)
    picked = random_pick(names, count)
    if not with_values:
        return protocol.bulk_array(picked)
    if ctx.proto == 3:
        return protocol.array([protocol.bulk_array([f, fields[f]]) for f in picked])
    return protocol.bulk_array([x for f in picked for x in (f, fields[f])])


@command("hscan", -3, "readonly", keys=(1, 1, 1), group="hash", summary="Incrementally iterate hash fields")
def hscan(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    match, _ = scan_args(argv, 2)
    fields = _load(ctx, argv[1])[1]
    out: list[bytes] = []
    for f, v in fields.items():
        if match is None or match(f):  # type: ignore[operator]
            out += (f, v)
    return protocol.array([protocol.bulk(b"0"), protocol.bulk_array(out)])
