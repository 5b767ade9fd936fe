"""Request framing as strict as Redis's, COMMAND's ACL categories and flags, SHUTDOWN's
modifiers, ROLE and WAIT -- each checked byte for byte against what redis-server 7.0.15 sends.

The parser tests run on `parse_requests` (compiled: resp.pyx) with no sockets.  The live tests run the same bytes
against a shardkv server and, where redis-server is installed (CI installs it), against Redis
itself, so that every expected reply below is one Redis really gives.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator

import pytest

from conftest import Server, free_port, request, start_server
from shardkv import protocol
from shardkv.commands.table import ACL_CATEGORIES, public_commands
from shardkv.protocol import encode_command, read_reply

HAVE_REDIS = shutil.which("redis-server") is not None
NO_REDIS = "redis-server is not installed: nothing to compare with (CI installs it)"
EOF_DEADLINE_S = 5.0


# ---------------------------------------------------------------------- helpers


def read_until_eof(sock: socket.socket, deadline_s: float = EOF_DEADLINE_S) -> bytes:
    """Everything the server sends until it closes the connection; no close in time fails."""
    out = b""
    end = time.monotonic() + deadline_s
    while True:
        left_s = end - time.monotonic()
        if left_s <= 0:
            raise AssertionError(f"connection still open after {deadline_s}s; got {out!r}")
        sock.settimeout(left_s)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            raise AssertionError(f"connection still open after {deadline_s}s; got {out!r}") from None
        except ConnectionResetError:
            return out  # closed, abruptly: the bytes before still count
        if not chunk:
            return out
        out += chunk


def send_and_close_wait(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        return read_until_eof(s)


def start_redis(*args: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--save", "", "--appendonly", "no", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, port
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("redis-server did not start") from None
            time.sleep(0.05)


def stop_redis(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        proc.wait(10)


def call(port: int, *argv: bytes | str) -> object:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        raw = request(s, encode_command([a.encode() if isinstance(a, str) else a for a in argv]))
    return read_reply(raw)[0]


@pytest.fixture(scope="module")
def skv(server1: Server) -> Server:
    return server1


@pytest.fixture(scope="module")
def redis_port() -> Iterator[int]:
    if not HAVE_REDIS:
        pytest.skip(NO_REDIS)
    proc, port = start_redis()
    yield port
    stop_redis(proc)


# ---------------------------------------------------------------------- 1. framing

INVALID_MBULK = "invalid multibulk length"
INVALID_BULK = "invalid bulk length"
PING = encode_command([b"PING"])

# (request, the commands Redis runs from it, the protocol error it then closes with or None).
# Lengths follow Redis's string2ll: no '+', no spaces, no '_', no leading zeros, no "-0"; a
# multibulk count <= 0 is an empty command, skipped; a bulk length must be >= 0.  A header line
# ends at its first CR and the byte after it, whatever it is; a NUL byte before the CR hides the
# CR (Redis finds it with strchr), so Redis waits for more.
FRAMING_CASES: list[tuple[bytes, list[list[bytes]], str | None]] = [
    (b"*+1\r\n$4\r\nPING\r\n", [], INVALID_MBULK),
    (b"*1\r\n$ 4\r\nPING\r\n", [], INVALID_BULK),
    (b"*1\r\n$0_4\r\nPING\r\n", [], INVALID_BULK),
    (b"*01\r\n$4\r\nPING\r\n", [], INVALID_MBULK),
    (b"*1\r\n$-0\r\n", [], INVALID_BULK),
    (b"*1\r\n$-1\r\n", [], INVALID_BULK),
    (b"*1\r\n$04\r\nPING\r\n", [], INVALID_BULK),
    (b"*1\r\n$+4\r\nPING\r\n", [], INVALID_BULK),
    (b"*1\r\n$4 \r\nPING\r\n", [], INVALID_BULK),
    (b"*1\r\n$\r\n", [], INVALID_BULK),
    (b"*-0\r\n" + PING, [], INVALID_MBULK),
    (b"*1 \r\n" + PING[4:], [], INVALID_MBULK),
    (b"* 1\r\n" + PING[4:], [], INVALID_MBULK),
    (b"*\r\n", [], INVALID_MBULK),
    (b"*0x1\r\n", [], INVALID_MBULK),
    (b"*2147483648\r\n", [], INVALID_MBULK),  # above INT_MAX
    (b"*-9223372036854775809\r\n" + PING, [], INVALID_MBULK),  # below LLONG_MIN
    (b"*-1\r\n" + PING, [[b"PING"]], None),
    (b"*0\r\n" + PING, [[b"PING"]], None),
    (b"*-5\r\n" + PING, [[b"PING"]], None),
    (b"*-9223372036854775808\r\n" + PING, [[b"PING"]], None),
    (b"*1\rX$4\r\nPING\r\n", [[b"PING"]], None),  # any byte after the CR ends the line
    (b"*1\r\n$4\rXPING\r\n", [[b"PING"]], None),
    (b"*1\r\n$4\r\nPINGxx", [[b"PING"]], None),  # the two bytes after the data are not checked
    (b"*1\r\nX\r\n", [], "expected '$', got 'X'"),
    (b"*1\r\nX", [], None),  # Redis waits for the whole line before it looks at the '$'
    (b"*1\x00\r\n" + PING[4:], [], None),  # the NUL hides the CR: Redis waits
    (b"*1\r\n$4\x00\r\nPING\r\n", [], None),
    (b"*1\r", [], None),
]


def _parse(data: bytes, args_max: int = 1 << 40) -> protocol.ParseResult:
    return protocol.parse_requests(data, len(data), args_max, 1 << 40)


@pytest.mark.parametrize(("data", "argvs", "why"), FRAMING_CASES, ids=[repr(c[0])[:40] for c in FRAMING_CASES])
def test_parse_requests_takes_exactly_what_redis_takes(data: bytes, argvs: list[list[bytes]], why: str | None) -> None:
    """The parser runs the commands Redis runs from these bytes and then stops with Redis's error
    (or waits, with no error, where Redis waits), alone and behind a pipeline of GETs."""
    prefix = b"".join(encode_command([b"GET", b"k%d" % i]) for i in range(16))
    for label, result, skipped in [
        ("alone", _parse(data), 0),
        ("behind 16 GETs", _parse(prefix + data), 16),
    ]:
        got = [argv for argv, _, _ in result.requests][skipped:]
        assert got == argvs, label
        assert (result.error.why if result.error else None) == why, label
        if why is not None:  # nothing of the refused command is consumed: its reply comes last
            assert result.consumed == (len(prefix) if skipped else 0) + sum(
                end - start for _, start, end in result.requests[skipped:]), label


def test_lengths_are_checked_against_the_limits_too() -> None:
    """shardkv's own limits (args-max, proto-max-bulk-len) refuse with Redis's texts."""
    assert _parse(b"*2147483647\r\n").error is None  # INT_MAX: Redis waits for the arguments
    many = _parse(b"*70000\r\n", args_max=65536)
    assert many.error is not None and many.error.why == INVALID_MBULK
    big = protocol.parse_requests(b"*1\r\n$1025\r\n", 11, 65536, 1024)
    assert big.error is not None and big.error.why == INVALID_BULK


def test_string2ll_is_redis_strict() -> None:
    good = {b"0": 0, b"1": 1, b"-1": -1, b"9223372036854775807": (1 << 63) - 1,
            b"-9223372036854775808": -(1 << 63)}
    bad = [b"", b"-", b"+1", b" 1", b"1 ", b"0_4", b"01", b"-0", b"00", b"1.0", b"0x1", b"1e3",
           b"9223372036854775808", b"-9223372036854775809", b"1" * 25, b"\xd9\xa1", b"1\n"]
    assert {t: protocol.string2ll(t) for t in good} == good
    assert [t for t in bad if protocol.string2ll(t) is not None] == []


def test_a_pipeline_parses_whole_with_values_holding_crlf() -> None:
    """Values of every size up to 7 KiB, holding CR, LF and NUL bytes, come back as sent."""
    argvs = [[b"SET", b"key:%d" % i, (b"v\r\n\0" * i)[: i * 37]] for i in range(200)]
    data = b"".join(encode_command(argv) for argv in argvs)
    result = _parse(data)
    assert [argv for argv, _, _ in result.requests] == argvs
    assert (result.consumed, result.needed, result.error) == (len(data), 0, None)


LIVE_FRAMING_CASES = [
    (b"*+1\r\n$4\r\nPING\r\n", b"-ERR Protocol error: invalid multibulk length\r\n"),
    (b"*1\r\n$ 4\r\nPING\r\n", b"-ERR Protocol error: invalid bulk length\r\n"),
    (b"*1\r\n$0_4\r\nPING\r\n", b"-ERR Protocol error: invalid bulk length\r\n"),
    (b"*01\r\n$4\r\nPING\r\n", b"-ERR Protocol error: invalid multibulk length\r\n"),
    (b"*1\r\n$-0\r\n", b"-ERR Protocol error: invalid bulk length\r\n"),
    (b"*1\r\n$-1\r\n", b"-ERR Protocol error: invalid bulk length\r\n"),
    (b"*-0\r\n" + PING, b"-ERR Protocol error: invalid multibulk length\r\n"),
    (PING + b"*-1\r\n" + PING + b"*1\r\n$04\r\nPING\r\n",
     b"+PONG\r\n+PONG\r\n-ERR Protocol error: invalid bulk length\r\n"),
]


@pytest.mark.parametrize(("data", "reply"), LIVE_FRAMING_CASES, ids=[repr(c[0])[:40] for c in LIVE_FRAMING_CASES])
def test_live_bad_lengths_get_the_error_and_a_close(skv: Server, data: bytes, reply: bytes) -> None:
    """shardkv answers each bad length with Redis's error and closes the connection (EOF, not
    a timeout)."""
    assert send_and_close_wait(skv.port, data) == reply


@pytest.mark.skipif(not HAVE_REDIS, reason=NO_REDIS)
@pytest.mark.parametrize(("data", "reply"), LIVE_FRAMING_CASES, ids=[repr(c[0])[:40] for c in LIVE_FRAMING_CASES])
def test_live_bad_lengths_are_what_redis_does(redis_port: int, data: bytes, reply: bytes) -> None:
    """The expectations above are redis-server's own replies and closes."""
    assert send_and_close_wait(redis_port, data) == reply


