"""String commands (GET, SET and friends); handlers take a ShardCtx and argv, return a reply.

A string is stored RESP-encoded, so GET answers with one slice of the segment.
"""

from __future__ import annotations

from shardkv import errors, protocol
from shardkv.commands.args import INT64_MAX, INT64_MIN, ShardCtx, maybe_int, parse_int
from shardkv.commands.table import Merge, command
from shardkv.errors import CommandError
from shardkv.store import TYPE_STRING, record_bytes, resp_bulk


def _string_off(ctx: ShardCtx, key: bytes) -> int:
    """The record of a string key, 0 if missing; WRONGTYPE for another type."""
    off = ctx.store.lookup(ctx.db, key, ctx.now_ms)
    if off and ctx.store.type_of(off) != TYPE_STRING:
        raise CommandError(errors.WRONGTYPE)
    return off


@command("get", 2, "readonly fast", keys=(1, 1, 1), group="string", summary="Get the value of a key")
def get(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    off = _string_off(ctx, argv[1])
    return ctx.store.string_resp(off) if off else protocol.null(ctx.proto)


def expire_at_ms(ctx: ShardCtx, unit: bytes, raw: bytes, cmd: str) -> int:
    """Absolute expiry in ms from an EX/PX/EXAT/PXAT argument; Redis's error if out of range."""
    n = parse_int(raw)
    bad = CommandError(errors.INVALID_EXPIRE.format(cmd))
    if n <= 0:
        raise bad
    if unit in (b"EX", b"EXAT"):
        if n > INT64_MAX // 1000:
            raise bad
        n *= 1000
    if unit in (b"EX", b"PX"):
        if n > INT64_MAX - ctx.now_ms:
            raise bad
        n += ctx.now_ms
    return n


@command("set", -3, "write denyoom", keys=(1, 1, 1), group="string",
         summary="Set the string value of a key, with optional expiry and conditions")
def set_(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    key, value = argv[1], argv[2]
    nx = xx = get_old = keepttl = False
    expire_unit = b""
    expire_raw = b""
    i = 3
    while i < len(argv):
        opt = argv[i].upper()
        if opt == b"NX" and not xx:
            nx = True
        elif opt == b"XX" and not nx:
            xx = True
        elif opt == b"GET":
            get_old = True
        elif opt == b"KEEPTTL" and not expire_unit:
            keepttl = True
        elif opt in (b"EX", b"PX", b"EXAT", b"PXAT") and not expire_unit and not keepttl and i + 1 < len(argv):
            expire_unit, expire_raw = opt, argv[i + 1]
            i += 1
        else:
            raise CommandError(errors.SYNTAX)
        i += 1
    expire_ms = expire_at_ms(ctx, expire_unit, expire_raw, "set") if expire_unit else 0
    store = ctx.store
    found = store.find(ctx.db, key, ctx.now_ms)
    off = found[0]
    old = protocol.null(ctx.proto)
    if get_old and off:
        if store.type_of(off) != TYPE_STRING:
            raise CommandError(errors.WRONGTYPE)
        old = store.string_resp(off)
    if (nx and off) or (xx and not off):
        return old if get_old else protocol.null(ctx.proto)
    if keepttl and off:
        expire_ms = store.expire_of(off)
    store.put(ctx.db, key, TYPE_STRING, resp_bulk(value), expire_ms, found)
    return old if get_old else protocol.OK


@command("mget", -2, "readonly fast", keys=(1, -1, 1), merge=Merge.VALUES, group="string",
         summary="Get the values of all the given keys")
def mget(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    store = ctx.store
    parts = []
    null = protocol.null(ctx.proto)
    for key in argv[1:]:
        off = store.lookup(ctx.db, key, ctx.now_ms)
        parts.append(store.string_resp(off) if off and store.type_of(off) == TYPE_STRING else null)
    return protocol.array(parts)


def mset_sizes(argv: list[bytes]) -> list[int]:
    return [record_bytes(len(k), len(resp_bulk(v))) for k, v in zip(argv[1::2], argv[2::2], strict=True)]


@command("mset", -3, "write denyoom", keys=(1, -1, 2), merge=Merge.OK, group="string",
         summary="Set multiple keys to multiple values", sizes=mset_sizes)
def mset(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    if len(argv) % 2 == 0:
        raise CommandError(errors.wrong_arity("mset"))
    store = ctx.store
    values = [resp_bulk(v) for v in argv[2::2]]
    # Every block first (all or nothing), then the writes: MSET is never half applied.  Across
    # shards, each shard reserved its blocks when it was locked (ctx.blocks).
    blocks = ctx.blocks if ctx.blocks is not None else store.reserve(mset_sizes(argv))
    for key, value, block in zip(argv[1::2], values, blocks, strict=True):
        store.put(ctx.db, key, TYPE_STRING, value, 0, store.find(ctx.db, key, ctx.now_ms), block)
    return protocol.OK


def incr_by(ctx: ShardCtx, key: bytes, delta: int) -> bytes:
    store = ctx.store
    found = store.find(ctx.db, key, ctx.now_ms)
    off = found[0]
    current = 0
    expire_ms = 0
    if off:
        if store.type_of(off) != TYPE_STRING:
            raise CommandError(errors.WRONGTYPE)
        n = maybe_int(store.string_value(off))
        if n is None:
            raise CommandError(errors.NOT_INTEGER)
        current = n
        expire_ms = store.expire_of(off)
    result = current + delta
    if not INT64_MIN <= result <= INT64_MAX:
        raise CommandError(errors.INCR_OVERFLOW)
    store.put(ctx.db, key, TYPE_STRING, resp_bulk(b"%d" % result), expire_ms, found)
    return protocol.integer(result)


@command("incr", 2, "write denyoom fast", keys=(1, 1, 1), group="string",
         summary="Increment the integer value of a key by one")
def incr(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    return incr_by(ctx, argv[1], 1)


@command("decr", 2, "write denyoom fast", keys=(1, 1, 1), group="string",
         summary="Decrement the integer value of a key by one")
def decr(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    return incr_by(ctx, argv[1], -1)


@command("incrby", 3, "write denyoom fast", keys=(1, 1, 1), group="string",
         summary="Increment the integer value of a key by the given amount")
def incrby(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    return incr_by(ctx, argv[1], parse_int(argv[2]))


@command("decrby", 3, "write denyoom fast", keys=(1, 1, 1), group="string",
         summary="Decrement the integer value of a key by the given number")
def decrby(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    delta = parse_int(argv[2])
    if delta == INT64_MIN:
        raise CommandError("ERR decrement would overflow")
    return incr_by(ctx, argv[1], -delta)
