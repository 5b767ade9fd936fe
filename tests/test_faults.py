"""What happens when clients misbehave: disconnecting half-way, random and mutated RESP,
floods of connections, many writers filling the memory.  Each test ends by checking that the
server still serves everyone else and that nothing was half-applied or leaked."""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import Server, raw_roundtrip, start_server
from shardkv.errors import ProtocolError
from shardkv.protocol import _parse_walk, encode_command, parse_requests
from shardkv.router.dispatch import key_slot, slot_owners

ARGS_MAX, BULK_MAX = 1024, 1 << 20
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
    clients = [srv.client(socket_timeout=10) for _ in range(6)]
    threads = [threading.Thread(target=c.set, args=(f"big{i}", b"y" * 300_000)) for i, c in enumerate(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
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
    time.sleep(0.3)
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
    r = healthy(srv)
    r.delete("queue{a}", "queue{b}")
    blocked = []
    for i in range(6):  # keys on both shards, the client's worker and the other one
        s = srv.raw()
        key = b"queue{a}" if i % 2 else b"queue{b}"
        s.sendall(b"*3\r\n$5\r\nBLPOP\r\n$%d\r\n%s\r\n$1\r\n0\r\n" % (len(key), key))
        blocked.append(s)
    deadline = time.monotonic() + 5
    while int(r.info("clients")["blocked_clients"]) < 6 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert int(r.info("clients")["blocked_clients"]) == 6
    for s in blocked:
        s.close()
    while int(r.info("clients")["blocked_clients"]) > 0 and time.monotonic() < deadline + 5:
        time.sleep(0.02)
    assert int(r.info("clients")["blocked_clients"]) == 0
    r.rpush("queue{a}", "x")
    r.rpush("queue{b}", "y")
    time.sleep(0.2)
    assert r.lrange("queue{a}", 0, -1) == [b"x"] and r.lrange("queue{b}", 0, -1) == [b"y"]  # nobody took them
    # A live blocked client still gets the next element.
    live = srv.client()
    got: list[object] = []
    t = threading.Thread(target=lambda: got.append(live.blpop(["queue{c}"], 5)))
    t.start()
    time.sleep(0.2)
    r.rpush("queue{c}", "z")
    t.join(10)
    assert got == [(b"queue{c}", b"z")]


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


@given(st.binary(max_size=300))
@settings(max_examples=500, deadline=None)
def test_parser_on_random_bytes_parses_or_raises_a_protocol_error(junk: bytes) -> None:
    result = parse_requests(bytearray(junk), len(junk), ARGS_MAX, BULK_MAX)
    assert 0 <= result.consumed <= len(junk)
    assert result.error is None or isinstance(result.error, ProtocolError)
    for argv, start, end in result.requests:
        assert 0 <= start < end <= len(junk) and all(isinstance(a, bytes) for a in argv)


@given(st.lists(st.one_of(command.map(encode_command), st.binary(max_size=30)), max_size=6))
@settings(max_examples=400, deadline=None)
def test_fast_parser_agrees_with_the_byte_walk(pieces: list[bytes]) -> None:
    """The split-at-CRLF fast path and the byte-by-byte walk give the same commands, stop at the
    same place and report the same error, on valid frames (values holding CRLF included) mixed
    with junk."""
    wire = b"".join(pieces)
    fast = parse_requests(bytearray(wire), len(wire), ARGS_MAX, BULK_MAX)
    walk = _parse_walk(bytearray(wire), len(wire), ARGS_MAX, BULK_MAX, 1 << 30, [], 0)
    assert (fast.requests, fast.consumed, fast.needed) == (walk.requests, walk.consumed, walk.needed)
    assert (fast.error and fast.error.why) == (walk.error and walk.error.why)


def mutate(wire: bytes, at: int, how: int, byte: int) -> bytes:
    at = at % (len(wire) + 1)
    if how == 0:
        return wire[:at] + bytes((byte,)) + wire[at + 1 :]  # flip one byte
    if how == 1:
        return wire[:at] + wire[at + 1 :]  # drop one
    if how == 2:
        return wire[:at] + bytes((byte,)) + wire[at:]  # insert one
    return wire[:at]  # truncate


@given(st.lists(command, min_size=1, max_size=4), st.integers(0, 10_000), st.integers(0, 3), st.integers(0, 255))
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_live_server_survives_mutated_frames(srv: Server, cmds: list[list[bytes]], at: int, how: int,
                                             byte: int) -> None:
    """Mutated RESP to a live server: it answers, or refuses with an exact protocol error and
    closes, or waits for more; it never crashes, and other clients are served throughout."""
    safe = [[b"ECHO", *c[:1]] if c[0].upper() not in (b"ECHO", b"PING") else c for c in cmds]
    wire = mutate(b"".join(encode_command(c) for c in safe), at, how, byte)
    s = srv.raw()
    reply = raw_roundtrip(s, wire, wait_s=0.05)
    s.close()
    errors = [line for line in reply.split(b"\r\n") if line.startswith(b"-ERR Protocol error")]
    for line in errors:
        assert PROTOCOL_ERROR.fullmatch(line + b"\r\n"), line
    r = srv.client(socket_timeout=5)
    assert r.ping()


# ---------------------------------------------------------------------- floods and filling


def test_maxclients_flood_is_refused_counted_and_harmless(srv: Server) -> None:
    r = healthy(srv)
    before = int(r.info("stats")["rejected_connections"])
    base = settle_clients(r, 1)
    socks: list[socket.socket] = []
    refused = 0
    for _ in range(80):  # 32 allowed
        s = srv.raw()
        s.sendall(b"PING\r\n")
        s.settimeout(5)
        reply = s.recv(100)
        if reply == b"-ERR max number of clients reached\r\n":
            refused += 1
            s.close()
        else:
            assert reply == b"+PONG\r\n"
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
        other: list[str] = []
        written: list[int] = []

        def writer(w: int) -> None:
            c = server.client(socket_timeout=10)
            n = ooms = 0
            while ooms < 20:
                key = f"w{w}:{n}"
                try:
                    c.set(key, key * 20)  # the value says which key it belongs to
                    n += 1
                except redis.exceptions.OutOfMemoryError:
                    ooms += 1
                    n += 1
                except redis.RedisError as e:
                    other.append(repr(e))
                    return
            written.append(n)

        def fill() -> int:
            threads = [threading.Thread(target=writer, args=(w,)) for w in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(120)
            assert not other, other[:3]
            return int(r.dbsize())

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
        written.clear()
        second = fill()
        assert second >= first * 0.98  # everything FLUSHALL freed could be used again
    finally:
        assert server.stop() == 0
