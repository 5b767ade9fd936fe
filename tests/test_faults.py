"""What happens when clients misbehave: disconnecting half-way, random and mutated RESP,
floods of connections, many writers filling the memory.  Each test ends by checking that the
server still serves everyone else and that nothing was half-applied or leaked."""

from __future__ import annotations

import os
import re
import socket
import time
from collections.abc import Iterator

import pytest
import redis
from hypothesis import Phase, assume, example, given, settings
from hypothesis import strategies as st

from conftest import (
    Crew,
    Outcome,
    Server,
    exchange,
    expect_replies,
    expect_silence,
    hops_drained,
    start_server,
    wait_blocked,
    whole_replies,
)
from shardkv.commands import table
from shardkv.errors import ProtocolError
from shardkv.protocol import ReplyError, encode_command, parse_requests, protocol_error
from shardkv.router.dispatch import key_slot, slot_owners

ARGS_MAX, BULK_MAX = 1024, 1 << 20
# Examples per live-server fuzz test; a long hunt: SHARDKV_FUZZ_EXAMPLES=5000 pytest -k mutated -o timeout=0
FUZZ_EXAMPLES = int(os.environ.get("SHARDKV_FUZZ_EXAMPLES", "150"))
# A live fuzz test reports the first failing example as found: shrinking one where the server
# stays silent would cost REPLY_S_MAX per try, past the test's timeout.
FUZZ_PHASES = [Phase.explicit, Phase.reuse, Phase.generate]
REPLY_S_MAX = 3  # a reply to a small command that takes longer than this is no reply
PROTOCOL_ERROR = re.compile(
    rb"-ERR Protocol error: (too big inline request|too big mbulk count string|invalid multibulk length|"
    rb"expected '\$', got '.'|too big bulk count string|invalid bulk length|unbalanced quotes in request)\r\n"
)


@pytest.fixture(scope="module")
def srv() -> Iterator[Server]:
    server = start_server("--shards", "2", "--maxmemory", "32mb", "--maxclients", "32",
                          "--proto-max-bulk-len", "1mb", "--client-query-buffer-limit", "2mb")
    yield server
    assert server.stop() == 0


def healthy(server: Server) -> redis.Redis:
    """The server answers a fresh client on both shards, and no client is left behind."""
    r = server.client()
    r.set("health{a}", "1")
    r.set("health{b}", "2")
    assert r.mget("health{a}", "health{b}") == [b"1", b"2"]
    return r


def settle_clients(r: redis.Redis, want: int) -> int:
    """connected_clients once closed connections have been noticed."""
    n = -1
    for _ in range(100):
        n = int(r.info("clients")["connected_clients"])
        if n == want:
            break
        time.sleep(0.05)
    return n


# a and b live on different shards of a 2-shard shardkv
assert slot_owners(2)[key_slot(b"a")] != slot_owners(2)[key_slot(b"b")]


# ---------------------------------------------------------------------- disconnects


def test_disconnect_in_the_middle_of_a_command_applies_nothing(srv: Server) -> None:
    r = healthy(srv)
    base = settle_clients(r, 1)
    for i in range(200):  # more than maxclients and parse arenas: a leak would show
        s = srv.raw()
        key = b"half%d" % i
        value = b"x" * 100_000  # larger than a connection buffer: goes to a parse arena
        frame = b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(key), key, len(value), value)
        s.sendall(frame[: 30 + i * 400])
        s.close()
    assert settle_clients(r, base) == base
    assert r.exists(*[f"half{i}" for i in range(200)]) == 0
    # Every parse arena came back: big commands from several clients at once still complete.
    crew = Crew()

    def big_set(i: int) -> None:
        assert srv.client(socket_timeout=10).set(f"big{i}", b"y" * 300_000) is True
        crew.done("sets")

    for i in range(6):
        crew.start(big_set, i)
    crew.join(20)
    assert crew.count("sets") == 6
    assert r.mget([f"big{i}" for i in range(6)]) == [b"y" * 300_000] * 6
    healthy(srv)


