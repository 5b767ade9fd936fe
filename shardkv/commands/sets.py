"""Set commands, through collections.Fields (packed or a table, see collstore.py); algebra across
shards reads each set from its shard under the transaction's locks (`across` bodies)."""

from __future__ import annotations

from collections.abc import Callable

from shardkv import errors, protocol
from shardkv.collstore import Entry
from shardkv.commands.across import CrossShard, is_error
from shardkv.commands.args import INT64_MAX, INT64_MIN, ShardCtx, glob_matcher, maybe_int, parse_cursor, parse_int
from shardkv.commands.collections import (
    Fields,
    batch_op,
    field_in,
    load,
    notify_new,
    replace,
    reply_budget,
    take_events,
)
from shardkv.commands.notify import GENERIC, SET, notify
from shardkv.commands.table import Where, command
from shardkv.errors import CommandError
from shardkv.layout import TYPE_SET
from shardkv.protocol import read_reply


def _members(ctx: ShardCtx, key: bytes) -> list[bytes]:
    return load(ctx, key, TYPE_SET)[1] or []


def set_encoding(ctx: ShardCtx, members: list[bytes]) -> bytes:
    """What Redis 7.0 would report: intset for few integers, else hashtable."""
    small = len(members) <= ctx.stats.tunable("set-max-intset-entries")
    return b"intset" if small and all(maybe_int(m) is not None for m in members) else b"hashtable"


