"""List commands, with their blocking forms.  A small list is read into a Python list for one
command; a large one is changed in place through its chunks (collstore.py) by push, pop, LINDEX,
LSET, LRANGE and LTRIM, and rewritten by the O(n) commands (LINSERT, LREM)."""

from __future__ import annotations

import math

from shardkv import errors, protocol
from shardkv.collstore import Chunks, clamp_range, items_of, list_value
from shardkv.commands.across import CrossShard, is_error
from shardkv.commands.args import INT64_MAX, INT64_MIN, ShardCtx, maybe_int, parse_int, parse_long_double
from shardkv.commands.collections import (
    Found,
    batch_op,
    check_sizes,
    chunks_of,
    find_typed,
    load,
    notify_new,
    reply_budget,
    save,
)
from shardkv.commands.context import BlockPlan
from shardkv.commands.notify import GENERIC, LIST, notify
from shardkv.commands.table import command
from shardkv.errors import CommandError
from shardkv.layout import TYPE_LIST
from shardkv.protocol import read_reply

POSITIVE = "ERR value is out of range, must be positive"


def _load(ctx: ShardCtx, key: bytes) -> tuple[Found, list[bytes] | None]:
    return load(ctx, key, TYPE_LIST)


def _open(ctx: ShardCtx, key: bytes) -> tuple[Found, Chunks | None]:
    """The key's record and, for a large list, its in-place view; WRONGTYPE for another type."""
    found = find_typed(ctx, key, TYPE_LIST)
    return found, chunks_of(ctx, found)


def push(ctx: ShardCtx, key: bytes, values: list[bytes], left: bool, only_existing: bool = False) -> int:
    """LPUSH (values in the order pushed) / RPUSH; the new length (0: no list and only_existing)."""
    found, large = _open(ctx, key)
    check_sizes(ctx, values)
    if large is not None:
        length = large.push(values, left)
    elif not found[0] and only_existing:
        return 0
    else:
        items = items_of(ctx.store, found[0]) if found[0] else []
        items = list(reversed(values)) + items if left else items + values
        save(ctx, key, TYPE_LIST, items, found)
        length = len(items)
    notify(ctx, LIST, _push_event(left), key)
    return length


def _push_event(left: bool) -> bytes:
    return b"lpush" if left else b"rpush"


def _pop_event(left: bool) -> bytes:
    return b"lpop" if left else b"rpop"


def _popped(ctx: ShardCtx, key: bytes, left: bool, emptied: bool) -> None:
    """Redis's events once elements left a list: lpop / rpop, then del if it is gone."""
    notify(ctx, LIST, _pop_event(left), key)
    if emptied:
        notify(ctx, GENERIC, b"del", key)


def pop(ctx: ShardCtx, key: bytes, count: int, left: bool) -> list[bytes]:
    """LPOP / RPOP of up to count elements, in the order popped; the key goes with the last."""
    found, large = _open(ctx, key)
    if large is not None:
        total = len(large)
        out = large.pop(count, left)
        if len(out) == total:
            ctx.store.delete(ctx.db, key, ctx.now_ms)
        if out:
            _popped(ctx, key, left, len(out) == total)
        return out
    items = items_of(ctx.store, found[0]) if found[0] else []
    n = min(count, len(items))
    if not n:
        return []
    save(ctx, key, TYPE_LIST, items[n:] if left else items[: len(items) - n], found)
    _popped(ctx, key, left, n == len(items))
    return items[:n] if left else items[::-1][:n]


def _push(ctx: ShardCtx, argv: list[bytes], left: bool, only_existing: bool) -> bytes:
    return protocol.integer(push(ctx, argv[1], argv[2:], left, only_existing))


