"""Commands of the core, over TCP with redis-py, on one shard and on two (keys that hop)."""

from __future__ import annotations

import time

import pytest
import redis

from conftest import Outcome, Server, call, exchange, expect_replies, wait_until


def err(excinfo: pytest.ExceptionInfo[BaseException]) -> str:
    return str(excinfo.value)


def test_ping_echo(server: Server) -> None:
    r = server.client()
    assert r.ping() is True
    assert exchange(server.raw(), b"PING hi\r\n") == Outcome(b"$2\r\nhi\r\n", "open")
    assert r.echo("abc") == b"abc"
    with pytest.raises(redis.ResponseError) as e:
        r.execute_command("PING", "a", "b")
    assert err(e) == "wrong number of arguments for 'ping' command"


def test_set_get_and_options(server: Server) -> None:
    r = server.client()
    assert r.set("k", "v") is True
    assert r.get("k") == b"v"
    assert r.set("k", "w", nx=True) is None
    assert r.get("k") == b"v"
    assert r.set("missing", "x", xx=True) is None
    assert r.exists("missing") == 0
    assert r.set("k", "w", get=True) == b"v"
    assert r.set("k", "z", ex=100) is True
    assert 99 <= r.ttl("k") <= 100
    assert r.set("k", "y", keepttl=True) is True
    assert 99 <= r.ttl("k") <= 100
    assert r.set("k", "q") is True
    assert r.ttl("k") == -1
    assert r.set("k", "p", px=100000) is True
    assert 99000 <= r.pttl("k") <= 100000
    now = int(time.time())
    assert r.set("k", "e", exat=now + 50)
    assert 48 <= r.ttl("k") <= 50
    assert r.set("k", "e", pxat=(now + 60) * 1000)
    assert 58 <= r.ttl("k") <= 60
    assert r.get("nothing") is None


def test_set_errors(server: Server) -> None:
    r = server.client()
    for args, text in [
        (("SET", "k", "v", "NX", "XX"), "syntax error"),
        (("SET", "k", "v", "EX"), "syntax error"),
        (("SET", "k", "v", "EX", "10", "PX", "10"), "syntax error"),
        (("SET", "k", "v", "EX", "0"), "invalid expire time in 'set' command"),
        (("SET", "k", "v", "EX", "-5"), "invalid expire time in 'set' command"),
        (("SET", "k", "v", "EX", "abc"), "value is not an integer or out of range"),
        (("SET", "k", "v", "EX", "9223372036854775807"), "invalid expire time in 'set' command"),
        (("SET", "k", "v", "BOGUS"), "syntax error"),
        (("SET", "k"), "wrong number of arguments for 'set' command"),
        (("GET",), "wrong number of arguments for 'get' command"),
    ]:
        with pytest.raises(redis.ResponseError) as e:
            r.execute_command(*args)
        assert err(e) == text, args
    assert r.exists("k") == 0  # nothing was written by a failed SET


def test_expired_key_is_gone(server: Server) -> None:
    r = server.client()
    t0 = time.monotonic()
    r.set("short", "v", px=50)
    wait_until(lambda: r.get("short") is None, 5, "the key to expire")
    assert time.monotonic() - t0 >= 0.05  # not before its time
    assert r.ttl("short") == -2


def test_incr_family(server: Server) -> None:
    r = server.client()
    assert r.incr("n") == 1
    assert r.incrby("n", 10) == 11
    assert r.decr("n") == 10
    assert r.decrby("n", 20) == -10
    r.set("big", str(2**63 - 1))
    with pytest.raises(redis.ResponseError) as e:
        r.incr("big")
    assert err(e) == "increment or decrement would overflow"
    r.set("s", "abc")
    with pytest.raises(redis.ResponseError) as e:
        r.incr("s")
    assert err(e) == "value is not an integer or out of range"
    for bad in (" 1", "01", "+1", "1.0", ""):
        r.set("s", bad)
        with pytest.raises(redis.ResponseError):
            r.incr("s")
    with pytest.raises(redis.ResponseError) as e:
        r.incrby("n", "x")
    assert err(e) == "value is not an integer or out of range"


def test_mset_mget_del_exists(server: Server) -> None:
    r = server.client()
    keys = [f"key:{i}" for i in range(50)]
    assert r.mset({k: k.upper() for k in keys}) is True
    assert r.mget(keys + ["nope"]) == [k.upper().encode() for k in keys] + [None]
    assert r.exists(*keys, "nope", keys[0]) == 51
    assert r.dbsize() == 50
    assert r.delete(*keys[:10], "nope") == 10
    assert r.dbsize() == 40
    with pytest.raises(redis.ResponseError) as e:
        r.execute_command("MSET", "a", "1", "b")
    assert err(e) == "wrong number of arguments for 'mset' command"


def test_wrongtype_and_type(server: Server) -> None:
    r = server.client()
    r.set("s", "1")
    assert r.type("s") == b"string"
    assert r.type("none") == b"none"


