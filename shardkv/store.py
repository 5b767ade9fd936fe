"""One shard's keyspace, laid out inside its shared-memory segment; no sockets, no processes.

Layout of a segment (all offsets in bytes, all words little-endian u64 unless said):

    header   8192 B   magic, geometry, counters, allocator roots (see H_* below)
    slots    8 B each the key-slot index, one word per hash slot
    buckets  8 B each a power-of-two array of chain heads ("links")
    pages    32 B each allocator page table: 8 x u32 per heap page
    pagemap  1 B each 0 = page free, 1 = page in use (searched with mmap.find)
    heap     64 KiB pages holding records

A link is one u64: `fingerprint << 40 | offset >> 3` (0 = end of chain); the fingerprint is
24 bits of the key hash, so walking a chain rarely touches a record that is not the key.
A record is 8-byte aligned:

    +0  next link      +8  expire at, ms since epoch (0 = never)
    +16 info: key length (32 bits) | type << 32 | db << 40 | flags << 48
    +24 value bytes (40 bits) | 24 bits reserved for the access clock / LFU counter (eviction,
        OBJECT IDLETIME / FREQ; 0 until then: every reader masks with VLEN_MASK)
    +32 key-slot links: the next and previous record of the key's hash slot, offset / 16 each
        (index.pyx; 0 in a collection's other blocks, which are not keys)
    +40 key, then the value (a string's bytes as they are; GET frames them as it copies them)

The key-slot index (16384 words after the header: a slot's key count << 32 | its first record)
lists every key of a hash slot, so COUNTKEYSINSLOT, GETKEYSINSLOT and moving a slot to another
shard never walk the whole index.  Like the allocator's state it is derived: a restart rebuilds it.

Crash consistency: a worker can die between any two statements.  Every change to the index is
one aligned 8-byte store of a link, made after the record it points to is complete (insert,
replace) or after its successor is known (delete).  Allocator state is *derived*: on attach, a
restarted worker walks the index and rebuilds the page table and free lists from the records it
finds, so a record allocated but never published, or unlinked but never freed, is reclaimed.

A large list, set or hash owns blocks besides its record (a table or chunk directory and node
records, see collstore.py): `children` finds them, so deleting the record frees them, rebuild
marks them live and check() verifies them.  Several stores that must land together go through
`commit_words`, a redo journal of (word, value) pairs committed by one header word.

Allocator: records up to PAGE_BYTES/4 come from size-class slabs (one class per page, a free list
per page, pages with free blocks on a per-class list, an empty page goes back to the pool); larger
records take a run of whole pages.  "Full" means no block of the needed class and no free page
(run) is left: the write fails with OOM before anything changes.
"""

from __future__ import annotations

import itertools
import mmap
import struct
import zlib
from collections.abc import Callable, Collection, Iterator
from typing import TYPE_CHECKING

from shardkv import native
from shardkv.errors import INCR_OVERFLOW, NOT_INTEGER, OOM, WRONGTYPE, CommandError
from shardkv.keywatch import NOTE_CHANGED, NOTE_SWAPPED, KeyWatches
from shardkv.limits import (
    DATABASES_MAX,
    HASH_SLOTS,
    PAGE_BYTES,
    PAGE_ENTRY_BYTES,
    SEGMENT_HEADER_BYTES,
    SLOT_INDEX_BYTES,
    Footprint,
)
from shardkv.native import EXPIRED, WRONG_TYPE, Allocator, Index

if TYPE_CHECKING:
    from shardkv.tracking import TrackingTable

MAGIC = 0x5348_4B56_0001  # "SHKV" v1
VERSION = 4  # 2: the access clock's bits reserved in the value-bytes word; 3: strings stored unframed; 4: slot links
RECORD_HEADER_BYTES = 40
SMALL_RECORD_BYTES_MAX = PAGE_BYTES // 4

