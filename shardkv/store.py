"""One shard's keyspace in its shared-memory segment: lookups, record fields, one-key changes,
walks over the index; no sockets, no processes.

The segment's layout is in layout.py.  The store's other parts, by concern: the chain walk,
records and key-slot index (compiled: index.pyx), the allocator (compiled: alloc.pyx), changes
that must land together and their replay (journal.py), a restart's rebuild and the invariants
check (recovery.py), large collections (collstore.py).
"""

from __future__ import annotations

import itertools
import mmap
from collections.abc import Callable, Collection, Iterator
from typing import TYPE_CHECKING

from shardkv import journal, native, recovery
from shardkv.errors import INCR_OVERFLOW, NOT_INTEGER, OOM, WRONGTYPE, CommandError
from shardkv.journal import BatchOp, InjectedFault
from shardkv.keywatch import NOTE_CHANGED, KeyWatches
from shardkv.layout import (
    ALLOCATOR_LAYOUT,
    CHUNK_OFF_MASK,
    CLASS_BYTES,
    CLASS_OF,
    CLASSES,
    COLLECTION_TYPES,
    DBMAP_BYTE,
    EVENT_EXPIRED,
    EVENT_NEW,
    H_BUCKETS,
    H_BUCKETS_OFF,
    H_DIRTY,
    H_EXPIRED,
    H_EXPIRES,
    H_GENERATION,
    H_HEAP_OFF,
    H_KEYS,
    H_MAGIC,
    H_MAP_OFF,
    H_PAGES,
    H_PAGES_OFF,
    H_PAGES_USED,
    H_PARTIAL,
    H_SLOTS_OFF,
    H_UNDO_TXN,
    H_USED_BYTES,
    H_VERSION,
    INDEX_LAYOUT,
    KLEN_MASK,
    LAYOUT_CHUNKS,
    LAYOUT_PACKED,
    LAYOUT_TABLE,
    MAGIC,
    OFF_MASK,
    P_CLASS,
    P_RUN,
    PROGRESS_EVERY,
    RECORD_HEADER_BYTES,
    STRING_FLAGS,
    STRING_RAW,
    STRUCT_WORDS,
    TOMBSTONE,
    VERSION,
    VLEN_MASK,
    record_bytes,
)
from shardkv.limits import (
    DATABASES_MAX,
    PAGE_BYTES,
    PAGE_ENTRY_BYTES,
    SEGMENT_HEADER_BYTES,
    SLOT_INDEX_BYTES,
    Footprint,
)
from shardkv.native import EXPIRED, WRONG_TYPE, Allocator, Index

if TYPE_CHECKING:
    from shardkv.tracking import TrackingTable

INCR_CREATED, INCR_EXPIRED = native.INCR_STATUS["created"], native.INCR_STATUS["expired"]
_INCR_ERRORS = {native.INCR_STATUS["wrong_type"]: WRONGTYPE, native.INCR_STATUS["not_integer"]: NOT_INTEGER,
                native.INCR_STATUS["overflow"]: INCR_OVERFLOW}


def _no_progress() -> None:
    pass


