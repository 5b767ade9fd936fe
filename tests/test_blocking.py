"""Blocked clients: they cost nothing while they wait, they are woken exactly when Redis would
signal their key ready, and their wait survives a restart of the worker owning the key."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import redis

from conftest import Server, key_on, start_server, wait_until
from shardkv.protocol import encode_command, read_reply
from shardkv.router.blocking import Ready, Unwatch, Watch


@pytest.fixture(scope="module")
def srv() -> Iterator[Server]:
    s = start_server("--shards", "2", "--maxmemory", "64mb", "--maxclients", "256")
    yield s
    s.stop()


def info(r: redis.Redis, section: str) -> dict[str, object]:
    return r.info(section)  # type: ignore[no-any-return]


def blocked(r: redis.Redis) -> int:
    return int(info(r, "clients")["blocked_clients"])  # type: ignore[call-overload]


def lmpop_calls(r: redis.Redis) -> int:
    stats = info(r, "commandstats").get("cmdstat_lmpop")
    return int(stats["calls"]) if isinstance(stats, dict) else 0


def send_blocking(srv: Server, *args: object) -> socket.socket:
    sock = srv.raw()
    sock.sendall(encode_command([str(a).encode() for a in args]))
    return sock


def read_one(sock: socket.socket, timeout_s: float = 10) -> object:
    sock.settimeout(timeout_s)
    buf = b""
    while True:
        try:
            value, end = read_reply(buf)
            assert end == len(buf), "more than one reply"
            return value
        except (IndexError, ValueError):
            pass
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {buf!r}"
        buf += chunk


@pytest.mark.parametrize("shards", [1, 2])
def test_a_blocked_client_runs_nothing_while_it_waits(shards: int) -> None:
    """Today's bug: the retried pop was a write, which woke the first waiter: itself, forever."""
    s = start_server("--shards", str(shards), "--maxmemory", f"{32 * shards}mb")
    try:
        r = s.client()
        key = key_on(shards - 1, "nothere", shards)
        calls0 = lmpop_calls(r)
        sock = send_blocking(s, "BLPOP", key, 3)
        wait_until(lambda: blocked(r) == 1, what="the client to block")
        wait_until(lambda: lmpop_calls(r) >= calls0 + 1, what="the one try, made once the key is watched")
        before = lmpop_calls(r)
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:  # a second of waiting: the count must not move
            assert lmpop_calls(r) == before
            time.sleep(0.1)
        r.rpush(key, "x")
        assert read_one(sock) == [key.encode(), b"x"]
        assert lmpop_calls(r) <= before + 2
        sock.close()
    finally:
        s.stop()


def _cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime, after the (comm) field


def test_a_hundred_blocked_clients_cost_under_five_percent_of_a_core(srv: Server) -> None:
    r = srv.client()
    r.flushall()
    socks = [send_blocking(srv, "BLPOP", f"idle{i}", f"other{i}", 5) for i in range(100)]
    wait_until(lambda: blocked(r) == 100, what="100 blocked clients")
    pids = srv.worker_pids()
    ticks0 = sum(_cpu_ticks(p) for p in pids)
    t0 = time.monotonic()
    for sock in socks:
        assert read_one(sock, 15) is None  # each times out with a null reply
    elapsed_s = time.monotonic() - t0
    used_s = (sum(_cpu_ticks(p) for p in pids) - ticks0) / os.sysconf("SC_CLK_TCK")
    assert elapsed_s > 3
    assert used_s / elapsed_s < 0.05, f"workers used {used_s:.2f} s of CPU in {elapsed_s:.2f} s"
    for sock in socks:
        sock.close()


