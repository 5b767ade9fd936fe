"""Sets, hashes and lists over TCP, with keys on both shards for the multi-key commands."""

from __future__ import annotations

import pytest
import redis

from conftest import Crew, Server, wait_blocked, wait_until
from shardkv.router.dispatch import key_slot, slot_owners


def on_shard(shard: int, prefix: str) -> str:
    return next(f"{prefix}{i}" for i in range(1000) if slot_owners(2)[key_slot(f"{prefix}{i}".encode())] == shard)


def test_set_basics(server: Server) -> None:
    r = server.client()
    assert r.sadd("s", "a", "b", "c", "a") == 3
    assert r.scard("s") == 3
    assert r.sismember("s", "a") and not r.sismember("s", "z")
    assert r.smismember("s", ["a", "z"]) == [1, 0]
    assert r.srem("s", "a", "z") == 1
    assert r.smembers("s") == {b"b", b"c"}
    assert r.spop("s") in (b"b", b"c")
    assert r.scard("s") == 1
    r.spop("s")
    assert r.exists("s") == 0  # an emptied set is gone
    r.set("str", "x")
    with pytest.raises(redis.ResponseError) as e:
        r.sadd("str", "a")
    assert str(e.value) == "WRONGTYPE Operation against a key holding the wrong kind of value"
    assert r.type("str") == b"string"
    r.sadd("n", 1, 2, 3)
    assert r.object("encoding", "n") == b"intset"
    r.sadd("n", "x")
    assert r.object("encoding", "n") == b"hashtable"
    assert set(r.srandmember("n", 10)) == {b"1", b"2", b"3", b"x"}
    assert len(r.srandmember("n", -10)) == 10


def test_set_algebra_across_shards(server2: Server) -> None:
    r = server2.client()
    r.flushall()
    a, b, dest = on_shard(0, "sa"), on_shard(1, "sb"), on_shard(1, "sd")
    r.sadd(a, 1, 2, 3, 4)
    r.sadd(b, 3, 4, 5)
    assert r.sinter(a, b) == {b"3", b"4"}
    assert r.sunion(a, b) == {b"1", b"2", b"3", b"4", b"5"}
    assert r.sdiff(a, b) == {b"1", b"2"}
    assert r.sinterstore(dest, a, b) == 2 and r.smembers(dest) == {b"3", b"4"}
    assert r.sdiffstore(dest, b, a) == 1 and r.smembers(dest) == {b"5"}
    assert r.sunionstore(dest, "nosuch") == 0 and r.exists(dest) == 0
    assert r.sintercard(2, [a, b]) == 2 and r.sintercard(2, [a, b], limit=1) == 1
    assert r.smove(a, b, 1) is True and r.sismember(b, 1) and not r.sismember(a, 1)
    r.set(dest, "x")
    with pytest.raises(redis.ResponseError):
        r.sinter(a, dest)
    with pytest.raises(redis.ResponseError):
        r.smove(a, dest, 2)
    assert r.sismember(a, 2)  # a refused move changes nothing


def test_hash_basics(server: Server) -> None:
    r = server.client()
    assert r.hset("h", mapping={"a": "1", "b": "2"}) == 2
    assert r.hset("h", "a", "3") == 0
    assert r.hget("h", "a") == b"3" and r.hget("h", "z") is None
    assert r.hmget("h", ["a", "z", "b"]) == [b"3", None, b"2"]
    assert r.hlen("h") == 2 and r.hstrlen("h", "a") == 1 and r.hexists("h", "b")
    assert r.hsetnx("h", "a", "9") == 0 and r.hsetnx("h", "c", "9") == 1
    assert r.hkeys("h") == [b"a", b"b", b"c"] and r.hvals("h") == [b"3", b"2", b"9"]
    assert r.hgetall("h") == {b"a": b"3", b"b": b"2", b"c": b"9"}
    assert r.hincrby("h", "a", 10) == 13
    assert r.hincrbyfloat("h", "f", "1.5") == 1.5
    with pytest.raises(redis.ResponseError) as e:
        r.hincrby("h", "f", 1)
    assert str(e.value) == "hash value is not an integer"
    assert r.hdel("h", "a", "b", "zz") == 2
    assert r.object("encoding", "h") == b"listpack"
    r.hset("h", "long", "x" * 100)
    assert r.object("encoding", "h") == b"hashtable"
    assert r.hdel("h", "c", "f", "long") == 3 and r.exists("h") == 0
    with pytest.raises(redis.ResponseError) as e:
        r.execute_command("HSET", "h", "a")
    assert str(e.value) == "wrong number of arguments for 'hset' command"