# Header words.
H_MAGIC, H_VERSION, H_BUCKETS, H_PAGES, H_BUCKETS_OFF, H_PAGES_OFF, H_MAP_OFF, H_HEAP_OFF = range(8)
H_USED_BYTES = 8  # bytes of heap blocks handed out
H_EXPIRED = 9  # keys removed because their time passed
H_GENERATION = 10  # incremented each time a worker attaches
H_PAGES_USED = 11
H_DIRTY = 12  # changes since start (INFO rdb_changes_since_last_save)
H_JOURNAL = 13  # offset of a batch's redo journal while the batch is being published, else 0
H_WORD_JOURNAL = 14  # offset of a word journal (commit_words) while it is being applied, else 0
H_SLOTS_OFF = 15  # where the key-slot index starts
H_PARTIAL = 16  # per size class: 1 + index of a page with free blocks, 0 = none
H_KEYS = 64  # per db: number of keys
H_EXPIRES = H_KEYS + DATABASES_MAX  # per db: number of keys with an expire time
DBMAP_BYTE = (H_EXPIRES + DATABASES_MAX) * 8  # 1 byte per db: the db (as clients number it) -> stored db
H_SWAP_JOURNAL = (DBMAP_BYTE + DATABASES_MAX) // 8  # a SWAPDB in progress, redone at restart
H_FLUSH_JOURNAL = H_SWAP_JOURNAL + 1  # a FLUSHDB / FLUSHALL in progress (stored db or FLUSH_ALL), redone at restart
FLUSH_ALL = 0xFFFF
# The undo log of a transaction (see `undo_begin`): the transaction (coordinating worker << 56 |
# its id), the newest undo record (each links the next older one by its first word), and the
# record being put back by a rollback.
H_UNDO_TXN, H_UNDO_HEAD, H_UNDO_CURRENT = H_FLUSH_JOURNAL + 1, H_FLUSH_JOURNAL + 2, H_FLUSH_JOURNAL + 3
UNDO_ABSENT = 0xFF  # the type of an undo record for a key that did not exist
TXN_ID_MASK = (1 << 56) - 1
# The notification classes the store emits itself (the same bits as commands/notify.py's).
EVENT_EXPIRED, EVENT_NEW = 1 << 8, 1 << 14

# Page table entry fields (u32).
P_CLASS, P_LIVE, P_FREE, P_BUMP, P_PREV, P_NEXT, P_RUN = range(7)
PAGE_FREE, PAGE_RUN_HEAD, PAGE_RUN_TAIL = 0, 254, 255

TYPE_NONE, TYPE_STRING, TYPE_LIST, TYPE_SET, TYPE_ZSET, TYPE_HASH, TYPE_STREAM = range(7)
# Or'ed into a string's kind: the value was edited in place (APPEND, SETRANGE, SETBIT, BITFIELD,
# BITOP's result), which Redis keeps "raw" whatever it holds (OBJECT ENCODING).  Stored in a bit
# of the record's info word above the type byte; type_of ignores it.
STRING_RAW = 1 << 16
# Likewise: a value Redis holds as a plain string though it reads as an integer (INCRBYFLOAT's
# result: embstr), and an integer in an object of its own (a COPY of a shared integer:
# OBJECT REFCOUNT 1).  Only OBJECT ENCODING / REFCOUNT read them.
STRING_NOT_INT = 1 << 17
STRING_OWN_INT = 1 << 18
STRING_FLAGS = STRING_RAW | STRING_NOT_INT | STRING_OWN_INT
TYPE_NAMES = {TYPE_STRING: b"string", TYPE_LIST: b"list", TYPE_SET: b"set", TYPE_ZSET: b"zset",
              TYPE_HASH: b"hash", TYPE_STREAM: b"stream"}

OFF_MASK = (1 << 40) - 1
KLEN_MASK = (1 << 32) - 1
VLEN_MASK = (1 << 40) - 1  # of a record's value-bytes word (the rest: the access clock's)

# A list, set or hash record's value area starts with its layout byte (see collstore.py).
LAYOUT_PACKED, LAYOUT_TABLE, LAYOUT_CHUNKS = 1, 2, 3
COLLECTION_TYPES = frozenset((TYPE_LIST, TYPE_SET, TYPE_HASH))
STRUCT_WORDS = 3  # words of a table / chunk directory before its slots
TOMBSTONE = 1  # a table slot whose entry was deleted
CHUNK_OFF_MASK = (1 << 48) - 1  # a chunk directory slot: entries << 48 | offset >> 3


def _size_classes() -> list[int]:
    sizes = list(range(32, 129, 16))
    step = 32
    while sizes[-1] < SMALL_RECORD_BYTES_MAX:
        for _ in range(4):
            sizes.append(sizes[-1] + step)
        step *= 2
    assert sizes[-1] == SMALL_RECORD_BYTES_MAX
    return sizes


