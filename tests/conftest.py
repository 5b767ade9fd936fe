"""Start real shardkv servers (a process on a free port) for the integration tests."""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
import redis

from shardkv.protocol import ReplyError, read_reply
from shardkv.router.dispatch import key_slot

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    port: int
    args: list[str]
    proc: subprocess.Popen[bytes]
    name: str
    log: list[str] = field(default_factory=list)

    def client(self, **kw: object) -> redis.Redis:
        kw.setdefault("socket_timeout", 10)
        return redis.Redis(host="127.0.0.1", port=self.port, **kw)  # type: ignore[arg-type]

    def raw(self) -> socket.socket:
        s = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        return s

    def worker_pids(self) -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True).stdout
        return sorted(int(x) for x in out.split())

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def start_server(*args: str, wait: bool = True, env: dict[str, str] | None = None,
                 log: str | None = None) -> Server:
    """Start a server with these options (and environment variables added); `log`: a file its
    output goes to, else it is dropped."""
    port = free_port()
    name = f"skvt{os.getpid()}"
    cmd = [sys.executable, "-m", "shardkv", "--port", str(port), "--name", name, *args]
    with open(log or os.devnull, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, **(env or {})})
    srv = Server(port, list(args), proc, name)
    if wait:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                    reply = exchange(s, b"PING\r\nINFO server\r\n", 2, replies=2).data
                    if reply.startswith(b"-NOAUTH"):
                        break  # it serves; with a password the tests wait for themselves
                    shards = args[args.index("--shards") + 1] if "--shards" in args else None
                    if shards is None or b"workers_ready:%s\r\n" % shards.encode() in reply:
                        break  # every worker is listening and has touched its buffers
            except OSError:
                pass
            if time.monotonic() > deadline:
                srv.stop()
                raise RuntimeError("server did not start")
            time.sleep(0.05)
    return srv


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a raw exchange saw: the bytes that came back, and how it ended.

    state is "open" when every reply waited for arrived and the connection is still open,
    "closed" when the server closed it (EOF or reset), and "silent" when the deadline passed with
    the connection open and not everything waited for had come."""

    data: bytes
    state: str


def whole_replies(data: bytes) -> tuple[list[object], int]:
    """Decode the complete RESP replies at the front of data; also return how many bytes they use."""
    out: list[object] = []
    pos = 0
    while pos < len(data):
        if data[pos] == 45:  # '-': an error, whose text may quote bytes that are no UTF-8
            nl = data.find(b"\r\n", pos)
            if nl < 0:
                break
            out.append(ReplyError(data[pos + 1 : nl].decode("utf-8", "replace")))
            pos = nl + 2
            continue
        try:
            reply, end = read_reply(data, pos)
        except (IndexError, ValueError):
            break  # incomplete (or garbage, which then shows in Outcome.data)
        if end > len(data):
            break
        out.append(reply)
        pos = end
    return out, pos


def exchange(sock: socket.socket, data: bytes, timeout_s: float = 10, *, replies: int | None = 1) -> Outcome:
    """Send data, then wait for `replies` whole replies, or (replies=None) for the server to
    close the connection; give up at the deadline.  Never mistakes a hang for a close."""
    if data:
        sock.sendall(data)
    deadline = time.monotonic() + timeout_s
    got = b""
    seen, parsed = 0, 0  # whole replies so far, and the bytes they use
    while True:
        if replies is not None:
            more, used = whole_replies(got[parsed:])
            seen, parsed = seen + len(more), parsed + used
            if seen >= replies:
                return Outcome(got, "open")
        left = deadline - time.monotonic()
        if left <= 0:
            return Outcome(got, "silent")
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            return Outcome(got, "silent")
        except ConnectionResetError:
            return Outcome(got, "closed")
        if not chunk:
            return Outcome(got, "closed")
        got += chunk


def expect_replies(sock: socket.socket, data: bytes, n: int, timeout_s: float = 10) -> list[object]:
    """Send data and return exactly n decoded replies, with nothing after them; fail with what
    came back otherwise (fewer replies, a close, or bytes that are no whole reply)."""
    out = exchange(sock, data, timeout_s, replies=n)
    replies, used = whole_replies(out.data)
    assert out.state == "open" and len(replies) == n and used == len(out.data), (n, out)
    return replies


def expect_silence(sock: socket.socket, data: bytes, quiet_s: float = 0.3) -> None:
    """Send data; the server must neither reply nor close for quiet_s (it waits for more)."""
    assert exchange(sock, data, quiet_s, replies=1) == Outcome(b"", "silent")


def hops_drained(server: Server, workers: int = 2) -> None:
    """Return once every command that any worker had sent to another shard has run there: from a
    client on each worker, a command on keys of every shard travels behind them on the same FIFO
    rings (the keys "a" and "b" are on different shards of two)."""
    by_worker: dict[int, redis.Redis] = {}
    for _ in range(200):
        c = server.client(single_connection_client=True)
        if by_worker.setdefault(int(c.info("server")["worker_id"]), c) is not c:
            c.close()  # a worker already reached: give the client slot back at once
        if len(by_worker) == workers:
            break
    assert len(by_worker) == workers, by_worker
    for c in by_worker.values():
        c.exists("a", "b")
        c.close()


def wait_until(condition: Callable[[], object], timeout_s: float = 10, what: str = "condition") -> None:
    """Poll condition() until it is true; fail when the deadline passes first."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.01)


