# The compiled shard index's declarations (index.pyx), for other compiled modules (fast.pyx).
from libc.stdint cimport uint8_t, uint64_t


cdef class Index:
    cdef uint8_t[::1] segment  # keeps the mapping's buffer alive while the pointers are used
    cdef uint8_t *base
    cdef uint64_t *q
    cdef uint64_t bucket_word, mask, heap_lo, heap_hi

    cdef uint64_t walk(self, int pdb, bytes key, uint64_t *link_out, uint64_t *bucket_out) except? 0
    cpdef void write_record(self, uint64_t off, int pdb, bytes key, uint64_t kind, bytes value,
                            uint64_t expire_ms) except *
    cpdef void publish(self, uint64_t off, int pdb, bytes key, uint64_t off_old, uint64_t link,
                       uint64_t bucket) except *
    cpdef void put(self, uint64_t off, int pdb, bytes key, uint64_t kind, bytes value, uint64_t expire_ms,
                   uint64_t off_old, uint64_t link, uint64_t bucket) except *
    cpdef object string_resp(self, int pdb, bytes key, uint64_t now_ms)
    cpdef tuple find(self, int pdb, bytes key)


cpdef uint64_t record_bytes(uint64_t klen, uint64_t vlen) noexcept
cpdef bytes bulk(object value)
