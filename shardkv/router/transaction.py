"""EXEC: a MULTI's queued commands, run as one transaction wherever their keys live.

Which shards: those of every key the queue names (each command's key positions; a command that
reaches keys it does not name, and any server command, takes every shard) and those of the
client's WATCHed keys.  Then:
  * all of them this worker's own shard, and only keyed commands: the queue runs here at once,
    in one go of the event loop, so nothing else on this worker or any other can come between;
  * otherwise: under the worker's transaction lock, this worker's shard and every involved one
    are locked in ascending order (no cycle can form; see worker/process.py), the watches are
    checked, the commands run in order -- each on its shard, a multi-shard one split and merged
    or run by its cross-shard body, a server command with the shards already held (`HOLDING`)
    -- and everything is unlocked.  Locking the own shard too holds back this worker's other
    clients, which would otherwise reach the locked shards through this worker.
Every command gets its own reply in EXEC's array, errors included, as in Redis; blocking commands
do not block (they answer as if their timeout had passed).
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from shardkv import errors, protocol
from shardkv.commands.across import CrossShard
from shardkv.commands.context import BlockPlan, Client, Reply
from shardkv.commands.table import Command, Merge, Where, lookup
from shardkv.layout import TXN_ID_MASK
from shardkv.protocol import read_reply
from shardkv.router.dispatch import CLIENT_CLOSE, HOLDING, error_reply, merge_replies
from shardkv.stats import W_TXN_ACTIVE, W_TXN_DECIDED
from shardkv.worker.peers import PeerReset

if TYPE_CHECKING:
    from shardkv.router.dispatch import Router

NULL_BULK_RESP2 = b"$-1\r\n"


class Transactions:
    def __init__(self, router: Router) -> None:
        self.router = router

    def shards_of(self, queue: list[tuple[Command, list[bytes]]]) -> tuple[set[int], bool]:
        """The shards the queued commands reach, and whether they are all keyed commands."""
        router = self.router
        every = set(range(router.workers))
        shards: set[int] = set()
        only_keyed = True
        for cmd, argv in queue:
            if cmd.where is Where.KEYED:
                if cmd.lock_all is not None and cmd.lock_all(argv):
                    return every, False
                shards.update(router.shard_of(argv[i]) for i in cmd.key_indexes(argv))
            elif cmd.where is Where.SERVER:
                return every, False
            else:
                only_keyed = False
        return shards, only_keyed

    def exec(self, client: Client, queue: list[list[bytes]], watching: set[int]) -> Reply:
        commands = []
        for argv in queue:
            cmd = lookup(argv[0])
            assert cmd is not None, "queued commands were looked up"
            commands.append((cmd, argv))
        shards, only_keyed = self.shards_of(commands)
        shards |= watching
        router = self.router
        me = router.me
        if only_keyed and shards <= {me} and not router.txn_lock.locked() and self.settled(0):
            # (Not while this worker coordinates another transaction, nor while a shard still
            # holds the undo log of an earlier one: the commit point must not overtake them.)
            return self.exec_here(client, commands, watching)
        return router.later(client, self.exec_locked(client, commands, shards | {me}, watching))

    def exec_here(self, client: Client, commands: list[tuple[Command, list[bytes]]], watching: set[int]) -> bytes:
        """Every key on this worker's shard: run the queue now, with no await in between.  With
        two writes or more, an undo log makes it whole or nothing if this worker dies half-way
        (its restart finds the transaction undecided and rolls it back)."""
        router = self.router
        worker = router.worker
        store = worker.store
        if watching:
            assert store.key_watches is not None
            if not store.key_watches.check(client.id, int(time.time() * 1000)):
                return protocol.null_array(client.proto)
        txn_id = 0
        if sum(cmd.is_write for cmd, _ in commands) > 1:
            txn_id = self.begin()
            router.undo_begin(router.me << 56 | txn_id)
        replies = []
        worker.watchers.holding = True  # blocked clients are served after the transaction, as in Redis
        try:
            for i, (cmd, argv) in enumerate(commands, 1):
                if cmd.blocking is not None:
                    replies.append(self._blocking_here(client, cmd, argv))
                else:
                    replies.append(router.run_keyed(cmd, argv, client.db, client.proto))
                worker.crash_point(f"exec:{i}")
        finally:
            worker.watchers.holding = False
            worker.watchers.transaction_ended()
            if worker.tracking.has_messages:
                worker.tracking_send()
        if txn_id:
            self.decide(txn_id, commit=True)
            router.undo_end(commit=True)
        return self._array(replies)

    def begin(self) -> int:
        """A new transaction of this coordinator, undecided until `decide`."""
        worker = self.router.worker
        txn_id = worker.next_txn_id()
        worker.stats.set(worker.id, W_TXN_ACTIVE, txn_id)
        return txn_id

    def decide(self, txn_id: int, commit: bool) -> None:
        """The commit point (one store), or the abort; shards holding its undo log learn it from
        here if they restart, or if this worker does."""
        worker = self.router.worker
        if commit:
            worker.stats.set(worker.id, W_TXN_DECIDED, txn_id)
            worker.crash_point("exec:decided")
        worker.stats.set(worker.id, W_TXN_ACTIVE, 0)

    def settled(self, txn_id: int) -> bool:
        """No shard holds the undo log of a transaction of this worker other than txn_id."""
        me = self.router.me
        return not any(s.undo_txn >> 56 == me and s.undo_txn & TXN_ID_MASK != txn_id
                       for s in self.router.worker.stores if s.undo_txn)

    async def decidable(self, txn_id: int) -> None:
        """Wait until no shard still holds the undo log of an earlier transaction of this worker
        (its unlock is on its way): W_TXN_DECIDED may only move on once each has settled, or a
        shard restarting with that log could read the wrong decision."""
        while not self.settled(txn_id):
            await asyncio.sleep(0.0005)

    @staticmethod
    def _attempt_of(cmd: Command, argv: list[bytes]) -> tuple[Command, BlockPlan] | bytes:
        """A blocking command's non-blocking form (or its argument error)."""
        assert cmd.blocking is not None
        try:
            plan = cmd.blocking(argv)
        except Exception as exc:
            return error_reply(exc, cmd.name)
        attempt = lookup(plan.attempt_argv[0])
        assert attempt is not None
        return attempt, plan

    def _blocking_here(self, client: Client, cmd: Command, argv: list[bytes]) -> bytes:
        found = self._attempt_of(cmd, argv)
        if isinstance(found, bytes):
            return found
        attempt, plan = found
        raw = self.router.run_keyed(attempt, plan.attempt_argv, client.db, client.proto)
        return self._blocking_answer(client, plan.reply, raw)

    @staticmethod
    def _blocking_answer(client: Client, reply: object, raw: bytes) -> bytes:
        """A blocking command in EXEC answers what its non-blocking form found, or, if nothing,
        what its timeout would (LMOVE's null bulk for BLMOVE, a null array for BLPOP ...)."""
        if raw.startswith(b"-"):
            return raw
        answer = reply(read_reply(raw)[0])  # type: ignore[operator]
        if answer is not None:
            return answer  # type: ignore[no-any-return]
        return raw if raw == NULL_BULK_RESP2 else protocol.null_array(client.proto)

    async def exec_locked(self, client: Client, commands: list[tuple[Command, list[bytes]]], shards: set[int],
                          watching: set[int]) -> bytes:
        """Lock, check the watches, run, decide, unlock.  Each locked shard keeps an undo log of
        the transaction: a shard worker that restarts before the commit point aborts it (every
        shard undoes its part; the client gets EXECABORT), after it the transaction stands (the
        restarted shard keeps its part; the client gets every reply).  If this worker dies, its
        clients lose their connection, and the shards settle by its decision, if it made one."""
        router = self.router
        worker = router.worker
        async with router.txn_lock:
            txn_id = self.begin()
            committed = False
            locked: list[int] = []
            token = HOLDING.set(frozenset(shards))
            try:
                locked = await router.lock_shards(sorted(shards), client.db, client.proto, router.me << 56 | txn_id)
                worker.crash_point("exec:locked")
                clean = True
                for shard in sorted(watching):  # every one: the check also ends the watch
                    answer = await router.apply_held(shard, [b"__watchcheck", b"%d" % client.id], client.db,
                                                     client.proto)
                    clean = clean and answer == protocol.ONE
                if not clean:
                    return protocol.null_array(client.proto)
                client.executing = True
                replies = []
                for i, (cmd, argv) in enumerate(commands, 1):
                    try:
                        replies.append(await self.run_one(client, cmd, argv))
                    except PeerReset:
                        raise
                    except Exception as exc:
                        replies.append(error_reply(exc, cmd.name))
                    worker.crash_point(f"exec:{i}")
                await self.decidable(txn_id)
                self.decide(txn_id, commit=True)
                committed = True
                return self._array(replies)
            except PeerReset:
                return protocol.error(errors.EXEC_SHARD_RESTARTED)
            finally:
                client.executing = False
                HOLDING.reset(token)
                if not committed:
                    self.decide(txn_id, commit=False)
                await router.unlock_and_settle(locked, None, commit=committed)

    async def run_one(self, client: Client, cmd: Command, argv: list[bytes]) -> bytes:
        router = self.router
        if cmd.where is not Where.KEYED:
            reply = router.run_client(cmd, client, argv)
            return await _value(reply)
        db, proto = client.db, client.proto
        if cmd.blocking is not None:
            found = self._attempt_of(cmd, argv)
            if isinstance(found, bytes):
                return found
            attempt, plan = found
            raw = await self.run_one(client, attempt, plan.attempt_argv)
            return self._blocking_answer(client, plan.reply, raw)
        positions = cmd.key_indexes(argv)
        if not positions:  # a bad key count: the handler says so
            return router.run_keyed(cmd, argv, db, proto)
        shards = {router.shard_of(argv[i]) for i in positions}
        reaches_all = cmd.lock_all is not None and cmd.lock_all(argv)
        if len(shards) == 1 and not reaches_all:
            return await router.apply_held(shards.pop(), argv, db, proto)
        if cmd.across is not None:
            return await cmd.across(CrossShard(lambda s, a: router.apply_held(s, a, db, proto), router.shard_of, db,
                                               proto, router.limits), argv)
        if cmd.merge is Merge.NONE:
            return protocol.error("CROSSSLOT Keys in request don't hash to the same slot")
        parts, positions_of = router.split(cmd, argv)
        replies = {s: await router.apply_held(s, part, db, proto) for s, part in parts.items()}
        return merge_replies(cmd, argv, positions_of, replies, proto)

    @staticmethod
    def _array(replies: list[bytes]) -> bytes:
        if CLIENT_CLOSE in replies:
            return CLIENT_CLOSE  # one reply grew past the output limit: the client is closed
        return protocol.array_header(len(replies)) + b"".join(replies)


async def _value(reply: Reply) -> bytes:
    """The bytes of a reply that may come later (a server command's Pending)."""
    if isinstance(reply, bytes):
        return reply
    if reply.value is not None:
        return reply.value
    fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
    reply.conn = None  # the reply goes into EXEC's array, not to the connection
    reply.callback = fut.set_result
    return await fut


__all__ = ["Transactions"]
