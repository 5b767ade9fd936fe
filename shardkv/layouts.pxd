# The compiled collection layouts' declarations (layouts.pyx), for other compiled modules (fast.pyx).
from libc.stdint cimport int64_t, uint64_t

from shardkv.index cimport Index


cdef enum:
    CHUNK_ENTRIES = 128  # a list chunk holds at most this many entries (collstore.CHUNK_ENTRIES_MAX)
    CHUNK_BYTES = 8192  # and this many payload bytes, unless it is one larger entry


cdef uint64_t structure(Index ix, uint64_t head, uint64_t kind, uint64_t layout) except? 0
cdef object field_get(Index ix, uint64_t head, bytes field, bint pairs)
cdef object list_get(Index ix, uint64_t head, int64_t index)
cdef Py_ssize_t table_set(Index ix, uint64_t head, bytes field, bytes value) except -2
cdef Py_ssize_t chunks_push(Index ix, uint64_t head, list items, bint left) except -2
cdef object chunks_pop(Index ix, uint64_t head, bint left)
