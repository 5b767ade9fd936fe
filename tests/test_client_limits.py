"""What one client can cost the others: Redis's limits for clients that have not authenticated,
a minimum rate for a command holding a parse arena, Redis's idle `timeout`, and one budget for
the unsent replies of all the clients of a worker."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from conftest import Server, exchange, expect_replies, start_server
from shardkv.protocol import encode_command


def recv_until_closed(sock: socket.socket, timeout_s: float) -> bytes:
    """Everything the server sends until it closes the connection; silence until the deadline fails."""
    out = exchange(sock, b"", timeout_s, replies=None)
    assert out.state == "closed", out
    return out.data


def reply_of(sock: socket.socket, data: bytes, timeout_s: float = 10) -> object:
    return expect_replies(sock, data, 1, timeout_s)[0]


@pytest.fixture(scope="module")
def locked() -> Iterator[Server]:
    s = start_server("--shards", "2", "--maxmemory", "64mb", "--requirepass", "pw")
    yield s
    s.stop()


def test_unauthenticated_clients_get_redis_smaller_limits(locked: Server) -> None:
    ten = encode_command([b"MGET"] + [b"k"] * 9)
    with locked.raw() as sock:  # at the limits: an ordinary NOAUTH
        assert str(reply_of(sock, ten)) == "NOAUTH Authentication required."
        big = encode_command([b"ECHO", b"x" * 16384])
        assert str(reply_of(sock, big)) == "NOAUTH Authentication required."
    with locked.raw() as sock:
        sock.sendall(b"*11\r\n")
        assert recv_until_closed(sock, 5) == b"-ERR Protocol error: unauthenticated multibulk length\r\n"
    with locked.raw() as sock:
        sock.sendall(b"*2\r\n$4\r\nECHO\r\n$16385\r\n")
        assert recv_until_closed(sock, 5) == b"-ERR Protocol error: unauthenticated bulk length\r\n"


def test_after_auth_in_the_same_pipeline_the_full_limits_apply(locked: Server) -> None:
    with locked.raw() as sock:
        sock.sendall(encode_command([b"AUTH", b"pw"]) + encode_command([b"MSET"] + [b"k", b"v" * 20000] * 6)
                     + encode_command([b"STRLEN", b"k"]))
        sock.settimeout(10)
        buf = b""
        while buf.count(b"\r\n") < 3:
            chunk = sock.recv(65536)
            assert chunk, buf
            buf += chunk
        assert buf == b"+OK\r\n+OK\r\n:20000\r\n"


def test_a_stalled_large_command_loses_its_arena_and_others_go_on() -> None:
    s = start_server("--shards", "1", "--maxmemory", "32mb", "--large-requests-max", "1",
                     "--large-request-bytes-per-s-min", "64kb")
    try:
        value = b"v" * 200_000
        frame = encode_command([b"SET", b"big", value])
        staller = s.raw()
        staller.sendall(frame[: len(frame) // 2])  # half a command bigger than a connection buffer
        with s.raw() as other:
            t0 = time.monotonic()
            assert reply_of(other, frame, 15) == b"OK"  # waits for the arena, then gets it
            waited_s = time.monotonic() - t0
        assert recv_until_closed(staller, 10) == b""
        staller.close()
        assert waited_s < 10
        with s.raw() as steady:  # a large command that keeps coming at a good rate is served
            for i in range(0, len(frame), 20_000):
                steady.sendall(frame[i : i + 20_000])
                time.sleep(0.02)  # pacing the sender: 1 MB/s, well above the minimum
            assert reply_of(steady, encode_command([b"STRLEN", b"big"])) is not None
    finally:
        s.stop()


def test_idle_clients_are_closed_after_timeout_but_blocked_ones_wait() -> None:
    s = start_server("--shards", "2", "--maxmemory", "64mb", "--timeout", "1")
    try:
        r = s.client()
        assert r.config_get("timeout") == {"timeout": "1"}
        idle = s.raw()
        assert reply_of(idle, b"PING\r\n") == b"PONG"
        blocked = s.raw()
        blocked.sendall(encode_command([b"BLPOP", b"nothing", b"4"]))
        t0 = time.monotonic()
        assert recv_until_closed(idle, 10) == b""
        assert time.monotonic() - t0 < 5
        assert reply_of(blocked, b"", 10) is None  # its own timeout, not the idle one
        blocked.close()
        r.config_set("timeout", 0)
        assert r.config_get("timeout") == {"timeout": "0"}
    finally:
        s.stop()


def test_unsent_replies_of_a_worker_are_bounded() -> None:
    """Three clients that do not read, each under its own limit, together over the worker's."""
    s = start_server("--shards", "1", "--maxmemory", "64mb", "--output-buffer-bytes-max", "16mb",
                     "--output-bytes-per-worker-max", "24mb")
    try:
        r = s.client()
        r.set("v", b"x" * (1 << 20))
        readers = []
        for _ in range(3):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(("127.0.0.1", s.port))
            sock.sendall(encode_command([b"GET", b"v"]) * 15)
            readers.append(sock)
        deadline = time.monotonic() + 15
        while int(r.info("stats")["client_output_buffer_limit_disconnections"]) < 1:
            assert time.monotonic() < deadline, "no client was closed"
            time.sleep(0.05)
        assert r.ping()
        whole = 15 * (len(b"$%d\r\n" % (1 << 20)) + (1 << 20) + 2)
        closed = 0
        for sock in readers:  # read each: the one closed ends early, the others get every reply
            sock.settimeout(10)
            got = 0
            while got < whole:
                try:
                    chunk = sock.recv(1 << 20)
                except ConnectionResetError:
                    chunk = b""
                if not chunk:
                    closed += 1
                    break
                got += len(chunk)
            sock.close()
        assert closed >= 1
    finally:
        s.stop()


def test_removing_the_password_lets_waiting_clients_in() -> None:
    """Redis asks for AUTH only while a password is set: a connection that never authenticated
    is let in once `CONFIG SET requirepass ""` removed it."""
    s = start_server("--shards", "2", "--maxmemory", "64mb", "--requirepass", "pw")
    try:
        waiting = [s.raw() for _ in range(4)]  # on both workers, most likely
        for sock in waiting:
            assert str(reply_of(sock, b"PING\r\n")) == "NOAUTH Authentication required."
        admin = s.client(password="pw")
        admin.config_set("requirepass", "")
        for sock in waiting:
            assert reply_of(sock, b"PING\r\n") == b"PONG"
            assert reply_of(sock, encode_command([b"MGET"] + [b"k"] * 20)) == [None] * 20  # full limits
            sock.close()
    finally:
        s.stop()


def test_a_large_command_with_a_short_pause_is_served() -> None:
    """Held to the minimum rate only over a whole second with the arena: a 50 KB command that
    arrives in two parts 0.6 s apart is served (Redis's own list-3 test sends such commands)."""
    s = start_server("--shards", "1", "--maxmemory", "32mb", "--large-request-bytes-per-s-min", "64kb")
    try:
        frame = encode_command([b"RPUSH", b"key", b"b" * 50_000])
        with s.raw() as sock:
            for i in range(3):
                sock.sendall(frame[:40_000])
                time.sleep(0.6)  # pacing the sender: the pause is the stimulus
                assert reply_of(sock, frame[40_000:]) == i + 1
    finally:
        s.stop()
