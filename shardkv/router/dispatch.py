"""The router: one command pipeline, from a parsed command to its reply, wherever its keys live.

Every command a client sends passes `Router.execute`, in Redis's order:
  1. look the command up in the one table (unknown and internal names: an error);
  2. check its arity;
  3. check authentication;
  -- the next issues add their gates here, in Redis's order: cluster redirection, the OOM gate,
     the busy-script and subscribed-context rules, and only then MULTI queueing --
  4. run it: connection and server commands here with the client's context; keyed commands
     * keys all on this worker's shard  -> in place;
     * keys all on one other shard      -> forwarded raw over the ring, the reply comes back later;
     * keys on several shards           -> a transaction (`run_transaction`): lock the shards in
       ascending order, then apply every part (or the command's `across` body), then unlock;
     * blocking commands                -> router/blocking.py, which runs their non-blocking form
       through this same pipeline.
Replies that come later are `Pending` objects the connection keeps in request order.

One error contract, on every path (in place, forwarded, transaction part, across body, blocking
retry, internal fan-out): a `CommandError` is the client's error reply; `ReplyTooLarge` closes the
client (as Redis does past its output limit); any other exception is a bug: it is logged with its
traceback and the command gets `-ERR internal error`, so no client is ever left without its reply.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
import traceback
from collections.abc import Awaitable, Callable, Coroutine
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from shardkv import errors, protocol
from shardkv.collstore import value_bytes
from shardkv.commands.across import CrossShard
from shardkv.commands.args import ShardCtx
from shardkv.commands.context import Client, Pending, Reply
from shardkv.commands.keyspace import RestorePart
from shardkv.commands.multi import reset_multi, unwatch_all
from shardkv.commands.pubsub import Subscriptions
from shardkv.commands.table import COMMANDS, Command, Merge, Where, lookup
from shardkv.errors import CommandError, ReplyTooLarge
from shardkv.layout import TXN_ID_MASK, UNDO_ABSENT
from shardkv.limits import HASH_SLOTS, Limits
from shardkv.native import slot_of
from shardkv.protocol import read_reply
from shardkv.stats import G_SCRIPT_FUNCTION, G_SUPERVISOR_PID, W_TRACKING_CLIENTS, W_TXN_DECIDED, Stats
from shardkv.store import Store
from shardkv.worker.peers import K_APPLY, K_LOCK, K_REQ, K_UNLOCK, Callback, PeerReset

if TYPE_CHECKING:
    from shardkv.router.connection import Connection
    from shardkv.router.scripts import Scripts
    from shardkv.worker.process import Worker

# The shards an EXEC holds locked, in its task and the tasks it starts (a FLUSHALL queued in
# MULTI runs its parts on them without locking again); None elsewhere.
HOLDING: ContextVar[frozenset[int] | None] = ContextVar("HOLDING", default=None)
# The client whose command runs, when it tracks keys with NOLOOP (0: none): the shards it changes
# keys on do not send it their invalidations.  Forwarded in the header of what goes to a shard.
MODIFIER: ContextVar[int] = ContextVar("MODIFIER", default=0)
# The blocked client whose look (the non-blocking form of its command) runs (b"": none): a key
# kept for another waiter is not its to take (router/blocking.py, Watchers).
LOOKER: ContextVar[bytes] = ContextVar("LOOKER", default=b"")
# Flags in a forwarded command's protocol byte: after the db byte come 8 bytes of modifier id,
# then a looker token (1 byte of length), each only if its flag is set.
MODIFIER_FLAG, LOOKER_FLAG = 0x80, 0x40


def head(proto: int, db: int) -> bytes:
    """The header of a command sent to another shard: protocol, db, the NOLOOP modifier, the looker."""
    modifier, looker = MODIFIER.get(), LOOKER.get()
    if not modifier and not looker:
        return bytes((proto, db))
    out = bytearray((proto, db))
    if modifier:
        out[0] |= MODIFIER_FLAG
        out += modifier.to_bytes(8, "little")
    if looker:
        out[0] |= LOOKER_FLAG
        out += bytes((len(looker),)) + looker
    return bytes(out)


def split_head(body: bytes) -> tuple[int, int, int, bytes, int]:
    """(protocol, db, modifier, looker, where the command starts) of a forwarded body."""
    flags, at = body[0], 2
    modifier = 0
    looker = b""
    if flags & MODIFIER_FLAG:
        modifier = int.from_bytes(body[2:10], "little")
        at = 10
    if flags & LOOKER_FLAG:
        looker = body[at + 1 : at + 1 + body[at]]
        at += 1 + body[at]
    return flags & ~(MODIFIER_FLAG | LOOKER_FLAG), body[1], modifier, looker, at


# A reply that tells the client's connection to close without a reply: the command's reply grew
# past the output buffer limit.  No RESP reply starts with a NUL byte.
CLIENT_CLOSE = b"\x00close\r\n"
NO_AUTH_COMMANDS = frozenset({b"auth", b"hello", b"quit", b"reset"})
# What a RESP2 client may send while subscribed (RESP3 clients may send anything).
SUBSCRIBED_CONTEXT = frozenset({"subscribe", "psubscribe", "ssubscribe", "unsubscribe", "punsubscribe",
                                "sunsubscribe", "ping", "quit", "reset"})
MULTI_CONTROL = frozenset({"exec", "discard", "multi", "watch", "quit", "reset"})  # run, not queued, in MULTI


def refused(conn: Connection, reply: bytes) -> bytes:
    """A command refused before it ran; in MULTI that also dooms the transaction (EXECABORT)."""
    if conn.multi is not None:
        conn.multi_failed = True
    return reply


def is_bug(exc: Exception) -> bool:
    """Anything but the three expected kinds of exception is a bug."""
    return not isinstance(exc, (CommandError, PeerReset, ReplyTooLarge))


def error_reply(exc: Exception, where: str) -> bytes:
    """The one error contract: what the client gets for an exception raised while running `where`.
    A bug is logged with its traceback and answered `-ERR internal error`."""
    if isinstance(exc, CommandError):
        return protocol.error(exc.text)
    if isinstance(exc, PeerReset):
        return protocol.error(errors.SHARD_RESTARTED)
    if isinstance(exc, ReplyTooLarge):
        return CLIENT_CLOSE
    print(f"shardkv worker {os.getpid()}: internal error in {where}", file=sys.stderr)
    traceback.print_exception(exc, file=sys.stderr)
    sys.stderr.flush()
    return protocol.error(errors.INTERNAL)


# Redis Cluster hash slot of a key: CRC16-XMODEM of the key, or of its non-empty {hash tag}
# (compiled: fast.pyx, which the fast path uses too).
key_slot = slot_of


def slot_owners(shards: int) -> list[int]:
    """The fixed slot -> shard map: contiguous ranges, as cluster nodes would own them."""
    return [slot * shards // HASH_SLOTS for slot in range(HASH_SLOTS)]


def merge_replies(cmd: Command, argv: list[bytes], parts: dict[int, list[int]], replies: dict[int, bytes],
                  proto: int) -> bytes:
    """Combine the replies of a command split over shards (parts: shard -> key positions)."""
    decoded = {}
    for shard, reply in replies.items():
        if reply.startswith(b"-"):
            return reply
        decoded[shard] = read_reply(reply)[0]
    if cmd.merge is Merge.SUM:
        return protocol.integer(sum(decoded.values()))  # type: ignore[arg-type]
    if cmd.merge is Merge.OK:
        return protocol.OK
    if cmd.merge is Merge.VALUES:
        values: list[bytes | None] = [None] * (len(argv) - 1)
        for shard, positions in parts.items():
            items = decoded[shard]
            assert isinstance(items, list)
            for pos, item in zip(positions, items, strict=True):
                values[pos - 1] = item
        null = protocol.null(proto)
        return protocol.array([protocol.bulk(v) if v is not None else null for v in values])
    raise AssertionError(f"{cmd.name} cannot be split over shards")


class Router:
    """The pipeline of one worker; also the whole server as client commands see it
    (`commands.context.Server`)."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.me = worker.id
        self.owners = slot_owners(worker.workers)
        self.single = worker.workers == 1
        self.key_bytes_max = worker.limits.key_bytes_max
        self.ctx = ShardCtx(worker.store, 0, 2, 0, worker.limits, worker.stats)
        self.txn_lock = asyncio.Lock()
        from shardkv.router.transaction import Transactions  # it builds on this module
        self.transactions = Transactions(self)
        # While this shard is in a transaction with an undo log: the keys saved so far.
        self.undo_saved: set[tuple[int, bytes]] | None = None
        self.undo_writes = 0

    # ------------------------------------------------------------------ the Server view

    @property
    def limits(self) -> Limits:
        return self.worker.limits

    @property
    def stats(self) -> Stats:
        return self.worker.stats

    @property
    def stores(self) -> list[Store]:
        return self.worker.stores

    @property
    def workers(self) -> int:
        return self.worker.workers

    @property
    def pubsub(self) -> Subscriptions:
        return self.worker.pubsub

    @property
    def scripts(self) -> Scripts:
        return self.worker.scripts

    @property
    def worker_id(self) -> int:
        return self.me

    @property
    def command_index(self) -> dict[str, int]:
        return self.worker.command_index

    def shutdown(self) -> None:
        os.kill(self.worker.stats.global_get(G_SUPERVISOR_PID), signal.SIGTERM)

    def shard_of(self, key: bytes) -> int:
        return self.owners[key_slot(key)]

    # ------------------------------------------------------------------ the pipeline

    def execute(self, conn: Connection, argv: list[bytes], start: int = -1, end: int = -1) -> Reply:
        """Run or route one command; conn.buf[start:end] is its RESP frame, if it came as one."""
        cmd = COMMANDS.get(argv[0]) or lookup(argv[0])
        if cmd is not None and cmd.one_key and conn.authenticated and conn.multi is None and not (
                conn.channels or conn.patterns or conn.shard_channels) and conn.tracking is None:
            # The common case in short: the same checks as below, in the same order.
            if cmd.arity_ok(len(argv)) and len(argv[1]) <= self.key_bytes_max:
                shard = self.me if self.single else self.owners[key_slot(argv[1])]
                if shard == self.me:
                    return self.run_keyed(cmd, argv, conn.db, conn.proto)
                return self.forward(conn, shard, argv, start, end)
        if cmd is None or cmd.internal:
            return refused(conn, protocol.error(errors.unknown_command(argv[0], argv[1:])))
        if not cmd.arity_ok(len(argv)):
            return refused(conn, self.rejected(cmd, errors.wrong_arity(cmd.name)))
        if not conn.authenticated and cmd.name.encode() not in NO_AUTH_COMMANDS:
            return refused(conn, self.rejected(cmd, errors.NOAUTH))
        if conn.proto == 2 and (conn.channels or conn.patterns or conn.shard_channels) \
                and cmd.name not in SUBSCRIBED_CONTEXT:
            name = cmd.name if not cmd.subcommands or len(argv) < 2 else f"{cmd.name}|{argv[1].lower().decode()}"
            return refused(conn, self.rejected(cmd, errors.subscribed_context(name)))
        if conn.multi is not None and cmd.name not in MULTI_CONTROL:
            return self.queue(conn, cmd, argv)
        if conn.tracking is not None:
            return self.execute_tracked(conn, cmd, argv, start, end)
        return self.run_command(conn, cmd, argv, start, end)

    def run_command(self, conn: Connection, cmd: Command, argv: list[bytes], start: int, end: int) -> Reply:
        if cmd.where is not Where.KEYED:
            return self.run_client(cmd, conn, argv)
        if cmd.blocking is not None:
            return self.worker.blocking.start(conn, cmd, argv)
        return self.route(cmd, conn, argv, start, end)

    def execute_tracked(self, conn: Connection, cmd: Command, argv: list[bytes], start: int, end: int) -> Reply:
        """A command of a client with tracking on: a read registers its keys with their shards
        first (EXEC: the reads it queued); with NOLOOP the shards learn who changes keys.
        CLIENT CACHING's flag lasts for this one command (or a whole MULTI ... EXEC)."""
        t = conn.tracking
        assert t is not None
        if t.tracks_reads():
            if cmd.name == "exec" and conn.multi is not None:
                for queued in conn.multi:
                    found = lookup(queued[0])
                    if found is not None:
                        self.remember_reads(conn, found, queued)
            else:
                self.remember_reads(conn, cmd, argv)
        token = MODIFIER.set(conn.id) if t.noloop else None
        try:
            reply = self.run_command(conn, cmd, argv, start, end)
        finally:
            if token is not None:
                MODIFIER.reset(token)
        if conn.multi is None and cmd.name != "client":
            t.caching = False
        return reply

    def remember_reads(self, client: Client, cmd: Command, argv: list[bytes]) -> None:
        """A tracking client's command: a read-only keyed one registers its keys."""
        if cmd.readonly and cmd.where is Where.KEYED:
            self.remember(client, [argv[i] for i in cmd.key_indexes(argv)])

    def remember(self, client: Client, keys: list[bytes]) -> None:
        """Register keys a tracking client reads with the shards owning them, before the read
        (a read command's keys; a script's declared keys once it called a read)."""
        by_shard: dict[int, list[bytes]] = {}
        for key in keys:
            if len(key) <= self.key_bytes_max:
                by_shard.setdefault(self.shard_of(key), []).append(key)
        worker = self.worker
        for shard, part in by_shard.items():
            if shard == self.me:
                worker.tracking.remember(client.id, part, self.stats.tunable("tracking-table-max-keys"))
                worker.tracking_settle(0)  # (sends what it evicted, if anything)
            else:
                worker.peers.request(shard, K_REQ, bytes((2, client.db)) + protocol.encode_command(
                    [b"__track", b"%d" % client.id, *part]), _ignore)

    def busy_reply(self, conn: Connection, argv: list[bytes]) -> bytes | None:
        """While a script runs past busy-reply-threshold: None for the commands Redis still runs
        (allow_busy: SCRIPT KILL, SHUTDOWN NOSAVE, AUTH, MULTI ...), else the BUSY error."""
        cmd = COMMANDS.get(argv[0]) or lookup(argv[0])
        if cmd is None or not cmd.arity_ok(len(argv)):
            return None  # the pipeline's own error
        sub = argv[1].lower() if len(argv) > 1 and cmd.subcommands else b""
        function_running = self.stats.global_get(G_SCRIPT_FUNCTION)
        if "allow_busy" in cmd.flags or (cmd.name, sub) in (("script", b"kill"), ("function", b"kill")):
            return None
        if (cmd.name, sub) == ("function", b"stats") and function_running:
            return None
        if cmd.name == "shutdown" and b"NOSAVE" in (a.upper() for a in argv[1:]):
            return None
        text = errors.BUSY_FUNCTION if function_running else errors.BUSY_SCRIPT
        if cmd.name == "exec" and conn.multi is not None:
            reset_multi(conn)
            unwatch_all(conn)
            return self.rejected(cmd, f"EXECABORT Transaction discarded because of: {text}")
        return refused(conn, self.rejected(cmd, text))

    def queue(self, conn: Connection, cmd: Command, argv: list[bytes]) -> bytes:
        """In MULTI: keep the command for EXEC, or refuse it (which dooms the EXEC)."""
        if "no_multi" in cmd.flags:
            return refused(conn, protocol.error(errors.NOT_IN_MULTI))
        if cmd.where is Where.KEYED and any(len(argv[i]) > self.key_bytes_max for i in cmd.key_indexes(argv)):
            return refused(conn, self.rejected(cmd, errors.KEY_TOO_LONG))
        size = sum(len(a) for a in argv)
        if conn.multi_bytes + size > self.limits.query_buffer_bytes_max or \
                self.worker.transaction_bytes + size > self.limits.transaction_bytes_per_worker_max:
            return refused(conn, protocol.error(errors.TRANSACTION_TOO_LARGE))
        assert conn.multi is not None
        conn.multi.append(argv)
        conn.multi_bytes += size
        return protocol.QUEUED

    def runs_here(self, argv: list[bytes]) -> bool:
        """A connection or server command: it runs here, with no ring to order it after the
        client's earlier commands on other shards."""
        cmd = COMMANDS.get(argv[0]) or lookup(argv[0])
        return cmd is not None and (cmd.where is Where.CONNECTION or cmd.where is Where.SERVER)

    def rejected(self, cmd: Command, text: str) -> bytes:
        """A command refused before it ran (Redis counts it in the command's rejected_calls)."""
        self.worker.count_rejected(cmd)
        return protocol.error(text)

    def route(self, cmd: Command, conn: Connection, argv: list[bytes], start: int, end: int) -> Reply:
        """A keyed command: run it where its keys live."""
        positions = cmd.key_indexes(argv)
        if not positions:  # a movable-keys command with a bad key count: its handler says so
            return self.run_keyed(cmd, argv, conn.db, conn.proto)
        key_max = self.key_bytes_max
        first = self.shard_of(argv[positions[0]])
        single = True
        for i in positions:
            if len(argv[i]) > key_max:
                return self.rejected(cmd, errors.KEY_TOO_LONG)
            if single and self.shard_of(argv[i]) != first:
                single = False
        if cmd.lock_all is not None and cmd.lock_all(argv):
            return self.start_transaction(conn, cmd, argv, every_shard=True)
        if single:
            if first == self.me:
                return self.run_keyed(cmd, argv, conn.db, conn.proto)
            return self.forward(conn, first, argv, start, end)
        if cmd.merge is Merge.NONE and cmd.across is None:
            return protocol.error("CROSSSLOT Keys in request don't hash to the same slot")
        return self.start_transaction(conn, cmd, argv)

    def forward(self, conn: Connection, shard: int, argv: list[bytes], start: int, end: int) -> Pending:
        """Send a command to the worker owning its keys; its reply resolves the Pending."""
        raw = bytes(conn.buf[start:end]) if start >= 0 and conn.buf[start] == 42 else protocol.encode_command(argv)
        pending = Pending(conn)
        self.worker.peers.request(shard, K_REQ, head(conn.proto, conn.db) + raw, pending)
        return pending

    def run_client(self, cmd: Command, conn: Client, argv: list[bytes]) -> Reply:
        """A connection or server command, run here with the client's context."""
        handler = cmd.client_handler
        assert handler is not None, cmd.name
        t0 = time.perf_counter_ns()
        try:
            reply: Reply = handler(conn, argv)
        except Exception as exc:
            reply = error_reply(exc, cmd.name)
        self.worker.count_command(cmd, time.perf_counter_ns() - t0, isinstance(reply, bytes) and reply[:1] == b"-")
        return reply

    def run_keyed(self, cmd: Command, argv: list[bytes], db: int, proto: int,
                  blocks: list[int] | None = None) -> bytes:
        """Run a keyed (or shard) command on this worker's own shard."""
        handler = cmd.handler
        assert handler is not None, cmd.name
        ctx = self.ctx
        ctx.db = db
        ctx.proto = proto
        ctx.now_ms = int(time.time() * 1000)
        ctx.blocks = blocks
        worker = self.worker
        store = worker.store
        store.counting_reads = cmd.readonly
        store.event_flags = worker.event_flags()
        if worker.watchers.kept:
            looker = LOOKER.get()
            if looker and worker.watchers.kept_for_another(cmd, argv, db, looker):
                # A key this look would take is kept for the waiter told before: nothing here yet.
                return protocol.null_array(proto) if cmd.name == "lmpop" else protocol.null(proto)
        t0 = time.perf_counter_ns()
        try:
            if self.undo_saved is not None and cmd.is_write:
                self.save_undo(cmd, argv, db)
            reply = handler(ctx, argv)
        except Exception as exc:
            reply = error_reply(exc, cmd.name)
            if cmd.is_write and is_bug(exc):  # it may have stopped half-way through a change
                worker.repair_shard(cmd.name)
        if self.undo_saved is not None and cmd.is_write:
            self.undo_writes += 1
            worker.crash_point(f"part:{self.undo_writes}")
        failed = reply[:1] == b"-"
        store.counting_reads = False
        if store.hits or store.misses:
            if cmd.readonly:
                worker.count_reads(store.hits, store.misses)
            store.hits = store.misses = 0
        worker.count_command(cmd, time.perf_counter_ns() - t0, failed)
        if store.touched:
            worker.watchers.after_command()
        if store.noted:
            worker.key_watches.settle(ctx.now_ms)
        if store.events:
            worker.publish_events()
        if store.tracking:
            worker.tracking_settle(MODIFIER.get())
        return reply

    # ------------------------------------------------------------------ undo log (this shard's part of an EXEC)

    def undo_begin(self, txn: int) -> None:
        self.worker.store.undo_begin(txn)
        self.undo_saved = set()
        self.undo_writes = 0

    def undo_end(self, commit: bool) -> None:
        """The transaction is decided: keep its changes here, or put the keys back."""
        store = self.worker.store
        if store.undo_txn:
            if commit:
                store.undo_discard()
            else:
                store.undo_rollback()
        self.undo_saved = None

    def undo_settle_after(self, coordinator: int) -> None:
        """The coordinator of the transaction holding this shard restarted (its new process has
        closed what the old one left undecided): keep or undo by what it had decided."""
        txn = self.worker.store.undo_txn
        if txn and txn >> 56 == coordinator:
            self.undo_end(self.stats.get(coordinator, W_TXN_DECIDED) == txn & TXN_ID_MASK)
        else:
            self.undo_saved = None

    def save_undo(self, cmd: Command, argv: list[bytes], db: int) -> None:
        """Before a write in a transaction: keep the records of the keys it may change, once each."""
        if cmd.where is Where.KEYED:
            keys = [(db, argv[i]) for i in cmd.key_indexes(argv)]
            name = cmd.name
            if name == "move" and len(argv) == 3 and argv[2].isdigit():
                keys.append((int(argv[2]), argv[1]))  # MOVE writes the key in the other db
            elif name == "copy":
                for i in range(3, len(argv) - 1):
                    if argv[i].lower() == b"db" and argv[i + 1].isdigit():
                        keys.append((int(argv[i + 1]), argv[2]))
        elif cmd.name == "__restore":
            part = RestorePart.decode(argv)
            keys = [(part.db, part.key)]
        else:
            return  # FLUSHDB / FLUSHALL / SWAPDB parts: not undone (see the README)
        saved = self.undo_saved
        assert saved is not None
        store = self.worker.store
        for wk in keys:
            if wk in saved or not 0 <= wk[0] < self.limits.databases:
                continue
            off = store.raw_lookup(*wk)
            if off:
                store.undo_save(wk[0], wk[1], store.type_of(off), store.expire_of(off), value_bytes(store, off))
            else:
                store.undo_save(wk[0], wk[1], UNDO_ABSENT, 0, b"")
            saved.add(wk)

    def run_raw(self, body: bytes, blocks: list[int] | None = None) -> bytes:
        """Run a command forwarded by another worker: body = proto, db, the command as RESP."""
        proto, db = body[0], body[1]
        if proto & (MODIFIER_FLAG | LOOKER_FLAG):  # from a NOLOOP tracking client, or a blocked one's look
            proto, db, modifier, looker, at = split_head(body)
            tokens = MODIFIER.set(modifier), LOOKER.set(looker)
            try:
                return self.run_raw(bytes((proto, db)) + body[at:], blocks)
            finally:
                MODIFIER.reset(tokens[0])
                LOOKER.reset(tokens[1])
        argv = parse_forwarded(body)
        cmd = lookup(argv[0])
        assert cmd is not None and cmd.where in (Where.KEYED, Where.SHARD, Where.WORKER), argv[0]
        if cmd.worker_handler is not None:
            try:
                return cmd.worker_handler(self.worker, argv)
            except Exception as exc:
                return error_reply(exc, cmd.name)
        return self.run_keyed(cmd, argv, db, proto, blocks)

    def later(self, client: Client, coro: Coroutine[Any, Any, bytes]) -> Pending:
        """The client's reply is what coro returns, on every outcome (the error contract).  The
        client's next commands wait for it: what coro sends to other shards goes before theirs."""
        pending = Pending(client, barrier=True)

        async def run() -> None:
            try:
                reply = await coro
            except Exception as exc:
                reply = error_reply(exc, "an asynchronous reply")
            pending.resolve(reply)

        self.worker.spawn(run())
        return pending

    # ------------------------------------------------------------------ transactions

    def split(self, cmd: Command, argv: list[bytes]) -> tuple[dict[int, list[bytes]], dict[int, list[int]]]:
        """Per shard: the command with only that shard's keys, and where those keys were."""
        step = max(cmd.key_step, 1)
        parts: dict[int, list[bytes]] = {}
        positions: dict[int, list[int]] = {}
        for i in cmd.key_indexes(argv):
            shard = self.shard_of(argv[i])
            part = parts.setdefault(shard, [argv[0]])
            part.extend(argv[i : i + step])
            positions.setdefault(shard, []).append(i)
        return parts, positions

    def start_transaction(self, conn: Connection, cmd: Command, argv: list[bytes],
                          every_shard: bool = False) -> Pending:
        parts, positions = self.split(cmd, argv)
        if every_shard:
            parts = {s: [b"__noop"] for s in range(self.worker.workers)}
        across = cmd.across
        if across is not None:
            return self.later(conn, self._transaction_merged(parts, conn.db, conn.proto, lambda tx: across(tx, argv)))
        return self.transaction_reply(conn, parts, lambda replies: merge_replies(
            cmd, argv, positions, replies, conn.proto))

    def transaction_reply(self, client: Client, parts: dict[int, list[bytes]],
                          merge: Callable[[dict[int, bytes]], bytes]) -> Pending:
        """Run parts as one transaction; the client's reply is merge(replies of the parts)."""
        return self.later(client, self._transaction_merged(parts, client.db, client.proto, None, merge))

    async def _transaction_merged(self, parts: dict[int, list[bytes]], db: int, proto: int,
                                  body: Callable[[CrossShard], Awaitable[bytes]] | None,
                                  merge: Callable[[dict[int, bytes]], bytes] | None = None) -> bytes:
        replies = await self.run_transaction(parts, db, proto, body)
        if isinstance(replies, bytes):
            return replies
        assert merge is not None
        return merge(replies)

    async def run_transaction(self, parts: dict[int, list[bytes]], db: int, proto: int,
                              body: Callable[[CrossShard], Awaitable[bytes]] | None = None
                              ) -> dict[int, bytes] | bytes:
        """Lock every shard of `parts` in ascending order (each prepares its part: memory for a
        write is reserved then), apply each part -- or run `body`, which applies what it wants --
        and unlock.  Returns the reply of each part, body's reply, or one error reply.
        Inside an EXEC (FLUSHALL queued in MULTI ...) the shards are held already: it just runs."""
        held = HOLDING.get()
        if held is not None:
            assert set(parts) <= held, "an EXEC locks every shard its commands reach"
            if body is not None:
                return await body(CrossShard(lambda s, a: self.apply_held(s, a, db, proto), self.shard_of, db, proto,
                                             self.limits))
            return {s: await self.apply_held(s, a, db, proto) for s, a in parts.items()}
        async with self.txn_lock:  # one transaction at a time per coordinating worker
            worker = self.worker
            locked: list[int] = []
            local_blocks: list[int] | None = None
            bodies = {s: head(proto, db) + protocol.encode_command(a) for s, a in parts.items()}
            replies: dict[int, bytes] = {}
            try:
                for shard in sorted(parts):
                    if shard == self.me:
                        await worker.lock_own(self.me)
                        locked.append(shard)
                        cmd = lookup(parts[shard][0])
                        assert cmd is not None
                        local_blocks = worker.reserve_for(cmd, parts[shard])
                    else:
                        try:
                            answer = await self.ask(shard, K_LOCK, bodies[shard])
                        except PeerReset:
                            # The request may have reached the peer's new process, which then holds
                            # the lock for us: the unlock follows it on the same ring.
                            worker.peers.send(shard, K_UNLOCK, 0, b"abort")
                            raise
                        locked.append(shard)
                        if answer:
                            return answer  # an error (OOM) from the prepare step
                if body is not None:
                    blocks_box = [local_blocks]

                    async def apply(shard: int, argv: list[bytes]) -> bytes:
                        if shard != self.me:
                            return await self.ask(shard, K_APPLY, head(proto, db) + protocol.encode_command(argv))
                        cmd = lookup(argv[0])
                        assert cmd is not None
                        blocks = blocks_box[0] if cmd.sizes is not None else None
                        if blocks is not None:
                            blocks_box[0] = None
                        return self.run_keyed(cmd, argv, db, proto, blocks)

                    try:
                        return await body(CrossShard(apply, self.shard_of, db, proto, self.limits))
                    finally:
                        local_blocks = blocks_box[0]
                futures = {s: self.worker.loop.create_future() for s in parts if s != self.me}
                for s, fut in futures.items():
                    self.worker.peers.request(s, K_APPLY, bodies[s], _settle(fut))
                if self.me in parts:
                    cmd = lookup(parts[self.me][0])
                    assert cmd is not None
                    replies[self.me] = self.run_keyed(cmd, parts[self.me], db, proto, local_blocks)
                    local_blocks = None
                for s, fut in futures.items():
                    replies[s] = await fut
                return replies
            finally:  # a CommandError or PeerReset goes on to later(), which makes it the reply
                await self.unlock_and_settle(locked, local_blocks)

    async def lock_shards(self, shards: list[int], db: int, proto: int, txn: int) -> list[int]:
        """Lock these shards (ascending) for an EXEC: each starts an undo log for transaction
        `txn`.  If it stops half-way (a peer restarted), what it locked is unlocked, undone."""
        locked: list[int] = []
        begin = bytes((proto, db)) + protocol.encode_command([b"__txnbegin", b"%d" % txn])
        try:
            for shard in sorted(shards):
                if shard == self.me:
                    await self.worker.lock_own(self.me)
                    self.undo_begin(txn)
                else:
                    try:
                        await self.ask(shard, K_LOCK, begin)
                    except PeerReset:  # (see run_transaction)
                        self.worker.peers.send(shard, K_UNLOCK, 0, b"abort")
                        raise
                locked.append(shard)
        except BaseException:
            self.unlock_shards(locked, None, commit=False)
            raise
        return locked

    def unlock_shards(self, locked: list[int], local_blocks: list[int] | None, commit: bool = True) -> None:
        """Unlock; a shard with an undo log keeps the transaction's changes (commit) or undoes them."""
        for shard in locked:
            if shard == self.me:
                self.undo_end(commit)
                self.worker.unlock_own(local_blocks)
            else:
                self.worker.peers.send(shard, K_UNLOCK, 0, b"" if commit else b"abort")

    async def unlock_and_settle(self, locked: list[int], local_blocks: list[int] | None, commit: bool = True) -> None:
        """Unlock, and while any client tracks keys, wait until every other shard has taken its
        unlock: a shard sends the invalidations a transaction made when it is unlocked, and they
        must be in the rings before the transaction's reply leaves, as after one Redis command."""
        self.unlock_shards(locked, local_blocks, commit)
        if not self.worker.stats.total(W_TRACKING_CLIENTS):
            return
        await asyncio.sleep(0)  # this worker's own shard sends its held invalidations (unlock_own)
        settle = bytes((2, 0)) + protocol.encode_command([b"__noop"])  # answered after the unlock
        for shard in locked:
            if shard != self.me:
                try:
                    await self.ask(shard, K_REQ, settle)
                except PeerReset:
                    pass  # restarted: its tracking clients get a null anyway

    async def apply_held(self, shard: int, argv: list[bytes], db: int, proto: int) -> bytes:
        """Run a keyed command (or internal part) on a shard this transaction holds locked."""
        if shard == self.me:
            cmd = lookup(argv[0])
            assert cmd is not None
            return self.run_keyed(cmd, argv, db, proto)
        return await self.ask(shard, K_REQ, head(proto, db) + protocol.encode_command(argv))

    def tell_shard(self, shard: int, argv: list[bytes]) -> None:
        """A one-way request, in the ring before the current command's reply can leave."""
        body = bytes((2, 0)) + protocol.encode_command(argv)
        if shard == self.me:
            self.run_raw(body)
        else:
            self.worker.peers.request(shard, K_REQ, body, _ignore)
            self.worker.peers.flush()

    def exec_transaction(self, client: Client, queue: list[list[bytes]], watching: set[int]) -> Reply:
        return self.transactions.exec(client, queue, watching)

    async def ask(self, shard: int, kind: int, body: bytes) -> bytes:
        fut: asyncio.Future[bytes] = self.worker.loop.create_future()
        self.worker.peers.request(shard, kind, body, _settle(fut))
        return await fut

    async def call_shard(self, shard: int, argv: list[bytes], db: int, proto: int) -> bytes:
        """Run a SHARD or WORKER command on one shard and return its reply."""
        body = bytes((proto, db)) + protocol.encode_command(argv)
        if shard == self.me:
            return self.run_raw(body)
        try:
            return await self.ask(shard, K_REQ, body)
        except PeerReset:
            return protocol.error(errors.SHARD_RESTARTED)

    async def fan_out(self, argv: list[bytes], db: int = 0, proto: int = 2, exclude_self: bool = False) -> list[bytes]:
        """Run a WORKER or SHARD command on every worker (or every other); replies in worker order."""
        body = bytes((proto, db)) + protocol.encode_command(argv)
        futures = []
        for w in range(self.worker.workers):
            if w == self.me and exclude_self:
                continue
            if w == self.me:
                fut: asyncio.Future[bytes] = self.worker.loop.create_future()
                fut.set_result(self.run_raw(body))
            else:
                fut = self.worker.loop.create_future()
                self.worker.peers.request(w, K_REQ, body, _settle(fut))
            futures.append(fut)
        out = []
        for fut in futures:
            try:
                out.append(await fut)
            except PeerReset:
                out.append(protocol.error(errors.SHARD_RESTARTED))
        return out


def parse_forwarded(body: bytes) -> list[bytes]:
    """argv of a forwarded command (body = proto, db, [modifier,] [looker,] the command as RESP)."""
    if body[0] & (MODIFIER_FLAG | LOOKER_FLAG):
        body = body[:2] + body[split_head(body)[4] :]
    tokens = body[2:].split(b"\r\n")
    count = int(tokens[0][1:])
    if len(tokens) == 2 + 2 * count:  # no argument holds a CRLF: the arguments are every other token
        return tokens[2 : 2 + 2 * count : 2]
    parsed = protocol.parse_requests(body[2:], len(body) - 2, 1 << 30, 1 << 40, 1)
    assert parsed.requests and parsed.error is None, "a peer sent a malformed command"
    return parsed.requests[0][0]


def _ignore(reply: bytes | None) -> None:
    pass


def _settle(fut: asyncio.Future[bytes]) -> Callback:
    def done(reply: bytes | None) -> None:
        if fut.done():
            return
        if reply is None:
            fut.set_exception(PeerReset())
        else:
            fut.set_result(reply)
    return done


__all__ = ["CLIENT_CLOSE", "Router", "key_slot", "slot_owners"]
