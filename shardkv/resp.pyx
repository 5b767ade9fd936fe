# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""RESP request framing, compiled: cut the complete commands (multibulk or inline) off the front
of a connection's buffer, with Redis's exact framing and error texts.

It reads a header line to its first CR (as Redis's strchr does, so a NUL byte before the CR hides
it), takes lengths by `string2ll`'s strict rules, checks every length against the limits before
any byte of the data is waited for, and stops at the same byte as Redis: at an incomplete
command (saying how many bytes it needs, when its header told), or at a protocol error.  Inline
commands are found here and split by protocol.split_inline.

It also encodes the replies the compiled layer sends most: bulk strings (how strings are stored,
too) and integers."""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.list cimport PyList_GET_SIZE
from libc.stdint cimport int64_t, uint64_t
from libc.string cimport memchr, memcpy


cdef extern from *:
    """
    #ifndef SHARDKV_SOURCE_SHA256
    #define SHARDKV_SOURCE_SHA256 ""
    #endif
    """
    const char *SHARDKV_SOURCE_SHA256


SOURCE_SHA256 = SHARDKV_SOURCE_SHA256.decode()  # of resp.pyx when it was compiled (native.py)

cdef Py_ssize_t INLINE_BYTES_MAX = 64 * 1024  # Redis's PROTO_INLINE_MAX_SIZE
cdef int64_t COUNT_MAX = 2147483647  # Redis 7.0 refuses a multibulk count above INT_MAX
# What a client that must authenticate and has not may send (Redis's limits for such clients).
cdef int64_t UNAUTHENTICATED_ARGS_MAX = 10
cdef int64_t UNAUTHENTICATED_BULK_BYTES_MAX = 16384
cdef Py_ssize_t LONG_STR_BYTES = 21  # Redis's LONG_STR_SIZE: no valid long long is this long


cdef bint string2ll(const unsigned char *s, Py_ssize_t n, int64_t *out) noexcept:
    """Redis's strict integer syntax: an optional '-', then "0" or a digit 1-9 and more digits; no
    '+', spaces, leading zeros or "-0"; a signed 64-bit value."""
    cdef bint negative = False
    cdef uint64_t v = 0, limit
    cdef Py_ssize_t i = 0
    if n <= 0 or n >= LONG_STR_BYTES:
        return False
    if n == 1 and s[0] == 48:
        out[0] = 0
        return True
    if s[0] == 45:  # '-'
        negative = True
        i = 1
        if n == 1:
            return False
    if s[i] < 49 or s[i] > 57:  # the first digit is 1-9
        return False
    while i < n:
        if s[i] < 48 or s[i] > 57:
            return False
        if v > 1844674407370955161 or (v == 1844674407370955161 and s[i] > 53):
            return False  # past 2**64 - 1
        v = v * 10 + (s[i] - 48)
        i += 1
    limit = (<uint64_t> 1 << 63) if negative else ((<uint64_t> 1 << 63) - 1)
    if v > limit:
        return False
    out[0] = <int64_t> (0 - v) if negative else <int64_t> v
    return True


def parse_integer(const unsigned char[::1] text not None):
    """string2ll of text: its value, or None when Redis would not read it as an integer."""
    cdef int64_t value
    if text.shape[0] and string2ll(&text[0], text.shape[0], &value):
        return value
    return None


cdef inline Py_ssize_t find(const unsigned char *p, unsigned char c, Py_ssize_t pos, Py_ssize_t end) noexcept:
    """The index of the first c in p[pos:end], or -1."""
    cdef const void *hit
    if pos >= end:
        return -1
    hit = memchr(p + pos, c, <size_t> (end - pos))
    return -1 if hit == NULL else <Py_ssize_t> (<const unsigned char *> hit - p)


def parse(const unsigned char[::1] buf not None, Py_ssize_t end, Py_ssize_t args_max, Py_ssize_t bulk_bytes_max,
          Py_ssize_t requests_max, bint unauthenticated, object split_inline, object error_type):
    """Parse the complete commands in buf[0:end]: (requests, consumed, needed, error), where each
    request is (argv, start, end) within the buffer, `consumed` the bytes fully parsed, `needed`
    the whole size of the incomplete command at `consumed` when its header told it (else 0), and
    `error` an error_type(why) for broken framing at `consumed` (else None).  An `unauthenticated`
    client gets Redis's smaller limits on argument counts and lengths."""
    if end > buf.shape[0]:
        raise ValueError("end is past the buffer")
    return parse_at(&buf[0] if buf.shape[0] else NULL, end, args_max, bulk_bytes_max, requests_max, unauthenticated,
                    split_inline, error_type)


