"""Socket-free layers: RESP framing, the shard store, the rings, the limits."""

from __future__ import annotations

import asyncio
import mmap
import os
import random
from collections.abc import Iterator

import pytest

from shardkv import protocol
from shardkv.errors import CommandError
from shardkv.journal import InjectedFault
from shardkv.layout import H_PAGES_USED, TYPE_STRING
from shardkv.limits import Footprint, Limits, LimitsError, parse_args, parse_memory
from shardkv.native import (
    Peers,
    Pending,
    RingDamaged,
    SegmentCorrupt,
    node_take,
    pack_entries,
    pack_node,
    ring_index,
    unpack_entries,
    unpack_node,
)
from shardkv.store import Store
from shardkv.worker.peers import K_REP, K_REQ, K_RESET

# ------------------------------------------------------------------ protocol

PIPELINE = (b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nhello\r\n"
            b"PING\r\n"
            b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"
            b"*1\r\n$4\r\nPING\r\n")
ARGVS = [[b"SET", b"k", b"hello"], [b"PING"], [b"GET", b"k"], [b"PING"]]


def parse_all(data: bytes) -> list[list[bytes]]:
    res = protocol.parse_requests(data, len(data), 100, 1 << 20)
    assert res.error is None and res.consumed == len(data)
    return [argv for argv, _, _ in res.requests]


def test_parse_pipeline_with_inline_and_multibulk() -> None:
    assert parse_all(PIPELINE) == ARGVS


def test_parse_split_at_every_byte_boundary() -> None:
    """Feeding the stream in two parts, cut anywhere, yields the same commands."""
    for cut in range(len(PIPELINE) + 1):
        first = protocol.parse_requests(PIPELINE, cut, 100, 1 << 20)
        assert first.error is None
        rest = PIPELINE[first.consumed :]
        got = [a for a, _, _ in first.requests] + parse_all(rest)
        assert got == ARGVS, cut


