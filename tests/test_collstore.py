"""The large collection layouts (collstore.py) on a store without sockets, against Python
models: every operation, restart (rebuild) with its invariants, and a change cut short by a crash."""

from __future__ import annotations

import mmap
import random

import pytest

from shardkv import collstore
from shardkv.collstore import Chunks, Table, write_chunks, write_table
from shardkv.errors import CommandError
from shardkv.journal import InjectedFault
from shardkv.layout import H_WORD_JOURNAL, TYPE_HASH, TYPE_LIST, TYPE_SET
from shardkv.limits import Footprint, Limits
from shardkv.store import Store

LIMITS = Limits(shards=1, maxmemory=32 * 1024 * 1024).resolved()


@pytest.fixture
def store() -> Store:
    return Store(mmap.mmap(-1, Footprint(LIMITS).shard_segment_bytes), Footprint(LIMITS), format_segment=True)


def restarted(store: Store) -> Store:
    again = Store(store.mm, Footprint(LIMITS), format_segment=False)
    again.rebuild()
    again.check()
    return again


def table(store: Store, key: bytes) -> Table:
    return Table(store, store.lookup(0, key, 0))


def chunks(store: Store, key: bytes) -> Chunks:
    return Chunks(store, store.lookup(0, key, 0))


def test_table_matches_a_dict_through_growth_shrink_and_restart(store: Store) -> None:
    rng = random.Random(5)
    model = {b"f%d" % i: b"v%d" % i for i in range(200)}
    write_table(store, 0, b"h", TYPE_HASH, list(model.items()), 0, store.find(0, b"h", 0))
    for step in range(3000):
        t = table(store, b"h")
        if rng.random() < 0.6:
            batch = {b"f%d" % rng.randrange(5000): b"x%d" % step for _ in range(rng.randrange(1, 4))}
            added = t.set_many(batch)
            assert added == sum(1 for f in batch if f not in model)
            model.update(batch)
        else:
            fields = [b"f%d" % rng.randrange(5000) for _ in range(rng.randrange(1, 4))]
            removed = t.delete_many(fields)
            assert removed == sum(1 for f in set(fields) if model.pop(f, None) is not None)
        if step % 500 == 0:
            store.check()
    t = table(store, b"h")
    assert len(t) == len(model)
    assert dict(t.entries()) == model
    assert all(t.get(f) == v for f, v in model.items()) and t.get(b"nope") is None
    store.check()
    again = restarted(store)
    assert dict(table(again, b"h").entries()) == model
    # Deleting the key frees every node and the table.
    used_before = again.used_bytes
    assert again.delete(0, b"h", 0)
    assert again.used_bytes < used_before and again.used_bytes == 0
    again.check()


def test_table_scan_returns_every_stable_entry_across_a_resize(store: Store) -> None:
    members = [b"m%d" % i for i in range(1000)]
    write_table(store, 0, b"s", TYPE_SET, [(m, b"") for m in members], 0, store.find(0, b"s", 0))
    seen: set[bytes] = set()
    cursor, calls = 0, 0
    while True:
        cursor, got = table(store, b"s").scan(cursor, 10)
        seen.update(f for f, _ in got)
        calls += 1
        if calls == 20:  # the table grows to four times its size in the middle of the scan
            table(store, b"s").set_many({b"new%d" % i: b"" for i in range(3000)})
        if cursor == 0:
            break
    assert set(members) <= seen
    assert 50 < calls < 1000


