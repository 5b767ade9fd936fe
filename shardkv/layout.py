"""The layout of a shard segment: its regions, header words, records, types and size classes.

The code that reads and changes a segment: store.py (lookups, records, one-key changes),
journal.py (changes that must land together, and their replay), recovery.py (a restart's
rebuild, and the invariants check), collstore.py (large collections), and the compiled
index.pyx (chain walk, records, key-slot index) and alloc.pyx (the allocator).

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

from shardkv import native
from shardkv.limits import DATABASES_MAX, PAGE_BYTES, SEGMENT_HEADER_BYTES

MAGIC = 0x5348_4B56_0001  # "SHKV" v1
VERSION = 4  # 2: the access clock's bits reserved in the value-bytes word; 3: strings stored unframed; 4: slot links
RECORD_HEADER_BYTES = 40
SLOT_LINKS_WORD = 4  # a record's word linking it into its hash slot's list (index.pyx)
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
CLASS_OF = [0] * (SMALL_RECORD_BYTES_MAX // 16 + 1)
for _i in range(len(CLASS_OF)):
    CLASS_OF[_i] = next(c for c in range(1, CLASSES + 1) if CLASS_BYTES[c] >= _i * 16)


# What alloc.pyx also knows of the layout; it checks its own numbers against these at start.
ALLOCATOR_LAYOUT = (P_CLASS, P_LIVE, P_FREE, P_BUMP, P_PREV, P_NEXT, P_RUN, PAGE_FREE, PAGE_RUN_HEAD, PAGE_RUN_TAIL,
                    H_USED_BYTES, H_PAGES_USED, H_PARTIAL, PAGE_BYTES, SMALL_RECORD_BYTES_MAX)


INDEX_LAYOUT = (OFF_MASK, KLEN_MASK, VLEN_MASK, RECORD_HEADER_BYTES, TYPE_STRING, H_DIRTY, H_KEYS, H_EXPIRES,
                TYPE_LIST, TYPE_SET, TYPE_HASH, LAYOUT_PACKED, LAYOUT_TABLE, LAYOUT_CHUNKS, STRUCT_WORDS, TOMBSTONE,
                CHUNK_OFF_MASK, SLOT_LINKS_WORD)
record_bytes = native.record_bytes  # (klen, vlen) -> the block bytes of a record (compiled: index.pyx)

PROGRESS_EVERY = 4096  # a long loop calls Store.progress once per this many steps (a power of two)
