"""Lock-free single-producer/single-consumer byte rings in shared memory; no sockets here.

Each ring has a 128-byte header (consumer position `head` at +0, producer position `tail` at +64,
on separate cache lines) and `capacity` data bytes.  Positions only grow; a record is
`[u32 length][u32 flags]` + payload padded to 8 bytes and never wraps (a PAD record fills the
end).  The producer writes a whole record and then publishes it with one aligned 8-byte store of
`tail`; the consumer copies records out and then frees them with one store of `head`.  So a
process killed at any instant leaves the ring consistent: a record is wholly published or not.

A message larger than a quarter of the ring is sent as fragments (flag MORE on all but the
last); the consumer joins them.  Every message therefore fits, whatever the ring size.
"""

from __future__ import annotations

import mmap
import struct

from shardkv.limits import RING_HEADER_BYTES

F_MORE = 1
F_PAD = 2
_HDR = struct.Struct("<II")


def ring_index(src: int, dst: int, workers: int, replies: bool) -> int:
    """Position of the ring src -> dst (requests, or replies) in the ring segment."""
    assert src != dst
    pair = src * (workers - 1) + (dst if dst < src else dst - 1)
    return pair + (workers * (workers - 1) if replies else 0)


class Ring:
    def __init__(self, mm: mmap.mmap, index: int, capacity: int) -> None:
        self.mm = mm
        self.base = index * (RING_HEADER_BYTES + capacity)
        self.data = self.base + RING_HEADER_BYTES
        self.capacity = capacity
        self.mask = capacity - 1
        self.q = memoryview(mm).cast("Q")
        self.head_word = self.base >> 3
        self.tail_word = (self.base + 64) >> 3
        self.fragment_bytes_max = capacity // 4
        self.partial: list[bytes] = []  # consumer: fragments of a message not yet complete

    def close(self) -> None:
        self.q.release()

    def reset_consumer(self) -> None:
        """Drop whatever is unread (a restarted consumer must not run requests twice)."""
        self.q[self.head_word] = self.q[self.tail_word]
        self.partial = []

    def push(self, payload: bytes | memoryview, more: bool = False) -> bool:
        """Append one record; False (and nothing written) if there is no room."""
        q = self.q
        n = len(payload)
        total = 8 + ((n + 7) & ~7)
        tail = q[self.tail_word]
        free = self.capacity - (tail - q[self.head_word])
        idx = tail & self.mask
        pad = self.capacity - idx if idx + total > self.capacity else 0
        if total + pad > free:
            return False
        mm = self.mm
        if pad:
            _HDR.pack_into(mm, self.data + idx, pad - 8, F_PAD)
            idx = 0
        at = self.data + idx
        _HDR.pack_into(mm, at, n, F_MORE if more else 0)
        mm[at + 8 : at + 8 + n] = payload
        q[self.tail_word] = tail + pad + total  # publish
        return True

    def push_message(self, message: bytes, offset: int = 0) -> int:
        """Push message[offset:] as fragments while room lasts; returns the new offset."""
        n = len(message)
        assert n > 0, "messages are never empty"
        view = memoryview(message)
        while offset < n:
            end = min(n, offset + self.fragment_bytes_max)
            if not self.push(view[offset:end], more=end < n):
                break
            offset = end
        return offset

    def pop_all(self, messages_max: int) -> list[bytes]:
        """Take up to messages_max complete messages; their space is freed before returning."""
        q = self.q
        head = q[self.head_word]
        tail = q[self.tail_word]
        out: list[bytes] = []
        mm = self.mm
        while head < tail and len(out) < messages_max:
            at = self.data + (head & self.mask)
            n, flags = _HDR.unpack_from(mm, at)
            if flags & F_PAD:
                head += n + 8
                continue
            chunk = mm[at + 8 : at + 8 + n]
            head += 8 + ((n + 7) & ~7)
            if flags & F_MORE:
                self.partial.append(chunk)
                continue
            if self.partial:
                self.partial.append(chunk)
                chunk = b"".join(self.partial)
                self.partial = []
            out.append(chunk)
        q[self.head_word] = head  # free: each message is taken at most once
        return out

    def has_data(self) -> bool:
        return self.q[self.head_word] != self.q[self.tail_word]
