"""A shard's changes that must land together, and their replay when a restarted worker attaches.

- A batch (`write_batch`): puts and deletes on several keys of the shard (MSET, RENAME, MOVE,
  SMOVE, LMOVE, ...).  Every new record is written first, then a redo journal naming them;
  storing the journal's offset in the header is the commit point.  The changes are then
  published one by one and the journal cleared; a restart that finds a journal publishes it
  again (`redo_batch`).
- A word journal (`commit_words`): several 8-byte stores inside a large collection.
- SWAPDB and FLUSHDB / FLUSHALL: a journal word first, so a crash half-way is finished at restart.
- A transaction's undo log (`undo_*`): before a transaction first changes a key on this shard,
  the key's record is copied into an undo record (a record of the same layout, kept out of the
  index; a large collection is copied packed).  Commit frees them (`undo_discard`); abort puts
  each back in the index in place of what the transaction left (`undo_rollback`), with no
  allocation, so a rollback cannot run out of memory.  Every step is one aligned store or is
  redone at restart: the chain and the record being put back stay reachable from the header
  until they are done.

These are the store's own parts (store.py calls them and they use its internals); a test may
arm `Store.fault_steps` to make a commit fail at a named step.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from shardkv.keywatch import NOTE_CHANGED, NOTE_SWAPPED
from shardkv.layout import (
    DBMAP_BYTE,
    FLUSH_ALL,
    H_DIRTY,
    H_EXPIRES,
    H_FLUSH_JOURNAL,
    H_JOURNAL,
    H_KEYS,
    H_SWAP_JOURNAL,
    H_UNDO_CURRENT,
    H_UNDO_HEAD,
    H_UNDO_TXN,
    H_WORD_JOURNAL,
    OFF_MASK,
    PROGRESS_EVERY,
    UNDO_ABSENT,
    record_bytes,
)
from shardkv.limits import DATABASES_MAX

if TYPE_CHECKING:
    from shardkv.store import Store

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


def swap_dbs(store: Store, a: int, b: int) -> None:
    """SWAPDB on this shard: a journal word first, so a crash half-way is redone at restart."""
    pa, pb = store.dbmap[a], store.dbmap[b]
    if store.cas:  # a watched key of either db is changed if it exists in either db
        for db, key in list(store.cas):
            if db in (a, b) and a != b:
                here = bool(store._find_stored(store.dbmap[db], key)[0])
                if here or store._find_stored(pb if db == a else pa, key)[0]:
                    store.noted.append((NOTE_SWAPPED, db, key))
                    store.noted_existed[(db, key)] = here
    store.q[H_SWAP_JOURNAL] = 1 << 63 | a | b << 8 | pa << 16 | pb << 24
    store.mm[DBMAP_BYTE + a] = pb
    store.mm[DBMAP_BYTE + b] = pa
    store.q[H_SWAP_JOURNAL] = 0
    store.dbmap[a], store.dbmap[b] = pb, pa
    if store.watched:  # a key waited on in either db may exist now
        store.touched.extend(k for k in store.watched if k[0] in (a, b))


def redo_swap(store: Store) -> None:
    j = store.q[H_SWAP_JOURNAL]
    if j:
        a, b, pa, pb = j & 0xFF, (j >> 8) & 0xFF, (j >> 16) & 0xFF, (j >> 24) & 0xFF
        store.mm[DBMAP_BYTE + a] = pb
        store.mm[DBMAP_BYTE + b] = pa
        store.q[H_SWAP_JOURNAL] = 0
    store.dbmap[:] = store.mm[DBMAP_BYTE : DBMAP_BYTE + DATABASES_MAX]  # in place: the fast path holds it


def commit_words(store: Store, stores: list[tuple[int, int]], journal: int, frees: list[int]) -> None:
    """Make 8-byte stores (word index, value) as one change, then free blocks.

    The nodes the stores point to are written first.  One store is made as it is; several go
    through `journal`, a block reserved with word_journal_sizes(len(stores)): the stores are
    written to it, storing its offset in the header commits, and they are applied by the same
    code that applies them again at restart (they are absolute, so twice is harmless)."""
    q = store.q
    if len(stores) == 1:
        word, value = stores[0]
        q[word] = value
    else:
        j = journal >> 3
        q[j] = len(stores)
        for i, (word, value) in enumerate(stores):
            q[j + 1 + 2 * i] = word
            q[j + 2 + 2 * i] = value
        if store.fault_steps:
            store.fault("words:journal")
        q[H_WORD_JOURNAL] = journal  # commit
        if store.fault_steps:
            store.fault("words:commit")
        redo_words(store, live=True)
        if store.fault_steps:
            store.fault("words:applied")
        store._free(journal)
    for i, off in enumerate(frees):
        store._free(off)
        if not i and journal and store.fault_steps:
            store.fault("words:free")
    q[H_DIRTY] += 1


def redo_words(store: Store, live: bool) -> None:
    """Apply a committed word journal, then clear it (live, and at restart)."""
    q = store.q
    journal = q[H_WORD_JOURNAL]
    if journal:
        j = journal >> 3
        for i in range(q[j]):
            q[q[j + 1 + 2 * i]] = q[j + 2 + 2 * i]
            if live and not i and store.fault_steps:
                store.fault("words:apply")
        q[H_WORD_JOURNAL] = 0


def write_batch(store: Store, ops: list[BatchOp], blocks: list[int] | None = None) -> None:
    """Apply puts and deletes on several keys as one change: a crash leaves all or none.

    Every new record is written first, then a redo journal naming them; storing the journal's
    offset in the header is the commit point.  The changes are then published one by one and
    the journal cleared; a restart that finds a journal publishes it again (`_redo`).
    `blocks` are blocks reserved for exactly this batch (batch_sizes); else they are taken
    here, all or none (OOM before anything changes)."""
    if blocks is None:
        blocks = store.reserve(batch_sizes(ops))
    journal_off = blocks[-1]
    mm = store.mm
    at = journal_off + _JOURNAL_HEAD.size
    _JOURNAL_HEAD.pack_into(mm, journal_off, len(ops))
    record_blocks = iter(blocks[:-1])
    for db, key, kind, value, expire_ms in ops:
        pdb = store.dbmap[db]
        new_off = 0
        if value is not None:
            store._note_write(db, key)
            new_off = next(record_blocks)
            store.write_record(new_off, pdb, key, kind, value, expire_ms)
        _JOURNAL_ENTRY.pack_into(mm, at, value is not None, pdb, len(key), new_off)
        at += _JOURNAL_ENTRY.size
        mm[at : at + len(key)] = key
        at += len(key)
        if store.fault_steps:
            store.fault("batch:record")
    if store.fault_steps:
        store.fault("batch:journal")
    store.q[H_JOURNAL] = journal_off  # commit
    if store.fault_steps:
        store.fault("batch:commit")
    redo_batch(store, journal_off, live=True)
    if store.fault_steps:
        store.fault("batch:published")
    store.q[H_JOURNAL] = 0
    if store.fault_steps:
        store.fault("batch:clear")
    store._free(journal_off)


def redo_batch(store: Store, journal_off: int, live: bool) -> None:
    """Publish a committed journal's changes in order.  Idempotent: a put already published
    is skipped.  `live`: also free replaced records and keep counters (at restart the
    allocator and counters are rebuilt from the index afterwards instead)."""
    q, mm = store.q, store.mm
    (count,) = _JOURNAL_HEAD.unpack_from(mm, journal_off)
    at = journal_off + _JOURNAL_HEAD.size
    for i in range(count):
        if i and live and store.fault_steps:
            store.fault("batch:publish")
        is_put, pdb, klen, new_off = _JOURNAL_ENTRY.unpack_from(mm, at)
        at += _JOURNAL_ENTRY.size
        key = mm[at : at + klen]
        at += klen
        off_old, link, bucket = store._find_stored(pdb, key)
        if is_put:
            if off_old == new_off:
                continue
            w = new_off >> 3
            store._publish(new_off, pdb, key, off_old, link, bucket)
            if live:
                q[H_DIRTY] += 1
                if off_old:
                    if bool(q[(off_old >> 3) + 1]) != bool(q[w + 1]):
                        q[H_EXPIRES + pdb] += 1 if q[w + 1] else -1
                    store._free_record(off_old)
                else:
                    q[H_KEYS + pdb] += 1
                    if q[w + 1]:
                        q[H_EXPIRES + pdb] += 1
        elif off_old:
            if live:
                store._unlink(link, off_old, pdb)
            else:
                q[link] = q[off_old >> 3]


def undo_begin(store: Store, txn: int) -> None:
    q = store.q
    assert not q[H_UNDO_TXN], "the last transaction's undo log was resolved first"
    q[H_UNDO_HEAD] = 0
    q[H_UNDO_CURRENT] = 0
    q[H_UNDO_TXN] = txn


def undo_save(store: Store, db: int, key: bytes, kind: int, expire_ms: int, value: bytes) -> None:
    """Keep the record key has now (kind UNDO_ABSENT: none); OOM before anything changes."""
    off = store._alloc(record_bytes(len(key), len(value)))
    store.write_record(off, store.dbmap[db], key, kind, value, expire_ms)
    q = store.q
    q[off >> 3] = q[H_UNDO_HEAD]
    q[H_UNDO_HEAD] = off  # publish


def undo_discard(store: Store) -> None:
    """Commit: the transaction's changes stay; its undo records are freed."""
    q = store.q
    head = q[H_UNDO_HEAD]
    q[H_UNDO_TXN] = 0  # this shard's commit (a restart frees what is left: nothing reaches it)
    q[H_UNDO_HEAD] = 0
    while head:
        nxt = q[head >> 3]
        store._free(head)
        head = nxt


