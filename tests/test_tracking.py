"""Client-side caching (CLIENT TRACKING) across workers: the shard owning a key tells the worker
of each client that read it when it changes, in every mode Redis has, and the tracking table
stays within its bounds (tracking-table-max-keys, the byte bound, the prefix bound)."""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Iterator

import pytest
import redis

from conftest import Server, client_on, expect_replies, expect_silence, key_on, start_server, wait_until
from shardkv.protocol import encode_command


@pytest.fixture(scope="module")
def srv() -> Iterator[Server]:
    s = start_server("--shards", "2", "--maxmemory", "64mb", "--maxclients", "64",
                     "--tracking-prefixes-max", "8")
    yield s
    s.stop()


OPEN: list[socket.socket] = []


@pytest.fixture(autouse=True)
def fresh(srv: Server) -> Iterator[None]:
    r = srv.client()
    r.flushall()
    r.config_set("tracking-table-max-keys", 1_000_000)
    yield
    while OPEN:
        OPEN.pop().close()
    wait_until(lambda: r.info("clients")["tracking_clients"] == 0, what="the test's tracking clients gone")


def raw_on(server: Server, worker: int, resp3: bool = True) -> socket.socket:
    """A raw connection held by the given worker (RESP3 unless told otherwise)."""
    for _ in range(200):
        s = server.raw()
        (client_id,) = expect_replies(s, encode_command([b"CLIENT", b"ID"]), 1)
        assert isinstance(client_id, int)
        if client_id % 2 == worker:
            if resp3:
                expect_replies(s, encode_command([b"HELLO", b"3"]), 1)
            OPEN.append(s)
            return s
        s.close()
    raise AssertionError(f"no connection landed on worker {worker}")


def send(s: socket.socket, *args: object, replies: int = 1) -> list[object]:
    return expect_replies(s, encode_command([a if isinstance(a, bytes) else str(a).encode() for a in args]), replies)


def client_id(s: socket.socket) -> int:
    (n,) = send(s, "CLIENT", "ID")
    assert isinstance(n, int)
    return n


def invalidation(*keys: str) -> list[object]:
    return [b"invalidate", [k.encode() for k in keys]]


@pytest.mark.parametrize("reader_worker", [0, 1])
def test_a_write_on_either_shard_invalidates_a_read_key(srv: Server, reader_worker: int) -> None:
    reader = raw_on(srv, reader_worker)
    writer = client_on(srv, 1 - reader_worker)
    keys = [key_on(0, "inv"), key_on(1, "inv")]
    assert send(reader, "CLIENT", "TRACKING", "ON") == [b"OK"]
    for key in keys:
        writer.set(key, "v1")
        assert send(reader, "GET", key) == [b"v1"]
    writer.set("not-read", "x")  # never read: no message
    for key in keys:
        writer.set(key, "v2")
        assert send(reader, "PING", replies=2) == [invalidation(key), b"PONG"]
    for key in keys:  # no longer tracked after one invalidation, until read again
        writer.set(key, "v3")
    assert send(reader, "PING") == [b"PONG"]
    assert srv.client().info("stats")["tracking_total_keys"] == 0


def test_own_write_invalidates_after_its_reply_unless_noloop(srv: Server) -> None:
    r = raw_on(srv, 0)
    key = key_on(1, "own")
    assert send(r, "CLIENT", "TRACKING", "ON") == [b"OK"]
    send(r, "HSET", key, "f", "1")
    send(r, "HGET", key, "f")
    assert send(r, "HDEL", key, "f", replies=2) == [1, invalidation(key)]
    assert send(r, "CLIENT", "TRACKING", "OFF") == [b"OK"]
    assert send(r, "CLIENT", "TRACKING", "ON", "NOLOOP") == [b"OK"]
    send(r, "GET", key)
    send(r, "SET", key, "mine")
    assert send(r, "PING") == [b"PONG"]  # nothing about its own write (which untracked the key)
    send(r, "GET", key)
    srv.client().set(key, "theirs")
    assert send(r, "PING", replies=2) == [invalidation(key), b"PONG"]


def test_invalidation_comes_after_the_exec_reply(srv: Server) -> None:
    r = raw_on(srv, 0)
    a, b = "{tx}a", "{tx}b"
    send(r, "CLIENT", "TRACKING", "ON")
    send(r, "MSET", a, "1", b, "2")
    send(r, "GET", a)
    send(r, "MULTI")
    send(r, "INCR", a)
    send(r, "GET", b)
    assert send(r, "EXEC", replies=2) == [[2, b"2"], invalidation(a)]