def test_disconnect_in_the_middle_of_a_pipeline_runs_a_prefix_per_shard(srv: Server) -> None:
    """A client sends 1,000 SETs over both shards and an incomplete command, then closes.  As
    with Redis, commands not yet run when the close is seen may be dropped; but what ran is, on
    each shard, the first commands of the pipeline in order, with no hole."""
    r = healthy(srv)
    base = settle_clients(r, 1)
    keys = {round_: [f"r{round_}:{i}{{{'ab'[i % 2]}}}" for i in range(1000)] for round_ in range(20)}
    for round_ in range(20):
        s = srv.raw()
        pipeline = b"".join(encode_command([b"SET", k.encode(), b"v"]) for k in keys[round_])
        s.sendall(pipeline + b"*2\r\n$3\r\nGET\r\n$1\r")  # then one incomplete command, and gone
        s.close()
    assert settle_clients(r, base) == base
    hops_drained(srv)  # what the closed clients sent to the other shard has run there
    ran = 0
    for round_ in range(20):
        present = [v is not None for v in r.mget(keys[round_])]
        for shard in (0, 1):
            mine = present[shard::2]
            done = sum(mine)
            assert mine == [True] * done + [False] * (len(mine) - done), (round_, shard)
            ran += done
    assert ran > 0
    healthy(srv)


def test_disconnect_while_blocked_consumes_nothing(srv: Server) -> None:
    """Clients blocked on keys of both shards go away: they leave no ghost behind.  Clients that
    block afterwards get the next elements, which a ghost (blocked earlier) would have taken."""
    r = healthy(srv)
    r.delete("queue{a}", "queue{b}")
    blocked = []
    for i in range(6):  # keys on both shards, the client's worker and the other one
        s = srv.raw()
        key = b"queue{a}" if i % 2 else b"queue{b}"
        s.sendall(encode_command([b"BLPOP", key, b"0"]))
        blocked.append(s)
    wait_blocked(r, 6)
    for s in blocked:
        s.close()
    wait_blocked(r, 0)
    crew = Crew()
    got: list[object] = []

    def live(key: str) -> None:
        got.append(srv.client().blpop([key], 10))
        crew.done("pops")

    for key in ("queue{a}", "queue{b}", "queue{c}"):
        crew.start(live, key)
    wait_blocked(r, 3)
    r.rpush("queue{a}", "x")
    r.rpush("queue{b}", "y")
    r.rpush("queue{c}", "z")
    crew.join(15)
    # None here: a ghost blocked earlier took the element.
    assert sorted(got, key=repr) == [(b"queue{a}", b"x"), (b"queue{b}", b"y"), (b"queue{c}", b"z")]
    assert r.exists("queue{a}", "queue{b}", "queue{c}") == 0
    # With nobody blocked, a pushed element stays.
    r.rpush("queue{a}", "x2")
    assert r.lrange("queue{a}", 0, -1) == [b"x2"] and int(r.info("clients")["blocked_clients"]) == 0


# ---------------------------------------------------------------------- RESP fuzzing

command = st.lists(st.binary(min_size=0, max_size=40), min_size=1, max_size=6)


@given(st.lists(command, min_size=1, max_size=8), st.data())
@settings(max_examples=300, deadline=None)
def test_parser_gives_the_same_commands_however_the_bytes_are_split(cmds: list[list[bytes]],
                                                                     data: st.DataObject) -> None:
    wire = b"".join(encode_command(c) for c in cmds)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=6)))
    buf = bytearray()
    got: list[list[bytes]] = []
    fed = 0
    for cut in cuts + [len(wire)]:
        buf += wire[fed:cut]
        fed = cut
        result = parse_requests(buf, len(buf), ARGS_MAX, BULK_MAX)
        assert result.error is None
        got += [argv for argv, _, _ in result.requests]
        del buf[: result.consumed]
    assert got == cmds and not buf


