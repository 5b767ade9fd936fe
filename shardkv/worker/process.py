"""A worker process: its event loop, the shard it owns, the rings it drains, its lifecycle.

Started by the supervisor with `python -m shardkv.worker <boot json>`.  It attaches the segments
the supervisor made (its own shard read-write; the other shards only for their header counters),
rebuilds its allocator from the index if this is a restart, binds the port with SO_REUSEPORT and
serves.  Connection slots and parse arenas are allocated (and their pages touched) here, at boot.

The shard lock: a transaction coordinated by any worker locks each involved shard.  While this
worker's shard is locked by worker X, it takes requests only from X's ring (replies from every
peer still flow) and holds back its own connections' commands; while locked by itself, it takes no
peer requests.  Locks are always taken in ascending shard order, so no cycle can form.
"""

from __future__ import annotations

import array
import asyncio
import json
import os
import resource
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import uvloop

from shardkv import errors, protocol, segments
from shardkv.commands import notify, tracking
from shardkv.commands.multi import reset_multi, unwatch_all
from shardkv.commands.pubsub import Subscriptions
from shardkv.commands.table import Command, command_index, load_all, lookup
from shardkv.journal import FAULT_STEPS
from shardkv.keywatch import KeyWatches
from shardkv.layout import H_GENERATION, TXN_ID_MASK
from shardkv.limits import Footprint, Limits
from shardkv.native import FAST_COMMANDS, Counters, FastPath
from shardkv.router.blocking import Blocking, Ready, Unwatch, Watch, Watchers
from shardkv.router.connection import Connection
from shardkv.router.dispatch import Router, parse_forwarded
from shardkv.router.scripts import Scripts
from shardkv.stats import (
    CMD_CALLS,
    CMD_REJECTED,
    CMD_WORDS,
    G_SCRIPT_STARTED_MS,
    G_SCRIPT_WORKER,
    G_TUNABLES,
    TUNABLES,
    W_BLOCKED,
    W_COMMAND_STATS,
    W_COMMANDS,
    W_CONNECTED,
    W_CONNECTIONS_RECEIVED,
    W_CPU_SYS_US,
    W_CPU_USER_US,
    W_GENERATION,
    W_HEARTBEAT_MS,
    W_HITS,
    W_MISSES,
    W_NET_INPUT,
    W_NET_OUTPUT,
    W_NEXT_CLIENT_ID,
    W_PID,
    W_READY,
    W_REJECTED,
    W_TRACKING_CLIENTS,
    W_TXN_ACTIVE,
    W_TXN_DECIDED,
    W_TXN_LAST,
    Stats,
)
from shardkv.store import Store
from shardkv.tracking import EVERY_KEY, TrackingTable
from shardkv.worker.peers import (
    K_APPLY,
    K_LOCK,
    K_LOCKED,
    K_READY,
    K_REP,
    K_REQ,
    K_UNLOCK,
    K_UNWATCH,
    K_WATCH,
    Peers,
)

NO_LOCK = -1
CRASH_ENV = "SHARDKV_TEST_CRASH"
# Tests only: SHARDKV_TEST_FAULTS=<worker>:<step>,... makes the first process of that worker's
# store raise at each named step of a journal commit (store.FAULT_STEPS), once each.
FAULTS_ENV = "SHARDKV_TEST_FAULTS"
EXPIRE_PERIOD_S = 0.1
CLIENTS_PERIOD_S = 1.0  # idle clients (timeout) and stalled large requests are looked at this often
STATS_PERIOD_S = 0.5
HEARTBEAT_PERIOD_S = 0.1  # the supervisor's watchdog reads W_HEARTBEAT_MS
PAGE = 4096


@dataclass(frozen=True, slots=True)
class Boot:
    """What the supervisor tells a worker: who it is and where everything lives."""

    worker: int
    limits: Limits
    shard_names: list[str]
    ring_name: str
    stats_name: str
    scripts_name: str
    doorbells: list[int]
    supervisor_pid: int

    def to_json(self) -> str:
        from dataclasses import asdict
        return json.dumps(asdict(self))

    @staticmethod
    def from_json(text: str) -> Boot:
        raw = json.loads(text)
        raw["limits"] = Limits(**raw["limits"])
        return Boot(**raw)