def test_list_basics(server: Server) -> None:
    r = server.client()
    assert r.rpush("l", "a", "b", "c") == 3
    assert r.lpush("l", "z") == 4
    assert r.lrange("l", 0, -1) == [b"z", b"a", b"b", b"c"]
    assert r.lrange("l", -2, 100) == [b"b", b"c"] and r.lrange("l", 5, 10) == []
    assert r.lindex("l", -1) == b"c" and r.lindex("l", 10) is None
    assert r.lset("l", 1, "A") is True
    with pytest.raises(redis.ResponseError) as e:
        r.lset("l", 10, "x")
    assert str(e.value) == "index out of range"
    assert r.linsert("l", "before", "b", "ab") == 5 and r.linsert("l", "after", "nope", "x") == -1
    assert r.lpos("l", "b") == 3 and r.lpos("l", "nope") is None
    r.rpush("l", "b")
    assert r.lpos("l", "b", count=0) == [3, 5] and r.lpos("l", "b", rank=-1) == 5
    assert r.lrem("l", -1, "b") == 1
    assert r.ltrim("l", 1, -1) is True and r.lrange("l", 0, -1) == [b"A", b"ab", b"b", b"c"]
    assert r.lpop("l") == b"A" and r.rpop("l", 2) == [b"c", b"b"] and r.llen("l") == 1
    assert r.lpushx("nolist", "x") == 0 and r.exists("nolist") == 0
    assert r.rpop("l") == b"ab" and r.exists("l") == 0
    assert r.lpop("l") is None


def test_list_moves_across_shards(server2: Server) -> None:
    r = server2.client()
    r.flushall()
    a, b = on_shard(0, "la"), on_shard(1, "lb")
    r.rpush(a, 1, 2, 3)
    assert r.lmove(a, b, "LEFT", "RIGHT") == b"1"
    assert r.rpoplpush(a, b) == b"3"
    assert r.lrange(a, 0, -1) == [b"2"] and r.lrange(b, 0, -1) == [b"3", b"1"]
    assert r.lmpop(2, "nosuch", b, direction="LEFT", count=5) == [b.encode(), [b"3", b"1"]]
    assert r.exists(b) == 0
    r.set(b, "x")
    with pytest.raises(redis.ResponseError):
        r.lmove(a, b, "LEFT", "LEFT")
    assert r.lrange(a, 0, -1) == [b"2"]  # a refused move changes nothing


def test_blocking_pops(server2: Server) -> None:
    import time

    r = server2.client()
    r.flushall()
    a, b = on_shard(0, "ba"), on_shard(1, "bb")
    r.rpush(a, "now")
    assert r.blpop([b, a], timeout=1) == (a.encode(), b"now")  # data there: no wait
    t0 = time.monotonic()
    assert r.blpop([a, b], timeout=0.3) is None  # times out
    assert time.monotonic() - t0 >= 0.25

    crew = Crew()
    results: list[object] = []

    def waiter(tag: str) -> None:
        results.append((tag, server2.client().blpop([a, b], timeout=10)))

    crew.start(waiter, "first")
    wait_blocked(r, 1)
    crew.start(waiter, "second")
    wait_blocked(r, 2)
    r.rpush(b, "x")  # one element: the client that blocked first gets it
    wait_until(lambda: results or crew.errors, 5, "a blocked client served")
    wait_blocked(r, 1)  # and the other one still waits
    assert results == [("first", (b.encode(), b"x"))] and r.exists(b) == 0
    r.rpush(a, "y", "z")  # the second client gets one, and only one
    crew.join(10)
    assert results[1] == ("second", (a.encode(), b"y"))
    assert r.lrange(a, 0, -1) == [b"z"]
    assert r.info("clients")["blocked_clients"] == 0


def test_blocking_move_and_unblock(server2: Server) -> None:
    r = server2.client()
    r.flushall()
    a, b = on_shard(0, "ma"), on_shard(1, "mb")
    got: list[object] = []
    c = server2.client()
    cid = c.client_id()
    crew = Crew()
    crew.start(lambda: got.append(c.blmove(a, b, 10, "LEFT", "RIGHT")), name="blmove")
    wait_blocked(r, 1)
    r.rpush(a, "m")
    crew.join(10)
    assert got == [b"m"] and r.lrange(b, 0, -1) == [b"m"] and r.exists(a) == 0
    assert r.info("clients")["blocked_clients"] == 0
    crew = Crew()
    crew.start(lambda: got.append(c.brpop([a], timeout=0)), name="brpop")
    wait_blocked(r, 1)
    assert r.client_unblock(cid) is True
    crew.join(10)
    assert got[-1] is None and len(got) == 2
    assert r.info("clients")["blocked_clients"] == 0
    with pytest.raises(redis.ResponseError) as e:
        r.blpop([a], timeout=-1)
    assert str(e.value) == "timeout is negative"


def test_sort_with_patterns_on_other_shards(server2: Server) -> None:
    r = server2.client()
    r.flushall()
    r.rpush("tosort", 3, 1, 2)
    for i, w in ((1, 30), (2, 10), (3, 20)):
        r.set(f"weight_{i}", w)
        r.hset(f"obj_{i}", "name", f"n{i}")
    assert r.sort("tosort") == [b"1", b"2", b"3"]
    assert r.sort("tosort", by="weight_*") == [b"2", b"3", b"1"]
    assert r.sort("tosort", by="weight_*", get=["#", "obj_*->name"], desc=True) == \
        [b"1", b"n1", b"3", b"n3", b"2", b"n2"]
    assert r.sort("tosort", start=1, num=1) == [b"2"]
    dest = on_shard(1 - slot_owners(2)[key_slot(b"tosort")], "sorted")
    assert r.sort("tosort", by="weight_*", store=dest) == 3
    assert r.lrange(dest, 0, -1) == [b"2", b"3", b"1"]
    r.rpush("words", "b", "a")
    with pytest.raises(redis.ResponseError) as e:
        r.sort("words")
    assert str(e.value) == "One or more scores can't be converted into double"
    assert r.sort("words", alpha=True) == [b"a", b"b"]
