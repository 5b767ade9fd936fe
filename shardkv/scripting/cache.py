"""Scripts cached by EVAL and SCRIPT LOAD, shared by every worker and kept across their restarts.

They live in a segment the supervisor allocates (`scripts-bytes-max`), so a worker that restarts,
or any other worker, finds a script another one loaded.  Redis never evicts scripts: when the
segment is full, loading a new one is refused with the OOM error, until SCRIPT FLUSH.

Layout: word 0 the generation (SCRIPT FLUSH bumps it), word 1 the end of the used area; entries
from byte 64, each `[u32 body length][40-byte hex sha1][body]`, 8-byte aligned.  One writer,
worker 0 (the others send it `__scriptstore`), writes an entry, then publishes it by storing word
1.  Readers index what lies before word 1, and index again when the generation changes.
"""

from __future__ import annotations

import mmap
import struct

from shardkv.errors import OOM, CommandError

HEADER_BYTES = 64
_LEN = struct.Struct("<I")
SHA_BYTES = 40


def entry_bytes(body: bytes) -> int:
    return (_LEN.size + SHA_BYTES + len(body) + 7) & ~7


class ScriptCache:
    def __init__(self, mm: mmap.mmap | memoryview) -> None:
        self.mm = mm
        self.q = memoryview(mm).cast("Q")
        self.index: dict[bytes, tuple[int, int]] = {}  # sha -> (body offset, length)
        self.generation = -1
        self.scanned = HEADER_BYTES

    def _refresh(self) -> None:
        q = self.q
        if q[0] != self.generation:
            self.generation = q[0]
            self.index.clear()
            self.scanned = HEADER_BYTES
        end = q[1]
        mm = self.mm
        while HEADER_BYTES <= self.scanned < end:
            (n,) = _LEN.unpack_from(mm, self.scanned)
            at = self.scanned + _LEN.size
            self.index[bytes(mm[at : at + SHA_BYTES])] = (at + SHA_BYTES, n)
            self.scanned += (_LEN.size + SHA_BYTES + n + 7) & ~7

    def get(self, sha: bytes) -> bytes | None:
        """The body of a cached script (sha: 40 lowercase hex digits)."""
        self._refresh()
        where = self.index.get(sha)
        if where is None:
            return None
        body = bytes(self.mm[where[0] : where[0] + where[1]])
        if self.q[0] != self.generation:  # flushed while we read
            return None
        return body

    def __contains__(self, sha: bytes) -> bool:
        self._refresh()
        return sha in self.index

    def __len__(self) -> int:
        self._refresh()
        return len(self.index)

    def used_bytes(self) -> int:
        return max(HEADER_BYTES, self.q[1]) - HEADER_BYTES

    def add(self, sha: bytes, body: bytes) -> None:
        """The writer (worker 0) caches a script; OOM if the segment has no room left."""
        if sha not in self:
            self.append(sha, body)

    def flush(self) -> None:
        """SCRIPT FLUSH (the writer only)."""
        q = self.q
        q[1] = HEADER_BYTES
        q[0] += 1

    def entries(self, start: int = HEADER_BYTES) -> tuple[list[tuple[bytes, bytes]], int, int]:
        """(key, body) of every entry from offset start, in order (a log, replayed), with the
        generation and the offset where the next reading starts."""
        q, mm = self.q, self.mm
        generation, end = q[0], q[1]
        out = []
        at = max(start, HEADER_BYTES)
        while at < end:
            (n,) = _LEN.unpack_from(mm, at)
            key = bytes(mm[at + _LEN.size : at + _LEN.size + SHA_BYTES]).rstrip(b" ")
            out.append((key, bytes(mm[at + _LEN.size + SHA_BYTES : at + _LEN.size + SHA_BYTES + n])))
            at += (_LEN.size + SHA_BYTES + n + 7) & ~7
        return out, generation, at

    def has_room(self, body: bytes) -> bool:
        return max(HEADER_BYTES, self.q[1]) + entry_bytes(body) <= len(self.mm)

    def append(self, key: bytes, body: bytes) -> None:
        """The writer adds an entry even if its key is there already (a log, not a cache)."""
        q = self.q
        at = max(HEADER_BYTES, q[1])
        size = entry_bytes(body)
        if at + size > len(self.mm):
            raise CommandError(OOM)
        _LEN.pack_into(self.mm, at, len(body))
        self.mm[at + _LEN.size : at + _LEN.size + SHA_BYTES] = key.ljust(SHA_BYTES, b" ")
        self.mm[at + _LEN.size + SHA_BYTES : at + _LEN.size + SHA_BYTES + len(body)] = body
        q[1] = at + size  # publish


__all__ = ["HEADER_BYTES", "ScriptCache", "entry_bytes"]