class Store:
    """Operations on one shard segment.  Only the owning worker calls the mutating methods."""

    def __init__(self, mm: mmap.mmap, footprint: Footprint, *, format_segment: bool) -> None:
        self.mm = mm
        self.view = memoryview(mm)
        self.q = self.view.cast("Q")
        self.u32 = self.view.cast("I")
        if format_segment:
            self._format(footprint)
        q = self.q
        assert q[H_MAGIC] == MAGIC and q[H_VERSION] == VERSION, "not a shardkv segment"
        self.buckets = q[H_BUCKETS]
        self.mask = self.buckets - 1
        self.pages = q[H_PAGES]
        self.bucket_word = q[H_BUCKETS_OFF] >> 3
        self.page_u32 = q[H_PAGES_OFF] >> 2
        self.map_off = q[H_MAP_OFF]
        self.heap_off = q[H_HEAP_OFF]
        # The allocator (compiled: alloc.pyx): alloc(size) -> offset (OOM when full), free(offset).
        self.allocator = Allocator(mm, self.heap_off, self.pages, self.page_u32, self.map_off, CLASS_BYTES, CLASS_OF,
                                   lambda: CommandError(OOM), ALLOCATOR_LAYOUT)
        self._alloc: Callable[[int], int] = self.allocator.alloc
        self._free: Callable[[int], None] = self.allocator.free
        # The chain walk of find() (compiled: index.pyx), by stored db, expired or not, changing
        # nothing: (record offset or 0, word index of the link to it, word index of its bucket).
        self.index = Index(mm, self.bucket_word, self.buckets, self.heap_off, self.heap_bytes, q[H_SLOTS_OFF] >> 3,
                           INDEX_LAYOUT)
        # The key-slot index is kept from the start on a segment no worker has attached yet (its
        # lists are empty); on one a worker attached before, rebuild() rebuilds it, after the
        # journals a crash left are replayed.
        self.index.slots_live = format_segment or not q[H_GENERATION]
        self._find_stored: Callable[[int, bytes], tuple[int, int, int]] = self.index.find
        self._string_resp = self.index.string_resp
        # write_record(off, pdb, key, kind, value, expire_ms): a whole record into a block, unlinked;
        # publish(off, pdb, key, off_old, link, bucket): link it in (one release store).
        self.write_record: Callable[[int, int, bytes, int, bytes, int], None] = self.index.write_record
        self._publish = self.index.publish
        self._put = self.index.put
        self.index.allocator = self.allocator  # for the writes that allocate in C (incr)
        self._incr = self.index.incr_by
        # Databases as clients number them -> as stored in records; SWAPDB swaps two entries.
        # Every public method takes the client's number; records, counters and internals the stored one.
        self.dbmap = bytearray(self.mm[DBMAP_BYTE : DBMAP_BYTE + DATABASES_MAX])
        # INFO keyspace_hits / keyspace_misses: lookups made while a read-only command runs
        # (the router sets counting_reads around it and moves the counts to the stats row).
        self.counting_reads = False
        self.hits = self.misses = 0
        # Keys that blocked clients wait on (owned by router/blocking.py's Watchers): a record
        # written for one of them is noted in `touched`, which the router checks after the command.
        self.watched: Collection[tuple[int, bytes]] = ()
        self.touched: list[tuple[int, bytes]] = []
        # Keys clients WATCH (owned by keywatch.KeyWatches): every change to one of them is noted
        # in `noted` (how, db, key), which the router settles after the command.
        self.cas: Collection[tuple[int, bytes]] = ()
        self.key_watches: KeyWatches | None = None
        self.tracking_table: TrackingTable | None = None
        self.noted: list[tuple[int, int, bytes]] = []
        self.noted_existed: dict[tuple[int, bytes], bool] = {}  # SWAPDB: existed in its db before
        # Client tracking (tracking.TrackingTable): while it tracks keys or BCAST prefixes, every
        # key a command changes is noted in `modified`, and every key removed because its time
        # passed in `expired_noted` (no client changed those: NOLOOP does not hide them).
        self.tracking = False
        self.modified: list[bytes] = []
        self.expired_noted: list[bytes] = []
        self._expiring = False
        # Keyspace notifications (commands/notify.py): the classes enabled now (set by the router
        # before each command; 0 when notifications are off) and the events emitted, (db, event,
        # key), published by the router after the command.  The store itself emits `new` (a key
        # created) and `expired` (a key removed because its time passed).
        self.event_flags = 0
        self.events: list[tuple[int, bytes, bytes]] = []
        # Called every PROGRESS_EVERY steps of a loop over buckets, pages or a collection's nodes,
        # so that the worker's watchdog heartbeat moves during a long command or a rebuild.
        self.progress: Callable[[], None] = _no_progress
        # Tests only: steps of a journal commit (FAULT_STEPS) at which `fault` raises, each once.
        self.fault_steps: set[str] = set()

    def close(self) -> None:
        self.index.release()
        self.allocator.release()
        self.u32.release()
        self.q.release()
        self.view.release()

    # ------------------------------------------------------------------ geometry

    def _format(self, fp: Footprint) -> None:
        q = self.q
        slots_off = SEGMENT_HEADER_BYTES
        buckets_off = slots_off + SLOT_INDEX_BYTES
        pages_off = buckets_off + 8 * fp.buckets_per_shard
        map_off = pages_off + PAGE_ENTRY_BYTES * fp.pages_per_shard
        heap_off = (map_off + fp.pages_per_shard + PAGE_BYTES - 1) // PAGE_BYTES * PAGE_BYTES
        # The heap starts page-aligned; that costs up to one page of the heap.
        pages = min(fp.pages_per_shard, (fp.shard_segment_bytes - heap_off) // PAGE_BYTES)
        self.mm[0:heap_off] = bytes(heap_off)
        q[H_BUCKETS] = fp.buckets_per_shard
        q[H_PAGES] = pages
        q[H_BUCKETS_OFF] = buckets_off
        q[H_SLOTS_OFF] = slots_off
        q[H_PAGES_OFF] = pages_off
        q[H_MAP_OFF] = map_off
        q[H_HEAP_OFF] = heap_off
        self.mm[DBMAP_BYTE : DBMAP_BYTE + DATABASES_MAX] = bytes(range(DATABASES_MAX))
        q[H_VERSION] = VERSION
        q[H_MAGIC] = MAGIC

    @property
    def heap_bytes(self) -> int:
        return self.pages * PAGE_BYTES

    @property
    def used_bytes(self) -> int:
        return self.q[H_USED_BYTES]

    def keys_in(self, db: int) -> int:
        return self.q[H_KEYS + self.mm[DBMAP_BYTE + db]]  # read through: another worker may own the map

    def expires_in(self, db: int) -> int:
        return self.q[H_EXPIRES + self.mm[DBMAP_BYTE + db]]

    def swap_dbs(self, a: int, b: int) -> None:
        """SWAPDB on this shard (journal.py)."""
        journal.swap_dbs(self, a, b)

    @property
    def dirty(self) -> int:
        return self.q[H_DIRTY]

    @property
    def expired_keys(self) -> int:
        return self.q[H_EXPIRED]

    # ------------------------------------------------------------------ lookups

    def find(self, db: int, key: bytes, now_ms: int) -> tuple[int, int, int]:
        """(record offset or 0, word index of the link to it, word index of its bucket).

        A key whose time has passed is deleted here, as Redis does on access."""
        pdb = self.dbmap[db]
        off, link, bucket = self._find_stored(pdb, key)
        if off:
            exp = self.q[(off >> 3) + 1]
            if exp and exp <= now_ms:
                if self.event_flags & EVENT_EXPIRED:
                    self.events.append((db, b"expired", bytes(key)))
                self._expiring = True
                self._unlink(link, off, pdb)
                self._expiring = False
                self.q[H_EXPIRED] += 1
                off = link = 0
        if self.counting_reads:
            if off:
                self.hits += 1
            else:
                self.misses += 1
        return off, link, bucket

    def string_resp_of(self, db: int, key: bytes, now_ms: int) -> bytes | None:
        """GET's whole store path: the value RESP-encoded, None if missing (or expired: deleted
        by find), WRONGTYPE for another type."""
        value = self._string_resp(self.dbmap[db], key, now_ms)
        if value is EXPIRED:
            self.find(db, key, now_ms)  # deletes it (and counts the miss)
            return None
        if self.counting_reads:
            if value is None:
                self.misses += 1
            else:
                self.hits += 1
        if value is WRONG_TYPE:
            raise CommandError(WRONGTYPE)
        return value  # type: ignore[return-value]

    def lookup(self, db: int, key: bytes, now_ms: int) -> int:
        return self.find(db, key, now_ms)[0]

    def type_of(self, off: int) -> int:
        return (self.q[(off >> 3) + 2] >> 32) & 0xFF

    def string_is_raw(self, off: int) -> bool:
        return bool((self.q[(off >> 3) + 2] >> 32) & STRING_RAW)

    def kind_of(self, off: int) -> int:
        """The type with its string flags: what a copy of the record (RENAME, COPY, MOVE) keeps."""
        return (self.q[(off >> 3) + 2] >> 32) & (0xFF | STRING_FLAGS)

    def string_flags(self, off: int) -> int:
        return (self.q[(off >> 3) + 2] >> 32) & STRING_FLAGS

    def mark_string_raw(self, off: int) -> None:
        """Redis's in-place edit of a string that leaves its bytes as they were (SETBIT of a bit
        already so): only its encoding changes.  One aligned store, so no journal is needed."""
        self.q[(off >> 3) + 2] |= STRING_RAW << 32

    def expire_of(self, off: int) -> int:
        return self.q[(off >> 3) + 1]

    def key_of(self, off: int) -> bytes:
        klen = self.q[(off >> 3) + 2] & KLEN_MASK
        return self.mm[off + RECORD_HEADER_BYTES : off + RECORD_HEADER_BYTES + klen]

    def value_span(self, off: int) -> tuple[int, int]:
        w = off >> 3
        start = off + RECORD_HEADER_BYTES + (self.q[w + 2] & KLEN_MASK)
        return start, start + (self.q[w + 3] & VLEN_MASK)

    def string_resp(self, off: int) -> bytes:
        """The stored value as a RESP bulk string, ready to send."""
        a, b = self.value_span(off)
        return native.bulk(self.mm[a:b])

    def string_value(self, off: int) -> bytes:
        a, b = self.value_span(off)
        return self.mm[a:b]

    def string_length(self, off: int) -> int:
        a, b = self.value_span(off)
        return b - a

    # ------------------------------------------------------------------ large collections

    def struct_of(self, off: int) -> int:
        """Offset of the table / chunk directory of a large collection's head record, else 0."""
        q = self.q
        w = off >> 3
        info = q[w + 2]
        if (info >> 32) & 0xFF not in COLLECTION_TYPES:
            return 0
        start = off + RECORD_HEADER_BYTES + (info & KLEN_MASK)
        if self.mm[start] == LAYOUT_PACKED:
            return 0
        return q[(start + 8) >> 3]  # the first aligned word after the layout byte

    def _large_slots(self, off: int) -> tuple[int, int, list[int]]:
        """(layout, first word of the structure, the slots in use) of a large collection's head
        record; (0, 0, []) for any other record."""
        sp = self.struct_of(off)
        if not sp:
            return 0, 0, []
        q = self.q
        s = (sp + RECORD_HEADER_BYTES) >> 3
        layout = self.mm[off + RECORD_HEADER_BYTES + (q[(off >> 3) + 2] & KLEN_MASK)]
        if layout == LAYOUT_TABLE:
            return layout, s, list(q[s + STRUCT_WORDS : s + STRUCT_WORDS + (1 << q[s + 2])])
        assert layout == LAYOUT_CHUNKS, f"record {off}: unknown collection layout {layout}"
        base = s + STRUCT_WORDS + (q[s] >> 32)
        return layout, s, list(q[base : base + (q[s] & KLEN_MASK)])

    def children(self, off: int) -> list[int]:
        """The blocks a head record owns besides itself: its structure, then its nodes."""
        layout, s, slots = self._large_slots(off)
        if not layout:
            return []
        structure = (s << 3) - RECORD_HEADER_BYTES
        if layout == LAYOUT_TABLE:
            return [structure] + [(w & OFF_MASK) << 3 for w in slots if w > TOMBSTONE]
        return [structure] + [(w & CHUNK_OFF_MASK) << 3 for w in slots]

    def _recount(self, off: int) -> None:
        """Derive a large collection's counters from its slots (restart: a crash may have come
        between a slot's store and the counter's)."""
        layout, s, slots = self._large_slots(off)
        q = self.q
        if layout == LAYOUT_TABLE:
            q[s] = sum(1 for w in slots if w > TOMBSTONE)
            q[s + 1] = sum(1 for w in slots if w)
        elif layout == LAYOUT_CHUNKS:
            q[s + 1] = sum(w >> 48 for w in slots)

    def _free_record(self, off: int) -> None:
        if (self.q[(off >> 3) + 2] >> 32) & 0xFF in COLLECTION_TYPES:
            for i, child in enumerate(self.children(off)):
                if i and not i & (PROGRESS_EVERY - 1):
                    self.progress()
                self._free(child)
        self._free(off)

    def commit_words(self, stores: list[tuple[int, int]], journal_off: int, frees: list[int]) -> None:
        """Make 8-byte stores (word index, value) as one change, then free blocks (journal.py)."""
        journal.commit_words(self, stores, journal_off, frees)

    def fault(self, step: str) -> None:
        """Tests only: raise InjectedFault at `step` if it is armed (once)."""
        if step in self.fault_steps:
            self.fault_steps.discard(step)
            raise InjectedFault(step)

    # ------------------------------------------------------------------ changes

    def reserve(self, sizes: list[int]) -> list[int]:
        """Allocate blocks for records of these sizes, all or none (OOM): a multi-key write
        reserves first, so it is applied whole or not at all."""
        blocks: list[int] = []
        try:
            for size in sizes:
                blocks.append(self._alloc(size))
        except CommandError:
            for off in blocks:
                self._free(off)
            raise
        return blocks

    def release(self, blocks: list[int]) -> None:
        for off in blocks:
            self._free(off)

    def put(self, db: int, key: bytes, kind: int, value: bytes, expire_ms: int,
            found: tuple[int, int, int], block: int = 0) -> int:
        """Write a new record for key and publish it in place of found[0] (or as a new key).

        `block` is a block reserved for exactly this record; without one, a block is allocated
        here, and OOM is raised before anything changes if it does not fit."""
        off_old, link, bucket = found
        self._note_write(db, key)
        off = block or self._alloc(record_bytes(len(key), len(value)))
        self._put(off, self.dbmap[db], key, kind, value, expire_ms, off_old, link, bucket)  # compiled: index.pyx
        if off_old:
            self._free_record(off_old)
        elif self.event_flags & EVENT_NEW:
            self.events.append((db, b"new", bytes(key)))
        return off

    def _note_write(self, db: int, key: bytes) -> None:
        """key is being written: note it for blocked clients, WATCH and client tracking."""
        if self.watched and (db, key) in self.watched:
            self.touched.append((db, key))
        if self.cas and (db, key) in self.cas:
            self.noted.append((NOTE_CHANGED, db, key))
        if self.tracking:
            self.modified.append(bytes(key))

    def incr(self, db: int, key: bytes, delta: int, now_ms: int) -> int:
        """INCRBY's store path (compiled: Index.incr): key's integer plus delta, 0 for a missing
        key, its time kept; the new value.  Redis's errors (WRONGTYPE, not an integer, overflow)
        and OOM leave everything as it was."""
        status, result = self._incr(self.dbmap[db], key, delta, now_ms)
        if status == INCR_EXPIRED:
            self.find(db, key, now_ms)  # deletes it, with its events
            status, result = self._incr(self.dbmap[db], key, delta, now_ms)
        if status > INCR_CREATED:
            raise CommandError(_INCR_ERRORS[status])
        self._note_write(db, key)
        if status == INCR_CREATED and self.event_flags & EVENT_NEW:
            self.events.append((db, b"new", bytes(key)))
        return result

    def write_batch(self, ops: list[BatchOp], blocks: list[int] | None = None) -> None:
        """Apply puts and deletes on several keys as one change (journal.py)."""
        journal.write_batch(self, ops, blocks)

    def raw_lookup(self, db: int, key: bytes) -> int:
        """The key's record, expired or not, deleting nothing (0: none)."""
        return self._find_stored(self.dbmap[db], key)[0]

    def note_record(self, off: int) -> None:
        """A change to the key of record `off` (a head record), if a client WATCHes or tracks it."""
        info = self.q[(off >> 3) + 2]
        wk = (self.dbmap.index((info >> 40) & 0xFF), bytes(self.key_of(off)))
        if wk in self.cas:
            self.noted.append((NOTE_CHANGED, *wk))
        if self.tracking:
            (self.expired_noted if self._expiring else self.modified).append(wk[1])

    def presence(self, db: int, key: bytes, now_ms: int) -> tuple[bool, bool]:
        """(a record exists, it exists but its time has passed), deleting nothing."""
        off = self._find_stored(self.dbmap[db], key)[0]
        if not off:
            return False, False
        exp = self.q[(off >> 3) + 1]
        return True, bool(exp and exp <= now_ms)

    def is_stale(self, db: int, key: bytes, now_ms: int) -> bool:
        return self.presence(db, key, now_ms)[1]

    # ------------------------------------------------------------------ undo log of a transaction (journal.py)

    @property
    def undo_txn(self) -> int:
        return self.q[H_UNDO_TXN]

    def undo_begin(self, txn: int) -> None:
        journal.undo_begin(self, txn)

    def undo_save(self, db: int, key: bytes, kind: int, expire_ms: int, value: bytes) -> None:
        journal.undo_save(self, db, key, kind, expire_ms, value)

    def undo_discard(self) -> None:
        journal.undo_discard(self)

    def undo_rollback(self) -> None:
        journal.undo_rollback(self)

    def set_expire(self, off: int, db: int, expire_ms: int) -> None:
        if self.cas or self.tracking:
            self.note_record(off)
        db = self.dbmap[db]
        q = self.q
        old = q[(off >> 3) + 1]
        q[(off >> 3) + 1] = expire_ms  # one aligned store
        q[H_DIRTY] += 1
        if bool(old) != bool(expire_ms):
            q[H_EXPIRES + db] += 1 if expire_ms else -1

    def delete(self, db: int, key: bytes, now_ms: int) -> bool:
        off, link, _ = self.find(db, key, now_ms)
        if not off:
            return False
        self._unlink(link, off, self.dbmap[db])
        return True

    def _unlink(self, link: int, off: int, db: int) -> None:
        if self.cas or self.tracking:
            self.note_record(off)
        q = self.q
        q[link] = q[off >> 3]  # publish the removal
        self.index.slot_remove(off)
        q[H_DIRTY] += 1
        q[H_KEYS + db] -= 1
        if q[(off >> 3) + 1]:
            q[H_EXPIRES + db] -= 1
        self._free_record(off)

    def flush(self, db: int | None) -> None:
        """Remove every key of db (None: of every db), never half of one (journal.py)."""
        journal.flush(self, db)

    def _unlink_all(self) -> None:
        """Empty every bucket: the records are gone from the index (freed by the caller)."""
        start = self.bucket_word
        self.view[start * 8 : (start + self.buckets) * 8] = bytes(self.buckets * 8)

    # ------------------------------------------------------------------ walking

    def keys_in_slot(self, slot: int) -> int:
        """How many keys of hash slot `slot` this shard holds, of every db (COUNTKEYSINSLOT)."""
        return self.index.keys_in_slot(slot)

    def slot_keys(self, slot: int, count: int) -> list[bytes]:
        """Up to count keys of hash slot `slot` (GETKEYSINSLOT), without walking other slots'."""
        return [bytes(self.key_of(off)) for off in self.index.slot_records(slot, count)]

    def bucket_keys(self, bucket: int, db: int, now_ms: int) -> list[bytes]:
        """Live keys of db in one bucket (SCAN's unit of work; buckets never move)."""
        if not bucket & (PROGRESS_EVERY - 1):  # KEYS and SCAN walk buckets in order
            self.progress()
        q = self.q
        db = self.dbmap[db]
        out = []
        w = q[self.bucket_word + bucket]
        while w:
            off = (w & OFF_MASK) << 3
            rw = off >> 3
            if (q[rw + 2] >> 40) & 0xFF == db and not (q[rw + 1] and q[rw + 1] <= now_ms):
                out.append(self.key_of(off))
            w = q[rw]
        return out

    def busy_buckets(self, start: int = 0, end: int | None = None) -> Iterator[int]:
        """The buckets in [start, end) that hold a chain, empty ones skipped at C speed (most of
        an index is empty: a full walk in Python cost KEYS ~100 ms on a 64 MB server)."""
        end = self.buckets if end is None else end
        base = self.bucket_word
        return itertools.compress(range(start, end), self.q[base + start : base + end])

    def records(self) -> Iterator[tuple[int, int]]:
        """(bucket, record offset) of every record, expired or not."""
        q = self.q
        for i, b in enumerate(self.busy_buckets()):
            if not i & (PROGRESS_EVERY - 1):
                self.progress()
            w = q[self.bucket_word + b]
            while w:
                off = (w & OFF_MASK) << 3
                yield b, off
                w = q[off >> 3]

    def record_size(self, off: int) -> int:
        w = off >> 3
        return record_bytes(self.q[w + 2] & KLEN_MASK, self.q[w + 3] & VLEN_MASK)

    def has_expires(self) -> bool:
        q = self.q
        return any(q[H_EXPIRES + db] for db in range(DATABASES_MAX))

    def expire_some(self, cursor: int, buckets_max: int, removed_max: int, now_ms: int) -> tuple[int, int]:
        """Active expiry: sweep up to buckets_max buckets from cursor, removing at most removed_max
        keys whose time has passed; returns (next cursor, removed)."""
        q = self.q
        removed = 0
        end = min(cursor + buckets_max, self.buckets)
        base = self.bucket_word
        for i, b in enumerate(self.busy_buckets(cursor, end)):
            if removed >= removed_max:
                return b, removed
            if not i & (PROGRESS_EVERY - 1):
                self.progress()
            link = base + b
            w = q[link]
            while w:
                off = (w & OFF_MASK) << 3
                exp = q[(off >> 3) + 1]
                if exp and exp <= now_ms:
                    pdb = (q[(off >> 3) + 2] >> 40) & 0xFF
                    if self.event_flags & EVENT_EXPIRED:
                        self.events.append((self.dbmap.index(pdb), b"expired", bytes(self.key_of(off))))
                    self._expiring = True
                    self._unlink(link, off, pdb)
                    self._expiring = False
                    q[H_EXPIRED] += 1
                    removed += 1
                else:
                    link = off >> 3
                w = q[link]
        return end & self.mask, removed

    # ------------------------------------------------------------------ allocator

    def _page_field(self, page: int, field: int) -> int:
        return self.u32[self.page_u32 + page * 8 + field]

    def block_bytes(self, off: int) -> int:
        """The bytes of the allocated block at off: its size class, or its run of pages."""
        e = self.page_u32 + (off - self.heap_off) // PAGE_BYTES * 8
        cls = self.u32[e + P_CLASS]
        return CLASS_BYTES[cls] if cls <= CLASSES else self.u32[e + P_RUN] * PAGE_BYTES

    def _reset_allocator(self) -> None:
        pages_off = self.page_u32 * 4
        self.view[pages_off : pages_off + self.pages * PAGE_ENTRY_BYTES] = bytes(self.pages * PAGE_ENTRY_BYTES)
        self.mm[self.map_off : self.map_off + self.pages] = bytes(self.pages)
        q = self.q
        for c in range(1, CLASSES + 1):
            q[H_PARTIAL + c] = 0
        q[H_USED_BYTES] = 0
        q[H_PAGES_USED] = 0
        self.allocator.page_hint = 0

    def rebuild(self) -> int:
        """Derive the allocator's state, counters and key-slot index from the index after a
        worker restart (recovery.py); the number of records found."""
        return recovery.rebuild(self)

    def check(self) -> None:
        """Walk the whole structure and assert its invariants (tests, after crashes: recovery.py)."""
        recovery.check(self)

