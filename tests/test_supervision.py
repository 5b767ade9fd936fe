"""The supervisor's side of running shardkv: where the password lives, the watchdog, restart
backoff, the instance lock, and the per-worker counters a restart must not corrupt.

Every test starts real servers as processes and talks TCP; waits are on conditions (INFO, the
process table, the supervisor's log) with deadlines, never a sleep followed by a check.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import multiprocessing
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest
import redis

from conftest import ROOT, Server, exchange, free_port, request, start_server
from shardkv import segments
from shardkv.limits import REQUIREPASS_BYTES_MAX
from shardkv.protocol import encode_command
from shardkv.router.dispatch import key_slot, slot_owners
from shardkv.stats import Stats, segment_bytes
from shardkv.supervisor import hide_password

# ---------------------------------------------------------------------- helpers


@dataclass
class Logged:
    """A server whose stderr goes to a file the test can read (conftest discards it)."""

    srv: Server
    stderr_path: str

    def log(self) -> str:
        with open(self.stderr_path, errors="replace") as f:
            return f.read()


def wait_until(cond: Callable[[], object], timeout_s: float, what: str) -> object:
    deadline = time.monotonic() + timeout_s
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.02)


def launch(*args: str, name: str | None = None, port: int | None = None) -> tuple[subprocess.Popen[bytes], str]:
    """Start a supervisor with stderr to a file; do not wait for it."""
    port = port or free_port()
    name = name or f"skvsup{os.getpid()}"
    fd, path = tempfile.mkstemp(prefix="skv-sup-", suffix=".err")
    os.close(fd)
    with open(path, "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "shardkv", "--port", str(port), "--name", name, *args],
                                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err)
    return proc, path


@contextmanager
def logged_server(*args: str, name: str | None = None, port: int | None = None,
                  password: str | None = None) -> Iterator[Logged]:
    """A running server (every worker ready) whose stderr the test can read; stopped at the end."""
    port = port or free_port()
    name = name or f"skvsup{os.getpid()}"
    proc, path = launch(*args, name=name, port=port)
    srv = Server(port, list(args), proc, name)
    try:
        shards = int(args[args.index("--shards") + 1])
        wait_until(lambda: proc.poll() is not None or ready_workers(srv, password) == shards, 30,
                   "every worker ready")
        assert proc.poll() is None, open(path).read()
        yield Logged(srv, path)
    finally:
        srv.stop()
        os.unlink(path)


def ready_workers(srv: Server, password: str | None = None) -> int:
    """workers_ready from INFO over a fresh connection (0 when none answers in time)."""
    try:
        r = srv.client(socket_timeout=1, password=password)
        try:
            return int(r.info("server")["workers_ready"])
        finally:
            r.close()
    except (redis.RedisError, OSError):
        return 0


def info_int(r: redis.Redis, field: str) -> int:
    return int(r.info("all")[field])


def worker_pids_by_id(srv: Server) -> dict[int, int]:
    """worker id -> pid, read from each worker's boot description on its command line."""
    out: dict[int, int] = {}
    for pid in srv.worker_pids():
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except FileNotFoundError:
            continue
        if len(argv) >= 4 and argv[2] == b"shardkv.worker":
            out[json.loads(argv[3])["worker"]] = pid
    return out


def connection_on(srv: Server, worker: int, shards: int, **kw: object) -> redis.Redis:
    """A single-connection client whose connection a given worker accepted (ids are n*shards+worker)."""
    kw.setdefault("socket_timeout", 5)
    for _ in range(200):
        r = redis.Redis(host="127.0.0.1", port=srv.port, single_connection_client=True, **kw)  # type: ignore[arg-type]
        if int(r.client_id()) % shards == worker:
            return r
        r.close()
    raise AssertionError(f"no connection landed on worker {worker}")


def raw_on(srv: Server, worker: int, shards: int) -> socket.socket:
    """A raw socket whose connection a given worker accepted."""
    for _ in range(200):
        s = srv.raw()
        if int(request(s, b"CLIENT ID\r\n")[1:-2]) % shards == worker:
            return s
        s.close()
    raise AssertionError(f"no connection landed on worker {worker}")


def cmdline(pid: int) -> bytes:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read()


def gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1].startswith("Z")  # a zombie is gone too
    except FileNotFoundError:
        return True


