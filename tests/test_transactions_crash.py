"""A worker killed at each step of an EXEC that writes to both shards: after the restart the whole
transaction is there or none of it, and the client got what the README promises (a test-only
hook, SHARDKV_TEST_CRASH=<worker>:<step>, makes the first process of that worker kill itself with
SIGKILL at that step)."""

from __future__ import annotations

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from conftest import client_on, mget_after_restart, start_server, wait_until
from shardkv.router.dispatch import key_slot

A, B = "{b}a", "{a}b"  # shard 0 and shard 1 of two
INITIAL, DONE = (b"0", b"0"), (b"2", b"2")
# -EXECABORT ..., as redis-py raises it
RESTARTED = ("ExecAbortError: Transaction discarded because of: a shard worker restarted during EXEC; "
             "none of it was applied")


def test_the_keys_are_on_different_shards() -> None:
    assert key_slot(A.encode()) * 2 // 16384 == 0 and key_slot(B.encode()) * 2 // 16384 == 1


def run(monkeypatch: pytest.MonkeyPatch, crash: str, coordinator: int, keys: tuple[str, str] = (A, B)
        ) -> tuple[object, tuple[bytes | None, bytes | None]]:
    """Start a server whose worker kills itself at `crash`, run the transaction from a client of
    worker `coordinator`, and return what the client got and the keys once the worker is back."""
    monkeypatch.setenv("SHARDKV_TEST_CRASH", crash)
    server = start_server("--shards", "2", "--maxmemory", "64mb")
    try:
        r = client_on(server, coordinator, retry=Retry(NoBackoff(), 0))  # no resending
        r.mset(dict.fromkeys(keys, 0))
        outcome: object
        try:  # on r's own connection (a redis-py pipeline would take another from the pool)
            r.execute_command("MULTI")
            for cmd in (["SET", keys[0], 1], ["SET", keys[1], 1], ["INCR", keys[0]], ["INCR", keys[1]]):
                r.execute_command(*cmd)
            outcome = r.execute_command("EXEC")
        except redis.ConnectionError:
            outcome = "connection lost"
        except redis.ResponseError as e:
            outcome = f"{type(e).__name__}: {e}"
        check = server.client()
        wait_until(lambda: int(check.info("server")["worker_restarts"]) == 1, 20, "the worker's restart")

        got = mget_after_restart(check, list(keys))
        return outcome, (got[0], got[1])  # type: ignore[return-value]
    finally:
        server.stop()


@pytest.mark.parametrize("step", ["exec:locked", "exec:1", "exec:2", "exec:3", "exec:4", "part:1", "part:2"])
def test_the_coordinator_dies_before_the_commit_point(monkeypatch: pytest.MonkeyPatch, step: str) -> None:
    outcome, values = run(monkeypatch, f"1:{step}", coordinator=1)
    assert outcome == "connection lost" and values == INITIAL


def test_the_coordinator_dies_after_the_commit_point(monkeypatch: pytest.MonkeyPatch) -> None:
    outcome, values = run(monkeypatch, "1:exec:decided", coordinator=1)
    assert outcome == "connection lost" and values == DONE


@pytest.mark.parametrize("step", ["part:1", "part:2"])
def test_another_shard_dies_before_the_commit_point(monkeypatch: pytest.MonkeyPatch, step: str) -> None:
    outcome, values = run(monkeypatch, f"0:{step}", coordinator=1)
    assert outcome == RESTARTED and values == INITIAL


def test_another_shard_dies_after_the_commit_point(monkeypatch: pytest.MonkeyPatch) -> None:
    outcome, values = run(monkeypatch, "0:unlock", coordinator=1)
    assert outcome == [b"OK", b"OK", 2, 2] and values == DONE


def test_the_lower_shard_coordinates_too(monkeypatch: pytest.MonkeyPatch) -> None:
    outcome, values = run(monkeypatch, "1:part:2", coordinator=0)
    assert outcome == RESTARTED and values == INITIAL
    outcome, values = run(monkeypatch, "0:exec:3", coordinator=0)
    assert outcome == "connection lost" and values == INITIAL


@pytest.mark.parametrize("step,committed", [("exec:1", False), ("exec:3", False), ("exec:decided", True)])
def test_a_transaction_on_the_own_shard_alone(monkeypatch: pytest.MonkeyPatch, step: str, committed: bool) -> None:
    outcome, values = run(monkeypatch, f"1:{step}", coordinator=1, keys=("{a}x", "{a}y"))
    assert outcome == "connection lost" and values == (DONE if committed else INITIAL)