# Bytes that make up RESP, so that random input often holds whole or nearly whole frames.
RESP_PIECES = [b"*", b"$", b"\r\n", b"\n", b"\r", b"0", b"1", b"2", b"3", b"-", b"+", b" ", b"\"", b"'", b"\\x41",
               b"PING", b"x"]
junk_bytes = st.one_of(
    st.binary(max_size=300),
    st.lists(st.one_of(st.sampled_from(RESP_PIECES), st.binary(max_size=6), command.map(encode_command)),
             max_size=30).map(b"".join),
)
# What may lie between two commands: an empty multibulk (count 0 or negative) or a blank line.
SKIPPED = re.compile(rb"(?:\*(?:0|-[1-9][0-9]*)\r\n|[ \t\r\v\f]*\n)*")


@given(junk_bytes)
@example(b"*01\r\n$4\r\nPING\r\n")  # Redis: invalid multibulk length
@example(b"*1\r\n$+4\r\nPING\r\n")  # Redis: invalid bulk length
@settings(max_examples=500, deadline=None)
def test_parser_on_random_bytes_parses_or_raises_a_protocol_error(junk: bytes) -> None:
    """Whatever the bytes, the parser returns commands each cut from one frame of the input (a
    multibulk frame exactly as a client encodes it, with Redis's canonical numbers, or one inline
    line), with nothing but skippable frames between them, or stops with one of Redis's protocol
    error texts."""
    result = parse_requests(bytearray(junk), len(junk), ARGS_MAX, BULK_MAX)
    assert 0 <= result.consumed <= len(junk)
    if result.error is not None:
        assert isinstance(result.error, ProtocolError)
        assert PROTOCOL_ERROR.fullmatch(protocol_error(result.error)), result.error.why
    previous_end = 0
    for argv, start, end in result.requests:
        assert previous_end <= start < end <= result.consumed
        assert SKIPPED.fullmatch(junk[previous_end:start]), junk[previous_end:start]
        assert argv and all(isinstance(a, bytes) for a in argv)
        frame = junk[start:end]
        if frame.startswith(b"*"):
            assert encode_command(argv) == frame, (argv, frame)  # Redis refuses "*01", "$+3", "$ 3", ...
        else:
            assert frame.endswith(b"\n") and b"\n" not in frame[:-1], frame  # one inline line
        previous_end = end
    if result.error is None:
        assert SKIPPED.fullmatch(junk[previous_end : result.consumed]), junk[previous_end : result.consumed]


@given(st.lists(st.one_of(command.map(encode_command), st.binary(max_size=30)), max_size=6), st.integers(0))
@settings(max_examples=400, deadline=None)
def test_parsing_in_two_reads_agrees_with_one(pieces: list[bytes], cut: int) -> None:
    """Bytes that arrive in two reads, cut anywhere, give the same commands, the same stop and
    the same error as the whole at once: valid frames (values holding CRLF included) mixed with
    junk."""
    wire = b"".join(pieces)
    cut %= len(wire) + 1
    whole = parse_requests(bytearray(wire), len(wire), ARGS_MAX, BULK_MAX)
    first = parse_requests(bytearray(wire), cut, ARGS_MAX, BULK_MAX)
    if first.error is not None:  # refused before the cut: the whole is refused there too
        assert (first.requests, first.consumed, first.error.why) == (
            whole.requests, whole.consumed, whole.error and whole.error.why)
        return
    rest = parse_requests(bytearray(wire[first.consumed :]), len(wire) - first.consumed, ARGS_MAX, BULK_MAX)
    shifted = [(argv, start + first.consumed, end + first.consumed) for argv, start, end in rest.requests]
    assert first.requests + shifted == whole.requests
    assert (first.consumed + rest.consumed, rest.needed) == (whole.consumed, whole.needed)
    assert (rest.error and rest.error.why) == (whole.error and whole.error.why)