def undo_rollback(store: Store) -> None:
    """Abort: every key the transaction changed gets back the record it had before."""
    q = store.q
    if q[H_UNDO_CURRENT]:
        undo_restore(store, q[H_UNDO_CURRENT])
    while q[H_UNDO_HEAD]:
        rec = q[H_UNDO_HEAD]
        q[H_UNDO_CURRENT] = rec
        q[H_UNDO_HEAD] = q[rec >> 3]
        undo_restore(store, rec)
    q[H_UNDO_TXN] = 0


def undo_restore(store: Store, rec: int) -> None:
    q = store.q
    w = rec >> 3
    info = q[w + 2]
    kind, pdb = (info >> 32) & 0xFF, (info >> 40) & 0xFF
    key = bytes(store.key_of(rec))
    off, link, bucket = store._find_stored(pdb, key)
    if kind == UNDO_ABSENT:
        if off:
            store._unlink(link, off, pdb)
        q[H_UNDO_CURRENT] = 0
        store._free(rec)
        return
    if off == rec:  # put back already, before a crash
        q[H_UNDO_CURRENT] = 0
        return
    q[H_DIRTY] += 1
    had_expire = bool(off and q[(off >> 3) + 1])
    store._publish(rec, pdb, key, off, link, bucket)
    q[H_UNDO_CURRENT] = 0
    if off:
        store._free_record(off)
        if had_expire != bool(q[w + 1]):
            q[H_EXPIRES + pdb] += 1 if q[w + 1] else -1
    else:
        q[H_KEYS + pdb] += 1
        if q[w + 1]:
            q[H_EXPIRES + pdb] += 1


