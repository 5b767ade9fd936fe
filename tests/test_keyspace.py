"""Whole-keyspace commands over two shards: SCAN, KEYS, RANDOMKEY, active expiry, and the
cross-shard RENAME / COPY / MSETNX transactions under concurrent readers."""

from __future__ import annotations

import redis

from conftest import Crew, Server, wait_until
from shardkv.router.dispatch import key_slot, slot_owners


def test_scan_visits_every_key_of_every_shard(server2: Server) -> None:
    r = server2.client()
    r.flushall()
    keys = {f"scan:{i}".encode() for i in range(3000)}
    r.mset({k: b"v" for k in keys})
    owners = slot_owners(2)
    assert {owners[key_slot(k)] for k in keys} == {0, 1}
    for count in (1, 10, 1000):
        seen: list[bytes] = []
        cursor = 0
        calls = 0
        while True:
            cursor, batch = r.scan(cursor, count=count)
            seen.extend(batch)
            calls += 1
            if cursor == 0:
                break
        assert set(seen) == keys, count
    matched = set(r.scan_iter(match="scan:1*", count=500))
    assert matched == {k for k in keys if k.startswith(b"scan:1")}
    r.execute_command("SETBIT", "notastring?", 1, 1)
    assert set(r.scan_iter(_type="string", count=500)) == keys | {b"notastring?"}
    assert set(r.scan_iter(_type="list", count=500)) == set()


def test_scan_keeps_returning_keys_present_throughout(server2: Server) -> None:
    """Keys that exist for the whole scan are returned, while others come and go."""
    r = server2.client()
    r.flushall()
    stable = {f"stable:{i}".encode() for i in range(1000)}
    r.mset({k: b"1" for k in stable})
    crew = Crew()

    def churn() -> None:
        c = server2.client()
        i = 0
        while crew.running():
            assert c.set(f"churn:{i}", 1) is True
            if i >= 50:
                assert c.delete(f"churn:{i - 50}") == 1
            crew.done("changes")
            i += 1

    crew.start(churn)
    crew.wait_for("changes", 100)  # the keyspace is changing when the scan starts
    before = crew.count("changes")
    try:
        seen = set(r.scan_iter(count=20))
        during = crew.count("changes") - before
    finally:
        crew.finish()
    assert stable <= seen
    assert during >= 20, during  # keys came and went while the scan ran


def test_scan_errors(server2: Server) -> None:
    r = server2.client()
    for args, text in [((b"SCAN", b"abc"), "invalid cursor"), ((b"SCAN", b"18446744073709551616"), "invalid cursor"),
                       ((b"SCAN", b" 0"), "invalid cursor"), ((b"SSCAN", b"s", b"0x"), "invalid cursor"),
                       ((b"HSCAN", b"h", b"-18446744073709551616"), "invalid cursor"),
                       ((b"SCAN", b"0", b"COUNT", b"0"), "syntax error"),
                       ((b"SCAN", b"0", b"COUNT", b"x"), "value is not an integer or out of range"),
                       ((b"SCAN", b"0", b"FOO", b"1"), "syntax error")]:
        try:
            r.execute_command(*args)
        except redis.ResponseError as exc:
            assert str(exc) == text, args
        else:
            raise AssertionError(args)
    # Redis reads the cursor with strtoul: a sign is allowed and a negative number wraps around.
    for cursor in (b"-1", b"+0", b"18446744073709551615"):
        assert isinstance(r.execute_command("SCAN", cursor), list | tuple)
        assert isinstance(r.execute_command("SSCAN", "s", cursor), list | tuple)


def test_keys_and_randomkey_span_shards(server2: Server) -> None:
    r = server2.client()
    r.flushall()
    assert r.randomkey() is None
    keys = {f"rk:{i}".encode() for i in range(50)}
    r.mset({k: 1 for k in keys})
    assert set(r.keys("rk:*")) == keys
    assert set(r.keys("rk:[1-2]")) == {b"rk:1", b"rk:2"}
    picked = {r.randomkey() for _ in range(200)}
    assert picked <= keys
    owners = slot_owners(2)
    assert {owners[key_slot(k)] for k in picked} == {0, 1}  # both shards are drawn from


