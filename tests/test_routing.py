"""Keys on two shards: pipelines keep their order, cross-shard commands are atomic."""

from __future__ import annotations

import random

import redis

from conftest import Crew, Outcome, Server, exchange
from shardkv.router.dispatch import key_slot, slot_owners


def test_hash_slots_match_redis_cluster() -> None:
    assert key_slot(b"123456789") == 0x31C3 & 16383
    assert key_slot(b"{user1000}.following") == key_slot(b"{user1000}.followers")
    assert key_slot(b"foo{}{bar}") != key_slot(b"bar")  # an empty tag hashes the whole key
    assert key_slot(b"foo{{bar}}zap") == key_slot(b"{bar")
    assert key_slot(b"foo{bar}{zap}") == key_slot(b"bar")
    owners = slot_owners(2)
    assert owners[0] == 0 and owners[16383] == 1 and owners[8191] == 0 and owners[8192] == 1


def keys_on_both_shards(n: int) -> list[str]:
    owners = slot_owners(2)
    keys = [f"k{i}" for i in range(n)]
    assert {owners[key_slot(k.encode())] for k in keys} == {0, 1}
    return keys


def test_pipeline_of_1000_mixed_commands_in_order(server2: Server) -> None:
    r = server2.client()
    r.flushall()
    keys = keys_on_both_shards(200)
    pipe = r.pipeline(transaction=False)
    expected: list[object] = []
    for i in range(1000):
        k = keys[i % len(keys)]
        op = i % 4
        if op == 0:
            pipe.set(k, f"v{i}")
            expected.append(True)
        elif op == 1:
            pipe.get(k)
            expected.append(None)  # filled in below
        elif op == 2:
            pipe.incr(f"counter:{k}")
            expected.append(None)
        else:
            pipe.mget(keys[(i * 7) % 200], keys[(i * 13) % 200])
            expected.append(None)
    results = pipe.execute()
    assert len(results) == 1000
    # Replay the same sequence on a model to know every reply.
    model: dict[str, str] = {}
    counters: dict[str, int] = {}
    for i, got in enumerate(results):
        k = keys[i % len(keys)]
        op = i % 4
        if op == 0:
            model[k] = f"v{i}"
            assert got is True
        elif op == 1:
            assert got == (model[k].encode() if k in model else None), i
        elif op == 2:
            counters[k] = counters.get(k, 0) + 1
            assert got == counters[k], i
        else:
            a, b = keys[(i * 7) % 200], keys[(i * 13) % 200]
            assert got == [model[a].encode() if a in model else None, model[b].encode() if b in model else None], i


def test_raw_pipeline_across_shards_keeps_order(server2: Server) -> None:
    s = server2.raw()
    keys = keys_on_both_shards(50)
    data = b"".join(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%d\r\n" % (len(k), k.encode(), len(str(i)), i)
                    for i, k in enumerate(keys))
    data += b"".join(b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(k), k.encode()) for k in keys)
    expect = b"+OK\r\n" * 50 + b"".join(b"$%d\r\n%d\r\n" % (len(str(i)), i) for i in range(50))
    assert exchange(s, data, replies=100) == Outcome(expect, "open")


def test_cross_shard_multi_key_counts(server2: Server) -> None:
    r = server2.client()
    r.flushall()
    keys = keys_on_both_shards(20)
    r.mset({k: "1" for k in keys})
    assert r.exists(*keys) == 20
    assert r.execute_command("TOUCH", *keys) == 20
    assert r.delete(*keys[:5]) == 5
    assert r.execute_command("UNLINK", *keys[5:10], "missing") == 5
    assert r.dbsize() == 10
    assert r.mget(keys) == [None] * 10 + [b"1"] * 10


