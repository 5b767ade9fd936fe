"""Client-side caching (CLIENT TRACKING), on the side of the shard that owns the keys.

Default mode: a tracking client's read-only command registers its keys with the shard owning
each (`remember`), sent before the read itself on the same FIFO ring, so a write that lands in
between costs a spurious invalidation, never a missed one.  While this table tracks anything the
store notes every key a command changes (`Store.modified`) and every key it removes because its
time passed (`Store.expired_noted`); after the command `settle` takes each such key out of the
table and queues an invalidation for each client that held it, except the client that made the
change when that client asked for NOLOOP (the router names it: `modifier`, 0 for none).

BCAST mode: every worker holds every BCAST client's prefixes (registered on all of them before
CLIENT TRACKING replies), so a changed key is matched here, on its own shard.  The keys of one
prefix are gathered per client and sent as one message once the command is over (or the
transaction that holds the shard), as Redis gathers them until it next sleeps.

Messages go to the worker of the client (its id modulo the workers), which knows its
redirection, protocol and mode (commands/tracking.py).  This module does no I/O: `take` hands
the queued messages to the worker.

Bounded: the table's bytes as estimated here (`table_bytes_max`) and the server-wide count of
tracked keys (`tracking-table-max-keys`, CONFIG SET; 0 means no limit).  Past either, the keys
tracked longest leave the table with an invalidation to their clients, as Redis evicts (it picks
at random).  BCAST registrations, (prefix, client), are bounded by `prefixes_max`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from shardkv import errors
from shardkv.stats import W_TRACKING_ITEMS, W_TRACKING_KEYS, W_TRACKING_PREFIXES

if TYPE_CHECKING:
    from shardkv.stats import Stats
    from shardkv.store import Store

KEY_ENTRY_BYTES = 192  # a tracked key: its dict slot and bytes object, a client id, rounded up
CLIENT_ITEM_BYTES = 96  # one more client of a key (in a set), rounded up
# The kinds of message (their byte in the internal command): one key per message, the keys of one
# BCAST prefix together, or "every key" (a null) after a flush or a lost table.
PER_KEY, PREFIX_BATCH, EVERY_KEY = b"k", b"p", b"n"

Message = tuple[int, bytes, list[bytes]]  # (client id, kind, keys)


class TrackingTable:
    def __init__(self, store: Store, stats: Stats, worker: int, table_bytes_max: int, prefixes_max: int) -> None:
        self.store = store
        self.stats = stats
        self.worker = worker
        self.table_bytes_max = table_bytes_max
        self.prefixes_max = prefixes_max
        self.keys: dict[bytes, int | set[int]] = {}  # key -> the client id, or ids, tracking it
        self.items = 0
        self.table_bytes = 0
        self.prefixes: dict[bytes, dict[int, bool]] = {}  # BCAST prefix -> {client id: NOLOOP}
        self.registrations = 0
        self.per_key: dict[int, list[bytes]] = {}  # client -> keys to invalidate, one message each
        self.batches: dict[tuple[int, bytes], dict[bytes, None]] = {}  # (client, prefix) -> keys
        self._counts()

    def _counts(self) -> None:
        """Publish the table's size (INFO) and tell the store whether to note changes."""
        store = self.store
        # (true also while messages wait to be sent: the router's after-command hook sends them)
        store.tracking = bool(self.keys or self.prefixes) or self.has_messages
        if not store.tracking:  # nothing to invalidate: changes noted so far do not matter
            store.modified.clear()
            store.expired_noted.clear()
        stats, me = self.stats, self.worker
        stats.set(me, W_TRACKING_KEYS, len(self.keys))
        stats.set(me, W_TRACKING_ITEMS, self.items)
        stats.set(me, W_TRACKING_PREFIXES, len(self.prefixes))

    # ------------------------------------------------------------------ default mode

    def remember(self, client: int, keys: list[bytes], keys_max_total: int) -> None:
        """A tracking client reads these keys of this shard."""
        table = self.keys
        for key in keys:
            held = table.get(key)
            if held is None:
                table[key] = client
                self.items += 1
                self.table_bytes += KEY_ENTRY_BYTES + len(key)
            elif isinstance(held, int):
                if held != client:
                    table[key] = {held, client}
                    self.items += 1
                    self.table_bytes += CLIENT_ITEM_BYTES
            elif client not in held:
                held.add(client)
                self.items += 1
                self.table_bytes += CLIENT_ITEM_BYTES
        self._counts()
        self.enforce(keys_max_total)

    def enforce(self, keys_max_total: int) -> None:
        """Evict while over the byte bound or over tracking-table-max-keys (the whole server's
        keys: what the other shards hold counts, as they stand now)."""
        excess = 0
        if keys_max_total > 0:
            excess = self.stats.total(W_TRACKING_KEYS) - keys_max_total
        evicted = False
        while self.keys and (excess > 0 or self.table_bytes > self.table_bytes_max):
            key = next(iter(self.keys))  # the key tracked longest
            self._invalidate(key, 0)
            excess -= 1
            evicted = True
        if evicted:
            self._counts()

    def _invalidate(self, key: bytes, modifier: int) -> None:
        held = self.keys.pop(key)
        self.table_bytes -= KEY_ENTRY_BYTES + len(key)
        clients = (held,) if isinstance(held, int) else held
        self.items -= len(clients)
        if not isinstance(held, int):
            self.table_bytes -= CLIENT_ITEM_BYTES * (len(held) - 1)
        for client in clients:
            if client != modifier:
                self.per_key.setdefault(client, []).append(key)

    def settle(self, modifier: int) -> None:
        """After a command (or an expiry sweep): queue the invalidations of what it changed."""
        store = self.store
        changed, store.modified = store.modified, []
        expired, store.expired_noted = store.expired_noted, []
        table = self.keys
        for keys, by in ((changed, modifier), (expired, 0)):
            for key in keys:
                if key in table:
                    self._invalidate(key, by)
                if self.prefixes:
                    self._match_prefixes(key, by)
        self._counts()

    def _match_prefixes(self, key: bytes, modifier: int) -> None:
        for prefix, clients in self.prefixes.items():
            if key.startswith(prefix):
                for client, noloop in clients.items():
                    if not (noloop and client == modifier):
                        self.batches.setdefault((client, prefix), {})[key] = None

    def flush(self) -> None:
        """FLUSHDB / FLUSHALL: Redis forgets every tracked key (its clients get a null instead)."""
        self.keys = {}
        self.items = self.table_bytes = 0
        self._counts()

    # ------------------------------------------------------------------ BCAST mode

    def add_prefixes(self, client: int, noloop: bool, prefixes: list[bytes]) -> bool:
        """Register a BCAST client's prefixes here; False (nothing registered) past prefixes_max."""
        new = [p for p in prefixes if client not in self.prefixes.get(p, {})]
        if self.registrations + len(new) > self.prefixes_max:
            return False
        for prefix in prefixes:  # (again: NOLOOP may have changed)
            self.prefixes.setdefault(prefix, {})[client] = noloop
        self.registrations += len(new)
        self._counts()
        return True

    def drop_prefixes(self, client: int) -> None:
        for prefix in [p for p, clients in self.prefixes.items() if client in clients]:
            clients = self.prefixes[prefix]
            del clients[client]
            self.registrations -= 1
            if not clients:
                del self.prefixes[prefix]
        self._counts()

    def drop_home(self, home: int, workers: int) -> None:
        """Worker `home` restarted: its clients, and so their BCAST prefixes, are gone (keys
        they tracked leave the table lazily, as in Redis)."""
        for client in {c for clients in self.prefixes.values() for c in clients if c % workers == home}:
            self.drop_prefixes(client)

    # ------------------------------------------------------------------ out

    @property
    def has_messages(self) -> bool:
        """Invalidations are queued, waiting for `take`."""
        return bool(self.per_key or self.batches)

    def take(self) -> list[Message]:
        """The messages queued since the last call."""
        if not self.has_messages:
            return []
        out: list[Message] = [(client, PER_KEY, keys) for client, keys in self.per_key.items()]
        out.extend((client, PREFIX_BATCH, list(keys)) for (client, _), keys in self.batches.items())
        self.per_key = {}
        self.batches = {}
        self._counts()
        return out


def prefix_collision(existing: list[bytes], new: list[bytes]) -> str | None:
    """CLIENT TRACKING BCAST's check: two prefixes of one client must not overlap (one a prefix
    of the other), among the new ones or with the ones it has.  The error text, or None."""
    for i, prefix in enumerate(new):
        for old in existing:
            if old.startswith(prefix) or prefix.startswith(old):
                return errors.prefix_overlaps_existing(_text(prefix), _text(old))
        for other in new[i + 1 :]:
            if other.startswith(prefix) or prefix.startswith(other):
                return errors.prefix_overlaps_provided(_text(prefix), _text(other))
    return None


def _text(raw: bytes) -> str:
    return raw.decode(errors="surrogateescape")


__all__ = ["EVERY_KEY", "PER_KEY", "PREFIX_BATCH", "Message", "TrackingTable", "prefix_collision"]