def shm_files(name: str, port: int) -> list[str]:
    return sorted(f for f in os.listdir(segments.SHM_DIR) if f.startswith(f"{name}-{port}"))


# ---------------------------------------------------------------------- the password


def test_password_is_on_no_command_line() -> None:
    """--requirepass s3cret: neither the supervisor's /proc cmdline (its title is rewritten)
    nor any worker's (the boot JSON carries no password) contains it; AUTH still works."""
    srv = start_server("--shards", "2", "--maxmemory", "64mb", "--requirepass", "s3cret")
    try:
        r = srv.client(password="s3cret")
        wait_until(lambda: int(r.info("server")["workers_ready"]) == 2, 20, "both workers ready")
        pids = srv.worker_pids()
        assert len(pids) == 2
        for pid in [srv.proc.pid, *pids]:
            assert b"s3cret" not in cmdline(pid), pid
        assert b"--requirepass\0******" in cmdline(srv.proc.pid) or b"--requirepass ******" in cmdline(srv.proc.pid)
        for pid in pids:
            with open(f"/proc/{pid}/environ", "rb") as f:
                assert b"s3cret" not in f.read()
        assert r.set("k", "v") and r.get("k") == b"v"
        s = srv.raw()
        assert request(s, b"GET k\r\n") == b"-NOAUTH Authentication required.\r\n"
        assert exchange(s, b"AUTH s3cret\r\nGET k\r\n", replies=2).data == b"+OK\r\n$1\r\nv\r\n"
    finally:
        assert srv.stop() == 0


def test_hide_password_masks_every_spelling() -> None:
    assert hide_password(["shardkv", "--requirepass", "pw", "--port", "1"]) == \
        ["shardkv", "--requirepass", "******", "--port", "1"]
    assert hide_password(["shardkv", "--REQUIREPASS=pw"]) == ["shardkv", "--REQUIREPASS=******"]
    assert hide_password(["shardkv", "--requirepass-file", "/x"]) == ["shardkv", "--requirepass-file", "/x"]


def test_requirepass_file_and_the_password_limit(tmp_path: object) -> None:
    """--requirepass-file reads a private regular file; a readable-by-others file, a directory,
    an empty file and a password past requirepass_bytes_max are refused with one line, exit 1;
    a password of exactly requirepass_bytes_max bytes works."""
    d = str(tmp_path)
    good = os.path.join(d, "pw")
    longest = "p" * REQUIREPASS_BYTES_MAX
    with open(good, "w") as f:
        f.write(longest + "\n")
    os.chmod(good, 0o600)

    def refused(*args: str) -> str:
        proc = subprocess.run([sys.executable, "-m", "shardkv", "--port", str(free_port()), "--name",
                               f"skvsup{os.getpid()}", "--shards", "1", "--maxmemory", "32mb", *args],
                              cwd=ROOT, capture_output=True, text=True, timeout=30)
        assert proc.returncode == 1, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1, proc.stderr
        return lines[0]

    shared = os.path.join(d, "shared")
    with open(shared, "w") as f:
        f.write("pw\n")
    os.chmod(shared, 0o640)
    assert "group and others must have no access" in refused("--requirepass-file", shared)
    assert "not a regular file" in refused("--requirepass-file", d)
    empty = os.path.join(d, "empty")
    open(empty, "w").close()
    os.chmod(empty, 0o600)
    assert "is empty" in refused("--requirepass-file", empty)
    assert f"at most {REQUIREPASS_BYTES_MAX}" in refused("--requirepass", longest + "p")
    srv = start_server("--shards", "1", "--maxmemory", "32mb", "--requirepass-file", good)
    try:
        assert b"p" * 20 not in cmdline(srv.proc.pid)
        assert srv.client(password=longest).ping()
        with pytest.raises(redis.AuthenticationError):
            srv.client(password=longest[:-1]).ping()
    finally:
        assert srv.stop() == 0