def key_on(shard: int, prefix: str, shards: int = 2) -> str:
    """A key name whose hash slot the given shard owns (contiguous slot ranges)."""
    i = 0
    while key_slot(f"{prefix}{i}".encode()) * shards // 16384 != shard:
        i += 1
    return f"{prefix}{i}"


def client_on(server: Server, worker: int, workers: int = 2, **kw: object) -> redis.Redis:
    """A single-connection client that a given worker holds (SO_REUSEPORT spreads them by hash)."""
    for _ in range(200):
        r = server.client(single_connection_client=True, **kw)
        if int(r.client_id()) % workers == worker:  # type: ignore[arg-type]
            return r
        r.close()
    raise AssertionError(f"no connection landed on worker {worker}")


def mget_after_restart(r: redis.Redis, keys: list[str]) -> list[object]:
    """MGET once the server answers it: a read sent while a worker comes back may be answered
    "restarted" (and nothing of it ran), which is the only error accepted here."""
    got: list[object] = []

    def read() -> bool:
        try:
            got[:] = r.mget(keys)  # type: ignore[arg-type]
        except redis.ResponseError as e:
            assert "restarted" in str(e)
            return False
        return True

    wait_until(read, 20, "the keys to be readable")
    return got


def wait_blocked(r: redis.Redis, n: int, timeout_s: float = 10) -> None:
    """Wait until INFO reports exactly n blocked clients."""
    wait_until(lambda: int(r.info("clients")["blocked_clients"]) == n, timeout_s, f"{n} blocked clients")


class Crew:
    """Threads working against a server for a test: each counts what it did with `done`, and an
    exception escaping a thread is kept for the test, which `finish` fails with.  Threads loop
    while `running()`; a thread still alive after `finish`'s join is a hang, reported as such."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.errors: list[str] = []
        self.counts: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def start(self, target: Callable[..., None], *args: object, name: str | None = None) -> None:
        label = name or f"{target.__name__}{args}"

        def body() -> None:
            try:
                target(*args)
            except BaseException:  # the test fails with it in finish()
                with self._lock:
                    self.errors.append(f"{label}: {traceback.format_exc()}")
                self.stop.set()

        thread = threading.Thread(target=body, name=label, daemon=True)
        self._threads.append(thread)
        thread.start()

    def running(self) -> bool:
        return not self.stop.is_set()

    def done(self, what: str, n: int = 1) -> None:
        with self._lock:
            self.counts[what] += n

    def count(self, what: str) -> int:
        with self._lock:
            return self.counts[what]

    def wait_for(self, what: str, n: int, timeout_s: float = 30) -> None:
        """Wait until the threads together have done n of `what` (or one of them failed)."""
        wait_until(lambda: self.count(what) >= n or self.errors, timeout_s, f"{n} x {what}")
        self.check()

    def join(self, timeout_s: float = 60) -> None:
        """Wait for threads that end by themselves, without asking them to stop."""
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        hung = [t.name for t in self._threads if t.is_alive()]
        assert not hung, f"threads still running after {timeout_s} s: {hung}"
        self.check()

    def finish(self, timeout_s: float = 60) -> collections.Counter[str]:
        self.stop.set()
        self.join(timeout_s)
        return self.counts

    def check(self) -> None:
        assert not self.errors, "\n".join(self.errors[:3])


@pytest.fixture(scope="module")
def server2() -> Iterator[Server]:
    """Two shards: half the keys hop to the other worker."""
    srv = start_server("--shards", "2", "--maxmemory", "64mb", "--maxclients", "64")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def server1() -> Iterator[Server]:
    srv = start_server("--shards", "1", "--maxmemory", "32mb", "--maxclients", "64")
    yield srv
    srv.stop()


@pytest.fixture(params=["server1", "server2"])
def server(request: pytest.FixtureRequest) -> Server:
    srv: Server = request.getfixturevalue(request.param)
    srv.client().flushall()
    return srv


def call(r: redis.Redis, *args: object) -> object:
    """Send one command and return the reply as decoded by redis-py's parser, with no
    command-specific post-processing (redis-py reshapes some replies, e.g. COMMAND's)."""
    conn = r.connection_pool.get_connection()
    try:
        conn.send_command(*args)
        return conn.read_response()
    finally:
        r.connection_pool.release(conn)


def request(sock: socket.socket, data: bytes, timeout_s: float = 10) -> bytes:
    """Send one command and return its one whole RESP reply, as bytes (however it is split);
    fail on a close, on silence, or on more than one reply."""
    out = exchange(sock, data, timeout_s, replies=1)
    replies, used = whole_replies(out.data)
    assert out.state == "open" and len(replies) == 1 and used == len(out.data), (data, out)
    return out.data


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


@contextlib.contextmanager
def reference_redis() -> Iterator[int]:
    """redis-server on a free port (no persistence) to compare replies with; its port, once it
    accepts connections.  Stopped on the way out."""
    port = free_port()
    ref = subprocess.Popen(["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"],
                           stdout=subprocess.DEVNULL)
    try:
        wait_until(lambda: _accepts(port), 10, "redis-server to start")
        yield port
    finally:
        ref.terminate()
        ref.wait(10)


@pytest.fixture(scope="module")
def pair() -> Iterator[tuple[int, Server]]:
    """redis-server (its port) beside shardkv --shards 2, for the differential tests."""
    srv = start_server("--shards", "2", "--maxmemory", "64mb")
    with reference_redis() as port:
        yield port, srv
    srv.stop()
