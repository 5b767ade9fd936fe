# The compiled RESP framing's declarations (resp.pyx), for other compiled modules.
from libc.stdint cimport int64_t


cdef bint string2ll(const unsigned char *s, Py_ssize_t n, int64_t *out) noexcept
cpdef bytes bulk(object value)
cpdef bytes integer(object n)