def test_stored_password_and_digest() -> None:
    """The stats segment holds the password and its SHA-256 digest, which AUTH compares."""
    words = segment_bytes(1, 1)
    mm = mmap.mmap(-1, words)
    stats = Stats(mm, 1, 1)
    try:
        assert not stats.password_set()
        stats.set_password(b"x" * REQUIREPASS_BYTES_MAX)
        assert stats.password() == b"x" * REQUIREPASS_BYTES_MAX and stats.password_set()
        assert stats.password_digest() == hashlib.sha256(b"x" * REQUIREPASS_BYTES_MAX).digest()
        stats.set_password(b"")
        assert not stats.password_set() and stats.password() == b""
        assert stats.password_digest() == hashlib.sha256(b"").digest()
    finally:
        stats.close()
        mm.close()


def _rewrite_passwords(mm: mmap.mmap, rounds: int) -> None:
    stats = Stats(mm, 1, 1)
    for i in range(rounds):
        stats.set_password(b"ab"[i % 2 : i % 2 + 1] * (REQUIREPASS_BYTES_MAX - i % 7))
    stats.close()


def test_a_reader_never_sees_a_torn_password() -> None:
    """One process rewrites the password as fast as it can; this one reads it meanwhile: every
    read is one whole password with its own digest (the seqlock)."""
    mm = mmap.mmap(-1, segment_bytes(1, 1))  # shared with the forked writer
    stats = Stats(mm, 1, 1)
    stats.set_password(b"a" * REQUIREPASS_BYTES_MAX)
    writer = multiprocessing.get_context("fork").Process(target=_rewrite_passwords, args=(mm, 200_000))
    writer.start()
    reads = 0
    try:
        while writer.is_alive() or reads < 1000:
            pw = stats.password()
            assert pw in (pw[:1] * len(pw),) and len(pw) > REQUIREPASS_BYTES_MAX - 7, pw[:20]
            digest = stats.password_digest()
            assert len(digest) == 32
            reads += 1
    finally:
        writer.join(30)
        stats.close()
    assert writer.exitcode == 0 and reads >= 1000


# ---------------------------------------------------------------------- CONFIG SET


def test_config_set_requirepass_on_every_worker() -> None:
    """CONFIG SET requirepass: new connections on every worker must AUTH with the new password,
    existing ones stay authenticated, CONFIG GET answers it, and "" removes it."""
    srv = start_server("--shards", "2", "--maxmemory", "64mb")
    try:
        old = [connection_on(srv, w, 2) for w in (0, 1)]
        assert old[0].config_set("requirepass", "n3w") is True
        assert old[1].config_get("requirepass") == {"requirepass": "n3w"}
        for w in (0, 1):
            fresh = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
            reply = request(fresh, encode_command([b"CLIENT", b"ID"]))
            fresh.close()
            assert reply == b"-NOAUTH Authentication required.\r\n"
            r = connection_on(srv, w, 2, password="n3w")
            assert r.ping() and r.config_get("requirepass") == {"requirepass": "n3w"}
            assert old[w].set(f"k{w}", "v") and old[w].get(f"k{w}") == b"v"  # still authenticated
        with pytest.raises(redis.ResponseError) as e:
            old[0].config_set("requirepass", "p" * (REQUIREPASS_BYTES_MAX + 1))
        assert str(e.value) == ("CONFIG SET failed (possibly related to argument 'requirepass') - "
                                f"password is longer than {REQUIREPASS_BYTES_MAX} bytes")
        assert old[0].config_set("requirepass", "q" * REQUIREPASS_BYTES_MAX) is True
        assert connection_on(srv, 1, 2, password="q" * REQUIREPASS_BYTES_MAX).ping()
        assert old[1].config_set("requirepass", "") is True
        for w in (0, 1):
            r = connection_on(srv, w, 2)  # no AUTH needed any more
            assert r.get(f"k{w}") == b"v"
            s = srv.raw()
            assert request(s, b"AUTH x\r\n").startswith(b"-ERR AUTH <password> called without any password")
    finally:
        assert srv.stop() == 0


