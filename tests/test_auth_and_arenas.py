"""AUTH with --requirepass, and the parse-arena pool when more big commands arrive than it holds."""

from __future__ import annotations

import threading

import pytest
import redis

from conftest import raw_roundtrip, start_server


def test_requirepass_auth_and_hello() -> None:
    srv = start_server("--shards", "2", "--maxmemory", "64mb", "--requirepass", "s3cret")
    try:
        s = srv.raw()
        assert raw_roundtrip(s, b"GET k\r\n") == b"-NOAUTH Authentication required.\r\n"
        assert raw_roundtrip(s, b"PING\r\n") == b"-NOAUTH Authentication required.\r\n"
        assert raw_roundtrip(s, b"AUTH wrong\r\n") == \
            b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"
        assert raw_roundtrip(s, b"HELLO 3\r\n").startswith(b"-NOAUTH HELLO must be called with the client already")
        assert raw_roundtrip(s, b"AUTH s3cret\r\n") == b"+OK\r\n"
        assert raw_roundtrip(s, b"SET k v\r\nGET k\r\n") == b"+OK\r\n$1\r\nv\r\n"
        s2 = srv.raw()
        reply = raw_roundtrip(s2, b"HELLO 3 AUTH default s3cret SETNAME app1\r\n")
        assert reply.startswith(b"%7\r\n")
        assert raw_roundtrip(s2, b"CLIENT GETNAME\r\n") == b"$4\r\napp1\r\n"
        assert raw_roundtrip(s2, b"AUTH other s3cret\r\n") == \
            b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"
        r = srv.client(password="s3cret")
        assert r.get("k") == b"v"
        with pytest.raises(redis.AuthenticationError):
            srv.client(password="nope").ping()
    finally:
        assert srv.stop() == 0


def test_auth_without_requirepass() -> None:
    srv = start_server("--shards", "1", "--maxmemory", "32mb")
    try:
        s = srv.raw()
        assert raw_roundtrip(s, b"AUTH x\r\n") == (
            b"-ERR AUTH <password> called without any password configured for the default user. "
            b"Are you sure your configuration is correct?\r\n")
        assert raw_roundtrip(s, b"PING\r\n") == b"+PONG\r\n"
    finally:
        assert srv.stop() == 0


def test_more_big_commands_than_parse_arenas_all_complete() -> None:
    """One parse arena per worker: big commands from several clients take turns, none fails."""
    srv = start_server("--shards", "1", "--maxmemory", "64mb", "--large-requests-max", "1",
                       "--proto-max-bulk-len", "2mb", "--client-query-buffer-limit", "3mb")
    try:
        value = b"z" * (2 * 1024 * 1024)
        errors: list[BaseException] = []

        def big_writer(i: int) -> None:
            try:
                r = srv.client(socket_timeout=30)
                for j in range(3):
                    assert r.set(f"big{i}:{j}", value) is True
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=big_writer, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, errors
        r = srv.client()
        assert all(r.get(f"big{i}:{j}") == value for i in range(4) for j in range(3))
    finally:
        assert srv.stop() == 0