# ---------------------------------------------------------------------- 2. COMMAND: categories, flags

# Flags shardkv reports differently from Redis 7.0.15, and why they stay so for now:
#   (flags only shardkv reports, flags only Redis reports).
KNOWN_FLAG_DIFFERENCES: dict[str, tuple[set[str], set[str]]] = {
    # connection.py declares neither; no_auth would also change who may run them unauthenticated
    "auth": (set(), {"no_auth", "allow_busy"}),
    "hello": (set(), {"no_auth", "allow_busy"}),
    "quit": (set(), {"allow_busy", "loading", "no_auth", "noscript", "stale"}),
    "echo": (set(), {"loading", "stale"}),
    "select": (set(), {"loading", "stale"}),
    # lists.py declares no noscript on the blocking pops (shardkv has no scripting yet)
    "blpop": (set(), {"noscript"}),
    "brpop": (set(), {"noscript"}),
    "brpoplpush": (set(), {"noscript"}),
    "blmove": (set(), {"noscript"}),
    # containers: here the flags stand for the subcommands' (readonly makes OBJECT ENCODING and
    # MEMORY USAGE count keyspace hits); Redis's container rows have none
    "object": ({"readonly"}, set()),
    "memory": ({"readonly"}, set()),
}


def _infos(port: int, names: list[bytes]) -> dict[bytes, list[object]]:
    infos = call(port, "COMMAND", "INFO", *names)
    assert isinstance(infos, list)
    return dict(zip(names, infos, strict=True))