def test_active_expiry_removes_keys_nobody_reads(server2: Server) -> None:
    r = server2.client()
    r.flushall()
    before = r.info("stats")["expired_keys"]
    r.mset({f"ttl:{i}": 1 for i in range(200)})
    for i in range(200):
        r.pexpire(f"ttl:{i}", 100)
    wait_until(lambda: r.dbsize() == 0, 5, "active expiry of 200 keys")
    assert r.info("stats")["expired_keys"] - before == 200


def shard_pair() -> tuple[str, str]:
    owners = slot_owners(2)
    a = next(f"x{i}" for i in range(100) if owners[key_slot(f'x{i}'.encode())] == 0)
    b = next(f"y{i}" for i in range(100) if owners[key_slot(f'y{i}'.encode())] == 1)
    return a, b


def test_cross_shard_rename_is_atomic(server2: Server) -> None:
    """A key renamed back and forth between shards: readers always find it in exactly one place."""
    r = server2.client()
    r.flushall()
    a, b = shard_pair()
    r.set(a, "payload", ex=1000)
    crew = Crew()
    bad: list[list[bytes | None]] = []

    def reader() -> None:
        c = server2.client()
        while crew.running():
            got = c.mget(a, b)
            if sorted(got, key=lambda x: x is None) != [b"payload", None]:
                bad.append(got)
            crew.done("reads")

    for _ in range(2):
        crew.start(reader)
    crew.wait_for("reads", 2)  # both readers are reading before the renames start
    before = crew.count("reads")
    try:
        for _ in range(100):
            assert r.rename(a, b) is True
            assert r.rename(b, a) is True
        during = crew.count("reads") - before
    finally:
        crew.finish()
    assert not bad, bad[:3]
    assert during >= 50, during  # reads that each checked the key is in exactly one place
    assert 990 < r.ttl(a) <= 1000  # the time to live travels with the key
    assert r.renamenx(a, b) is True and r.renamenx(b, b) is False


def test_cross_shard_copy_and_msetnx(server2: Server) -> None:
    r = server2.client()
    r.flushall()
    a, b = shard_pair()
    r.set(a, "v")
    assert r.copy(a, b) is True
    assert r.copy(a, b) is False
    r.set(a, "w")
    assert r.copy(a, b, replace=True) is True and r.get(b) == b"w"
    assert r.copy(a, b, destination_db=4) is True
    r.execute_command("SELECT", 4)
    assert r.get(b) == b"w"
    r.execute_command("SELECT", 0)
    r.delete(a, b)
    assert r.msetnx({a: 1, b: 2}) is True
    assert r.msetnx({a: 3, "fresh": 4}) is False
    assert r.mget(a, b, "fresh") == [b"1", b"2", None]


def test_swapdb_swaps_on_every_shard(server2: Server) -> None:
    r = server2.client()
    r.flushall()
    a, b = shard_pair()
    r.mset({a: "in0", b: "in0"})
    r.execute_command("SELECT", 1)
    r.set(a, "in1", ex=100)
    assert r.swapdb(0, 1) is True
    assert r.mget(a, b) == [b"in0", b"in0"] and r.dbsize() == 2  # db 1 now holds what db 0 held
    r.execute_command("SELECT", 0)
    assert r.get(a) == b"in1" and r.get(b) is None and 0 < r.ttl(a) <= 100
    assert r.info("keyspace")["db0"]["keys"] == 1 and r.info("keyspace")["db1"]["keys"] == 2
    try:
        r.swapdb(0, 16)
    except redis.ResponseError as exc:
        assert str(exc) == "DB index is out of range"
    else:
        raise AssertionError("SWAPDB 0 16 must fail")
    r.swapdb(0, 1)
