"""Server-wide counters in a small shared segment: one row per worker, summed by INFO.

Each worker writes only its own row; any worker may read every row (8-byte loads), so INFO,
DBSIZE-like totals and commandstats need no message to other workers.
"""

from __future__ import annotations

import mmap

GLOBAL_WORDS = 64
G_SUPERVISOR_PID, G_STARTED_MS, G_SHUTDOWN = range(3)

# Per-worker fields.
(W_PID, W_GENERATION, W_CONNECTED, W_CONNECTIONS_RECEIVED, W_REJECTED, W_COMMANDS, W_HITS,
 W_MISSES, W_NET_INPUT, W_NET_OUTPUT, W_BLOCKED, W_READY, W_RESTARTS, W_CPU_SYS_US,
 W_CPU_USER_US) = range(15)
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

    def reset(self, worker: int) -> None:
        """CONFIG RESETSTAT: the cumulative counters of one worker's row."""
        b = self.base(worker)
        for f in (W_CONNECTIONS_RECEIVED, W_REJECTED, W_COMMANDS, W_HITS, W_MISSES, W_NET_INPUT, W_NET_OUTPUT):
            self.q[b + f] = 0
        for i in range(b + W_COMMAND_STATS, b + self.row):
            self.q[i] = 0
