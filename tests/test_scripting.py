"""Lua scripts: Redis's replies and errors, atomic across shards, busy scripts and SCRIPT KILL,
and scripts that survive a worker's restart."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import threading
from collections.abc import Iterator

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from conftest import Crew, Server, client_on, mget_after_restart, start_server, wait_until
from shardkv.router.dispatch import key_slot

A, B = "{b}a", "{a}b"  # shard 0 and shard 1 of two


@pytest.fixture(scope="module")
def srv() -> Iterator[Server]:
    s = start_server("--shards", "2", "--maxmemory", "64mb", "--maxclients", "128")
    yield s
    s.stop()


def test_keys_on_both_shards() -> None:
    assert key_slot(A.encode()) * 2 // 16384 == 0 and key_slot(B.encode()) * 2 // 16384 == 1


def err(e: pytest.ExceptionInfo[redis.ResponseError]) -> str:
    return str(e.value)


def test_replies_and_conversions(srv: Server) -> None:
    r = srv.client()
    r.delete(A, B)
    assert r.eval("return {1,'a',{2,3},true,false,3.99,-3.99}", 0) == [1, b"a", [2, 3], 1, None, 3, -3]
    assert r.eval("return redis.call('set', KEYS[1], ARGV[1])", 1, A, "x") == b"OK"
    assert r.eval("return {redis.call('get', KEYS[1]), redis.call('incr', KEYS[2]), redis.call('get', 'nokey')}",
                  2, A, B) == [b"x", 1, None]
    assert r.eval("return redis.call('mget', KEYS[1], KEYS[2])", 2, A, B) == [b"x", b"1"]
    with pytest.raises(redis.ResponseError) as e:
        r.eval("return {err='bad thing'}", 0)
    assert err(e) == "bad thing"
    body = "return redis.call('incr', KEYS[1])"
    with pytest.raises(redis.ResponseError) as e:
        r.eval(body, 1, A)
    assert err(e) == (f"value is not an integer or out of range script: {hashlib.sha1(body.encode()).hexdigest()}, "
                      "on @user_script:1.")
    with pytest.raises(redis.ResponseError) as e:
        r.eval("return x", 0)
    assert "Script attempted to access nonexistent global variable 'x'" in err(e)
    with pytest.raises(redis.ResponseError) as e:
        r.eval("return 'x' ..", 0)
    assert err(e).startswith("Error compiling script (new function): user_script:1:")
    with pytest.raises(redis.ResponseError) as e:
        r.eval("return redis.pcall('incr', KEYS[1])", 1, A)
    assert err(e) == "value is not an integer or out of range"  # pcall's error table: no script suffix
    with pytest.raises(redis.ResponseError) as e:
        r.eval("return redis.call('blpop', 'l', 0)", 0)
    assert "This Redis command is not allowed from script" in err(e)


def test_shebang_and_read_only(srv: Server) -> None:
    r = srv.client()
    r.set(A, "x")
    assert r.eval("#!lua flags=no-writes\nreturn redis.call('get', KEYS[1])", 1, A) == b"x"
    with pytest.raises(redis.ResponseError) as e:
        r.eval("#!lua flags=no-writes\nreturn redis.call('set', KEYS[1], 1)", 1, A)
    assert err(e).startswith("Write commands are not allowed from read-only scripts.")
    with pytest.raises(redis.ResponseError) as e:
        r.eval_ro("#!lua\nreturn 1", 0)
    assert err(e) == "Can not execute a script with write flag using *_ro command."
    for body, text in [("#!lua", "Invalid script shebang"), ("#!python\nreturn 1", "Unexpected engine in script "
                       "shebang: #!python"), ("#!lua name=x\nreturn 1", "Unknown lua shebang option: name=x"),
                       ("#!lua flags=foo\nreturn 1", "Unexpected flag in script shebang: foo")]:
        with pytest.raises(redis.ResponseError) as e:
            r.eval(body, 0)
        assert err(e) == text
    assert r.eval("#!lua flags=\nreturn 2", 0) == 2


def test_script_cache_is_shared_and_survives_a_restart(srv: Server) -> None:
    clients = [srv.client(single_connection_client=True) for _ in range(8)]
    body = "return 'cached ' .. ARGV[1]"
    sha = clients[0].script_load(body)
    homes = set()
    for c in clients:
        homes.add(int(c.client_id()) % 2)  # type: ignore[arg-type]
        assert c.evalsha(sha, 0, "x") == b"cached x"
        assert c.script_exists(sha, "0" * 40) == [True, False]
    assert homes == {0, 1}
    with pytest.raises(redis.ResponseError) as e:
        clients[0].evalsha("0" * 40, 0)
    assert err(e) == "No matching script. Please use EVAL."
    os.kill(srv.worker_pids()[1], signal.SIGKILL)
    r = srv.client()
    wait_until(lambda: int(r.info("server")["workers_ready"]) == 2 and len(srv.worker_pids()) == 2, 20,
               "the worker to come back")
    for _ in range(10):
        c = srv.client(single_connection_client=True)
        wait_until(lambda c=c: _evalsha_after_restart(c, sha) == b"cached y", 10, "EVALSHA")  # type: ignore[misc]
        c.close()
    r.script_flush()
    with pytest.raises(redis.ResponseError):
        r.evalsha(sha, 0, "x")


def _evalsha_after_restart(c: redis.Redis, sha: str) -> object:
    """EVALSHA; a call that met the restart itself is told so (and nothing of it ran): None."""
    try:
        return c.evalsha(sha, 0, "y")
    except redis.ResponseError as e:
        assert "restarted while the script ran; none of it was applied" in str(e)
        return None


def test_scripts_are_atomic_across_shards(srv: Server) -> None:
    """Scripts move amounts between keys on both shards while readers sum them in a script too."""
    r = srv.client()
    accounts = [f"{{{'b' if i % 2 else 'a'}}}acct{i}" for i in range(6)]
    r.mset(dict.fromkeys(accounts, 100))
    total = 600
    move = r.register_script("redis.call('decrby', KEYS[1], ARGV[1]) redis.call('incrby', KEYS[2], ARGV[1])")
    crew = Crew()

    def mover(seed: int) -> None:
        rng = random.Random(seed)
        c = srv.client()
        while crew.running():
            a, b = rng.sample(accounts, 2)
            move(keys=[a, b], args=[rng.randint(1, 9)], client=c)
            crew.done("moves")

    def reader() -> None:
        c = srv.client()
        while crew.running():
            seen = c.eval("local s = 0 for _, k in ipairs(KEYS) do s = s + tonumber(redis.call('get', k)) end "
                          "return s", len(accounts), *accounts)
            assert seen == total, f"a script saw {seen}"
            crew.done("reads")

    for i in range(3):
        crew.start(mover, i)
    crew.start(reader)
    crew.wait_for("reads", 300, 120)
    crew.wait_for("moves", 600, 120)
    crew.finish()
    assert sum(int(x) for x in r.mget(accounts)) == total  # type: ignore[union-attr]


def test_a_busy_script_gets_busy_replies_and_script_kill(srv: Server) -> None:
    r = srv.client(single_connection_client=True)
    other = srv.client(single_connection_client=True)
    other.ping()
    r.config_set("busy-reply-threshold", 50)
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(srv.client().eval("while true do end", 0))
        except redis.ResponseError as e:
            outcome.append(str(e))

    thread = threading.Thread(target=run)
    thread.start()
    busy = "BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE."

    def replies_busy() -> bool:
        try:
            other.ping()
            return False
        except redis.ResponseError as e:
            assert str(e) == busy
            return True

    wait_until(replies_busy, 10, "BUSY")
    assert r.script_kill() is True
    thread.join(10)
    assert outcome and str(outcome[0]).startswith("Script killed by user with SCRIPT KILL... script: ")
    assert other.ping() is True
    with pytest.raises(redis.ResponseError) as e:
        r.script_kill()
    assert err(e) == "NOTBUSY No scripts in execution right now."  # (redis-py keeps codes it does not know)
    r.config_set("busy-reply-threshold", 5000)


def test_a_script_that_wrote_cannot_be_killed(srv: Server) -> None:
    r = srv.client(single_connection_client=True)
    r.config_set("busy-reply-threshold", 20)
    done: list[object] = []
    thread = threading.Thread(target=lambda: done.append(srv.client().eval(
        "redis.call('set', KEYS[1], 'w') local t = redis.call('time') local n = 0 "
        "while n < 20000000 do n = n + 1 end return 'finished'", 1, A)))
    thread.start()

    def refused() -> bool:
        try:
            r.script_kill()
        except redis.ResponseError as e:
            if str(e).startswith("NOTBUSY"):
                return False
            assert str(e).startswith("UNKILLABLE Sorry the script already executed write commands against the dataset.")
            return True
        raise AssertionError("a script that wrote was killed")

    wait_until(refused, 10, "UNKILLABLE")
    thread.join(60)
    assert done == [b"finished"] and r.get(A) == b"w"
    r.config_set("busy-reply-threshold", 5000)


@pytest.mark.parametrize("crash,outcome_kind", [("0:part:1", "restarted"), ("1:part:2", "lost")])
def test_a_worker_dying_mid_script_leaves_none_of_it(monkeypatch: pytest.MonkeyPatch, crash: str,
                                                      outcome_kind: str) -> None:
    monkeypatch.setenv("SHARDKV_TEST_CRASH", crash)
    server = start_server("--shards", "2", "--maxmemory", "64mb")
    try:
        c = client_on(server, 1, retry=Retry(NoBackoff(), 0))
        c.mset({A: 0, B: 0})
        try:
            got: object = c.eval("redis.call('incr', KEYS[1]) redis.call('incr', KEYS[2]) "
                                 "redis.call('incr', KEYS[1]) redis.call('incr', KEYS[2]) return 'done'", 2, A, B)
        except redis.ConnectionError:
            got = "lost"
        except redis.ResponseError as e:
            got = "restarted" if "restarted while the script ran; none of it was applied" in str(e) else str(e)
        assert got == outcome_kind
        check = server.client()
        wait_until(lambda: int(check.info("server")["worker_restarts"]) == 1, 20, "the restart")
        values = mget_after_restart(check, [A, B])
        assert values == [b"0", b"0"]
    finally:
        server.stop()


LIBRARY = """#!lua name=bank
redis.register_function('move', function(keys, args)
  redis.call('decrby', keys[1], args[1])
  return redis.call('incrby', keys[2], args[1])
end)
redis.register_function{function_name='balance', callback=function(keys) return redis.call('get', keys[1]) end,
                        flags={'no-writes'}, description='read one account'}