# Each writer makes `key` (in db 9) hold a list: the client blocked on it must be served.
READY_WRITES: dict[str, Callable[[redis.Redis, str], object]] = {
    "rpush": lambda r, k: r.rpush(k, "v"),
    "lpushx-then-rpush": lambda r, k: (r.lpushx(k, "no"), r.rpush(k, "v")),
    "lmove-destination": lambda r, k: (r.rpush("{src}a", "v"), r.lmove("{src}a", k, "LEFT", "RIGHT")),
    "rename": lambda r, k: (r.rpush("{src}b", "v"), r.rename("{src}b", k)),
    "copy": lambda r, k: (r.rpush("{src}c", "v"), r.copy("{src}c", k)),
    "move-from-db-8": lambda r, k: (r.execute_command("SELECT", 8), r.rpush(k, "v"), r.move(k, 9),
                                     r.execute_command("SELECT", 9)),
    "sort-store": lambda r, k: (r.rpush("{src}d", "v"), r.sort("{src}d", alpha=True, store=k)),
    "swapdb": lambda r, k: (r.execute_command("SELECT", 8), r.rpush(k, "v"), r.swapdb(8, 9),
                            r.execute_command("SELECT", 9)),
}


@pytest.mark.parametrize("how", list(READY_WRITES))
@pytest.mark.parametrize("shard", [0, 1])
def test_every_write_that_creates_the_list_serves_the_waiter(srv: Server, how: str, shard: int) -> None:
    r = srv.client(db=9, single_connection_client=True)
    r.flushall()
    key = key_on(shard, f"ready-{how}-")
    sock = srv.raw()
    sock.sendall(encode_command([b"SELECT", b"9"]) + encode_command([b"BLPOP", key.encode(), b"10"]))
    assert read_one(sock) == b"OK"
    wait_until(lambda: blocked(r) == 1, what="the client to block")
    READY_WRITES[how](r, key)
    assert read_one(sock) == [key.encode(), b"v"]
    wait_until(lambda: blocked(r) == 0, what="the client to be served")
    sock.close()


def test_writes_that_add_nothing_do_not_wake_the_waiter(srv: Server) -> None:
    r = srv.client()
    r.flushall()
    key = key_on(1, "quiet")
    calls0 = lmpop_calls(r)
    sock = send_blocking(srv, "BLPOP", key, 10)
    wait_until(lambda: blocked(r) == 1, what="the client to block")
    wait_until(lambda: lmpop_calls(r) >= calls0 + 1, what="the one try, made once the key is watched")
    before = lmpop_calls(r)
    r.lpushx(key, "no")  # adds nothing: the key does not exist
    r.set(key, "a string")  # not a list
    r.delete(key)
    r.rpushx(key, "no")
    r.execute_command("LMPOP", 1, key, "LEFT")
    assert lmpop_calls(r) == before + 1  # only the LMPOP this test sent: no retry was woken
    assert blocked(r) == 1
    r.rpush(key, "yes")
    assert read_one(sock) == [key.encode(), b"yes"]
    sock.close()


def test_a_waiter_whose_move_fails_passes_the_element_to_the_next(srv: Server) -> None:
    """The first waiter's destination is no list: it gets WRONGTYPE, the element stays and goes
    to the next waiter (Redis's BRPOPLPUSH with multiple blocked clients)."""
    r = srv.client()
    r.flushall()
    src = "{bl}src"
    r.set("{bl}dst1", "nolist")
    first = send_blocking(srv, "BRPOPLPUSH", src, "{bl}dst1", 10)
    wait_until(lambda: blocked(r) == 1, what="the first to block")
    second = send_blocking(srv, "BRPOPLPUSH", src, "{bl}dst2", 10)
    wait_until(lambda: blocked(r) == 2, what="the second to block")
    r.lpush(src, "foo")
    assert str(read_one(first)).startswith("WRONGTYPE")
    assert read_one(second) == b"foo"
    assert r.lrange("{bl}dst2", 0, -1) == [b"foo"]
    first.close()
    second.close()


def test_a_push_right_after_the_blocking_command_is_never_missed(srv: Server) -> None:
    """The command is sent and the push follows at once, from another connection: whether the
    push lands before or after the client's look, the client gets the element."""
    r = srv.client()
    for i in range(20):
        key = key_on(i % 2, f"race{i}")
        sock = send_blocking(srv, "BLPOP", key, 10)
        r.rpush(key, "x")
        assert read_one(sock) == [key.encode(), b"x"]
        sock.close()
    assert blocked(r) == 0