CLASS_BYTES = [0] + _size_classes()  # class 0 is "not a slab"
CLASSES = len(CLASS_BYTES) - 1
assert H_PARTIAL + CLASSES < H_KEYS and (H_UNDO_CURRENT + 1) * 8 <= SEGMENT_HEADER_BYTES
# class of a size, by (size + 15) // 16
_CLASS_OF = [0] * (SMALL_RECORD_BYTES_MAX // 16 + 1)
for _i in range(len(_CLASS_OF)):
    _CLASS_OF[_i] = next(c for c in range(1, CLASSES + 1) if CLASS_BYTES[c] >= _i * 16)


# What alloc.pyx also knows of the layout; it checks its own numbers against these at start.
ALLOCATOR_LAYOUT = (P_CLASS, P_LIVE, P_FREE, P_BUMP, P_PREV, P_NEXT, P_RUN, PAGE_FREE, PAGE_RUN_HEAD, PAGE_RUN_TAIL,
                    H_USED_BYTES, H_PAGES_USED, H_PARTIAL, PAGE_BYTES, SMALL_RECORD_BYTES_MAX)


# record_bytes(klen, vlen): the block bytes of a record (compiled: index.pyx).
INDEX_LAYOUT = (OFF_MASK, KLEN_MASK, VLEN_MASK, RECORD_HEADER_BYTES, TYPE_STRING, H_DIRTY, H_KEYS, H_EXPIRES,
                TYPE_LIST, TYPE_SET, TYPE_HASH, LAYOUT_PACKED, LAYOUT_TABLE, LAYOUT_CHUNKS, STRUCT_WORDS, TOMBSTONE,
                CHUNK_OFF_MASK)
record_bytes = native.record_bytes
INCR_CREATED, INCR_EXPIRED = native.INCR_STATUS["created"], native.INCR_STATUS["expired"]
_INCR_ERRORS = {native.INCR_STATUS["wrong_type"]: WRONGTYPE, native.INCR_STATUS["not_integer"]: NOT_INTEGER,
                native.INCR_STATUS["overflow"]: INCR_OVERFLOW}


_JOURNAL_HEAD = struct.Struct("<I")
_JOURNAL_ENTRY = struct.Struct("<BBIQ")  # is put, stored db, key length, new record offset (puts)

BatchOp = tuple[int, bytes, int, bytes | None, int]  # db, key, type, value (None: delete), expire at ms


def journal_bytes(ops: list[tuple[bytes, bool]]) -> int:
    """Size of the redo journal of a batch: (key, is put) per operation."""
    return _JOURNAL_HEAD.size + sum(_JOURNAL_ENTRY.size + len(key) for key, _ in ops)


def batch_sizes(ops: list[BatchOp]) -> list[int]:
    """The blocks write_batch needs: one per put, then the journal."""
    puts = [record_bytes(len(key), len(value)) for _, key, _, value, _ in ops if value is not None]
    return puts + [journal_bytes([(key, value is not None) for _, key, _, value, _ in ops])]


def word_journal_sizes(stores: int) -> list[int]:
    """The block commit_words needs for this many stores: none for one."""
    return [8 + 16 * stores] if stores > 1 else []


PROGRESS_EVERY = 4096  # a long loop calls Store.progress once per this many steps (a power of two)


class InjectedFault(Exception):
    """Tests only: the failure Store.fault raises at an armed step of a journal commit, standing
    for a bug that raises there."""


# The steps of a journal commit at which tests inject a failure (Store.fault_steps), in the order
# a commit passes them.  Before the commit word the shard must be left as it was; after it, as
# the restart redo leaves it: the change wholly applied.
BATCH_STEPS_BEFORE_COMMIT = ("batch:record", "batch:journal")
BATCH_STEPS_AFTER_COMMIT = ("batch:commit", "batch:publish", "batch:published", "batch:clear")
WORD_STEPS_BEFORE_COMMIT = ("words:journal",)
WORD_STEPS_AFTER_COMMIT = ("words:commit", "words:apply", "words:applied", "words:free")
FAULT_STEPS = frozenset(BATCH_STEPS_BEFORE_COMMIT + BATCH_STEPS_AFTER_COMMIT + WORD_STEPS_BEFORE_COMMIT
                        + WORD_STEPS_AFTER_COMMIT)


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
        self.allocator = Allocator(mm, self.heap_off, self.pages, self.page_u32, self.map_off, CLASS_BYTES, _CLASS_OF,
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
        """SWAPDB on this shard: a journal word first, so a crash half-way is redone at restart."""
        pa, pb = self.dbmap[a], self.dbmap[b]
        if self.cas:  # a watched key of either db is changed if it exists in either db
            for db, key in list(self.cas):
                if db in (a, b) and a != b:
                    here = bool(self._find_stored(self.dbmap[db], key)[0])
                    if here or self._find_stored(pb if db == a else pa, key)[0]:
                        self.noted.append((NOTE_SWAPPED, db, key))
                        self.noted_existed[(db, key)] = here
        self.q[H_SWAP_JOURNAL] = 1 << 63 | a | b << 8 | pa << 16 | pb << 24
        self.mm[DBMAP_BYTE + a] = pb
        self.mm[DBMAP_BYTE + b] = pa
        self.q[H_SWAP_JOURNAL] = 0
        self.dbmap[a], self.dbmap[b] = pb, pa
        if self.watched:  # a key waited on in either db may exist now
            self.touched.extend(k for k in self.watched if k[0] in (a, b))

    def _redo_swap(self) -> None:
        j = self.q[H_SWAP_JOURNAL]
        if j:
            a, b, pa, pb = j & 0xFF, (j >> 8) & 0xFF, (j >> 16) & 0xFF, (j >> 24) & 0xFF
            self.mm[DBMAP_BYTE + a] = pb
            self.mm[DBMAP_BYTE + b] = pa
            self.q[H_SWAP_JOURNAL] = 0
        self.dbmap[:] = self.mm[DBMAP_BYTE : DBMAP_BYTE + DATABASES_MAX]  # in place: the fast path holds it

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

    def commit_words(self, stores: list[tuple[int, int]], journal: int, frees: list[int]) -> None:
        """Make 8-byte stores (word index, value) as one change, then free blocks.

        The nodes the stores point to are written first.  One store is made as it is; several go
        through `journal`, a block reserved with word_journal_sizes(len(stores)): the stores are
        written to it, storing its offset in the header commits, and they are applied by the same
        code that applies them again at restart (they are absolute, so twice is harmless)."""
        q = self.q
        if len(stores) == 1:
            word, value = stores[0]
            q[word] = value
        else:
            j = journal >> 3
            q[j] = len(stores)
            for i, (word, value) in enumerate(stores):
                q[j + 1 + 2 * i] = word
                q[j + 2 + 2 * i] = value
            if self.fault_steps:
                self.fault("words:journal")
            q[H_WORD_JOURNAL] = journal  # commit
            if self.fault_steps:
                self.fault("words:commit")
            self._redo_words(live=True)
            if self.fault_steps:
                self.fault("words:applied")
            self._free(journal)
        for i, off in enumerate(frees):
            self._free(off)
            if not i and journal and self.fault_steps:
                self.fault("words:free")
        q[H_DIRTY] += 1

    def _redo_words(self, live: bool) -> None:
        """Apply a committed word journal, then clear it (live, and at restart)."""
        q = self.q
        journal = q[H_WORD_JOURNAL]
        if journal:
            j = journal >> 3
            for i in range(q[j]):
                q[q[j + 1 + 2 * i]] = q[j + 2 + 2 * i]
                if live and not i and self.fault_steps:
                    self.fault("words:apply")
            q[H_WORD_JOURNAL] = 0

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
        """Apply puts and deletes on several keys as one change: a crash leaves all or none.

        Every new record is written first, then a redo journal naming them; storing the journal's
        offset in the header is the commit point.  The changes are then published one by one and
        the journal cleared; a restart that finds a journal publishes it again (`_redo`).
        `blocks` are blocks reserved for exactly this batch (batch_sizes); else they are taken
        here, all or none (OOM before anything changes)."""
        if blocks is None:
            blocks = self.reserve(batch_sizes(ops))
        journal_off = blocks[-1]
        mm = self.mm
        at = journal_off + _JOURNAL_HEAD.size
        _JOURNAL_HEAD.pack_into(mm, journal_off, len(ops))
        record_blocks = iter(blocks[:-1])
        for db, key, kind, value, expire_ms in ops:
            pdb = self.dbmap[db]
            new_off = 0
            if value is not None:
                if self.watched and (db, key) in self.watched:
                    self.touched.append((db, key))
                if self.cas and (db, key) in self.cas:
                    self.noted.append((NOTE_CHANGED, db, key))
                if self.tracking:
                    self.modified.append(bytes(key))
                new_off = next(record_blocks)
                self.write_record(new_off, pdb, key, kind, value, expire_ms)
            _JOURNAL_ENTRY.pack_into(mm, at, value is not None, pdb, len(key), new_off)
            at += _JOURNAL_ENTRY.size
            mm[at : at + len(key)] = key
            at += len(key)
            if self.fault_steps:
                self.fault("batch:record")
        if self.fault_steps:
            self.fault("batch:journal")
        self.q[H_JOURNAL] = journal_off  # commit
        if self.fault_steps:
            self.fault("batch:commit")
        self._redo(journal_off, live=True)
        if self.fault_steps:
            self.fault("batch:published")
        self.q[H_JOURNAL] = 0
        if self.fault_steps:
            self.fault("batch:clear")
        self._free(journal_off)

    def _redo(self, journal_off: int, live: bool) -> None:
        """Publish a committed journal's changes in order.  Idempotent: a put already published
        is skipped.  `live`: also free replaced records and keep counters (at restart the
        allocator and counters are rebuilt from the index afterwards instead)."""
        q, mm = self.q, self.mm
        (count,) = _JOURNAL_HEAD.unpack_from(mm, journal_off)
        at = journal_off + _JOURNAL_HEAD.size
        for i in range(count):
            if i and live and self.fault_steps:
                self.fault("batch:publish")
            is_put, pdb, klen, new_off = _JOURNAL_ENTRY.unpack_from(mm, at)
            at += _JOURNAL_ENTRY.size
            key = mm[at : at + klen]
            at += klen
            off_old, link, bucket = self._find_stored(pdb, key)
            if is_put:
                if off_old == new_off:
                    continue
                w = new_off >> 3
                self._publish(new_off, pdb, key, off_old, link, bucket)
                if live:
                    q[H_DIRTY] += 1
                    if off_old:
                        if bool(q[(off_old >> 3) + 1]) != bool(q[w + 1]):
                            q[H_EXPIRES + pdb] += 1 if q[w + 1] else -1
                        self._free_record(off_old)
                    else:
                        q[H_KEYS + pdb] += 1
                        if q[w + 1]:
                            q[H_EXPIRES + pdb] += 1
            elif off_old:
                if live:
                    self._unlink(link, off_old, pdb)
                else:
                    q[link] = q[off_old >> 3]

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

    # ------------------------------------------------------------------ undo log of a transaction
    #
    # Before a transaction first changes a key on this shard, the key's record is copied into an
    # undo record (a record of the same layout, kept out of the index; a large collection is
    # copied packed).  Commit frees them (`undo_discard`); abort puts each back in the index in
    # place of what the transaction left (`undo_rollback`), with no allocation, so a rollback
    # cannot run out of memory.  Every step is one aligned store or is redone at restart: the
    # chain and the record being put back stay reachable from the header until they are done.

    @property
    def undo_txn(self) -> int:
        return self.q[H_UNDO_TXN]

    def undo_begin(self, txn: int) -> None:
        q = self.q
        assert not q[H_UNDO_TXN], "the last transaction's undo log was resolved first"
        q[H_UNDO_HEAD] = 0
        q[H_UNDO_CURRENT] = 0
        q[H_UNDO_TXN] = txn

    def undo_save(self, db: int, key: bytes, kind: int, expire_ms: int, value: bytes) -> None:
        """Keep the record key has now (kind UNDO_ABSENT: none); OOM before anything changes."""
        off = self._alloc(record_bytes(len(key), len(value)))
        self.write_record(off, self.dbmap[db], key, kind, value, expire_ms)
        q = self.q
        q[off >> 3] = q[H_UNDO_HEAD]
        q[H_UNDO_HEAD] = off  # publish

    def undo_discard(self) -> None:
        """Commit: the transaction's changes stay; its undo records are freed."""
        q = self.q
        head = q[H_UNDO_HEAD]
        q[H_UNDO_TXN] = 0  # this shard's commit (a restart frees what is left: nothing reaches it)
        q[H_UNDO_HEAD] = 0
        while head:
            nxt = q[head >> 3]
            self._free(head)
            head = nxt

    def undo_rollback(self) -> None:
        """Abort: every key the transaction changed gets back the record it had before."""
        q = self.q
        if q[H_UNDO_CURRENT]:
            self._undo_restore(q[H_UNDO_CURRENT])
        while q[H_UNDO_HEAD]:
            rec = q[H_UNDO_HEAD]
            q[H_UNDO_CURRENT] = rec
            q[H_UNDO_HEAD] = q[rec >> 3]
            self._undo_restore(rec)
        q[H_UNDO_TXN] = 0

    def _undo_restore(self, rec: int) -> None:
        q = self.q
        w = rec >> 3
        info = q[w + 2]
        kind, pdb = (info >> 32) & 0xFF, (info >> 40) & 0xFF
        key = bytes(self.key_of(rec))
        off, link, bucket = self._find_stored(pdb, key)
        if kind == UNDO_ABSENT:
            if off:
                self._unlink(link, off, pdb)
            q[H_UNDO_CURRENT] = 0
            self._free(rec)
            return
        if off == rec:  # put back already, before a crash
            q[H_UNDO_CURRENT] = 0
            return
        q[H_DIRTY] += 1
        had_expire = bool(off and q[(off >> 3) + 1])
        self._publish(rec, pdb, key, off, link, bucket)
        q[H_UNDO_CURRENT] = 0
        if off:
            self._free_record(off)
            if had_expire != bool(q[w + 1]):
                q[H_EXPIRES + pdb] += 1 if q[w + 1] else -1
        else:
            q[H_KEYS + pdb] += 1
            if q[w + 1]:
                q[H_EXPIRES + pdb] += 1

    def undo_records(self) -> list[int]:
        """The undo records a restart must keep (the chain, and the one being put back)."""
        q = self.q
        if not q[H_UNDO_TXN]:
            return []
        out = [q[H_UNDO_CURRENT]] if q[H_UNDO_CURRENT] else []
        rec = q[H_UNDO_HEAD]
        while rec:
            out.append(rec)
            rec = q[rec >> 3]
        return out

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
        """Remove every key of db (None: of every db).  A journal word first, so a flush cut
        short by a crash is finished at restart: never half a database."""
        pdb = FLUSH_ALL if db is None else self.dbmap[db]
        watched, self.cas = self.cas, ()  # a flush changes the watched keys that exist, once each
        for wdb, key in watched:
            if (db is None or wdb == db) and self._find_stored(self.dbmap[wdb], key)[0]:
                self.noted.append((NOTE_CHANGED, wdb, key))
        try:
            self._flush(db, pdb)
        finally:
            self.cas = watched

    def _flush(self, db: int | None, pdb: int) -> None:
        q = self.q
        q[H_FLUSH_JOURNAL] = 1 << 63 | pdb
        if db is None:
            q[H_DIRTY] += sum(q[H_KEYS + i] for i in range(DATABASES_MAX))
            self._unlink_all()
            self.index.slots_reset()
            for i in range(DATABASES_MAX):
                q[H_KEYS + i] = 0
                q[H_EXPIRES + i] = 0
            self._reset_allocator()
        else:
            self._unlink_db(pdb, live=True)
        q[H_FLUSH_JOURNAL] = 0

    def _unlink_all(self) -> None:
        """Empty every bucket: the records are gone from the index (freed by the caller)."""
        start = self.bucket_word
        self.view[start * 8 : (start + self.buckets) * 8] = bytes(self.buckets * 8)

    def _unlink_db(self, pdb: int, live: bool) -> None:
        """Unlink every record of stored db pdb; `live`: also free them and keep the counters
        (at restart both are derived from the index afterwards instead)."""
        q = self.q
        for b in range(self.buckets):
            if not b & (PROGRESS_EVERY - 1):
                self.progress()
            link = self.bucket_word + b
            w = q[link]
            while w:
                off = (w & OFF_MASK) << 3
                if (q[(off >> 3) + 2] >> 40) & 0xFF == pdb:
                    if live:
                        self._unlink(link, off, pdb)
                    else:
                        q[link] = q[off >> 3]
                else:
                    link = off >> 3
                w = q[link]

    def _redo_flush(self) -> None:
        j = self.q[H_FLUSH_JOURNAL]
        if j:
            pdb = j & 0xFFFF
            if pdb == FLUSH_ALL:
                self._unlink_all()
            else:
                self._unlink_db(pdb, live=False)
            self.q[H_FLUSH_JOURNAL] = 0

    # ------------------------------------------------------------------ walking

    def keys_in_slot(self, slot: int) -> int:
        """How many keys of hash slot `slot` this shard holds, of every db (COUNTKEYSINSLOT)."""
        return self.index.slot_keys(slot)

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
        """Derive allocator state and counters from the index (after a worker restart).

        Returns the number of records found.  Blocks that were allocated but never published,
        or unlinked but never freed, become free again."""
        self.index.slots_live = False  # the lists may be half updated: rebuilt below, after the journals
        self._redo_swap()
        self._redo_flush()
        self._redo_words(live=False)
        if self.q[H_JOURNAL]:  # a batch was committed but not wholly published: finish it
            self._redo(self.q[H_JOURNAL], live=False)
            self.q[H_JOURNAL] = 0
        self._reset_allocator()
        self.index.slots_reset()
        q = self.q
        for i in range(DATABASES_MAX):
            q[H_KEYS + i] = 0
            q[H_EXPIRES + i] = 0
        # Pass 1 (compiled: Allocator.rebuild_from): every record of the index marks its block
        # live, is counted in its db and goes on its slot's list; then a large collection's
        # other blocks, and a transaction's undo records.
        live_bits = bytearray(self.heap_bytes // 16 // 8 + 1)
        found, large = self.allocator.rebuild_from(self.index, live_bits, self.progress)
        for head in large:
            self._recount(head)
            for i, off in enumerate(self.children(head)):
                if i and not i & (PROGRESS_EVERY - 1):
                    self.progress()
                self.allocator.mark_live(off, self.record_size(off), live_bits)
        for off in self.undo_records():  # a transaction's undo log, resolved after the restart
            if not self.allocator.marked(off, self.record_size(off), live_bits):  # (one being put back
                self.allocator.mark_live(off, self.record_size(off), live_bits)  # may be in the index)
        if not q[H_UNDO_TXN]:
            q[H_UNDO_HEAD] = q[H_UNDO_CURRENT] = 0
        # Pass 2: each slab page's free list, of the holes below its highest live block.
        self.allocator.free_holes(live_bits, self.progress)
        return found

    def check(self) -> None:
        """Walk the whole structure and assert its invariants (tests, after crashes)."""
        q, u = self.q, self.u32
        keys = [0] * DATABASES_MAX
        used = 0
        for b, off in self.records():
            w = off >> 3
            assert self.heap_off <= off < self.heap_off + self.heap_bytes, f"record {off} outside heap"
            key = self.key_of(off)
            db = (q[w + 2] >> 40) & 0xFF
            assert zlib.crc32(key, db) & self.mask == b, f"key {key!r} in the wrong bucket"
            keys[db] += 1
            for block in [off] + self.children(off):
                page = (block - self.heap_off) // PAGE_BYTES
                cls = u[self.page_u32 + page * 8 + P_CLASS]
                assert cls != PAGE_FREE and cls != PAGE_RUN_TAIL, f"block {block} of {key!r} in a free page"
                used += self.block_bytes(block)
            sp = self.struct_of(off)
            if sp:
                s = (sp + RECORD_HEADER_BYTES) >> 3
                counters = q[s], q[s + 1]
                self._recount(off)
                assert counters == (q[s], q[s + 1]), f"{key!r}: counters {counters} != {(q[s], q[s + 1])}"
        for db in range(DATABASES_MAX):
            assert q[H_KEYS + db] == keys[db], f"db {db} counts {q[H_KEYS + db]} keys, index has {keys[db]}"
        assert q[H_USED_BYTES] == used, f"used bytes {q[H_USED_BYTES]} != {used}"
        self._check_slots(sum(keys))

    def _check_slots(self, records: int) -> None:
        """check(): every slot's list links both ways, holds its count of keys of that slot, and
        together they hold every record of the index."""
        q = self.q
        listed = 0
        for slot in range(HASH_SLOTS):
            prev = 0
            offs = self.index.slot_records(slot, records + 1)
            for off in offs:
                links = q[(off >> 3) + 4]
                assert links & 0xFFFFFFFF == prev >> 4, f"slot {slot}: record {off} links back to {links:#x}"
                assert native.slot_of(self.key_of(off)) == slot, f"record {off} on the list of slot {slot}"
                assert self._find_stored((q[(off >> 3) + 2] >> 40) & 0xFF, self.key_of(off))[0] == off, \
                    f"slot {slot} lists record {off}, which is not in the index"
                prev = off
            assert len(offs) == self.index.slot_keys(slot), f"slot {slot} counts {self.index.slot_keys(slot)}"
            listed += len(offs)
        assert listed == records, f"the slot lists hold {listed} records, the index {records}"