def test_redirect_to_a_resp2_subscriber_on_the_other_worker_and_broken_redirect(srv: Server) -> None:
    target = raw_on(srv, 1, resp3=False)
    target_id = client_id(target)
    send(target, "SUBSCRIBE", "__redis__:invalidate")
    r = raw_on(srv, 0)
    key = key_on(0, "redir")
    assert send(r, "CLIENT", "TRACKING", "ON", "REDIRECT", target_id) == [b"OK"]
    assert send(r, "CLIENT", "GETREDIR") == [target_id]
    send(r, "GET", key)
    srv.client().set(key, "1")
    assert expect_replies(target, b"", 1) == [[b"message", b"__redis__:invalidate", [key.encode()]]]
    send(r, "GET", key)
    target.close()
    wait_until(lambda: target_id not in [c["id"] for c in srv.client().client_list()], what="target closed")
    srv.client().set(key, "2")
    # (learnt from the target's worker: it comes when it comes, as the TCL suite reads it)
    assert expect_replies(r, b"", 1) == [[b"tracking-redir-broken", target_id]]
    (info,) = send(r, "CLIENT", "TRACKINGINFO")
    assert info == [b"flags", [b"on", b"broken_redirect"], b"redirect", target_id, b"prefixes", []]


def test_redirect_errors_and_tracking_info(srv: Server) -> None:
    r = srv.client(single_connection_client=True, protocol=2)
    OPEN.append(r.connection._sock)  # type: ignore[union-attr]
    with pytest.raises(redis.ResponseError, match="^The client ID you want redirect to does not exist$"):
        r.execute_command("CLIENT", "TRACKING", "ON", "REDIRECT", "999999")
    with pytest.raises(redis.ResponseError, match="^A client can only redirect to a single other client$"):
        r.execute_command("CLIENT", "TRACKING", "ON", "REDIRECT", "1", "REDIRECT", "2")
    with pytest.raises(redis.ResponseError, match="^PREFIX option requires BCAST mode to be enabled$"):
        r.execute_command("CLIENT", "TRACKING", "ON", "PREFIX", "a")
    with pytest.raises(redis.ResponseError, match="^OPTIN and OPTOUT are not compatible with BCAST$"):
        r.execute_command("CLIENT", "TRACKING", "ON", "BCAST", "OPTIN")
    with pytest.raises(redis.ResponseError, match="^You can't specify both OPTIN mode and OPTOUT mode$"):
        r.execute_command("CLIENT", "TRACKING", "ON", "OPTIN", "OPTOUT")
    with pytest.raises(redis.ResponseError, match="^syntax error$"):
        r.execute_command("CLIENT", "TRACKING", "MAYBE")
    with pytest.raises(redis.ResponseError, match="CLIENT CACHING can be called only"):
        r.execute_command("CLIENT", "CACHING", "YES")
    assert r.execute_command("CLIENT", "GETREDIR") == -1
    r.execute_command("CLIENT", "TRACKING", "ON", "OPTIN")
    with pytest.raises(redis.ResponseError, match="You can't switch OPTIN/OPTOUT mode"):
        r.execute_command("CLIENT", "TRACKING", "ON", "OPTOUT")
    with pytest.raises(redis.ResponseError, match="You can't switch BCAST mode"):
        r.execute_command("CLIENT", "TRACKING", "ON", "BCAST")
    with pytest.raises(redis.ResponseError, match="^CLIENT CACHING NO is only valid when tracking is enabled in OPT"):
        r.execute_command("CLIENT", "CACHING", "NO")
    r.execute_command("CLIENT", "CACHING", "YES")
    assert r.execute_command("CLIENT", "TRACKINGINFO")[1] == [b"on", b"optin", b"caching-yes"]
    assert r.execute_command("CLIENT", "GETREDIR") == 0
    assert "flags=t" in r.execute_command("CLIENT", "INFO").decode()
    r.execute_command("CLIENT", "TRACKING", "OFF")
    assert r.execute_command("CLIENT", "TRACKINGINFO") == [b"flags", [b"off"], b"redirect", -1, b"prefixes", []]