def undo_records(store: Store) -> list[int]:
    """The undo records a restart must keep (the chain, and the one being put back)."""
    q = store.q
    if not q[H_UNDO_TXN]:
        return []
    out = [q[H_UNDO_CURRENT]] if q[H_UNDO_CURRENT] else []
    rec = q[H_UNDO_HEAD]
    while rec:
        out.append(rec)
        rec = q[rec >> 3]
    return out


def flush(store: Store, db: int | None) -> None:
    """Remove every key of db (None: of every db).  A journal word first, so a flush cut
    short by a crash is finished at restart: never half a database."""
    pdb = FLUSH_ALL if db is None else store.dbmap[db]
    watched, store.cas = store.cas, ()  # a flush changes the watched keys that exist, once each
    for wdb, key in watched:
        if (db is None or wdb == db) and store._find_stored(store.dbmap[wdb], key)[0]:
            store.noted.append((NOTE_CHANGED, wdb, key))
    try:
        _flush_db(store, db, pdb)
    finally:
        store.cas = watched


def _flush_db(store: Store, db: int | None, pdb: int) -> None:
    q = store.q
    q[H_FLUSH_JOURNAL] = 1 << 63 | pdb
    if db is None:
        q[H_DIRTY] += sum(q[H_KEYS + i] for i in range(DATABASES_MAX))
        store._unlink_all()
        store.index.slots_reset()
        for i in range(DATABASES_MAX):
            q[H_KEYS + i] = 0
            q[H_EXPIRES + i] = 0
        store._reset_allocator()
    else:
        unlink_db(store, pdb, live=True)
    q[H_FLUSH_JOURNAL] = 0


def unlink_db(store: Store, pdb: int, live: bool) -> None:
    """Unlink every record of stored db pdb; `live`: also free them and keep the counters
    (at restart both are derived from the index afterwards instead)."""
    q = store.q
    for b in range(store.buckets):
        if not b & (PROGRESS_EVERY - 1):
            store.progress()
        link = store.bucket_word + b
        w = q[link]
        while w:
            off = (w & OFF_MASK) << 3
            if (q[(off >> 3) + 2] >> 40) & 0xFF == pdb:
                if live:
                    store._unlink(link, off, pdb)
                else:
                    q[link] = q[off >> 3]
            else:
                link = off >> 3
            w = q[link]


def redo_flush(store: Store) -> None:
    j = store.q[H_FLUSH_JOURNAL]
    if j:
        pdb = j & 0xFFFF
        if pdb == FLUSH_ALL:
            store._unlink_all()
        else:
            unlink_db(store, pdb, live=False)
        store.q[H_FLUSH_JOURNAL] = 0
