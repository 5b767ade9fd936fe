"""MULTI / EXEC / WATCH: Redis's replies, and atomicity when the keys live on different shards."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator

import pytest
import redis

from conftest import Crew, Server, client_on, expect_replies, key_on, request, start_server, wait_until
from shardkv.protocol import ReplyError, encode_command
from shardkv.router.dispatch import key_slot


@pytest.fixture(scope="module")
def srv() -> Iterator[Server]:
    s = start_server("--shards", "2", "--maxmemory", "64mb", "--maxclients", "128")
    yield s
    s.stop()


def test_replies_as_redis_gives_them(srv: Server) -> None:
    s = srv.raw()
    a, b = key_on(0, "ta").encode(), key_on(1, "tb").encode()
    cmds = [[b"DEL", a, b], [b"MULTI"], [b"SET", a, b"1"], [b"FOO", b"x"], [b"INCR", b], [b"EXEC"],
            [b"EXEC"], [b"DISCARD"], [b"MULTI"], [b"MULTI"], [b"WATCH", a], [b"SET", b, b"x"], [b"INCR", b],
            [b"GET", b], [b"LPUSH", b, b"1"], [b"EXEC"], [b"MULTI"], [b"EXEC"]]
    replies = expect_replies(s, b"".join(encode_command(c) for c in cmds), len(cmds))
    assert replies[1:6] == [b"OK", b"QUEUED", ReplyError("ERR unknown command 'FOO', with args beginning with: 'x' "),
                            b"QUEUED", ReplyError("EXECABORT Transaction discarded because of previous errors.")]
    assert replies[6:11] == [ReplyError("ERR EXEC without MULTI"), ReplyError("ERR DISCARD without MULTI"), b"OK",
                             ReplyError("ERR MULTI calls can not be nested"),
                             ReplyError("ERR WATCH inside MULTI is not allowed")]
    # Neither of the last two aborts the transaction; a run-time error does not stop the others.
    assert replies[15] == [b"OK", ReplyError("ERR value is not an integer or out of range"), b"x",
                           ReplyError("WRONGTYPE Operation against a key holding the wrong kind of value")]
    assert replies[17] == []
    assert request(s, encode_command([b"EXISTS", a])) == b":0\r\n"  # the aborted EXEC wrote nothing


def test_resp3_null_when_a_watched_key_changed(srv: Server) -> None:
    s = srv.raw()
    k = key_on(1, "w3").encode()
    expect_replies(s, b"HELLO 3\r\n", 1)
    other = srv.client()
    expect_replies(s, encode_command([b"WATCH", k]), 1)
    other.set(k, "changed")
    assert request(s, b"MULTI\r\n") == b"+OK\r\n"
    assert request(s, encode_command([b"GET", k])) == b"+QUEUED\r\n"
    assert request(s, b"EXEC\r\n") == b"_\r\n"


def test_blocking_commands_do_not_block_in_exec(srv: Server) -> None:
    s = srv.raw()
    a, b = key_on(0, "bl").encode(), key_on(1, "bl").encode()
    cmds = [[b"DEL", a, b], [b"MULTI"], [b"BLPOP", a, b, b"0"], [b"BLMOVE", a, b, b"LEFT", b"LEFT", b"0"],
            [b"BRPOPLPUSH", a, b, b"0"], [b"RPUSH", a, b"v"], [b"BLPOP", b, a, b"0"], [b"EXEC"]]
    replies = expect_replies(s, b"".join(encode_command(c) for c in cmds), len(cmds))
    assert replies[-1] == [None, None, None, 1, [a, b"v"]]
    raw = request(s, b"MULTI\r\n") + request(s, encode_command([b"BLMOVE", a, b, b"LEFT", b"LEFT", b"0"])) + \
        request(s, encode_command([b"BLPOP", a, b"0"])) + request(s, b"EXEC\r\n")
    assert raw.endswith(b"*2\r\n$-1\r\n*-1\r\n")  # LMOVE's null bulk, BLPOP's null array, as Redis


def test_watch_sees_a_write_from_a_client_of_the_other_worker(srv: Server) -> None:
    keys = [key_on(0, "wx"), key_on(1, "wy")]
    for watcher_worker in (0, 1):
        watcher = client_on(srv, watcher_worker)  # its commands go on its own connection
        writer = client_on(srv, 1 - watcher_worker)
        for changed in keys:
            watcher.delete(*keys)
            assert watcher.execute_command("WATCH", *keys) is True
            writer.set(changed, "theirs")
            watcher.execute_command("MULTI")
            watcher.execute_command("SET", keys[0], "mine")
            watcher.execute_command("SET", keys[1], "mine")
            assert watcher.execute_command("EXEC") is None
            assert watcher.mget(keys) == ([b"theirs", None] if changed == keys[0] else [None, b"theirs"])
        # Unchanged: EXEC runs, and the keys are no longer watched afterwards.
        watcher.execute_command("WATCH", *keys)
        watcher.execute_command("MULTI")
        watcher.execute_command("SET", keys[0], "mine")
        assert watcher.execute_command("EXEC") == [b"OK"]
        writer.set(keys[1], "later")
        watcher.execute_command("MULTI")
        watcher.execute_command("GET", keys[1])
        assert watcher.execute_command("EXEC") == [b"later"]
        watcher.close()
        writer.close()


def test_watch_rules_for_expiry_flush_and_swapdb(srv: Server) -> None:
    s = srv.raw()
    k = key_on(1, "wr").encode()
    expect_replies(s, b"SELECT 9\r\n", 1)

    def exec_after(setup: list[list[bytes]], between: list[list[bytes]]) -> object:
        cmds = [*setup, [b"WATCH", k], *between, [b"MULTI"], [b"PING"], [b"EXEC"]]
        return expect_replies(s, b"".join(encode_command(c) for c in cmds), len(cmds))[-1]

    def clock_past(ms: float) -> None:
        deadline = time.time() * 1000 + ms
        wait_until(lambda: time.time() * 1000 > deadline, 5, "the key's time to pass")

    # A watched key whose time passes before EXEC fails it, deleted or not.
    expect_replies(s, encode_command([b"SET", k, b"v", b"PX", b"50"]) + encode_command([b"WATCH", k]), 2)
    clock_past(60)
    assert expect_replies(s, b"MULTI\r\nPING\r\nEXEC\r\n", 3)[-1] is None
    # A key already expired when it was WATCHed: its deletion is no change.
    expect_replies(s, encode_command([b"SET", k, b"v", b"PX", b"1"]), 1)
    clock_past(5)
    assert exec_after([], [[b"DEL", k]]) == [b"PONG"]
    # Any write is a change, even one that leaves the value as it was.
    assert exec_after([[b"SET", k, b"v"]], [[b"SET", k, b"v"]]) is None
    assert exec_after([[b"SET", k, b"1"]], [[b"INCRBY", k, b"0"]]) is None
    assert exec_after([[b"SET", k, b"1"]], [[b"EXPIRE", k, b"100"]]) is None
    # FLUSHDB / FLUSHALL touch a watched key that exists, not one that does not.
    assert exec_after([[b"SET", k, b"v"]], [[b"FLUSHDB"]]) is None
    assert exec_after([[b"DEL", k]], [[b"FLUSHDB"]]) == [b"PONG"]
    assert exec_after([[b"SET", k, b"v"]], [[b"FLUSHALL"]]) is None
    # SWAPDB touches a watched key that exists in either db.
    assert exec_after([[b"DEL", k]], [[b"SELECT", b"10"], [b"SET", k, b"x"], [b"SELECT", b"9"],
                                      [b"SWAPDB", b"9", b"10"]]) is None
    assert exec_after([[b"FLUSHALL"]], [[b"SWAPDB", b"9", b"10"]]) == [b"PONG"]
    # A watched key in db 9 is not the same key in db 10.
    assert exec_after([[b"DEL", k]], [[b"SELECT", b"10"], [b"SET", k, b"x"], [b"SELECT", b"9"]]) == [b"PONG"]
    # UNWATCH and DISCARD forget the watch.
    assert exec_after([], [[b"SET", k, b"1"], [b"UNWATCH"]]) == [b"PONG"]
    assert exec_after([], [[b"SET", k, b"2"], [b"MULTI"], [b"DISCARD"]]) == [b"PONG"]
    expect_replies(s, b"FLUSHALL\r\nSELECT 0\r\n", 2)


def test_pipeline_transactions_of_redis_py(srv: Server) -> None:
    r = srv.client()
    keys = [f"{{p{i}}}" for i in range(8)]
    r.delete(*keys)
    with r.pipeline() as p:  # transaction=True: MULTI ... EXEC
        for i, k in enumerate(keys):
            p.set(k, i)
            p.incr(k)
        p.mget(keys)
        p.dbsize()
        out = p.execute()
    assert out[-2] == [str(i + 1).encode() for i in range(len(keys))]
    assert out[:-2] == [True, 1, True, 2, True, 3, True, 4, True, 5, True, 6, True, 7, True, 8]
    assert {key_slot(k.encode()) * 2 // 16384 for k in keys} == {0, 1}


def test_transfers_between_shards_keep_the_total(srv: Server) -> None:
    """Clients move amounts between accounts on both shards with MULTI/EXEC (and with WATCH'd
    read-modify-write); readers sum every account in one MULTI and must always see the total."""
    accounts = [key_on(i % 2, f"acct{i}-") for i in range(6)]
    start = 1000
    r = srv.client()
    r.mset({a: start for a in accounts})
    total = start * len(accounts)
    crew = Crew()

    def mover(seed: int) -> None:
        rng = random.Random(seed)
        c = srv.client()
        while crew.running():
            a, b = rng.sample(accounts, 2)
            amount = rng.randint(1, 50)
            with c.pipeline() as p:
                p.decrby(a, amount)
                p.incrby(b, amount)
                p.execute()
            crew.done("transfers")

    def watcher(seed: int) -> None:
        rng = random.Random(seed)
        c = srv.client()
        while crew.running():
            a, b = rng.sample(accounts, 2)
            with c.pipeline() as p:
                try:
                    p.watch(a, b)
                    va, vb = (int(x) for x in p.mget(a, b))  # type: ignore[union-attr]
                    p.multi()
                    p.set(a, va - 7)
                    p.set(b, vb + 7)
                    p.execute()
                    crew.done("watched transfers")
                except redis.WatchError:
                    crew.done("watch conflicts")

    def reader() -> None:
        c = srv.client()
        while crew.running():
            with c.pipeline() as p:
                for a in accounts:
                    p.get(a)
                seen = sum(int(x) for x in p.execute())
            assert seen == total, f"a reader saw {seen}, not {total}"
            crew.done("reads")

    for i in range(3):
        crew.start(mover, i)
    for i in range(2):
        crew.start(watcher, 10 + i)
    for _ in range(2):
        crew.start(reader)
    crew.wait_for("reads", 1500, 120)
    crew.wait_for("transfers", 1500, 120)
    counts = crew.finish()
    assert counts["watched transfers"] > 0
    assert sum(int(x) for x in r.mget(accounts)) == total  # type: ignore[union-attr]


def test_server_commands_inside_exec(srv: Server) -> None:
    r = srv.client()
    a, b = key_on(0, "sc"), key_on(1, "sc")
    r.flushall()
    with r.pipeline() as p:
        p.set(a, 1)
        p.set(b, 2)
        p.dbsize()
        p.keys("sc*")
        p.flushdb()
        p.dbsize()
        p.set(a, 3)
        out = p.execute()
    assert out[2] == 2 and sorted(out[3]) == sorted([a.encode(), b.encode()]) and out[5] == 0
    assert r.get(a) == b"3" and r.get(b) is None


def test_queued_transaction_is_bounded(srv: Server) -> None:
    small = start_server("--shards", "1", "--maxmemory", "16mb", "--client-query-buffer-limit", "9mb",
                         "--value-bytes-max", "4mb")
    try:
        s = small.raw()
        big = b"x" * (3 * 1024 * 1024)
        assert request(s, b"MULTI\r\n") == b"+OK\r\n"
        assert request(s, encode_command([b"SET", b"k", big])) == b"+QUEUED\r\n"
        assert request(s, encode_command([b"SET", b"k", big])) == b"+QUEUED\r\n"  # 6 MiB and a bit: at the limit
        assert request(s, encode_command([b"SET", b"k", big])).startswith(b"-ERR transaction queue exceeds")
        assert request(s, b"EXEC\r\n").startswith(b"-EXECABORT")
        assert request(s, encode_command([b"EXISTS", b"k"])) == b":0\r\n"
        assert request(s, b"MULTI\r\n") == b"+OK\r\n"  # the budget came back
        assert request(s, encode_command([b"SET", b"k", big])) == b"+QUEUED\r\n"
        assert request(s, b"EXEC\r\n") == b"*1\r\n+OK\r\n"
    finally:
        small.stop()