@command("lpush", -3, "write denyoom fast", keys=(1, 1, 1), group="list", summary="Prepend elements to a list")
def lpush(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    return _push(ctx, argv, left=True, only_existing=False)


@command("rpush", -3, "write denyoom fast", keys=(1, 1, 1), group="list", summary="Append elements to a list")
def rpush(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    return _push(ctx, argv, left=False, only_existing=False)


@command("lpushx", -3, "write denyoom fast", keys=(1, 1, 1), group="list",
         summary="Prepend elements to a list, only if the list exists")
def lpushx(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    return _push(ctx, argv, left=True, only_existing=True)


@command("rpushx", -3, "write denyoom fast", keys=(1, 1, 1), group="list",
         summary="Append elements to a list, only if the list exists")
def rpushx(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    return _push(ctx, argv, left=False, only_existing=True)


def _pop(ctx: ShardCtx, argv: list[bytes], left: bool) -> bytes:
    if len(argv) > 3:
        raise CommandError(errors.wrong_arity(argv[0].decode(errors="replace").lower()))
    count = None
    if len(argv) == 3:
        count = parse_int(argv[2], POSITIVE)
        if count < 0:
            raise CommandError(POSITIVE)
    if not _open(ctx, argv[1])[0][0]:
        return protocol.null(ctx.proto) if count is None else protocol.null_array(ctx.proto)
    taken = pop(ctx, argv[1], 1 if count is None else count, left)
    return protocol.bulk(taken[0]) if count is None else protocol.bulk_array(taken)


@command("lpop", -2, "write fast", keys=(1, 1, 1), group="list", summary="Remove and get the first elements")
def lpop(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    return _pop(ctx, argv, left=True)


@command("rpop", -2, "write fast", keys=(1, 1, 1), group="list", summary="Remove and get the last elements")
def rpop(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    return _pop(ctx, argv, left=False)


@command("llen", 2, "readonly fast", keys=(1, 1, 1), group="list", summary="Length of a list")
def llen(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    found, large = _open(ctx, argv[1])
    if large is not None:
        return protocol.integer(len(large))
    return protocol.integer(len(items_of(ctx.store, found[0])) if found[0] else 0)


@command("lrange", 4, "readonly", keys=(1, 1, 1), group="list", summary="Get a range of elements")
def lrange(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    start, stop = parse_int(argv[2]), parse_int(argv[3])
    found, large = _open(ctx, argv[1])
    if large is not None:
        return protocol.bulk_array(large.range(start, stop, reply_budget(ctx).bulks))
    items = items_of(ctx.store, found[0]) if found[0] else []
    a, b = clamp_range(len(items), start, stop)
    return protocol.bulk_array(items[a : b + 1] if a <= b else [])


@command("lindex", 3, "readonly", keys=(1, 1, 1), group="list", summary="Get an element by its index")
def lindex(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    off = find_typed(ctx, argv[1], TYPE_LIST)[0]  # as in Redis: a missing key or WRONGTYPE before the index
    if not off:
        return protocol.null(ctx.proto)
    value = list_value(ctx.store, off, parse_int(argv[2]))  # (the fast path reads it the same way)
    return protocol.bulk(value) if value is not None else protocol.null(ctx.proto)


@command("lset", 4, "write denyoom", keys=(1, 1, 1), group="list", summary="Set an element by its index")
def lset(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    found, large = _open(ctx, argv[1])  # as in Redis: no such key or WRONGTYPE before the index
    if not found[0]:
        raise CommandError(errors.NO_SUCH_KEY)
    index = parse_int(argv[2])
    check_sizes(ctx, [argv[3]])
    if large is not None:
        index += len(large) if index < 0 else 0
        if not 0 <= index < len(large):
            raise CommandError("ERR index out of range")
        large.set(index, argv[3])
        notify(ctx, LIST, b"lset", argv[1])
        return protocol.OK
    items = items_of(ctx.store, found[0])
    if index < 0:
        index += len(items)
    if not 0 <= index < len(items):
        raise CommandError("ERR index out of range")
    items[index] = argv[3]
    save(ctx, argv[1], TYPE_LIST, items, found)
    notify(ctx, LIST, b"lset", argv[1])
    return protocol.OK


@command("linsert", 5, "write denyoom", keys=(1, 1, 1), group="list",
         summary="Insert an element before or after another element")
def linsert(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    where = argv[2].upper()
    if where not in (b"BEFORE", b"AFTER"):
        raise CommandError(errors.SYNTAX)
    found, items = _load(ctx, argv[1])
    if items is None:
        return protocol.ZERO
    try:
        i = items.index(argv[3])
    except ValueError:
        return protocol.integer(-1)
    items.insert(i if where == b"BEFORE" else i + 1, argv[4])
    save(ctx, argv[1], TYPE_LIST, items, found)
    notify(ctx, LIST, b"linsert", argv[1])
    return protocol.integer(len(items))


@command("lrem", 4, "write", keys=(1, 1, 1), group="list", summary="Remove elements equal to a value")
def lrem(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    count = parse_int(argv[2])
    found, items = _load(ctx, argv[1])
    if not items:
        return protocol.ZERO
    target = argv[3]
    order = range(len(items)) if count >= 0 else range(len(items) - 1, -1, -1)
    limit = abs(count) or len(items)
    drop = set()
    for i in order:
        if items[i] == target:
            drop.add(i)
            if len(drop) == limit:
                break
    if drop:
        save(ctx, argv[1], TYPE_LIST, [x for i, x in enumerate(items) if i not in drop], found)
        notify(ctx, LIST, b"lrem", argv[1])
        if len(drop) == len(items):
            notify(ctx, GENERIC, b"del", argv[1])
    return protocol.integer(len(drop))


@command("ltrim", 4, "write", keys=(1, 1, 1), group="list", summary="Trim a list to the specified range")
def ltrim(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    start, stop = parse_int(argv[2]), parse_int(argv[3])
    found, large = _open(ctx, argv[1])
    if large is not None:  # the capped-list idiom (LPUSH then LTRIM) must not rewrite the list
        a, b = clamp_range(len(large), start, stop)
        if a > b:
            ctx.store.delete(ctx.db, argv[1], ctx.now_ms)
        else:
            large.trim(a, b)
        _trimmed(ctx, argv[1], a > b)
        return protocol.OK
    items = items_of(ctx.store, found[0]) if found[0] else None
    if items is None:
        return protocol.OK
    a, b = clamp_range(len(items), start, stop)
    kept = items[a : b + 1] if a <= b else []
    if kept != items:
        save(ctx, argv[1], TYPE_LIST, kept, found)
    _trimmed(ctx, argv[1], not kept)
    return protocol.OK


def _trimmed(ctx: ShardCtx, key: bytes, emptied: bool) -> None:
    """Redis emits ltrim whenever the list exists, even if nothing was cut; del if it is gone."""
    notify(ctx, LIST, b"ltrim", key)
    if emptied:
        notify(ctx, GENERIC, b"del", key)


@command("lpos", -3, "readonly", keys=(1, 1, 1), group="list", summary="Index of matching elements")
def lpos(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    rank, count, maxlen = 1, None, 0
    i = 3
    while i < len(argv):
        opt = argv[i].upper()
        if i + 1 >= len(argv):
            raise CommandError(errors.SYNTAX)
        if opt == b"RANK":
            rank = parse_int(argv[i + 1])
            if rank == 0:
                raise CommandError("ERR RANK can't be zero: use 1 to start from the first match, 2 from the "
                                   "second ... or use negative to start from the end of the list")
        elif opt == b"COUNT":
            count = parse_int(argv[i + 1], "ERR COUNT can't be negative")
            if count < 0:
                raise CommandError("ERR COUNT can't be negative")
        elif opt == b"MAXLEN":
            maxlen = parse_int(argv[i + 1], "ERR MAXLEN can't be negative")
            if maxlen < 0:
                raise CommandError("ERR MAXLEN can't be negative")
        else:
            raise CommandError(errors.SYNTAX)
        i += 2
    items = _load(ctx, argv[1])[1] or []
    n = len(items)
    order = range(n) if rank > 0 else range(n - 1, -1, -1)
    skip = 0 if rank == INT64_MIN else abs(rank) - 1  # Redis's -rank wraps: LONG_MIN acts as -1
    want = 1 if count is None else (count or n)
    hits: list[int] = []
    for seen, idx in enumerate(order):
        if maxlen and seen >= maxlen:
            break
        if items[idx] == argv[2]:
            if skip:
                skip -= 1
                continue
            hits.append(idx)
            if len(hits) >= want:
                break
    if count is None:
        return protocol.integer(hits[0]) if hits else protocol.null(ctx.proto)
    return protocol.array([protocol.integer(h) for h in hits])


def _side(raw: bytes) -> bool:
    side = raw.upper()
    if side not in (b"LEFT", b"RIGHT"):
        raise CommandError(errors.SYNTAX)
    return side == b"LEFT"


def _lmove_local(ctx: ShardCtx, src: bytes, dst: bytes, from_left: bool, to_left: bool) -> bytes:
    src_found, src_large = _open(ctx, src)
    if not src_found[0]:  # as in Redis: null before looking at the destination
        return protocol.null(ctx.proto)
    dst_found, dst_large = _open(ctx, dst)  # WRONGTYPE before anything changes
    if src_large is not None or dst_large is not None:
        # A large list changes in place: push the element first, then pop it, so a crash in
        # between never loses it.
        value = src_large.index(0 if from_left else len(src_large) - 1) if src_large is not None else \
            items_of(ctx.store, src_found[0])[0 if from_left else -1]
        if src == dst and from_left == to_left:  # nothing moves, but Redis pops and pushes it back
            notify(ctx, LIST, _push_event(to_left), dst)
            notify(ctx, LIST, _pop_event(from_left), src)
            return protocol.bulk(value)
        push(ctx, dst, [value], to_left)  # Redis's order too: the push's events, then the pop's
        pop(ctx, src, 1, from_left)
        return protocol.bulk(value)
    items = items_of(ctx.store, src_found[0])
    value = items.pop(0 if from_left else -1)
    dst_items = items if src == dst else (items_of(ctx.store, dst_found[0]) if dst_found[0] else [])
    dst_items.insert(0 if to_left else len(dst_items), value)
    if src == dst:
        save(ctx, dst, TYPE_LIST, dst_items, src_found)
    else:  # both lists change together, even across a crash
        ctx.store.write_batch([batch_op(ctx, src, TYPE_LIST, items, src_found),
                               batch_op(ctx, dst, TYPE_LIST, dst_items, dst_found)])
        if not dst_found[0]:
            notify_new(ctx, dst)  # write_batch does not emit it
    notify(ctx, LIST, _push_event(to_left), dst)
    _popped(ctx, src, from_left, src != dst and not items)
    return protocol.bulk(value)


async def lmove_across(tx: CrossShard, argv: list[bytes]) -> bytes:
    is_lmove = argv[0].lower() == b"lmove"
    from_left, to_left = (_side(argv[3]), _side(argv[4])) if is_lmove else (False, True)
    src, dst = argv[1], argv[2]
    dst_type = read_reply(await tx.apply(tx.shard_of(dst), [b"type", dst]))[0]
    src_type = read_reply(await tx.apply(tx.shard_of(src), [b"type", src]))[0]
    if src_type not in (b"list", b"none") or (src_type == b"list" and dst_type not in (b"list", b"none")):
        return protocol.error(errors.WRONGTYPE)
    # Read the element, push it, then pop it: Redis's order of events (the destination's, then
    # the source's), and a push that fails (OOM) leaves the source as it was.
    head = await tx.apply(tx.shard_of(src), [b"lindex", src, b"0" if from_left else b"-1"])
    if is_error(head) or head in (protocol.NULL2, protocol.NULL3):
        return head
    value = read_reply(head)[0]
    assert isinstance(value, bytes)
    pushed = await tx.apply(tx.shard_of(dst), [_push_event(to_left), dst, value])
    if is_error(pushed):
        return pushed
    popped = await tx.apply(tx.shard_of(src), [_pop_event(from_left), src])
    return popped if is_error(popped) else head


@command("lmove", 5, "write denyoom", keys=(1, 2, 1), group="list", key_flags=("RW access delete", "RW insert"),
         summary="Pop an element from a list, push it to another list and return it",
         across=lambda tx, argv: lmove_across(tx, argv))
def lmove(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    return _lmove_local(ctx, argv[1], argv[2], _side(argv[3]), _side(argv[4]))


@command("rpoplpush", 3, "write denyoom", keys=(1, 2, 1), group="list", key_flags=("RW access delete", "RW insert"),
         summary="Remove the last element of a list, prepend it to another list and return it",
         across=lambda tx, argv: lmove_across(tx, argv))
def rpoplpush(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    return _lmove_local(ctx, argv[1], argv[2], from_left=False, to_left=True)


def _lmpop_keys(argv: list[bytes]) -> list[int]:
    n = maybe_int(argv[1]) if len(argv) > 1 else None
    if n is None or n <= 0:
        return []
    return list(range(2, min(2 + n, len(argv))))


def lmpop_args(argv: list[bytes]) -> tuple[list[bytes], bool, int]:
    n = parse_int(argv[1], "ERR numkeys should be greater than 0")
    if n <= 0:
        raise CommandError("ERR numkeys should be greater than 0")
    if len(argv) < 3 + n:
        raise CommandError(errors.SYNTAX)
    left = _side(argv[2 + n])
    rest = argv[3 + n :]
    count = None
    i = 0
    while i < len(rest):  # in order, as Redis reads them: a bad count before a later syntax error
        if count is not None or rest[i].upper() != b"COUNT" or i + 1 >= len(rest):
            raise CommandError(errors.SYNTAX)
        count = parse_int(rest[i + 1], "ERR count should be greater than 0")
        if count <= 0:
            raise CommandError("ERR count should be greater than 0")
        i += 2
    return argv[2 : 2 + n], left, 1 if count is None else count


def _lmpop_reply(key: bytes, popped: list[bytes]) -> bytes:
    return protocol.array([protocol.bulk(key), protocol.bulk_array(popped)])


@command("lmpop", -4, "write", keys=(2, -1, 1), group="list", find_keys=_lmpop_keys,
         summary="Pop elements from the first non-empty list", across=lambda tx, argv: lmpop_across(tx, argv))
def lmpop(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    keys, left, count = lmpop_args(argv)
    for key in keys:
        popped = pop(ctx, key, count, left)
        if popped:
            return _lmpop_reply(key, popped)
    return protocol.null_array(ctx.proto)


async def lmpop_across(tx: CrossShard, argv: list[bytes]) -> bytes:
    keys, left, count = lmpop_args(argv)
    for key in keys:
        reply = await tx.apply(tx.shard_of(key), [b"lpop" if left else b"rpop", key, b"%d" % count])
        if is_error(reply):
            return reply
        popped = read_reply(reply)[0]
        if popped:
            assert isinstance(popped, list)
            return _lmpop_reply(key, popped)
    return protocol.null_array(tx.proto)


# ---------------------------------------------------------------------- blocking forms
# The router runs these through router/blocking.py: the non-blocking form first, then a wait
# until a key is ready (the owner shards watch them: router/blocking.py).


def parse_timeout(raw: bytes) -> float:
    """A blocking command's timeout in seconds, as Redis 7.0 reads it: a long double, rounded up
    to whole milliseconds as a C long long.  So a tiny negative one rounds to 0 (block for ever),
    and one whose milliseconds overflow the long long (`inf`, 1e16) reads as negative, as it does
    on x86."""
    ms = parse_long_double(raw, errors.TIMEOUT_NOT_FLOAT) * 1000
    whole_ms = math.ceil(ms) if math.isfinite(ms) else -1
    if not 0 <= whole_ms <= INT64_MAX:
        raise CommandError(errors.TIMEOUT_NEGATIVE)
    return whole_ms / 1000


def _pair_reply(decoded: object) -> bytes | None:
    """LMPOP's [key, [element]] as BLPOP's [key, element]."""
    if not decoded:
        return None
    assert isinstance(decoded, list)
    key, items = decoded
    return protocol.bulk_array([key, items[0]])


def _lmpop_shape(decoded: object) -> bytes | None:
    if not decoded:
        return None
    assert isinstance(decoded, list)
    return protocol.array([protocol.bulk(decoded[0]), protocol.bulk_array(decoded[1])])


def _element(decoded: object) -> bytes | None:
    return protocol.bulk(decoded) if isinstance(decoded, bytes) else None


def _bpop_plan(argv: list[bytes], side: bytes) -> BlockPlan:
    keys = argv[1:-1]
    return BlockPlan([b"lmpop", b"%d" % len(keys), *keys, side, b"COUNT", b"1"], keys,
                     parse_timeout(argv[-1]), _pair_reply)


def _never(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    raise AssertionError("blocking commands are run by router/blocking.py")


command("blpop", -3, "write blocking", keys=(1, -2, 1), group="list",
        summary="Remove and get the first element of the first non-empty list, or block until one is there",
        blocking=lambda argv: _bpop_plan(argv, b"LEFT"))(_never)
command("brpop", -3, "write blocking", keys=(1, -2, 1), group="list",
        summary="Remove and get the last element of the first non-empty list, or block until one is there",
        blocking=lambda argv: _bpop_plan(argv, b"RIGHT"))(_never)


def _blmpop_plan(argv: list[bytes]) -> BlockPlan:
    keys, left, count = lmpop_args(argv[1:])  # (Redis reads the timeout last)
    timeout = parse_timeout(argv[1])
    return BlockPlan([b"lmpop", *argv[2:]], keys, timeout, _lmpop_shape)


command("blmpop", -5, "write blocking", keys=(3, -1, 1), group="list",
        find_keys=lambda argv: [i + 1 for i in _lmpop_keys(argv[1:])],
        summary="Pop elements from the first non-empty list, or block until one is there",
        blocking=_blmpop_plan)(_never)


def _brpoplpush_plan(argv: list[bytes]) -> BlockPlan:
    return BlockPlan([b"rpoplpush", argv[1], argv[2]], [argv[1]], parse_timeout(argv[3]), _element)


def _blmove_plan(argv: list[bytes]) -> BlockPlan:
    _side(argv[3])
    _side(argv[4])
    return BlockPlan([b"lmove", *argv[1:5]], [argv[1]], parse_timeout(argv[5]), _element)


command("brpoplpush", 4, "write denyoom blocking", keys=(1, 2, 1), group="list",
        key_flags=("RW access delete", "RW insert"),
        summary="Pop from a list, push to another and return it, or block until one is there",
        blocking=_brpoplpush_plan)(_never)
command("blmove", 6, "write denyoom blocking", keys=(1, 2, 1), group="list",
        key_flags=("RW access delete", "RW insert"),
        summary="Pop from a list, push to another and return it, or block until one is there",
        blocking=_blmove_plan)(_never)
