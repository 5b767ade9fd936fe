"""Server-wide counters in a small shared segment: one row per worker, summed by INFO.

Each worker writes only its own row; any worker may read every row (8-byte loads), so INFO,
DBSIZE-like totals and commandstats need no message to other workers.  The global area also
holds the runtime parameters (CONFIG SET) and the `requirepass` password with its SHA-256
digest, so no password travels on a command line; the segment is mode 0600, like the shards.

The password lives in two slots, each guarded by its own sequence word (a seqlock: odd while a
writer is in it).  A writer (holding an exclusive `flock` on the segment, so writers take turns)
fills the slot that is not active and then publishes it by storing its index in one word.  A
reader copies the active slot and retries if that slot's sequence word was odd or changed
meanwhile, so it never sees a torn password; a writer killed half-way leaves only the inactive
slot torn, which readers never use and the next writer overwrites.
"""

from __future__ import annotations

import fcntl
import hashlib
import mmap

from shardkv.limits import REQUIREPASS_BYTES_MAX

GLOBAL_WORDS = 256
G_SUPERVISOR_PID, G_STARTED_MS, G_SHUTDOWN = range(3)
# The script running now, if any (router/scripts.py): its worker + 1 (0: none), when it started
# (ms), whether it wrote (SCRIPT KILL is then refused), a kill request, and whether it is a function.
G_SCRIPT_WORKER, G_SCRIPT_STARTED_MS, G_SCRIPT_WROTE, G_SCRIPT_KILL, G_SCRIPT_FUNCTION = range(3, 8)
# The shards' expired-key counts (kept in their segments) when CONFIG RESETSTAT last ran: INFO's
# expired_keys counts from there.
G_EXPIRED_BASE = 8
G_TUNABLES = 16  # runtime parameters (CONFIG SET), one word each, shared by every worker
G_PASSWORD_ACTIVE = 32  # which of the two password slots readers use (0 or 1)
G_PASSWORD_SLOTS = 33  # two slots of PASSWORD_SLOT_WORDS: sequence, length, digest (4), text
PASSWORD_SLOT_WORDS = 6 + REQUIREPASS_BYTES_MAX // 8
PASSWORD_READ_TRIES_MAX = 100_000  # a reader that loses this many races to writers is a bug
assert G_PASSWORD_SLOTS + 2 * PASSWORD_SLOT_WORDS <= GLOBAL_WORDS

# name -> (slot, default); the *-ziplist-* names are Redis's aliases.  They only change which
# encoding OBJECT ENCODING reports: the storage layout does not depend on them.
TUNABLES: dict[str, tuple[int, int]] = {
    "hash-max-listpack-entries": (0, 128), "hash-max-listpack-value": (1, 64),
    "set-max-intset-entries": (2, 512), "list-max-listpack-size": (3, -2),
    "zset-max-listpack-entries": (4, 128), "zset-max-listpack-value": (5, 64),
    "list-compress-depth": (6, 0),
    "timeout": (7, 0),  # seconds an idle client is kept (the boot value comes from Limits.timeout)
    "notify-keyspace-events": (8, 0),  # the enabled classes as bits (commands/notify.py), "" = 0
    "busy-reply-threshold": (9, 5000),  # ms a script runs before other clients get -BUSY (0: never)
    "tracking-table-max-keys": (10, 1_000_000),  # tracked keys of the whole server (0: no limit)
}
TUNABLE_ALIASES = {"hash-max-ziplist-entries": "hash-max-listpack-entries",
                   "hash-max-ziplist-value": "hash-max-listpack-value",
                   "zset-max-ziplist-entries": "zset-max-listpack-entries",
                   "zset-max-ziplist-value": "zset-max-listpack-value",
                   "list-max-ziplist-size": "list-max-listpack-size",
                   "lua-time-limit": "busy-reply-threshold"}

# Per-worker fields.
(W_PID, W_GENERATION, W_CONNECTED, W_CONNECTIONS_RECEIVED, W_REJECTED, W_COMMANDS, W_HITS,
 W_MISSES, W_NET_INPUT, W_NET_OUTPUT, W_BLOCKED, W_READY, W_RESTARTS, W_CPU_SYS_US,
 W_CPU_USER_US, W_OUTPUT_LIMIT) = range(16)
