# The compiled messages between workers' declarations (hop.pyx), for other compiled modules (fast.pyx).
from libc.stdint cimport uint8_t, uint32_t, uint64_t


cdef enum:  # message kinds
    K_REQ = 1
    K_REP = 2
    K_LOCK = 3
    K_LOCKED = 4
    K_APPLY = 5
    K_UNLOCK = 6
    K_RESET = 7
    K_WATCH = 8
    K_UNWATCH = 9
    K_READY = 10


cdef class Pending:
    cdef public object value  # bytes once resolved
    cdef public object conn  # what is told when it resolves (reply_ready), or None
    cdef public bint barrier
    cdef public object callback  # for replies the router itself awaits
    cpdef void resolve(self, bytes value) except *


cdef class Ring:
    cdef uint8_t[::1] view  # keeps the mapping's buffer alive while the pointers are used
    cdef uint8_t *data
    cdef uint64_t *head
    cdef uint64_t *tail
    cdef readonly uint64_t capacity
    cdef uint64_t mask
    cdef readonly Py_ssize_t fragment_bytes_max
    cdef bytearray partial  # consumer: the fragments of a message not yet whole

    cdef int check_open(self) except -1
    cdef bint push(self, const uint8_t *p, Py_ssize_t n, bint more) except -1
    cdef int take(self, list out, Py_ssize_t records_max) except -1
    cpdef bint has_data(self)


cdef class Outbox:
    cdef uint8_t *buf
    cdef Py_ssize_t size, room, sent, left

    cdef int add(self, uint8_t kind, uint32_t rid, const uint8_t *head, Py_ssize_t head_n,
                 const uint8_t *body, Py_ssize_t n) except -1
    cdef bint push_to(self, Ring ring) except -1
    cdef bint empty(self) noexcept


cdef class Peers:
    cdef readonly int me, workers
    cdef readonly list others
    cdef object loop
    cdef list doorbells
    cdef list req_out, rep_out, req_in, rep_in, box_req, box_rep, waiting
    cdef bytearray bells
    cdef uint32_t next_id
    cdef bint flush_scheduled, retry_scheduled
    cdef bytes restarted_reply

    cdef int check_peer(self, int w) except -1
    cdef uint32_t new_id(self) noexcept
    cdef int queue(self, int target, uint8_t kind, uint32_t rid, const uint8_t *head, Py_ssize_t head_n,
                   const uint8_t *body, Py_ssize_t n) except -1
    cdef int forward(self, int target, uint8_t proto, uint8_t db, const uint8_t *frame, Py_ssize_t n,
                     Pending pending) except -1
    cpdef void send(self, int target, int kind, uint32_t rid, bytes body) except *
    cpdef list take(self, int source, bint replies)