def mutate(wire: bytes, at: int, how: int, byte: int) -> bytes:
    at = at % (len(wire) + 1)
    if how == 0:
        return wire[:at] + bytes((byte,)) + wire[at + 1 :]  # flip one byte
    if how == 1:
        return wire[:at] + wire[at + 1 :]  # drop one
    if how == 2:
        return wire[:at] + bytes((byte,)) + wire[at:]  # insert one
    return wire[:at]  # truncate


SRV_ARGS_MAX = 65536  # srv's --args-max, the default; its --proto-max-bulk-len is BULK_MAX


def worker_state(server: Server) -> tuple[list[int], int]:
    """The worker processes, and how many times the supervisor has restarted one."""
    return server.worker_pids(), int(server.client().info("server")["worker_restarts"])


@pytest.fixture(scope="module")
def commands_known() -> None:
    table.load_all()


def check_echo_reply(argv: list[bytes], reply: object) -> None:
    """The exact reply to ECHO or PING, and an unknown-command error for anything else."""
    name = argv[0].lower()
    if name == b"echo" and len(argv) == 2 or name == b"ping" and len(argv) == 2:
        assert reply == argv[1], (argv, reply)
    elif name == b"ping" and len(argv) == 1:
        assert reply == b"PONG", (argv, reply)
    elif name in (b"echo", b"ping"):
        assert reply == ReplyError(f"ERR wrong number of arguments for '{name.decode()}' command"), (argv, reply)
    else:
        assert isinstance(reply, ReplyError) and reply.startswith("ERR unknown command '"), (argv, reply)


def test_live_server_survives_mutated_frames(srv: Server, commands_known: None) -> None:
    """Mutated RESP framing to a live server.  What its own parser makes of the bytes says what
    must happen: every whole command gets its exact reply; then a framing error gets Redis's
    exact protocol error and the connection is closed (EOF, not a timeout); an incomplete
    command gets silence (the server waits for more).  No worker dies or restarts."""
    before = worker_state(srv)

    @given(st.lists(command, min_size=1, max_size=4), st.integers(0, 10_000), st.integers(0, 3),
           st.integers(0, 255))
    @settings(max_examples=FUZZ_EXAMPLES, deadline=None, phases=FUZZ_PHASES)
    def one(cmds: list[list[bytes]], at: int, how: int, byte: int) -> None:
        safe = [[b"ECHO", *c[:1]] if c[0].upper() not in (b"ECHO", b"PING") else c for c in cmds]
        wire = mutate(b"".join(encode_command(c) for c in safe), at, how, byte)
        parsed = parse_requests(wire, len(wire), SRV_ARGS_MAX, BULK_MAX)
        argvs = [argv for argv, _, _ in parsed.requests]
        # A mutation may spell a real command (inline, from an argument's bytes): not run here.
        assume(all(argv[0].upper() in (b"ECHO", b"PING") or table.lookup(argv[0]) is None for argv in argvs))
        pids_restarts = worker_state(srv)
        with srv.raw() as s:
            if parsed.error is not None:
                out = exchange(s, wire, REPLY_S_MAX, replies=None)
                assert out.state == "closed", (wire, out)
                replies, used = whole_replies(out.data)
                refusal = protocol_error(parsed.error)
                assert PROTOCOL_ERROR.fullmatch(refusal)
                assert used == len(out.data) and len(replies) == len(argvs) + 1, (wire, out)
                assert out.data.endswith(refusal), (wire, out)
            else:
                replies = expect_replies(s, wire, len(argvs), REPLY_S_MAX)
                if parsed.consumed < len(wire):
                    expect_silence(s, b"", 0.1)  # the rest is an incomplete command: it waits
                else:
                    assert expect_replies(s, b"PING\r\n", 1, REPLY_S_MAX) == [b"PONG"]  # nothing was left over
        for argv, reply in zip(argvs, replies, strict=False):
            check_echo_reply(argv, reply)
        assert worker_state(srv) == pids_restarts

    one()
    assert worker_state(srv) == before
    healthy(srv)