"""


def test_functions_are_shared_survive_a_restart_and_dump_and_restore(srv: Server) -> None:
    r = srv.client()
    r.function_flush()
    assert r.function_load(LIBRARY) == b"bank"
    with pytest.raises(redis.ResponseError) as e:
        r.function_load(LIBRARY)
    assert err(e) == "Library 'bank' already exists"
    r.mset({A: 10, B: 0})
    moved = 0
    homes: set[int] = set()
    while homes != {0, 1} or moved < 8:  # from clients of both workers (the kernel spreads them)
        c = srv.client(single_connection_client=True)
        homes.add(int(c.client_id()) % 2)  # type: ignore[arg-type]
        moved += 1
        assert c.fcall("move", 2, A, B, 1) == moved
        c.close()
        assert moved < 40, "no connection landed on one of the workers"
    assert r.mget(A, B) == [b"%d" % (10 - moved), b"%d" % moved]
    assert r.fcall_ro("balance", 1, B) == b"%d" % moved
    with pytest.raises(redis.ResponseError) as e:
        r.fcall_ro("move", 2, A, B, 1)
    assert err(e) == "Can not execute a script with write flag using *_ro command."
    listed = r.function_list(withcode=True)
    assert listed[0][1] == b"bank" and listed[0][7] == LIBRARY.encode()
    assert sorted(f[1] for f in listed[0][5]) == [b"balance", b"move"]
    payload = r.function_dump()
    os.kill(srv.worker_pids()[0], signal.SIGKILL)
    wait_until(lambda: int(r.info("server")["workers_ready"]) == 2 and len(srv.worker_pids()) == 2, 20,
               "the worker to come back")
    for _ in range(6):
        c = srv.client(single_connection_client=True)
        wait_until(lambda c=c: _fcall_after_restart(c) == b"%d" % moved, 10, "FCALL")  # type: ignore[misc]
        c.close()
    r.function_flush()
    with pytest.raises(redis.ResponseError):
        r.fcall("balance", 1, B)
    assert r.function_restore(payload) is True
    assert r.fcall("balance", 1, B) == b"%d" % moved
    with pytest.raises(redis.ResponseError) as e:
        r.function_restore(payload)
    assert err(e) == "Library bank already exists"
    with pytest.raises(redis.ResponseError) as e:
        r.function_restore(payload[:-1] + bytes([payload[-1] ^ 1]))
    assert err(e) == "DUMP payload version or checksum are wrong"
    assert r.function_delete("bank") is True
    assert r.function_dump() == bytes.fromhex("0a005d9b5c400f7fa2da")  # Redis's empty payload


def _fcall_after_restart(c: redis.Redis) -> object:
    try:
        return c.fcall("balance", 1, B)
    except redis.ResponseError as e:
        assert "restarted while the script ran; none of it was applied" in str(e)
        return None


def test_redis_py_lock_across_workers(srv: Server) -> None:
    """redis-py's Lock is Lua scripts (acquire with SET NX PX, release and extend by token): four
    threads on connections of both workers take turns on one lock and count under it."""
    r = srv.client()
    r.delete("lock:counter", "counter")
    crew = Crew()

    def worker() -> None:
        c = srv.client()
        while crew.running():
            with c.lock("lock:counter", timeout=5, blocking_timeout=10):
                value = int(c.get("counter") or 0)  # type: ignore[arg-type]
                c.set("counter", value + 1)
            crew.done("increments")

    for _ in range(4):
        crew.start(worker)
    crew.wait_for("increments", 200, 60)
    counts = crew.finish()
    assert int(r.get("counter")) == counts["increments"]  # type: ignore[arg-type]
    lock = r.lock("lock:other", timeout=1)
    assert lock.acquire(blocking=False) and not r.lock("lock:other").acquire(blocking=False)
    assert lock.extend(2) and lock.release() is None and not r.exists("lock:other")


def test_the_script_cache_is_bounded() -> None:
    small = start_server("--shards", "2", "--maxmemory", "64mb", "--scripts-bytes-max", "64kb")
    try:
        r = small.client()
        body = "return '%s'" % ("x" * 20000)
        for i in range(3):  # 3 x ~20 KB: at the limit
            r.eval(body + f" -- {i}", 0)
        for _ in range(4):  # a new one is refused on either worker, however it comes
            c = small.client(single_connection_client=True)
            with pytest.raises(redis.ResponseError) as e:
                c.eval(body + " -- one more", 0)
            assert err(e) == "command not allowed when used memory > 'maxmemory'."
            with pytest.raises(redis.ResponseError):
                c.script_load(body + " -- one more")
            c.close()
        assert r.eval(body + " -- 1", 0) == b"x" * 20000  # the cached ones still run
        r.script_flush()
        assert r.eval(body + " -- after flush", 0) == b"x" * 20000
    finally:
        small.stop()
