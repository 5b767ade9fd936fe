"""Every limit at the limit and one past it, exact errors, and the server intact afterwards."""

from __future__ import annotations

import subprocess
import sys

import pytest
import redis

from conftest import ROOT, Outcome, Server, exchange, start_server, wait_until


def boot_refusal(*args: str) -> tuple[int, str]:
    p = subprocess.run([sys.executable, "-m", "shardkv", *args], cwd=ROOT, capture_output=True, text=True,
                       timeout=60)
    return p.returncode, p.stderr.strip()


@pytest.mark.parametrize("args, reason", [
    (["--shards", "300"], "shards 300 is not in 1..256"),
    (["--maxmemory", "1mb", "--shards", "1"], "each of the 1 shards needs at least"),
    (["--maxmemory", "lots"], "cannot read memory amount 'lots'"),
    (["--nosuch", "1"], "unknown option 'nosuch'"),
    (["--port", "70000"], "port 70000 is not in 1..65535"),
    (["--maxmemory", "16mb", "--shards", "1"], "exceed half of a shard's heap"),
    (["--proto-max-bulk-len", "20mb", "--maxmemory", "1gb", "--shards", "1"],
     "client-query-buffer-limit 16777216 is below"),
    (["--maxmemory", "65gb", "--shards", "1"], "a shard holds at most 68719476736 (64 GiB)"),
    (["--maxmemory", "10000gb", "--shards", "200"], "/dev/shm has"),
])
def test_inconsistent_limits_refused_with_one_line(args: list[str], reason: str) -> None:
    code, err = boot_refusal(*args)
    assert code == 1
    assert reason in err and "\n" not in err, err