def touched(size: int, beat: Callable[[], None]) -> bytearray:
    """A buffer whose pages are all committed now, not on first use (beating every 4 MiB: the
    arenas alone may be hundreds of MiB)."""
    buf = bytearray(size)
    for i in range(0, size, PAGE):
        buf[i] = 1
        if not i & (4 * 1024 * 1024 - 1):
            beat()
    return buf


class Worker:
    def __init__(self, boot: Boot) -> None:
        load_all()
        self.boot = boot
        self.id = boot.worker
        self.limits = boot.limits
        self.workers = boot.limits.shards
        self.footprint = Footprint(boot.limits)
        self.loop = uvloop.new_event_loop()
        asyncio.set_event_loop(self.loop)
        self.stats_mm = segments.attach(boot.stats_name)
        self.command_index = command_index()
        self.stats = Stats(self.stats_mm, self.workers, len(self.command_index), segments.open_fd(boot.stats_name))
        self.heartbeat_word = self.stats.base(self.id) + W_HEARTBEAT_MS
        self.beat()  # from here on the watchdog expects a beat every watchdog-timeout-ms
        self.maps = [segments.attach(name) for name in boot.shard_names]
        self.stores = [Store(mm, self.footprint, format_segment=False) for mm in self.maps]
        self.store = self.stores[self.id]
        self.store.progress = self.beat  # long loops (rebuild, flush, KEYS ...) beat as they go
        mine = self.stats.base(self.id) + W_COMMAND_STATS
        self.command_stats_word = {name: mine + CMD_WORDS * i for name, i in self.command_index.items()}
        self.counters = Counters(self.stats_mm)  # what this worker adds to the stats words, in C
        self.ring_mm = segments.attach(boot.ring_name) if self.workers > 1 else None
        self.peers = Peers(self.id, self.workers, self.ring_mm, self.limits.ring_bytes, boot.doorbells, self.loop,
                           protocol.error(errors.SHARD_RESTARTED))
        self.router = Router(self)
        here = self.stats.base(self.id)
        self.fast = FastPath(self.store.index, self.store.allocator, self.counters, self.store.dbmap,
                             array.array("H", self.router.owners).tobytes(), self.id, self.limits.key_bytes_max,
                             self.limits.value_bytes_max,
                             {name: self.command_stats_word[name] for name in FAST_COMMANDS}, here + W_HITS,
                             here + W_MISSES, self.peers, self.limits.inflight_per_client_max, self.fast_writes)
        self.scripts = Scripts(self)
        self.blocking = Blocking(self)  # this worker's blocked clients
        self.watchers = Watchers(self, self.store)  # clients blocked on this shard's keys
        self.key_watches = KeyWatches(self.store, self.limits.watched_keys_per_shard_max)  # WATCHed keys
        self.store.key_watches = self.key_watches
        self.store.cas = self.key_watches.by_key
        self.tracking = TrackingTable(self.store, self.stats, self.id, self.limits.tracking_table_bytes_per_shard_max,
                                      self.limits.tracking_prefixes_max)  # CLIENT TRACKING, this shard's keys
        self.store.tracking_table = self.tracking
        self.by_id: dict[int, Connection] = {}
        self.transaction_bytes = 0  # commands queued after MULTI, all clients together
        self.pubsub = Subscriptions(self.limits.subscriptions_per_worker_max)
        self.notify_word = G_TUNABLES + TUNABLES["notify-keyspace-events"][0]
        self.lock_owner = NO_LOCK
        self.crash_at = ""  # tests: the step at which this process kills itself (crash_point)
        self.busy_timer: asyncio.TimerHandle | None = None
        self.busy_due_s = 0.0  # when busy_timer fires (time.time())
        self.lock_waiters: list[asyncio.Future[None]] = []
        self.reserved: list[int] = []  # blocks prepared for the lock holder's write
        self.paused: set[Connection] = set()
        self.dirty: set[Connection] = set()
        self.connections: set[Connection] = set()
        self.slots = [touched(self.limits.connection_buffer_bytes, self.beat)
                      for _ in range(self.limits.clients_per_worker_max)]
        self.arenas = [touched(self.limits.query_buffer_bytes_max, self.beat)
                       for _ in range(self.limits.large_requests_max)]
        self.arena_waiters: list[Connection] = []
        self.next_client_id = 1
        self.unsent_bytes = 0  # replies not yet sent, all clients together (an estimate from above)
        self.error_codes: dict[bytes, int] = {}  # error code -> its word in this worker's errorstats
        self.net_input = 0
        self.net_output = 0
        self.expire_cursor = 0
        self.tasks: set[asyncio.Task[Any]] = set()
        self.servers: list[asyncio.AbstractServer] = []
        self.stopping = False

    # ------------------------------------------------------------------ lifecycle

    def beat(self) -> None:
        """Show the watchdog that this worker makes progress (a timer, and the store's long loops)."""
        self.stats.q[self.heartbeat_word] = int(time.monotonic() * 1000)

    def start(self) -> None:
        generation = self.store.q[H_GENERATION]
        # A transaction a dead predecessor coordinated and had not decided is aborted: say so
        # before the peers hear of the restart, as they then settle their part of it.
        self.stats.set(self.id, W_TXN_ACTIVE, 0)
        if generation:
            found = self.store.rebuild()
            self.beat()
            print(f"worker {self.id}: restarted, shard has {found} keys", file=sys.stderr, flush=True)
            self.peers.reset_inbound()
            self.peers.announce_restart()
            self.peers.flush()
            self.settle_undo_log()
        self.crash_at = os.environ.get(CRASH_ENV, "") if generation == 0 else ""
        if generation == 0:
            for armed in filter(None, os.environ.get(FAULTS_ENV, "").split(",")):
                worker, _, step = armed.partition(":")
                assert step in FAULT_STEPS, f"{FAULTS_ENV}: no step {step!r}"
                if int(worker) == self.id:
                    self.store.fault_steps.add(step)
        self.store.q[H_GENERATION] = generation + 1
        self.stats.set(self.id, W_PID, os.getpid())
        self.stats.set(self.id, W_GENERATION, generation + 1)
        # Counts of the clients a dead predecessor had: none of them is connected any more.
        self.stats.set(self.id, W_CONNECTED, 0)
        self.stats.set(self.id, W_BLOCKED, 0)
        self.stats.set(self.id, W_TRACKING_CLIENTS, 0)
        # Client ids are unique across workers (worker id in the low bits) and across restarts
        # (the sequence continues where the dead predecessor left it), so CLIENT KILL ID never
        # hits a newer client that got an old id.
        self.next_client_id = max(1, self.stats.get(self.id, W_NEXT_CLIENT_ID))
        for host in self.limits.bind.split():
            host = host.lstrip("-")
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((host, self.limits.port))
            sock.listen(511)
            sock.setblocking(False)
            server = self.loop.run_until_complete(
                self.loop.create_server(lambda: Connection(self), sock=sock))
            self.servers.append(server)
        if self.workers > 1:
            self.loop.add_reader(self.boot.doorbells[self.id], self.on_doorbell)
        self.loop.add_signal_handler(signal.SIGTERM, self.stop)
        self.loop.add_signal_handler(signal.SIGINT, self.stop)
        self.loop.call_later(EXPIRE_PERIOD_S, self.expire_tick)
        self.loop.call_later(STATS_PERIOD_S, self.stats_tick)
        self.loop.call_later(CLIENTS_PERIOD_S, self.clients_tick)
        self.loop.call_later(HEARTBEAT_PERIOD_S, self.heartbeat_tick)
        self.beat()
        self.stats.set(self.id, W_READY, 1)
        if self.workers > 1:
            self.drain()

    def settle_undo_log(self) -> None:
        """At restart: the shard holds a transaction's undo log.  Once its coordinator has decided
        (committed, aborted on hearing of this restart, or died and been restarted), keep the
        transaction's changes or put the keys back as they were."""
        txn = self.store.undo_txn
        if not txn:
            return
        coordinator, txn_id = txn >> 56, txn & TXN_ID_MASK
        while self.stats.get(coordinator, W_TXN_ACTIVE) == txn_id:
            self.beat()
            time.sleep(0.001)
        committed = self.stats.get(coordinator, W_TXN_DECIDED) == txn_id
        self.router.undo_end(committed)
        print(f"worker {self.id}: transaction {txn_id} of worker {coordinator} "
              f"{'kept (committed)' if committed else 'rolled back'}", file=sys.stderr, flush=True)

    def script_busy(self) -> bool:
        """A script (on any worker) has run longer than busy-reply-threshold."""
        stats = self.stats
        if not stats.global_get(G_SCRIPT_WORKER):
            return False
        threshold_ms = stats.tunable("busy-reply-threshold")
        return threshold_ms > 0 and time.time() * 1000 - stats.global_get(G_SCRIPT_STARTED_MS) > threshold_ms

    def wake_when_busy(self) -> None:
        """A client waits on a locked shard: if a script holds it, look again once the script has
        run for busy-reply-threshold (its clients then get -BUSY, and SCRIPT KILL gets through)."""
        stats = self.stats
        threshold_ms = stats.tunable("busy-reply-threshold")
        if threshold_ms <= 0:
            return
        # (A script that has the locks but has not started yet is looked at again a threshold later.)
        started_ms = stats.global_get(G_SCRIPT_STARTED_MS) if stats.global_get(G_SCRIPT_WORKER) else time.time() * 1000
        due_s = (started_ms + threshold_ms) / 1000 + 0.001
        if self.busy_timer is not None:
            if self.busy_due_s <= due_s:
                return  # one is set, and soon enough
            self.busy_timer.cancel()  # set for a longer threshold (CONFIG SET since) or an older script

        def wake() -> None:
            self.busy_timer = None
            paused, self.paused = self.paused, set()
            for conn in paused:
                conn.resume()

        self.busy_due_s = due_s
        self.busy_timer = self.loop.call_later(max(0.001, due_s - time.time()), wake)

    def repair_if_damaged(self) -> None:
        """The fast path gave up on a write half-way (a damaged segment): rebuild the shard before
        the Python pipeline runs that command again."""
        if self.fast.damaged:
            self.fast.damaged = False
            self.repair_shard("the fast path")

    def repair_shard(self, after: str) -> None:
        """A bug raised inside a write: leave the shard as a restart would, without the restart.
        A journal the write committed is published whole, one it had not committed is dropped,
        blocks it took but never published are free again, and counters are derived again, so
        the write is wholly applied or not at all.  Costs a walk of the shard, on a bug's path."""
        store = self.store
        kept = [store.block_bytes(off) for off in self.reserved]  # (none outside a lock's APPLY)
        t0 = time.monotonic()
        found = store.rebuild()
        self.reserved = store.reserve(kept) if kept else []
        print(f"worker {self.id}: shard rebuilt after an internal error in {after}: {found} keys in "
              f"{(time.monotonic() - t0) * 1000:.0f} ms", file=sys.stderr, flush=True)

    def crash_point(self, name: str) -> None:
        """Tests only: the first process of a worker kills itself at the named step
        (SHARDKV_TEST_CRASH=<worker>:<step>)."""
        if self.crash_at == f"{self.id}:{name}":
            os.kill(os.getpid(), signal.SIGKILL)

    def next_txn_id(self) -> int:
        txn_id = self.stats.get(self.id, W_TXN_LAST) + 1
        self.stats.set(self.id, W_TXN_LAST, txn_id)
        return txn_id

    def run(self) -> None:
        self.start()
        self.loop.run_forever()

    def stop(self) -> None:
        """Stop accepting, let queued replies go out, then leave the loop."""
        if self.stopping:
            return
        self.stopping = True
        for server in self.servers:
            server.close()
        for conn in list(self.connections):
            conn.flush()
            if conn.transport is not None:
                conn.transport.close()
        self.loop.call_later(0.2, self.loop.stop)

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = self.loop.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    # ------------------------------------------------------------------ connections

    def accept(self, conn: Connection) -> bytearray | None:
        stats, me = self.stats, self.id
        stats.add(me, W_CONNECTIONS_RECEIVED)
        if self.stopping or not self.slots:
            stats.add(me, W_REJECTED)
            return None
        # Count ourselves in first, then look at the total: two workers accepting at once may
        # both refuse, but never both admit past maxclients.
        stats.add(me, W_CONNECTED)
        if stats.total(W_CONNECTED) > self.limits.maxclients:
            stats.add(me, W_CONNECTED, -1)
            stats.add(me, W_REJECTED)
            return None
        n = self.next_client_id
        self.next_client_id = n + 1
        stats.set(me, W_NEXT_CLIENT_ID, n + 1)
        conn.id = n * self.workers + me
        self.connections.add(conn)
        self.by_id[conn.id] = conn
        return self.slots.pop()

    def release(self, conn: Connection) -> None:
        assert conn.slot is not None
        self.blocking.disconnected(conn)
        reset_multi(conn)
        unwatch_all(conn)
        self.pubsub.drop(conn)
        tracking.disable(conn)
        self.connections.discard(conn)
        self.by_id.pop(conn.id, None)
        self.paused.discard(conn)
        self.dirty.discard(conn)
        if conn in self.arena_waiters:
            self.arena_waiters.remove(conn)
        self.stats.add(self.id, W_CONNECTED, -1)
        if conn.arena is not None:
            self.give_arena(conn.arena)
            conn.arena = None
        self.slots.append(conn.slot)
        conn.slot = None

    # ------------------------------------------------------------------ the WorkerView of internal commands

    def clients(self) -> list[Connection]:
        return [c for c in self.connections if c.transport is not None]

    def unblock(self, client_id: int, as_error: bool) -> bool:
        return self.blocking.unblock(client_id, as_error)

    def inbox_pending(self) -> bool:
        """Another worker sent this one a request it has not run yet (checked on every client
        read: one load per peer ring)."""
        return self.peers.requests_pending()

    def client_by_id(self, client_id: int) -> Connection | None:
        conn = self.by_id.get(client_id)
        return conn if conn is not None and conn.transport is not None else None

    def tell_worker(self, worker: int, argv: list[bytes]) -> None:
        self.peers.request(worker, K_REQ, bytes((2, 0)) + protocol.encode_command(argv), _ignore)

    # ------------------------------------------------------------------ client tracking

    def tracking_settle(self, modifier: int) -> None:
        """After a command or an expiry sweep on this shard: queue the invalidations of what it
        changed (tracking.py) and send them (tracking_send says when each leaves)."""
        self.tracking.settle(modifier)
        if self.tracking.has_messages:
            self.tracking_send()

    def tracking_send(self) -> None:
        """Send the queued invalidations to the workers of their clients at once, so they are in
        the rings before the writer's reply leaves (a client of theirs that then sends a command
        finds them first: Connection.process); this worker's own clients get theirs once the
        current command's reply is queued.  While a transaction or a script holds this shard
        they wait for its end (unlock_own, or the end of an EXEC on this shard alone, calls
        again): a transaction's invalidations leave together, one BCAST message per prefix."""
        if self.shard_locked or self.watchers.holding:
            return
        local = []
        sent = False
        for client, kind, keys in self.tracking.take():
            home = client % self.workers
            if home == self.id:
                local.append((client, kind, keys))
            else:
                self.tell_worker(home, [b"__invalidate", b"%d" % client, kind, *keys])
                sent = True
        if sent:
            self.peers.flush()
        if local:
            self.loop.call_soon(self.tracking_deliver, local)

    def tracking_deliver(self, messages: list[tuple[int, bytes, list[bytes]]]) -> None:
        for client, kind, keys in messages:
            conn = self.client_by_id(client)
            if conn is not None:
                tracking.invalidate(self, conn, kind, keys)

    def tracking_peer_restarted(self, src: int) -> None:
        """Worker src restarted: its clients' BCAST prefixes go from this shard, its shard lost
        the keys our clients tracked (each gets a null: every key is invalid) and the prefixes of
        our BCAST clients, which it gets again."""
        self.tracking.drop_home(src, self.workers)
        for conn in self.clients():
            t = conn.tracking
            if t is None:
                continue
            tracking.invalidate(self, conn, EVERY_KEY, [])
            if t.bcast:
                self.tell_worker(src, [b"__trackprefix", b"%d" % conn.id, b"1" if t.noloop else b"0", *t.prefixes])

    def take_arena(self, conn: Connection) -> bytearray | None:
        if self.arenas:
            return self.arenas.pop()
        if conn not in self.arena_waiters:  # it may ask again while it waits (a resume)
            self.arena_waiters.append(conn)
        return None

    def give_arena(self, arena: bytearray) -> None:
        self.arenas.append(arena)
        if self.arena_waiters:
            self.arena_waiters.pop(0).arena_available()

    def count_command(self, cmd: Command, elapsed_ns: int, failed: bool) -> None:
        self.counters.command(self.command_stats_word[cmd.name], elapsed_ns, failed)

    def fast_writes(self) -> bool:
        """The fast path may write: no key is watched (WATCH, blocked clients) or tracked, and no
        keyspace notification is enabled."""
        store = self.store
        return not store.watched and not store.cas and not store.tracking and not self.event_flags()

    def event_flags(self) -> int:
        """The keyspace notification classes enabled now, 0 when none would be delivered."""
        flags = self.stats.q[self.notify_word]
        return flags if flags & (notify.KEYSPACE | notify.KEYEVENT) else 0

    def publish_events(self) -> None:
        """Publish the keyspace notifications the last command (or expiry) emitted."""
        events, self.store.events = self.store.events, []
        pairs = notify.messages(self.stats.q[self.notify_word], events)
        for channel, message in pairs:
            self.pubsub.deliver(False, channel, message)
        if self.workers > 1 and pairs:
            part = protocol.encode_command([b"__publish", b"0", *(x for pair in pairs for x in pair)])
            for w in self.peers.others:
                self.peers.request(w, K_REQ, bytes((2, 0)) + part, _ignore)

    def count_rejected(self, cmd: Command) -> None:
        """A command refused before it ran (arity, authentication, key size)."""
        self.stats.q[self.command_stats_word[cmd.name] + CMD_REJECTED] += 1

    def count_error(self, reply: bytes) -> None:
        self.stats.count_error(self.id, reply, self.error_codes)

    def count_reads(self, hits: int, misses: int) -> None:
        """INFO keyspace_hits / keyspace_misses of a read-only command's lookups."""
        base = self.stats.base(self.id)
        self.counters.add(base + W_HITS, hits)
        self.counters.add(base + W_MISSES, misses)

    def mark_dirty(self, conn: Connection) -> None:
        """conn has replies ready to write: write them once, at the end of this tick."""
        if not self.dirty:
            self.loop.call_soon(self.flush_dirty)
        self.dirty.add(conn)

    def flush_dirty(self) -> None:
        dirty, self.dirty = self.dirty, set()
        for conn in dirty:
            conn.flush()

    # ------------------------------------------------------------------ shard lock

    @property
    def shard_locked(self) -> bool:
        return self.lock_owner != NO_LOCK

    async def lock_own(self, holder: int) -> None:
        while self.lock_owner != NO_LOCK:
            fut: asyncio.Future[None] = self.loop.create_future()
            self.lock_waiters.append(fut)
            await fut
        self.lock_owner = holder

    def unlock_own(self, leftover: list[int] | None) -> None:
        if leftover:
            self.store.release(leftover)
        self.lock_owner = NO_LOCK
        waiters, self.lock_waiters = self.lock_waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)
        paused, self.paused = self.paused, set()
        for conn in paused:
            self.loop.call_soon(conn.resume)
        if self.tracking.has_messages:
            self.loop.call_soon(self.tracking_send)
        if self.watchers.deferred:
            self.watchers.transaction_ended()
        self.loop.call_soon(self.drain)

    def reserve_for(self, cmd: Command, argv: list[bytes]) -> list[int] | None:
        """Prepare a transaction's write on this shard: take its blocks now (OOM if none)."""
        if cmd.sizes is None:
            return None
        return self.store.reserve(cmd.sizes(argv))

    async def wait_unlocked(self) -> None:
        while self.lock_owner != NO_LOCK:
            fut: asyncio.Future[None] = self.loop.create_future()
            self.lock_waiters.append(fut)
            await fut

    # ------------------------------------------------------------------ rings

    def on_doorbell(self) -> None:
        try:
            os.eventfd_read(self.boot.doorbells[self.id])
        except BlockingIOError:
            pass
        self.drain()

    def drain(self) -> None:
        """Take what the other workers sent: first their replies (in C: hop.pyx), then their
        requests (what the fast path takes, in C; the rest in serve, in order)."""
        peers = self.peers
        for src in peers.others:
            peers.answer(src, self.peer_restarted)
        for src in peers.others:
            if self.lock_owner != NO_LOCK and self.lock_owner != src:
                continue
            self.fast.serve(src, self.serve_safely, self.lock_owner == NO_LOCK)
        if any(peers.pending_input(s, True) for s in peers.others) or any(
                peers.pending_input(s, False) for s in peers.others
                if self.lock_owner == NO_LOCK or self.lock_owner == s):
            self.loop.call_soon(self.drain)

    def peer_restarted(self, src: int) -> None:
        """Worker src restarted: what waited on it fails, what it held here is let go."""
        self.peers.peer_restarted(src)
        self.watchers.drop_home(src)
        self.key_watches.drop_home(src, self.workers)
        self.tracking_peer_restarted(src)
        self.blocking.owner_restarted(src)
        if self.lock_owner == src:
            self.router.undo_settle_after(src)
            self.unlock_own(self.reserved)
            self.reserved = []

    def serve_safely(self, src: int, kind: int, rid: int, body: bytes) -> bool:
        """Serve one message the fast path did not take; whether the shard is free after it."""
        self.repair_if_damaged()  # (a forwarded write the fast path gave up half-way)
        try:
            self.serve(src, kind, rid, body)
        except Exception:  # a bug: say so loudly, but never leave the peer waiting
            traceback.print_exc()  # noqa
            if kind in (K_REQ, K_LOCK, K_APPLY):
                self.peers.send(src, K_LOCKED if kind == K_LOCK else K_REP, rid, protocol.error(errors.INTERNAL))
        return self.lock_owner == NO_LOCK

    def serve(self, src: int, kind: int, rid: int, body: bytes) -> None:
        peers = self.peers
        if kind == K_REQ:
            peers.send(src, K_REP, rid, self.router.run_raw(body))
        elif kind == K_LOCK:
            assert self.lock_owner == NO_LOCK, f"LOCK from {src} while held by {self.lock_owner}"
            self.lock_owner = src
            answer = b""
            argv = parse_forwarded(body)
            cmd = lookup(argv[0])
            assert cmd is not None
            if argv[0] == b"__txnbegin":  # a transaction with an undo log (EXEC)
                self.router.undo_begin(int(argv[1]))
            try:
                self.reserved = self.reserve_for(cmd, argv) or []
            except Exception as exc:  # CommandError(OOM)
                answer = protocol.error(getattr(exc, "text", str(exc)))
            peers.send(src, K_LOCKED, rid, answer)
        elif kind == K_APPLY:
            assert self.lock_owner == src
            cmd = lookup(parse_forwarded(body)[0])
            blocks = None
            if cmd is not None and cmd.sizes is not None:  # the write that reserved them
                blocks, self.reserved = self.reserved, []
            peers.send(src, K_REP, rid, self.router.run_raw(body, blocks))
        elif kind == K_UNLOCK:
            if self.lock_owner != src:
                return  # sent to the process this one replaced, which held the lock: nothing to undo
            if self.router.undo_saved is not None:
                self.crash_point("unlock")  # (of an EXEC)
            self.router.undo_end(commit=body != b"abort")
            leftover, self.reserved = self.reserved, []
            self.unlock_own(leftover)
            if self.tracking.has_messages:  # now, before the next message on this ring is answered
                self.tracking_send()  # (Router.unlock_and_settle waits for that answer)
        elif kind == K_WATCH:
            self.watchers.watch(Watch.decode(body))
        elif kind == K_UNWATCH:
            self.watchers.unwatch(Unwatch.decode(body))
        elif kind == K_READY:
            self.blocking.wake(Ready.decode(body).token)
        else:
            raise AssertionError(f"unknown request kind {kind} from {src}")

    # ------------------------------------------------------------------ timers

    def expire_tick(self) -> None:
        """Every 100 ms sweep a tenth of the buckets (so a key's time is enforced within about a
        second even if nobody reads it), removing at most expire-keys-per-tick-max keys."""
        if not self.shard_locked and self.store.has_expires():
            now_ms = int(time.time() * 1000)
            self.store.event_flags = self.event_flags()
            self.expire_cursor, _ = self.store.expire_some(
                self.expire_cursor, max(1024, self.store.buckets // 10), self.limits.expire_keys_per_tick_max, now_ms)
            self.store.event_flags = 0
            if self.store.noted:
                self.key_watches.settle(now_ms)
            if self.store.events:
                self.publish_events()
            if self.store.tracking:
                self.tracking_settle(0)
        self.loop.call_later(EXPIRE_PERIOD_S, self.expire_tick)

    def clients_tick(self) -> None:
        """Close clients idle past CONFIG `timeout` (blocked ones wait on their own timeout), and
        clients that hold a parse arena but send slower than large-request-bytes-per-s-min (a
        stalled half-sent command would otherwise keep the arena from everyone)."""
        now = time.monotonic()
        timeout_s = self.stats.tunable("timeout")
        rate_min = self.limits.large_request_bytes_per_s_min * CLIENTS_PERIOD_S
        for conn in self.clients():
            if timeout_s > 0 and not conn.blocked and now - conn.last_active > timeout_s:
                conn.close_now()
                continue
            if conn.arena is None or not conn.arena_held:
                # Judged only over a whole period with the arena: one taken since the last tick
                # has not had a full second to arrive yet.
                conn.arena_held = conn.arena is not None
                conn.arena_mark = conn.received
                continue
            waiting_for_client = conn.wants_input and not conn.reading_paused and not conn.writing_paused
            if waiting_for_client and conn.received - conn.arena_mark < rate_min:
                print(f"worker {self.id}: closing client {conn.id} ({conn.addr}): its large request "
                      f"arrives slower than {self.limits.large_request_bytes_per_s_min} bytes/s",
                      file=sys.stderr, flush=True)
                conn.close_now()
            conn.arena_mark = conn.received
        self.loop.call_later(CLIENTS_PERIOD_S, self.clients_tick)

    def over_output_budget(self) -> None:
        """The estimate of this worker's unsent replies passed its budget: count them exactly
        and, if they really are over it, close the client holding the most."""
        total = 0
        biggest: Connection | None = None
        for conn in self.clients():
            assert conn.transport is not None
            conn.unsent_bytes = conn.queued_bytes + conn.transport.get_write_buffer_size()
            total += conn.unsent_bytes
            if biggest is None or conn.unsent_bytes > biggest.unsent_bytes:
                biggest = conn
        self.unsent_bytes = total
        if total > self.limits.output_bytes_per_worker_max and biggest is not None:
            biggest.close_for_output()

    def heartbeat_tick(self) -> None:
        self.beat()
        self.loop.call_later(HEARTBEAT_PERIOD_S, self.heartbeat_tick)

    def stats_tick(self) -> None:
        if os.getppid() != self.boot.supervisor_pid:  # the supervisor is gone: so are the segments' owner
            print(f"worker {self.id}: supervisor exited; stopping", file=sys.stderr, flush=True)
            self.stop()
            return
        self.publish_stats()
        self.loop.call_later(STATS_PERIOD_S, self.stats_tick)

    def publish_stats(self) -> None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        s, me = self.stats, self.id
        s.set(me, W_CPU_SYS_US, int(usage.ru_stime * 1e6))
        s.set(me, W_CPU_USER_US, int(usage.ru_utime * 1e6))
        s.add(me, W_NET_INPUT, self.net_input)
        s.add(me, W_NET_OUTPUT, self.net_output)
        self.net_input = self.net_output = 0
        first = s.base(me) + W_COMMAND_STATS + CMD_CALLS
        total = sum(s.q[first + CMD_WORDS * i] for i in range(len(self.command_index)))
        s.set(me, W_COMMANDS, total)


def _ignore(reply: bytes | None) -> None:
    pass


def main() -> None:
    boot = Boot.from_json(sys.argv[1])
    worker = Worker(boot)
    try:
        worker.run()
    finally:
        worker.stats.set(worker.id, W_READY, 0)
    sys.exit(0)

