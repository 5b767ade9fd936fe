# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The shard index, compiled: the chain walk, writing and publishing records, GET's and INCRBY's
whole paths, and the key-slot index (layout.py describes the segment; store.py calls these).

A bucket word and every link are `fingerprint(24 bits) << 40 | offset / 8`; a record's header is
five words (next link, expire at, info, value bytes, slot links) and its key follows.  Links are read with
acquire loads, as the publishing stores that make them visible are release stores.  Every offset
read from the segment is checked against the heap before it is followed: a bad one raises
SegmentCorrupt, never a stray read."""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.stdint cimport INT64_MAX, INT64_MIN, int64_t, uint16_t, uint64_t
from libc.string cimport memset
from libc.string cimport memcpy

from shardkv.resp cimport bulk_bytes, ll_digits, string2ll, write_bulk


cdef extern from "zlib.h":
    unsigned long crc32(unsigned long crc, const unsigned char *buf, unsigned int length) nogil


cdef extern from *:
    """
    #ifndef SHARDKV_SOURCE_SHA256
    #define SHARDKV_SOURCE_SHA256 ""
    #endif
    static inline uint64_t shardkv_load_acquire(const uint64_t *p) {
        return __atomic_load_n(p, __ATOMIC_ACQUIRE);
    }
    static inline void shardkv_store_release(uint64_t *p, uint64_t v) {
        __atomic_store_n(p, v, __ATOMIC_RELEASE);
    }
    static inline uint64_t shardkv_load_relaxed(const uint64_t *p) {
        return __atomic_load_n(p, __ATOMIC_RELAXED);
    }
    static inline void shardkv_prefetch(const void *p) { __builtin_prefetch(p, 0, 3); }
    static inline void shardkv_prefetch_write(const void *p) { __builtin_prefetch(p, 1, 3); }
    #define SHARDKV_LOW32 ((uint64_t) 0xFFFFFFFFu)
    """
    const char *SHARDKV_SOURCE_SHA256
    uint64_t shardkv_load_acquire(const uint64_t *p) nogil
    void shardkv_store_release(uint64_t *p, uint64_t v) nogil
    uint64_t shardkv_load_relaxed(const uint64_t *p) nogil
    void shardkv_prefetch(const void *p) nogil
    void shardkv_prefetch_write(const void *p) nogil
    const uint64_t LOW32 "SHARDKV_LOW32"  # (a literal this wide would be a Python int in Cython)


SOURCE_SHA256 = SHARDKV_SOURCE_SHA256.decode()  # of index.pyx when it was compiled (native.py)

INCR_STATUS = {"done": INCR_DONE, "created": INCR_CREATED, "expired": INCR_EXPIRED, "wrong_type": INCR_WRONG_TYPE,
               "not_integer": INCR_NOT_INTEGER, "overflow": INCR_OVERFLOW}
# The segment layout as index.pxd spells it, which Index checks against layout.py's when a store opens.
LAYOUT = (OFF_MASK, KLEN_MASK, VLEN_MASK, RECORD_HEADER_BYTES, TYPE_STRING, H_DIRTY, H_KEYS, H_EXPIRES, TYPE_LIST,
          TYPE_SET, TYPE_HASH, LAYOUT_PACKED, LAYOUT_TABLE, LAYOUT_CHUNKS, STRUCT_WORDS, TOMBSTONE, CHUNK_OFF_MASK,
          SLOT_LINKS_WORD)


cpdef uint64_t record_bytes(uint64_t klen, uint64_t vlen) noexcept:
    """The block bytes a record of a klen-byte key and a vlen-byte value takes (8-byte aligned)."""
    return (RECORD_HEADER_BYTES + klen + vlen + 7) & ~(<uint64_t> 7)


cdef uint16_t CRC16_TABLE[256]


cdef void crc16_table() noexcept:
    """CRC-16/XMODEM (polynomial 0x1021), the hash of Redis Cluster's key slots."""
    cdef uint16_t c
    cdef int i, _bit
    for i in range(256):
        c = <uint16_t> (i << 8)
        for _bit in range(8):
            c = <uint16_t> ((c << 1) ^ 0x1021) if c & 0x8000 else <uint16_t> (c << 1)
        CRC16_TABLE[i] = c


