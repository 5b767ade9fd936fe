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
    "timeout": (7, 0),  # seconds an idle client is kept (the boot value comes from Limits.timeout)
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
W_COMMAND_STATS = 16  # then CMD_WORDS words per command, in table order:
CMD_CALLS, CMD_USEC, CMD_FAILED, CMD_REJECTED, CMD_WORDS = range(5)


def row_words(commands: int) -> int:
    return W_COMMAND_STATS + CMD_WORDS * commands


# INFO errorstats: per worker, after every row, a table of error codes (the first word of an error
# reply, as Redis counts them) with a count each, and the total of error replies.
ERROR_CODES_MAX = 128  # distinct codes counted per worker; replies with further codes count in the total only
ERROR_CODE_BYTES_MAX = 32  # Redis looks for the code's end within the first 32 bytes
_ERROR_ENTRY_WORDS = 1 + ERROR_CODE_BYTES_MAX // 8  # count, then the code (NUL-padded)
ERRORSTATS_WORDS = 1 + ERROR_CODES_MAX * _ERROR_ENTRY_WORDS  # the total, then the entries


def segment_bytes(workers: int, commands: int) -> int:
    return 8 * (GLOBAL_WORDS + workers * (row_words(commands) + ERRORSTATS_WORDS))


class Stats:
    def __init__(self, mm: mmap.mmap, workers: int, commands: int) -> None:
        self.raw = memoryview(mm)
        self.q = self.raw.cast("Q")
        self.workers = workers
        self.row = row_words(commands)

    def close(self) -> None:
        self.q.release()
        self.raw.release()

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

    # ------------------------------------------------------------------ errorstats

    def _errors_base(self, worker: int) -> int:
        return GLOBAL_WORDS + self.workers * self.row + worker * ERRORSTATS_WORDS

    def count_error(self, worker: int, reply: bytes, codes: dict[bytes, int]) -> None:
        """One error reply sent by `worker`; `codes` caches that worker's code -> entry word."""
        space = reply.find(b" ", 1, ERROR_CODE_BYTES_MAX + 1)
        code = reply[1:space] if space > 1 else b"ERR"
        q = self.q
        base = self._errors_base(worker)
        q[base] += 1
        word = codes.get(code)
        if word is None:
            word = self._error_entry(base, code)
            if word is None:
                return  # table full: counted in the total only
            codes[code] = word
        q[word] += 1

    def _error_entry(self, base: int, code: bytes) -> int | None:
        raw = self.raw
        for i in range(ERROR_CODES_MAX):
            word = base + 1 + i * _ERROR_ENTRY_WORDS
            at = (word + 1) * 8
            stored = bytes(raw[at : at + ERROR_CODE_BYTES_MAX]).rstrip(b"\0")
            if stored == code:
                return word
            if not stored:
                raw[at : at + ERROR_CODE_BYTES_MAX] = code.ljust(ERROR_CODE_BYTES_MAX, b"\0")
                return word
        return None

    def error_totals(self) -> tuple[int, dict[bytes, int]]:
        """Error replies of every worker: the total, and the count per code."""
        raw = self.raw
        total = 0
        per_code: dict[bytes, int] = {}
        for w in range(self.workers):
            base = self._errors_base(w)
            total += self.q[base]
            for i in range(ERROR_CODES_MAX):
                word = base + 1 + i * _ERROR_ENTRY_WORDS
                at = (word + 1) * 8
                code = bytes(raw[at : at + ERROR_CODE_BYTES_MAX]).rstrip(b"\0")
                if not code:
                    break
                per_code[code] = per_code.get(code, 0) + self.q[word]
        return total, per_code

    def reset_errors(self, worker: int) -> None:
        """The counts to zero; the codes stay where they are (a worker caches their places)."""
        base = self._errors_base(worker)
        self.q[base] = 0
        for i in range(ERROR_CODES_MAX):
            self.q[base + 1 + i * _ERROR_ENTRY_WORDS] = 0

    def reset(self, worker: int) -> None:
        """CONFIG RESETSTAT: the cumulative counters of one worker's row."""
        b = self.base(worker)
        for f in (W_CONNECTIONS_RECEIVED, W_REJECTED, W_COMMANDS, W_HITS, W_MISSES, W_NET_INPUT, W_NET_OUTPUT):
            self.q[b + f] = 0
        for i in range(b + W_COMMAND_STATS, b + self.row):
            self.q[i] = 0
        self.reset_errors(worker)
