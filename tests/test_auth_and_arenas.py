"""AUTH with --requirepass, and the parse-arena pool when more big commands arrive than it holds."""

from __future__ import annotations

import pytest
import redis

from conftest import Crew, Outcome, exchange, start_server


def test_requirepass_auth_and_hello() -> None:
    srv = start_server("--shards", "2", "--maxmemory", "64mb", "--requirepass", "s3cret")
    try:
        s = srv.raw()
        assert exchange(s, b"GET k\r\n") == Outcome(b"-NOAUTH Authentication required.\r\n", "open")
        assert exchange(s, b"PING\r\n") == Outcome(b"-NOAUTH Authentication required.\r\n", "open")
        assert exchange(s, b"AUTH wrong\r\n") == \
            Outcome(b"-WRONGPASS invalid username-password pair or user is disabled.\r\n", "open")
        out = exchange(s, b"HELLO 3\r\n")
        assert out.state == "open" and out.data.startswith(b"-NOAUTH HELLO must be called with the client already")
        assert exchange(s, b"AUTH s3cret\r\n") == Outcome(b"+OK\r\n", "open")
        assert exchange(s, b"SET k v\r\nGET k\r\n", replies=2) == Outcome(b"+OK\r\n$1\r\nv\r\n", "open")
        s2 = srv.raw()
        out = exchange(s2, b"HELLO 3 AUTH default s3cret SETNAME app1\r\n")
        assert out.state == "open" and out.data.startswith(b"%7\r\n")
        assert exchange(s2, b"CLIENT GETNAME\r\n") == Outcome(b"$4\r\napp1\r\n", "open")
        assert exchange(s2, b"AUTH other s3cret\r\n") == \
            Outcome(b"-WRONGPASS invalid username-password pair or user is disabled.\r\n", "open")
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
        assert exchange(s, b"AUTH x\r\n") == Outcome(
            b"-ERR AUTH <password> called without any password configured for the default user. "
            b"Are you sure your configuration is correct?\r\n", "open")
        assert exchange(s, b"PING\r\n") == Outcome(b"+PONG\r\n", "open")
    finally:
        assert srv.stop() == 0


def test_more_big_commands_than_parse_arenas_all_complete() -> None:
    """One parse arena per worker: big commands from several clients take turns, none fails."""
    srv = start_server("--shards", "1", "--maxmemory", "64mb", "--large-requests-max", "1",
                       "--proto-max-bulk-len", "2mb", "--client-query-buffer-limit", "3mb")
    try:
        value = b"z" * (2 * 1024 * 1024)
        crew = Crew()

        def big_writer(i: int) -> None:
            r = srv.client(socket_timeout=30)
            for j in range(3):
                assert r.set(f"big{i}:{j}", value) is True
                crew.done("sets")

        for i in range(4):
            crew.start(big_writer, i)
        crew.join(60)
        assert crew.count("sets") == 12
        r = srv.client()
        assert all(r.get(f"big{i}:{j}") == value for i in range(4) for j in range(3))
    finally:
        assert srv.stop() == 0