crc16_table()


cdef Py_ssize_t key_slot(const unsigned char *k, Py_ssize_t n) noexcept:
    """The key's hash slot: CRC16 of the key, or of its non-empty {hash tag}."""
    cdef Py_ssize_t i, open_at = -1, start = 0, end = n
    cdef uint16_t crc = 0
    for i in range(n):
        if k[i] == 123:  # '{'
            open_at = i
            break
    if open_at >= 0:
        for i in range(open_at + 1, n):
            if k[i] == 125:  # '}'
                if i > open_at + 1:
                    start, end = open_at + 1, i
                break
    for i in range(start, end):
        crc = <uint16_t> ((crc << 8) ^ CRC16_TABLE[((crc >> 8) ^ k[i]) & 0xFF])
    return crc & (HASH_SLOTS - 1)


def slot_of(const unsigned char[::1] key not None):
    """The Redis Cluster hash slot of key."""
    return key_slot(&key[0] if key.shape[0] else NULL, key.shape[0])


EXPIRED = object()  # string_resp: the key's time has passed (find deletes it)
WRONG_TYPE = object()  # string_resp: the key holds another type


class SegmentCorrupt(Exception):
    """An offset in the segment points outside the heap: the shard is damaged (a bug)."""


cdef class Index:
    """The chain walk over one shard segment's buckets (its fields: index.pxd)."""

    def __init__(self, segment, uint64_t bucket_word, uint64_t buckets, uint64_t heap_off,
                 uint64_t heap_bytes, uint64_t slots_word, layout):
        if tuple(layout) != LAYOUT:
            raise AssertionError(f"layout.py's record layout {tuple(layout)} is not index.pyx's {LAYOUT}")
        self.segment = segment
        self.base = &self.segment[0]
        self.q = <uint64_t *> self.base
        self.bucket_word = bucket_word
        self.mask = buckets - 1
        self.heap_lo = heap_off
        self.heap_hi = heap_off + heap_bytes
        if heap_off & 15 or self.heap_hi > (<uint64_t> 1) << 36:
            raise AssertionError("slot links need a 16-byte aligned heap below 64 GiB")
        self.slots = self.q + slots_word
        self.slots_live = False

    def release(self):
        """Let go of the mapping (so it can be closed); the index is unusable after."""
        self.segment = None
        self.base = NULL
        self.q = NULL
        self.slots = NULL

    cdef uint64_t bucket_prefetched(self, int pdb, bytes key) noexcept:
        """Ask the CPU for key's bucket word ahead of the walk (a pipeline's keys are asked for
        together, so their cache misses overlap): the bucket's word index, for first_prefetched."""
        cdef uint64_t bucket = self.bucket_word + (
            crc32(<unsigned long> pdb, <const unsigned char *> key, <unsigned int> len(key)) & self.mask)
        if self.q != NULL:
            shardkv_prefetch(&self.q[bucket])
        return bucket

    cdef void first_prefetched(self, uint64_t bucket) noexcept:
        """Ask for the header of the first record in a bucket bucket_prefetched asked for (a hint:
        a link outside the heap is left for the walk to report)."""
        if self.q == NULL:
            return
        cdef uint64_t off = (shardkv_load_relaxed(&self.q[bucket]) & OFF_MASK) << 3
        if off >= self.heap_lo and off + RECORD_HEADER_BYTES <= self.heap_hi:
            shardkv_prefetch(self.base + off)

    cdef uint64_t walk(self, int pdb, bytes key, uint64_t *link_out, uint64_t *bucket_out) except? 0:
        """The record of key in stored db pdb (0: none); the word linking to it and its bucket."""
        cdef const unsigned char *k = key
        cdef Py_ssize_t klen = len(key)
        cdef uint64_t h = crc32(<unsigned long> pdb, k, <unsigned int> klen)
        cdef uint64_t bucket = self.bucket_word + (h & self.mask)
        cdef uint64_t fp = h >> 8
        cdef uint64_t link = bucket
        cdef uint64_t w, off, info
        if self.q == NULL:
            raise ValueError("the index was released")
        bucket_out[0] = bucket
        w = shardkv_load_acquire(&self.q[bucket])
        while w:
            off = (w & OFF_MASK) << 3
            if off < self.heap_lo or off + RECORD_HEADER_BYTES > self.heap_hi:
                raise SegmentCorrupt(f"link {w:#x} at word {link} points outside the heap")
            if w >> 40 == fp:
                info = self.q[(off >> 3) + 2]
                if (info & KLEN_MASK) == <uint64_t> klen and ((info >> 40) & 0xFF) == <uint64_t> pdb:
                    if off + RECORD_HEADER_BYTES + klen > self.heap_hi:
                        raise SegmentCorrupt(f"record {off} runs past the heap")
                    if key_equal(self.base + off + RECORD_HEADER_BYTES, k, <size_t> klen):
                        link_out[0] = link
                        return off
            link = off >> 3
            w = shardkv_load_acquire(&self.q[link])
        link_out[0] = 0
        return 0

    cdef unsigned char *new_record(self, uint64_t off, int pdb, const unsigned char *key, uint64_t klen,
                                   uint64_t kind, uint64_t vlen, uint64_t expire_ms) except NULL:
        """Write a record's header and key into the block at off (not yet linked): where its
        vlen value bytes go, for the caller to fill."""
        cdef uint64_t w = off >> 3
        if self.q == NULL:
            raise ValueError("the index was released")
        if off < self.heap_lo or off + RECORD_HEADER_BYTES + klen + vlen > self.heap_hi:
            raise SegmentCorrupt(f"a record of {klen + vlen} bytes at {off} does not fit in the heap")
        self.q[w] = 0
        self.q[w + 1] = expire_ms
        self.q[w + 2] = klen | kind << 32 | (<uint64_t> pdb) << 40
        self.q[w + 3] = vlen
        self.q[w + SLOT_LINKS_WORD] = 0
        memcpy(self.base + off + RECORD_HEADER_BYTES, key, klen)
        return self.base + off + RECORD_HEADER_BYTES + klen

    cpdef void write_record(self, uint64_t off, int pdb, bytes key, uint64_t kind, bytes value,
                            uint64_t expire_ms) except *:
        """Write a whole record (header, key, value) into the block at off, not yet linked."""
        cdef Py_ssize_t vlen = len(value)
        memcpy(self.new_record(off, pdb, key, len(key), kind, vlen, expire_ms), <const unsigned char *> value, vlen)

    cpdef void publish(self, uint64_t off, int pdb, bytes key, uint64_t off_old, uint64_t link,
                       uint64_t bucket) except *:
        """Make the written record at off the one of key: in place of off_old (reached through
        the word link), or, if there is none, at the head of bucket.  The one store that makes
        it visible is a release store, after every byte of the record."""
        cdef uint64_t fp = crc32(<unsigned long> pdb, <const unsigned char *> key, <unsigned int> len(key)) >> 8
        cdef uint64_t new_link = fp << 40 | off >> 3
        if self.q == NULL:
            raise ValueError("the index was released")
        if off_old:
            self.q[off >> 3] = self.q[off_old >> 3]
            shardkv_store_release(&self.q[link], new_link)
            if self.slots_live:
                self.slot_replace(off_old, off)
        else:
            self.q[off >> 3] = self.q[bucket]
            shardkv_store_release(&self.q[bucket], new_link)
            if self.slots_live:
                self.slot_insert(off)

    cpdef void put(self, uint64_t off, int pdb, bytes key, uint64_t kind, bytes value, uint64_t expire_ms,
                   uint64_t off_old, uint64_t link, uint64_t bucket) except *:
        """A write's core: the record into the block at off, counted as a change, published in
        place of off_old (reached through link) or as a new key at the head of bucket, and the
        db's key counts.  The caller allocated the block and frees off_old's after."""
        if off_old:
            self.prefetch_slot_neighbours(off_old)  # their misses overlap the record's writing
        self.write_record(off, pdb, key, kind, value, expire_ms)
        self.link_written(off, pdb, key, expire_ms, off_old, link, bucket)

    cdef int link_written(self, uint64_t off, int pdb, bytes key, uint64_t expire_ms, uint64_t off_old,
                          uint64_t link, uint64_t bucket) except -1:
        """put's second half: the record already written at off, counted as a change, published,
        and the db's key counts."""
        cdef uint64_t old_exp
        if off_old and (off_old < self.heap_lo or off_old + RECORD_HEADER_BYTES > self.heap_hi):
            raise SegmentCorrupt(f"record {off_old} is outside the heap")
        old_exp = self.q[(off_old >> 3) + 1] if off_old else 0
        self.q[H_DIRTY] += 1
        self.publish(off, pdb, key, off_old, link, bucket)
        if not off_old:
            self.q[H_KEYS + pdb] += 1
            if expire_ms:
                self.q[H_EXPIRES + pdb] += 1
        elif (old_exp != 0) != (expire_ms != 0):
            self.q[H_EXPIRES + pdb] += 1 if expire_ms else <uint64_t> -1
        return 0

    # The key-slot index: every key's record is on its hash slot's list (all dbs together; a
    # cluster has db 0 only), linked by its fifth word, next << 32 | prev (offsets / 16, 0 = none),
    # and the slot's word holds its key count << 32 | its first record.  It is derived state, like
    # the allocator's: a restart rebuilds it from the index (slots_reset, then slot_insert of every
    # record), so its updates need no ordering and no journal.

    cdef void prefetch_slot_neighbours(self, uint64_t off) noexcept:
        """Ask the CPU for the slot-list neighbours of the record at off (a hint: a replace or a
        delete of it will write their links; one outside the heap is left for slot_record)."""
        cdef uint64_t links, prev, nxt
        if not self.slots_live or off < self.heap_lo or off + RECORD_HEADER_BYTES > self.heap_hi:
            return
        links = self.q[(off >> 3) + SLOT_LINKS_WORD]
        prev, nxt = (links & LOW32) << 4, (links >> 32) << 4
        if prev >= self.heap_lo and prev + RECORD_HEADER_BYTES <= self.heap_hi:
            shardkv_prefetch_write(self.base + prev + 8 * SLOT_LINKS_WORD)
        if nxt >= self.heap_lo and nxt + RECORD_HEADER_BYTES <= self.heap_hi:
            shardkv_prefetch_write(self.base + nxt + 8 * SLOT_LINKS_WORD)

    cdef uint64_t slot_record(self, uint64_t unit) except? 0:
        """The offset of the record a slot link names, checked against the heap."""
        cdef uint64_t off = unit << 4
        if off < self.heap_lo or off + RECORD_HEADER_BYTES > self.heap_hi:
            raise SegmentCorrupt(f"slot link {unit:#x} points outside the heap")
        return off

    cdef Py_ssize_t record_slot(self, uint64_t off) except -1:
        cdef uint64_t klen = self.q[(off >> 3) + 2] & KLEN_MASK
        if off + RECORD_HEADER_BYTES + klen > self.heap_hi:
            raise SegmentCorrupt(f"record {off} runs past the heap")
        return key_slot(self.base + off + RECORD_HEADER_BYTES, <Py_ssize_t> klen)

    cdef int slot_insert(self, uint64_t off) except -1:
        """Put the just-published record at off first on its slot's list."""
        cdef Py_ssize_t s = self.record_slot(off)
        cdef uint64_t head = self.slots[s] & LOW32
        cdef uint64_t h
        self.q[(off >> 3) + SLOT_LINKS_WORD] = head << 32
        if head:
            h = (self.slot_record(head) >> 3) + SLOT_LINKS_WORD
            self.q[h] = (self.q[h] & ~LOW32) | off >> 4
        self.slots[s] = ((self.slots[s] >> 32) + 1) << 32 | off >> 4
        return 0

    cdef int slot_replace(self, uint64_t off_old, uint64_t off) except -1:
        """The record at off took the place of off_old's (the same key): take its place on the list."""
        cdef uint64_t links = self.q[(off_old >> 3) + SLOT_LINKS_WORD]
        cdef uint64_t prev = links & LOW32, nxt = links >> 32, w
        cdef Py_ssize_t s
        self.q[(off >> 3) + SLOT_LINKS_WORD] = links
        if prev:
            w = (self.slot_record(prev) >> 3) + SLOT_LINKS_WORD
            self.q[w] = (self.q[w] & LOW32) | (off >> 4) << 32
        else:
            s = self.record_slot(off)
            self.slots[s] = (self.slots[s] & ~LOW32) | off >> 4
        if nxt:
            w = (self.slot_record(nxt) >> 3) + SLOT_LINKS_WORD
            self.q[w] = (self.q[w] & ~LOW32) | off >> 4
        return 0

    cpdef void slot_remove(self, uint64_t off) except *:
        """Take the record at off, being unlinked from the index, off its slot's list."""
        cdef uint64_t links, prev, nxt, w
        cdef Py_ssize_t s
        if not self.slots_live:
            return
        links = self.q[(off >> 3) + SLOT_LINKS_WORD]
        prev, nxt = links & LOW32, links >> 32
        s = self.record_slot(off)
        if prev:
            w = (self.slot_record(prev) >> 3) + SLOT_LINKS_WORD
            self.q[w] = (self.q[w] & LOW32) | nxt << 32
        else:
            self.slots[s] = (self.slots[s] & ~LOW32) | nxt
        if nxt:
            w = (self.slot_record(nxt) >> 3) + SLOT_LINKS_WORD
            self.q[w] = (self.q[w] & ~LOW32) | prev
        self.slots[s] -= (<uint64_t> 1) << 32

    def slots_reset(self):
        """Empty every slot's list and keep the index from now on (a flush of everything, or
        the start of a rebuild, which then adds every record with slot_add)."""
        if self.q == NULL:
            raise ValueError("the index was released")
        memset(self.slots, 0, HASH_SLOTS * 8)
        self.slots_live = True

    def slot_add(self, uint64_t off):
        """rebuild(): put a record found in the index on its slot's list."""
        if off < self.heap_lo or off + RECORD_HEADER_BYTES > self.heap_hi:
            raise SegmentCorrupt(f"record {off} is outside the heap")
        self.slot_insert(off)

    def keys_in_slot(self, Py_ssize_t slot):
        """How many keys slot has here, across every db."""
        if not 0 <= slot < HASH_SLOTS:
            raise ValueError(f"slot {slot} is not in 0..{HASH_SLOTS - 1}")
        return self.slots[slot] >> 32

    def slot_records(self, Py_ssize_t slot, Py_ssize_t count):
        """The offsets of up to count records of slot, first to last on its list."""
        cdef list out = []
        cdef uint64_t unit, off
        if not 0 <= slot < HASH_SLOTS:
            raise ValueError(f"slot {slot} is not in 0..{HASH_SLOTS - 1}")
        unit = self.slots[slot] & LOW32
        while unit and len(out) < count:
            off = self.slot_record(unit)
            out.append(off)
            unit = self.q[(off >> 3) + SLOT_LINKS_WORD] >> 32
        return out

    cdef int string_span(self, uint64_t off, uint64_t now_ms, uint64_t *start, uint64_t *length) except -1:
        """Whether the record at off is a live string (SPAN_STRING, its value's bytes at *start,
        *length of them), one whose time has passed (SPAN_EXPIRED) or another type's
        (SPAN_WRONG_TYPE): the rule GET, SET and INCRBY read a record by."""
        cdef uint64_t w = off >> 3
        cdef uint64_t exp = self.q[w + 1]
        cdef uint64_t info = self.q[w + 2]
        if exp and exp <= now_ms:
            return SPAN_EXPIRED
        if (info >> 32) & 0xFF != TYPE_STRING:
            return SPAN_WRONG_TYPE
        start[0] = off + RECORD_HEADER_BYTES + (info & KLEN_MASK)
        length[0] = self.q[w + 3] & VLEN_MASK
        if start[0] + length[0] > self.heap_hi:
            raise SegmentCorrupt(f"record {off} runs past the heap")
        return SPAN_STRING

    cdef int incr(self, int pdb, bytes key, int64_t delta, uint64_t now_ms, int64_t *result) except -1:
        """INCRBY's core: add delta to the integer in key's string (0 if there is none), keeping
        its time; an INCR_ status (the new value in *result), having changed nothing unless it
        is INCR_DONE or INCR_CREATED.  A full heap raises the allocator's OOM error, before any
        change."""
        cdef uint64_t link, bucket, exp = 0, start, length, off
        cdef uint64_t off_old = self.walk(pdb, key, &link, &bucket)
        cdef int found
        cdef int64_t current = 0
        cdef char digits[24]
        cdef int n
        if off_old:
            found = self.string_span(off_old, now_ms, &start, &length)
            if found == SPAN_EXPIRED:
                return INCR_EXPIRED
            if found == SPAN_WRONG_TYPE:
                return INCR_WRONG_TYPE
            exp = self.q[(off_old >> 3) + 1]
            if not string2ll(self.base + start, <Py_ssize_t> length, &current):
                return INCR_NOT_INTEGER
            self.prefetch_slot_neighbours(off_old)
        if (delta > 0 and current > INT64_MAX - delta) or (delta < 0 and current < INT64_MIN - delta):
            return INCR_OVERFLOW
        result[0] = current + delta
        n = ll_digits(digits, <long long> result[0])
        off = self.allocator.alloc(record_bytes(len(key), n))
        memcpy(self.new_record(off, pdb, key, len(key), TYPE_STRING, n, exp), digits, n)
        self.link_written(off, pdb, key, exp, off_old, link, bucket)
        if off_old:
            self.allocator.free(off_old)
        return INCR_DONE if off_old else INCR_CREATED

    def incr_by(self, int pdb, bytes key, int64_t delta, uint64_t now_ms):
        """Index.incr for Python: (an INCR_ status, the new value)."""
        cdef int64_t result = 0
        cdef int status = self.incr(pdb, key, delta, now_ms, &result)
        return status, result

    cpdef object string_resp(self, int pdb, bytes key, uint64_t now_ms):
        """GET's path: the value of key's string framed as a RESP bulk string, None if there is
        none, EXPIRED if its time has passed (nothing is deleted here), WRONG_TYPE for another
        type."""
        cdef uint64_t link, bucket, start, length
        cdef uint64_t off = self.walk(pdb, key, &link, &bucket)
        cdef int found
        cdef bytes reply
        if not off:
            return None
        found = self.string_span(off, now_ms, &start, &length)
        if found == SPAN_EXPIRED:
            return EXPIRED
        if found == SPAN_WRONG_TYPE:
            return WRONG_TYPE
        reply = PyBytes_FromStringAndSize(NULL, bulk_bytes(<Py_ssize_t> length))
        write_bulk(PyBytes_AS_STRING(reply), <const char *> self.base + start, <Py_ssize_t> length)
        return reply

    cpdef tuple find(self, int pdb, bytes key):
        """(record offset or 0, word index of the link to it, word index of its bucket) of key
        in stored db pdb, expired or not, changing nothing."""
        cdef uint64_t link, bucket
        cdef uint64_t off = self.walk(pdb, key, &link, &bucket)
        return off, link, bucket