def test_list_matches_a_python_list(store: Store) -> None:
    rng = random.Random(7)
    model = [b"e%d" % i for i in range(300)]
    write_chunks(store, 0, b"l", model, 0, store.find(0, b"l", 0))
    for step in range(3000):
        c = chunks(store, b"l")
        r = rng.random()
        if r < 0.3:
            items = [b"p%d-%d" % (step, j) * rng.choice((1, 1, 50)) for j in range(rng.randrange(1, 300))]
            left = rng.random() < 0.5
            assert c.push(items, left) == len(model) + len(items)
            model = list(reversed(items)) + model if left else model + items
        elif r < 0.55 and len(model) > 300:
            n = rng.randrange(1, 200)
            left = rng.random() < 0.5
            got = c.pop(n, left)
            want = model[:n] if left else model[::-1][:n]
            assert got == want
            model = model[n:] if left else model[: len(model) - n]
        elif r < 0.6 and len(model) > 600:
            a = rng.randrange(0, 100)
            b = len(model) - 1 - rng.randrange(0, 100)
            c.trim(a, b)
            model = model[a : b + 1]
        elif r < 0.75:
            i = rng.randrange(len(model))
            assert c.index(i) == model[i]
            c.set(i, b"set%d" % step)
            model[i] = b"set%d" % step
        else:
            a, b = rng.randrange(-len(model) - 5, len(model) + 5), rng.randrange(-len(model) - 5, len(model) + 5)
            start, stop = max(0, a + len(model) if a < 0 else a), b + len(model) if b < 0 else b
            want = model[start : stop + 1] if stop >= 0 else []
            assert c.range(a, b) == want
        if step % 500 == 0:
            store.check()
    assert chunks(store, b"l").range(0, -1) == model
    again = restarted(store)
    assert chunks(again, b"l").range(0, -1) == model
    assert len(chunks(again, b"l")) == len(model)


def test_pop_everything_leaves_the_delete_to_the_caller(store: Store) -> None:
    write_chunks(store, 0, b"l", [b"x"] * 500, 0, store.find(0, b"l", 0))
    assert chunks(store, b"l").pop(1000, left=True) == [b"x"] * 500
    assert store.delete(0, b"l", 0) and store.used_bytes == 0


def test_large_values_copy_out_packed(store: Store) -> None:
    members = [b"%d" % i for i in range(300)]
    write_table(store, 0, b"s", TYPE_SET, [(m, b"") for m in members], 0, store.find(0, b"s", 0))
    blob = collstore.value_bytes(store, store.lookup(0, b"s", 0))
    assert sorted(collstore.unpack_entries(blob, 1)) == sorted(members)


def test_oom_changes_nothing(store: Store) -> None:
    write_table(store, 0, b"h", TYPE_HASH, [(b"f%d" % i, b"v") for i in range(300)], 0, store.find(0, b"h", 0))
    write_chunks(store, 0, b"l", [b"e"] * 300, 0, store.find(0, b"l", 0))
    with pytest.raises(CommandError):
        for i in range(10_000):
            key = b"filler%d" % i
            store.put(0, key, TYPE_LIST, collstore.pack([b"z" * 60_000]), 0, store.find(0, key, 0))
    before_h, before_l = dict(table(store, b"h").entries()), chunks(store, b"l").range(0, -1)
    used = store.used_bytes
    big = b"y" * 200_000
    with pytest.raises(CommandError):
        table(store, b"h").set_many({b"f%d" % i: big for i in range(0, 600, 2)})
    with pytest.raises(CommandError):
        chunks(store, b"l").push([big] * 300, left=False)
    assert store.used_bytes == used
    assert dict(table(store, b"h").entries()) == before_h
    assert chunks(store, b"l").range(0, -1) == before_l
    store.check()


def test_multi_store_change_cut_short_is_redone_at_restart(store: Store) -> None:
    write_table(store, 0, b"h", TYPE_HASH, [(b"f%d" % i, b"v") for i in range(300)], 0, store.find(0, b"h", 0))
    store.fault_steps = {"words:commit"}  # the journal is committed; the worker dies before any store
    with pytest.raises(InjectedFault):
        table(store, b"h").set_many({b"f1": b"new", b"added": b"yes"})
    assert store.q[H_WORD_JOURNAL]
    again = restarted(store)
    t = table(again, b"h")
    assert t.get(b"f1") == b"new" and t.get(b"added") == b"yes" and len(t) == 301
