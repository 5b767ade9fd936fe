# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The hot operations of the large collection layouts (collstore.py describes the layouts),
compiled: a table probe, one field read from a hash or set of either layout, one field set in a
table, one push onto a list's end chunk and one pop from it.  collstore.py's Table and Chunks
(and the HGET, HEXISTS and SISMEMBER handlers) call them for these cases and keep the rest
(several fields at once, a rehash, a new chunk or directory, a list that empties), and the fast
path (fast.pyx) calls the same functions, so each operation is written once.

Each change here is one publishing store, like a string's: the new node is written first, then
one release store of a table slot, a chunk slot or a chunk directory's window makes it visible,
then the old node is freed and the counters follow (a restart derives them again).  Every offset
read from the segment is checked against the heap before it is followed."""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
from libc.stdint cimport int64_t, uint32_t, uint64_t
from libc.string cimport memcmp, memcpy

from shardkv.index cimport (
    CHUNK_OFF_MASK,
    H_DIRTY,
    KLEN_MASK,
    LAYOUT_CHUNKS,
    LAYOUT_PACKED,
    LAYOUT_TABLE,
    OFF_MASK,
    RECORD_HEADER_BYTES,
    STRUCT_WORDS,
    TOMBSTONE,
    TYPE_LIST,
    TYPE_SET,
    VLEN_MASK,
    Index,
    key_equal,
    record_bytes,
)

from shardkv.index import SegmentCorrupt


cdef extern from "zlib.h":
    unsigned long crc32(unsigned long crc, const unsigned char *buf, unsigned int length) nogil


cdef extern from *:
    """
    #ifndef SHARDKV_SOURCE_SHA256
    #define SHARDKV_SOURCE_SHA256 ""
    #endif
    static inline void layouts_store_release(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
    static inline uint32_t layouts_u32(const unsigned char *p) { uint32_t v; memcpy(&v, p, 4); return v; }
    static inline void layouts_put_u32(unsigned char *p, uint32_t v) { memcpy(p, &v, 4); }
    """
    const char *SHARDKV_SOURCE_SHA256
    void layouts_store_release(uint64_t *p, uint64_t v) nogil
    uint32_t layouts_u32(const unsigned char *p) nogil
    void layouts_put_u32(unsigned char *p, uint32_t v) nogil


SOURCE_SHA256 = SHARDKV_SOURCE_SHA256.decode()  # of layouts.pyx when it was compiled (native.py)
CHUNK_ENTRIES_MAX = CHUNK_ENTRIES
CHUNK_BYTES_MAX = CHUNK_BYTES
TABLE_SLOTS_MAX_LOG2 = 24  # a slot's fp has 24 bits


cdef inline int check_span(Index ix, uint64_t off, uint64_t n) except -1:
    if off < ix.heap_lo or off + n > ix.heap_hi or off + n < off:
        raise SegmentCorrupt(f"{n} bytes at {off} are outside the heap")
    return 0


cdef uint64_t structure(Index ix, uint64_t head, uint64_t kind, uint64_t layout) except? 0:
    """The first word of the table or chunk directory of a large collection's head record of
    this type and layout (0: another type, or the packed layout)."""
    if ix.q == NULL:
        raise ValueError("the index was released")
    check_span(ix, head, RECORD_HEADER_BYTES)
    cdef uint64_t info = ix.q[(head >> 3) + 2]
    if (info >> 32) & 0xFF != kind:
        return 0
    cdef uint64_t start = head + RECORD_HEADER_BYTES + (info & KLEN_MASK)
    check_span(ix, start, 16)
    if ix.base[start] != layout:
        return 0
    cdef uint64_t s_off = ix.q[(start + 8) >> 3]  # the first aligned word after the layout byte
    check_span(ix, s_off, RECORD_HEADER_BYTES + 8 * STRUCT_WORDS)
    cdef uint64_t s = (s_off + RECORD_HEADER_BYTES) >> 3
    if layout == LAYOUT_TABLE:
        if ix.q[s + 2] > TABLE_SLOTS_MAX_LOG2:
            raise SegmentCorrupt(f"table {s_off} claims 2**{ix.q[s + 2]} slots")
        check_span(ix, s_off, RECORD_HEADER_BYTES + 8 * (STRUCT_WORDS + ((<uint64_t> 1) << ix.q[s + 2])))
    else:
        check_span(ix, s_off, RECORD_HEADER_BYTES + 8 * (STRUCT_WORDS + ix.q[s + 2]))
        if (ix.q[s] >> 32) + (ix.q[s] & KLEN_MASK) > ix.q[s + 2] or not ix.q[s] & KLEN_MASK:
            raise SegmentCorrupt(f"chunk directory {s_off}'s window is outside its slots")
    return s


cdef inline uint64_t field_fp(bytes field) noexcept:
    return crc32(0, <const unsigned char *> PyBytes_AS_STRING(field), <unsigned int> PyBytes_GET_SIZE(field)) >> 8


cdef Py_ssize_t probe(Index ix, uint64_t s, bytes field, uint64_t fp, set taken, Py_ssize_t *free_out) except -2:
    """The slot of field in the table at word s (-1: absent); *free_out: the slot a new entry
    for it would take.  Slots in `taken` (None: none) are spoken for by the same change and count
    as occupied."""
    cdef uint64_t log2 = ix.q[s + 2], size = (<uint64_t> 1) << log2
    cdef uint64_t mask = size - 1, slot0 = s + STRUCT_WORDS, i = fp >> (24 - log2), w, off, _step
    cdef Py_ssize_t free = -1, n = PyBytes_GET_SIZE(field)
    for _step in range(size):
        w = ix.q[slot0 + i]
        if taken is not None and <Py_ssize_t> i in taken:
            pass
        elif w == 0:
            free_out[0] = free if free >= 0 else <Py_ssize_t> i
            return -1
        elif w == TOMBSTONE:
            if free < 0:
                free = <Py_ssize_t> i
        elif w >> 40 == fp:
            off = (w & OFF_MASK) << 3
            check_span(ix, off, RECORD_HEADER_BYTES + <uint64_t> n)
            if ix.q[(off >> 3) + 2] & KLEN_MASK == <uint64_t> n and \
                    key_equal(ix.base + off + RECORD_HEADER_BYTES, <const unsigned char *> PyBytes_AS_STRING(field), n):
                free_out[0] = free
                return <Py_ssize_t> i
        i = (i + 1) & mask
    raise SegmentCorrupt(f"table at word {s} has no empty slot")


def table_probe(Index ix not None, uint64_t s, bytes field not None, set taken):
    """probe for Python: (slot of field or -1, the slot a new entry for it would take)."""
    cdef Py_ssize_t free = -1
    cdef Py_ssize_t at = probe(ix, s, field, field_fp(field), taken, &free)
    return at, free


cdef const unsigned char *value_area(Index ix, uint64_t head, uint64_t *vlen) except NULL:
    """The value area of the collection record at head (its layout byte first), checked to lie
    in the heap and to hold that byte; its bytes in *vlen."""
    if ix.q == NULL:
        raise ValueError("the index was released")
    check_span(ix, head, RECORD_HEADER_BYTES)
    cdef uint64_t start = head + RECORD_HEADER_BYTES + (ix.q[(head >> 3) + 2] & KLEN_MASK)
    vlen[0] = ix.q[(head >> 3) + 3] & VLEN_MASK
    check_span(ix, start, vlen[0])
    if vlen[0] == 0:
        raise SegmentCorrupt(f"collection {head} has no layout byte")
    return ix.base + start


cdef object field_get(Index ix, uint64_t head, bytes field, bint pairs):
    """The value of field in the hash (pairs) or set whose head record is at head, packed or a
    table: its bytes (a set member's are empty), or None if there is no such field."""
    cdef uint64_t vlen, s, w, off, nk, nv
    cdef Py_ssize_t at, free = -1, pos = 1, n = PyBytes_GET_SIZE(field), end
    cdef uint32_t m
    cdef bint match
    cdef const unsigned char *p = value_area(ix, head, &vlen)
    if p[0] == LAYOUT_TABLE:
        s = structure(ix, head, (ix.q[(head >> 3) + 2] >> 32) & 0xFF, LAYOUT_TABLE)
        at = probe(ix, s, field, field_fp(field), None, &free)
        if at < 0:
            return None
        w = ix.q[s + STRUCT_WORDS + <uint64_t> at]
        off = (w & OFF_MASK) << 3
        check_span(ix, off, RECORD_HEADER_BYTES)
        nk = ix.q[(off >> 3) + 2] & KLEN_MASK
        nv = ix.q[(off >> 3) + 3] & VLEN_MASK
        check_span(ix, off, RECORD_HEADER_BYTES + nk + nv)
        return PyBytes_FromStringAndSize(<const char *> ix.base + off + RECORD_HEADER_BYTES + nk, <Py_ssize_t> nv)
    if p[0] != LAYOUT_PACKED:
        raise SegmentCorrupt(f"collection {head} has layout {p[0]}")
    end = <Py_ssize_t> vlen
    while pos < end:
        m = entry_length(p, pos, end)
        match = m == n and memcmp(p + pos + 4, PyBytes_AS_STRING(field), n) == 0
        pos += 4 + m
        if not pairs:
            if match:
                return b""
            continue
        m = entry_length(p, pos, end)  # the field's value
        if match:
            return PyBytes_FromStringAndSize(<const char *> p + pos + 4, m)
        pos += 4 + m
    return None


def field_of(Index ix not None, uint64_t head, bytes field not None, bint pairs):
    """field_get for Python."""
    return field_get(ix, head, field, pairs)


cdef Py_ssize_t table_set(Index ix, uint64_t head, bytes field, bytes value) except -2:
    """Set one field of the large hash or set whose head record is at head (a set's value is
    empty): 1 if it is new, 0 if it was there (a set's member: nothing is written), -1 if the
    table must grow first (nothing written).  A full heap raises the allocator's OOM error
    before any change."""
    cdef uint64_t info = ix.q[(head >> 3) + 2]
    cdef uint64_t kind = (info >> 32) & 0xFF
    cdef uint64_t s = structure(ix, head, kind, LAYOUT_TABLE)
    cdef uint64_t log2, fp, off, old, slot0
    cdef Py_ssize_t at, free = -1, slot
    if not s:
        raise ValueError(f"record {head} is not a large hash or set")
    log2 = ix.q[s + 2]
    if ix.q[s + 1] + 1 > (3 << log2) // 4:
        return -1
    fp = field_fp(field)
    at = probe(ix, s, field, fp, None, &free)
    if at >= 0 and kind == TYPE_SET:
        return 0
    slot = at if at >= 0 else free
    slot0 = s + STRUCT_WORDS
    off = ix.allocator.alloc(record_bytes(PyBytes_GET_SIZE(field), PyBytes_GET_SIZE(value)))
    ix.write_record(off, (info >> 40) & 0xFF, field, kind, value, 0)
    old = ix.q[slot0 + slot]
    layouts_store_release(&ix.q[slot0 + slot], fp << 40 | off >> 3)  # publish
    if at >= 0:
        ix.allocator.free((old & OFF_MASK) << 3)
    ix.q[H_DIRTY] += 1
    if at < 0:
        ix.q[s] += 1
        if old == 0:
            ix.q[s + 1] += 1
    return 1 if at < 0 else 0


def table_set_one(Index ix not None, uint64_t head, bytes field not None, bytes value not None):
    """table_set for Python."""
    return table_set(ix, head, field, value)


cdef const unsigned char *chunk_payload(Index ix, uint64_t link, uint64_t *vlen) except NULL:
    cdef uint64_t off = (link & CHUNK_OFF_MASK) << 3
    check_span(ix, off, RECORD_HEADER_BYTES)
    vlen[0] = ix.q[(off >> 3) + 3] & VLEN_MASK
    check_span(ix, off, RECORD_HEADER_BYTES + vlen[0])
    return ix.base + off + RECORD_HEADER_BYTES


cdef unsigned char *new_chunk(Index ix, uint64_t head, uint64_t off, uint64_t vlen) except NULL:
    """Write the header of a chunk of the list whose head record is at head (its stored db) into
    the block at off: where its vlen payload bytes go."""
    return ix.new_record(off, (ix.q[(head >> 3) + 2] >> 40) & 0xFF, <const unsigned char *> b"", 0, TYPE_LIST, vlen, 0)


cdef uint64_t end_chunk(Index ix, uint64_t head, bint left, uint64_t *s_out, uint64_t *word_out) except? 0:
    """The slot word of the first (left) or last chunk of the large list whose head record is at
    head: its directory's first word in *s_out, the slot's word index in *word_out."""
    cdef uint64_t s = structure(ix, head, TYPE_LIST, LAYOUT_CHUNKS)
    if not s:
        raise ValueError(f"record {head} is not a large list")
    cdef uint64_t window = ix.q[s]
    cdef uint64_t first = window >> 32, n = window & KLEN_MASK
    s_out[0] = s
    word_out[0] = s + STRUCT_WORDS + (first if left else first + n - 1)
    return ix.q[word_out[0]]


cdef Py_ssize_t chunks_push(Index ix, uint64_t head, list items, bint left) except -2:
    """LPUSH (items in the order pushed) or RPUSH onto the large list whose head record is at
    head, when its end chunk has room for them: the new length, or -1 (nothing written) when it
    has not.  A full heap raises the allocator's OOM error before any change."""
    cdef uint64_t s, word, vlen, add = 0, off
    cdef uint64_t link = end_chunk(ix, head, left, &s, &word)
    cdef uint64_t entries = link >> 48
    cdef Py_ssize_t count = PyList_GET_SIZE(items), i
    cdef const unsigned char *old = chunk_payload(ix, link, &vlen)
    cdef unsigned char *at
    for i in range(count):
        add += 8 + <uint64_t> PyBytes_GET_SIZE(<bytes> PyList_GET_ITEM(items, i))
    if entries + <uint64_t> count > CHUNK_ENTRIES or vlen + add > CHUNK_BYTES:
        return -1
    off = ix.allocator.alloc(record_bytes(0, vlen + add))
    at = new_chunk(ix, head, off, vlen + add)
    if not left:
        memcpy(at, old, vlen)
        at += vlen
    for i in range(count):  # LPUSH a b c: c, b, a, then what was there
        at = put_entry(at, <bytes> PyList_GET_ITEM(items, count - 1 - i if left else i), True)
    if left:
        memcpy(at, old, vlen)
    layouts_store_release(&ix.q[word], (entries + <uint64_t> count) << 48 | off >> 3)  # publish
    ix.allocator.free((link & CHUNK_OFF_MASK) << 3)
    ix.q[H_DIRTY] += 1
    ix.q[s + 1] += <uint64_t> count
    return <Py_ssize_t> ix.q[s + 1]


def chunks_push_end(Index ix not None, uint64_t head, list items not None, bint left):
    """chunks_push for Python."""
    return chunks_push(ix, head, items, left)


cdef object chunks_pop(Index ix, uint64_t head, bint left):
    """LPOP / RPOP of one entry of the large list whose head record is at head: the entry, or
    None (nothing written) when it is the list's last (the caller deletes the key).  The chunk
    it leaves is written anew, or, if it was the chunk's last entry, the window moves past it."""
    cdef uint64_t s, word, vlen, m, off
    cdef uint64_t link = end_chunk(ix, head, left, &s, &word)
    cdef uint64_t entries = link >> 48, first = ix.q[s] >> 32, n = ix.q[s] & KLEN_MASK
    cdef const unsigned char *p
    cdef unsigned char *at
    if entries == 1 and n == 1:
        return None
    p = chunk_payload(ix, link, &vlen)
    if vlen < 8:
        raise SegmentCorrupt(f"chunk {(link & CHUNK_OFF_MASK) << 3} is empty")
    m = layouts_u32(p if left else p + vlen - 4)
    if m + 8 > vlen or not entries:
        raise SegmentCorrupt(f"chunk {(link & CHUNK_OFF_MASK) << 3} holds an entry of {m} bytes in {vlen}")
    value = PyBytes_FromStringAndSize(<const char *> (p + 4 if left else p + vlen - 4 - m), <Py_ssize_t> m)
    if entries > 1:
        off = ix.allocator.alloc(record_bytes(0, vlen - m - 8))
        at = new_chunk(ix, head, off, vlen - m - 8)
        memcpy(at, p + m + 8 if left else p, vlen - m - 8)
        layouts_store_release(&ix.q[word], (entries - 1) << 48 | off >> 3)  # publish
    else:
        layouts_store_release(&ix.q[s], ((first + 1) << 32 | (n - 1)) if left else (first << 32 | (n - 1)))
    ix.allocator.free((link & CHUNK_OFF_MASK) << 3)
    ix.q[H_DIRTY] += 1
    ix.q[s + 1] -= 1
    return value


def chunks_pop_end(Index ix not None, uint64_t head, bint left):
    """chunks_pop for Python."""
    return chunks_pop(ix, head, left)


# ---------------------------------------------------------------------- packed entries


cdef inline uint32_t entry_length(const unsigned char *p, Py_ssize_t pos, Py_ssize_t end) except? 0xFFFFFFFF:
    """The u32 length at pos, checked to fit before end."""
    if end - pos < 4:
        raise SegmentCorrupt(f"{end - pos} bytes at {pos} are not an entry's length")
    cdef uint32_t n = layouts_u32(p + pos)
    if <Py_ssize_t> n > end - pos - 4:
        raise SegmentCorrupt(f"an entry of {n} bytes at {pos} runs past its {end}-byte area")
    return n


cdef unsigned char *put_entry(unsigned char *at, bytes x, bint trailer) noexcept:
    """Write one entry at `at`: its u32 length, its bytes, and for a list chunk (trailer) its
    length again; where the next one goes."""
    cdef Py_ssize_t n = PyBytes_GET_SIZE(x)
    layouts_put_u32(at, <uint32_t> n)
    memcpy(at + 4, PyBytes_AS_STRING(x), n)
    if trailer:
        layouts_put_u32(at + 4 + n, <uint32_t> n)
        return at + 8 + n
    return at + 4 + n


cdef bytes pack(list items, bint trailer):
    cdef Py_ssize_t i, count = PyList_GET_SIZE(items), size = 0
    for i in range(count):
        size += (8 if trailer else 4) + PyBytes_GET_SIZE(<bytes> PyList_GET_ITEM(items, i))
    cdef bytes out = PyBytes_FromStringAndSize(NULL, size)
    cdef unsigned char *at = <unsigned char *> PyBytes_AS_STRING(out)
    for i in range(count):
        at = put_entry(at, <bytes> PyList_GET_ITEM(items, i), trailer)
    return out


def pack_entries(list items not None):
    """A packed collection's entries: `[u32 length][bytes]` each."""
    return pack(items, False)


def unpack_entries(bytes buf not None, Py_ssize_t pos=0):
    """The entries packed in buf from pos on (pack_entries' inverse)."""
    cdef const unsigned char *p = <const unsigned char *> PyBytes_AS_STRING(buf)
    cdef Py_ssize_t end = PyBytes_GET_SIZE(buf)
    cdef uint32_t n
    cdef list out = []
    if pos < 0:
        raise ValueError(f"position {pos}")
    while pos < end:
        n = entry_length(p, pos, end)
        out.append(PyBytes_FromStringAndSize(<const char *> p + pos + 4, n))
        pos += 4 + n
    return out


def pack_node(list items not None):
    """A list chunk's entries: `[u32 length][bytes][u32 length]` each, so that either end can be
    taken without reading the rest."""
    return pack(items, True)


def node_take(bytes buf not None, Py_ssize_t count, bint left):
    """(the first (left) or last `count` entries of a chunk, in the order taken; the bytes of
    what remains).  count -1: every entry."""
    cdef const unsigned char *p = <const unsigned char *> PyBytes_AS_STRING(buf)
    cdef Py_ssize_t pos = 0, end = PyBytes_GET_SIZE(buf), taken = 0
    cdef uint32_t n
    cdef list out = []
    while taken != count and pos < end:
        if left:
            n = entry_length(p, pos, end - 4)
            out.append(PyBytes_FromStringAndSize(<const char *> p + pos + 4, n))
            pos += 8 + n
        else:
            if end - pos < 8:
                raise SegmentCorrupt(f"{end - pos} bytes of a chunk are not an entry")
            n = layouts_u32(p + end - 4)
            if <Py_ssize_t> n > end - pos - 8 or layouts_u32(p + end - 8 - n) != n:
                raise SegmentCorrupt(f"the last entry of a chunk ({n} bytes) does not fit it")
            out.append(PyBytes_FromStringAndSize(<const char *> p + end - 4 - n, n))
            end -= 8 + n
        taken += 1
    if taken != count and count >= 0:
        raise SegmentCorrupt(f"a chunk holds {taken} entries, not {count}")
    return out, buf[pos:end]


def unpack_node(bytes buf not None):
    """Every entry of a chunk, in order."""
    return node_take(buf, -1, True)[0]


cdef object list_get(Index ix, uint64_t head, int64_t index):
    """LINDEX: entry `index` (negative: from the end) of the list whose head record is at head,
    packed or in chunks, or None past either end."""
    cdef uint64_t vlen, s, total, pos, at, link, nlen
    cdef Py_ssize_t p_at = 1, end
    cdef int64_t length, k, _entry
    cdef uint32_t m
    cdef const unsigned char *p = value_area(ix, head, &vlen)
    if p[0] == LAYOUT_CHUNKS:
        s = structure(ix, head, TYPE_LIST, LAYOUT_CHUNKS)
        total = ix.q[s + 1]
        if index < 0:
            index += <int64_t> total
        if index < 0 or <uint64_t> index >= total:
            return None
        pos, at = locate(ix, head, s, <uint64_t> index)
        link = ix.q[s + STRUCT_WORDS + (ix.q[s] >> 32) + pos]
        p = chunk_payload(ix, link, &nlen)
        end = <Py_ssize_t> nlen
        p_at = 0
        for _entry in range(<int64_t> at):
            p_at += 8 + entry_length(p, p_at, end)
        m = entry_length(p, p_at, end)
        return PyBytes_FromStringAndSize(<const char *> p + p_at + 4, m)
    if p[0] != LAYOUT_PACKED:
        raise SegmentCorrupt(f"list {head} has layout {p[0]}")
    end = <Py_ssize_t> vlen
    if index < 0:  # count the entries first
        length = 0
        while p_at < end:
            p_at += 4 + entry_length(p, p_at, end)
            length += 1
        index += length
        if index < 0:
            return None
        p_at = 1
    k = 0
    while p_at < end:
        m = entry_length(p, p_at, end)
        if k == index:
            return PyBytes_FromStringAndSize(<const char *> p + p_at + 4, m)
        p_at += 4 + m
        k += 1
    return None


def list_entry(Index ix not None, uint64_t head, int64_t index):
    """list_get for Python."""
    return list_get(ix, head, index)


cdef (uint64_t, uint64_t) locate(Index ix, uint64_t head, uint64_t s, uint64_t index) except *:
    """chunk_locate's search, in the directory at word s (index < its total)."""
    cdef uint64_t first = ix.q[s] >> 32, n = ix.q[s] & KLEN_MASK, total = ix.q[s + 1], count, pos
    cdef uint64_t slot0 = s + STRUCT_WORDS + first, behind
    if index < total // 2:
        for pos in range(n):
            count = ix.q[slot0 + pos] >> 48
            if index < count:
                return pos, index
            index -= count
    else:
        behind = total - 1 - index  # entries after it
        for pos in range(n - 1, -1, -1):
            count = ix.q[slot0 + pos] >> 48
            if behind < count:
                return pos, count - 1 - behind
            behind -= count
    raise SegmentCorrupt(f"list {head}'s chunks hold fewer entries than its length {total}")


def chunk_locate(Index ix not None, uint64_t head, uint64_t index):
    """(position in the window, index in that chunk) of entry `index` (0 <= index < its length)
    of the large list whose head record is at head, from the chunks' entry counts (from the end
    nearer to it)."""
    cdef uint64_t s = structure(ix, head, TYPE_LIST, LAYOUT_CHUNKS)
    if not s:
        raise ValueError(f"record {head} is not a large list")
    if index >= ix.q[s + 1]:
        raise IndexError(f"entry {index} of a list of {ix.q[s + 1]}")
    return locate(ix, head, s, index)
