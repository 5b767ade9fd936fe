"""RESP framing and reply encoding; no sockets here.

`parse_requests` (compiled: resp.pyx) cuts complete commands (multibulk or inline) off the front
of a buffer and reports how much it consumed, how many bytes the next incomplete command needs at
least, or a `ProtocolError` with Redis's exact wording.  Every length is checked against `Limits`
before any byte of it is buffered, so an oversized request is refused from its header.

The encoders build RESP2 or RESP3 replies as bytes.  Strings are stored RESP-encoded in the shard
(see store.py), so GET is a single slice of the segment.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from shardkv.errors import ProtocolError
from shardkv.native import bulk as native_bulk
from shardkv.native import integer as native_integer
from shardkv.native import parse_frames, parse_integer


@dataclass(slots=True)
class ParseResult:
    requests: list[tuple[list[bytes], int, int]]  # argv, start, end within the buffer
    consumed: int  # bytes at the front of the buffer fully parsed
    needed: int  # total bytes of the incomplete command at `consumed`, when known (else 0)
    error: ProtocolError | None = None


def parse_requests(
    buf: bytearray | bytes,
    end: int,
    args_max: int,
    bulk_bytes_max: int,
    requests_max: int = 1 << 30,
    unauthenticated: bool = False,
) -> ParseResult:
    """Parse complete commands in buf[0:end]; stop at the first incomplete one (compiled:
    resp.pyx).  An `unauthenticated` client (a password is set and it has not sent it) gets
    Redis's smaller limits on argument counts and lengths."""
    requests, consumed, needed, error = parse_frames(buf, end, args_max, bulk_bytes_max, requests_max,
                                                     unauthenticated, split_inline, ProtocolError)
    return ParseResult(requests, consumed, needed, error)


# Redis's strict integer syntax (util.c string2ll): an optional '-', then "0" or a digit 1-9 and
# more digits; no '+', spaces, '_', leading zeros or "-0"; a signed 64-bit value.  None otherwise.
string2ll = parse_integer


# An unquoted inline argument, as Redis's sdssplitargs reads one: white space (isspace) before it
# is skipped, and it runs to the next space, tab, CR or LF (so \v and \f inside it are its own).
_INLINE_ARG = re.compile(rb"[ \t\n\r\x0b\x0c]*([^ \t\n\r\x0b\x0c][^ \t\n\r]*)")


def split_inline(line: bytes) -> list[bytes]:
    """Split an inline command as Redis does: spaces separate, quotes group, escapes in "..."."""
    if line.endswith(b"\r"):
        line = line[:-1]
    nul = line.find(b"\0")
    if nul >= 0:
        line = line[:nul]  # Redis splits the line as a C string: it ends at a NUL
    if b'"' not in line and b"'" not in line:
        return _INLINE_ARG.findall(line)
    args: list[bytes] = []
    i, n = 0, len(line)
    while True:
        while i < n and line[i] in b" \t\n\r\v\f":
            i += 1
        if i >= n:
            return args
        cur = bytearray()
        quote = 0
        while True:
            if i >= n:
                if quote:
                    raise ProtocolError("unbalanced quotes in request")
                break
            c = line[i]
            if quote == 34:  # inside "..."
                if c == 92 and i + 3 < n and line[i + 1] == 120 and _is_hex(line[i + 2 : i + 4]):
                    cur.append(int(line[i + 2 : i + 4], 16))
                    i += 3
                elif c == 92 and i + 1 < n:
                    i += 1
                    cur.append({110: 10, 114: 13, 116: 9, 98: 8, 97: 7}.get(line[i], line[i]))
                elif c == 34:
                    if i + 1 < n and line[i + 1] not in b" \t\n\r\v\f":
                        raise ProtocolError("unbalanced quotes in request")
                    quote = 0
                    i += 1
                    break
                else:
                    cur.append(c)
            elif quote == 39:  # inside '...'
                if c == 92 and i + 1 < n and line[i + 1] == 39:
                    i += 1
                    cur.append(39)
                elif c == 39:
                    if i + 1 < n and line[i + 1] not in b" \t\n\r\v\f":
                        raise ProtocolError("unbalanced quotes in request")
                    quote = 0
                    i += 1
                    break
                else:
                    cur.append(c)
            else:
                if c in b" \t\n\r":  # an argument ends there; \v and \f belong to it
                    break
                if c in (34, 39):
                    quote = c
                else:
                    cur.append(c)
            i += 1
        args.append(bytes(cur))


def _is_hex(b: bytes) -> bool:
    return len(b) == 2 and all(c in b"0123456789abcdefABCDEF" for c in b)


def encode_command(argv: list[bytes]) -> bytes:
    """A command as a RESP multibulk (used to forward inline commands to another shard)."""
    parts = [b"*%d\r\n" % len(argv)]
    for a in argv:
        parts.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(parts)


