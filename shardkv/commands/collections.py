"""Shared helpers of the collection families (lists, hashes, sets) over the layouts of
collstore.py: small collections are read into Python objects for one command and written back
packed; large ones are changed in place (Table, Chunks).  A collection moves to its large layout
when it outgrows the packed one (collstore.wants_large) and stays there until it is deleted, as
Redis's encodings do."""

from __future__ import annotations

import random
from collections.abc import Iterable

from shardkv import collstore, errors
from shardkv.collstore import Chunks, Entry, Table, field_value, items_of, pack, wants_large
from shardkv.commands.args import ShardCtx
from shardkv.commands.notify import GENERIC, NEW, notify
from shardkv.errors import CommandError, ReplyTooLarge
from shardkv.journal import BatchOp
from shardkv.layout import TYPE_HASH, TYPE_LIST

Found = tuple[int, int, int]


BULK_BYTES_MIN = 6  # the least one bulk string adds to a reply: "$0\r\n\r\n"


class ReplyBudget:
    """The bytes a reply may still take before it passes the client's output buffer limit.
    Replies whose size the client chooses (SRANDMEMBER key -N, HRANDFIELD, LRANGE, SORT ... GET)
    spend from it while they are built, so one past the limit stops early with ReplyTooLarge
    (Redis closes such a client) instead of holding the worker and its memory to build it."""

    def __init__(self, bytes_max: int, too_large: Exception | None = None) -> None:
        self.left = bytes_max
        self.too_large = too_large  # raised instead of ReplyTooLarge (SORT ... STORE: OOM)

    def spend(self, nbytes: int) -> None:
        self.left -= nbytes
        if self.left < 0:
            raise self.too_large or ReplyTooLarge(f"reply past the client's output buffer limit by {-self.left} bytes")

    def bulks(self, items: list[bytes]) -> list[bytes]:
        """items, after paying for them as bulk strings."""
        self.spend(sum(map(len, items)) + BULK_BYTES_MIN * len(items))
        return items


def reply_budget(ctx: ShardCtx) -> ReplyBudget:
    return ReplyBudget(ctx.limits.output_buffer_bytes_max)


def check_sizes(ctx: ShardCtx, items: Iterable[bytes]) -> None:
    if max(map(len, items), default=0) > ctx.limits.value_bytes_max:
        raise CommandError(errors.STRING_TOO_LONG)


def find_typed(ctx: ShardCtx, key: bytes, kind: int) -> Found:
    """The key's record (found[0] is 0 if missing); WRONGTYPE if it holds another type."""
    found = ctx.store.find(ctx.db, key, ctx.now_ms)
    if found[0] and ctx.store.type_of(found[0]) != kind:
        raise CommandError(errors.WRONGTYPE)
    return found


def field_in(ctx: ShardCtx, key: bytes, kind: int, field: bytes) -> bytes | None:
    """One field of a hash or member of a set (kind): its value (a member's is empty), None if
    it or the key is absent; WRONGTYPE for another type.  (The fast path reads it the same way.)"""
    off = find_typed(ctx, key, kind)[0]
    return field_value(ctx.store, off, field) if off else None


def load(ctx: ShardCtx, key: bytes, kind: int) -> tuple[Found, list[bytes] | None]:
    """Every entry of a collection key (None if missing); WRONGTYPE for another type."""
    found = find_typed(ctx, key, kind)
    return found, items_of(ctx.store, found[0]) if found[0] else None


