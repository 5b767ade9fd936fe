# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Messages between workers, compiled: the lock-free rings in shared memory, the framing of the
messages on them, each worker's outboxes and doorbells, and the replies that come back.

Rings.  Every ordered pair of workers has two one-way rings, requests (src -> dst) and replies
(dst -> src), so a worker keeps taking replies while it serves requests from one peer only (the
shard lock, worker/process.py).  A ring has a 128-byte header (the consumer's position `head` at
+0, the producer's `tail` at +64, on separate cache lines) and `capacity` data bytes.  Positions
only grow.  A record is [u32 length][u32 flags] + payload padded to 8 bytes, and never wraps (a
PAD record fills the end).  The producer writes a whole record and publishes it with one release
store of `tail`; the consumer reads `tail` with an acquire load, copies out what it takes and
frees it with one release store of `head`.  So a process killed at any instant leaves the ring
consistent: a record is wholly published or not.  Every position and length read from the ring is
checked before it is followed: a bad one raises RingDamaged, never reads outside the ring.

Messages.  A message is [u32 length][kind u8][request id u32] + body, the length counting kind, id
and body (host byte order: both ends are on one machine).  Messages for one peer wait in its
outbox (one per peer and direction, in the order sent) until flush, once per loop tick, pushes
them: as many whole messages as fit in a quarter of the ring go as one record; a larger message
goes as fragments (flag MORE on all but its last), which the consumer joins.  So every message
fits, whatever the ring size, and a pipeline's worth of messages is one push and one pop.  The
peer's doorbell (an eventfd) is rung once per flush.

Replies.  A request waits for its reply in `waiting`: a Pending (a client's reply another shard
supplies, which keeps its place in the client's queue) is resolved here; any other waiter is a
Python callback, called with the reply, or with None if the peer restarted.
"""

from cpython.bytes cimport PyBytes_CheckExact, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_GetItem, PyDict_SetItem
from cpython.list cimport PyList_GET_ITEM
from cpython.mem cimport PyMem_Free, PyMem_Realloc
from cpython.ref cimport PyObject
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.string cimport memcpy, memmove

cdef extern from *:
    """
    #ifndef SHARDKV_SOURCE_SHA256
    #define SHARDKV_SOURCE_SHA256 ""
    #endif
    #include <unistd.h>
    static inline uint64_t hop_load_acquire(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
    static inline void hop_store_release(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
    static inline uint32_t hop_u32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
    static inline void hop_put_u32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
    static inline int hop_ring_bell(int fd) { uint64_t one = 1; return (int) write(fd, &one, 8); }
    """
    const char *SHARDKV_SOURCE_SHA256
    uint64_t hop_load_acquire(const uint64_t *p) nogil
    void hop_store_release(uint64_t *p, uint64_t v) nogil
    uint32_t hop_u32(const uint8_t *p) nogil
    void hop_put_u32(uint8_t *p, uint32_t v) nogil
    int hop_ring_bell(int fd) nogil

from shardkv import limits

SOURCE_SHA256 = SHARDKV_SOURCE_SHA256.decode()  # of hop.pyx when it was compiled (native.py)
KINDS = {"REQ": K_REQ, "REP": K_REP, "LOCK": K_LOCK, "LOCKED": K_LOCKED, "APPLY": K_APPLY, "UNLOCK": K_UNLOCK,
         "RESET": K_RESET, "WATCH": K_WATCH, "UNWATCH": K_UNWATCH, "READY": K_READY}
MESSAGES_PER_DRAIN_MAX = 512  # ring records taken per ring per tick: bounds the work of one tick

cdef Py_ssize_t HEADER_BYTES = limits.RING_HEADER_BYTES  # head and tail, each on its own cache line
if HEADER_BYTES < 128:
    raise ImportError("hop.pyx keeps a ring's tail 64 bytes after its head: the header must hold both")
cdef uint32_t F_MORE = 1
cdef uint32_t F_PAD = 2
cdef Py_ssize_t FRAME_BYTES = 9  # u32 length, kind, u32 request id
cdef Py_ssize_t OUTBOX_KEPT_BYTES = 1 << 20  # an empty outbox keeps up to this much room for the next tick


class RingDamaged(Exception):
    """A ring's positions or framing are not what a producer writes: a bug, or damaged memory."""


cdef class Pending:
    """A reply that another shard (or a transaction) will supply; kept in request order."""

    def __init__(self, conn, bint barrier=False):
        self.value = None
        self.conn = conn
        self.barrier = barrier
        self.callback = None

    cpdef void resolve(self, bytes value) except *:
        if self.value is not None:
            return  # resolved once: a late second answer (after an error reply) is dropped
        self.value = value
        if self.callback is not None:
            self.callback(value)
        if self.conn is not None:
            self.conn.reply_ready(self)


def take_ready(replies not None, list out not None, list errors not None, bytes close not None, set silenced):
    """A client's flush: move the replies ready at the head of its queue (bytes, or a Pending
    answered) to out, in order, up to the first still awaited, and the error replies among them
    to errors too (INFO errorstats); drop those whose Pending is in silenced (CLIENT REPLY OFF).
    (whether it stopped at `close`, the reply that closes the client, which stays queued; the
    bytes dropped)."""
    cdef object head, value
    cdef Py_ssize_t dropped = 0
    popleft = replies.popleft
    while replies:
        head = replies[0]
        if PyBytes_CheckExact(head):
            value = head
        else:
            value = (<Pending?> head).value
            if value is None:
                break
        if value is close:
            return True, dropped
        if silenced and head in silenced:
            silenced.discard(head)
            popleft()
            dropped += PyBytes_GET_SIZE(<bytes> value)
            continue
        if PyBytes_GET_SIZE(<bytes> value) and (<const char *> (<bytes> value))[0] == 45:  # '-': an error
            errors.append(value)
        out.append(value)
        popleft()
    return False, dropped


cdef class Ring:
    """One one-way ring; see the module's docstring."""

    def __init__(self, mm, Py_ssize_t index, Py_ssize_t capacity):
        if capacity < 64 or capacity & (capacity - 1):
            raise ValueError(f"ring capacity {capacity} is not a power of two >= 64")
        self.view = mm
        cdef Py_ssize_t base = index * (HEADER_BYTES + capacity)
        if index < 0 or base + HEADER_BYTES + capacity > self.view.shape[0]:
            raise ValueError(f"ring {index} is outside the ring segment")
        cdef uint8_t *at = &self.view[0] + base
        self.head = <uint64_t *> at
        self.tail = <uint64_t *> (at + 64)
        self.data = at + HEADER_BYTES
        self.capacity = <uint64_t> capacity
        self.mask = <uint64_t> capacity - 1
        self.fragment_bytes_max = capacity // 4
        self.partial = bytearray()

    def close(self):
        self.head = self.tail = NULL
        self.data = NULL
        self.view = None

    cdef int check_open(self) except -1:
        if self.data == NULL:
            raise ValueError("the ring is closed")
        return 0

    def reset_consumer(self):
        """Drop whatever is unread (a restarted consumer must not run requests twice)."""
        self.check_open()
        hop_store_release(self.head, hop_load_acquire(self.tail))
        del self.partial[:]

    def drop_partial(self):
        """Forget the fragments of a message whose producer restarted before its last one."""
        del self.partial[:]

    cpdef bint has_data(self):
        self.check_open()
        return self.head[0] != hop_load_acquire(self.tail)

    cdef bint push(self, const uint8_t *p, Py_ssize_t n, bint more) except -1:
        """Append one record; False (and nothing written) if there is no room."""
        self.check_open()
        cdef uint64_t total = 8 + ((<uint64_t> n + 7) & ~(<uint64_t> 7))
        cdef uint64_t tail = self.tail[0]  # this process is the only producer
        cdef uint64_t used = tail - hop_load_acquire(self.head)
        if used > self.capacity:
            raise RingDamaged(f"ring positions are {used} bytes apart in a ring of {self.capacity}")
        cdef uint64_t idx = tail & self.mask
        cdef uint64_t pad = self.capacity - idx if idx + total > self.capacity else 0
        if total + pad > self.capacity - used:
            return False
        if pad:
            hop_put_u32(self.data + idx, <uint32_t> (pad - 8))
            hop_put_u32(self.data + idx + 4, F_PAD)
            idx = 0
        hop_put_u32(self.data + idx, <uint32_t> n)
        hop_put_u32(self.data + idx + 4, F_MORE if more else 0)
        memcpy(self.data + idx + 8, p, n)
        hop_store_release(self.tail, tail + pad + total)  # publish
        return True

    cdef int take(self, list out, Py_ssize_t records_max) except -1:
        """Append (kind, request id, body) of each whole message in up to records_max records to
        out; their space is freed before returning (each message is taken at most once)."""
        self.check_open()
        cdef uint64_t head = self.head[0]  # this process is the only consumer
        cdef uint64_t tail = hop_load_acquire(self.tail)
        cdef uint64_t idx, size
        cdef uint32_t n, flags
        cdef Py_ssize_t records = 0
        cdef const uint8_t *p
        if tail - head > self.capacity:
            raise RingDamaged(f"ring positions are {tail - head} bytes apart in a ring of {self.capacity}")
        while head != tail and records < records_max:
            idx = head & self.mask
            n = hop_u32(self.data + idx)
            flags = hop_u32(self.data + idx + 4)
            if flags & F_PAD:
                if idx + 8 + n != self.capacity or tail - head < 8 + <uint64_t> n:
                    raise RingDamaged(f"a pad record of {n} bytes at {idx} does not end the ring")
                head += 8 + n
                continue
            size = 8 + ((<uint64_t> n + 7) & ~(<uint64_t> 7))
            if idx + size > self.capacity or size > tail - head:
                raise RingDamaged(f"a record of {n} bytes at {idx} runs past what was published")
            p = self.data + idx + 8
            head += size
            records += 1
            if flags & F_MORE or self.partial:
                self.partial += p[:n]
                if flags & F_MORE:
                    continue
                joined, self.partial = self.partial, bytearray()
                split_messages(<const uint8_t *> (<char *> joined), len(joined), out)
            else:
                split_messages(p, n, out)
        hop_store_release(self.head, head)  # free
        return 0


cdef int split_messages(const uint8_t *p, Py_ssize_t n, list out) except -1:
    cdef Py_ssize_t pos = 0, m
    while pos < n:
        if n - pos < FRAME_BYTES:
            raise RingDamaged(f"{n - pos} bytes at the end of a record are not a message")
        m = hop_u32(p + pos)
        if m < FRAME_BYTES - 4 or m > n - pos - 4:
            raise RingDamaged(f"a message of {m} bytes does not fit its record")
        body = PyBytes_FromStringAndSize(<const char *> p + pos + FRAME_BYTES, m - 5)
        out.append((p[pos + 4], hop_u32(p + pos + 5), body))
        pos += 4 + m
    return 0


cdef class Outbox:
    """The messages for one peer in one direction, framed, in the order sent, until pushed."""

    def __dealloc__(self):
        PyMem_Free(self.buf)

    cdef int add(self, uint8_t kind, uint32_t rid, const uint8_t *head, Py_ssize_t head_n,
                 const uint8_t *body, Py_ssize_t n) except -1:
        """Frame one message whose body is head + body."""
        cdef Py_ssize_t length = 5 + head_n + n, need = self.size + 4 + length, room
        cdef uint8_t *grown
        if length > 0xFFFF_FFFF:
            raise ValueError(f"a message of {length} bytes is too long to frame")
        if need > self.room:
            room = max(need, 2 * self.room, 4096)
            grown = <uint8_t *> PyMem_Realloc(self.buf, room)
            if grown == NULL:
                raise MemoryError()
            self.buf, self.room = grown, room
        cdef uint8_t *at = self.buf + self.size
        hop_put_u32(at, <uint32_t> length)
        at[4] = kind
        hop_put_u32(at + 5, rid)
        if head_n:
            memcpy(at + FRAME_BYTES, head, head_n)
        if n:
            memcpy(at + FRAME_BYTES + head_n, body, n)
        self.size = need
        return 0

    cdef bint push_to(self, Ring ring) except -1:
        """Push what fits (see the module's docstring); True if anything was pushed."""
        cdef Py_ssize_t fmax = ring.fragment_bytes_max, chunk, size, at, m
        cdef bint pushed = False
        while self.sent < self.size:
            if self.left:  # the rest of a message larger than a record
                chunk = min(self.left, fmax)
                if not ring.push(self.buf + self.sent, chunk, chunk < self.left):
                    break
                self.sent += chunk
                self.left -= chunk
                pushed = True
                continue
            size = 0
            at = self.sent
            while at < self.size:
                m = 4 + <Py_ssize_t> hop_u32(self.buf + at)
                if size + m > fmax:
                    break
                size += m
                at += m
            if not size:  # the next message alone is larger than a record
                self.left = 4 + <Py_ssize_t> hop_u32(self.buf + self.sent)
                continue
            if not ring.push(self.buf + self.sent, size, False):
                break
            self.sent += size
            pushed = True
        if self.sent == self.size:
            self.sent = self.size = 0
            if self.room > OUTBOX_KEPT_BYTES:
                PyMem_Free(self.buf)
                self.buf, self.room = NULL, 0
        elif self.sent > self.size // 2:
            memmove(self.buf, self.buf + self.sent, self.size - self.sent)
            self.size -= self.sent
            self.sent = 0
        return pushed

    cdef bint empty(self) noexcept:
        return self.sent == self.size


cdef class Peers:
    """This worker's end of the rings to every other worker; see the module's docstring."""

    def __init__(self, int me, int workers, ring_mm, Py_ssize_t ring_bytes, list doorbells not None, loop,
                 bytes restarted_reply not None):
        cdef int w
        self.me = me
        self.workers = workers
        self.loop = loop
        self.doorbells = doorbells
        self.restarted_reply = restarted_reply  # a client's reply in flight to a peer that restarted
        self.others = [w for w in range(workers) if w != me]
        self.req_out, self.rep_out, self.req_in, self.rep_in = [], [], [], []
        self.box_req, self.box_rep, self.waiting = [], [], []
        for w in range(workers):
            here = w == me
            self.req_out.append(None if here else Ring(ring_mm, ring_index(me, w, workers, False), ring_bytes))
            self.rep_out.append(None if here else Ring(ring_mm, ring_index(me, w, workers, True), ring_bytes))
            self.req_in.append(None if here else Ring(ring_mm, ring_index(w, me, workers, False), ring_bytes))
            self.rep_in.append(None if here else Ring(ring_mm, ring_index(w, me, workers, True), ring_bytes))
            self.box_req.append(Outbox())
            self.box_rep.append(Outbox())
            self.waiting.append({})
        self.bells = bytearray(workers)
        self.next_id = 1
        self.flush_scheduled = self.retry_scheduled = False

    def close(self):
        for rings in (self.req_out, self.rep_out, self.req_in, self.rep_in):
            for r in rings:
                if r is not None:
                    r.close()

    def reset_inbound(self):
        """A new process for this worker: what was sent to the old one is dropped."""
        for w in self.others:
            self.req_in[w].reset_consumer()
            self.rep_in[w].reset_consumer()

    # ------------------------------------------------------------------ sending

    cdef int check_peer(self, int w) except -1:
        if w < 0 or w >= self.workers or w == self.me:
            raise ValueError(f"worker {w} is not a peer of worker {self.me}")
        return 0

    cdef uint32_t new_id(self) noexcept:
        cdef uint32_t rid = self.next_id
        self.next_id = rid + 1 if rid < 0xFFFF_FFFF else 1
        return rid

    def request(self, int target, int kind, bytes body not None, callback):
        """Send a request; callback (a Pending, or a callable) gets its reply.  The request id."""
        self.check_peer(target)
        cdef uint32_t rid = self.new_id()
        self.waiting[target][rid] = callback
        self.send(target, kind, rid, body)
        return rid

    cpdef void send(self, int target, int kind, uint32_t rid, bytes body) except *:
        self.check_peer(target)
        self.queue(target, <uint8_t> kind, rid, NULL, 0, body, PyBytes_GET_SIZE(body))

    cdef int queue(self, int target, uint8_t kind, uint32_t rid, const uint8_t *head, Py_ssize_t head_n,
                   const uint8_t *body, Py_ssize_t n) except -1:
        cdef bint reply = kind == K_REP or kind == K_LOCKED or kind == K_RESET
        cdef Outbox box = <Outbox> PyList_GET_ITEM(self.box_rep if reply else self.box_req, target)
        box.add(kind, rid, head, head_n, body, n)
        if not self.flush_scheduled:
            self.flush_scheduled = True
            self.loop.call_soon(self.flush)
        return 0

    cdef int forward(self, int target, uint8_t proto, uint8_t db, const uint8_t *frame, Py_ssize_t n,
                     Pending pending) except -1:
        """A client's command (its RESP frame) for the worker owning its key: the reply resolves
        pending.  (The body is the header router/dispatch.py's `head` writes for a plain client.)"""
        cdef uint8_t head[2]
        cdef uint32_t rid = self.new_id()
        head[0], head[1] = proto, db
        PyDict_SetItem(<dict> PyList_GET_ITEM(self.waiting, target), rid, pending)
        self.queue(target, K_REQ, rid, head, 2, frame, n)
        return 0

    def flush(self):
        """Push what the outboxes hold and ring the doorbells of the peers that got something."""
        cdef int w
        cdef bint left = False
        cdef Outbox box
        self.flush_scheduled = False
        for w in self.others:
            for box, ring in ((self.box_req[w], self.req_out[w]), (self.box_rep[w], self.rep_out[w])):
                if box.empty():
                    continue
                if box.push_to(ring):
                    self.bells[w] = 1
                if not box.empty():
                    left = True
        for w in self.others:
            if self.bells[w]:
                self.bells[w] = 0
                hop_ring_bell(self.doorbells[w])  # (fails only if the counter would overflow: it is rung)
        if left and not self.retry_scheduled:
            # The peer's ring is full: it is busy; try again shortly rather than spin.
            self.retry_scheduled = True
            self.loop.call_later(0.0005, self._retry)

    def _retry(self):
        self.retry_scheduled = False
        self.flush()

    def announce_restart(self):
        for w in self.others:
            self.send(w, K_RESET, 0, b"")

    # ------------------------------------------------------------------ receiving

    cpdef list take(self, int source, bint replies):
        """The messages from source (replies, or requests) that came since the last take:
        (kind, request id, body) each, in order."""
        self.check_peer(source)
        cdef list out = []
        (<Ring> (self.rep_in if replies else self.req_in)[source]).take(out, MESSAGES_PER_DRAIN_MAX)
        return out

    def pending_input(self, int source, bint replies):
        self.check_peer(source)
        return (<Ring> (self.rep_in if replies else self.req_in)[source]).has_data()

    def requests_pending(self):
        """Any request from any peer not yet taken (one load per ring)."""
        cdef int w
        for w in self.others:
            if (<Ring> PyList_GET_ITEM(self.req_in, w)).has_data():
                return True
        return False

    def answer(self, int source, on_reset):
        """Take the replies from source and hand each to what waits for it; on_reset(source) is
        called, in its place among them, for a message saying source restarted.  A client's
        plain pending replies are resolved here and its connection told once, of all of them
        (replies_ready), rather than once per reply."""
        cdef dict waiting
        cdef dict told = {}  # connection -> [replies, bytes]
        cdef PyObject *found
        cdef Pending pending
        for kind, rid, body in self.take(source, True):
            if kind == K_RESET:
                tell(told)
                on_reset(source)
                continue
            waiting = <dict> PyList_GET_ITEM(self.waiting, source)
            found = PyDict_GetItem(waiting, rid)
            if found == NULL:
                continue  # failed earlier when the peer restarted
            waiter = <object> found
            del waiting[rid]
            if type(waiter) is not Pending:
                waiter(body)
                continue
            pending = <Pending> waiter
            if pending.value is None and pending.callback is None and pending.conn is not None and \
                    not pending.barrier and body[:1] != b"\x00":  # (NUL: dispatch.CLIENT_CLOSE, for reply_ready)
                pending.value = body
                counts = told.get(pending.conn)
                if counts is None:
                    told[pending.conn] = [1, len(body)]
                else:
                    counts[0] += 1
                    counts[1] += len(body)
            else:
                pending.resolve(body)
        tell(told)

    def peer_restarted(self, int source):
        """Everything waiting on source fails: it may or may not have run."""
        self.check_peer(source)
        (<Ring> self.req_in[source]).drop_partial()
        (<Ring> self.rep_in[source]).drop_partial()
        waiting = self.waiting[source]
        self.waiting[source] = {}
        for waiter in waiting.values():
            if type(waiter) is Pending:
                (<Pending> waiter).resolve(self.restarted_reply)
            else:
                waiter(None)


cdef void tell(dict told) except *:
    """Tell each connection how many of its replies came back (and how many bytes)."""
    for conn, counts in told.items():
        conn.replies_ready(counts[0], counts[1])
    told.clear()


def ring_index(int src, int dst, int workers, bint replies):
    """Position of the ring src -> dst (requests, or replies) in the ring segment."""
    if src == dst:
        raise ValueError("a worker has no ring to itself")
    cdef int pair = src * (workers - 1) + (dst if dst < src else dst - 1)
    return pair + (workers * (workers - 1) if replies else 0)