def test_concurrent_mset_mget_never_torn(server2: Server) -> None:
    """Writers MSET the same keys (on both shards) to one value each round; readers MGET them
    all and must always see a single value, never a mix of two MSETs.  Readers run until the
    writers are done and must have checked at least a hundred MGETs while the writers ran."""
    keys = keys_on_both_shards(16)
    server2.client().mset({k: "init" for k in keys})
    crew = Crew()
    writers = Crew()
    torn: list[list[bytes | None]] = []

    def writer(wid: int) -> None:
        r = server2.client()
        for i in range(300):
            assert r.mset({k: f"w{wid}-{i}" for k in keys}) is True
            writers.done("msets")

    def reader() -> None:
        r = server2.client()
        while crew.running():
            values = r.mget(keys)
            if len(set(values)) != 1:
                torn.append(values)
            crew.done("mgets")

    for _ in range(3):
        crew.start(reader)
    crew.wait_for("mgets", 3)  # readers are up before the writers start
    before = crew.count("mgets")
    for w in range(3):
        writers.start(writer, w)
    writers.join(120)
    during = crew.count("mgets") - before
    crew.finish(30)
    assert writers.count("msets") == 900
    assert during >= 100, during  # MGETs that raced the MSETs
    assert not torn, torn[:3]
    final = server2.client().mget(keys)
    assert len(set(final)) == 1 and final[0] is not None and final[0].endswith(b"-299")


def test_random_mixed_load_matches_a_model(server2: Server) -> None:
    """Pipelines of random SET / GET / DEL / MGET / INCR on keys of both shards: every reply is
    what a dict says it must be, and so is the whole keyspace at the end."""
    r = server2.client()
    r.flushall()
    rng = random.Random(7)
    model: dict[str, str] = {}
    keys = [f"m{i}" for i in range(100)]
    assert len({slot_owners(2)[key_slot(k.encode())] for k in keys}) == 2
    checked = 0
    for _ in range(30):
        pipe = r.pipeline(transaction=False)
        expected: list[object] = []
        for _ in range(50):
            k, k2 = rng.choice(keys), rng.choice(keys)
            roll = rng.random()
            if roll < 0.4:
                v = str(rng.random())
                pipe.set(k, v)
                model[k] = v
                expected.append(True)
            elif roll < 0.6:
                pipe.get(k)
                expected.append(model[k].encode() if k in model else None)
            elif roll < 0.75:
                pipe.delete(k, k2)
                expected.append(len({k, k2} & model.keys()))
                model.pop(k, None)
                model.pop(k2, None)
            elif roll < 0.9:
                pipe.mget(k, k2)
                expected.append([model[x].encode() if x in model else None for x in (k, k2)])
            else:
                counter = f"n{k}"
                pipe.incr(counter)
                model[counter] = str(int(model.get(counter, "0")) + 1)
                expected.append(int(model[counter]))
        got = pipe.execute()
        assert got == expected
        checked += len(got)
    assert checked == 1500
    assert len(model) > 50  # the final comparison covers a well-filled keyspace
    everything = sorted(r.scan_iter(count=100))
    assert everything == sorted(k.encode() for k in model)
    assert r.mget(sorted(model)) == [model[k].encode() for k in sorted(model)]
    assert r.dbsize() == len(model)


def test_errors_from_the_other_shard_are_exact(server2: Server) -> None:
    r = server2.client()
    keys = keys_on_both_shards(10)
    for k in keys:
        r.set(k, "notanumber")
        try:
            r.incr(k)
        except redis.ResponseError as exc:
            assert str(exc) == "value is not an integer or out of range"
        else:
            raise AssertionError("INCR of a string must fail")


def test_pipeline_throttled_by_inflight_limit_keeps_order() -> None:
    """With at most 8 commands of a client waiting on the other shard, a 3000-command pipeline
    is run in steps (bounding what waits in the rings' outboxes) and still answers in order."""
    from conftest import start_server

    srv = start_server("--shards", "2", "--maxmemory", "64mb", "--inflight-per-client-max", "8")
    try:
        keys = keys_on_both_shards(100)
        s = srv.raw()
        data = b"".join(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%d\r\n" % (len(k), k.encode(), len(str(i)), i)
                        for i, k in enumerate(keys * 15))
        data += b"".join(b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(k), k.encode()) for k in keys * 15)
        last = {k: i for i, k in enumerate(keys * 15)}
        expect = b"+OK\r\n" * 1500 + b"".join(b"$%d\r\n%d\r\n" % (len(str(last[k])), last[k]) for k in keys * 15)
        assert exchange(s, data, 30, replies=3000) == Outcome(expect, "open")
    finally:
        assert srv.stop() == 0