def save(ctx: ShardCtx, key: bytes, kind: int, items: list[bytes], found: Found) -> None:
    """Replace the collection with items (keeping its time to live); empty deletes the key."""
    store = ctx.store
    if not items:
        if found[0]:
            store.delete(ctx.db, key, ctx.now_ms)
        return
    check_sizes(ctx, items)
    expire_ms = store.expire_of(found[0]) if found[0] else 0
    per_entry = 2 if kind == TYPE_HASH else 1
    if (found[0] and store.struct_of(found[0])) or wants_large(items, per_entry):
        if kind == TYPE_LIST:
            collstore.write_chunks(store, ctx.db, key, items, expire_ms, found)
        elif kind == TYPE_HASH:
            collstore.write_table(store, ctx.db, key, kind, list(dict(zip(items[0::2], items[1::2],
                                                                          strict=True)).items()), expire_ms, found)
        else:
            collstore.write_table(store, ctx.db, key, kind, [(m, b"") for m in dict.fromkeys(items)], expire_ms, found)
        return
    store.put(ctx.db, key, kind, pack(items), expire_ms, found)


def batch_op(ctx: ShardCtx, key: bytes, kind: int, items: list[bytes], found: Found) -> BatchOp:
    """`save` as one operation of a Store.write_batch (to change two collections as one); the
    value is packed whatever its size, and the collection's next change lays it out again."""
    check_sizes(ctx, items)
    if not items:
        return (ctx.db, key, kind, None, 0)
    return (ctx.db, key, kind, pack(items), ctx.store.expire_of(found[0]) if found[0] else 0)


def replace(ctx: ShardCtx, key: bytes, kind: int, items: list[bytes], cls: int, event: bytes) -> None:
    """Make key a new collection of items, whatever it held before (the STORE of SORT and set
    algebra); empty deletes it.  Emits what Redis's setKey / dbDelete path does: `event` of class
    cls for a stored result (`new` only if the key did not exist), `del` if an empty result
    removed the key."""
    store = ctx.store
    found = store.find(ctx.db, key, ctx.now_ms)
    existed = bool(found[0])
    if existed:
        store.delete(ctx.db, key, ctx.now_ms)  # STORE drops the old value and its time to live
        found = store.find(ctx.db, key, ctx.now_ms)
    if not items:
        if existed:
            notify(ctx, GENERIC, b"del", key)
        return
    flags = store.event_flags
    if existed:  # Redis overwrites the key in place: no `new` for it
        store.event_flags = flags & ~NEW
    try:
        save(ctx, key, kind, items, found)
    finally:
        store.event_flags = flags
    notify(ctx, cls, event, key)


def notify_in(ctx: ShardCtx, db: int, cls: int, event: bytes, key: bytes) -> None:
    """notify() for a key of another db than the command's (MOVE, COPY ... DB)."""
    saved = ctx.db
    ctx.db = db
    try:
        notify(ctx, cls, event, key)
    finally:
        ctx.db = saved


def notify_new(ctx: ShardCtx, key: bytes, db: int | None = None) -> None:
    """The `new` event of a key created by a Store.write_batch (which does not emit it, unlike
    Store.put), or of a key Redis deletes and adds again (RENAME, COPY REPLACE)."""
    notify_in(ctx, ctx.db if db is None else db, NEW, b"new", key)


def take_events(ctx: ShardCtx, mark: int) -> list[tuple[int, bytes, bytes]]:
    """Remove and return the events emitted since len(ctx.store.events) was mark: a handler that
    changes keys in another order than Redis does puts them back where Redis emits them."""
    events = ctx.store.events[mark:]
    del ctx.store.events[mark:]
    return events