def test_optin_and_optout(srv: Server) -> None:
    r = raw_on(srv, 0)
    writer = srv.client()
    k1, k2 = key_on(0, "opt"), key_on(1, "opt")
    send(r, "CLIENT", "TRACKING", "ON", "OPTIN")
    send(r, "GET", k1)  # not cached: no CACHING yes before it
    send(r, "CLIENT", "CACHING", "YES")
    send(r, "GET", k2)
    send(r, "GET", k1)  # the flag lasted for one command
    writer.set(k1, "1")
    writer.set(k2, "1")
    assert send(r, "PING", replies=2) == [invalidation(k2), b"PONG"]
    send(r, "CLIENT", "TRACKING", "OFF")
    send(r, "CLIENT", "TRACKING", "ON", "OPTOUT")
    send(r, "CLIENT", "CACHING", "NO")
    send(r, "GET", k1)  # opted out
    send(r, "GET", k2)
    writer.set(k1, "2")
    writer.set(k2, "2")
    assert send(r, "PING", replies=2) == [invalidation(k2), b"PONG"]


def test_bcast_prefixes_one_message_per_prefix_and_command(srv: Server) -> None:
    r = raw_on(srv, 1)
    writer = srv.client()
    assert send(r, "CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", "a:", "PREFIX", "b:") == [b"OK"]
    writer.mset({"a:1{t}": 1, "a:2{t}": 2, "b:1{t}": 3, "c:1{t}": 4})
    got = send(r, "PING", replies=3)
    assert got[2] == b"PONG"
    assert sorted(got[:2], key=repr) == sorted([invalidation("a:1{t}", "a:2{t}"), invalidation("b:1{t}")], key=repr)
    writer.set(key_on(0, "b:x"), "1")  # either shard
    writer.set(key_on(1, "b:y"), "1")
    assert send(r, "PING", replies=3) == [invalidation(key_on(0, "b:x")), invalidation(key_on(1, "b:y")), b"PONG"]
    (err,) = send(r, "CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", "a")
    assert err == "ERR Prefix 'a' overlaps with an existing prefix 'a:'. Prefixes for a single client must not overlap."
    (info,) = send(r, "CLIENT", "TRACKINGINFO")
    assert info == [b"flags", [b"on", b"bcast"], b"redirect", 0, b"prefixes", [b"a:", b"b:"]]
    assert srv.client().info("stats")["tracking_total_prefixes"] == 2
    send(r, "CLIENT", "TRACKING", "OFF")
    wait_until(lambda: srv.client().info("stats")["tracking_total_prefixes"] == 0, what="prefixes dropped")


@pytest.mark.parametrize("worker", [0, 1])  # the EXEC runs on the client's own shard, or locks the other
def test_a_transactions_bcast_invalidations_come_together_per_prefix(srv: Server, worker: int) -> None:
    r = raw_on(srv, worker)
    assert send(r, "CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", "a:", "PREFIX", "b:") == [b"OK"]
    writer = client_on(srv, worker)
    pipe = writer.pipeline(transaction=True)
    for key in ("a:1{t}", "a:2{t}", "b:1{t}", "b:2{t}", "c:1{t}"):
        pipe.incr(key)
    assert pipe.execute() == [1] * 5
    got = send(r, "PING", replies=3)
    assert got[2] == b"PONG"
    assert sorted(got[:2], key=repr) == sorted(
        [invalidation("a:1{t}", "a:2{t}"), invalidation("b:1{t}", "b:2{t}")], key=repr)
    writer.close()


def test_bcast_noloop_and_expired_keys(srv: Server) -> None:
    r = raw_on(srv, 0)
    send(r, "CLIENT", "TRACKING", "ON", "BCAST", "NOLOOP")
    send(r, "SET", "mine", "1", "PX", "50")  # its own write: no message, but its expiry is news
    assert expect_replies(r, b"", 1, timeout_s=5) == [invalidation("mine")]


def test_prefix_registrations_are_bounded(srv: Server) -> None:
    clients = [raw_on(srv, i % 2) for i in range(3)]
    for c, letter in zip(clients[:2], "pq", strict=True):  # 4 + 4: at the bound
        prefixes = [x for i in range(4) for x in ("PREFIX", f"{letter}{i}:")]
        assert send(c, "CLIENT", "TRACKING", "ON", "BCAST", *prefixes) == [b"OK"]
    (err,) = send(clients[2], "CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", "z:")  # the 9th of 8
    assert err == "ERR too many tracking prefixes (tracking-prefixes-max)"
    (info,) = send(clients[2], "CLIENT", "TRACKINGINFO")
    assert info[1] == [b"off"]  # type: ignore[index]
    send(clients[1], "CLIENT", "TRACKING", "OFF")
    assert send(clients[2], "CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", "z:") == [b"OK"]


