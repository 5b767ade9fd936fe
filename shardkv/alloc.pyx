# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""A shard heap's allocator, compiled: size-class slabs in 64 KiB pages and runs of whole pages.

The page table has one entry of eight u32 words per page (class, live blocks, head of its free
list as block index + 1, bump index, previous and next page + 1 in its class's list of pages with
room, run length); the page map has one byte per page (1: in use); the segment header holds, per
class, the first page with room (+ 1), the bytes handed out and the pages in use.  store.py
passes layout.py's copy of these numbers in, and they are checked against this module's at start."""

from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport free as free_memory, malloc
from libc.string cimport memchr, memset

from shardkv.index cimport (
    H_EXPIRES,
    H_KEYS,
    KLEN_MASK,
    LAYOUT_PACKED,
    OFF_MASK,
    RECORD_HEADER_BYTES,
    TYPE_HASH,
    TYPE_LIST,
    TYPE_SET,
    VLEN_MASK,
    Index,
    record_bytes,
)

from shardkv.index import SegmentCorrupt


cdef extern from *:
    """
    #ifndef SHARDKV_SOURCE_SHA256
    #define SHARDKV_SOURCE_SHA256 ""
    #endif
    """
    const char *SHARDKV_SOURCE_SHA256


SOURCE_SHA256 = SHARDKV_SOURCE_SHA256.decode()  # of alloc.pyx when it was compiled (native.py)


cdef enum:
    P_CLASS = 0
    P_LIVE = 1
    P_FREE = 2
    P_BUMP = 3
    P_PREV = 4
    P_NEXT = 5
    P_RUN = 6
    PAGE_FREE = 0
    PAGE_RUN_HEAD = 254
    PAGE_RUN_TAIL = 255
    H_USED_BYTES = 8
    H_PAGES_USED = 11
    H_PARTIAL = 16
    PAGE_BYTES = 65536
    SMALL_RECORD_BYTES_MAX = PAGE_BYTES // 4
    PROGRESS_EVERY = 4096  # rebuild calls its progress callback once per this many records

LAYOUT = (P_CLASS, P_LIVE, P_FREE, P_BUMP, P_PREV, P_NEXT, P_RUN, PAGE_FREE, PAGE_RUN_HEAD, PAGE_RUN_TAIL,
          H_USED_BYTES, H_PAGES_USED, H_PARTIAL, PAGE_BYTES, SMALL_RECORD_BYTES_MAX)


cdef class Allocator:
    cdef uint8_t[::1] segment
    cdef uint8_t *map
    cdef uint64_t *q
    cdef uint32_t *u
    cdef uint64_t heap_off, pages, page_u32
    cdef public uint64_t page_hint  # where a search for one free page starts
    cdef uint32_t *class_bytes
    cdef uint16_t *class_of
    cdef uint32_t classes
    cdef object oom  # the exception a full heap raises (a factory)

    def __init__(self, segment, uint64_t heap_off, uint64_t pages, uint64_t page_u32, uint64_t map_off,
                 class_bytes, class_of, oom, layout):
        if tuple(layout) != LAYOUT:
            raise AssertionError(f"layout.py's allocator layout {tuple(layout)} is not alloc.pyx's {LAYOUT}")
        self.segment = segment
        self.q = <uint64_t *> &self.segment[0]
        self.u = <uint32_t *> &self.segment[0]
        self.map = &self.segment[0] + map_off
        self.heap_off = heap_off
        self.pages = pages
        self.page_u32 = page_u32
        self.page_hint = 0
        self.classes = len(class_bytes) - 1
        self.class_bytes = <uint32_t *> malloc(len(class_bytes) * sizeof(uint32_t))
        self.class_of = <uint16_t *> malloc(len(class_of) * sizeof(uint16_t))
        if self.class_bytes == NULL or self.class_of == NULL:
            raise MemoryError()
        for i, n in enumerate(class_bytes):
            self.class_bytes[i] = n
        for i, n in enumerate(class_of):
            self.class_of[i] = n
        self.oom = oom

    def __dealloc__(self):
        free_memory(self.class_bytes)
        free_memory(self.class_of)

    def release(self):
        """Let go of the mapping (so it can be closed); the allocator is unusable after."""
        self.segment = None
        self.q = NULL

    cdef inline uint32_t *entry(self, uint64_t page):
        return self.u + self.page_u32 + page * 8

    cpdef uint64_t alloc(self, uint64_t size) except 0:
        """A block of at least size bytes (a slab block, or a run of pages past a quarter page);
        the OOM error if there is no room."""
        cdef uint64_t cls, page, bsize, off
        cdef uint32_t *e
        if self.q == NULL:
            raise ValueError("the allocator was released")
        if size > SMALL_RECORD_BYTES_MAX:
            return self.alloc_run((size + PAGE_BYTES - 1) // PAGE_BYTES)
        cls = self.class_of[(size + 15) >> 4]
        if self.q[H_PARTIAL + cls]:
            page = self.q[H_PARTIAL + cls] - 1
        else:
            page = self.take_pages(1)
            e = self.entry(page)
            e[P_CLASS] = cls
            e[P_LIVE] = e[P_FREE] = e[P_BUMP] = 0
            self.push_partial(cls, page)
        bsize = self.class_bytes[cls]
        e = self.entry(page)
        if e[P_FREE]:
            if e[P_FREE] > PAGE_BYTES // bsize:
                raise SegmentCorrupt(f"page {page}: free list head {e[P_FREE]} past its blocks")
            off = self.heap_off + page * PAGE_BYTES + (e[P_FREE] - 1) * bsize
            e[P_FREE] = <uint32_t> self.q[off >> 3]
        else:
            off = self.heap_off + page * PAGE_BYTES + e[P_BUMP] * bsize
            e[P_BUMP] += 1
        e[P_LIVE] += 1
        if e[P_LIVE] == PAGE_BYTES // bsize:
            self.pop_partial(cls, page)
        self.q[H_USED_BYTES] += bsize
        return off

    cpdef void free(self, uint64_t off) except *:
        """Give back the block at off (a slab block or a run's first page)."""
        cdef uint64_t page, bsize, run
        cdef uint32_t cls
        cdef bint was_full
        cdef uint32_t *e
        if self.q == NULL:
            raise ValueError("the allocator was released")
        if off < self.heap_off or off >= self.heap_off + self.pages * PAGE_BYTES:
            raise SegmentCorrupt(f"free of {off}, outside the heap")
        page = (off - self.heap_off) // PAGE_BYTES
        e = self.entry(page)
        cls = e[P_CLASS]
        if cls == PAGE_RUN_HEAD:
            run = e[P_RUN]
            self.release_pages(page, run)
            self.q[H_USED_BYTES] -= run * PAGE_BYTES
            return
        if not 0 < cls <= self.classes:
            raise AssertionError(f"free of {off} in page {page} of class {cls}")
        bsize = self.class_bytes[cls]
        was_full = e[P_LIVE] == PAGE_BYTES // bsize
        self.q[off >> 3] = e[P_FREE]
        e[P_LIVE] -= 1
        e[P_FREE] = <uint32_t> ((off - self.heap_off - page * PAGE_BYTES) // bsize + 1)
        self.q[H_USED_BYTES] -= bsize
        if e[P_LIVE] == 0:
            if not was_full:
                self.pop_partial(cls, page)
            self.release_pages(page, 1)
        elif was_full:
            self.push_partial(cls, page)

    cpdef void push_partial(self, uint64_t cls, uint64_t page) except *:
        """Put a page at the head of its class's list of pages with room."""
        cdef uint32_t *e = self.entry(page)
        cdef uint64_t head = self.q[H_PARTIAL + cls]
        e[P_PREV] = 0
        e[P_NEXT] = <uint32_t> head
        if head:
            self.entry(head - 1)[P_PREV] = <uint32_t> (page + 1)
        self.q[H_PARTIAL + cls] = page + 1

    cdef void pop_partial(self, uint64_t cls, uint64_t page):
        cdef uint32_t *e = self.entry(page)
        cdef uint32_t prev = e[P_PREV], nxt = e[P_NEXT]
        if prev:
            self.entry(prev - 1)[P_NEXT] = nxt
        else:
            self.q[H_PARTIAL + cls] = nxt
        if nxt:
            self.entry(nxt - 1)[P_PREV] = prev
        e[P_PREV] = e[P_NEXT] = 0

    cdef int64_t first_free(self, uint64_t n, uint64_t start):
        """The first page at or after start that begins n free pages in a row, else -1."""
        cdef uint64_t i = start, run = 0
        cdef const uint8_t *hit
        if n == 1:
            if start >= self.pages:
                return -1
            hit = <const uint8_t *> memchr(self.map + start, 0, self.pages - start)
            return -1 if hit == NULL else hit - self.map
        while i < self.pages:
            if self.map[i]:
                run = 0
            else:
                run += 1
                if run == n:
                    return i + 1 - n
            i += 1
        return -1

    cdef int64_t take_pages(self, uint64_t n) except -1:
        """Find n consecutive free pages and mark them used; OOM if there are none."""
        cdef uint64_t hint = self.page_hint if n == 1 else 0
        cdef int64_t at = self.first_free(n, hint)
        if at < 0 and hint:
            at = self.first_free(n, 0)
        if at < 0:
            raise self.oom()
        memset(self.map + at, 1, n)
        self.page_hint = at
        self.q[H_PAGES_USED] += n
        return at

    cdef void release_pages(self, uint64_t page, uint64_t n):
        cdef uint64_t p
        memset(self.map + page, 0, n)
        for p in range(page, page + n):
            self.entry(p)[P_CLASS] = PAGE_FREE
        self.q[H_PAGES_USED] -= n
        if page < self.page_hint:
            self.page_hint = page

    cdef uint64_t alloc_run(self, uint64_t n) except 0:
        cdef uint64_t page = self.take_pages(n)
        cdef uint64_t p
        cdef uint32_t *e = self.entry(page)
        e[P_CLASS] = PAGE_RUN_HEAD
        e[P_RUN] = <uint32_t> n
        for p in range(page + 1, page + n):
            self.entry(p)[P_CLASS] = PAGE_RUN_TAIL
        self.q[H_USED_BYTES] += n * PAGE_BYTES
        return self.heap_off + page * PAGE_BYTES

    # ---------------------------------------------------------------- rebuild (a worker's restart)

    def rebuild_from(self, Index ix, uint8_t[::1] live_bits not None, progress):
        """Derive the allocator's state, the per-db key counts and the key-slot index from the
        index, after the page table, counters and slot index were reset: every record found is
        marked live in live_bits and accounted.  (records found, the large collections' head
        records), whose other blocks the caller marks (store.children)."""
        cdef uint64_t b, w, off, info, klen, vlen, kind, start, pdb, found = 0
        cdef list large = []
        if self.q == NULL or ix.q == NULL:
            raise ValueError("the allocator or the index was released")
        for b in range(ix.mask + 1):
            w = ix.q[ix.bucket_word + b]
            while w:
                off = (w & OFF_MASK) << 3
                if off < ix.heap_lo or off + RECORD_HEADER_BYTES > ix.heap_hi:
                    raise SegmentCorrupt(f"link {w:#x} in bucket {b} points outside the heap")
                info = ix.q[(off >> 3) + 2]
                klen, kind, pdb = info & KLEN_MASK, (info >> 32) & 0xFF, (info >> 40) & 0xFF
                start = off + RECORD_HEADER_BYTES + klen
                vlen = ix.q[(off >> 3) + 3] & VLEN_MASK
                if start + vlen > ix.heap_hi:
                    raise SegmentCorrupt(f"record {off} runs past the heap")
                found += 1
                if not found & (PROGRESS_EVERY - 1):
                    progress()
                ix.q[H_KEYS + pdb] += 1
                if ix.q[(off >> 3) + 1]:
                    ix.q[H_EXPIRES + pdb] += 1
                ix.slot_insert(off)
                self.mark_live(off, record_bytes(klen, vlen), live_bits)
                if (kind == TYPE_LIST or kind == TYPE_SET or kind == TYPE_HASH) and vlen and \
                        ix.base[start] != LAYOUT_PACKED:
                    large.append(off)
                w = ix.q[off >> 3]
        return found, large

    cpdef void mark_live(self, uint64_t off, uint64_t size, uint8_t[::1] live_bits) except *:
        """rebuild: account one block of size bytes at off found in use."""
        cdef uint64_t page, n, p, cls, bsize, idx, bit
        cdef uint32_t *e
        if off < self.heap_off or off + size > self.heap_off + self.pages * PAGE_BYTES:
            raise SegmentCorrupt(f"a block of {size} bytes at {off} is outside the heap")
        page = (off - self.heap_off) // PAGE_BYTES
        e = self.entry(page)
        if size > SMALL_RECORD_BYTES_MAX:
            n = (size + PAGE_BYTES - 1) // PAGE_BYTES
            memset(self.map + page, 1, n)
            e[P_CLASS] = PAGE_RUN_HEAD
            e[P_RUN] = <uint32_t> n
            for p in range(page + 1, page + n):
                self.entry(p)[P_CLASS] = PAGE_RUN_TAIL
            self.q[H_USED_BYTES] += n * PAGE_BYTES
            self.q[H_PAGES_USED] += n
            return
        cls = self.class_of[(size + 15) >> 4]
        if e[P_CLASS] == PAGE_FREE:
            self.map[page] = 1
            e[P_CLASS] = <uint32_t> cls
            self.q[H_PAGES_USED] += 1
        if e[P_CLASS] != cls:
            raise SegmentCorrupt(f"record at {off} of class {cls} in a page of class {e[P_CLASS]}")
        bsize = self.class_bytes[cls]
        idx = (off - self.heap_off - page * PAGE_BYTES) // bsize
        e[P_LIVE] += 1
        if e[P_BUMP] < idx + 1:
            e[P_BUMP] = <uint32_t> (idx + 1)
        bit = self.live_bit(off, live_bits)
        live_bits[bit >> 3] |= 1 << (bit & 7)
        self.q[H_USED_BYTES] += bsize

    cdef uint64_t live_bit(self, uint64_t off, uint8_t[::1] live_bits) except? 0:
        """The bit of live_bits (one per 16 heap bytes) for the block at off, which is in the heap."""
        cdef uint64_t bit = (off - self.heap_off) >> 4
        if (bit >> 3) >= <uint64_t> live_bits.shape[0]:
            raise AssertionError("live_bits is smaller than the heap")
        return bit

    cpdef bint marked(self, uint64_t off, uint64_t size, uint8_t[::1] live_bits) except -1:
        """Whether rebuild has accounted the block of size bytes at off already."""
        cdef uint64_t bit
        if off < self.heap_off or off + size > self.heap_off + self.pages * PAGE_BYTES:
            raise SegmentCorrupt(f"a block of {size} bytes at {off} is outside the heap")
        if size > SMALL_RECORD_BYTES_MAX:
            return self.map[(off - self.heap_off) // PAGE_BYTES] != 0
        bit = self.live_bit(off, live_bits)
        return (live_bits[bit >> 3] >> (bit & 7)) & 1

    def free_holes(self, uint8_t[::1] live_bits not None, progress):
        """rebuild's last pass: each slab page's free list, of the holes below its highest live
        block, and the pages with room on their class's list."""
        cdef uint64_t page, cls, bsize, base, bit
        cdef int64_t idx
        cdef uint32_t head
        cdef uint32_t *e
        for page in range(self.pages):
            if not page & 63:
                progress()
            e = self.entry(page)
            cls = e[P_CLASS]
            if not 0 < cls <= self.classes:
                continue
            bsize = self.class_bytes[cls]
            base = self.heap_off + page * PAGE_BYTES
            head = 0
            for idx in range(<int64_t> e[P_BUMP] - 1, -1, -1):
                bit = (base + idx * bsize - self.heap_off) >> 4
                if not (live_bits[bit >> 3] >> (bit & 7)) & 1:
                    self.q[(base + idx * bsize) >> 3] = head
                    head = <uint32_t> (idx + 1)
            e[P_FREE] = head
            if e[P_LIVE] < PAGE_BYTES // bsize:
                self.push_partial(cls, page)