def test_config_file_and_flags(tmp_path: object) -> None:
    import pathlib
    conf = pathlib.Path(str(tmp_path)) / "shardkv.conf"
    conf.write_text("# a comment\nmaxmemory 64mb\nshards 2\ndatabases 4\n")
    out = subprocess.run([sys.executable, "-m", "shardkv", str(conf), "--databases=8", "--print-footprint"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    assert "2 x " in out.stdout and "shm_bytes=" in out.stdout


@pytest.fixture(scope="module")
def tight() -> object:
    srv = start_server("--shards", "2", "--maxmemory", "16mb", "--maxclients", "6",
                       "--proto-max-bulk-len", "1mb", "--client-query-buffer-limit", "2mb",
                       "--key-bytes-max", "100", "--args-max", "10", "--databases", "4")
    yield srv
    srv.stop()


def test_maxclients_at_and_past_the_limit(tight: Server) -> None:
    r = tight.client()
    before = r.info("stats")["rejected_connections"]
    connected = r.info("clients")["connected_clients"]
    socks = [tight.raw() for _ in range(6 - connected)]  # up to the limit of six
    for s in socks:
        assert exchange(s, b"PING\r\n") == Outcome(b"+PONG\r\n", "open")
    extra = tight.raw()
    assert exchange(extra, b"", replies=None) == Outcome(b"-ERR max number of clients reached\r\n", "closed")
    assert r.info("stats")["rejected_connections"] == before + 1
    socks.pop().close()
    wait_until(lambda: r.info("clients")["connected_clients"] == 5, what="the closed slot freed")
    again = tight.raw()
    assert exchange(again, b"PING\r\n") == Outcome(b"+PONG\r\n", "open")
    for s in socks + [again]:
        s.close()


def test_key_size_at_and_past_the_limit(tight: Server) -> None:
    r = tight.client()
    assert r.set("k" * 100, "v") is True
    assert r.get("k" * 100) == b"v"
    with pytest.raises(redis.ResponseError) as e:
        r.set("k" * 101, "v")
    assert str(e.value) == "key exceeds maximum allowed size (key-bytes-max)"
    with pytest.raises(redis.ResponseError):
        r.mset({"a": 1, "k" * 101: 2})
    assert r.exists("a") == 0  # nothing of the refused MSET was written


def test_value_size_at_and_past_the_limit(tight: Server) -> None:
    r = tight.client()
    value = b"x" * (1024 * 1024)
    assert r.set("big", value) is True
    assert r.get("big") == value
    s = tight.raw()
    assert exchange(s, b"*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n$%d\r\n" % (len(value) + 1), replies=None) == \
        Outcome(b"-ERR Protocol error: invalid bulk length\r\n", "closed")
    assert r.get("big") == value  # untouched
    r.delete("big")


def test_argument_count_at_and_past_the_limit(tight: Server) -> None:
    r = tight.client()
    assert r.execute_command("DEL", *[f"k{i}" for i in range(9)]) == 0  # 10 arguments
    s = tight.raw()
    args = [b"DEL"] + [b"k%d" % i for i in range(10)]  # 11 arguments
    data = b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)
    assert exchange(s, data, replies=None) == Outcome(b"-ERR Protocol error: invalid multibulk length\r\n", "closed")
    assert r.ping()


def test_query_buffer_limit_closes_the_connection(tight: Server) -> None:
    r = tight.client()
    chunk = b"y" * (1024 * 1024 - 100)
    s = tight.raw()
    # Three ~1 MiB arguments: each under proto-max-bulk-len, together over the 2 MiB limit.
    value = b"$%d\r\n%s\r\n" % (len(chunk), chunk)
    data = b"*7\r\n$4\r\nMSET\r\n" + b"".join(b"$1\r\n%s\r\n%s" % (k, value) for k in (b"a", b"b", b"c"))
    assert exchange(s, data, replies=None) == Outcome(b"", "closed")  # closed without a reply, as Redis does
    assert r.exists("a") == 0
    # A command just under the limit (using a parse arena) works.
    assert r.mset({"a": chunk, "b": chunk}) is True
    assert r.get("a") == chunk and r.get("b") == chunk


def test_databases_limit(tight: Server) -> None:
    r = tight.client()
    assert r.execute_command("SELECT", 3) is True
    with pytest.raises(redis.ResponseError) as e:
        r.execute_command("SELECT", 4)
    assert str(e.value) == "DB index is out of range"


@pytest.mark.parametrize("data, reply", [
    (b"*3000000000\r\n", b"-ERR Protocol error: invalid multibulk length\r\n"),
    (b"*3\r\n$2000000000\r\n", b"-ERR Protocol error: invalid bulk length\r\n"),
    (b"*3\r\n$-5\r\n", b"-ERR Protocol error: invalid bulk length\r\n"),
    (b"*1\r\nx\r\n", b"-ERR Protocol error: expected '$', got 'x'\r\n"),
    (b"*abc\r\n", b"-ERR Protocol error: invalid multibulk length\r\n"),
    (b"SET \"foo\r\n", b"-ERR Protocol error: unbalanced quotes in request\r\n"),
    (b"*1\r\n$" + b"1" * 70000, b"-ERR Protocol error: too big bulk count string\r\n"),
    (b"A" * 70000, b"-ERR Protocol error: too big inline request\r\n"),
    # Redis reads these counts with string2ll: no sign but '-', no space, no leading zero, no '_'.
    (b"*01\r\n$4\r\nPING\r\n", b"-ERR Protocol error: invalid multibulk length\r\n"),
    (b"*+1\r\n$4\r\nPING\r\n", b"-ERR Protocol error: invalid multibulk length\r\n"),
    (b"*-0\r\nPING\r\n", b"-ERR Protocol error: invalid multibulk length\r\n"),
    (b"*1_0\r\n", b"-ERR Protocol error: invalid multibulk length\r\n"),
    (b"*1\r\n$04\r\nPING\r\n", b"-ERR Protocol error: invalid bulk length\r\n"),
    (b"*1\r\n$+4\r\nPING\r\n", b"-ERR Protocol error: invalid bulk length\r\n"),
    (b"*1\r\n$ 4\r\nPING\r\n", b"-ERR Protocol error: invalid bulk length\r\n"),
    (b"*1\r\n$4 \r\nPING\r\n", b"-ERR Protocol error: invalid bulk length\r\n"),
    (b"*1\r\n$-0\r\n", b"-ERR Protocol error: invalid bulk length\r\n"),
    (b"*1\r\n$1_0\r\n", b"-ERR Protocol error: invalid bulk length\r\n"),
])
def test_protocol_errors_close_and_leave_the_server_intact(tight: Server, data: bytes, reply: bytes) -> None:
    r = tight.client()
    r.set("survivor", "yes")
    with tight.raw() as s:  # closed even when the server leaves it open, so as not to hold a client slot
        assert exchange(s, data, 5, replies=None) == Outcome(reply, "closed")
    assert r.get("survivor") == b"yes"


def test_empty_multibulk_is_ignored(tight: Server) -> None:
    s = tight.raw()
    assert exchange(s, b"*0\r\n*-10\r\nPING\r\n") == Outcome(b"+PONG\r\n", "open")
    assert exchange(s, b"*0\r\n*-1\r\n", 0.3) == Outcome(b"", "silent")  # no reply for them


def test_client_that_never_reads_is_bounded_then_closed() -> None:
    """A client pipelining big GETs without reading: the server stops running its commands while
    its replies wait, and closes it when they pass output-buffer-bytes-max; others are served."""
    srv = start_server("--shards", "1", "--maxmemory", "32mb", "--output-buffer-bytes-max", "4mb",
                       "--proto-max-bulk-len", "1mb", "--client-query-buffer-limit", "2mb")
    try:
        r = srv.client()
        r.set("big", b"z" * (1024 * 1024))
        greedy = srv.raw()
        greedy.setsockopt(__import__("socket").SOL_SOCKET, __import__("socket").SO_RCVBUF, 4096)
        greedy.sendall(b"GET big\r\n" * 20)  # 20 MiB of replies, never read
        wait_until(lambda: r.info("stats")["client_output_buffer_limit_disconnections"] > 0, 10,
                   "the client that never reads closed")
        assert r.info("stats")["client_output_buffer_limit_disconnections"] == 1
        assert r.get("big") == b"z" * (1024 * 1024)  # everyone else is served
        assert r.info("clients")["connected_clients"] == 1
    finally:
        assert srv.stop() == 0


def test_slow_reader_under_the_limit_gets_every_reply() -> None:
    """30 MB of replies to a client that waits before reading: more than the kernel's socket
    buffers hold, so the server pauses it, then resumes; every reply arrives, in order."""
    srv = start_server("--shards", "2", "--maxmemory", "64mb")
    try:
        import time
        r = srv.client()
        value = b"v" * 10000
        keys = [f"k{i}".encode() for i in range(50)]
        r.mset({k: value for k in keys})
        slow = srv.raw()
        slow.sendall(b"".join(b"GET %s\r\n" % keys[i % 50] for i in range(3000)))
        # A stimulus, not a wait for a condition: the client reads nothing for a second while
        # the replies pile up (CLIENT LIST reports omem=0, so the held-back bytes are not visible).
        time.sleep(1)
        expected = b"$10000\r\n" + value + b"\r\n"
        got = bytearray()
        slow.settimeout(10)
        while len(got) < 3000 * len(expected):
            chunk = slow.recv(1 << 20)
            assert chunk, "closed early"
            got += chunk
        assert got == expected * 3000
        assert r.info("stats")["client_output_buffer_limit_disconnections"] == 0
    finally:
        assert srv.stop() == 0