def test_flush_sends_one_null_to_every_tracking_client(srv: Server) -> None:
    r0, r1 = raw_on(srv, 0), raw_on(srv, 1)
    for r in (r0, r1):
        send(r, "CLIENT", "TRACKING", "ON")
        send(r, "GET", key_on(0, "f"))
    assert send(r0, "FLUSHALL", replies=2) == [b"OK", [b"invalidate", None]]
    assert send(r1, "PING", replies=2) == [[b"invalidate", None], b"PONG"]
    assert srv.client().info("stats")["tracking_total_keys"] == 0
    expect_silence(r0, b"")


def test_tracking_table_max_keys_at_and_past_the_limit(srv: Server) -> None:
    r = raw_on(srv, 0)
    writer = srv.client()
    writer.config_set("tracking-table-max-keys", 4)
    keys = [key_on(i % 2, f"lim{i}") for i in range(5)]
    send(r, "CLIENT", "TRACKING", "ON")
    for key in keys[:4]:
        send(r, "GET", key)
    assert send(r, "PING") == [b"PONG"]  # at the limit: nothing evicted
    assert writer.info("stats")["tracking_total_keys"] == 4
    # One past it: the shard that took the new key drops its oldest, with an invalidation.
    assert send(r, "GET", keys[4], replies=2) == [None, invalidation(keys[0])]
    assert writer.info("stats")["tracking_total_keys"] == 4
    writer.config_set("tracking-table-max-keys", 1)  # shrinking evicts across the shards, exactly
    assert writer.info("stats")["tracking_total_keys"] == 1
    evicted = send(r, "PING", replies=4)  # three of the four, then PONG
    assert evicted[-1] == b"PONG" and all(m[0] == b"invalidate" for m in evicted[:-1])  # type: ignore[index]


def test_the_table_stays_within_its_byte_bound() -> None:
    s = start_server("--shards", "2", "--maxmemory", "64mb", "--tracking-table-bytes-per-shard-max", "64kb")
    try:
        r = raw_on(s, 0, resp3=False)  # (RESP2 without a redirection: tracked, told nothing)
        send(r, "CLIENT", "TRACKING", "ON")
        keys = [f"{'k' * 200}{i}" for i in range(2000)]  # about 400 bytes a key: ~800 KB unbounded
        assert expect_replies(r, b"".join(encode_command([b"GET", k.encode()]) for k in keys), 2000) == [None] * 2000
        stats = s.client().info("stats")
        assert 0 < stats["tracking_total_keys"] <= 2 * 65536 // 390
    finally:
        s.stop()


def test_scripts_track_their_declared_keys_only_if_they_read(srv: Server) -> None:
    r = raw_on(srv, 0)
    writer = srv.client()
    send(r, "CLIENT", "TRACKING", "ON")
    send(r, "EVAL", "redis.call('set', 'other{s}', 'x')", 2, "k1{s}", "k2{s}")
    writer.mset({"k1{s}": 1, "k2{s}": 1})
    assert send(r, "PING") == [b"PONG"]
    send(r, "EVAL", "return redis.call('get', 'other{s}')", 2, "k1{s}", "k2{s}")
    writer.mset({"k1{s}": 2, "k2{s}": 2})
    assert send(r, "PING", replies=3) == [invalidation("k1{s}"), invalidation("k2{s}"), b"PONG"]


def test_a_restarted_shard_lost_its_table_so_clients_get_a_null(srv: Server) -> None:
    r = raw_on(srv, 0)
    key = key_on(1, "crash")
    send(r, "CLIENT", "TRACKING", "ON")
    send(r, "GET", key)
    pid = int(client_on(srv, 1).info("server")["worker_pid"])
    os.kill(pid, signal.SIGKILL)
    assert expect_replies(r, b"", 1, timeout_s=30) == [[b"invalidate", None]]
    wait_until(lambda: int(srv.client().info("server")["workers_ready"]) == 2, 30, "worker back")
