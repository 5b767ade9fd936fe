"""One client connection: read into a preallocated slot, frame, route, write replies in order.

Reading uses `asyncio.BufferedProtocol` straight into the connection's slot buffer (allocated at
boot).  A command larger than the slot moves to one of the worker's parse arenas (also allocated
at boot) while it is assembled; when none is free, reading pauses until one is.  All replies
produced by one read event go out in one `transport.write`; replies that other shards supply
(`Pending`) keep their place in the queue, so a pipeline's replies come back in request order.
"""

from __future__ import annotations

import asyncio
import time
import traceback
from collections import deque
from typing import TYPE_CHECKING

from shardkv import errors, protocol
from shardkv.commands.context import REPLY_ON, REPLY_SKIP, Pending
from shardkv.commands.tracking import ClientTracking, client_list_fields
from shardkv.native import fast_takes, take_ready
from shardkv.protocol import ParseResult
from shardkv.router.dispatch import CLIENT_CLOSE, Router
from shardkv.stats import W_OUTPUT_LIMIT

if TYPE_CHECKING:
    from shardkv.worker.process import Worker


class Connection(asyncio.BufferedProtocol):
    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.router = worker.router
        self.server: Router = worker.router  # what client commands see of the server
        self.transport: asyncio.Transport | None = None
        self.slot: bytearray | None = None
        self.buf = bytearray(0)
        self.end = 0
        self.arena: bytearray | None = None
        self.replies: deque[bytes | Pending] = deque()
        self.barrier: Pending | None = None  # a transaction this connection waits for
        self.closing = False  # close once the queued replies are written
        self.blocked = False  # waiting in a blocking command (router/blocking.py)
        self.reading_paused = False  # the buffer is full and cannot be drained yet
        self.writing_paused = False  # the client is not reading its replies fast enough
        self.inflight = 0  # replies this client awaits from other shards (bounds the peer outboxes)
        self.settling = False  # a command waits until those replies are all back
        self.wants_input = False  # the buffer ends in part of a command and nothing else holds it up
        self.id = 0
        self.db = 0
        self.proto = 2
        self.name = b""
        self.lib_name = b""
        self.lib_ver = b""
        self.authenticated = not worker.stats.password_set()  # the current one: CONFIG SET may change it
        self.created = time.monotonic()
        self.last_active = self.created
        self.received = 0  # bytes read so far
        self.arena_mark = 0  # `received` when the client tick last looked at its use of an arena
        self.arena_held = False  # it held an arena at the last tick
        self.queued_bytes = 0  # replies ready but not yet handed to the transport
        self.unsent_bytes = 0  # queued + the transport's buffer, as of the last flush
        self.last_command = b"NULL"
        self.multi: list[list[bytes]] | None = None
        self._multi_bytes = 0
        self.multi_failed = False
        self.watching: set[int] = set()
        self.executing = False
        self.channels: dict[bytes, None] = {}
        self.patterns: dict[bytes, None] = {}
        self.shard_channels: dict[bytes, None] = {}
        self.reply_mode = REPLY_ON
        self.silenced: set[Pending] = set()  # replies to drop when they come (CLIENT REPLY OFF / SKIP)
        self.tracking: ClientTracking | None = None
        self.addr = ""
        self.laddr = ""

    # ------------------------------------------------------------------ asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.addr = _address(transport.get_extra_info("peername"))
        self.laddr = _address(transport.get_extra_info("sockname"))
        slot = self.worker.accept(self)
        if slot is None:
            transport.write(protocol.error(errors.MAX_CLIENTS))  # type: ignore[attr-defined]
            transport.close()
            self.transport = None
            return
        self.slot = self.buf = slot

    def connection_lost(self, exc: Exception | None) -> None:
        if self.slot is not None:
            self.worker.release(self)
        self.transport = None
        self.replies.clear()
        self.worker.unsent_bytes -= self.unsent_bytes
        self.unsent_bytes = self.queued_bytes = 0

    @property
    def multi_bytes(self) -> int:
        return self._multi_bytes

    @multi_bytes.setter
    def multi_bytes(self, n: int) -> None:
        """The client's queued transaction bytes; the worker keeps their sum (a bounded budget)."""
        self.worker.transaction_bytes += n - self._multi_bytes
        self._multi_bytes = n

    @property
    def connected(self) -> bool:
        return self.transport is not None

    def get_buffer(self, sizehint: int) -> memoryview:
        if self.end >= len(self.buf):
            assert self.closing, "reading must pause when the buffer is full"
            return memoryview(bytearray(1024))  # discarded: nothing more is read after QUIT
        return memoryview(self.buf)[self.end :]

    def buffer_updated(self, nbytes: int) -> None:
        if self.closing:
            return
        self.end += nbytes
        self.received += nbytes
        worker = self.worker
        worker.net_input += nbytes
        if not self.replies and not self.unsent_bytes and self.barrier is None and not self.writing_paused \
                and self.transport is not None and self.plain() and not worker.inbox_pending():
            # Nothing is queued or waited for: a read of whole commands is run from the first on
            # by the fast path as far as it takes them (the usual client: one command, or a
            # pipeline of these, on this worker's keys), and their replies written at once.
            lim = worker.limits
            parsed = protocol.parse_requests(self.buf, self.end, lim.args_max, lim.value_bytes_max)
            requests = parsed.requests
            if parsed.error is None and parsed.consumed == self.end and requests:
                try:
                    done, data = worker.fast.express(requests, self.db, self.proto)
                except Exception:  # a bug: say so loudly, and let the pipeline answer the read
                    traceback.print_exc()  # noqa
                    done = 0
                if done:
                    argv, _, consumed = requests[done - 1]
                    self.last_command = argv[0]
                    worker.repair_if_damaged()
                    self.last_active = time.monotonic()
                    self._shift(consumed)
                    if self.end:  # the rest goes through the pipeline, answered after these
                        self.replies.append(data)
                        self.queued_bytes += len(data)
                        self.process()
                        return
                    self.wants_input = False
                    worker.net_output += len(data)
                    self.transport.write(data)
                    if self.transport.get_write_buffer_size():
                        self._account_unsent()
                    if self.reading_paused:
                        self._update_reading()
                    return
            self.process(parsed)  # (parsed with the limits the pipeline uses for this client)
            return
        self.process()

    def eof_received(self) -> bool | None:
        return None

    def pause_writing(self) -> None:
        """The transport holds more unsent replies than its high-water mark: run no more
        commands for this client until it reads (its replies are what would grow)."""
        self.writing_paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        self.writing_paused = False
        self._update_reading()
        self.worker.loop.call_soon(self.resume)

    # ------------------------------------------------------------------ commands

    def process(self, parsed: ParseResult | None = None) -> None:
        """Run every complete command in the buffer, unless waiting for a transaction or a lock;
        `parsed`: the buffer as it is, already parsed (by buffer_updated, for a plain client)."""
        if self.transport is None or self.closing:
            return
        worker = self.worker
        if worker.inbox_pending():
            # What other workers sent before this client's commands came goes first, as one Redis
            # would have run it first: a message or invalidation caused by a write that was
            # already answered arrives before the reply to this command, and a client that
            # blocked elsewhere an instant ago is queued on its key before this command pushes.
            worker.drain()
        if self.barrier is not None or self.writing_paused or self.inflight >= lim_inflight(self):
            self._update_reading()
            return
        busy = False
        if worker.shard_locked:
            busy = worker.script_busy()
            if not busy:
                worker.paused.add(self)
                worker.wake_when_busy()
                self._update_reading()
                return
        lim = worker.limits
        if not self.authenticated and not worker.stats.password_set():
            self.authenticated = True  # CONFIG SET requirepass "" lets everyone in, as in Redis
        unauthenticated = not self.authenticated
        if parsed is None:
            parsed = protocol.parse_requests(self.buf, self.end, lim.args_max, lim.value_bytes_max,
                                             unauthenticated=unauthenticated)
        consumed = parsed.consumed
        error = parsed.error
        execute = self.router.execute
        inflight_max = lim.inflight_per_client_max
        self.last_active = time.monotonic()
        stopped = False
        requests = parsed.requests
        count = len(requests)
        run_fast, takes_fast = worker.fast.run, fast_takes
        i = 0
        while i < count:
            if takes_fast(requests[i][0][0]) and not busy and self.plain():
                # The commonest commands run in C (fast.pyx's FAST_COMMANDS: GET, SET, HGET ...; a
                # key of another worker's is sent there), up to the first request that is not one
                # of them.
                i = run_fast(self, requests, i)
                worker.repair_if_damaged()
                if self.inflight >= inflight_max:
                    consumed, error, stopped = requests[i - 1][2], None, True
                    break
                if i == count:
                    break
            argv, start, end = requests[i]
            i += 1
            if not i & 1023:
                worker.beat()  # a long batch of commands shows the watchdog it progresses (else its timer does)
            if self.inflight and self.router.runs_here(argv):
                # A connection or server command (DBSIZE, KEYS, CLIENT ...) sees what this client's
                # earlier commands did on other shards: it waits until they have all answered.
                consumed, error, stopped = start, None, True
                self.settling = True
                break
            mode = self.reply_mode
            if busy:  # a script runs past busy-reply-threshold: only what Redis allows then
                busy_reply = self.router.busy_reply(self, argv)
                reply = busy_reply if busy_reply is not None else execute(self, argv, start, end)
            else:
                reply = execute(self, argv, start, end)
            if mode is not REPLY_ON and self.reply_mode is not REPLY_ON and argv[0].lower() not in PUSHED_REPLIES:
                # CLIENT REPLY OFF, or SKIP before it: this command's reply is not sent (CLIENT
                # REPLY ON's own OK is); a reply still to come is dropped when it comes.
                if mode is REPLY_SKIP and self.reply_mode is REPLY_SKIP:
                    self.reply_mode = REPLY_ON
                if isinstance(reply, bytes) or reply.value is not None:
                    reply = b""
                else:
                    self.silenced.add(reply)
            self.replies.append(reply)
            if isinstance(reply, bytes):
                self.queued_bytes += len(reply)  # a Pending's bytes are counted when it resolves
            if isinstance(reply, Pending) and reply.value is None:
                if reply.barrier:
                    self.barrier = reply
                else:
                    self.inflight += 1
            if self.barrier is not None or self.closing or (worker.shard_locked and not busy) or \
                    self.inflight >= inflight_max:
                consumed, error, stopped = end, None, True
                if worker.shard_locked and self.barrier is None:
                    worker.paused.add(self)
                break
            if unauthenticated and self.authenticated:  # what follows AUTH is parsed with the full limits
                consumed, error, stopped = end, None, True
                worker.loop.call_soon(self.resume)
                break
        self.last_command = parsed.requests[-1][0][0] if parsed.requests else self.last_command
        if error is not None:
            self.replies.append(protocol.protocol_error(error))
            self.closing = True
        self._shift(consumed)
        # Waiting for the client to send the rest of a command (not for anything of ours): the
        # clients tick holds a client holding a parse arena to a minimum rate only then.
        self.wants_input = not stopped and error is None and self.end > 0
        if not self.closing and not self._room_for(parsed.needed):
            return
        self._update_reading()
        self.flush()

    def plain(self) -> bool:
        """Nothing about this client or its worker that the fast path does not handle: it has
        authenticated, is not in MULTI, not subscribed, not tracking, wants its replies, and the
        shard is not locked."""
        return self.authenticated and self.multi is None and not self.channels and not self.patterns and \
            not self.shard_channels and self.tracking is None and self.reply_mode is REPLY_ON and \
            not self.worker.shard_locked

    def _update_reading(self) -> None:
        """Backpressure: stop reading while the buffer is full of commands that must wait."""
        if self.transport is None or self.closing:
            return
        full = self.end >= len(self.buf) or self.writing_paused
        if full and not self.reading_paused:
            self.transport.pause_reading()
            self.reading_paused = True
        elif not full and self.reading_paused:
            self.transport.resume_reading()
            self.reading_paused = False

    def _shift(self, consumed: int) -> None:
        if consumed:
            left = self.end - consumed
            if left:
                self.buf[0:left] = self.buf[consumed : self.end]
            self.end = left
        if self.arena is not None and self.slot is not None and self.end <= len(self.slot):
            self.slot[0 : self.end] = self.arena[0 : self.end]
            self.buf = self.slot
            self.worker.give_arena(self.arena)
            self.arena = None

    def _room_for(self, needed: int) -> bool:
        """Make sure the next read has room; False if the connection was closed or paused."""
        if self.end < len(self.buf) and needed <= len(self.buf):
            return True
        if self.barrier is not None or self.worker.shard_locked:
            return True  # full of commands that wait: _update_reading pauses until they run
        if self.arena is not None or needed > self.worker.limits.query_buffer_bytes_max:
            self.close_now()  # over client-query-buffer-limit: Redis closes without a reply
            return False
        arena = self.worker.take_arena(self)
        if arena is None:
            assert self.transport is not None
            if not self.reading_paused:
                self.transport.pause_reading()  # resumed by arena_available
                self.reading_paused = True
            return False
        arena[0 : self.end] = self.buf[0 : self.end]
        self.arena = self.buf = arena
        return True

    def arena_available(self) -> None:
        """Called by the worker when a parse arena this connection waited for is free."""
        if self.transport is None or self.arena is not None:
            return
        if self._room_for(len(self.buf) + 1):
            self._update_reading()

    def resume(self) -> None:
        """The shard lock was released or a transaction finished: go on with buffered input."""
        self.process()
        self.flush()

    def reply_ready(self, pending: Pending) -> None:
        assert pending.value is not None
        if pending.value == CLIENT_CLOSE:
            pending.value = CLIENT_CLOSE  # the one object flush() looks for
        if pending is self.barrier:
            self.queued_bytes += len(pending.value)
            self.barrier = None
            self.worker.loop.call_soon(self.resume)
            self.worker.mark_dirty(self)
        elif not pending.barrier:
            self.replies_ready(1, len(pending.value))
        else:
            self.queued_bytes += len(pending.value)
            self.worker.mark_dirty(self)

    def replies_ready(self, count: int, nbytes: int) -> None:
        """count replies from other shards (no barrier among them), nbytes in all, came back
        (hop.pyx tells of a tick's worth at once)."""
        self.queued_bytes += nbytes
        before = self.inflight
        self.inflight = after = before - count
        if before > lim_inflight(self) // 2 >= after:  # throttled: go on once half came back
            self.worker.loop.call_soon(self.resume)
        elif self.settling and not after:
            self.settling = False
            self.worker.loop.call_soon(self.resume)
        self.worker.mark_dirty(self)

    def push(self, data: bytes) -> None:
        if self.transport is None or self.closing:
            return
        self.replies.append(data)
        self.queued_bytes += len(data)
        self.worker.mark_dirty(self)

    @property
    def subscribed(self) -> bool:
        return bool(self.channels or self.patterns or self.shard_channels)

    def flush(self) -> None:
        """Write the replies that are ready, in order, up to the first that is not."""
        if self.transport is None:
            return
        out: list[bytes] = []
        errors: list[bytes] = []
        over_limit, dropped = take_ready(self.replies, out, errors, CLIENT_CLOSE, self.silenced)  # compiled: hop.pyx
        self.queued_bytes -= dropped
        for value in errors:  # counted in INFO errorstats
            self.worker.count_error(value)
        if out:
            data = out[0] if len(out) == 1 else b"".join(out)
            self.queued_bytes -= len(data)
            self.worker.net_output += len(data)
            self.transport.write(data)
        if over_limit:  # a reply grew past the output limit while it was built: close, as Redis does
            self.close_for_output()
            return
        if not self._account_unsent():
            return
        if self.closing and not self.replies:
            self.transport.close()

    def _account_unsent(self) -> bool:
        """Count what is written but not yet sent, the connection's and the worker's, and close
        the connection past its output limit (Redis closes such a client too), or the worker's
        biggest clients past its budget; False if this connection is gone."""
        assert self.transport is not None
        unsent = self.queued_bytes + self.transport.get_write_buffer_size()
        self.worker.unsent_bytes += unsent - self.unsent_bytes
        self.unsent_bytes = unsent
        limits = self.worker.limits
        if unsent > (limits.pubsub_output_bytes_max if self.subscribed else limits.output_buffer_bytes_max):
            self.close_for_output()
            return False
        if self.worker.unsent_bytes > self.worker.limits.output_bytes_per_worker_max:
            self.worker.over_output_budget()
            return self.transport is not None
        return True

    def close_for_output(self) -> None:
        """Closed for the replies it does not read (counted in INFO)."""
        self.worker.stats.add(self.worker.id, W_OUTPUT_LIMIT)
        self.close_now()

    def close_now(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def kill(self, after_reply: bool) -> None:
        """CLIENT KILL: the caller itself is closed once its reply is written, others at once
        (what they have been sent already still goes out)."""
        self.closing = True
        self.flush()
        if not after_reply and self.transport is not None:
            self.transport.close()

    def client_info(self) -> str:
        now = time.monotonic()
        flags = "b" if self.blocked else "x" if self.multi is not None else "P" if self.subscribed else ""
        tracking_flags, redir = client_list_fields(self)
        flags = (flags + tracking_flags) or "N"
        multi = -1 if self.multi is None else len(self.multi)
        return (
            f"id={self.id} addr={self.addr} laddr={self.laddr} fd=-1 name={self.name.decode(errors='replace')} "
            f"age={int(now - self.created)} idle={int(now - self.last_active)} flags={flags} db={self.db} "
            f"sub={len(self.channels)} psub={len(self.patterns)} ssub={len(self.shard_channels)} multi={multi} "
            f"qbuf={self.end} qbuf-free={len(self.buf) - self.end} "
            f"argv-mem=0 multi-mem=0 rbs={len(self.buf)} rbp={len(self.buf)} obl=0 oll={len(self.replies)} "
            f"omem=0 tot-mem={len(self.buf)} events=r cmd={self.last_command.lower().decode(errors='replace')} "
            f"user=default redir={redir} resp={self.proto} lib-name={self.lib_name.decode(errors='replace')} "
            f"lib-ver={self.lib_ver.decode(errors='replace')}"
        )


# Replies Redis sends as pushes, which CLIENT REPLY OFF / SKIP does not silence.
PUSHED_REPLIES = frozenset({b"subscribe", b"psubscribe", b"ssubscribe", b"unsubscribe", b"punsubscribe",
                            b"sunsubscribe"})


def lim_inflight(conn: Connection) -> int:
    return conn.worker.limits.inflight_per_client_max


def _address(info: object) -> str:
    if isinstance(info, tuple) and len(info) >= 2:
        host = str(info[0])
        return f"[{host}]:{info[1]}" if ":" in host else f"{host}:{info[1]}"
    return str(info or "")
