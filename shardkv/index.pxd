# The compiled shard index's declarations (index.pyx), for other compiled modules (fast.pyx).
from libc.stdint cimport int64_t, uint8_t, uint64_t


cdef extern from *:
    """
    #define SHARDKV_OFF_MASK ((((uint64_t) 1) << 40) - 1)
    #define SHARDKV_KLEN_MASK ((((uint64_t) 1) << 32) - 1)
    #define SHARDKV_VLEN_MASK ((((uint64_t) 1) << 40) - 1)
    #define SHARDKV_CHUNK_OFF_MASK ((((uint64_t) 1) << 48) - 1)
    #include <string.h>
    /* Whether n bytes at a and b are equal, reading no byte past either: a key of up to 64 bytes
       is compared a word at a time (the last word overlapping).  libc's vector memcmp reads 32
       bytes at once, masked: from a key at +40 in its record that touches the next cache line,
       which the pipeline's prefetch did not ask for, and perf had SET stall there. */
    static inline int shardkv_key_equal(const unsigned char *a, const unsigned char *b, size_t n) {
        uint64_t x, y;
        uint32_t p, q;
        size_t i;
        if (n > 64)
            return memcmp(a, b, n) == 0;
        if (n >= 8) {
            for (i = 0; i + 8 < n; i += 8) {
                memcpy(&x, a + i, 8); memcpy(&y, b + i, 8);
                if (x != y) return 0;
            }
            memcpy(&x, a + n - 8, 8); memcpy(&y, b + n - 8, 8);
            return x == y;
        }
        if (n >= 4) {
            memcpy(&p, a, 4); memcpy(&q, b, 4);
            if (p != q) return 0;
            memcpy(&p, a + n - 4, 4); memcpy(&q, b + n - 4, 4);
            return p == q;
        }
        for (i = 0; i < n; i++)
            if (a[i] != b[i]) return 0;
        return 1;
    }
    """
    # The segment's layout, one spelling for every compiled module (Index checks it against layout.py's).
    const uint64_t OFF_MASK "SHARDKV_OFF_MASK"  # a link's offset / 8
    const uint64_t KLEN_MASK "SHARDKV_KLEN_MASK"  # a record's info word: its key bytes
    const uint64_t VLEN_MASK "SHARDKV_VLEN_MASK"  # its value-bytes word (the rest: the access clock's)
    const uint64_t CHUNK_OFF_MASK "SHARDKV_CHUNK_OFF_MASK"  # a chunk directory slot: entries << 48 | offset / 8
    bint key_equal "shardkv_key_equal"(const unsigned char *a, const unsigned char *b, size_t n) nogil


cdef enum:
    RECORD_HEADER_BYTES = 40  # next link, expire at, info (key bytes, type, stored db), value bytes, slot links
    SLOT_LINKS_WORD = 4  # a record's word that links it into its slot's list: next << 32 | prev (offsets / 16)
    HASH_SLOTS = 16384  # Redis Cluster's key slots: the key-slot index has a word per slot
    H_DIRTY = 12  # header words: changes since start, then keys and keys with a time, per db
    H_KEYS = 64
    H_EXPIRES = 64 + 256
    TYPE_STRING = 1
    TYPE_LIST = 2
    TYPE_SET = 3
    TYPE_HASH = 5
    LAYOUT_PACKED = 1  # a collection's value area starts with its layout byte (collstore.py)
    LAYOUT_TABLE = 2
    LAYOUT_CHUNKS = 3
    STRUCT_WORDS = 3  # words of a table / chunk directory before its slots
    TOMBSTONE = 1  # a table slot whose entry was deleted


cdef class Index:
    cdef uint8_t[::1] segment  # keeps the mapping's buffer alive while the pointers are used
    cdef uint8_t *base
    cdef uint64_t *q
    cdef uint64_t bucket_word, mask, heap_lo, heap_hi
    cdef uint64_t *slots  # the key-slot index: per slot, keys << 32 | its first record's offset / 16
    cdef public bint slots_live  # whether the key-slot index is kept (not while a restart replays journals)
    cdef public object allocator  # alloc.Allocator: alloc(bytes) and free(offset), for writes that allocate

    cdef uint64_t bucket_prefetched(self, int pdb, bytes key) noexcept
    cdef void first_prefetched(self, uint64_t bucket) noexcept
    cdef uint64_t walk(self, int pdb, bytes key, uint64_t *link_out, uint64_t *bucket_out) except? 0
    cdef unsigned char *new_record(self, uint64_t off, int pdb, const unsigned char *key, uint64_t klen,
                                   uint64_t kind, uint64_t vlen, uint64_t expire_ms) except NULL
    cpdef void write_record(self, uint64_t off, int pdb, bytes key, uint64_t kind, bytes value,
                            uint64_t expire_ms) except *
    cpdef void publish(self, uint64_t off, int pdb, bytes key, uint64_t off_old, uint64_t link,
                       uint64_t bucket) except *
    cdef int link_written(self, uint64_t off, int pdb, bytes key, uint64_t expire_ms, uint64_t off_old,
                          uint64_t link, uint64_t bucket) except -1
    cpdef void put(self, uint64_t off, int pdb, bytes key, uint64_t kind, bytes value, uint64_t expire_ms,
                   uint64_t off_old, uint64_t link, uint64_t bucket) except *
    cdef void prefetch_slot_neighbours(self, uint64_t off) noexcept
    cdef uint64_t slot_record(self, uint64_t unit) except? 0
    cdef Py_ssize_t record_slot(self, uint64_t off) except -1
    cdef int slot_insert(self, uint64_t off) except -1
    cdef int slot_replace(self, uint64_t off_old, uint64_t off) except -1
    cpdef void slot_remove(self, uint64_t off) except *
    cdef int string_span(self, uint64_t off, uint64_t now_ms, uint64_t *start, uint64_t *length) except -1
    cdef int incr(self, int pdb, bytes key, int64_t delta, uint64_t now_ms, int64_t *result) except -1
    cpdef object string_resp(self, int pdb, bytes key, uint64_t now_ms)
    cpdef tuple find(self, int pdb, bytes key)


cpdef uint64_t record_bytes(uint64_t klen, uint64_t vlen) noexcept
cdef Py_ssize_t key_slot(const unsigned char *k, Py_ssize_t n) noexcept


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
