"""Messages between workers: framing on the rings, outboxes, doorbells, waiting requests.

Every ordered pair of workers has two rings: requests (src -> dst) and replies (dst -> src), so
a worker can keep taking replies while it serves requests from one peer only (see the shard
lock in process.py).  A message is `[u32 length][kind u8][request id u32]` + body, the length
counting kind, id and body.  Messages for one peer are pushed in the order they were sent, the
small ones of a tick together as one ring record (one push, one pop for a whole pipeline's worth);
the peer's doorbell (an eventfd) is rung once per loop tick.
"""

from __future__ import annotations

import asyncio
import os
import struct
from collections import deque
from collections.abc import Callable

from shardkv.ring import Ring, ring_index

K_REQ, K_REP, K_LOCK, K_LOCKED, K_APPLY, K_UNLOCK, K_RESET = range(1, 8)
K_WATCH, K_UNWATCH, K_READY = range(8, 11)  # one-way messages of blocking commands (router/blocking.py)
_FRAME = struct.Struct("<IBI")
REPLY_KINDS = (K_REP, K_LOCKED, K_RESET)
MESSAGES_PER_DRAIN_MAX = 512  # ring records per ring per tick: bounds the work of one tick


class PeerReset(Exception):
    """The peer restarted: what was sent to it may or may not have run."""


Callback = Callable[[bytes | None], None]  # None: the peer restarted


class Peers:
    def __init__(self, me: int, workers: int, ring_mm: object, ring_bytes: int, doorbells: list[int],
                 loop: asyncio.AbstractEventLoop) -> None:
        self.me = me
        self.workers = workers
        self.loop = loop
        self.doorbells = doorbells
        others = [w for w in range(workers) if w != me]
        self.others = others

        def mk(src: int, dst: int, replies: bool) -> Ring:
            return Ring(ring_mm, ring_index(src, dst, workers, replies), ring_bytes)  # type: ignore[arg-type]

        self.req_out = {w: mk(me, w, False) for w in others}
        self.rep_out = {w: mk(me, w, True) for w in others}  # replies from me to w
        self.req_in = {w: mk(w, me, False) for w in others}
        self.rep_in = {w: mk(w, me, True) for w in others}
        self.outbox: dict[tuple[int, bool], deque[list[object]]] = {
            (w, rep): deque() for w in others for rep in (False, True)}
        self.bells: set[int] = set()
        self.flush_scheduled = False
        self.retry_scheduled = False
        self.next_id = 1
        self.waiting: dict[int, dict[int, Callback]] = {w: {} for w in others}

    def close(self) -> None:
        for rings in (self.req_out, self.rep_out, self.req_in, self.rep_in):
            for r in rings.values():
                r.close()

    def reset_inbound(self) -> None:
        """A new process for this worker: what was sent to the old one is dropped."""
        for r in list(self.req_in.values()) + list(self.rep_in.values()):
            r.reset_consumer()

    # ------------------------------------------------------------------ sending

    def request(self, target: int, kind: int, body: bytes, callback: Callback) -> int:
        rid = self.next_id
        self.next_id = rid + 1 if rid < 0xFFFF_FFFF else 1
        self.waiting[target][rid] = callback
        self.send(target, kind, rid, body)
        return rid

    def send(self, target: int, kind: int, rid: int, body: bytes) -> None:
        message = _FRAME.pack(5 + len(body), kind, rid) + body
        self.outbox[(target, kind in REPLY_KINDS)].append([message, 0])
        if not self.flush_scheduled:
            self.flush_scheduled = True
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        self.flush_scheduled = False
        left = False
        for (target, rep), box in self.outbox.items():
            if not box:
                continue
            ring = (self.rep_out if rep else self.req_out)[target]
            batch_max = ring.fragment_bytes_max
            while box:
                entry = box[0]
                message: bytes = entry[0]  # type: ignore[assignment]
                if not entry[1] and len(message) <= batch_max:
                    batch: list[bytes] = []  # whole small messages: one ring record for all of them
                    size = 0
                    for queued in box:
                        m: bytes = queued[0]  # type: ignore[assignment]
                        if size + len(m) > batch_max:  # (only the head can be part-sent, and it is not)
                            break
                        batch.append(m)
                        size += len(m)
                    if not ring.push(b"".join(batch)):
                        left = True
                        break
                    self.bells.add(target)
                    for _ in batch:
                        box.popleft()
                    continue
                offset = ring.push_message(message, entry[1])  # type: ignore[arg-type]
                if offset:
                    self.bells.add(target)
                if offset < len(message):
                    entry[1] = offset
                    left = True
                    break
                box.popleft()
        for target in self.bells:
            os.eventfd_write(self.doorbells[target], 1)
        self.bells.clear()
        if left and not self.retry_scheduled:
            # The peer's ring is full: it is busy; try again shortly rather than spin.
            self.retry_scheduled = True
            self.loop.call_later(0.0005, self._retry)

    def _retry(self) -> None:
        self.retry_scheduled = False
        self.flush()

    # ------------------------------------------------------------------ receiving

    def take(self, source: int, replies: bool) -> list[tuple[int, int, bytes]]:
        ring = (self.rep_in if replies else self.req_in)[source]
        out = []
        unpack = _FRAME.unpack_from
        for record in ring.pop_all(MESSAGES_PER_DRAIN_MAX):
            pos, end = 0, len(record)
            while pos < end:
                n, kind, rid = unpack(record, pos)
                out.append((kind, rid, record[pos + 9 : pos + 4 + n]))
                pos += 4 + n
        return out

    def pending_input(self, source: int, replies: bool) -> bool:
        return (self.rep_in if replies else self.req_in)[source].has_data()

    def answered(self, source: int, rid: int, body: bytes) -> None:
        cb = self.waiting[source].pop(rid, None)
        if cb is not None:  # else: failed earlier when the peer restarted
            cb(body)

    def peer_restarted(self, source: int) -> None:
        self.req_in[source].partial = []
        self.rep_in[source].partial = []
        waiting, self.waiting[source] = self.waiting[source], {}
        for cb in waiting.values():
            cb(None)

    def announce_restart(self) -> None:
        for w in self.others:
            self.send(w, K_RESET, 0, b"")
