"""A restarted worker's rebuild of its shard, and the check of a shard's invariants (tests).

A worker can die between any two statements; what it leaves is made whole here: the journals a
crash cut short are replayed (journal.py), then the allocator's state, the per-db key counts and
the key-slot index, all derived state, are derived again from the index.  Blocks that were
allocated but never published, or unlinked but never freed, become free again.  The pass over
the records is compiled (Allocator.rebuild_from); a large collection's other blocks are found
here.
"""

from __future__ import annotations

import zlib
from typing import TYPE_CHECKING

from shardkv import journal, native
from shardkv.layout import (
    H_EXPIRES,
    H_JOURNAL,
    H_KEYS,
    H_UNDO_CURRENT,
    H_UNDO_HEAD,
    H_UNDO_TXN,
    H_USED_BYTES,
    P_CLASS,
    PAGE_FREE,
    PAGE_RUN_TAIL,
    PROGRESS_EVERY,
    RECORD_HEADER_BYTES,
    SLOT_LINKS_WORD,
)
from shardkv.limits import DATABASES_MAX, HASH_SLOTS, PAGE_BYTES

if TYPE_CHECKING:
    from shardkv.store import Store


def rebuild(store: Store) -> int:
    """Derive allocator state and counters from the index (after a worker restart).

    Returns the number of records found.  Blocks that were allocated but never published,
    or unlinked but never freed, become free again."""
    store.index.slots_live = False  # the lists may be half updated: rebuilt below, after the journals
    journal.redo_swap(store)
    journal.redo_flush(store)
    journal.redo_words(store, live=False)
    if store.q[H_JOURNAL]:  # a batch was committed but not wholly published: finish it
        journal.redo_batch(store, store.q[H_JOURNAL], live=False)
        store.q[H_JOURNAL] = 0
    store._reset_allocator()
    store.index.slots_reset()
    q = store.q
    for i in range(DATABASES_MAX):
        q[H_KEYS + i] = 0
        q[H_EXPIRES + i] = 0
    # Pass 1 (compiled: Allocator.rebuild_from): every record of the index marks its block
    # live, is counted in its db and goes on its slot's list; then a large collection's
    # other blocks, and a transaction's undo records.
    live_bits = bytearray(store.heap_bytes // 16 // 8 + 1)
    found, large = store.allocator.rebuild_from(store.index, live_bits, store.progress)
    for head in large:
        store._recount(head)
        for i, off in enumerate(store.children(head)):
            if i and not i & (PROGRESS_EVERY - 1):
                store.progress()
            store.allocator.mark_live(off, store.record_size(off), live_bits)
    for off in journal.undo_records(store):  # a transaction's undo log, resolved after the restart
        if not store.allocator.marked(off, store.record_size(off), live_bits):  # (one being put back
            store.allocator.mark_live(off, store.record_size(off), live_bits)  # may be in the index)
    if not q[H_UNDO_TXN]:
        q[H_UNDO_HEAD] = q[H_UNDO_CURRENT] = 0
    # Pass 2: each slab page's free list, of the holes below its highest live block.
    store.allocator.free_holes(live_bits, store.progress)
    return found


def check(store: Store) -> None:
    """Walk the whole structure and assert its invariants (tests, after crashes)."""
    q, u = store.q, store.u32
    keys = [0] * DATABASES_MAX
    used = 0
    for b, off in store.records():
        w = off >> 3
        assert store.heap_off <= off < store.heap_off + store.heap_bytes, f"record {off} outside heap"
        key = store.key_of(off)
        db = (q[w + 2] >> 40) & 0xFF
        assert zlib.crc32(key, db) & store.mask == b, f"key {key!r} in the wrong bucket"
        keys[db] += 1
        for block in [off] + store.children(off):
            page = (block - store.heap_off) // PAGE_BYTES
            cls = u[store.page_u32 + page * 8 + P_CLASS]
            assert cls != PAGE_FREE and cls != PAGE_RUN_TAIL, f"block {block} of {key!r} in a free page"
            used += store.block_bytes(block)
        sp = store.struct_of(off)
        if sp:
            s = (sp + RECORD_HEADER_BYTES) >> 3
            counters = q[s], q[s + 1]
            store._recount(off)
            assert counters == (q[s], q[s + 1]), f"{key!r}: counters {counters} != {(q[s], q[s + 1])}"
    for db in range(DATABASES_MAX):
        assert q[H_KEYS + db] == keys[db], f"db {db} counts {q[H_KEYS + db]} keys, index has {keys[db]}"
    assert q[H_USED_BYTES] == used, f"used bytes {q[H_USED_BYTES]} != {used}"
    check_slots(store, sum(keys))


def check_slots(store: Store, records: int) -> None:
    """check(): every slot's list links both ways, holds its count of keys of that slot, and
    together they hold every record of the index."""
    q = store.q
    listed = 0
    for slot in range(HASH_SLOTS):
        prev = 0
        offs = store.index.slot_records(slot, records + 1)
        for off in offs:
            links = q[(off >> 3) + SLOT_LINKS_WORD]
            assert links & 0xFFFFFFFF == prev >> 4, f"slot {slot}: record {off} links back to {links:#x}"
            assert native.slot_of(store.key_of(off)) == slot, f"record {off} on the list of slot {slot}"
            assert store._find_stored((q[(off >> 3) + 2] >> 40) & 0xFF, store.key_of(off))[0] == off, \
                f"slot {slot} lists record {off}, which is not in the index"
            prev = off
        assert len(offs) == store.index.keys_in_slot(slot), f"slot {slot} counts {store.index.keys_in_slot(slot)}"
        listed += len(offs)
    assert listed == records, f"the slot lists hold {listed} records, the index {records}"