# Real commands on keys of both shards ({a} and {b}), whose arguments the fuzzer then mutates.
ARGUMENT_FUZZ_COMMANDS = [line.encode().split() for line in [
    "SET fz{a}s value EX 100 NX", "GET fz{a}s", "GETEX fz{a}s PX 100000", "GETRANGE fz{a}s 0 -1",
    "SETRANGE fz{a}s 3 abc", "APPEND fz{a}s tail", "STRLEN fz{a}s", "SUBSTR fz{a}s 0 2", "GETSET fz{a}s v",
    "GETDEL fz{b}s", "SETEX fz{a}e 100 v", "PSETEX fz{a}e 100 v", "INCRBY fz{b}n 5", "INCRBYFLOAT fz{b}n 1.5",
    "DECRBY fz{b}n 2", "MSET fz{a}s 1 fz{b}s 2", "MGET fz{a}s fz{b}s", "MSETNX fz{a}x 1 fz{b}x 2",
    "SETBIT fz{a}bits 7 1", "GETBIT fz{a}bits 7", "BITCOUNT fz{a}bits 0 -1 BIT", "BITPOS fz{a}bits 1 0 -1 BYTE",
    "BITFIELD fz{a}bits SET u8 0 200 GET i4 0 INCRBY u5 3 40 OVERFLOW SAT", "BITFIELD_RO fz{a}bits GET u8 #1",
    "BITOP AND fz{b}dst fz{a}bits fz{a}s", "LCS fz{a}s fz{b}s LEN", "EXPIRE fz{a}s 100 GT",
    "PEXPIREAT fz{a}s 99999999999999 NX", "TTL fz{a}s", "PERSIST fz{a}s", "EXPIRETIME fz{a}s", "TYPE fz{a}s",
    "EXISTS fz{a}s fz{b}s", "DEL fz{a}x fz{b}x", "RENAME fz{a}s fz{b}r", "RENAMENX fz{b}r fz{a}s",
    "COPY fz{b}s fz{a}c REPLACE", "MOVE fz{a}c 3", "OBJECT ENCODING fz{a}l", "OBJECT FREQ fz{a}s",
    "MEMORY USAGE fz{a}l SAMPLES 5", "LPUSH fz{a}l a b c", "RPUSH fz{b}l x y", "LRANGE fz{a}l 0 -1",
    "LINDEX fz{a}l -1", "LSET fz{a}l 0 z", "LINSERT fz{a}l BEFORE a q", "LREM fz{a}l 0 a", "LTRIM fz{a}l 0 10",
    "LPOS fz{a}l a RANK 1 COUNT 0 MAXLEN 10", "LPOP fz{a}l 2", "LMOVE fz{a}l fz{b}l LEFT RIGHT",
    "LMPOP 2 fz{a}l fz{b}l RIGHT COUNT 2", "RPOPLPUSH fz{b}l fz{a}l", "HSET fz{b}h f v g w", "HSETNX fz{b}h f v",
    "HGET fz{b}h f", "HMGET fz{b}h f g", "HINCRBY fz{b}h n 3", "HINCRBYFLOAT fz{b}h x 0.5",
    "HRANDFIELD fz{b}h -3 WITHVALUES", "HSCAN fz{b}h 0 MATCH * COUNT 10", "HDEL fz{b}h f", "HSTRLEN fz{b}h g",
    "HGETALL fz{b}h", "SADD fz{a}t a b c", "SADD fz{b}t b c d", "SINTER fz{a}t fz{b}t",
    "SINTERCARD 2 fz{a}t fz{b}t LIMIT 1", "SUNIONSTORE fz{a}u fz{a}t fz{b}t", "SDIFF fz{a}t fz{b}t",
    "SMOVE fz{a}t fz{b}t a", "SPOP fz{a}t 1", "SRANDMEMBER fz{b}t -2", "SMISMEMBER fz{a}t a z",
    "SSCAN fz{a}t 0 COUNT 2", "SORT fz{a}l BY nosort LIMIT 0 5 ALPHA", "SORT_RO fz{b}l ALPHA DESC",
    "SCAN 0 MATCH fz* COUNT 10 TYPE string", "SCAN 0 TYPE list", "DBSIZE", "RANDOMKEY", "ECHO hi", "PING hi",
    "COMMAND INFO get", "COMMAND GETKEYS SET a b",
]]
# Values that commands read as numbers, options, patterns or keys, and edge cases of each.
INTERESTING_ARGUMENTS = [
    b"", b"0", b"-1", b"1", b"-0", b"+1", b" 1", b"01", b"1.5", b"nan", b"inf", b"-inf", b"1e3", b"0x10",
    b"9223372036854775807", b"9223372036854775808", b"-9223372036854775808", b"18446744073709551616",
    b"4294967295", b"4294967296", b"536870912", b"\x00", b"\xff\xfe", b"*", b"[", b"\\", b"fz{a}s", b"fz{b}l",
    b"fz{a}t", b"fz{b}h", b"COUNT", b"LIMIT", b"MATCH", b"TYPE", b"LEFT", b"RIGHT", b"WITHVALUES", b"REPLACE",
    b"DB", b"NX", b"XX", b"GT", b"LT", b"EX", b"PX", b"KEEPTTL", b"GET", b"BY", b"STORE", b"ALPHA", b"RANK",
    b"MAXLEN", b"BIT", b"BYTE", b"OVERFLOW", b"FAIL", b"WRAP", b"u64", b"i64", b"u0", b"i65", b"#-1", b"SAMPLES",
]
argument_edit = st.tuples(st.sampled_from(["replace", "steal", "flip", "insert", "drop", "truncate", "duplicate",
                                           "append"]),
                          st.integers(0, 20), st.integers(0, 100), st.integers(0, 255),
                          st.sampled_from(INTERESTING_ARGUMENTS))