def test_config_set_is_all_or_nothing() -> None:
    """A CONFIG SET whose last pair fails changes nothing, and the error names that pair."""
    srv = start_server("--shards", "1", "--maxmemory", "32mb")
    try:
        r = srv.client()
        with pytest.raises(redis.ResponseError) as e:
            r.execute_command("CONFIG", "SET", "hash-max-listpack-entries", "7", "maxmemory", "1")
        assert str(e.value) == ("CONFIG SET failed (possibly related to argument 'maxmemory') - "
                                "can't set immutable config")
        assert r.config_get("hash-max-listpack-entries") == {"hash-max-listpack-entries": "128"}
        with pytest.raises(redis.ResponseError) as e:
            r.execute_command("CONFIG", "SET", "requirepass", "pw", "set-max-intset-entries", "many")
        assert str(e.value) == ("CONFIG SET failed (possibly related to argument 'set-max-intset-entries') - "
                                "argument couldn't be parsed into an integer")
        with pytest.raises(redis.ResponseError) as e:
            r.execute_command("CONFIG", "SET", "hash-max-listpack-entries", "7", "hash-max-ziplist-entries", "8")
        assert str(e.value) == ("CONFIG SET failed (possibly related to argument 'hash-max-ziplist-entries') - "
                                "duplicate parameter")
        assert r.config_get("hash-max-listpack-entries") == {"hash-max-listpack-entries": "128"}
        assert r.config_get("set-max-intset-entries") == {"set-max-intset-entries": "512"}
        assert r.config_get("requirepass") == {"requirepass": ""}
        assert srv.client().ping()  # a new connection needs no password
        assert r.execute_command("CONFIG", "SET", "hash-max-listpack-entries", "7", "set-max-intset-entries",
                                 "9") == b"OK"
        assert r.config_get("*-entries")["set-max-intset-entries"] == "9"
    finally:
        assert srv.stop() == 0


# ---------------------------------------------------------------------- watchdog and restarts


def test_watchdog_kills_and_restarts_a_stopped_worker() -> None:
    """SIGSTOP one worker of two: the heartbeat stands still, the supervisor kills it within about
    watchdog-timeout-ms, says why, and a new worker serves that shard's keys."""
    with logged_server("--shards", "2", "--maxmemory", "64mb", "--watchdog-timeout-ms", "1000") as ls:
        srv = ls.srv
        r = connection_on(srv, 0, 2)
        r.mset({f"key{i}": f"v{i}" for i in range(200)})
        victim = worker_pids_by_id(srv)[1]
        os.kill(victim, signal.SIGSTOP)
        t0 = time.monotonic()
        try:
            wait_until(lambda: gone(victim), 8, "the stopped worker to be killed")
            killed_s = time.monotonic() - t0
            wait_until(lambda: info_int(r, "worker_restarts") == 1 and info_int(r, "workers_ready") == 2, 10,
                       "the worker's replacement to be ready")
        finally:
            if not gone(victim):
                os.kill(victim, signal.SIGCONT)
        assert 0.9 < killed_s < 4, killed_s
        new = worker_pids_by_id(srv)[1]
        assert new != victim
        assert r.mget([f"key{i}" for i in range(200)]) == [f"v{i}".encode() for i in range(200)]
        assert connection_on(srv, 1, 2).get("key7") == b"v7"  # the new worker serves clients too
        line = next(x for x in ls.log().splitlines() if f"pid {victim}" in x)
        assert re.search(r"worker 1 \(pid \d+\) heartbeat stalled (\d+) ms \(watchdog-timeout-ms 1000\): "
                         r"killed it with SIGKILL after [\d.]+ s; restarting it in 50 ms$", line), line
        assert info_int(r, "worker_restarts") == 1


def test_long_commands_and_rebuilds_are_not_killed() -> None:
    """With a 1 s watchdog, KEYS over 400k keys takes longer than that, and a restart's rebuild of
    the shard and a FLUSHDB of it take a good part of it: the store's loops beat, nobody is
    killed.  (Without the beats in the store's loops, KEYS alone gets the worker killed.)"""
    keys = 400_000
    with logged_server("--shards", "1", "--maxmemory", "128mb", "--watchdog-timeout-ms", "1000",
                       "--proto-max-bulk-len", "1mb", "--client-query-buffer-limit", "2mb") as ls:
        srv = ls.srv
        r = srv.client(socket_timeout=60)
        for start in range(0, keys, 20_000):  # small pipelines: no read event holds the loop for long
            pipe = r.pipeline(transaction=False)
            for first in range(start, start + 20_000, 1000):
                pipe.mset({f"k{i}": "v" for i in range(first, first + 1000)})
            pipe.execute()
        assert r.dbsize() == keys
        pid = srv.worker_pids()[0]
        t0 = time.monotonic()
        assert len(r.keys("*9*")) > 0
        keys_s = time.monotonic() - t0
        assert keys_s > 1.0, keys_s  # else this test proves nothing
        assert srv.worker_pids() == [pid]
        os.kill(pid, signal.SIGKILL)  # the next worker rebuilds 400k keys before it is ready
        wait_until(lambda: ready_workers(srv) == 1, 20, "the worker to come back")
        r = srv.client(socket_timeout=60)
        assert info_int(r, "worker_restarts") == 1 and r.dbsize() == keys, ls.log()
        pid = srv.worker_pids()[0]
        assert r.flushdb() is True
        assert r.dbsize() == 0
        assert info_int(r, "worker_restarts") == 1 and srv.worker_pids() == [pid]
        assert "stalled" not in ls.log()