W_HEARTBEAT_MS = 16  # CLOCK_MONOTONIC ms the worker last showed progress (0: not yet, this life)
W_NEXT_CLIENT_ID = 17  # the next client id's sequence number, kept across restarts of the worker
# Transactions this worker coordinates (router/transaction.py): the last id it gave one (kept
# across restarts, so no id is used twice), the one it is running and has not decided yet (0:
# none), and the last one it committed.  A shard holding an undo log of this worker's
# transaction reads them to learn its fate.
W_TXN_LAST, W_TXN_ACTIVE, W_TXN_DECIDED = 18, 19, 20
# Client tracking (tracking.py): this worker's clients with tracking on, and its shard's table:
# keys, (key, client) items, distinct BCAST prefixes (every worker holds all of them).
W_TRACKING_CLIENTS, W_TRACKING_KEYS, W_TRACKING_ITEMS, W_TRACKING_PREFIXES = 21, 22, 23, 24
W_COMMAND_STATS = 25  # then CMD_WORDS words per command, in table order:
CMD_CALLS, CMD_USEC, CMD_FAILED, CMD_REJECTED, CMD_WORDS = range(5)  # fast.Counters.command: the first three


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
    def __init__(self, mm: mmap.mmap, workers: int, commands: int, lock_fd: int = -1) -> None:
        self.view = memoryview(mm)
        self.q = self.view.cast("Q")
        self.workers = workers
        self.row = row_words(commands)
        self.lock_fd = lock_fd  # an fd of the segment itself: flock'ed by password writers

    def close(self) -> None:
        self.q.release()
        self.view.release()

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
        raw = self.view
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
        raw = self.view
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
    # ------------------------------------------------------------------ password

    def _password_slot(self) -> tuple[int, int]:
        """(first word of the active slot, its sequence value), once no writer is in it."""
        q = self.q
        for _ in range(PASSWORD_READ_TRIES_MAX):
            slot = G_PASSWORD_SLOTS + (q[G_PASSWORD_ACTIVE] & 1) * PASSWORD_SLOT_WORDS
            seq = q[slot]
            if not seq & 1:
                return slot, seq
        raise AssertionError("the active password slot stayed busy")

    def _password_read(self, words: slice) -> bytes:
        """Bytes of the active slot's words (relative to the slot), never torn."""
        q = self.q
        for _ in range(PASSWORD_READ_TRIES_MAX):
            slot, seq = self._password_slot()
            data = self.view[8 * (slot + words.start) : 8 * (slot + words.stop)].tobytes()
            if q[slot] == seq:
                return data
        raise AssertionError("the password kept changing under a reader")

    def password(self) -> bytes:
        """The current requirepass (b"": none)."""
        head = self._password_read(slice(1, PASSWORD_SLOT_WORDS))
        length = int.from_bytes(head[:8], "little")
        assert length <= REQUIREPASS_BYTES_MAX
        return head[40 : 40 + length]

    def password_digest(self) -> bytes:
        """SHA-256 of the current requirepass (of b"" when there is none)."""
        return self._password_read(slice(2, 6))

    def password_set(self) -> bool:
        """Whether clients must authenticate: decides a new connection's state."""
        return self._password_read(slice(1, 2)) != bytes(8)

    def set_password(self, password: bytes) -> None:
        """Store a new requirepass for every worker; b"" removes it.  Writers take turns on the
        segment's flock (held for a few stores); a writer that dies releases it."""
        assert len(password) <= REQUIREPASS_BYTES_MAX
        if self.lock_fd >= 0:
            fcntl.flock(self.lock_fd, fcntl.LOCK_EX)
        try:
            q = self.q
            active = q[G_PASSWORD_ACTIVE] & 1
            slot = G_PASSWORD_SLOTS + (1 - active) * PASSWORD_SLOT_WORDS
            q[slot] = q[slot] + (1 if q[slot] % 2 == 0 else 2)  # odd: readers keep out
            q[slot + 1] = len(password)
            text = 8 * (slot + 6)
            self.view[8 * (slot + 2) : 8 * (slot + 6)] = hashlib.sha256(password).digest()
            self.view[text : text + REQUIREPASS_BYTES_MAX] = password.ljust(REQUIREPASS_BYTES_MAX, b"\0")
            q[slot] = q[slot] + 1  # even: complete
            q[G_PASSWORD_ACTIVE] = 1 - active  # the one store that publishes it
        finally:
            if self.lock_fd >= 0:
                fcntl.flock(self.lock_fd, fcntl.LOCK_UN)

    # ------------------------------------------------------------------ counters

    def reset(self, worker: int) -> None:
        """CONFIG RESETSTAT: the cumulative counters of one worker's row."""
        b = self.base(worker)
        for f in (W_CONNECTIONS_RECEIVED, W_REJECTED, W_COMMANDS, W_HITS, W_MISSES, W_NET_INPUT, W_NET_OUTPUT):
            self.q[b + f] = 0
        for i in range(b + W_COMMAND_STATS, b + self.row):
            self.q[i] = 0
        self.reset_errors(worker)