ERROR_PREFIX = re.compile(r"(ERR|WRONGTYPE|OOM) \S")
INTERNAL_ERROR = "ERR internal error"  # what shardkv answers when a handler raised: a bug, never a Redis reply


def edit_arguments(argv: list[bytes], edits: list[tuple[str, int, int, int, bytes]]) -> list[bytes]:
    """Change a well-formed command's arguments (never its name): bytes in them, or their number."""
    argv = list(argv)
    for how, which, at, byte, value in edits:
        if len(argv) == 1 or how == "append":
            argv.append(value)
            continue
        k = 1 + which % (len(argv) - 1)
        arg = argv[k]
        at %= len(arg) + 1
        if how == "replace":
            argv[k] = value
        elif how == "steal":  # another argument of the same command: an option where a value goes
            argv[k] = argv[1 + at % (len(argv) - 1)]
        elif how == "truncate":  # an option left without its value, a range without its end
            del argv[k:]
        elif how == "flip":
            argv[k] = arg[:at] + bytes((byte,)) + arg[at + 1 :]
        elif how == "insert":
            argv[k] = arg[:at] + bytes((byte,)) + arg[at:]
        elif how == "drop":
            del argv[k]
        else:
            argv.insert(k, arg)
    return argv


def test_live_server_answers_commands_with_mutated_arguments(srv: Server) -> None:
    """Well-formed frames of real commands whose arguments are mutated (bytes changed, numbers and
    options swapped for edge cases, arguments dropped or repeated): every command gets exactly
    one reply, a value or an error in Redis's form, on a connection that stays open; never
    silence, never a close, and no worker dies or restarts."""
    before = worker_state(srv)

    @given(st.lists(st.tuples(st.sampled_from(ARGUMENT_FUZZ_COMMANDS), st.lists(argument_edit, min_size=1, max_size=3)),
                    min_size=1, max_size=4))
    @settings(max_examples=FUZZ_EXAMPLES * 2, deadline=None, phases=FUZZ_PHASES)
    def one(batch: list[tuple[list[bytes], list[tuple[str, int, int, int, bytes]]]]) -> None:
        argvs = [edit_arguments(argv, edits) for argv, edits in batch]
        pids_restarts = worker_state(srv)
        wire = b"SELECT 9\r\nFLUSHDB\r\n" + b"".join(encode_command(argv) for argv in argvs)
        with srv.raw() as s:
            out = exchange(s, wire, REPLY_S_MAX, replies=len(argvs) + 2)
            replies, used = whole_replies(out.data)
            assert out.state == "open" and used == len(out.data) and len(replies) == len(argvs) + 2, (argvs, out)
            assert expect_replies(s, b"PING\r\n", 1, REPLY_S_MAX) == [b"PONG"]  # nothing more came for them
        assert replies[:2] == [b"OK", b"OK"]
        for argv, reply in zip(argvs, replies[2:], strict=True):
            if isinstance(reply, ReplyError):
                assert ERROR_PREFIX.match(reply) and not reply.startswith(INTERNAL_ERROR), (argv, reply)
        assert worker_state(srv) == pids_restarts

    one()
    assert worker_state(srv) == before
    srv.client().flushall()
    healthy(srv)