def test_categories_are_derived_as_redis_derives_them() -> None:
    """No socket: PING is @fast only (it was @fast and @slow), admin commands are @admin and
    @dangerous, blocking ones @blocking, each type command its type's category."""
    cats = {c.name: c.acl_categories for c in public_commands()}
    assert cats["ping"] == ("fast", "connection")
    assert cats["get"] == ("read", "string", "fast")
    assert cats["blpop"] == ("write", "list", "slow", "blocking")
    assert cats["setbit"] == ("write", "bitmap", "slow")
    assert cats["shutdown"] == ("admin", "slow", "dangerous")
    assert cats["keys"] == ("keyspace", "read", "slow", "dangerous")
    assert cats["role"] == ("admin", "fast", "dangerous")
    assert cats["wait"] == ("slow", "connection")
    assert cats["config"] == ("slow",)
    for name, found in cats.items():
        assert ("fast" in found) != ("slow" in found), name
        assert list(found) == [c for c in ACL_CATEGORIES if c in found], f"{name}: not in Redis's order"


def test_command_list_filterby_aclcat_agrees_with_command_info(skv: Server) -> None:
    names = _commands(skv.port)
    infos = _infos(skv.port, names)
    for category in ACL_CATEGORIES:
        listed = call(skv.port, "COMMAND", "LIST", "FILTERBY", "ACLCAT", category.upper())
        assert isinstance(listed, list)
        expected = [n for n in names if f"@{category}".encode() in infos[n][6]]  # type: ignore[operator]
        assert sorted(n for n in listed if b"|" not in n) == sorted(expected), category