class Fields:
    """A hash (field -> value) or a set (member -> b"") for one command: a large one is changed
    in place through its table, a small one is read into a dict and written back packed."""

    def __init__(self, ctx: ShardCtx, key: bytes, kind: int) -> None:
        self.ctx, self.key, self.kind = ctx, key, kind
        self._open()

    def _open(self) -> None:
        store = self.ctx.store
        self.found = find_typed(self.ctx, self.key, self.kind)
        off = self.found[0]
        self.table: Table | None = None
        self.small: dict[bytes, bytes] = {}
        if not off:
            return
        if store.struct_of(off):
            self.table = Table(store, off)
            return
        items = items_of(store, off)
        if self.kind == TYPE_HASH:
            self.small = dict(zip(items[0::2], items[1::2], strict=True))
        else:
            self.small = dict.fromkeys(items, b"")

    @property
    def exists(self) -> bool:
        return bool(self.found[0])

    def __len__(self) -> int:
        return len(self.table) if self.table is not None else len(self.small)

    def get(self, field: bytes) -> bytes | None:
        return self.table.get(field) if self.table is not None else self.small.get(field)

    def contains(self, field: bytes) -> bool:
        return self.table.contains(field) if self.table is not None else field in self.small

    def entries(self) -> list[Entry]:
        return self.table.entries() if self.table is not None else list(self.small.items())

    def names(self) -> list[bytes]:
        return [f for f, _ in self.entries()]

    def set_many(self, entries: dict[bytes, bytes]) -> int:
        """Write fields (new or replacing) as one change; returns how many are new."""
        check_sizes(self.ctx, entries)
        check_sizes(self.ctx, entries.values())
        if self.table is not None:
            return self.table.set_many(entries)
        small = self.small
        if all(small.get(f) == v for f, v in entries.items()):
            return 0  # nothing would change (SADD of members already there): no write
        added = sum(1 for f in entries if f not in small)
        self._write({**small, **entries})
        return added

    def delete_many(self, fields: list[bytes]) -> int:
        """Remove fields as one change (the key goes with the last); returns how many were there."""
        if self.table is not None:
            removed = self.table.delete_many(fields)
            if not len(self.table):
                self.ctx.store.delete(self.ctx.db, self.key, self.ctx.now_ms)
                self._open()
            return removed
        kept = dict(self.small)
        removed = sum(1 for f in set(fields) if kept.pop(f, None) is not None)
        if removed:
            self._write(kept)
        return removed

    def _write(self, fields: dict[bytes, bytes]) -> None:
        flat = [x for entry in fields.items() for x in entry] if self.kind == TYPE_HASH else list(fields)
        save(self.ctx, self.key, self.kind, flat, self.found)
        store = self.ctx.store
        self.found = store.find(self.ctx.db, self.key, self.ctx.now_ms)
        self.small = fields
        if self.found[0] and store.struct_of(self.found[0]):
            self.table, self.small = Table(store, self.found[0]), {}

    def random_entries(self, n: int) -> list[Entry]:
        """n entries picked at random, repeats allowed."""
        if not len(self) or n <= 0:
            return []
        if self.table is not None:
            return self.table.random_entries(n)
        items = list(self.small.items())
        return [random.choice(items) for _ in range(n)]

    def random_repeats(self, n: int, budget: ReplyBudget, with_values: bool) -> list[Entry]:
        """random_entries(n) for a reply of their names (and values): the least such a reply takes
        is paid first, the rest as entries are picked, a batch at a time."""
        if not len(self) or n <= 0:
            return []
        budget.spend(n * BULK_BYTES_MIN * (2 if with_values else 1))
        out: list[Entry] = []
        while len(out) < n:
            batch = self.random_entries(min(n - len(out), 4096))
            budget.spend(sum(len(f) + (len(v) if with_values else 0) for f, v in batch))
            out += batch
        return out

    def random_distinct(self, count: int) -> list[Entry]:
        """count distinct entries at random (all of them once count reaches the size)."""
        if count * 4 >= len(self):
            entries = self.entries()
            return random.sample(entries, min(count, len(entries)))
        picked: dict[bytes, bytes] = {}
        while len(picked) < count:  # few from a large one: probe at random, repeats are rare
            picked.update(self.random_entries(count - len(picked)))
        return list(picked.items())

    def scan(self, cursor: int, count: int) -> tuple[int, list[Entry]]:
        """HSCAN / SSCAN: a small collection answers whole at cursor 0, as Redis's listpack does."""
        if self.table is not None:
            return self.table.scan(cursor, count)
        return 0, list(self.small.items())


def chunks_of(ctx: ShardCtx, found: Found) -> Chunks | None:
    """The in-place view of a large list, else None (a small one is loaded whole)."""
    off = found[0]
    return Chunks(ctx.store, off) if off and ctx.store.struct_of(off) else None
