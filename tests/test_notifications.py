"""Keyspace notifications from write commands, against a real two-shard server: the events, their
order and db, as Redis 7.0.15 emits them (notifyKeyspaceEvent in its t_*.c, db.c, expire.c,
sort.c, bitops.c), the class filter, K versus E, and keys on either worker's shard.

A test that expects no event checks it with a sentinel: it then runs a command with a known
event on a key of the same slot (so the same worker publishes both, in order) and asserts that
the sentinel's event is the next message."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import redis

from conftest import Server, start_server, wait_blocked
from shardkv.router.dispatch import key_slot, slot_owners

OWNERS = slot_owners(2)


def on_shard(shard: int, prefix: str = "k") -> bytes:
    """A key (with a hash tag of its own) owned by shard."""
    for i in range(10_000):
        key = f"{{{prefix}{i}}}".encode()
        if OWNERS[key_slot(key)] == shard:
            return key
    raise AssertionError("no key found")


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    srv = start_server("--shards", "2")
    yield srv
    srv.stop()


@pytest.fixture
def r(server: Server) -> Iterator[redis.Redis]:
    c = server.client()
    c.flushall()
    yield c
    c.config_set("notify-keyspace-events", "")
    c.close()


class Listener:
    """A PSUBSCRIBE to every notification channel; messages as (channel, data) bytes pairs."""

    def __init__(self, server: Server, pattern: str = "__key*__:*") -> None:
        self.client = server.client()
        self.pubsub = self.client.pubsub()
        self.pubsub.psubscribe(pattern)
        confirm = self.pubsub.get_message(timeout=10)
        assert confirm is not None and confirm["type"] == "psubscribe", confirm

    def take(self, n: int, timeout_s: float = 10) -> list[tuple[bytes, bytes]]:
        out: list[tuple[bytes, bytes]] = []
        deadline = time.monotonic() + timeout_s
        while len(out) < n:
            left = deadline - time.monotonic()
            assert left > 0, f"only {len(out)} of {n} messages came: {out}"
            msg = self.pubsub.get_message(timeout=left)
            if msg is not None and msg["type"] == "pmessage":
                out.append((msg["channel"], msg["data"]))
        return out

    def keyspace(self, n: int, db: int = 0) -> list[tuple[bytes, bytes]]:
        """n keyspace messages (K only) as (key, event); every one must be of db."""
        out = []
        prefix = b"__keyspace@%d__:" % db
        for channel, data in self.take(n):
            assert channel.startswith(prefix), (channel, data)
            out.append((channel[len(prefix):], data))
        return out

    def close(self) -> None:
        self.pubsub.close()
        self.client.close()


@pytest.fixture
def listen(server: Server) -> Iterator[Listener]:
    listener = Listener(server)
    yield listener
    listener.close()


def events(r: redis.Redis, listen: Listener, *commands: tuple[object, ...], n: int,
           flags: str = "KA") -> list[tuple[bytes, bytes]]:
    r.config_set("notify-keyspace-events", flags)
    for cmd in commands:
        r.execute_command(*cmd)
    return listen.keyspace(n)


@pytest.mark.parametrize("shard", [0, 1])
def test_string_events(r: redis.Redis, listen: Listener, shard: int) -> None:
    k = on_shard(shard)
    t = b"{%s}t" % k.strip(b"{}")  # same slot as k
    got = events(r, listen, ("set", k, "1"), ("set", k, "2", "EX", "100"), ("incr", k), ("incrby", k, "3"),
                 ("decr", k), ("incrbyfloat", k, "1.5"), ("append", k, "x"), ("setrange", k, "0", "y"),
                 ("setrange", k, "0", ""), ("setex", k, "10", "v"), ("psetex", k, "10000", "v"),
                 ("getex", k, "PERSIST"), ("getex", k, "PERSIST"), ("getex", k, "EX", "100"), ("getset", k, "w"),
                 ("setnx", k, "z"), ("setnx", t, "z"), ("getdel", k), ("getdel", k),
                 ("mset", k, "1", t, "2"), ("msetnx", k, "1"), ("lcs", k, t), ("touch", k), ("del", k), n=21)
    assert got == [
        (k, b"set"),                      # SET
        (k, b"set"), (k, b"expire"),      # SET EX
        (k, b"incrby"), (k, b"incrby"), (k, b"incrby"),  # INCR INCRBY DECR
        (k, b"incrbyfloat"), (k, b"append"), (k, b"setrange"),  # an empty SETRANGE: nothing
        (k, b"set"), (k, b"expire"),      # SETEX
        (k, b"set"), (k, b"expire"),      # PSETEX
        (k, b"persist"),                  # GETEX PERSIST (the second, with no TTL left: nothing)
        (k, b"expire"),                   # GETEX EX
        (k, b"set"),                      # GETSET; SETNX of an existing key: nothing
        (t, b"set"),                      # SETNX
        (k, b"del"),                      # GETDEL (the second, with no key: nothing)
        (k, b"set"), (t, b"set"),         # MSET; MSETNX of an existing key, LCS, TOUCH: nothing
        (k, b"del"),                      # the sentinel
    ]
    got = events(r, listen, ("set", k, "v"), ("getex", k, "EXAT", "1"), n=2)
    assert got == [(k, b"set"), (k, b"del")]  # a time already past deletes the key
    assert r.exists(k) == 0


def test_new_events(r: redis.Redis, listen: Listener) -> None:
    k = on_shard(1)
    tag = k.strip(b"{}")
    t, lst = b"{%s}t" % tag, b"{%s}l" % tag
    got = events(r, listen, ("mset", k, "1", t, "2", k, "3"), ("set", k, "4"), ("rpush", lst, "a"), n=8, flags="K$ln")
    assert got == [(k, b"new"), (k, b"set"), (t, b"new"), (t, b"set"), (k, b"set"),  # MSET: new once per key
                   (k, b"set"), (lst, b"new"), (lst, b"rpush")]


def test_bit_events(r: redis.Redis, listen: Listener) -> None:
    k = on_shard(0)
    tag = k.strip(b"{}")
    d, e = b"{%s}d" % tag, b"{%s}e" % tag
    got = events(r, listen, ("setbit", k, "7", "1"), ("setbit", k, "7", "1"), ("setbit", k, "7", "0"),
                 ("bitfield", k, "SET", "u8", "0", "255"), ("bitfield", k, "GET", "u8", "0"),
                 ("bitfield", k, "OVERFLOW", "FAIL", "INCRBY", "u8", "0", "1"),
                 ("bitop", "NOT", d, k), ("bitop", "AND", d, e), ("bitop", "AND", d, e), ("del", k), n=6)
    assert got == [(k, b"setbit"),  # created; the same bit again: nothing
                   (k, b"setbit"), (k, b"setbit"),  # a FAILed INCRBY and a GET: nothing
                   (d, b"set"), (d, b"del"),  # an empty result deletes (then there is nothing to delete)
                   (k, b"del")]


def test_keyspace_events(r: redis.Redis, listen: Listener) -> None:
    k = on_shard(0)
    tag = k.strip(b"{}")
    a, b, c = (b"{%s}%s" % (tag, s) for s in (b"a", b"b", b"c"))
    r.mset({a: "1", b: "2"})
    got = events(r, listen, ("del", a, c, b), ("set", a, "1"), ("unlink", a), ("set", a, "1"), ("expire", a, "100"),
                 ("pexpire", a, "100000", "NX"), ("persist", a), ("persist", a), ("pexpireat", a, "1"), n=8)
    assert got == [(a, b"del"), (b, b"del"), (a, b"set"), (a, b"del"), (a, b"set"), (a, b"expire"),
                   (a, b"persist"), (a, b"del")]  # an expire time already past deletes the key
    got = events(r, listen, ("set", a, "1"), ("set", b, "x"), ("rename", a, b), ("renamenx", b, c),
                 ("renamenx", c, c), ("copy", c, a), ("copy", c, a, "REPLACE"), n=14, flags="KAn")
    assert got == [(a, b"new"), (a, b"set"), (b, b"new"), (b, b"set"),
                   (b, b"new"), (a, b"rename_from"), (b, b"rename_to"),  # RENAME re-adds the destination
                   (c, b"new"), (b, b"rename_from"), (c, b"rename_to"),  # renaming to itself: nothing
                   (a, b"new"), (a, b"copy_to"),
                   (a, b"new"), (a, b"copy_to")]  # REPLACE also deletes and adds


def test_copy_and_move_across_dbs(r: redis.Redis, listen: Listener) -> None:
    k = on_shard(1)
    r.set(k, "v")
    r.config_set("notify-keyspace-events", "KA")
    r.execute_command("copy", k, k, "DB", "2")
    assert listen.keyspace(1, db=2) == [(k, b"copy_to")]
    r.execute_command("move", k, "3")
    assert listen.keyspace(1, db=0) == [(k, b"move_from")]
    assert listen.keyspace(1, db=3) == [(k, b"move_to")]


def test_sort_store_events(r: redis.Redis, listen: Listener) -> None:
    k = on_shard(0)
    tag = k.strip(b"{}")
    src, dst, empty = (b"{%s}%s" % (tag, s) for s in (b"src", b"dst", b"none"))
    r.rpush(src, "3", "1", "2")
    got = events(r, listen, ("sort", src, "STORE", dst), ("sort", empty, "STORE", dst), ("sort", empty, "STORE", dst),
                 ("sort", src), ("del", src), n=3)
    assert got == [(dst, b"sortstore"), (dst, b"del"), (src, b"del")]


def test_list_events(r: redis.Redis, listen: Listener) -> None:
    k = on_shard(1)
    other = b"{%s}o" % k.strip(b"{}")
    got = events(r, listen, ("lpush", k, "a", "b"), ("rpush", k, "c"), ("lpushx", other, "x"),
                 ("linsert", k, "BEFORE", "a", "z"), ("linsert", k, "BEFORE", "nope", "z"), ("lset", k, "0", "q"),
                 ("lrem", k, "0", "nope"), ("lrem", k, "1", "z"), ("ltrim", k, "0", "-1"), ("lpop", k, "0"),
                 ("lpop", k), ("rpop", k, "5"), ("set", other, "s"), n=10)
    assert got == [(k, b"lpush"), (k, b"rpush"), (k, b"linsert"), (k, b"lset"), (k, b"lrem"),
                   (k, b"ltrim"),  # even though nothing was cut
                   (k, b"lpop"), (k, b"rpop"), (k, b"del"),  # RPOP 5 empties the list
                   (other, b"set")]


def test_lmove_order(r: redis.Redis, listen: Listener) -> None:
    k = on_shard(0)
    tag = k.strip(b"{}")
    src, dst = b"{%s}s" % tag, b"{%s}d" % tag
    r.rpush(src, "a", "b")
    got = events(r, listen, ("lmove", src, dst, "RIGHT", "LEFT"), ("rpoplpush", src, dst),
                 ("lmove", dst, dst, "LEFT", "LEFT"), n=8, flags="KAn")
    assert got == [(dst, b"new"), (dst, b"lpush"), (src, b"rpop"),
                   (dst, b"lpush"), (src, b"rpop"), (src, b"del"),
                   (dst, b"lpush"), (dst, b"lpop")]  # a list onto itself: both events, as in Redis


def test_blocking_pop_events(server: Server, r: redis.Redis, listen: Listener) -> None:
    k = on_shard(1)
    r.config_set("notify-keyspace-events", "KA")
    blocker = server.client()
    try:
        out: list[object] = []
        th = threading.Thread(target=lambda: out.append(blocker.blpop([k], timeout=10)))
        th.start()
        wait_blocked(r, 1)
        r.rpush(k, "x")
        th.join(10)
        assert out == [(k, b"x")]
        assert listen.keyspace(3) == [(k, b"rpush"), (k, b"lpop"), (k, b"del")]
    finally:
        blocker.close()


def test_hash_events(r: redis.Redis, listen: Listener) -> None:
    k = on_shard(0)
    got = events(r, listen, ("hset", k, "a", "1"), ("hset", k, "a", "1"), ("hmset", k, "b", "2"),
                 ("hsetnx", k, "a", "9"), ("hsetnx", k, "c", "3"), ("hincrby", k, "a", "5"),
                 ("hincrbyfloat", k, "a", "0.5"),
                 ("hdel", k, "nope"), ("hdel", k, "a", "b"), ("hdel", k, "c", "d"), n=9)
    assert got == [(k, b"hset"), (k, b"hset"),  # even when nothing changed
                   (k, b"hset"), (k, b"hset"), (k, b"hincrby"), (k, b"hincrbyfloat"),
                   (k, b"hdel"), (k, b"hdel"), (k, b"del")]


def test_set_events(r: redis.Redis, listen: Listener) -> None:
    k = on_shard(1)
    tag = k.strip(b"{}")
    o, d, e = (b"{%s}%s" % (tag, s) for s in (b"o", b"d", b"e"))
    got = events(r, listen, ("sadd", k, "a", "b", "c"), ("sadd", k, "a"), ("srem", k, "x"), ("srem", k, "a"),
                 ("smove", k, o, "b"), ("smove", k, o, "b"), ("sadd", k, "b"), ("smove", k, o, "b"),
                 ("spop", k), ("sadd", k, "x", "y"), ("spop", k, "5"),
                 n=13, flags="KAn")
    assert got == [(k, b"new"), (k, b"sadd"), (k, b"srem"),
                   (k, b"srem"), (o, b"new"), (o, b"sadd"),  # SMOVE: the source's events first
                   (k, b"sadd"), (k, b"srem"),  # the member already in the destination: no sadd
                   (k, b"spop"), (k, b"del"),
                   (k, b"new"), (k, b"sadd"), (k, b"spop")]
    assert listen.keyspace(1) == [(k, b"del")]
    got = events(r, listen, ("sadd", k, "1", "2"), ("sadd", e, "2", "3"), ("sinterstore", d, k, e),
                 ("sunionstore", d, k, e), ("sdiffstore", d, k, k), ("sdiffstore", d, k, k),
                 ("sinterstore", d, k, o + b"missing"), ("del", k), n=6)
    assert got == [(k, b"sadd"), (e, b"sadd"), (d, b"sinterstore"), (d, b"sunionstore"), (d, b"del"), (k, b"del")]


def test_class_filter(r: redis.Redis, listen: Listener) -> None:
    k = on_shard(0)
    tag = k.strip(b"{}")
    s = b"{%s}s" % tag
    got = events(r, listen, ("lpush", k, "a"), ("hset", s + b"h", "f", "v"), ("del", k), ("set", s, "1"),
                 n=1, flags="K$")
    assert got == [(s, b"set")]  # nothing of the list, hash or generic classes
    got = events(r, listen, ("set", s, "2"), ("rpush", k, "a"), n=1, flags="Kl")
    assert got == [(k, b"rpush")]
    got = events(r, listen, ("set", s, "3", "EX", "100"), ("lpop", k), n=2, flags="Kg")
    assert got == [(s, b"expire"), (k, b"del")]
    r.config_set("notify-keyspace-events", "A")  # neither K nor E: nothing at all
    r.set(s, "4")
    got = events(r, listen, ("set", s, "5"), n=1, flags="KA")
    assert got == [(s, b"set")]


def test_keyspace_versus_keyevent(server: Server, r: redis.Redis, listen: Listener) -> None:
    k = on_shard(1)
    r.config_set("notify-keyspace-events", "E$")
    r.set(k, "1")
    assert listen.take(1) == [(b"__keyevent@0__:set", k)]
    r.config_set("notify-keyspace-events", "KE$")
    r.append(k, "2")
    assert listen.take(2) == [(b"__keyspace@0__:" + k, b"append"), (b"__keyevent@0__:append", k)]
    db5 = server.client(db=5)
    try:
        db5.incr(k)
        assert listen.take(2) == [(b"__keyspace@5__:" + k, b"incrby"), (b"__keyevent@5__:incrby", k)]
    finally:
        db5.close()


def test_keys_on_both_shards(server: Server, r: redis.Redis) -> None:
    """Whatever worker the subscriber and the writer are on, events of keys on either shard come."""
    listeners = [Listener(server, "__keyspace@0__:*") for _ in range(3)]
    try:
        keys = [on_shard(0, "x"), on_shard(1, "x")]
        r.config_set("notify-keyspace-events", "KA")
        for key in keys:
            r.sadd(key, "m")
        for listener in listeners:
            assert listener.keyspace(2) == [(keys[0], b"sadd"), (keys[1], b"sadd")]
    finally:
        for listener in listeners:
            listener.close()


def test_cross_shard_commands(r: redis.Redis, listen: Listener) -> None:
    """RENAME, COPY, LMOVE, SMOVE and SUNIONSTORE with keys on two shards: each key's events, in
    Redis's order for that key (the two shards publish separately)."""
    a, b = on_shard(0, "a"), on_shard(1, "b")
    r.config_set("notify-keyspace-events", "")
    r.set(a, "v")

    def per_key(got: list[tuple[bytes, bytes]]) -> dict[bytes, list[bytes]]:
        out: dict[bytes, list[bytes]] = {}
        for key, event in got:
            out.setdefault(key, []).append(event)
        return out

    got = events(r, listen, ("rename", a, b), n=3, flags="KAn")
    assert per_key(got) == {b: [b"new", b"rename_to"], a: [b"rename_from"]}
    assert r.get(b) == b"v" and r.exists(a) == 0
    got = events(r, listen, ("copy", b, a), n=2, flags="KAn")
    assert got == [(a, b"new"), (a, b"copy_to")]
    r.config_set("notify-keyspace-events", "")
    r.delete(a, b)
    r.rpush(a, "x")
    got = events(r, listen, ("lmove", a, b, "LEFT", "RIGHT"), n=4, flags="KAn")
    assert per_key(got) == {b: [b"new", b"rpush"], a: [b"lpop", b"del"]}
    r.config_set("notify-keyspace-events", "")
    r.sadd(a, "m")
    got = events(r, listen, ("smove", a, b + b"s", "m"), n=4, flags="KAn")
    assert per_key(got) == {a: [b"srem", b"del"], b + b"s": [b"new", b"sadd"]}
    r.config_set("notify-keyspace-events", "")
    r.sadd(a, "1")
    got = events(r, listen, ("sunionstore", b, a, b + b"s"), ("sinterstore", b, a, b + b"s"), n=2, flags="KA")
    assert got == [(b, b"sunionstore"), (b, b"del")]