# ------------------------------------------------------------------------- replies

OK = b"+OK\r\n"
PONG = b"+PONG\r\n"
QUEUED = b"+QUEUED\r\n"
ZERO = b":0\r\n"
ONE = b":1\r\n"
EMPTY_ARRAY = b"*0\r\n"
NULL2 = b"$-1\r\n"
NULL3 = b"_\r\n"
NULL_ARRAY2 = b"*-1\r\n"


def error(text: str) -> bytes:
    """An error reply; bytes of the client's that were decoded with surrogateescape go back raw."""
    return b"-" + text.replace("\r", " ").replace("\n", " ").encode("utf-8", "surrogateescape") + b"\r\n"


def protocol_error(error: ProtocolError) -> bytes:
    """The reply to broken framing; a byte quoted from the request goes back as that raw byte,
    as Redis sends it (`got '\\x80'` is one byte, not its UTF-8 form)."""
    text = f"ERR Protocol error: {error.why}".replace("\r", " ").replace("\n", " ")
    return b"-" + text.encode("latin-1") + b"\r\n"


bulk = native_bulk  # a RESP bulk string (compiled: resp.pyx; strings are stored this way too)


def simple(text: str) -> bytes:
    return b"+" + text.encode() + b"\r\n"


integer = native_integer  # an integer reply (compiled: resp.pyx)


def null(proto: int) -> bytes:
    return NULL3 if proto == 3 else NULL2


def null_array(proto: int) -> bytes:
    return NULL3 if proto == 3 else NULL_ARRAY2


def array_header(n: int) -> bytes:
    return b"*%d\r\n" % n


def array(items: list[bytes]) -> bytes:
    """An array of already-encoded replies."""
    return b"*%d\r\n" % len(items) + b"".join(items)


def bulk_array(values: list[bytes]) -> bytes:
    return b"*%d\r\n" % len(values) + b"".join(b"$%d\r\n%s\r\n" % (len(v), v) for v in values)


def map_reply(proto: int, pairs: list[tuple[bytes, bytes]]) -> bytes:
    """A map of already-encoded keys and values: `%` in RESP3, a flat array in RESP2."""
    head = b"%%%d\r\n" % len(pairs) if proto == 3 else b"*%d\r\n" % (2 * len(pairs))
    return head + b"".join(k + v for k, v in pairs)


def set_reply(proto: int, items: list[bytes]) -> bytes:
    head = b"~%d\r\n" % len(items) if proto == 3 else b"*%d\r\n" % len(items)
    return head + b"".join(items)


def verbatim(proto: int, text: bytes) -> bytes:
    if proto == 3:
        return b"=%d\r\ntxt:%s\r\n" % (len(text) + 4, text)
    return bulk(text)


def double(proto: int, value: float) -> bytes:
    text = format_double(value)
    if proto == 3:
        return b",%s\r\n" % text
    return bulk(text)


def format_double(value: float) -> bytes:
    if value == float("inf"):
        return b"inf"
    if value == float("-inf"):
        return b"-inf"
    text = repr(value)
    if text.endswith(".0"):
        text = text[:-2]
    return text.encode()


def boolean(proto: int, value: bool) -> bytes:
    if proto == 3:
        return b"#t\r\n" if value else b"#f\r\n"
    return ONE if value else ZERO


# ------------------------------------------------------- reading replies back (merges)


def read_reply(data: bytes, pos: int = 0) -> tuple[object, int]:
    """Decode one RESP2/RESP3 reply (used to merge the parts of a cross-shard command)."""
    kind = data[pos]
    nl = data.index(b"\r\n", pos)
    head = data[pos + 1 : nl]
    pos = nl + 2
    if kind in (43, 45):  # + -
        return (bytes(head) if kind == 43 else ReplyError(head.decode("utf-8", "surrogateescape"))), pos
    if kind == 58:  # :
        return int(head), pos
    if kind in (36, 61):  # $ =
        n = int(head)
        if n < 0:
            return None, pos
        if pos + n + 2 > len(data):
            raise IndexError("the bulk string is cut short")  # (readers of a stream read more and retry)
        return bytes(data[pos : pos + n]), pos + n + 2
    if kind == 95:  # _
        return None, pos
    if kind in (42, 126, 37, 62):  # * ~ % >
        n = int(head)
        if n < 0:
            return None, pos
        if kind == 37:
            n *= 2
        items = []
        for _ in range(n):
            item, pos = read_reply(data, pos)
            items.append(item)
        return items, pos
    if kind == 44:  # ,
        return float(head), pos
    if kind == 35:  # #
        return head == b"t", pos
    raise ValueError(f"unknown RESP type {chr(kind)!r}")


class ReplyError(str):
    """An error reply read back by read_reply."""
