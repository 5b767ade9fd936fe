"""Start real shardkv servers (a process on a free port) for the integration tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
import redis

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


def start_server(*args: str, wait: bool = True) -> Server:
    port = free_port()
    name = f"skvt{os.getpid()}"
    cmd = [sys.executable, "-m", "shardkv", "--port", str(port), "--name", name, *args]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    srv = Server(port, list(args), proc, name)
    if wait:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                    s.sendall(b"PING\r\nINFO server\r\n")
                    time.sleep(0.02)
                    reply = s.recv(65536)
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


def raw_roundtrip(sock: socket.socket, data: bytes, expect_bytes: int | None = None, wait_s: float = 0.5) -> bytes:
    """Send bytes and collect what comes back until the reply stops (or the connection closes)."""
    sock.sendall(data)
    sock.settimeout(wait_s)
    out = b""
    try:
        while expect_bytes is None or len(out) < expect_bytes:
            chunk = sock.recv(65536)
            if not chunk:
                break
            out += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return out


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
    """Send one command and return exactly one whole RESP reply (however it is split)."""
    from shardkv.protocol import read_reply

    sock.sendall(data)
    sock.settimeout(timeout_s)
    buf = b""
    while True:
        try:
            _, end = read_reply(buf)
            if end == len(buf):
                return buf
            assert end > len(buf), "more than one reply"
        except (IndexError, ValueError):
            pass
        chunk = sock.recv(65536)
        if not chunk:
            return buf
        buf += chunk