cdef tuple parse_at(const unsigned char *p, Py_ssize_t end, Py_ssize_t args_max, Py_ssize_t bulk_bytes_max,
                    Py_ssize_t requests_max, bint unauthenticated, object split_inline, object error_type):
    """parse of the end bytes at p (a compiled caller's buffer, which it keeps alive)."""
    cdef list out = []
    cdef list argv
    cdef Py_ssize_t pos = 0, start, nl, cr, data, _arg
    cdef int64_t count, size
    while pos < end and PyList_GET_SIZE(out) < requests_max:
        start = pos
        if p[pos] != 42:  # not '*': an inline command
            nl = find(p, 10, pos, end)
            if nl >= 0 and find(p, 0, pos, nl) >= 0:
                nl = -1  # Redis looks for the LF with strchr, which a NUL byte stops
            if nl < 0:
                if end - pos > INLINE_BYTES_MAX:
                    return out, pos, 0, error_type("too big inline request")
                return out, pos, 0, None
            line = PyBytes_FromStringAndSize(<const char *> p + pos, nl - pos)
            pos = nl + 1
            try:
                argv = split_inline(line)
            except error_type as exc:
                return out, start, 0, exc
            if argv:
                out.append((argv, start, pos))
            continue
        cr = find(p, 13, pos, end)
        if cr < 0 or cr + 1 >= end or find(p, 0, pos, cr) >= 0:
            return no_header_yet(p, out, pos, pos, end, cr, "too big mbulk count string", error_type)
        if not string2ll(p + pos + 1, cr - pos - 1, &count) or count > COUNT_MAX:
            return out, pos, 0, error_type("invalid multibulk length")
        if unauthenticated and count > UNAUTHENTICATED_ARGS_MAX:
            return out, pos, 0, error_type("unauthenticated multibulk length")
        if count > args_max:
            return out, pos, 0, error_type("invalid multibulk length")
        pos = cr + 2
        if count <= 0:
            continue  # Redis ignores empty (and negative) multibulks
        argv = []
        for _arg in range(count):
            cr = find(p, 13, pos, end)
            if cr < 0 or cr + 1 >= end or find(p, 0, pos, cr) >= 0:
                return no_header_yet(p, out, start, pos, end, cr, "too big bulk count string", error_type)
            if p[pos] != 36:  # '$'
                return out, start, 0, error_type(f"expected '$', got '{chr(p[pos])}'")
            if not string2ll(p + pos + 1, cr - pos - 1, &size) or size < 0 or size > bulk_bytes_max:
                return out, start, 0, error_type("invalid bulk length")
            if unauthenticated and size > UNAUTHENTICATED_BULK_BYTES_MAX:
                return out, start, 0, error_type("unauthenticated bulk length")
            data = cr + 2
            pos = data + <Py_ssize_t> size + 2  # the two bytes after the data are skipped unread, as Redis does
            if pos > end:
                return out, start, pos - start, None
            argv.append(PyBytes_FromStringAndSize(<const char *> p + data, <Py_ssize_t> size))
        out.append((argv, start, pos))
    return out, pos, 0, None


# ------------------------------------------------------------------------------ replies


cdef int ll_digits(char *dst, long long v) noexcept:
    """v in decimal at dst (20 bytes of room at most: "-9223372036854775808"): how many written.
    Integer replies, bulk headers and the digits INCR stores are all printed here."""
    cdef unsigned long long u = <unsigned long long> v
    cdef char tmp[20]
    cdef int n = 0, i, sign = 0
    if v < 0:
        u = 0ULL - u  # (the negation of LLONG_MIN in unsigned arithmetic is its magnitude)
        dst[0] = 45  # '-'
        sign = 1
    while True:
        tmp[n] = <char> (48 + u % 10)
        n += 1
        u //= 10
        if not u:
            break
    for i in range(n):
        dst[sign + i] = tmp[n - 1 - i]
    return sign + n


cdef Py_ssize_t bulk_bytes(Py_ssize_t n) noexcept:
    """The bytes of n bytes framed as a RESP bulk string: `$<n>\\r\\n<n bytes>\\r\\n`."""
    cdef Py_ssize_t digits = 1, rest = n
    while rest >= 10:
        rest //= 10
        digits += 1
    return 1 + digits + 2 + n + 2


cdef Py_ssize_t write_bulk(char *dst, const char *src, Py_ssize_t n) noexcept:
    """Frame n bytes at src as a RESP bulk string at dst (bulk_bytes(n) of room): how strings are
    stored, and GET's reply.  The bytes written."""
    cdef int h
    dst[0] = 36  # '$'
    h = 1 + ll_digits(dst + 1, n)
    dst[h] = 13
    dst[h + 1] = 10
    h += 2
    memcpy(dst + h, src, n)
    dst[h + n] = 13
    dst[h + n + 1] = 10
    return h + n + 2


cpdef bytes bulk(object value):
    """value (bytes, or any bytes-like object) as a RESP bulk string (protocol.bulk)."""
    if not PyBytes_CheckExact(value):
        value = bytes(value)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(value)
    cdef bytes out = PyBytes_FromStringAndSize(NULL, bulk_bytes(n))
    write_bulk(PyBytes_AS_STRING(out), PyBytes_AS_STRING(value), n)
    return out


cdef bytes integer_of(long long v):
    """v as a RESP integer reply."""
    cdef char text[32]
    cdef int size
    text[0] = 58  # ':'
    size = 1 + ll_digits(text + 1, v)
    text[size] = 13
    text[size + 1] = 10
    return PyBytes_FromStringAndSize(text, size + 2)


cpdef bytes integer(object n):
    """n as a RESP integer reply (protocol.integer); any Python int, at C speed for a long long."""
    cdef long long v
    try:
        v = n
    except OverflowError:
        return b":%d\r\n" % n
    return integer_of(v)


cdef tuple no_header_yet(const unsigned char *p, list out, Py_ssize_t start, Py_ssize_t pos, Py_ssize_t end,
                         Py_ssize_t cr, str too_big, object error_type):
    """A header line at pos that Redis does not see as whole yet.  Redis finds its end with strchr
    for CR (a NUL byte before the CR hides it) and then wants one more byte, whatever it is; only
    while it finds no CR does a buffer past INLINE_BYTES_MAX become an error."""
    if (cr < 0 or find(p, 0, pos, cr) >= 0) and end - pos > INLINE_BYTES_MAX:
        return out, start, 0, error_type(too_big)
    return out, start, 0, None
