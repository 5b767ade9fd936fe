# cython: language_level=3
"""INCRBYFLOAT and HINCRBYFLOAT arithmetic in C `long double` (x87 80-bit on x86-64, as in
redis-server), printed as Redis prints such a result: fixed-point with 17 decimals, trailing
zeros (and a bare point) dropped, `-0` as `0`.  The arguments are validated by the caller
(commands/args.py's parse_long_double gives Redis's errors); this only computes."""

from libc.stdio cimport snprintf
from libc.string cimport strchr

from cpython.bytes cimport PyBytes_FromStringAndSize


cdef extern from "math.h" nogil:
    bint isnan(long double x)
    bint isinf(long double x)


cdef extern from "stdlib.h" nogil:
    long double strtold(const char *text, char **end)


cdef extern from *:
    """
    #ifndef SHARDKV_SOURCE_SHA256
    #define SHARDKV_SOURCE_SHA256 ""
    #endif
    """
    const char *SHARDKV_SOURCE_SHA256


SOURCE_SHA256 = SHARDKV_SOURCE_SHA256.decode()  # of numbers.pyx when it was compiled (native.py)


cpdef object add_long_doubles(bytes current, bytes increment):
    """current + increment, each read as strtold reads it, as Redis prints the sum; None if the
    sum is NaN or infinite."""
    cdef long double value = strtold(current, NULL) + strtold(increment, NULL)
    cdef char buf[5184]
    cdef int length
    cdef char *end
    if isnan(value) or isinf(value):
        return None
    length = snprintf(buf, sizeof(buf), "%.17Lf", value)
    if length <= 0 or length >= <int> sizeof(buf):
        raise OverflowError("a long double wider than its buffer")
    if strchr(buf, 46) != NULL:  # '.': drop trailing zeros, then a bare point
        end = buf + length - 1
        while end[0] == 48:  # '0'
            end -= 1
            length -= 1
        if end[0] == 46:
            length -= 1
    if length == 2 and buf[0] == 45 and buf[1] == 48:  # "-0"
        return b"0"
    return PyBytes_FromStringAndSize(buf, length)


cpdef bint is_infinite(bytes text):
    """Whether text, read as strtold reads it, is an infinity as a long double (1e400 is not)."""
    return isinf(strtold(text, NULL))