def test_waiters_are_served_first_come_first_served_across_shards(srv: Server) -> None:
    r = srv.client()
    r.flushall()
    key = key_on(1, "fifo")
    socks = []
    for i in range(5):
        socks.append(send_blocking(srv, "BLPOP", key, 10))
        wait_until(lambda n=i + 1: blocked(r) == n, what=f"{i + 1} blocked")
    r.rpush(key, *[f"v{i}" for i in range(5)])
    assert [read_one(s) for s in socks] == [[key.encode(), f"v{i}".encode()] for i in range(5)]
    for s in socks:
        s.close()


def test_a_wait_survives_a_restart_of_the_key_owner(srv: Server) -> None:
    """The owner's table of waiters is lost with it: the home watches again after the restart."""
    r = srv.client()
    r.flushall()
    restarts = int(info(r, "server")["worker_restarts"])  # type: ignore[call-overload]
    owner_pid = 0
    home: socket.socket | None = None
    for _ in range(40):  # a connection on worker 0, and the pid of worker 1 (the key's owner)
        sock = srv.raw()
        sock.sendall(encode_command([b"INFO", b"server"]))
        text = read_one(sock)
        assert isinstance(text, bytes)
        fields = dict(line.split(":", 1) for line in text.decode().splitlines() if ":" in line)
        if fields["worker_id"] == "1":
            owner_pid = int(fields["worker_pid"])
            sock.close()
        elif home is None:
            home = sock
        else:
            sock.close()
        if home is not None and owner_pid:
            break
    assert home is not None and owner_pid, "connections did not reach both workers"
    key = key_on(1, "survivor")
    home.sendall(encode_command([b"BLPOP", key.encode(), b"30"]))
    wait_until(lambda: blocked(r) == 1, what="the client to block")
    os.kill(owner_pid, signal.SIGKILL)
    wait_until(lambda: _restarted(srv, restarts), 15, "the owner to restart")
    srv.client().rpush(key, "after")
    assert read_one(home, 15) == [key.encode(), b"after"]
    home.close()


def _restarted(srv: Server, restarts: int) -> bool:
    try:
        i = srv.client().info("server")
        return int(i["worker_restarts"]) > restarts and int(i["workers_ready"]) == 2
    except redis.RedisError:
        return False


def test_blocked_client_shows_flag_b_in_client_list(srv: Server) -> None:
    r = srv.client()
    sock = send_blocking(srv, "BLPOP", "flagged", 10)
    wait_until(lambda: blocked(r) == 1, what="the client to block")
    lines = r.execute_command("CLIENT", "LIST").decode().splitlines()
    assert sum(" flags=b " in line for line in lines) == 1
    r.rpush("flagged", "x")
    assert read_one(sock) == [b"flagged", b"x"]
    sock.close()


def test_blocking_messages_round_trip() -> None:
    for message in (Watch(3, b"a\r\nkey", 1, b"0:5:7", 123_456_789), Unwatch(15, b"", b"1:2:3"), Ready(b"9:9:9")):
        assert type(message).decode(message.encode()) == message


def test_many_waiters_pushes_and_timeouts_end_with_none_blocked(srv: Server) -> None:
    """Churn: clients block, time out, are served or disconnect; errors are reported, and in the
    end nothing is left blocked and every element is either popped or still in its list."""
    r = srv.client()
    r.flushall()
    keys = [key_on(i % 2, f"churn{i}-") for i in range(4)]
    errors: list[BaseException] = []
    popped: list[bytes] = []
    lock = threading.Lock()

    def waiter(n: int) -> None:
        try:
            c = srv.client(socket_timeout=20)
            for i in range(10):
                got = c.blpop(keys, timeout=0.05 if i % 3 else 0.5)
                if got is not None:
                    with lock:
                        popped.append(got[1])
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            errors.append(exc)

    threads = [threading.Thread(target=waiter, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    pushed = 0
    for i in range(60):
        r.rpush(keys[i % 4], f"e{i}")
        pushed += 1
    for t in threads:
        t.join(60)
    assert not errors, errors
    left = sum(r.llen(k) for k in keys)
    assert len(popped) + left == pushed
    assert len(set(popped)) == len(popped)
    wait_until(lambda: blocked(r) == 0, what="no client left blocked")
