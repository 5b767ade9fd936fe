"""Clients blocked in BLPOP and friends, on the worker that holds their connection ("home").

A blocking command first runs its non-blocking form (LMPOP, LMOVE ...) through the router, like
any command.  If that finds nothing, the client blocks: every shard owning one of its keys is
asked to watch those keys (`Waiters` on the owner, in worker/process.py).  A write to a watched
key makes the owner tell each watching home; the home runs the non-blocking form again, in the
order its clients blocked, and the first that gets elements is answered and unwatches.  So a
client blocked on keys of several shards is served exactly once, and no element is taken for a
client that is no longer waiting.  Timeouts, disconnects and CLIENT UNBLOCK end the wait too.
The number of blocked clients is bounded by the connections of this worker.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from shardkv import errors, protocol
from shardkv.commands.table import Command
from shardkv.protocol import read_reply
from shardkv.router.dispatch import Pending
from shardkv.stats import W_BLOCKED

if TYPE_CHECKING:
    import asyncio

    from shardkv.router.connection import Connection
    from shardkv.worker.process import Worker


@dataclass(frozen=True, slots=True)
class BlockPlan:
    """How to run a blocking command: its non-blocking form, keys, timeout, reply shape."""

    attempt_argv: list[bytes]
    keys: list[bytes]
    timeout_s: float  # 0: forever
    reply: Callable[[object], bytes | None]  # decoded attempt reply -> client reply, None = empty


@dataclass(eq=False)
class Blocked:
    conn: Connection
    plan: BlockPlan
    pending: Pending
    token: bytes
    db: int
    timer: asyncio.TimerHandle | None = None
    busy: bool = False  # an attempt is in flight
    again: bool = False  # a wake-up came during the attempt
    done: bool = False
    watched: set[int] = field(default_factory=set)


class Blocking:
    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.by_token: dict[bytes, Blocked] = {}
        self.seq = itertools.count(1)

    # ------------------------------------------------------------------ entry

    def start(self, conn: Connection, cmd: Command, argv: list[bytes]) -> bytes | Pending:
        assert cmd.blocking is not None
        try:
            plan: BlockPlan = cmd.blocking(argv)
        except errors.CommandError as exc:
            return protocol.error(exc.text)
        pending = Pending(conn, barrier=True)
        token = b"%d:%d:%d" % (self.worker.id, conn.id, next(self.seq))
        b = Blocked(conn, plan, pending, token, conn.db)
        self.worker.spawn(self._first(b))
        return pending

    async def _first(self, b: Blocked) -> None:
        if await self._attempt(b):
            return
        if b.conn.transport is None:
            return
        # Nothing yet: watch every key, then look once more (a push may have come meanwhile).
        self.by_token[b.token] = b
        self.worker.stats.add(self.worker.id, W_BLOCKED)
        if b.plan.timeout_s > 0:
            b.timer = self.worker.loop.call_later(b.plan.timeout_s, self.finish, b, protocol.null_array(b.conn.proto))
        router = self.worker.router
        for key in b.plan.keys:
            shard = router.shard_of(key)
            b.watched.add(shard)
            await router.call_shard(shard, [b"__watch", b"%d" % b.db, key, b"%d" % self.worker.id, b.token],
                                    b.db, b.conn.proto)
        if not b.done:
            self.wake(b.token)

    async def _attempt(self, b: Blocked) -> bool:
        """Run the non-blocking form once; True if the client got its answer."""
        await self.worker.wait_unlocked()  # as the client's own commands would
        reply = self.worker.router.execute(b.conn, b.plan.attempt_argv)
        if isinstance(reply, Pending):
            fut: asyncio.Future[bytes] = self.worker.loop.create_future()
            reply.callback = fut.set_result
            reply.conn = None
            raw = await fut
        else:
            raw = reply
        if b.done:
            return True
        if raw.startswith(b"-"):
            self.finish(b, raw)
            return True
        answer = b.plan.reply(read_reply(raw)[0])
        if answer is None:
            return False
        self.finish(b, answer)
        return True

    # ------------------------------------------------------------------ events

    def wake(self, token: bytes) -> None:
        b = self.by_token.get(token)
        if b is None or b.done:
            return
        if b.busy:
            b.again = True
            return
        b.busy = True
        self.worker.spawn(self._retry(b))

    async def _retry(self, b: Blocked) -> None:
        try:
            while not b.done:
                b.again = False
                if await self._attempt(b) or not b.again:
                    return
        finally:
            b.busy = False

    def finish(self, b: Blocked, reply: bytes) -> None:
        if b.done:
            return
        b.done = True
        if b.timer is not None:
            b.timer.cancel()
        if self.by_token.pop(b.token, None) is not None:
            self.worker.stats.add(self.worker.id, W_BLOCKED, -1)
        self.worker.spawn(self._unwatch(b))
        b.pending.resolve(reply)

    async def _unwatch(self, b: Blocked) -> None:
        router = self.worker.router
        for key in b.plan.keys:
            await router.call_shard(router.shard_of(key), [b"__unwatch", b"%d" % b.db, key, b.token], b.db, 2)

    def disconnected(self, conn: Connection) -> None:
        for b in [b for b in self.by_token.values() if b.conn is conn]:
            self.finish(b, protocol.null_array(2))

    def unblock(self, client_id: int, as_error: bool) -> bool:
        """CLIENT UNBLOCK: end the wait of that client as a timeout or with an error."""
        for b in list(self.by_token.values()):
            if b.conn.id == client_id:
                self.finish(b, protocol.error("UNBLOCKED client unblocked via CLIENT UNBLOCK") if as_error
                            else protocol.null_array(b.conn.proto))
                return True
        return False