def test_shard_locked_by_a_dead_coordinator_is_released() -> None:
    """Worker 0 coordinates a FLUSHDB whose long part runs on shard 1 (under worker 0's lock) and
    is killed meanwhile: once its replacement announces itself, shard 1 drops the dead holder's
    lock and serves everyone again.  (Worker 1 not answering a PING within 50 ms is taken as the
    sign that it runs its part; on a loaded machine the kill may come before the lock, and the
    test then proves less, but it never passes with a lock that stays held.)"""
    owners = slot_owners(2)
    tag = next(t for t in (f"t{i}" for i in range(100)) if owners[key_slot(t.encode())] == 1)
    mine = [k for k in (f"x{i}" for i in range(100)) if owners[key_slot(k.encode())] == 1][:3]
    keys = 300_000
    with logged_server("--shards", "2", "--maxmemory", "256mb") as ls:
        srv = ls.srv
        r1 = connection_on(srv, 1, 2, socket_timeout=30)
        for start in range(0, keys, 20_000):
            pipe = r1.pipeline(transaction=False)
            for first in range(start, start + 20_000, 1000):
                pipe.mset({f"{{{tag}}}k{i}": "v" for i in range(first, first + 1000)})
            pipe.execute()
        coordinator = worker_pids_by_id(srv)[0]
        probe = raw_on(srv, 1, 2)
        client0 = connection_on(srv, 0, 2)
        assert client0.connection is not None
        client0.connection.send_command("FLUSHDB")

        def shard1_busy() -> bool:
            """A PING to worker 1 gets no answer within 50 ms: it is running its flush part."""
            probe.sendall(b"PING\r\n")
            probe.settimeout(0.05)
            try:
                return probe.recv(100) == b""
            except TimeoutError:
                return True

        wait_until(shard1_busy, 10, "shard 1 to be flushing under worker 0's lock")
        os.kill(coordinator, signal.SIGKILL)
        for key in mine:
            assert r1.set(key, "after") is True
        assert r1.mget(mine) == [b"after"] * len(mine)
        assert r1.dbsize() in (len(mine), keys + len(mine))  # shard 1's part ran whole or not at all
        assert worker_pids_by_id(srv)[0] != coordinator


def test_restarts_back_off_while_a_worker_keeps_dying() -> None:
    """A worker killed again as soon as it appears: each restart is logged with its reason and a
    delay that doubles (50, 100, 200 ... ms), so the restarts are few, not one every 50 ms."""
    with logged_server("--shards", "1", "--maxmemory", "32mb") as ls:
        srv = ls.srv
        killed: set[int] = set()
        t0 = time.monotonic()
        while time.monotonic() - t0 < 4.0:
            for pid in srv.worker_pids():
                if pid not in killed:
                    killed.add(pid)
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.01)
        lines = [x for x in ls.log().splitlines() if "restarting it in" in x]
        delays = [int(m.group(1)) for m in (re.search(r"restarting it in (\d+) ms$", x) for x in lines) if m]
        assert all(re.search(r"worker 0 \(pid (\d+)\) was killed by SIGKILL after [\d.]+ s;", x) for x in lines), lines
        assert len(delays) == len(lines) and 4 <= len(lines) <= 7, lines
        assert delays == [50 * 2**i for i in range(len(delays))], delays
        wait_until(lambda: ready_workers(srv) == 1, 15, "the worker to come back once left alone")


# ---------------------------------------------------------------------- one instance per name and port


