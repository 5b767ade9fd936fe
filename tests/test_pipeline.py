"""The one command pipeline: every input gets its reply in order, internal commands cannot be
confused by client values, errors are counted as Redis counts them, and the command layer
stays below the router and the worker."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest

from conftest import ROOT, Server, reference_redis, start_server
from shardkv.commands.connection import KillFilter
from shardkv.commands.keyspace import RestorePart, ScanPart
from shardkv.protocol import encode_command, read_reply
from shardkv.router.dispatch import key_slot, slot_owners


@pytest.fixture(scope="module")
def srv() -> Iterator[Server]:
    s = start_server("--shards", "2", "--maxmemory", "64mb", "--maxclients", "64")
    yield s
    s.stop()


def replies(sock: socket.socket, commands: list[list[bytes]], timeout_s: float = 10) -> list[object]:
    """Send commands as one pipeline and read exactly one reply per command (a timeout fails)."""
    sock.sendall(b"".join(encode_command(c) for c in commands))
    sock.settimeout(timeout_s)
    out: list[object] = []
    buf = b""
    while len(out) < len(commands):
        try:
            value, end = read_reply(buf)
        except (IndexError, ValueError):
            chunk = sock.recv(65536)
            assert chunk, f"closed after {len(out)} replies: {out}"
            buf += chunk
            continue
        out.append(value)
        buf = buf[end:]
    assert buf == b""
    return out


def cmd(text: str) -> list[bytes]:
    return [part.encode() for part in text.split()]


def on_shard(shard: int, prefix: str) -> str:
    i = 0
    while slot_owners(2)[key_slot(f"{prefix}{i}".encode())] != shard:
        i += 1
    return f"{prefix}{i}"


def test_inputs_that_used_to_leave_the_connection_without_replies(srv: Server) -> None:
    src, dst = on_shard(0, "src"), on_shard(1, "DB")
    dst_db = "DB" if slot_owners(2)[key_slot(b"DB")] != slot_owners(2)[key_slot(src.encode())] else dst
    other = srv.raw()  # a second client, so CLIENT KILL has someone to look at
    with srv.raw() as sock:
        got = replies(sock, [
            cmd("FLUSHALL"), cmd("SET TYPE x"),
            cmd("SCAN 0 MATCH TYPE COUNT 1000"),  # MATCH's pattern is "TYPE"
            cmd("SCAN 0 TYPE MATCH"),  # a type nobody has
            cmd("CLIENT KILL MAXAGE abc"),  # MAXAGE came with Redis 7.4
            cmd("CLIENT KILL ME"),  # the old form: an address
            cmd(f"SET {src} v"), cmd(f"COPY {src} {dst_db}"), cmd(f"GET {dst_db}"),
            cmd(f"COPY {src} {dst_db} DB 3"), cmd(f"COPY {src} {dst_db} DB"),
            cmd("SET after ok"), cmd("GET after"),
        ])
        found: list[bytes] = []
        cursor = b"0"
        for _ in range(10_000):  # a whole SCAN MATCH TYPE: the key named TYPE, once
            reply = replies(sock, [[b"SCAN", cursor, b"MATCH", b"TYPE", b"COUNT", b"1000"]])[0]
            assert isinstance(reply, list)
            cursor, keys = reply
            found += keys
            if cursor == b"0":
                break
    other.close()
    assert found == [b"TYPE"]
    assert isinstance(got[2], list) and isinstance(got[3], list) and got[3][1] == []
    assert str(got[4]) == "ERR syntax error"
    assert str(got[5]) == "ERR No such client"
    assert got[6:9] == [b"OK", 1, b"v"]
    assert got[9] == 1
    assert str(got[10]) == "ERR syntax error"
    assert got[11:] == [b"OK", b"ok"]


def test_client_kill_of_itself_replies_then_closes(srv: Server) -> None:
    with srv.raw() as sock:
        (my_id,) = replies(sock, [cmd("CLIENT ID")])
        got = replies(sock, [cmd(f"CLIENT KILL ID {my_id} SKIPME no")])
        assert got == [1]
        sock.settimeout(5)
        assert sock.recv(100) == b""  # closed, not silent
    with srv.raw() as sock:
        (my_id,) = replies(sock, [cmd("CLIENT ID")])
        assert replies(sock, [cmd(f"CLIENT KILL ID {my_id}"), cmd("PING")]) == [0, b"PONG"]  # SKIPME yes


def test_client_kill_filters_reach_clients_on_every_worker(srv: Server) -> None:
    victims = [srv.raw() for _ in range(6)]
    ids = [replies(v, [cmd("CLIENT ID")])[0] for v in victims]
    with srv.raw() as sock:
        got = replies(sock, [[b"CLIENT", b"KILL", b"ID", b"%d" % i] for i in ids] + [cmd("CLIENT KILL USER nobody")])
    assert got[:6] == [1] * 6
    assert str(got[6]) == "ERR No such user 'nobody'"
    for v in victims:
        v.settimeout(5)
        assert v.recv(100) == b""
        v.close()


def test_internal_commands_round_trip() -> None:
    for kill in (KillFilter(7, True), KillFilter(9, False, 12, b"ME", b"", b"normal")):
        assert KillFilter.decode(kill.encode()) == kill
    for scan in (ScanPart(0, 10), ScanPart(5, 1, b"TYPE", b"MATCH"), ScanPart(1, 2, b"", None)):
        assert ScanPart.decode(scan.encode()) == scan
    for restore in (RestorePart(b"DB", b"DB 3 REPLACE", False, 3), RestorePart(b"k", b"", True, 0)):
        assert RestorePart.decode(restore.encode()) == restore


def test_commands_import_neither_router_nor_worker() -> None:
    code = (
        "import importlib, pkgutil, sys, shardkv.commands\n"
        "from shardkv.commands.table import load_all\n"
        "load_all()\n"
        "for m in pkgutil.iter_modules(shardkv.commands.__path__):\n"
        "    importlib.import_module('shardkv.commands.' + m.name)\n"
        "print(sorted(m for m in sys.modules if m.startswith(('shardkv.router', 'shardkv.worker'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_module_that_is_not_a_registered_family_is_an_error_at_start() -> None:
    code = (
        "import pkgutil\n"
        "real = pkgutil.iter_modules\n"
        "def fake(path):\n"
        "    yield from real(path)\n"
        "    yield pkgutil.ModuleInfo(None, 'zsets', False)\n"
        "pkgutil.iter_modules = fake\n"
        "from shardkv.commands.table import load_all\n"
        "load_all()\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode != 0
    assert "modules neither family nor helper: ['zsets']" in out.stderr


ERROR_SCRIPT = [
    "CONFIG RESETSTAT", "FLUSHALL", "NOSUCHCOMMAND a b", "GET", "GET a b", "SET l x", "LPUSH l y",
    "INCR l", "SET n 1 EX -5", "SET n 1 FOO", "LPOP nolist", "HGET l f", "OBJECT FOO", "SELECT 99",
]


def _stats(port: int) -> tuple[dict[str, str], dict[str, str]]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        replies(sock, [cmd(c) for c in ERROR_SCRIPT])
        errorstats, stats, commandstats = replies(sock, [cmd("INFO errorstats"), cmd("INFO stats"),
                                                         cmd("INFO commandstats")])
    assert isinstance(errorstats, bytes) and isinstance(stats, bytes) and isinstance(commandstats, bytes)
    fields = {}
    for text in (errorstats, stats):
        fields.update(line.split(":", 1) for line in text.decode().splitlines() if ":" in line)
    cmdstats = dict(line.split(":", 1) for line in commandstats.decode().splitlines() if ":" in line)
    return fields, cmdstats


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed (CI installs it)")
def test_errorstats_and_rejected_calls_match_redis(srv: Server) -> None:
    with reference_redis() as port:
        theirs, their_cmds = _stats(port)
        ours, our_cmds = _stats(srv.port)
    errorstat = {k: v for k, v in theirs.items() if k.startswith("errorstat_")}
    assert errorstat == {k: v for k, v in ours.items() if k.startswith("errorstat_")}
    assert errorstat  # the script made errors of several kinds
    assert ours["total_error_replies"] == theirs["total_error_replies"]
    for name in ("cmdstat_get", "cmdstat_incr", "cmdstat_set", "cmdstat_select", "cmdstat_hget"):
        mine = dict(kv.split("=") for kv in our_cmds[name].split(","))
        ref_fields = dict(kv.split("=") for kv in their_cmds[name].split(","))
        for field in ("calls", "rejected_calls", "failed_calls"):
            assert mine[field] == ref_fields[field], (name, field, mine, ref_fields)


def test_info_has_the_cluster_section_clients_look_for(srv: Server) -> None:
    with srv.raw() as sock:
        default, cluster, everything = replies(sock, [cmd("INFO"), cmd("INFO cluster"), cmd("INFO all")])
    assert isinstance(default, bytes) and isinstance(cluster, bytes) and isinstance(everything, bytes)
    assert cluster == b"# Cluster\r\ncluster_enabled:0\r\n"
    headers = [line for line in default.decode().split("\r\n") if line.startswith("#")]
    assert headers == ["# Server", "# Clients", "# Memory", "# Persistence", "# Stats", "# Replication", "# CPU",
                       "# Modules", "# Errorstats", "# Cluster", "# Keyspace"]
    assert "# Commandstats" in everything.decode()


def test_server_commands_see_the_pipeline_before_them(srv: Server) -> None:
    """DBSIZE reads every shard's counters at once: it must run after this client's earlier
    writes on the other shard have been applied, as on one Redis."""
    a, b = on_shard(0, "p"), on_shard(1, "p")
    with srv.raw() as sock:
        for _ in range(30):
            got = replies(sock, [cmd("FLUSHALL"), cmd(f"SET {a} v"), cmd(f"SET {b} v"), cmd("DBSIZE"),
                                 cmd(f"DEL {b}"), cmd("KEYS *"), cmd(f"SET {b} w"), cmd("RANDOMKEY"), cmd("DBSIZE")])
            assert got[3] == 2 and got[5] == [a.encode()] and got[8] == 2, (_, got)


def test_database_indexes_are_read_as_redis_reads_them(srv: Server) -> None:
    with srv.raw() as sock:
        got = replies(sock, [cmd("SELECT 4294967296"), cmd("SELECT x"), cmd("SELECT 16"), cmd("SWAPDB 0 4294967296"),
                             cmd("SWAPDB x 0"), cmd("SWAPDB 0 16"), cmd("SELECT 15")])
    assert [str(e) for e in got[:6]] == [
        "ERR value is out of range, value must between -2147483648 and 2147483647",
        "ERR value is not an integer or out of range", "ERR DB index is out of range",
        "ERR invalid second DB index", "ERR invalid first DB index", "ERR DB index is out of range"]
    assert got[6] == b"OK"


def _matches_redis_on_both_workers(branches: Callable[[int, list[str]], object], keys: list[str]) -> Server:
    """Run branches(port, keys) on redis-server (no active expiry), then four times on a new
    2-shard shardkv (new connections: SO_REUSEPORT spreads them over both workers), which must
    answer alike each time; the shardkv server, still running, for more checks."""
    ours = start_server("--shards", "2", "--maxmemory", "64mb", "--expire-keys-per-tick-max", "0")
    try:
        with reference_redis() as port:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                replies(sock, [cmd("DEBUG SET-ACTIVE-EXPIRE 0")])
            theirs = branches(port, keys)
        for _ in range(4):
            assert branches(ours.port, keys) == theirs
    except BaseException:
        ours.stop()
        raise
    return ours


def _fast_branches(port: int, keys: list[str]) -> tuple[list[object], dict[str, str]]:
    """Pipelines of GETs, SETs and the INCR family through every branch of the compiled fast path
    (hits and misses on both shards, a hash tag, any case, a list, expired keys, times removed
    and kept, wrong arity, an empty key, overflows, values and increments that are not integers),
    then the counters they moved."""
    a0, a1 = keys
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        replies(sock, [cmd("FLUSHALL"), cmd("CONFIG RESETSTAT"), cmd(f"SET {a0} v0"), cmd(f"SET {a1} v1"),
                       cmd(f"SET {{{a0}}}t vt"), cmd("RPUSH list x"), cmd("RPUSH list2 x"), cmd("SET gone v PX 1"),
                       cmd("SET gone2 v PX 1"), cmd("SET timed v EX 100"), cmd("SET gone3 5 PX 1"),
                       cmd("SET n 10"), cmd("SET tn 7 EX 100"), cmd("SET big 9223372036854775807"),
                       cmd("SET small -9223372036854775808"), cmd("SET text abc"), [b"SET", b"spaced", b" 1"]])
        deadline_s = time.time() + 0.02
        while time.time() < deadline_s:  # wait for the keys' time to pass (nothing removes them: no active expiry)
            time.sleep(0.005)
        got = replies(sock, [cmd(f"GET {a0}"), cmd(f"get {a1}"), cmd(f"gEt {{{a0}}}t"), cmd("GET nokey"),
                             cmd("GET list"), cmd(f"GET {a0}"), cmd("GET gone"), cmd("GET"), cmd(f"GET {a0} x"),
                             [b"GET", b""], cmd(f"GET {a1}"), cmd("SET after 1"), cmd("GET after"),
                             cmd("GET nokey"), cmd(f"SET {a0} w0"), cmd(f"sEt {a1} w1"), cmd("SET timed w"),
                             cmd("SET list2 s"), cmd("SET gone2 back"), cmd("SET new1 n"), [b"SET", b"", b""],
                             cmd("SET after"), cmd(f"GET {a0}"), cmd(f"GET {a1}"), cmd("TTL timed"),
                             cmd("TYPE list2"), cmd("GET gone2"), cmd("DBSIZE"), cmd("GET new1"),
                             cmd("INCR n"), cmd("incr n"), cmd("DECR n"), cmd("INCRBY n 5"), cmd("DECRBY n 3"),
                             cmd("INCR fresh"), cmd("DECR fresh2"), cmd("INCRBY fresh3 -4"), cmd("INCR tn"),
                             cmd("TTL tn"), cmd("INCR gone3"), cmd("TTL gone3"), cmd("INCR big"), cmd("DECR small"),
                             cmd("INCRBY n abc"), cmd("INCRBY n +1"), cmd("DECRBY n -9223372036854775808"),
                             cmd("INCR text"), cmd("INCR list"), cmd("INCR spaced"), cmd("INCR"), cmd("INCR n x"),
                             cmd("INCRBY big -1"), cmd(f"INCR {a0}"), cmd("GET n"), cmd("OBJECT ENCODING n"),
                             cmd("DBSIZE")])
        stats, commandstats, keyspace = replies(sock, [cmd("INFO stats"), cmd("INFO commandstats"),
                                                       cmd("INFO keyspace")])
    assert isinstance(stats, bytes) and isinstance(commandstats, bytes) and isinstance(keyspace, bytes)
    fields = dict(line.split(":", 1) for line in (stats + commandstats + keyspace).decode().splitlines() if ":" in line)
    return got, {k: fields[k] for k in ("keyspace_hits", "keyspace_misses", "expired_keys", "db0")} | {
        name: ",".join(p for p in fields[f"cmdstat_{name}"].split(",") if "usec" not in p)
        for name in ("get", "set", "incr", "decr", "incrby", "decrby")}


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed (CI installs it)")
def test_pipelined_fast_commands_match_redis_on_every_branch_of_the_fast_path() -> None:
    """GET, SET and the INCR family on local keys run in C, up to the first request they do not
    take whole; replies and the counters INFO shows (hits, misses, expired keys, keys and keys
    with a time, calls, failed and rejected calls) are Redis's, whichever worker the connection
    lands on."""
    keys = [on_shard(0, "fast"), on_shard(1, "fast")]
    ours = _matches_redis_on_both_workers(_fast_branches, keys)
    try:
        with ours.raw() as sock:
            sock.sendall(encode_command([b"HELLO", b"3"]))
            assert sock.recv(65536).startswith(b"%")
            sock.sendall(encode_command([b"GET", b"nokey"]) + encode_command([b"GET", keys[0].encode()]))
            got = b""
            while len(got) < len(b"_\r\n$2\r\nw0\r\n"):
                chunk = sock.recv(65536)
                assert chunk, got
                got += chunk
            assert got == b"_\r\n$2\r\nw0\r\n"  # RESP3's null for the missing key
    finally:
        ours.stop()


def _collection_branches(port: int, keys: list[str]) -> tuple[list[object], dict[str, str]]:
    """Pipelines of LPUSH, RPUSH, LPOP, RPOP, SADD and HSET through every branch of the fast
    path's large collections (lists of chunks, hash and set tables, on both shards): a chunk
    with room and a full one, a chunk and the list emptied, a table growing, a member already
    there, small collections, new keys, expired ones, other types and other forms; then what the
    collections hold and the counters the commands moved."""
    list0, list1 = keys
    big = "x" * 100
    setup = [cmd("FLUSHALL"), cmd("CONFIG RESETSTAT"), cmd("SET text abc"), cmd("RPUSH small a b"),
             cmd("SADD smallset a"), cmd("HSET smallhash f v")]
    for name in (list0, list1, f"{{{list0}}}gone"):
        setup.append([b"RPUSH", name.encode()] + [b"%s%d" % (big.encode(), i) for i in range(300)])
    setup.append(cmd("RPUSH pair p1 p2"))
    for name in ("set", f"{{{list1}}}set"):
        setup.append([b"SADD", name.encode()] + [b"m%d" % i for i in range(200)])
    setup.append([b"HSET", b"hash"] + [x for i in range(200) for x in (b"f%d" % i, b"v%d" % i)])
    setup.append(cmd(f"PEXPIRE {{{list0}}}gone 1"))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        replies(sock, setup)
        deadline_s = time.time() + 0.02
        while time.time() < deadline_s:  # wait for the key's time to pass (nothing removes it: no active expiry)
            time.sleep(0.005)
        pipeline = []
        for name in (list0, list1):
            pipeline += [cmd(f"LPUSH {name} {big}L{i}") for i in range(150)]  # fills the first chunk, then more
            pipeline += [cmd(f"RPUSH {name} r{i}") for i in range(5)]
            pipeline += [cmd(f"LPOP {name}") for _ in range(160)] + [cmd(f"rpop {name}") for _ in range(7)]
            pipeline += [cmd(f"LPUSH {name} a b"), cmd(f"LPOP {name} 2"), cmd(f"LRANGE {name} 0 -1"),
                         cmd(f"LLEN {name}")]
        pipeline += [cmd("LPUSH small c"), cmd("LPOP small"), cmd("RPUSH newlist n"), cmd("LPOP nokey"),
                     cmd("LPUSH text x"), cmd("LPOP text"), cmd(f"LPUSH {{{list0}}}gone back"),
                     cmd(f"LRANGE {{{list0}}}gone 0 -1"), cmd("LPOP pair"), cmd("RPOP pair"), cmd("EXISTS pair"),
                     cmd("LPUSH"), cmd("LPOP")]
        for name in ("set", f"{{{list1}}}set"):
            pipeline += [cmd(f"SADD {name} n{i}") for i in range(150)]  # past 3/4 of the table: it grows
            pipeline += [cmd(f"SADD {name} m1"), cmd(f"SADD {name} n1"), cmd(f"SCARD {name}")]
        pipeline += [cmd(f"HSET hash g{i} w{i}") for i in range(150)]
        pipeline += [cmd("HSET hash f1 changed"), cmd("HSET hash g2 w2"), cmd("HLEN hash"), cmd("HGET hash f1"),
                     cmd("SADD smallset b"), cmd("HSET smallhash g w"), cmd("SADD text m"), cmd("HSET text f v"),
                     cmd("SADD newset m"), cmd("HSET newhash f v"), cmd("HSET hash f"), cmd("SADD set"),
                     cmd("HSET hash a 1 b 2"), cmd("SADD set p q"), cmd("DBSIZE")]
        got = replies(sock, pipeline)
        for whole in ("SMEMBERS set", f"SMEMBERS {{{list1}}}set", "HGETALL hash"):
            (items,) = replies(sock, [cmd(whole)])
            assert isinstance(items, list)
            got.append(sorted(items))
        stats, commandstats, keyspace = replies(sock, [cmd("INFO stats"), cmd("INFO commandstats"),
                                                       cmd("INFO keyspace")])
    assert isinstance(stats, bytes) and isinstance(commandstats, bytes) and isinstance(keyspace, bytes)
    fields = dict(line.split(":", 1) for line in (stats + commandstats + keyspace).decode().splitlines() if ":" in line)
    return got, {k: fields[k] for k in ("expired_keys", "db0")} | {
        name: ",".join(p for p in fields[f"cmdstat_{name}"].split(",") if "usec" not in p)
        for name in ("lpush", "rpush", "lpop", "rpop", "sadd", "hset")}


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed (CI installs it)")
def test_pipelined_collection_commands_match_redis_on_every_branch_of_the_fast_path() -> None:
    """LPUSH, RPUSH, LPOP, RPOP, SADD and HSET on large collections run in C (one publishing
    store each), the rest in Python; replies, contents and counters are Redis's, whichever worker
    the connection lands on."""
    ours = _matches_redis_on_both_workers(_collection_branches, [on_shard(0, "flist"), on_shard(1, "flist")])
    try:
        with ours.raw() as sock:  # every block the changes freed is free again: an empty server holds none
            assert replies(sock, [cmd("FLUSHALL")]) == [b"OK"]
            info = replies(sock, [cmd("INFO memory")])[0]
        assert isinstance(info, bytes) and b"used_memory_dataset:0\r\n" in info, info
    finally:
        ours.stop()


def _read_branches(port: int, keys: list[str]) -> tuple[list[object], dict[str, str]]:
    """Pipelines of PING, EXISTS, HGET, HEXISTS, SISMEMBER and LINDEX through every branch of the
    fast path's reads, in RESP2 and RESP3: small (packed) and large (table, chunks) hashes, sets
    and lists on both shards, indexes from both ends and past them, fields and members present
    and absent, missing keys, an expired key, other types and other forms; then the hits,
    misses and calls they counted."""
    h0, h1 = keys
    setup = [cmd("FLUSHALL"), cmd("CONFIG RESETSTAT"), cmd("SET text abc"), cmd("HSET smallhash f v e w"),
             cmd("SADD smallset a b"), cmd("RPUSH list x"), cmd("HSET gonehash f v"), cmd("PEXPIRE gonehash 1"),
             cmd("RPUSH gonelist a"), cmd("PEXPIRE gonelist 1")]
    for name in (h0, h1):
        setup.append([b"HSET", name.encode()] + [x for i in range(200) for x in (b"f%d" % i, b"v%d" % i)])
        setup.append([b"SADD", f"{{{name}}}set".encode()] + [b"m%d" % i for i in range(200)])
    setup.append([b"HSET", b"emptyval", b"f", b""])
    setup.append([b"RPUSH", b"smalllist", b"a", b"", b"c"])
    for name in (h0, h1):
        setup.append([b"RPUSH", f"{{{name}}}list".encode()] + [b"e%d" % i + b"x" * (i % 90) for i in range(400)])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        replies(sock, setup)
        deadline_s = time.time() + 0.02
        while time.time() < deadline_s:  # wait for the key's time to pass (nothing removes it: no active expiry)
            time.sleep(0.005)
        got: list[object] = []
        for proto in ("2", "3"):
            replies(sock, [cmd(f"HELLO {proto}")])
            pipeline = [cmd("PING"), cmd("ping"), cmd("PING hi"), cmd("EXISTS text"), cmd("exists nokey"),
                        cmd("EXISTS text smallhash"), cmd("EXISTS"), cmd("HGET smallhash f"), cmd("HGET smallhash e"),
                        cmd("HGET smallhash v"), cmd("HGET smallhash"), cmd("HGET nokey f"), cmd("HGET text f"),
                        cmd("HGET list f"), cmd("HGET smallset a"), cmd("HEXISTS smallhash e"),
                        cmd("HEXISTS smallhash x"), cmd("HEXISTS nokey f"), cmd("HEXISTS text f"),
                        cmd("SISMEMBER smallset a"), cmd("SISMEMBER smallset f"), cmd("SISMEMBER nokey a"),
                        cmd("SISMEMBER smallhash f"), cmd("SISMEMBER smallset"), cmd("HGET emptyval f"),
                        cmd("HGET emptyval g"), cmd("LINDEX smalllist 0"), cmd("LINDEX smalllist 1"),
                        cmd("LINDEX smalllist -1"), cmd("LINDEX smalllist -3"), cmd("LINDEX smalllist -4"),
                        cmd("LINDEX smalllist 3"), cmd("LINDEX nokey 0"), cmd("LINDEX nokey x"),
                        cmd("LINDEX smalllist x"), cmd("LINDEX smalllist 1.5"), cmd("LINDEX text 0"),
                        cmd("LINDEX smallhash 0"), cmd("LINDEX smalllist"), cmd("LINDEX smalllist 0 1"),
                        cmd("LINDEX smalllist 99999999999999999999"), cmd("LINDEX smalllist -0")]
            for name in (h0, h1):
                pipeline += [cmd(f"HGET {name} f{i}") for i in (0, 7, 199, 200)]
                pipeline += [cmd(f"HEXISTS {name} f{i}") for i in (3, 250)]
                pipeline += [cmd(f"SISMEMBER {{{name}}}set m{i}") for i in (0, 150, 300)]
                pipeline += [cmd(f"EXISTS {name}"), cmd(f"HGET {{{name}}}set m0"), cmd(f"SISMEMBER {name} f0")]
                pipeline += [cmd(f"LINDEX {{{name}}}list {i}") for i in (0, 1, 127, 128, 200, 399, 400, -1, -400, -401)]
                pipeline += [cmd(f"LINDEX {name} 0"), cmd(f"LINDEX {{{name}}}list nan")]
            if proto == "3":  # the expired key, once: reading it deletes it
                pipeline += [cmd("HGET gonehash f"), cmd("EXISTS gonehash"), cmd("HEXISTS gonehash f"),
                             cmd("LINDEX gonelist 0"), cmd("LLEN gonelist")]
            got += replies(sock, pipeline)
        stats, commandstats = replies(sock, [cmd("INFO stats"), cmd("INFO commandstats")])
    assert isinstance(stats, bytes) and isinstance(commandstats, bytes)
    fields = dict(line.split(":", 1) for line in (stats + commandstats).decode().splitlines() if ":" in line)
    return got, {k: fields[k] for k in ("keyspace_hits", "keyspace_misses", "expired_keys")} | {
        name: ",".join(p for p in fields[f"cmdstat_{name}"].split(",") if "usec" not in p)
        for name in ("ping", "exists", "hget", "hexists", "sismember", "lindex")}


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed (CI installs it)")
def test_pipelined_reads_match_redis_on_every_branch_of_the_fast_path() -> None:
    """PING, EXISTS, HGET, HEXISTS, SISMEMBER and LINDEX run in C on small and large hashes, sets
    and lists (the handlers read with the same compiled functions), the rest in Python; replies and
    counters are Redis's in RESP2 and RESP3, whichever worker the connection lands on."""
    ours = _matches_redis_on_both_workers(_read_branches, [on_shard(0, "fread"), on_shard(1, "fread")])
    ours.stop()


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed (CI installs it)")
def test_a_read_the_fast_path_stops_half_way_through_is_answered_in_order() -> None:
    """A read of fast commands only, on the worker's own keys, is run and answered by the fast
    path in one go (Connection.buffer_updated); one that stops at a request it does not take
    whole (an expired key, a wrong type, a value that is not an integer) hands that request and
    the rest to the Python pipeline, which answers them after what already ran, as Redis does."""
    def run(port: int) -> list[object]:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            replies(sock, [cmd("FLUSHALL"), cmd("SET gone v PX 1"), cmd("SET text abc"), cmd("RPUSH list a")])
            deadline_s = time.time() + 0.02
            while time.time() < deadline_s:  # wait for the key's time to pass (no active expiry removes it)
                time.sleep(0.005)
            got = []
            for tail in ([cmd("GET gone")], [cmd("INCR text")], [cmd("GET list")], [cmd("SET k w")]):
                got += replies(sock, [cmd("SET k v"), cmd("GET k"), *tail, cmd("INCR n"), cmd("GET k")])
            return got + replies(sock, [cmd("DBSIZE"), cmd("GET n")])

    ours = start_server("--shards", "1", "--maxmemory", "64mb", "--expire-keys-per-tick-max", "0")
    try:
        with reference_redis() as port:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                replies(sock, [cmd("DEBUG SET-ACTIVE-EXPIRE 0")])
            theirs = run(port)
        assert run(ours.port) == theirs
    finally:
        ours.stop()