def _commands(port: int) -> list[bytes]:
    """COMMAND LIST without the subcommands ("config|get") it also lists."""
    names = call(port, "COMMAND", "LIST")
    assert isinstance(names, list)
    return [n for n in names if b"|" not in n]


def test_command_list_names_subcommands_and_getkeysandflags(skv: Server) -> None:
    names = call(skv.port, "COMMAND", "LIST")
    assert isinstance(names, list) and b"client|list" in names and b"config|get" in names
    assert call(skv.port, "COMMAND", "LIST", "FILTERBY", "PATTERN", "config|*re*") == [
        b"config|resetstat", b"config|rewrite"]
    assert b"script|kill" in call(skv.port, "COMMAND", "LIST", "FILTERBY", "ACLCAT", "scripting")  # type: ignore[operator]
    assert call(skv.port, "COMMAND", "GETKEYSANDFLAGS", "LMOVE", "k1", "k2", "left", "right") == [
        [b"k1", [b"RW", b"access", b"delete"]], [b"k2", [b"RW", b"insert"]]]
    assert call(skv.port, "COMMAND", "GETKEYSANDFLAGS", "SORT", "k1", "STORE", "k2") == [
        [b"k1", [b"RO", b"access"]], [b"k2", [b"OW", b"update"]]]
    assert call(skv.port, "CONFIG", "REWRITE") == "ERR The server is running without a config file"
    assert call(skv.port, "CLUSTER", "INFO") == "ERR This instance has cluster support disabled"


@pytest.mark.skipif(not HAVE_REDIS, reason=NO_REDIS)
def test_every_command_has_the_categories_and_flags_redis_gives_it(skv: Server, redis_port: int) -> None:
    """For every public command: COMMAND INFO's ACL categories equal redis-server's, in its
    order; its arity too; its flags too, but for the differences listed (and explained) above."""
    names = _commands(skv.port)
    assert len(names) > 100
    ours, theirs = _infos(skv.port, names), _infos(redis_port, names)
    missing = [n for n in names if theirs[n] is None]
    assert missing == [], "shardkv lists commands Redis 7.0.15 does not have"
    wrong_categories = {n: (ours[n][6], theirs[n][6]) for n in names if ours[n][6] != theirs[n][6]}
    assert wrong_categories == {}
    wrong_arity = {n: (ours[n][1], theirs[n][1]) for n in names if ours[n][1] != theirs[n][1]}
    assert wrong_arity == {}
    flag_differences = {}
    for n in names:
        mine, redis_flags = ours[n][2], theirs[n][2]
        assert isinstance(mine, list) and isinstance(redis_flags, list)
        if set(mine) != set(redis_flags):
            flag_differences[n.decode()] = ({f.decode() for f in set(mine) - set(redis_flags)},
                                            {f.decode() for f in set(redis_flags) - set(mine)})
        else:
            assert mine == redis_flags, f"{n!r}: flags not in Redis's order"
    assert flag_differences == KNOWN_FLAG_DIFFERENCES


