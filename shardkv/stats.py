"""Server-wide counters in a small shared segment: one row per worker, summed by INFO.

Each worker writes only its own row; any worker may read every row (8-byte loads), so INFO,
DBSIZE-like totals and commandstats need no message to other workers.
"""

from __future__ import annotations

import mmap

GLOBAL_WORDS = 64
G_SUPERVISOR_PID, G_STARTED_MS, G_SHUTDOWN = range(3)
G_TUNABLES = 16  # runtime parameters (CONFIG SET), one word each, shared by every worker

# name -> (slot, default); the *-ziplist-* names are Redis's aliases.  They only change which
# encoding OBJECT ENCODING reports: the storage layout does not depend on them.
TUNABLES: dict[str, tuple[int, int]] = {
    "hash-max-listpack-entries": (0, 128), "hash-max-listpack-value": (1, 64),
    "set-max-intset-entries": (2, 512), "list-max-listpack-size": (3, -2),
    "zset-max-listpack-entries": (4, 128), "zset-max-listpack-value": (5, 64),
    "list-compress-depth": (6, 0),
}
TUNABLE_ALIASES = {"hash-max-ziplist-entries": "hash-max-listpack-entries",
                   "hash-max-ziplist-value": "hash-max-listpack-value",
                   "zset-max-ziplist-entries": "zset-max-listpack-entries",
                   "zset-max-ziplist-value": "zset-max-listpack-value",
                   "list-max-ziplist-size": "list-max-listpack-size"}

# Per-worker fields.
(W_PID, W_GENERATION, W_CONNECTED, W_CONNECTIONS_RECEIVED, W_REJECTED, W_COMMANDS, W_HITS,
 W_MISSES, W_NET_INPUT, W_NET_OUTPUT, W_BLOCKED, W_READY, W_RESTARTS, W_CPU_SYS_US,
 W_CPU_USER_US, W_OUTPUT_LIMIT) = range(16)
W_COMMAND_STATS = 16  # then (calls, usec, failed) per command in table order


def row_words(commands: int) -> int:
    return W_COMMAND_STATS + 3 * commands


def segment_bytes(workers: int, commands: int) -> int:
    return 8 * (GLOBAL_WORDS + workers * row_words(commands))


class Stats:
    def __init__(self, mm: mmap.mmap, workers: int, commands: int) -> None:
        self.q = memoryview(mm).cast("Q")
        self.workers = workers
        self.row = row_words(commands)

    def close(self) -> None:
        self.q.release()

    def base(self, worker: int) -> int:
        return GLOBAL_WORDS + worker * self.row

    def get(self, worker: int, field: int) -> int:
        return self.q[self.base(worker) + field]

    def set(self, worker: int, field: int, value: int) -> None:
        self.q[self.base(worker) + field] = value

    def add(self, worker: int, field: int, n: int = 1) -> None:
        self.q[self.base(worker) + field] += n

    def total(self, field: int) -> int:
        return sum(self.q[self.base(w) + field] for w in range(self.workers))

    def global_get(self, field: int) -> int:
        return self.q[field]

    def global_set(self, field: int, value: int) -> None:
        self.q[field] = value

    def tunable(self, name: str) -> int:
        slot, _ = TUNABLES[TUNABLE_ALIASES.get(name, name)]
        raw = self.q[G_TUNABLES + slot]
        return raw - (1 << 64) if raw >> 63 else raw

    def set_tunable(self, name: str, value: int) -> None:
        slot, _ = TUNABLES[TUNABLE_ALIASES.get(name, name)]
        self.q[G_TUNABLES + slot] = value & ((1 << 64) - 1)

    def reset_tunables(self) -> None:
        for name, (_, default) in TUNABLES.items():
            self.set_tunable(name, default)

    def reset(self, worker: int) -> None:
        """CONFIG RESETSTAT: the cumulative counters of one worker's row."""
        b = self.base(worker)
        for f in (W_CONNECTIONS_RECEIVED, W_REJECTED, W_COMMANDS, W_HITS, W_MISSES, W_NET_INPUT, W_NET_OUTPUT):
            self.q[b + f] = 0
        for i in range(b + W_COMMAND_STATS, b + self.row):
            self.q[i] = 0
