"""Generic keyspace commands: DEL, EXISTS, TYPE, EXPIRE and TTL families."""

from __future__ import annotations

from shardkv import errors, protocol
from shardkv.commands.args import INT64_MAX, INT64_MIN, ShardCtx, parse_int
from shardkv.commands.table import Merge, command
from shardkv.errors import CommandError
from shardkv.store import TYPE_NAMES


@command("del", -2, "write", keys=(1, -1, 1), merge=Merge.SUM, group="generic", summary="Delete keys")
def del_(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    store = ctx.store
    return protocol.integer(sum(1 for key in argv[1:] if store.delete(ctx.db, key, ctx.now_ms)))


@command("unlink", -2, "write fast", keys=(1, -1, 1), merge=Merge.SUM, group="generic",
         summary="Delete keys (memory is reclaimed at once; same as DEL here)")
def unlink(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    return del_(ctx, argv)


@command("exists", -2, "readonly fast", keys=(1, -1, 1), merge=Merge.SUM, group="generic",
         summary="Count how many of the given keys exist")
def exists(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    store = ctx.store
    return protocol.integer(sum(1 for key in argv[1:] if store.lookup(ctx.db, key, ctx.now_ms)))


@command("touch", -2, "readonly fast", keys=(1, -1, 1), merge=Merge.SUM, group="generic",
         summary="Count how many of the given keys exist (access time is not tracked)")
def touch(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    return exists(ctx, argv)


@command("type", 2, "readonly fast", keys=(1, 1, 1), group="generic", summary="Determine the type of a key")
def type_(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    off = ctx.store.lookup(ctx.db, argv[1], ctx.now_ms)
    return b"+" + (TYPE_NAMES[ctx.store.type_of(off)] if off else b"none") + b"\r\n"


def expire_generic(ctx: ShardCtx, argv: list[bytes], unit_ms: int, absolute: bool) -> bytes:
    cmd = argv[0].decode(errors="replace").lower()
    n = parse_int(argv[2])
    nx = xx = gt = lt = False
    for opt in argv[3:]:
        o = opt.upper()
        if o == b"NX":
            nx = True
        elif o == b"XX":
            xx = True
        elif o == b"GT":
            gt = True
        elif o == b"LT":
            lt = True
        else:
            raise CommandError(f"ERR Unsupported option {opt.decode(errors='replace')}")
    if nx and (xx or gt or lt):
        raise CommandError("ERR NX and XX, GT or LT options at the same time are not compatible")
    if gt and lt:
        raise CommandError("ERR GT and LT options at the same time are not compatible")
    if unit_ms == 1000:
        if not INT64_MIN // 1000 <= n <= INT64_MAX // 1000:
            raise CommandError(errors.INVALID_EXPIRE.format(cmd))
        n *= 1000
    if not absolute:
        if n > INT64_MAX - ctx.now_ms:
            raise CommandError(errors.INVALID_EXPIRE.format(cmd))
        n += ctx.now_ms
    store = ctx.store
    found = store.find(ctx.db, argv[1], ctx.now_ms)
    off = found[0]
    if not off:
        return protocol.ZERO
    current = store.expire_of(off)  # 0 = persistent, which GT/LT treat as infinite
    if (nx and current) or (xx and not current):
        return protocol.ZERO
    if gt and (not current or n <= current):
        return protocol.ZERO
    if lt and current and n >= current:
        return protocol.ZERO
    if n <= ctx.now_ms:
        store.delete(ctx.db, argv[1], ctx.now_ms)
        return protocol.ONE
    store.set_expire(off, ctx.db, n)
    return protocol.ONE


@command("expire", -3, "write fast", keys=(1, 1, 1), group="generic",
         summary="Set a key's time to live in seconds")
def expire(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    return expire_generic(ctx, argv, 1000, absolute=False)


@command("pexpire", -3, "write fast", keys=(1, 1, 1), group="generic",
         summary="Set a key's time to live in milliseconds")
def pexpire(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    return expire_generic(ctx, argv, 1, absolute=False)


@command("expireat", -3, "write fast", keys=(1, 1, 1), group="generic",
         summary="Set the expiration for a key as a UNIX timestamp")
def expireat(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    return expire_generic(ctx, argv, 1000, absolute=True)


@command("pexpireat", -3, "write fast", keys=(1, 1, 1), group="generic",
         summary="Set the expiration for a key as a UNIX timestamp in milliseconds")
def pexpireat(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    return expire_generic(ctx, argv, 1, absolute=True)


def ttl_generic(ctx: ShardCtx, key: bytes, unit_ms: int) -> bytes:
    off = ctx.store.lookup(ctx.db, key, ctx.now_ms)
    if not off:
        return protocol.integer(-2)
    exp = ctx.store.expire_of(off)
    if not exp:
        return protocol.integer(-1)
    left = exp - ctx.now_ms
    return protocol.integer((left + unit_ms // 2) // unit_ms)


@command("ttl", 2, "readonly fast", keys=(1, 1, 1), group="generic", summary="Get the time to live in seconds")
def ttl(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    return ttl_generic(ctx, argv[1], 1000)


@command("pttl", 2, "readonly fast", keys=(1, 1, 1), group="generic", summary="Get the time to live in ms")
def pttl(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    return ttl_generic(ctx, argv[1], 1)


@command("persist", 2, "write fast", keys=(1, 1, 1), group="generic", summary="Remove the expiration from a key")
def persist(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    off = ctx.store.lookup(ctx.db, argv[1], ctx.now_ms)
    if not off or not ctx.store.expire_of(off):
        return protocol.ZERO
    ctx.store.set_expire(off, ctx.db, 0)
    return protocol.ONE