@command("sadd", -3, "write denyoom fast", keys=(1, 1, 1), group="set", summary="Add members to a set")
def sadd(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    added = Fields(ctx, argv[1], TYPE_SET).set_many(dict.fromkeys(argv[2:], b""))
    if added:
        notify(ctx, SET, b"sadd", argv[1])
    return protocol.integer(added)


@command("srem", -3, "write fast", keys=(1, 1, 1), group="set", summary="Remove members from a set")
def srem(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    members = Fields(ctx, argv[1], TYPE_SET)
    removed = members.delete_many(argv[2:])
    if removed:
        _removed(ctx, argv[1], b"srem", not len(members))
    return protocol.integer(removed)


def _removed(ctx: ShardCtx, key: bytes, event: bytes, emptied: bool) -> None:
    """Redis's events once members left a set: srem / spop, then del if it is gone."""
    notify(ctx, SET, event, key)
    if emptied:
        notify(ctx, GENERIC, b"del", key)


@command("scard", 2, "readonly fast", keys=(1, 1, 1), group="set", summary="Number of members in a set")
def scard(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    return protocol.integer(len(Fields(ctx, argv[1], TYPE_SET)))


@command("sismember", 3, "readonly fast", keys=(1, 1, 1), group="set", summary="Is member in the set")
def sismember(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    return protocol.ONE if field_in(ctx, argv[1], TYPE_SET, argv[2]) is not None else protocol.ZERO


@command("smismember", -3, "readonly fast", keys=(1, 1, 1), group="set", summary="Are members in the set")
def smismember(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    members = Fields(ctx, argv[1], TYPE_SET)
    return protocol.array([protocol.ONE if members.contains(m) else protocol.ZERO for m in argv[2:]])


def set_reply(proto: int, members: list[bytes]) -> bytes:
    return protocol.set_reply(proto, [protocol.bulk(m) for m in members])


@command("smembers", 2, "readonly", keys=(1, 1, 1), group="set", summary="All the members of a set")
def smembers(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    return set_reply(ctx.proto, reply_budget(ctx).bulks(_members(ctx, argv[1])))


def random_count(raw: bytes) -> int:
    """The count of SRANDMEMBER/HRANDFIELD: a C long other than LONG_MIN (its negation must fit)."""
    count = parse_int(raw)
    if count == INT64_MIN:
        raise CommandError(f"ERR value is out of range, value must between {-INT64_MAX} and {INT64_MAX}")
    return count


@command("srandmember", -2, "readonly", keys=(1, 1, 1), group="set", summary="Random members of a set")
def srandmember(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    if len(argv) > 3:
        raise CommandError(errors.SYNTAX)
    count = random_count(argv[2]) if len(argv) == 3 else None
    members = Fields(ctx, argv[1], TYPE_SET)
    if count is None:
        picked = members.random_entries(1)
        return protocol.bulk(picked[0][0]) if picked else protocol.null(ctx.proto)
    budget = reply_budget(ctx)
    if count < 0:
        return protocol.bulk_array([m for m, _ in members.random_repeats(-count, budget, with_values=False)])
    return protocol.bulk_array(budget.bulks([m for m, _ in members.random_distinct(count)]))


@command("spop", -2, "write fast", keys=(1, 1, 1), group="set", summary="Remove and return random members")
def spop(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    if len(argv) > 3:
        raise CommandError(errors.SYNTAX)
    count = None
    if len(argv) == 3:
        count = parse_int(argv[2], "ERR value is out of range, must be positive")
        if count < 0:
            raise CommandError("ERR value is out of range, must be positive")
    members = Fields(ctx, argv[1], TYPE_SET)
    if not len(members):
        return protocol.null(ctx.proto) if count is None else set_reply(ctx.proto, [])  # RESP3: an empty set
    picked = [m for m, _ in members.random_distinct(1 if count is None else count)]
    members.delete_many(picked)
    if picked:
        _removed(ctx, argv[1], b"spop", not len(members))
    if count is None:
        return protocol.bulk(picked[0])
    return set_reply(ctx.proto, picked)


@command("smove", 4, "write fast", keys=(1, 2, 1), group="set", summary="Move a member from one set to another",
         across=lambda tx, argv: smove_across(tx, argv))
def smove(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    src = Fields(ctx, argv[1], TYPE_SET)
    if not src.exists:  # as in Redis: 0 before looking at the destination
        return protocol.ZERO
    dst = Fields(ctx, argv[2], TYPE_SET)  # WRONGTYPE before anything changes
    if not src.contains(argv[3]):
        return protocol.ZERO
    if argv[1] == argv[2]:
        return protocol.ONE
    adding = not dst.contains(argv[3])
    emptied = len(src) == 1
    if src.table is None and dst.table is None:  # both small: one batch, all or nothing across a crash
        ops = [batch_op(ctx, argv[1], TYPE_SET, [m for m in src.names() if m != argv[3]], src.found)]
        if adding:
            ops.append(batch_op(ctx, argv[2], TYPE_SET, dst.names() + [argv[3]], dst.found))
        ctx.store.write_batch(ops)
        _removed(ctx, argv[1], b"srem", emptied)
        if not dst.exists:
            notify_new(ctx, argv[2])  # write_batch does not emit it
    else:
        # A large set changes in place: add first, so a crash in between never loses the member;
        # the destination's events (its `new`) wait for the source's, as Redis emits them.
        mark = len(ctx.store.events)
        dst.set_many({argv[3]: b""})
        deferred = take_events(ctx, mark)
        src.delete_many([argv[3]])
        _removed(ctx, argv[1], b"srem", emptied)
        ctx.store.events.extend(deferred)
    if adding:
        notify(ctx, SET, b"sadd", argv[2])
    return protocol.ONE


async def smove_across(tx: CrossShard, argv: list[bytes]) -> bytes:
    src_shard, dst_shard = tx.shard_of(argv[1]), tx.shard_of(argv[2])
    src_type = read_reply(await tx.apply(src_shard, [b"type", argv[1]]))[0]
    if src_type == b"none":  # as in Redis: 0 before looking at the destination
        return protocol.ZERO
    dst_type = read_reply(await tx.apply(dst_shard, [b"type", argv[2]]))[0]
    if src_type != b"set" or dst_type not in (b"set", b"none"):
        return protocol.error(errors.WRONGTYPE)
    removed = await tx.apply(src_shard, [b"srem", argv[1], argv[3]])
    if is_error(removed) or removed == protocol.ZERO:
        return removed
    await tx.apply(dst_shard, [b"sadd", argv[2], argv[3]])
    return protocol.ONE


# ---------------------------------------------------------------------- algebra


def algebra(op: str, sets: list[list[bytes]]) -> list[bytes]:
    """Members of the intersection / union / difference, in the first set's order where it has one."""
    if op == "inter":
        if not sets or any(not s for s in sets):
            return []
        rest = [set(s) for s in sets[1:]]
        return [m for m in sets[0] if all(m in r for r in rest)]
    if op == "union":
        seen: dict[bytes, None] = {}
        for s in sets:
            for m in s:
                seen.setdefault(m)
        return list(seen)
    others = set().union(*sets[1:]) if len(sets) > 1 else set()
    return [m for m in (sets[0] if sets else []) if m not in others]


def _gather_local(ctx: ShardCtx, keys: list[bytes]) -> list[list[bytes]]:
    return [_members(ctx, k) for k in keys]


async def _gather(tx: CrossShard, keys: list[bytes]) -> list[list[bytes]] | bytes:
    out = []
    for key in keys:
        reply = await tx.apply(tx.shard_of(key), [b"smembers", key])
        if is_error(reply):
            return reply
        members = read_reply(reply)[0]
        assert isinstance(members, list)
        out.append(members)
    return out


def _algebra_command(op: str, store: bool) -> None:
    name = f"s{op}{'store' if store else ''}"
    event = name.encode()  # the STORE forms' event is their name: sinterstore, sunionstore, sdiffstore
    first = 2 if store else 1

    def handler(ctx: ShardCtx, argv: list[bytes]) -> bytes:
        result = algebra(op, _gather_local(ctx, argv[first:]))
        if not store:
            return set_reply(ctx.proto, result)
        replace(ctx, argv[1], TYPE_SET, result, SET, event)
        return protocol.integer(len(result))

    async def across(tx: CrossShard, argv: list[bytes]) -> bytes:
        sets = await _gather(tx, argv[first:])
        if isinstance(sets, bytes):
            return sets
        result = algebra(op, sets)
        if not store:
            return set_reply(tx.proto, result)
        reply = await tx.apply(tx.shard_of(argv[1]), [b"__sreplace", event, argv[1], *result])
        return reply if is_error(reply) else protocol.integer(len(result))

    verb = {"inter": "Intersect", "union": "Add", "diff": "Subtract"}[op]
    command(name, -3 if store else -2, "write denyoom" if store else "readonly", keys=(1, -1, 1), group="set",
            summary=f"{verb} multiple sets" + (" and store the result in a key" if store else ""),
            across=across)(handler)


for _op in ("inter", "union", "diff"):
    _algebra_command(_op, store=False)
    _algebra_command(_op, store=True)


@command("__sreplace", -3, "write denyoom", where=Where.SHARD, group="internal",
         summary="Replace a key with a set of these members (the STORE step of set algebra): event, key, members")
def shard_sreplace(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    replace(ctx, argv[2], TYPE_SET, argv[3:], SET, argv[1])
    return protocol.OK


def _sintercard_keys(argv: list[bytes]) -> list[int]:
    n = maybe_int(argv[1]) if len(argv) > 1 else None
    if n is None or n <= 0:
        return []
    return list(range(2, min(2 + n, len(argv))))


def _sintercard_args(argv: list[bytes]) -> tuple[list[bytes], int]:
    n = parse_int(argv[1], "ERR numkeys should be greater than 0")
    if n <= 0:
        raise CommandError("ERR numkeys should be greater than 0")
    if n > len(argv) - 2:
        raise CommandError("ERR Number of keys can't be greater than number of args")
    limit = 0
    rest = argv[2 + n :]
    i = 0
    while i < len(rest):  # in order, as Redis reads them; the last LIMIT counts
        if rest[i].upper() != b"LIMIT" or i + 1 >= len(rest):
            raise CommandError(errors.SYNTAX)
        limit = parse_int(rest[i + 1], "ERR LIMIT can't be negative")
        if limit < 0:
            raise CommandError("ERR LIMIT can't be negative")
        i += 2
    return argv[2 : 2 + n], limit


def _card(result: list[bytes], limit: int) -> bytes:
    return protocol.integer(min(len(result), limit) if limit else len(result))


async def sintercard_across(tx: CrossShard, argv: list[bytes]) -> bytes:
    keys, limit = _sintercard_args(argv)
    sets = await _gather(tx, keys)
    return sets if isinstance(sets, bytes) else _card(algebra("inter", sets), limit)


@command("sintercard", -3, "readonly", keys=(2, -1, 1), group="set", find_keys=_sintercard_keys,
         summary="Cardinality of the intersection of sets", across=lambda tx, argv: sintercard_across(tx, argv))
def sintercard(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    keys, limit = _sintercard_args(argv)
    return _card(algebra("inter", _gather_local(ctx, keys)), limit)


def scan_step(ctx: ShardCtx, argv: list[bytes], kind: int) -> tuple[int, list[Entry]]:
    """One SSCAN/HSCAN call: the next cursor and the entries that match.  Read in Redis's order:
    the cursor, then the key (missing: the empty scan, whatever the options; WRONGTYPE), then
    the options."""
    cursor = parse_cursor(argv[2])
    fields = Fields(ctx, argv[1], kind)
    if not fields.exists:
        return 0, []
    match, count = scan_options(argv, 3)
    cursor, entries = fields.scan(cursor, count)
    return cursor, [e for e in entries if match is None or match(e[0])]


def scan_options(argv: list[bytes], first: int) -> tuple[Callable[[bytes], bool] | None, int]:
    """MATCH matcher (or None) and COUNT of a SCAN-family command, with Redis's errors."""
    match = None
    count = 10
    i = first
    while i < len(argv):
        opt = argv[i].upper()
        if opt == b"MATCH" and i + 1 < len(argv):
            match = glob_matcher(argv[i + 1])
        elif opt == b"COUNT" and i + 1 < len(argv):
            count = parse_int(argv[i + 1])
            if count < 1:
                raise CommandError(errors.SYNTAX)
        else:
            raise CommandError(errors.SYNTAX)
        i += 2
    return match, count


@command("sscan", -3, "readonly", keys=(1, 1, 1), group="set", summary="Incrementally iterate set members")
def sscan(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    cursor, entries = scan_step(ctx, argv, TYPE_SET)
    return protocol.array([protocol.bulk(b"%d" % cursor), protocol.bulk_array([m for m, _ in entries])])