@pytest.mark.skipif(not HAVE_REDIS, reason=NO_REDIS)
def test_filterby_aclcat_lists_what_redis_lists(skv: Server, redis_port: int) -> None:
    """COMMAND LIST FILTERBY ACLCAT gives, for every category, Redis's list restricted to the
    commands shardkv has.  Subcommands, which are not rows of shardkv's table, are listed under
    their command's and group's categories and @slow only: a subset of Redis's."""
    names = _commands(skv.port)
    for category in ACL_CATEGORIES:
        ours = call(skv.port, "COMMAND", "LIST", "FILTERBY", "ACLCAT", category)
        theirs = call(redis_port, "COMMAND", "LIST", "FILTERBY", "ACLCAT", category)
        assert isinstance(ours, list) and isinstance(theirs, list)
        assert sorted(n for n in ours if b"|" not in n) == sorted(n for n in theirs if n in names), category
        redis_has = set(call(redis_port, "COMMAND", "LIST"))  # type: ignore[arg-type]
        assert {n for n in ours if b"|" in n and n in redis_has} <= set(theirs), category


# ---------------------------------------------------------------------- 3. SHUTDOWN

SHUTDOWN_REFUSALS = [
    (b"SHUTDOWN SAVE", b"-ERR Errors trying to SHUTDOWN. Check logs.\r\n"),
    (b"SHUTDOWN save now", b"-ERR Errors trying to SHUTDOWN. Check logs.\r\n"),
    (b"SHUTDOWN SAVE NOSAVE", b"-ERR syntax error\r\n"),
    (b"SHUTDOWN NOSAVE SAVE FORCE", b"-ERR syntax error\r\n"),
    (b"SHUTDOWN ABORT NOW", b"-ERR syntax error\r\n"),
    (b"SHUTDOWN FORCE ABORT", b"-ERR syntax error\r\n"),
    (b"SHUTDOWN NOSAVE bogus", b"-ERR syntax error\r\n"),
    (b"SHUTDOWN ABORT", b"-ERR No shutdown in progress.\r\n"),
    (b"SHUTDOWN abort abort", b"-ERR No shutdown in progress.\r\n"),
]