# ---------------------------------------------------------------------- floods and filling


def test_maxclients_flood_is_refused_counted_and_harmless(srv: Server) -> None:
    r = healthy(srv)
    before = int(r.info("stats")["rejected_connections"])
    base = settle_clients(r, 1)
    socks: list[socket.socket] = []
    refused = 0
    for _ in range(80):  # 32 allowed
        s = srv.raw()
        out = exchange(s, b"PING\r\n", replies=1)
        if out.data == b"-ERR max number of clients reached\r\n":
            if out.state == "open":  # the close may come after the reply was read
                out = exchange(s, b"", replies=None)
            assert out.state == "closed", out
            refused += 1
            s.close()
        else:
            assert out == Outcome(b"+PONG\r\n", "open")
            socks.append(s)
    assert len(socks) == 32 - base and refused == 80 - len(socks)
    assert int(r.info("stats")["rejected_connections"]) == before + refused
    for s in socks:
        s.close()
    assert settle_clients(r, base) == base
    healthy(srv)


def test_many_writers_fill_to_full_then_flushall_makes_it_all_reusable() -> None:
    server = start_server("--shards", "2", "--maxmemory", "8mb", "--maxclients", "32", "--proto-max-bulk-len", "1mb",
                          "--client-query-buffer-limit", "2mb")
    try:
        r = server.client()

        def writer(crew: Crew, w: int) -> None:
            c = server.client(socket_timeout=10)
            n = ooms = 0
            while ooms < 20:
                key = f"w{w}:{n}"
                try:
                    assert c.set(key, key * 20) is True  # the value says which key it belongs to
                    crew.done("sets")
                except redis.exceptions.OutOfMemoryError:
                    ooms += 1
                    crew.done("ooms")
                n += 1

        def fill() -> int:
            crew = Crew()
            for w in range(8):
                crew.start(writer, crew, w)
            crew.join(120)
            assert crew.count("ooms") == 8 * 20
            assert int(r.dbsize()) == crew.count("sets")  # every acknowledged SET is there, and no other
            return crew.count("sets")
        first = fill()
        assert first > 1000
        keys = list(r.scan_iter(count=1000))
        assert len(keys) == first  # DBSIZE agrees with the index on every shard
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            assert r.mget(chunk) == [k * 20 for k in chunk]  # no torn or misplaced value
        assert int(r.info("memory")["used_memory_dataset"]) > 6 * 2**20
        r.flushall()
        assert int(r.dbsize()) == 0 and int(r.info("memory")["used_memory_dataset"]) == 0
        second = fill()
        assert second >= first * 0.98  # everything FLUSHALL freed could be used again
    finally:
        assert server.stop() == 0
