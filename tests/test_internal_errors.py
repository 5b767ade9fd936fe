"""A bug that raises in the middle of a write, injected at every step of a journal commit.

The test hook SHARDKV_TEST_FAULTS=<worker>:<step>,... makes that worker's store raise once at each
named step (shardkv.store.FAULT_STEPS), in the order a commit passes them, so one command after
another meets the next step.  Whatever the step, the client gets `-ERR internal error` on a
connection it can go on using, the log has the traceback, INFO errorstats counts the error, and
the shard is left as a restart would leave it: unchanged when the failure came before the commit
word, wholly changed when it came after, with no block of memory lost either way."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from conftest import Server, client_on, key_on, start_server, wait_until
from shardkv.journal import (
    BATCH_STEPS_AFTER_COMMIT,
    BATCH_STEPS_BEFORE_COMMIT,
    WORD_STEPS_AFTER_COMMIT,
    WORD_STEPS_BEFORE_COMMIT,
)

TAG = key_on(0, "t")  # every key here is on shard 0, whose worker's store fails
A, B, H = f"{{{TAG}}}a", f"{{{TAG}}}b", f"{{{TAG}}}h"
HASH_FIELDS = 200  # past the packed layout: a hash table whose multi-slot changes use a word journal


@pytest.fixture(scope="module")
def faulty(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Path]]:
    log = tmp_path_factory.mktemp("faults") / "server.log"
    steps = BATCH_STEPS_BEFORE_COMMIT + BATCH_STEPS_AFTER_COMMIT + WORD_STEPS_BEFORE_COMMIT + WORD_STEPS_AFTER_COMMIT
    server = start_server("--shards", "2", "--maxmemory", "64mb",
                          env={"SHARDKV_TEST_FAULTS": ",".join(f"0:{step}" for step in steps)}, log=str(log))
    yield server, log
    assert server.stop() == 0


def errors_counted(r: redis.Redis) -> int:
    return int(r.info("errorstats").get("errorstat_ERR", {"count": 0})["count"])  # type: ignore[union-attr]


def dataset_bytes(r: redis.Redis) -> int:
    return int(r.info("memory")["used_memory_dataset"])  # type: ignore[index]


def fails_inside(r: redis.Redis, log: Path, step: str, *command: object) -> None:
    """The command meets the failure armed at `step`: an internal error, counted, and logged
    with its traceback and the shard's rebuild."""
    counted = errors_counted(r)
    with pytest.raises(redis.ResponseError, match="^internal error$"):
        r.execute_command(*command)
    assert r.ping() is True, "the connection stays usable"
    assert errors_counted(r) == counted + 1
    wait_until(lambda: f"InjectedFault: {step}\n" in log.read_text(), what=f"the traceback of {step}")
    assert "shard rebuilt after an internal error" in log.read_text()


def test_a_batch_failing_at_each_step_is_applied_whole_or_not_at_all(faulty: tuple[Server, Path]) -> None:
    server, log = faulty
    r = client_on(server, 0)  # MSET runs on this worker's own shard
    for step in BATCH_STEPS_BEFORE_COMMIT + BATCH_STEPS_AFTER_COMMIT:
        r.set(A, "old-a")  # (a single key's write publishes without a journal: no armed step)
        r.set(B, "old-b")
        used = dataset_bytes(r)
        fails_inside(r, log, step, "MSET", A, "new-a", B, "new-b")
        applied = step in BATCH_STEPS_AFTER_COMMIT
        assert r.mget(A, B) == ([b"new-a", b"new-b"] if applied else [b"old-a", b"old-b"]), step
        assert r.dbsize() == 2, step
        assert dataset_bytes(r) == used, f"{step}: the values are as long as before, so is the dataset"
    r.mset({A: "last-a", B: "last-b"})  # every armed step has fired: the next batch just works
    assert r.mget(A, B) == [b"last-a", b"last-b"]
    r.delete(A, B)


def test_a_word_journal_failing_at_each_step_is_applied_whole_or_not_at_all(faulty: tuple[Server, Path]) -> None:
    server, log = faulty
    r = client_on(server, 1)  # forwarded to shard 0's worker over the ring
    r.hset(H, mapping={f"f{i}": "v" for i in range(HASH_FIELDS)})
    assert r.object("encoding", H) == b"hashtable"
    for step in WORD_STEPS_BEFORE_COMMIT + WORD_STEPS_AFTER_COMMIT:
        used = dataset_bytes(r)
        # One field replaced and one added: two slots' stores through a word journal, then a free.
        fails_inside(r, log, step, "HSET", H, "f0", "new", "n1", "x")
        applied = step in WORD_STEPS_AFTER_COMMIT
        assert r.hmget(H, "f0", "n1") == ([b"new", b"x"] if applied else [b"v", None]), step
        assert r.hlen(H) == HASH_FIELDS + applied, f"{step}: the count is derived again"
        assert sorted(r.hkeys(H)) == sorted([f"f{i}".encode() for i in range(HASH_FIELDS)]
                                            + ([b"n1"] if applied else [])), step
        r.hset(H, "f0", "v")  # one field at a time: a single slot's store, no journal
        r.hdel(H, "n1")
        assert dataset_bytes(r) == used, f"{step}: no block was lost"
    assert r.hset(H, mapping={"n1": "x", "n2": "y"}) == 2
    r.delete(H)