def test_expire_family(server: Server) -> None:
    r = server.client()
    r.set("k", "v")
    assert r.expire("k", 100) is True
    assert r.ttl("k") == 100
    assert r.expire("k", 50, gt=True) is False
    assert r.expire("k", 200, gt=True) is True
    assert r.expire("k", 300, nx=True) is False
    assert r.persist("k") is True
    assert r.ttl("k") == -1
    assert r.expire("missing", 10) is False
    assert r.expire("k", -1) is True
    assert r.exists("k") == 0
    r.set("k", "v")
    with pytest.raises(redis.ResponseError) as e:
        r.execute_command("EXPIRE", "k", "9223372036854775807")
    assert err(e) == "invalid expire time in 'expire' command"
    with pytest.raises(redis.ResponseError) as e:
        r.execute_command("EXPIRE", "k", "10", "NX", "XX")
    assert err(e) == "NX and XX, GT or LT options at the same time are not compatible"


def test_unknown_command_and_arity(server: Server) -> None:
    s = server.raw()
    assert exchange(s, b"*3\r\n$3\r\nfoo\r\n$1\r\na\r\n$1\r\nb\r\n") == \
        Outcome(b"-ERR unknown command 'foo', with args beginning with: 'a' 'b' \r\n", "open")
    assert exchange(s, b"*1\r\n$3\r\nfoo\r\n") == \
        Outcome(b"-ERR unknown command 'foo', with args beginning with: \r\n", "open")
    assert exchange(s, b"*1\r\n$3\r\nGET\r\n") == \
        Outcome(b"-ERR wrong number of arguments for 'get' command\r\n", "open")
    # The name and arguments come back as the bytes sent, UTF-8 or not, as Redis sends them.
    assert exchange(s, b"*2\r\n$2\r\n\xff1\r\n$3\r\na\x80b\r\n") == \
        Outcome(b"-ERR unknown command '\xff1', with args beginning with: 'a\x80b' \r\n", "open")
    # internal commands are not reachable by clients
    out = exchange(s, b"*2\r\n$7\r\n__flush\r\n$3\r\nall\r\n")
    assert out.state == "open" and out.data.startswith(b"-ERR unknown command '__flush'")


def test_inline_commands(server: Server) -> None:
    s = server.raw()
    assert exchange(s, b"PING\r\n") == Outcome(b"+PONG\r\n", "open")
    assert exchange(s, b"SET inl \"a b\\x41\"\r\nGET inl\r\n", replies=2) == Outcome(b"+OK\r\n$4\r\na bA\r\n", "open")
    # Empty lines are no commands: one reply, and nothing more for them.
    assert exchange(s, b"\r\n\r\nPING\n") == Outcome(b"+PONG\r\n", "open")
    assert exchange(s, b"\r\n\n", 0.3) == Outcome(b"", "silent")
    s.close()


def test_select_and_databases(server: Server) -> None:
    r = server.client()
    r.set("k", "db0")
    r.execute_command("SELECT", 9)
    assert r.get("k") is None
    r.set("k", "db9")
    assert r.dbsize() == 1
    r.execute_command("SELECT", 0)
    assert r.get("k") == b"db0"
    with pytest.raises(redis.ResponseError) as e:
        r.execute_command("SELECT", 16)
    assert err(e) == "DB index is out of range"
    with pytest.raises(redis.ResponseError) as e:
        r.execute_command("SELECT", "x")
    assert err(e) == "value is not an integer or out of range"
    r.execute_command("SELECT", 9)
    r.execute_command("FLUSHDB")
    assert r.dbsize() == 0
    r.execute_command("SELECT", 0)
    assert r.get("k") == b"db0"


def test_hello_resp3(server: Server) -> None:
    r = server.client(protocol=3)
    info = r.execute_command("HELLO", 3)
    assert info[b"proto"] == 3 and info[b"server"] == b"redis" and info[b"version"] == b"7.0.15"
    assert r.get("missing") is None
    s = server.raw()
    out = exchange(s, b"HELLO 3\r\n")
    assert out.state == "open" and out.data.startswith(b"%7\r\n")
    assert exchange(s, b"GET missing\r\n") == Outcome(b"_\r\n", "open")
    assert exchange(s, b"HELLO 4\r\n") == Outcome(b"-NOPROTO unsupported protocol version\r\n", "open")
    out = exchange(s, b"HELLO 2\r\n")
    assert out.state == "open" and out.data.startswith(b"*14\r\n")
    assert exchange(s, b"GET missing\r\n") == Outcome(b"$-1\r\n", "open")


def test_client_commands(server: Server) -> None:
    r = server.client()
    cid = r.client_id()
    assert r.client_setname("tester") is True
    assert r.client_getname() == "tester" or r.client_getname() == b"tester"
    with pytest.raises(redis.ResponseError) as e:
        r.execute_command("CLIENT", "SETNAME", "a b")
    assert err(e) == "Client names cannot contain spaces, newlines or special characters."
    others = [server.client() for _ in range(4)]
    for o in others:
        o.ping()
    listed = r.client_list()
    assert any(c["name"] == "tester" and int(c["id"]) == cid for c in listed)
    assert len(listed) >= 5
    victim = server.raw()
    victim_id = expect_replies(victim, b"CLIENT ID\r\n", 1)[0]
    assert isinstance(victim_id, int)
    assert r.execute_command("CLIENT", "KILL", "ID", victim_id) == 1
    assert exchange(victim, b"", 5, replies=None) == Outcome(b"", "closed")  # closed by the server, unasked
    assert r.execute_command("CLIENT", "KILL", "ID", victim_id) == 0
    assert r.execute_command("CLIENT", "SETINFO", "LIB-NAME", "x") in (b"OK", True)
    info = r.execute_command("CLIENT", "INFO")
    assert f"id={cid} " in (info.decode() if isinstance(info, bytes) else info)


