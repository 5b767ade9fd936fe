# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The compiled front of a worker's pipeline: the stats counters a command adds to, and the fast
path that runs the commonest commands end to end (PING; GET, EXISTS of one key, HGET, HEXISTS,
SISMEMBER, LINDEX; plain SET, INCR, DECR, INCRBY, DECRBY; LPUSH, RPUSH, LPOP, RPOP, SADD and HSET
of one element), without a Python frame per command: on a local key here, on another worker's key by
sending it there (hop.pyx) and, there, running and answering it in C.

The fast path is the router's pipeline for these cases only, in the same order (command lookup,
arity, key size, the key's shard, then the command), and it calls the same compiled primitives as
the handlers (Index.string_resp for GET; layouts.field_get and list_get for the other reads; for
SET, the allocator, Index.put and the RESP framing that Store.put uses; Index.incr for the INCR
family; layouts.pyx's one-store changes of a large list, set or hash, which collstore.py calls
too), so each command's semantics is written once.
It stops at the first request it does not take whole: another command or form, a long key or
value, an inline command for another worker, a key whose time has passed (deleting it emits
events), a new key or a small collection (the Python handlers write those), a key of another type
or a value that is not an integer (an error reply, counted in errorstats), a string overwriting a
collection (whose blocks the store frees), a change that needs more than one store (a full chunk,
a table that must grow, a list's last entry), a full heap (OOM), or an exception (a damaged
segment: the shard is repaired first).  The router runs that request, and the rest, through its
Python pipeline.  It calls the fast path only while the connection is in the plain state
(authenticated, no MULTI, not subscribed, no tracking, replies on) and the shard is not locked,
and lets it write only while no key is watched (WATCH, blocked clients), tracked (CLIENT TRACKING)
or notified (keyspace events)."""

from cpython.bytearray cimport PyByteArray_AS_STRING
from cpython.bytes cimport PyBytes_GET_SIZE
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
from cpython.tuple cimport PyTuple_GET_ITEM
from libc.stdint cimport INT64_MIN, int64_t, uint8_t, uint16_t, uint64_t

from shardkv.hop cimport K_REP, K_REQ, Peers, Pending
from shardkv.index cimport (
    INCR_CREATED,
    LAYOUT_CHUNKS,
    LAYOUT_TABLE,
    SPAN_STRING,
    TYPE_HASH,
    TYPE_LIST,
    TYPE_SET,
    TYPE_STRING,
    HASH_SLOTS,
    Index,
    key_slot,
    record_bytes,
)
from shardkv.layouts cimport chunks_pop, chunks_push, field_get, list_get, structure, table_set
from shardkv.resp cimport bulk, integer_of, parse_at, string2ll

from shardkv.errors import CommandError, ProtocolError
from shardkv.index import EXPIRED, WRONG_TYPE


cdef extern from *:
    """
    #ifndef SHARDKV_SOURCE_SHA256
    #define SHARDKV_SOURCE_SHA256 ""
    #endif
    #include <time.h>
    static inline uint64_t shardkv_monotonic_ns(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000000000u + (uint64_t) ts.tv_nsec;
    }
    static inline uint64_t shardkv_wall_ms(void) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        return (uint64_t) ts.tv_sec * 1000u + (uint64_t) ts.tv_nsec / 1000000u;
    }
    static inline void shardkv_add_relaxed(uint64_t *p, uint64_t n) {
        __atomic_store_n(p, __atomic_load_n(p, __ATOMIC_RELAXED) + n, __ATOMIC_RELAXED);
    }
    """
    const char *SHARDKV_SOURCE_SHA256
    uint64_t shardkv_monotonic_ns() nogil
    uint64_t shardkv_wall_ms() nogil
    void shardkv_add_relaxed(uint64_t *p, uint64_t n) nogil


SOURCE_SHA256 = SHARDKV_SOURCE_SHA256.decode()  # of fast.pyx when it was compiled (native.py)


cdef class Counters:
    """The stats segment's words, as this worker adds to them (one writer per word; other
    processes read them whole: each word is one relaxed 8-byte load or store)."""

    cdef uint8_t[::1] segment
    cdef uint64_t *q
    cdef Py_ssize_t words

    def __init__(self, segment):
        self.segment = segment
        self.q = <uint64_t *> &self.segment[0]
        self.words = self.segment.shape[0] // 8

    cdef inline void check(self, Py_ssize_t word) except *:
        if word < 0 or word >= self.words:
            raise IndexError(f"stats word {word} is outside the segment")

    cpdef void add(self, Py_ssize_t word, int64_t n) except *:
        """Add n (which may be negative) to a word."""
        self.check(word)
        shardkv_add_relaxed(&self.q[word], <uint64_t> n)

    cpdef void command(self, Py_ssize_t base, uint64_t elapsed_ns, bint failed) except *:
        """One call of a command: its calls, microseconds and failures (INFO commandstats), at
        base: its first word (stats.CMD_CALLS, CMD_USEC, CMD_FAILED follow in that order)."""
        self.check(base + 2)
        shardkv_add_relaxed(&self.q[base], 1)
        shardkv_add_relaxed(&self.q[base + 1], elapsed_ns // 1000)
        if failed:
            shardkv_add_relaxed(&self.q[base + 2], 1)


cdef inline uint64_t name_code(bytes name) noexcept:
    """A command name of up to seven bytes in lower case, with its length, as one number (0 for a
    longer one)."""
    cdef const unsigned char *c = name
    cdef Py_ssize_t n = PyBytes_GET_SIZE(name), i
    cdef uint64_t code = <uint64_t> n
    if n > 7:
        return 0
    for i in range(n):
        code |= (<uint64_t> (c[i] | 32)) << (8 * (i + 1))
    return code


cdef enum:  # the commands the fast path takes, each in one form (its arity: ARITY); reads first
    C_NONE, C_GET, C_EXISTS, C_HGET, C_HEXISTS, C_SISMEMBER, C_LINDEX, C_PING,
    C_SET, C_INCR, C_DECR, C_INCRBY, C_DECRBY, C_LPUSH, C_RPUSH, C_LPOP, C_RPOP, C_SADD, C_HSET, C_COUNT

# Their names in C_ order from C_GET (FastPath wants each one's stats words).
FAST_COMMANDS = ("get", "exists", "hget", "hexists", "sismember", "lindex", "ping",
                 "set", "incr", "decr", "incrby", "decrby", "lpush", "rpush", "lpop", "rpop", "sadd", "hset")
cdef Py_ssize_t ARITY[C_COUNT]
# GET key, EXISTS key, HGET key field, ..., LINDEX key index, PING; SET key value, ..., HSET key field value
ARITY[:] = [0, 2, 2, 3, 3, 3, 3, 1, 3, 2, 2, 3, 3, 3, 3, 2, 2, 3, 4]
cdef uint64_t CODES[C_COUNT]
CODES[:] = [0] + [name_code(name.encode()) for name in FAST_COMMANDS]
cdef bytes OK = b"+OK\r\n"
cdef enum:
    PREFETCH_AHEAD = 16  # a pipeline's keys whose index words are asked for at once
cdef bytes PONG = b"+PONG\r\n"
cdef bytes ONE = b":1\r\n"
cdef bytes ZERO = b":0\r\n"


cdef inline int fast_command(uint64_t code) noexcept:
    """The fast path's number for a command name's code (C_NONE: a name it never takes)."""
    cdef int c
    if code:
        for c in range(C_GET, C_COUNT):
            if CODES[c] == code:
                return c
    return C_NONE


def takes(bytes name not None):
    """Whether a command of this name (any case) may be run by the fast path: a cheap test the
    router makes before it looks at the client's state."""
    return fast_command(name_code(name)) != C_NONE