def test_a_second_instance_refuses_to_start() -> None:
    """Same --name and --port as a running server: exit 1 with one line naming the port, and the
    first keeps its segments and data; another name on the same port is refused too.  SIGTERM to
    the first removes its segments and its lock file."""
    port = free_port()
    name = f"skvsup{os.getpid()}"
    with logged_server("--shards", "2", "--maxmemory", "64mb", name=name, port=port) as ls:
        r = ls.srv.client()
        r.set("kept", "yes")
        before = shm_files(name, port)
        assert f"{name}-{port}.lock" in before
        for other in (name, name + "b"):
            proc, path = launch("--shards", "1", "--maxmemory", "32mb", name=other, port=port)
            try:
                assert proc.wait(30) == 1
                with open(path) as f:
                    lines = f.read().strip().splitlines()
            finally:
                os.unlink(path)
            assert len(lines) == 1 and str(port) in lines[0], lines
        assert shm_files(name, port) == before
        assert r.get("kept") == b"yes"
        assert all(ls.srv.client().get("kept") == b"yes" for _ in range(8))  # whichever worker answers
        assert ls.srv.stop() == 0
        assert shm_files(name, port) == []


# ---------------------------------------------------------------------- counters across a restart


def test_blocked_clients_and_client_ids_after_a_restart() -> None:
    """A worker killed while a client is blocked: INFO blocked_clients drops back to 0 (the new
    worker zeroes its row), and new clients get ids above every id the dead worker gave out."""
    srv = start_server("--shards", "1", "--maxmemory", "32mb")
    try:
        r = srv.client()
        blocked = srv.raw()
        blocked.sendall(encode_command([b"BLPOP", b"nothing", b"0"]))
        wait_until(lambda: info_int(r, "blocked_clients") == 1, 10, "the client to block")
        ids = [int(srv.client().client_id()) for _ in range(5)]
        most = max(ids + [int(r.client_id())])
        os.kill(srv.worker_pids()[0], signal.SIGKILL)
        assert blocked.recv(100) in (b"", b"-ERR shard worker restarted while the command was in flight; "
                                          b"it may or may not have run\r\n")
        wait_until(lambda: ready_workers(srv) == 1, 15, "the worker to come back")
        r = srv.client()
        assert info_int(r, "worker_restarts") == 1
        assert info_int(r, "blocked_clients") == 0
        assert int(r.client_id()) > most
        assert int(srv.client().client_id()) > most
    finally:
        assert srv.stop() == 0


def test_maxclients_is_never_exceeded_by_racing_workers() -> None:
    """Many connections at once over two workers: at most maxclients are admitted, the rest get
    Redis's error; at the limit one more is refused, and a freed slot is usable again."""
    limit = 6
    srv = start_server("--shards", "2", "--maxmemory", "64mb", "--maxclients", str(limit))
    try:
        socks: list[socket.socket] = []
        try:
            for _ in range(40):
                socks.append(socket.create_connection(("127.0.0.1", srv.port), timeout=10))
            for s in socks:
                s.sendall(b"PING\r\n")
            replies = [_read_line(s) for s in socks]
            admitted = [s for s, reply in zip(socks, replies, strict=True) if reply == b"+PONG\r\n"]
            refused = [reply for reply in replies if reply != b"+PONG\r\n"]
            assert 1 <= len(admitted) <= limit
            assert all(x in (b"-ERR max number of clients reached\r\n", b"") for x in refused), refused[:3]
            for s in socks:
                if s not in admitted:
                    s.close()
            socks = admitted
            # Fill to the limit exactly, then one past it.
            while len(socks) < limit:
                s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
                s.sendall(b"PING\r\n")
                reply = _read_line(s)
                if reply == b"+PONG\r\n":
                    socks.append(s)
                else:
                    s.close()
            extra = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
            assert _read_line(extra) == b"-ERR max number of clients reached\r\n"
            extra.close()
            assert request(socks[0], b"INFO clients\r\n").count(f"connected_clients:{limit}\r\n".encode()) == 1
        finally:
            for s in socks:
                s.close()
    finally:
        assert srv.stop() == 0


def _read_line(s: socket.socket) -> bytes:
    """One line of reply, or b"" if the server closed the connection first."""
    out = b""
    while not out.endswith(b"\r\n"):
        try:
            chunk = s.recv(1)
        except ConnectionResetError:
            return out
        if not chunk:
            return out
        out += chunk
    return out