def _refusals(port: int) -> list[bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        replies = [request(s, encode_command(line.split())) for line, _ in SHUTDOWN_REFUSALS]
        replies.append(request(s, PING))  # the same connection is still served
    return replies


def test_shutdown_refusals_keep_the_server_serving(skv: Server) -> None:
    """SAVE cannot save (no persistence), so without FORCE it is refused as Redis refuses a
    shutdown whose save fails; contradictory modifiers are syntax errors; nothing stops."""
    assert _refusals(skv.port) == [reply for _, reply in SHUTDOWN_REFUSALS] + [b"+PONG\r\n"]
    assert skv.proc.poll() is None
    assert call(skv.port, "PING") == b"PONG"


@pytest.mark.skipif(not HAVE_REDIS, reason=NO_REDIS)
def test_shutdown_refusals_are_what_redis_does() -> None:
    """The same replies from a redis-server whose save fails (its directory is gone)."""
    with tempfile.TemporaryDirectory() as parent:
        gone = os.path.join(parent, "gone")
        os.mkdir(gone)
        proc, port = start_redis("--dir", gone)
        try:
            os.rmdir(gone)
            assert _refusals(port) == [reply for _, reply in SHUTDOWN_REFUSALS] + [b"+PONG\r\n"]
            assert proc.poll() is None
        finally:
            stop_redis(proc)


def test_shutdown_save_force_stops_the_server() -> None:
    """SAVE FORCE stops anyway: no reply, the connection closes, the supervisor exits 0."""
    srv = start_server("--shards", "2", "--maxmemory", "64mb", "--maxclients", "64")
    try:
        assert send_and_close_wait(srv.port, encode_command([b"SHUTDOWN", b"SAVE", b"FORCE"])) == b""
        assert srv.proc.wait(30) == 0
    finally:
        srv.stop()


# ---------------------------------------------------------------------- 4. ROLE, WAIT

ROLE_REPLY = b"*3\r\n$6\r\nmaster\r\n:0\r\n*0\r\n"
WAIT_CASES = [
    (b"WAIT 0 0", b":0\r\n"),
    (b"WAIT -1 0", b":0\r\n"),
    (b"WAIT 0 9223372036854775807", b":0\r\n"),
    (b"WAIT 0 -1", b"-ERR timeout is negative\r\n"),
    (b"WAIT 1 -1", b"-ERR timeout is negative\r\n"),
    (b"WAIT 0 x", b"-ERR timeout is not an integer or out of range\r\n"),
    (b"WAIT 0 1.5", b"-ERR timeout is not an integer or out of range\r\n"),
    (b"WAIT x -1", b"-ERR value is not an integer or out of range\r\n"),
    (b"WAIT 99999999999999999999 0", b"-ERR value is not an integer or out of range\r\n"),
    (b"WAIT 1", b"-ERR wrong number of arguments for 'wait' command\r\n"),
    (b"ROLE x", b"-ERR wrong number of arguments for 'role' command\r\n"),
]


def _role_and_wait(port: int) -> list[bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        replies = [request(s, b"ROLE\r\n")]
        replies += [request(s, encode_command(line.split())) for line, _ in WAIT_CASES]
        request(s, encode_command([b"HELLO", b"3"]))
        replies.append(request(s, b"ROLE\r\n"))
    return replies


EXPECTED_ROLE_AND_WAIT = [ROLE_REPLY] + [reply for _, reply in WAIT_CASES] + [ROLE_REPLY]


def test_role_and_wait_answer_as_a_master_without_replicas(skv: Server) -> None:
    assert _role_and_wait(skv.port) == EXPECTED_ROLE_AND_WAIT


@pytest.mark.skipif(not HAVE_REDIS, reason=NO_REDIS)
def test_role_and_wait_are_what_redis_does(redis_port: int) -> None:
    assert _role_and_wait(redis_port) == EXPECTED_ROLE_AND_WAIT


def test_wait_for_replicas_blocks_until_its_timeout(skv: Server) -> None:
    """No replica will ever acknowledge: WAIT 1 300 answers 0 after 300 ms, as Redis does, and
    the client's next command waits behind it."""
    with socket.create_connection(("127.0.0.1", skv.port), timeout=10) as s:
        started = time.monotonic()
        s.sendall(encode_command([b"WAIT", b"1", b"300"]) + PING)
        reply = b""
        while len(reply) < len(b":0\r\n+PONG\r\n"):
            chunk = s.recv(100)
            assert chunk, "connection closed"
            if not reply:
                assert time.monotonic() - started >= 0.29, "answered before its timeout"
            reply += chunk
    assert reply == b":0\r\n+PONG\r\n"


def _blocked_clients(port: int) -> int:
    info = call(port, "INFO", "clients")
    assert isinstance(info, bytes)
    return int(info.split(b"blocked_clients:")[1].split(b"\r\n")[0])


def _wait_for(condition: object, what: str, deadline_s: float = 10) -> None:
    end = time.monotonic() + deadline_s
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < end, what
        time.sleep(0.02)


def test_wait_without_timeout_blocks_until_the_client_leaves(skv: Server) -> None:
    """WAIT 1 0 blocks for ever (it counts in blocked_clients) and ends with its client."""
    before = _blocked_clients(skv.port)
    s = socket.create_connection(("127.0.0.1", skv.port), timeout=10)
    s.sendall(encode_command([b"WAIT", b"1", b"0"]))
    _wait_for(lambda: _blocked_clients(skv.port) == before + 1, "WAIT 1 0 did not block")
    s.settimeout(0.2)
    with pytest.raises(TimeoutError):
        s.recv(100)
    s.close()
    _wait_for(lambda: _blocked_clients(skv.port) == before, "the blocked WAIT outlived its client")