cdef class FastPath:
    """The commands of FAST_COMMANDS in their one form, run in C: this worker's own keys end to
    end, another worker's sent to it; see the module's docstring."""

    cdef Index index
    cdef object allocator  # alloc.Allocator: alloc(bytes) and free(offset)
    cdef Counters counters
    cdef bytearray dbmap
    cdef bytes owners  # uint16 per slot: the worker that owns it
    cdef int me
    cdef bint single
    cdef Py_ssize_t key_bytes_max, value_bytes_max, hits_word, misses_word, inflight_max
    cdef Py_ssize_t words[C_COUNT]  # each command's first stats word
    cdef Peers peers
    cdef public object writes  # () -> bool: whether it may write (asked once per run, at its first write)
    cdef public bint damaged  # a write raised half-way (a damaged segment): the shard needs repair

    def __init__(self, Index index not None, allocator, Counters counters not None, bytearray dbmap not None,
                 bytes owners, int me, Py_ssize_t key_bytes_max, Py_ssize_t value_bytes_max, dict words not None,
                 Py_ssize_t hits_word, Py_ssize_t misses_word, Peers peers not None, Py_ssize_t inflight_max, writes):
        if len(owners) != HASH_SLOTS * 2:
            raise ValueError("owners must hold one uint16 per slot")
        self.index = index
        self.allocator = allocator
        self.counters = counters
        self.dbmap = dbmap  # the store's: SWAPDB changes it in place
        self.owners = owners
        self.me = me
        self.single = all(o == me for o in memoryview(owners).cast("H"))
        self.key_bytes_max = key_bytes_max
        self.value_bytes_max = value_bytes_max
        for c, name in enumerate(FAST_COMMANDS, C_GET):
            counters.check(words[name] + 2)
            self.words[c] = words[name]
        counters.check(hits_word)
        counters.check(misses_word)
        self.hits_word, self.misses_word = hits_word, misses_word
        self.peers = peers
        self.inflight_max = inflight_max
        self.writes = writes
        self.damaged = False

    def run(self, conn, list requests not None, Py_ssize_t i):
        """Run a client's requests[i], requests[i + 1] ... (argv, start, end: its frame in
        conn.buf) while the fast path takes each (a GET; when `writes()`, one of its writes) on a
        local key, or, for another worker's key, sends it there in RESP as the router's forward
        does (a Pending in the client's queue, counted in conn.inflight, up to the per-client
        bound).  The replies go to conn.replies, in order.  The index of the first request not
        run."""
        cdef list out = []
        i = self.run_some(requests, i, conn.db, conn.proto, out, conn)
        if out:
            self.hand_over(conn, out)
        return i

    def express(self, list requests not None, int db, int proto):
        """Run a client's parsed requests from the first on, as far as the fast path takes them on
        this worker's own keys, with no Python frame per request (the read's whole path, when a
        client sends one command, or a pipeline of these, and waits): (how many ran, their replies
        joined).  The Python pipeline answers the rest, after them."""
        cdef list out = []
        cdef Py_ssize_t done = self.run_some(requests, 0, db, proto, out, None)
        return done, b"".join(out)

    cdef void hand_over(self, conn, list out) except *:
        data = b"".join(out)
        conn.replies.append(data)
        conn.queued_bytes += len(data)
        del out[:]

    cdef Py_ssize_t run_some(self, list requests, Py_ssize_t i, int db, int proto, list out, conn) except -1:
        """`run`'s loop; conn None: a forwarded request, whose key is local or it is not run."""
        cdef Py_ssize_t n = PyList_GET_SIZE(requests)
        cdef const uint16_t *owners = <const uint16_t *> (<const char *> self.owners)
        cdef uint64_t now_ms = shardkv_wall_ms()
        cdef uint64_t t0, hits = 0, misses = 0
        cdef Py_ssize_t frame_at, frame_end, inflight
        cdef int pdb = self.dbmap[db]
        cdef int c, owner, can_write = -1  # -1: writes() not asked yet
        cdef list argv
        cdef tuple request
        cdef bytes key
        cdef object reply
        cdef bytearray buf = None
        cdef Pending pending
        cdef object found
        cdef bint hit
        cdef Py_ssize_t ahead = i  # the requests before this one had their keys prefetched
        null = b"_\r\n" if proto == 3 else b"$-1\r\n"
        while i < n:
            if i == ahead and n - i > 1:
                ahead = self.prefetch(requests, i, n, pdb)
            request = <tuple> PyList_GET_ITEM(requests, i)
            argv = <list> PyTuple_GET_ITEM(request, 0)
            c = fast_command(name_code(<bytes> PyList_GET_ITEM(argv, 0)))
            if PyList_GET_SIZE(argv) != ARITY[c]:  # another command (C_NONE), or another form of this one
                break
            if c == C_PING:  # (a plain client's: a subscribed one's differs)
                t0 = shardkv_monotonic_ns()
                out.append(PONG)
                self.counters.command(self.words[c], shardkv_monotonic_ns() - t0, False)
                i += 1
                continue
            key = <bytes> PyList_GET_ITEM(argv, 1)
            if PyBytes_GET_SIZE(key) > self.key_bytes_max:
                break
            owner = self.me if self.single else owners[key_slot(key, PyBytes_GET_SIZE(key))]
            if owner != self.me:
                if conn is None:
                    break
                if buf is None:
                    buf = conn.buf
                frame_at = <object> PyTuple_GET_ITEM(request, 1)
                frame_end = <object> PyTuple_GET_ITEM(request, 2)
                if frame_at < 0 or frame_end > len(buf) or frame_at >= frame_end or buf[frame_at] != 42:
                    break  # an inline command: the router encodes it
                if out:
                    self.hand_over(conn, out)
                pending = Pending.__new__(Pending)
                pending.conn = conn
                self.peers.forward(owner, <uint8_t> proto, <uint8_t> db,
                                   <const uint8_t *> PyByteArray_AS_STRING(buf) + frame_at, frame_end - frame_at,
                                   pending)
                conn.replies.append(pending)
                inflight = conn.inflight + 1
                conn.inflight = inflight
                i += 1
                if inflight >= self.inflight_max:
                    break
                continue
            if c >= C_SET:
                if can_write < 0:
                    can_write = 1 if self.writes() else 0
                if not can_write:
                    break
            t0 = shardkv_monotonic_ns()
            if c == C_GET:
                try:
                    reply = self.index.string_resp(pdb, key, now_ms)
                except Exception:  # a damaged segment (SegmentCorrupt): the router's path answers it
                    break
                if reply is EXPIRED or reply is WRONG_TYPE:
                    break
                if reply is None:
                    misses += 1
                    reply = null
                else:
                    hits += 1
            elif c < C_SET:
                try:
                    found = self.read(c, pdb, key, argv, now_ms, null)
                except Exception:  # a damaged segment (SegmentCorrupt): the router's path answers it
                    break
                if found is None:
                    break
                reply, hit = found
                if hit:
                    hits += 1
                else:
                    misses += 1
            else:
                try:
                    reply = self.write(c, pdb, key, argv, now_ms)
                except CommandError:  # full (OOM), before any change: the router's path answers it
                    break
                except Exception:
                    self.damaged = True  # the router repairs the shard, then runs this command itself
                    break
                if reply is None:
                    break
            out.append(reply)
            self.counters.command(self.words[c], shardkv_monotonic_ns() - t0, False)
            i += 1
        if hits:
            self.counters.add(self.hits_word, hits)
        if misses:
            self.counters.add(self.misses_word, misses)
        return i

    cdef Py_ssize_t prefetch(self, list requests, Py_ssize_t i, Py_ssize_t n, int pdb) noexcept:
        """Ask the CPU for the index words of the keys of requests[i:] (up to PREFETCH_AHEAD of
        them), their buckets first, then the records those point to, before any is walked: a
        pipeline's cache misses overlap instead of following one another.  Where it stopped."""
        cdef uint64_t buckets[PREFETCH_AHEAD]
        cdef Py_ssize_t k = 0, j, end = min(n, i + PREFETCH_AHEAD)
        cdef list argv
        for j in range(i, end):
            argv = <list> PyTuple_GET_ITEM(<tuple> PyList_GET_ITEM(requests, j), 0)
            if PyList_GET_SIZE(argv) >= 2:
                buckets[k] = self.index.bucket_prefetched(pdb, <bytes> PyList_GET_ITEM(argv, 1))
                k += 1
        for j in range(k):
            self.index.first_prefetched(buckets[j])
        return end

    cdef object read(self, int c, int pdb, bytes key, list argv, uint64_t now_ms, bytes null):
        """Run read command c (not GET) on local key: (its reply, whether the key was there: a
        keyspace hit), or None (the router's path answers it: a key whose time has passed, which
        deleting emits events for, or a key of another type, an error reply)."""
        cdef uint64_t link, bucket, exp, kind
        cdef int64_t at
        cdef bytes arg
        cdef uint64_t off = self.index.walk(pdb, key, &link, &bucket)
        if not off:
            return (null if c == C_HGET or c == C_LINDEX else ZERO), False
        exp = self.index.q[(off >> 3) + 1]
        if exp and exp <= now_ms:
            return None
        if c == C_EXISTS:
            return ONE, True
        kind = (self.index.q[(off >> 3) + 2] >> 32) & 0xFF
        arg = <bytes> PyList_GET_ITEM(argv, 2)
        if c == C_LINDEX:  # (as in Redis, the key's type before its index)
            if kind != TYPE_LIST or not string2ll(arg, PyBytes_GET_SIZE(arg), &at):
                return None
            value = list_get(self.index, off, at)
            return (null if value is None else bulk(value)), True
        if kind != (TYPE_SET if c == C_SISMEMBER else TYPE_HASH):
            return None
        value = field_get(self.index, off, arg, c != C_SISMEMBER)
        if c == C_HGET:
            return (null if value is None else bulk(value)), True
        return (ZERO if value is None else ONE), True

    cdef object write(self, int c, int pdb, bytes key, list argv, uint64_t now_ms):
        """Run write command c on local key: its reply, or None having changed nothing (the
        router's path answers it: a key whose time has passed, which deleting emits events for; a
        new key, a small collection or another type, which the Python handlers write; a value
        past the size limit, or an INCR that is not an integer or overflows)."""
        cdef uint64_t off, off_old, link, bucket, start, length, exp
        cdef int64_t delta, result
        cdef Py_ssize_t r
        cdef bytes raw, value
        cdef object popped
        if c == C_SET:
            off_old = self.index.walk(pdb, key, &link, &bucket)
            if off_old and self.index.string_span(off_old, now_ms, &start, &length) != SPAN_STRING:
                return None  # expired, or a collection (the store frees its blocks)
            value = <bytes> PyList_GET_ITEM(argv, 2)
            off = self.allocator.alloc(record_bytes(PyBytes_GET_SIZE(key), PyBytes_GET_SIZE(value)))
            self.index.put(off, pdb, key, TYPE_STRING, value, 0, off_old, link, bucket)
            if off_old:
                self.allocator.free(off_old)
            return OK
        if c <= C_DECRBY:  # the INCR family
            if c == C_INCR or c == C_DECR:
                delta = 1
            else:
                raw = <bytes> PyList_GET_ITEM(argv, 2)
                if not string2ll(raw, PyBytes_GET_SIZE(raw), &delta):
                    return None
            if c == C_DECR or c == C_DECRBY:
                if delta == INT64_MIN:
                    return None  # its negation overflows
                delta = -delta
            if self.index.incr(pdb, key, delta, now_ms, &result) > INCR_CREATED:
                return None  # expired, or an error: nothing changed
            return integer_of(result)
        # A large collection's usual change (layouts.pyx), in place.
        off = self.index.walk(pdb, key, &link, &bucket)
        if not off:
            return None
        exp = self.index.q[(off >> 3) + 1]
        if exp and exp <= now_ms:
            return None
        for r in range(2, PyList_GET_SIZE(argv)):
            if PyBytes_GET_SIZE(<bytes> PyList_GET_ITEM(argv, r)) > self.value_bytes_max:
                return None
        if c == C_SADD or c == C_HSET:
            if not structure(self.index, off, TYPE_SET if c == C_SADD else TYPE_HASH, LAYOUT_TABLE):
                return None
            r = table_set(self.index, off, <bytes> PyList_GET_ITEM(argv, 2),
                          b"" if c == C_SADD else <bytes> PyList_GET_ITEM(argv, 3))
            return None if r < 0 else integer_of(r)
        if not structure(self.index, off, TYPE_LIST, LAYOUT_CHUNKS):
            return None
        if c == C_LPUSH or c == C_RPUSH:
            value = <bytes> PyList_GET_ITEM(argv, 2)
            r = chunks_push(self.index, off, [value], c == C_LPUSH)
            return None if r < 0 else integer_of(r)
        popped = chunks_pop(self.index, off, c == C_LPOP)
        return None if popped is None else bulk(popped)

    def run_forwarded(self, bytes body not None):
        """A command another worker forwarded here (body: protocol, db, the command as RESP),
        run as `run` would run it: its reply, or None if the fast path does not take it (nor
        anything the header flags, a blocked client's look or a tracking client's NOLOOP)."""
        cdef const unsigned char *b = body
        cdef list out = []
        if PyBytes_GET_SIZE(body) < 3 or b[0] & 0xC0:
            return None
        # (a forwarded command is always RESP multibulk: the router encodes an inline one)
        requests, _, _, error = parse_at(b + 2, PyBytes_GET_SIZE(body) - 2, 1 << 30, 1 << 40, 1, False, None,
                                         ProtocolError)
        if error is not None or len(requests) != 1:
            return None
        if self.run_some(requests, 0, b[1], b[0], out, None) != 1:
            return None
        return <bytes> PyList_GET_ITEM(out, 0)

    def serve(self, int source, handler, bint free):
        """Take the requests from source, in order: a command the fast path takes is run and
        answered here while `free` (the shard is not locked); any other message goes to
        handler(source, kind, request id, body), which says whether the shard is free after it."""
        cdef Peers peers = self.peers
        for kind, rid, body in peers.take(source, False):
            if free and kind == K_REQ:
                reply = self.run_forwarded(body)
                if reply is not None:
                    peers.send(source, K_REP, rid, reply)
                    continue
            free = handler(source, kind, rid, body)