def test_parse_reports_bytes_needed_for_a_large_bulk() -> None:
    data = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$100000\r\nabc"
    res = protocol.parse_requests(data, len(data), 100, 1 << 20)
    assert res.requests == [] and res.consumed == 0
    assert res.needed == len(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$100000\r\n") + 100000 + 2


@pytest.mark.parametrize("line, argv", [
    (b"set a b", [b"set", b"a", b"b"]),
    (b'set "a b" c', [b"set", b"a b", b"c"]),
    (b"set 'a \\' b' c", [b"set", b"a ' b", b"c"]),
    (b'set "\\x41\\n" c', [b"set", b"A\n", b"c"]),
    (b"  ping  \r", [b"ping"]),
])
def test_inline_splitting(line: bytes, argv: list[bytes]) -> None:
    assert protocol.split_inline(line) == argv


def test_encoders_resp2_and_resp3() -> None:
    assert protocol.null(2) == b"$-1\r\n" and protocol.null(3) == b"_\r\n"
    assert protocol.map_reply(2, [(b":1\r\n", b":2\r\n")]) == b"*2\r\n:1\r\n:2\r\n"
    assert protocol.map_reply(3, [(b":1\r\n", b":2\r\n")]) == b"%1\r\n:1\r\n:2\r\n"
    assert protocol.double(3, 1.5) == b",1.5\r\n" and protocol.double(2, 3.0) == b"$1\r\n3\r\n"
    assert protocol.read_reply(b"*2\r\n$1\r\na\r\n_\r\n") == ([b"a", None], 14)


def test_numbers_print_in_decimal_at_every_width_and_both_ends() -> None:
    """Integer replies, bulk headers and INCR's stored digits share one compiled printer
    (resp.ll_digits): every power of ten and its neighbours, and the int64 ends."""
    values = [0, -(1 << 63), (1 << 63) - 1, -(1 << 63) + 1]
    for e in range(19):
        values += [10**e - 1, 10**e, 10**e + 1, -(10**e) - 1, -(10**e), -(10**e) + 1]
    for v in values:
        assert protocol.integer(v) == b":%d\r\n" % v
    for n in (0, 1, 9, 10, 11, 99, 100, 101, 999, 1000, 65535, 65536):
        assert protocol.bulk(b"x" * n) == b"$%d\r\n" % n + b"x" * n + b"\r\n"


# ------------------------------------------------------------------ store


@pytest.fixture
def store() -> Store:
    lim = Limits(shards=1, maxmemory=16 * 1024 * 1024).resolved()
    return Store(mmap.mmap(-1, Footprint(lim).shard_segment_bytes), Footprint(lim), format_segment=True)


def put(s: Store, key: bytes, value: bytes, db: int = 0, expire_ms: int = 0) -> None:
    s.put(db, key, TYPE_STRING, value, expire_ms, s.find(db, key, 1000))


def test_store_put_get_replace_delete(store: Store) -> None:
    put(store, b"a", b"1")
    put(store, b"a", b"22")
    put(store, b"a", b"x", db=3)
    assert store.string_value(store.lookup(0, b"a", 1000)) == b"22"
    assert store.string_resp(store.lookup(3, b"a", 1000)) == b"$1\r\nx\r\n"
    assert store.keys_in(0) == 1 and store.keys_in(3) == 1
    assert store.delete(0, b"a", 1000) and not store.delete(0, b"a", 1000)
    assert store.lookup(3, b"a", 1000)
    store.check()


def test_keys_of_every_length_match_only_themselves(store: Store) -> None:
    """The index compares keys a word at a time (index.pxd's key_equal, not libc's memcmp): a
    key of each length up to past the word loop is found, and one differing in any single byte
    is not."""
    for n in range(0, 72):
        key = bytes(range(65, 65 + n))
        put(store, key, b"%d" % n)
    for n in range(0, 72):
        key = bytes(range(65, 65 + n))
        assert store.string_value(store.lookup(0, key, 0)) == b"%d" % n
        for j in range(n):
            other = key[:j] + b"\x00" + key[j + 1 :]
            assert store.lookup(0, other, 0) == 0, (n, j)
    # The hash rejects almost every other key before its bytes are compared: two keys of one
    # length with the same CRC-32 (bucket and fingerprint alike) reach the comparison.  (CRC-32
    # is one-to-one on 4 bytes or fewer, so shorter keys never get there.)
    import hashlib
    import zlib
    for n in (6, 8, 13, 16, 24, 40, 64):
        seen: dict[int, bytes] = {}
        i = 0
        while True:
            key = hashlib.blake2b(i.to_bytes(8, "little"), digest_size=n).digest()
            twin = seen.setdefault(zlib.crc32(key), key)
            if twin != key:
                break
            i += 1
        put(store, twin, b"twin")
        assert store.lookup(0, key, 0) == 0, (n, twin, key)
        put(store, key, b"key")
        assert store.string_value(store.lookup(0, twin, 0)) == b"twin"
    store.check()


def test_store_expiry_on_access_and_active(store: Store) -> None:
    put(store, b"t", b"v", expire_ms=1500)
    assert store.lookup(0, b"t", 1000)
    assert store.lookup(0, b"t", 2000) == 0 and store.expired_keys == 1
    for i in range(100):
        put(store, b"e%d" % i, b"v", expire_ms=1500)
    removed = 0
    cursor = 0
    for _ in range(10 * (store.buckets // 1000 + 1)):
        cursor, n = store.expire_some(cursor, 1000, 30, 2000)
        assert n <= 30
        removed += n
    assert removed == 100 and store.keys_in(0) == 0
    store.check()


def test_store_oom_is_all_or_nothing_and_space_is_reused(store: Store) -> None:
    n = 0
    with pytest.raises(CommandError):
        while True:
            put(store, b"k%d" % n, b"v" * 500)
            n += 1
    store.check()
    with pytest.raises(CommandError):
        store.reserve([600] * 100)
    assert store.keys_in(0) == n
    used = store.used_bytes
    for i in range(0, n, 2):
        store.delete(0, b"k%d" % i, 0)
    assert store.used_bytes < used
    for i in range(0, n, 2):
        put(store, b"k%d" % i, b"w" * 500)  # fits again
    store.check()


def test_store_large_values_use_page_runs(store: Store) -> None:
    big = bytes(random.Random(1).randbytes(300_000))
    put(store, b"big", big)
    assert store.string_value(store.lookup(0, b"big", 0)) == big
    store.delete(0, b"big", 0)
    assert store.used_bytes == 0
    store.check()


def test_store_rebuild_reclaims_unpublished_blocks(store: Store) -> None:
    for i in range(1000):
        put(store, b"k%d" % i, b"v" * (i % 300))
    for i in range(0, 1000, 3):
        store.delete(0, b"k%d" % i, 0)  # holes in the slab pages, for the rebuilt free lists
    for i in range(5):
        put(store, b"run%d" % i, b"r" * (20_000 + i * 70_000))  # runs of pages
    used, pages_used = store.used_bytes, store.q[H_PAGES_USED]
    store.reserve([100, 200, 70000])  # allocated, never published: as if the worker died here
    assert store.rebuild() == 1000 - 334 + 5
    assert (store.used_bytes, store.q[H_PAGES_USED]) == (used, pages_used)
    store.check()
    for i in range(1000):
        off = store.lookup(0, b"k%d" % i, 0)
        assert (store.string_value(off) if off else None) == (b"v" * (i % 300) if i % 3 else None)
    for i in range(0, 1000, 3):  # the rebuilt free lists hand out the holes, and nothing twice
        put(store, b"k%d" % i, b"w" * (i % 300))
    assert store.used_bytes == used + sum(store.block_bytes(store.lookup(0, b"k%d" % i, 0)) for i in range(0, 1000, 3))
    store.check()


def test_the_key_slot_index_follows_every_change_and_a_restart_rebuilds_it(store: Store) -> None:
    """Every key is on its hash slot's list (COUNTKEYSINSLOT, GETKEYSINSLOT and slot migration
    read it): through new keys, overwrites, deletes, expiry, batches and flushes, with one hot
    hash tag holding most keys, and after a restart that finds the lists scrambled."""
    from shardkv.native import slot_of

    rng = random.Random(7)
    model: dict[tuple[int, bytes], bytes] = {}
    keys = [b"{hot}%d" % i for i in range(1500)] + [b"k%d" % i for i in range(500)]

    def agrees(s: Store) -> None:
        s.check()
        by_slot: dict[int, set[bytes]] = {}
        for _, key in model:
            by_slot.setdefault(slot_of(key), set()).add(key)
        for slot in set(by_slot) | {slot_of(k) for k in keys[::50]}:
            want = sorted(k for (_, k) in model if slot_of(k) == slot)
            assert s.keys_in_slot(slot) == len(want), slot
            assert sorted(s.slot_keys(slot, len(want) + 5)) == want, slot
        assert len(store.slot_keys(slot_of(b"{hot}"), 10)) == min(10, sum(1 for (_, k) in model if b"{hot}" in k))

    for step in range(6000):
        key, db = rng.choice(keys), rng.choice((0, 0, 1))
        roll = rng.random()
        if roll < 0.5:
            value = b"v" * rng.randrange(0, 200)
            put(store, key, value, db=db, expire_ms=1500 if rng.random() < 0.1 else 0)
            model[(db, key)] = value
        elif roll < 0.8:
            store.delete(db, key, 1000)
            model.pop((db, key), None)
        elif roll < 0.9:
            batch = [(db, k, TYPE_STRING, (b"b" if rng.random() < 0.7 else None), 0) for k in rng.sample(keys, 3)]
            store.write_batch(batch)  # type: ignore[arg-type]
            for _, k, _, v, _ in batch:
                if v is None:
                    model.pop((db, k), None)
                else:
                    model[(db, k)] = v
        else:  # keys whose time has passed go when read
            for (d, k) in [dk for dk in model if store.expire_of(store.lookup(*dk, 1000))][:5]:
                assert store.lookup(d, k, 2000) == 0
                del model[(d, k)]
        if step % 1500 == 0:
            agrees(store)
    agrees(store)

    store.flush(1)
    model = {dk: v for dk, v in model.items() if dk[0] != 1}
    agrees(store)

    from shardkv.layout import H_SLOTS_OFF
    slots_off = store.q[H_SLOTS_OFF]
    store.mm[slots_off : slots_off + 4096] = bytes(range(256)) * 16  # as if a worker died mid-update
    restarted = Store(store.mm, Footprint(Limits(shards=1, maxmemory=16 * 1024 * 1024).resolved()),
                      format_segment=False)
    restarted.rebuild()
    store = restarted
    agrees(restarted)

    restarted.flush(None)
    model = {}
    agrees(restarted)


def test_a_damaged_slot_link_raises_instead_of_being_followed(store: Store) -> None:
    from shardkv.native import slot_of

    for i in range(3):
        put(store, b"{t}%d" % i, b"v")
    first = store.index.slot_records(slot_of(b"{t}"), 1)[0]
    store.q[(first >> 3) + 4] |= 0xFFFFFFF0 << 32  # its next: far past the heap
    with pytest.raises(SegmentCorrupt):
        store.slot_keys(slot_of(b"{t}"), 3)
    with pytest.raises(SegmentCorrupt):
        store.delete(0, b"{t}2", 0)  # taking it off the list reads the same link


# ------------------------------------------------------------------ rings


RING_BYTES = 64 * 1024


@pytest.fixture
def two_workers() -> Iterator[tuple[Peers, Peers, list[int], mmap.mmap]]:
    """Both ends of the rings between two workers, in one process (no event loop runs: flush by hand)."""
    mm = mmap.mmap(-1, 4 * (128 + RING_BYTES))
    bells = [os.eventfd(0, os.EFD_NONBLOCK) for _ in range(2)]
    loop = asyncio.new_event_loop()
    a = Peers(0, 2, mm, RING_BYTES, bells, loop, b"-ERR restarted\r\n")
    b = Peers(1, 2, mm, RING_BYTES, bells, loop, b"-ERR restarted\r\n")
    yield a, b, bells, mm
    a.close()
    b.close()
    loop.close()
    for fd in bells:
        os.close(fd)


def test_messages_keep_their_order_across_wraps_fragments_and_a_full_ring(
        two_workers: tuple[Peers, Peers, list[int], mmap.mmap]) -> None:
    a, b, bells, _ = two_workers
    rng = random.Random(3)
    sent: list[tuple[int, int, bytes]] = []
    got: list[tuple[int, int, bytes]] = []
    for i in range(2000):  # 40,000 bytes: fragments of a quarter ring each; bursts fill the ring
        body = rng.randbytes(rng.choice([0, 1, 7, 100, 5000, 40000]))
        a.send(1, K_REQ, i, body)
        sent.append((K_REQ, i, body))
        if i % 5 == 0:
            a.flush()
        if i % 7 == 0:
            got.extend(b.take(0, False))
    while len(got) < len(sent):
        a.flush()
        got.extend(b.take(0, False))
    assert got == sent
    assert os.eventfd_read(bells[1]) >= 1 and not b.pending_input(0, False)


class Sink:
    def __init__(self) -> None:
        self.ready: list[bytes | None] = []
        self.batches: list[tuple[int, int]] = []

    def reply_ready(self, pending: Pending) -> None:
        self.ready.append(pending.value)

    def replies_ready(self, count: int, nbytes: int) -> None:
        self.batches.append((count, nbytes))


def test_replies_resolve_what_waits_and_a_restart_fails_the_rest(
        two_workers: tuple[Peers, Peers, list[int], mmap.mmap]) -> None:
    a, b, _, _ = two_workers
    sink = Sink()
    pending = Pending(sink)
    called: list[bytes | None] = []
    first = a.request(1, K_REQ, b"one", pending)
    a.request(1, K_REQ, b"two", called.append)
    a.flush()
    (_, rid1, body1), (_, _, body2) = b.take(0, False)
    assert (rid1, body1, body2) == (first, b"one", b"two")
    b.send(0, K_REP, rid1, b"+first\r\n")
    b.send(0, K_RESET, 0, b"")
    b.flush()
    resets: list[int] = []
    a.answer(1, resets.append)
    assert pending.value == b"+first\r\n" and sink.batches == [(1, 8)] and resets == [1] and called == []
    a.peer_restarted(1)  # what a reset does: the second request fails
    assert called == [None]
    late = Pending(sink)
    a.request(1, K_REQ, b"three", late)
    a.peer_restarted(1)
    assert late.value == b"-ERR restarted\r\n" and sink.ready == [late.value]  # (told one by one)


def test_a_damaged_ring_raises_rather_than_reads_outside_it(
        two_workers: tuple[Peers, Peers, list[int], mmap.mmap]) -> None:
    a, b, _, mm = two_workers
    a.send(1, K_REQ, 1, b"x")
    a.flush()
    q = memoryview(mm).cast("Q")
    base = ring_index(0, 1, 2, False) * (128 + RING_BYTES) // 8
    q[base + 8] += 3 * RING_BYTES  # the tail, past what the ring holds
    with pytest.raises(RingDamaged):
        b.take(0, False)
    q[base + 8] -= 3 * RING_BYTES
    at = (base + 16) * 8  # the record's length
    mm[at : at + 4] = (RING_BYTES * 2).to_bytes(4, "little")
    with pytest.raises(RingDamaged):
        b.take(0, False)
    q.release()


def test_ring_indexes_are_distinct() -> None:
    n = 4
    seen = {ring_index(s, d, n, rep) for s in range(n) for d in range(n) if s != d for rep in (False, True)}
    assert seen == set(range(2 * n * (n - 1)))


# ------------------------------------------------------------------ limits


def test_memory_units() -> None:
    assert parse_memory("1kb") == 1024 and parse_memory("1k") == 1000 and parse_memory("2gb") == 2 << 30
    assert 0 < parse_memory("10%")
    with pytest.raises(LimitsError):
        parse_memory("-1mb")


def test_footprint_fits_maxmemory() -> None:
    lim = parse_args(["--shards", "3", "--maxmemory", "300mb"]).limits
    fp = Footprint(lim)
    per_shard = fp.index_bytes_per_shard + fp.heap_bytes_per_shard + fp.allocator_bytes_per_shard
    assert per_shard <= fp.shard_segment_bytes
    assert lim.shards * fp.shard_segment_bytes <= lim.maxmemory
    assert fp.total_bytes == fp.shm_bytes + 3 * fp.worker_bytes


def test_a_shard_segment_is_at_most_64_gib() -> None:
    """Records link their slot neighbours by offset / 16 in 32 bits."""
    from shardkv.limits import PAGE_BYTES, SHARD_BYTES_MAX

    Limits(shards=1, maxmemory=SHARD_BYTES_MAX).check()
    Limits(shards=2, maxmemory=2 * SHARD_BYTES_MAX + PAGE_BYTES - 1).check()
    with pytest.raises(LimitsError, match="a shard holds at most"):
        Limits(shards=1, maxmemory=SHARD_BYTES_MAX + PAGE_BYTES).check()


def test_swapdb_interrupted_half_way_is_redone_at_restart(store: Store) -> None:
    from shardkv.layout import DBMAP_BYTE, H_SWAP_JOURNAL

    put(store, b"k", b"db0")
    put(store, b"k", b"db1", db=1)
    # As if the worker died after the journal and the first of the two byte writes.
    store.q[H_SWAP_JOURNAL] = 1 << 63 | 0 | 1 << 8 | 0 << 16 | 1 << 24
    store.mm[DBMAP_BYTE + 0] = 1
    store.rebuild()
    assert store.q[H_SWAP_JOURNAL] == 0
    assert store.string_value(store.lookup(0, b"k", 0)) == b"db1"
    assert store.string_value(store.lookup(1, b"k", 0)) == b"db0"
    store.check()


def test_batch_cut_short_after_commit_is_finished_at_restart(store: Store) -> None:
    """A worker dies after a batch's journal was committed but before every key was published:
    the restart publishes the rest, so the batch is all there (the write is never half-done)."""
    from shardkv.layout import H_JOURNAL

    put(store, b"a", b"old")
    put(store, b"gone", b"x")

    store.fault_steps = {"batch:publish"}  # the first change is published, then the worker "dies"
    with pytest.raises(InjectedFault):
        store.write_batch([(0, b"a", TYPE_STRING, b"new", 0),
                           (0, b"b", TYPE_STRING, b"bee", 0),
                           (0, b"gone", TYPE_STRING, None, 0)])
    assert store.q[H_JOURNAL] and store.lookup(0, b"b", 0) == 0
    restarted = Store(store.mm, Footprint(Limits(shards=1, maxmemory=16 * 1024 * 1024).resolved()),
                      format_segment=False)
    restarted.rebuild()
    assert restarted.q[H_JOURNAL] == 0
    assert restarted.string_value(restarted.lookup(0, b"a", 0)) == b"new"
    assert restarted.string_value(restarted.lookup(0, b"b", 0)) == b"bee"
    assert restarted.lookup(0, b"gone", 0) == 0
    restarted.check()


def test_batch_redo_is_idempotent_with_repeated_keys(store: Store) -> None:
    from shardkv.layout import H_JOURNAL

    store.write_batch([(0, b"k", TYPE_STRING, b"1", 0), (0, b"k", TYPE_STRING, b"2", 0)])
    assert store.string_value(store.lookup(0, b"k", 0)) == b"2" and store.keys_in(0) == 1
    assert store.q[H_JOURNAL] == 0
    store.check()


@pytest.mark.parametrize("every_db", [False, True])
def test_flush_cut_short_is_finished_at_restart(store: Store, every_db: bool) -> None:
    """A worker killed in the middle of FLUSHDB / FLUSHALL: the restart finishes it, so the
    database is either as it was or empty, never half flushed; other databases keep their keys."""
    for i in range(3000):
        store.put(0, b"k%d" % i, TYPE_STRING, b"v", 0, store.find(0, b"k%d" % i, 0))
        store.put(1, b"k%d" % i, TYPE_STRING, b"w", 0, store.find(1, b"k%d" % i, 0))

    class Crash(Exception):
        pass

    unlinked = 0
    real_unlink = store._unlink

    def unlink_then_die(link: int, off: int, db: int) -> None:
        nonlocal unlinked
        real_unlink(link, off, db)
        unlinked += 1
        if unlinked == 1000:
            raise Crash

    def zero_then_die() -> None:
        start = store.bucket_word
        store.view[start * 8 : (start + store.buckets // 2) * 8] = bytes(store.buckets // 2 * 8)
        raise Crash

    store._unlink = unlink_then_die  # type: ignore[method-assign]
    store._unlink_all = zero_then_die  # type: ignore[method-assign]
    with pytest.raises(Crash):
        store.flush(None if every_db else 0)
    again = Store(store.mm, Footprint(Limits(shards=1, maxmemory=16 * 1024 * 1024).resolved()), format_segment=False)
    again.rebuild()
    again.check()
    assert again.keys_in(0) == 0 and again.lookup(0, b"k5", 0) == 0
    assert again.keys_in(1) == (0 if every_db else 3000)


# ------------------------------------------------------------------ the compiled layer


def test_a_compiled_module_built_from_another_source_refuses_to_import() -> None:
    """An edited .pyx is never run stale: its module, built from the old source, is refused with
    a one-line reason (shardkv/native.py), and the module built from this source passes."""
    import types

    from shardkv import index
    from shardkv.native import fresh

    assert fresh(index, "index") is index
    stale = types.ModuleType("shardkv.index")
    stale.SOURCE_SHA256 = "0" * 64  # type: ignore[attr-defined]
    reason = r"^shardkv/index\.pyx changed after it was compiled: run `pip install -e \.` again$"
    with pytest.raises(ImportError, match=reason):
        fresh(stale, "index")


def test_a_link_outside_the_heap_raises_instead_of_reading_it(store: Store) -> None:
    """A damaged link is a Python exception (the error contract's bug path), never a stray read."""
    from shardkv.native import SegmentCorrupt

    put(store, b"k", b"v")
    off, link, bucket = store.find(0, b"k", 1000)
    assert off and link == bucket
    saved = store.q[bucket]
    store.q[bucket] = (saved >> 40) << 40 | (store.heap_off + store.heap_bytes) >> 3  # past the heap's end
    with pytest.raises(SegmentCorrupt, match="points outside the heap"):
        store.find(0, b"k", 1000)
    with pytest.raises(SegmentCorrupt):
        store.string_resp_of(0, b"k", 1000)
    store.q[bucket] = saved
    assert store.string_resp_of(0, b"k", 1000) == b"$1\r\nv\r\n"
    store.check()


def test_the_access_clock_bits_change_no_length(store: Store) -> None:
    """The top 24 bits of a record's value-bytes word are the access clock's (eviction, OBJECT
    IDLETIME / FREQ): set, they change no value's length, no record's size, no check."""
    keys = [b"key:%d" % i for i in range(200)]
    for key in keys:
        put(store, key, b"v" * (keys.index(key) % 50))
    store.check()
    for key in keys:
        store.q[(store.lookup(0, key, 1000) >> 3) + 3] |= 0xABCDEF << 40
    assert [store.string_resp_of(0, key, 1000) for key in keys] == [
        protocol.bulk(b"v" * (i % 50)) for i in range(len(keys))]
    assert [store.string_value(store.lookup(0, key, 1000)) for key in keys[:3]] == [b"", b"v", b"vv"]
    store.check()


def test_packed_entries_and_chunks_round_trip_and_refuse_damaged_lengths() -> None:
    """The compiled codecs of small collections and list chunks (layouts.pyx): what one packs the
    other reads back, from either end for a chunk; a length that runs past its area raises
    SegmentCorrupt instead of reading beyond it."""
    rng = random.Random(5)
    for _ in range(200):
        items = [rng.randbytes(rng.choice([0, 1, 5, 300])) for _ in range(rng.randrange(0, 20))]
        assert unpack_entries(b"\x01" + pack_entries(items), 1) == items
        node = pack_node(items)
        assert unpack_node(node) == items
        k = rng.randrange(0, len(items) + 1)
        assert node_take(node, k, True) == (items[:k], pack_node(items[k:]))
        assert node_take(node, k, False) == (items[::-1][:k], pack_node(items[: len(items) - k]))
    good = pack_node([b"abc", b"de"])
    for damaged in (pack_entries([b"abc"])[:-1], b"\xff\xff\xff\x7fxyz", b"\x05\x00"):
        with pytest.raises(SegmentCorrupt):
            unpack_entries(damaged)
    cut, long_first = good[:-1], b"\x00\x01\x00\x00" + good[4:]
    for damaged in (cut, long_first, b"\x01\x00\x00\x00x\x02\x00\x00\x00"):  # the last: its two lengths differ
        with pytest.raises(SegmentCorrupt):
            node_take(damaged, 2, False)
    for damaged in (cut, long_first):
        with pytest.raises(SegmentCorrupt):
            unpack_node(damaged)
    with pytest.raises(SegmentCorrupt):
        node_take(good, 3, True)  # more entries than it holds


def test_one_field_is_read_from_either_layout_and_a_damaged_entry_raises(store: Store) -> None:
    """HGET, HEXISTS and SISMEMBER's compiled read (layouts.field_of, the fast path's and the
    handlers'): a packed hash or set and a table answer every field and member present, and None
    for one absent; a packed entry whose length runs past its record raises SegmentCorrupt."""
    from shardkv.collstore import field_value, pack, write_table
    from shardkv.layout import TYPE_HASH, TYPE_SET

    pairs = [(b"f%d" % i, b"v" * (i % 7)) for i in range(300)]
    store.put(0, b"small", TYPE_HASH, pack([x for f, v in pairs[:5] for x in (f, v)]), 0, store.find(0, b"small", 1))
    store.put(0, b"sset", TYPE_SET, pack([f for f, _ in pairs[:5]]), 0, store.find(0, b"sset", 1))
    write_table(store, 0, b"large", TYPE_HASH, pairs, 0, store.find(0, b"large", 1))
    write_table(store, 0, b"lset", TYPE_SET, [(f, b"") for f, _ in pairs], 0, store.find(0, b"lset", 1))
    for key, n, is_hash in ((b"small", 5, True), (b"sset", 5, False), (b"large", 300, True), (b"lset", 300, False)):
        off = store.lookup(0, key, 1)
        for f, v in pairs[:n]:
            assert field_value(store, off, f) == (v if is_hash else b"")
        for absent in (b"nope", b"v", b"", pairs[n - 1][0] + b"x"):
            assert field_value(store, off, absent) is None
    store.check()
    off = store.lookup(0, b"small", 1)
    a, _ = store.value_span(off)
    at = a + 1 + (4 + 2) + 4  # past the layout byte, f0 and its empty value: f1's length
    assert store.mm[at : at + 4] == (2).to_bytes(4, "little")
    store.mm[at : at + 4] = (1 << 20).to_bytes(4, "little")
    with pytest.raises(SegmentCorrupt):
        field_value(store, off, b"f4")
    assert field_value(store, off, b"f0") == b""  # (read before the damaged entry)


def test_an_entry_is_read_by_index_from_either_layout(store: Store) -> None:
    """LINDEX's compiled read (layouts.list_entry, the fast path's and the handler's): every
    index, negative ones and those past either end, of a packed list and of one in chunks."""
    from shardkv.collstore import list_value, pack, write_chunks
    from shardkv.layout import TYPE_LIST

    items = [b"e%d" % i + b"x" * (i % 300) for i in range(1000)]
    store.put(0, b"small", TYPE_LIST, pack(items[:7]), 0, store.find(0, b"small", 1))
    write_chunks(store, 0, b"large", items, 0, store.find(0, b"large", 1))
    for key, held in ((b"small", items[:7]), (b"large", items)):
        off = store.lookup(0, key, 1)
        n = len(held)
        for index in [*range(-n - 2, n + 2, 1 if n < 10 else 37), -1, 0, n - 1, n, -n, -n - 1, 1 << 40, -(1 << 40)]:
            want = held[index] if -n <= index < n else None
            assert list_value(store, off, index) == want, (key, index)
    store.check()
