# The compiled RESP framing's declarations (resp.pyx), for other compiled modules.
from libc.stdint cimport int64_t


cdef bint string2ll(const unsigned char *s, Py_ssize_t n, int64_t *out) noexcept
cdef int ll_digits(char *dst, long long v) noexcept
cdef Py_ssize_t bulk_bytes(Py_ssize_t n) noexcept
cdef Py_ssize_t write_bulk(char *dst, const char *src, Py_ssize_t n) noexcept
cpdef bytes bulk(object value)
cdef bytes integer_of(long long v)
cpdef bytes integer(object n)
cdef tuple parse_at(const unsigned char *p, Py_ssize_t end, Py_ssize_t args_max, Py_ssize_t bulk_bytes_max,
                    Py_ssize_t requests_max, bint unauthenticated, object split_inline, object error_type)
