"""Blocking commands (BLPOP and friends), both sides of them, and the messages between the two.

Home side (`Blocking`, on the worker holding the client's connection): a blocking command tells
every shard owning one of its keys to watch them for it (`Watch`), then runs its non-blocking
form (LMPOP, LMOVE ...) through the router like any command, on the same rings.  If that finds
nothing, the client blocks; if it found something, the client unwatches.

Owner side (`Watchers`, on the worker owning the key): it keeps, per key, the clients waiting on
it in the order they blocked.  A key is *ready* when a value of the awaited type (a list) is
written at it by any command: a push, the destination of LMOVE, RENAME, MOVE, COPY, SORT ...
STORE, SWAPDB; never a write that left it empty (the retried pop of a waiting client is such a
write).  The store notes each record written for a watched key (`Store.touched`); after the
command the owner tells the *first* waiter's home (`Ready`), which runs the non-blocking form
again.  When that client stops waiting (served, timed out, gone) it unwatches and, if the key is
still ready, the next in line is told.  So clients are served first come, first served, and a
client blocked on keys of several shards is served exactly once.

Restarts: a home that restarts loses its clients, so owners drop its waiters; an owner that
restarts loses its table, so every home watches again (and retries) what its clients wait on.
Bounded: blocked clients are connections (maxclients); each watches at most its keys.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from shardkv import protocol
from shardkv.commands.context import BlockPlan, Pending
from shardkv.commands.table import Command
from shardkv.layout import TYPE_LIST
from shardkv.protocol import read_reply
from shardkv.router.dispatch import LOOKER, error_reply
from shardkv.stats import W_BLOCKED
from shardkv.store import Store
from shardkv.worker.peers import K_READY, K_UNWATCH, K_WATCH

if TYPE_CHECKING:
    from shardkv.router.connection import Connection
    from shardkv.worker.process import Worker


# ---------------------------------------------------------------------- messages between workers
# Sent one way on the request ring (FIFO per pair of workers, so a Watch is in place before the
# retry that follows it reaches the owner).


@dataclass(frozen=True, slots=True)
class Watch:
    """Home -> owner: client `token` of worker `home` waits for `key` in `db` to hold `kind`."""

    db: int
    key: bytes
    home: int
    token: bytes
    since_ns: int  # CLOCK_MONOTONIC (one clock for every process) when its worker read the command
    kind: int = TYPE_LIST

    def encode(self) -> bytes:
        return protocol.encode_command([b"%d" % self.db, self.key, b"%d" % self.home, self.token,
                                        b"%d" % self.since_ns, b"%d" % self.kind])

    @staticmethod
    def decode(body: bytes) -> Watch:
        db, key, home, token, since_ns, kind = _fields(body, 6)
        return Watch(int(db), key, int(home), token, int(since_ns), int(kind))


@dataclass(frozen=True, slots=True)
class Unwatch:
    """Home -> owner: that client waits no more."""

    db: int
    key: bytes
    token: bytes

    def encode(self) -> bytes:
        return protocol.encode_command([b"%d" % self.db, self.key, self.token])

    @staticmethod
    def decode(body: bytes) -> Unwatch:
        db, key, token = _fields(body, 3)
        return Unwatch(int(db), key, token)


@dataclass(frozen=True, slots=True)
class Ready:
    """Owner -> home: a key the client waits on is ready; try again."""

    token: bytes

    def encode(self) -> bytes:
        return protocol.encode_command([self.token])

    @staticmethod
    def decode(body: bytes) -> Ready:
        (token,) = _fields(body, 1)
        return Ready(token)


def _fields(body: bytes, n: int) -> list[bytes]:
    parsed = protocol.parse_requests(body, len(body), n, 1 << 40, 1)
    assert parsed.error is None and len(parsed.requests) == 1 and len(parsed.requests[0][0]) == n, body
    return parsed.requests[0][0]


# ---------------------------------------------------------------------- home side


@dataclass(eq=False)
class Blocked:
    conn: Connection
    plan: BlockPlan
    pending: Pending
    token: bytes
    db: int
    timer: asyncio.TimerHandle | None = None
    since_ns: int = field(default_factory=time.monotonic_ns)
    busy: bool = False  # an attempt is in flight
    counted: bool = False  # blocked (its first attempt found nothing): counted in INFO blocked_clients
    again: bool = False  # a wake-up came during the attempt
    done: bool = False
    watched: set[int] = field(default_factory=set)  # shards watching for it


class Blocking:
    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.by_token: dict[bytes, Blocked] = {}
        self.seq = itertools.count(1)

    def start(self, conn: Connection, cmd: Command, argv: list[bytes]) -> bytes | Pending:
        assert cmd.blocking is not None
        try:
            plan = cmd.blocking(argv)
        except Exception as exc:
            return error_reply(exc, cmd.name)
        pending = Pending(conn, barrier=True)
        token = b"%d:%d:%d" % (self.worker.id, conn.id, next(self.seq))
        b = Blocked(conn, plan, pending, token, conn.db)
        # Watch every key first, then look: each owner queues the client before it runs the look
        # (the same FIFO ring), so a push that lands after the look wakes it, and clients blocking
        # on one key are served in the order their workers read their commands (Watchers.watch),
        # as Redis serves them in the order they blocked.  The watches leave now, not when the
        # look's task runs; a client served by the look unwatches at once (finish).
        self.by_token[b.token] = b
        router = self.worker.router
        for key in b.plan.keys:
            shard = router.shard_of(key)
            b.watched.add(shard)
            self._send_watch(shard, Watch(b.db, key, self.worker.id, b.token, b.since_ns))
        if len(b.watched - {self.worker.id}):
            self.worker.peers.flush()
        b.busy = True  # a wake-up before or during the look is kept for after it (b.again)
        self.worker.spawn(self._guarded(b, self._first(b)))
        return pending

    async def _guarded(self, b: Blocked, step: Coroutine[Any, Any, None]) -> None:
        """Run a step of a blocked client; an exception ends its wait with an error reply."""
        try:
            await step
        except Exception as exc:
            self.finish(b, error_reply(exc, "a blocked client"))

    async def _first(self, b: Blocked) -> None:
        try:
            if await self._attempt(b, first=True):
                return
        finally:
            b.busy = False
        if b.conn.transport is None:
            self.finish(b, protocol.null_array(2))
            return
        b.counted = b.conn.blocked = True
        self.worker.stats.add(self.worker.id, W_BLOCKED)
        if b.plan.timeout_s > 0:
            b.timer = self.worker.loop.call_later(b.plan.timeout_s, self.finish, b, protocol.null_array(b.conn.proto))
        if b.again:
            self.wake(b.token)

    def _send_watch(self, shard: int, watch: Watch) -> None:
        if shard == self.worker.id:
            self.worker.watchers.watch(watch)
        else:
            self.worker.peers.send(shard, K_WATCH, 0, watch.encode())

    async def _attempt(self, b: Blocked, first: bool = False) -> bool:
        """Run the non-blocking form once; True if the client got its answer.  On a retry, a key
        that no longer holds a list keeps the client waiting, as Redis serves only list keys
        (a wrong destination of BLMOVE or BRPOPLPUSH is still the client's error)."""
        await self.worker.wait_unlocked()  # as the client's own commands would
        worker = self.worker
        if worker.inbox_pending():  # waiters other workers queued already go first (Watchers.watch)
            worker.drain()
        token = LOOKER.set(b.token)
        try:
            reply = worker.router.execute(b.conn, b.plan.attempt_argv)
        finally:
            LOOKER.reset(token)
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
            if not first and raw.startswith(b"-WRONGTYPE") and b.plan.attempt_argv[0] == b"lmpop":
                return False
            self.finish(b, raw)
            return True
        answer = b.plan.reply(read_reply(raw)[0])
        if answer is None:
            return False
        self.finish(b, answer)
        return True

    def wake(self, token: bytes) -> None:
        """A key the client waits on is ready (or may be): run the non-blocking form again."""
        b = self.by_token.get(token)
        if b is None or b.done:
            return
        if b.busy:
            b.again = True
            return
        b.busy = True
        self.worker.spawn(self._guarded(b, self._retry(b)))

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
        self.by_token.pop(b.token, None)
        if b.counted:
            b.counted = b.conn.blocked = False
            self.worker.stats.add(self.worker.id, W_BLOCKED, -1)
        router = self.worker.router
        for key in b.plan.keys:
            shard = router.shard_of(key)
            if shard not in b.watched:
                continue
            unwatch = Unwatch(b.db, key, b.token)
            if shard == self.worker.id:
                self.worker.watchers.unwatch(unwatch)
            else:
                self.worker.peers.send(shard, K_UNWATCH, 0, unwatch.encode())
        b.pending.resolve(reply)

    def owner_restarted(self, shard: int) -> None:
        """A worker restarted and lost its table of waiters: watch again there, and retry."""
        for b in list(self.by_token.values()):
            if shard in b.watched and not b.done:
                for key in b.plan.keys:
                    if self.worker.router.shard_of(key) == shard:
                        self._send_watch(shard, Watch(b.db, key, self.worker.id, b.token, b.since_ns))
                self.wake(b.token)

    def disconnected(self, conn: Connection) -> None:
        for b in [b for b in self.by_token.values() if b.conn is conn]:
            self.finish(b, protocol.null_array(2))

    def unblock(self, client_id: int, as_error: bool) -> bool:
        """CLIENT UNBLOCK: end the wait of that client as a timeout or with an error."""
        for b in list(self.by_token.values()):
            if b.conn.id == client_id and b.counted:
                self.finish(b, protocol.error("UNBLOCKED client unblocked via CLIENT UNBLOCK") if as_error
                            else protocol.null_array(b.conn.proto))
                return True
        return False


# ---------------------------------------------------------------------- owner side


class Watchers:
    """The clients waiting on this shard's keys, per key in blocking order."""

    def __init__(self, worker: Worker, store: Store) -> None:
        self.worker = worker
        self.store = store
        # (db, key) -> {token: (home worker, awaited type, when it blocked)}, in blocking order;
        # the store reads the keys to note writes to them.
        self.waiters: dict[tuple[int, bytes], dict[bytes, tuple[int, int, int]]] = {}
        store.watched = self.waiters
        # A ready key kept for the waiter told of it, until that waiter's look runs or it stops
        # waiting: another blocked client's look finds nothing there meanwhile (a plain pop still
        # takes it).  So the waiters are served in their order, as Redis serves them at once.
        self.kept: dict[tuple[int, bytes], bytes] = {}
        self.deferred: list[tuple[int, bytes]] = []  # keys written during the transaction holding the shard
        self.holding = False  # an EXEC runs on this shard alone (no lock): hold the news until it ends

    def watch(self, w: Watch) -> None:
        """Queue a client by when its worker read its command: one that came first through a
        slower path (another worker's ring) still goes before those that came after it."""
        watchers = self.waiters.setdefault((w.db, w.key), {})
        later = [t for t, (_, _, since) in watchers.items() if since > w.since_ns]
        watchers[w.token] = (w.home, w.kind, w.since_ns)
        for token in later:  # move them behind the newcomer, keeping their order
            watchers[token] = watchers.pop(token)
        if self.kept.get((w.db, w.key)) in later:  # its look, next on its ring, comes first
            self.kept[(w.db, w.key)] = w.token

    def kept_for_another(self, cmd: Command, argv: list[bytes], db: int, looker: bytes) -> bool:
        """Whether a look by `looker` must find nothing (a key it reads is kept for another
        waiter); a key kept for `looker` itself is released, as its look runs now."""
        if cmd.name == "lmpop":
            sources = list(cmd.key_indexes(argv))
        elif cmd.name in ("lmove", "rpoplpush"):
            sources = [1]  # (the destination is written, not taken)
        else:
            return False  # a part of a cross-shard look: not checked
        denied = False
        for i in sources:
            keeper = self.kept.get((db, argv[i]))
            if keeper == looker:
                del self.kept[(db, argv[i])]
            elif keeper is not None:
                denied = True
        return denied

    def unwatch(self, u: Unwatch) -> None:
        watchers = self.waiters.get((u.db, u.key))
        if watchers is None or u.token not in watchers:
            return
        was_first = next(iter(watchers)) == u.token
        del watchers[u.token]
        if self.kept.get((u.db, u.key)) == u.token:
            del self.kept[(u.db, u.key)]
        if not watchers:
            del self.waiters[(u.db, u.key)]
        elif was_first:
            self._tell_first_if_ready(u.db, u.key)  # what is left goes to the next in line

    def drop_home(self, home: int) -> None:
        """A worker restarted: the clients it had blocked are gone."""
        for (db, key), watchers in list(self.waiters.items()):
            for token in [t for t, (h, _, _) in watchers.items() if h == home]:
                self.unwatch(Unwatch(db, key, token))

    def after_command(self) -> None:
        """The command just run wrote records for watched keys: tell the first waiter of each
        key that now holds what it waits for.  Inside a transaction (the shard is locked: an EXEC,
        a script, a cross-shard command) that waits until it ends, as Redis serves blocked clients
        after the whole transaction: a key pushed then deleted within it wakes nobody."""
        touched, self.store.touched = self.store.touched, []
        if self.worker.shard_locked or self.holding:
            self.deferred.extend(touched)
            return
        self._tell(touched)

    def transaction_ended(self) -> None:
        deferred, self.deferred = self.deferred, []
        self._tell(deferred)

    def _tell(self, touched: list[tuple[int, bytes]]) -> None:
        for db, key in dict.fromkeys(touched):
            if (db, key) in self.waiters:
                self._tell_first_if_ready(db, key)

    def _tell_first_if_ready(self, db: int, key: bytes) -> None:
        token, (home, kind, _) = next(iter(self.waiters[(db, key)].items()))
        off = self.store.lookup(db, key, int(time.time() * 1000))
        if not off or self.store.type_of(off) != kind:
            return
        self.kept[(db, key)] = token
        if home == self.worker.id:
            self.worker.loop.call_soon(self.worker.blocking.wake, token)
        else:
            self.worker.peers.send(home, K_READY, 0, Ready(token).encode())

__all__ = ["Blocked", "Blocking", "Ready", "Unwatch", "Watch", "Watchers"]