def test_command_table(server: Server) -> None:
    r = server.client()
    n = call(r, "COMMAND", "COUNT")
    assert n >= 30
    info = call(r, "COMMAND", "INFO", "get", "mset", "nosuch")
    assert info[0][0] == b"get" and info[0][1] == 2 and info[0][3:6] == [1, 1, 1]
    assert info[1][0] == b"mset" and info[1][1] == -3 and info[1][3:6] == [1, -1, 2]
    assert info[2] is None
    assert call(r, "COMMAND", "GETKEYS", "MSET", "a", "1", "b", "2") == [b"a", b"b"]
    with pytest.raises(redis.ResponseError) as e:
        call(r, "COMMAND", "GETKEYS", "PING")
    assert err(e) == "The command has no key arguments"
    with pytest.raises(redis.ResponseError) as e:
        call(r, "COMMAND", "GETKEYS", "NOSUCH", "x")
    assert err(e) == "Invalid command specified"
    names = call(r, "COMMAND", "LIST")
    assert b"get" in names and not any(n.startswith(b"__") for n in names)
    assert len(call(r, "COMMAND")) == n
    assert "get" in r.command()  # redis-py's own parsing of COMMAND works


def test_config(server: Server) -> None:
    r = server.client()
    assert r.config_get("save") == {"save": ""} or r.config_get("save") == {b"save": b""}
    maxmemory = str(32 * 1024 * 1024 if server.args[1] == "1" else 64 * 1024 * 1024).encode()
    for proto in (2, 3):
        rp = server.client(protocol=proto)
        got = call(rp, "CONFIG", "GET", "maxmem*", "databases")
        expected = {b"maxmemory": maxmemory, b"maxmemory-policy": b"noeviction", b"databases": b"16"}
        if proto == 2:
            assert isinstance(got, list) and dict(zip(got[::2], got[1::2], strict=True)) == expected
        else:
            assert got == expected
    with pytest.raises(redis.ResponseError) as e:
        r.execute_command("CONFIG", "SET", "maxmemory", "1")
    assert err(e) == "CONFIG SET failed (possibly related to argument 'maxmemory') - can't set immutable config"
    with pytest.raises(redis.ResponseError) as e:
        r.execute_command("CONFIG", "SET", "nosuch", "1")
    assert err(e) == "Unknown option or number of arguments for CONFIG SET - 'nosuch'"
    assert r.execute_command("CONFIG", "RESETSTAT") == b"OK"


def test_info_sections(server: Server) -> None:
    r = server.client()
    r.set("a", 1)
    r.set("b", 2, ex=100)
    info = r.info("all")
    for field in ("redis_version", "connected_clients", "used_memory", "maxmemory", "rdb_changes_since_last_save",
                  "total_commands_processed", "rejected_connections", "role", "used_cpu_sys", "expired_keys"):
        assert field in info, field
    assert info["db0"]["keys"] == 2 and info["db0"]["expires"] == 1
    assert info["cmdstat_set"]["calls"] >= 2
    assert r.info("server")["redis_version"] == "7.0.15"


def test_time(server: Server) -> None:
    sec, usec = server.client().time()
    assert abs(sec - time.time()) < 5 and 0 <= usec < 1_000_000


def test_flushall_empties_every_shard(server: Server) -> None:
    r = server.client()
    r.mset({f"f{i}": i for i in range(200)})
    r.execute_command("SELECT", 3)
    r.set("x", 1)
    assert r.flushall() is True
    assert r.dbsize() == 0
    r.execute_command("SELECT", 0)
    assert r.dbsize() == 0


def test_keyspace_hits_and_misses(server: Server) -> None:
    """Counted as Redis counts them (the same sequence gives 10 and 5 on redis-server 7.0.15):
    each key lookup of a read-only command, on whichever shard owns the key; writes do not count."""
    r = server.client()
    r.set("a", 1)
    r.set("b", 2)
    r.hset("h", "f", "v")
    r.rpush("l", "x")
    r.config_resetstat()
    r.get("a"), r.get("b"), r.get("nosuch"), r.hget("h", "f"), r.hget("h", "nof")
    r.exists("a", "zz"), r.mget("a", "b", "c")
    r.set("a", 5), r.incr("a"), r.lrange("l", 0, -1), r.type("a"), r.ttl("zz"), r.strlen("a"), r.llen("nol")
    stats = r.info("stats")
    assert (stats["keyspace_hits"], stats["keyspace_misses"]) == (10, 5)
