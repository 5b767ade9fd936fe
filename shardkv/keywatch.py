"""WATCH, on the side of the shard that owns the keys: who watches what, and who a write made dirty.

A client's WATCH registers each key with the worker owning it (an internal `__watch` part), under
the client's id (unique across workers and restarts).  The store notes every change to a watched
key (`Store.note`); after the command that made it, `settle` marks the watchers dirty by Redis's
rules:
  * a key that was already logically expired when it was WATCHed (flagged `stale`): its deletion
    is no change (the flag is cleared); a stale key swapped for another stale key is no change;
  * any other change to a watched key makes its watchers dirty (also SET to the same value);
  * FLUSHDB / FLUSHALL change the watched keys that existed; SWAPDB those that exist in either db.
EXEC asks each shard of its watched keys (`check`, run while the shard is locked for the EXEC):
dirty, or a key that was alive at WATCH and has expired since, fails the EXEC.  Either way the
watch ends there, as every EXEC unwatches.

Bounded: at most `watched_keys_max` (key, client) entries per shard.  A WATCH past that watches the
whole shard instead for that client (any write to the shard makes it dirty): EXEC may then fail
where Redis's would not, never the other way round.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shardkv.store import Store

WatchedKey = tuple[int, bytes]  # (db as the client numbers it, key)


class KeyWatches:
    def __init__(self, store: Store, watched_keys_max: int) -> None:
        self.store = store
        self.watched_keys_max = watched_keys_max
        self.by_key: dict[WatchedKey, dict[int, bool]] = {}  # key -> {client id: stale at WATCH}
        self.keys_of: dict[int, list[WatchedKey]] = {}
        self.whole_shard: dict[int, int] = {}  # client id -> the store's change count at its WATCH
        self.dirty: set[int] = set()
        self.entries = 0

    def add(self, client: int, db: int, keys: list[bytes], now_ms: int) -> None:
        """WATCH keys of this shard for client (again: no change for a key it already watches)."""
        if client in self.dirty or client in self.whole_shard:
            return  # already dirty, or already watching everything here
        mine = self.keys_of.setdefault(client, [])
        for key in keys:
            wk = (db, key)
            watchers = self.by_key.get(wk)
            if watchers is not None and client in watchers:
                continue
            if self.entries >= self.watched_keys_max:
                self.drop(client)
                self.whole_shard[client] = self.store.dirty
                return
            if watchers is None:
                watchers = self.by_key[wk] = {}
            watchers[client] = self.store.is_stale(db, key, now_ms)
            mine.append(wk)
            self.entries += 1

    def drop(self, client: int) -> None:
        """UNWATCH (also at EXEC, DISCARD and disconnect)."""
        self.dirty.discard(client)
        self.whole_shard.pop(client, None)
        for wk in self.keys_of.pop(client, ()):
            watchers = self.by_key[wk]
            del watchers[client]
            self.entries -= 1
            if not watchers:
                del self.by_key[wk]

    def drop_home(self, home: int, workers: int) -> None:
        """Worker `home` restarted: its clients, and so their watches, are gone."""
        clients = set(self.keys_of) | set(self.whole_shard) | self.dirty
        for client in [c for c in clients if c % workers == home]:
            self.drop(client)

    def check(self, client: int, now_ms: int) -> bool:
        """At EXEC: True if none of the client's keys here changed; the watch ends either way.
        An unknown client (this worker restarted since its WATCH) cannot vouch: False."""
        known = client in self.keys_of or client in self.whole_shard or client in self.dirty
        clean = known and client not in self.dirty
        if clean and client in self.whole_shard:
            clean = self.whole_shard[client] == self.store.dirty
        if clean:
            for db, key in self.keys_of.get(client, ()):
                if not self.by_key[(db, key)][client] and self.store.is_stale(db, key, now_ms):
                    clean = False  # alive at WATCH, expired since (even if not deleted yet)
                    break
        self.drop(client)
        return clean

    def settle(self, now_ms: int) -> None:
        """Apply the changes the store noted during the last command."""
        store = self.store
        noted, store.noted = store.noted, []
        for how, db, key in noted:
            watchers = self.by_key.get((db, key))
            if not watchers:
                continue
            present, stale = store.presence(db, key, now_ms)
            for client, was_stale in list(watchers.items()):
                if how == NOTE_SWAPPED:
                    existed_before = store.noted_existed
                    if was_stale:
                        if not present:
                            watchers[client] = False
                            continue
                        if stale:
                            continue  # a stale key replaced by another stale key
                    elif stale and not existed_before.get((db, key), False):
                        watchers[client] = True  # a missing key replaced by a stale one
                        continue
                elif was_stale and not present:
                    watchers[client] = False  # the stale key was deleted: no logical change
                    continue
                self.dirty.add(client)
        store.noted_existed = {}


NOTE_CHANGED, NOTE_SWAPPED = 0, 1

__all__ = ["NOTE_CHANGED", "NOTE_SWAPPED", "KeyWatches", "WatchedKey"]
