# The compiled shard index's declarations (index.pyx), for other compiled modules (fast.pyx).
from libc.stdint cimport int64_t, uint8_t, uint64_t


cdef class Index:
    cdef uint8_t[::1] segment  # keeps the mapping's buffer alive while the pointers are used
    cdef uint8_t *base
    cdef uint64_t *q
    cdef uint64_t bucket_word, mask, heap_lo, heap_hi
    cdef public object allocator  # alloc.Allocator: alloc(bytes) and free(offset), for writes that allocate

    cdef uint64_t walk(self, int pdb, bytes key, uint64_t *link_out, uint64_t *bucket_out) except? 0
    cpdef void write_record(self, uint64_t off, int pdb, bytes key, uint64_t kind, bytes value,
                            uint64_t expire_ms) except *
    cpdef void publish(self, uint64_t off, int pdb, bytes key, uint64_t off_old, uint64_t link,
                       uint64_t bucket) except *
    cpdef void put(self, uint64_t off, int pdb, bytes key, uint64_t kind, bytes value, uint64_t expire_ms,
                   uint64_t off_old, uint64_t link, uint64_t bucket) except *
    cdef int string_span(self, uint64_t off, uint64_t now_ms, uint64_t *start, uint64_t *length) except -1
    cdef int incr(self, int pdb, bytes key, int64_t delta, uint64_t now_ms, int64_t *result) except -1
    cpdef object string_resp(self, int pdb, bytes key, uint64_t now_ms)
    cpdef tuple find(self, int pdb, bytes key)


cpdef uint64_t record_bytes(uint64_t klen, uint64_t vlen) noexcept


cdef enum:  # what Index.string_span found
    SPAN_STRING = 0
    SPAN_EXPIRED = 1
    SPAN_WRONG_TYPE = 2


cdef enum:  # what Index.incr did
    INCR_DONE = 0  # the key's new value is *result
    INCR_CREATED = 1  # likewise, and the key is new
    INCR_EXPIRED = 2  # the key's time has passed: nothing changed (find deletes it)
    INCR_WRONG_TYPE = 3  # nothing changed
    INCR_NOT_INTEGER = 4
    INCR_OVERFLOW = 5
