"""Shared helpers of the collection families (lists, hashes, sets): load and save a value.

Layout (this version): a collection's record value area is `[u8 layout][entries]` with layout
PACKED: every entry is `[u32 length][bytes]` (a hash stores field, value, field, value ...).
A change writes a new record and publishes it (one store), so a crash never leaves half a
change.  Costs are linear in the collection's size; the chunked / indexed layouts for large
collections come next (see README, "Collections").
"""

from __future__ import annotations

import random
import struct

from shardkv import errors
from shardkv.commands.args import ShardCtx
from shardkv.errors import CommandError
from shardkv.store import BatchOp

LAYOUT_PACKED = 1
_LEN = struct.Struct("<I")

Found = tuple[int, int, int]


def pack(items: list[bytes]) -> bytes:
    return bytes((LAYOUT_PACKED,)) + b"".join(_LEN.pack(len(x)) + x for x in items)


def unpack(area: bytes) -> list[bytes]:
    assert area[0] == LAYOUT_PACKED, f"unknown collection layout {area[0]}"
    out = []
    pos, end = 1, len(area)
    unpack_len = _LEN.unpack_from
    while pos < end:
        (n,) = unpack_len(area, pos)
        pos += 4
        out.append(area[pos : pos + n])
        pos += n
    return out


def load(ctx: ShardCtx, key: bytes, kind: int) -> tuple[Found, list[bytes] | None]:
    """The entries of a collection key (None if missing); WRONGTYPE for another type."""
    store = ctx.store
    found = store.find(ctx.db, key, ctx.now_ms)
    off = found[0]
    if not off:
        return found, None
    if store.type_of(off) != kind:
        raise CommandError(errors.WRONGTYPE)
    a, b = store.value_span(off)
    return found, unpack(store.mm[a:b])


def save(ctx: ShardCtx, key: bytes, kind: int, items: list[bytes], found: Found) -> None:
    """Replace the collection with items (keeping its time to live); empty deletes the key."""
    store = ctx.store
    if not items:
        if found[0]:
            store.delete(ctx.db, key, ctx.now_ms)
        return
    for item in items:
        if len(item) > ctx.limits.value_bytes_max:
            raise CommandError(errors.STRING_TOO_LONG)
    expire_ms = store.expire_of(found[0]) if found[0] else 0
    store.put(ctx.db, key, kind, pack(items), expire_ms, found)


def batch_op(ctx: ShardCtx, key: bytes, kind: int, items: list[bytes], found: Found) -> BatchOp:
    """`save` as one operation of a Store.write_batch (to change two collections as one)."""
    for item in items:
        if len(item) > ctx.limits.value_bytes_max:
            raise CommandError(errors.STRING_TOO_LONG)
    if not items:
        return (ctx.db, key, kind, None, 0)
    return (ctx.db, key, kind, pack(items), ctx.store.expire_of(found[0]) if found[0] else 0)


def replace(ctx: ShardCtx, key: bytes, kind: int, items: list[bytes]) -> None:
    """Make key a new collection of items, whatever it held before (the STORE of SORT and set
    algebra); empty deletes it."""
    found = ctx.store.find(ctx.db, key, ctx.now_ms)
    if found[0]:
        ctx.store.delete(ctx.db, key, ctx.now_ms)  # STORE drops the old value and its time to live
        found = ctx.store.find(ctx.db, key, ctx.now_ms)
    save(ctx, key, kind, items, found)


def random_pick(items: list[bytes], count: int) -> list[bytes]:
    """SRANDMEMBER / HRANDFIELD with a count: distinct when positive, with repeats when negative."""
    if count >= 0:
        return random.sample(items, min(count, len(items)))
    return [random.choice(items) for _ in range(-count)] if items else []
