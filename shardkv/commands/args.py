"""Typed argument conversion with Redis's exact errors, and the context a keyed handler gets."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from shardkv.errors import DB_INDEX, NAN_OR_INFINITY, NOT_FLOAT, NOT_INTEGER, CommandError
from shardkv.limits import Limits
from shardkv.native import add_long_doubles, parse_integer
from shardkv.stats import Stats
from shardkv.store import Store

INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1


@dataclass(slots=True)
class ShardCtx:
    """What a keyed command handler sees: one shard, one db, the client's protocol, the time."""

    store: Store
    db: int
    proto: int
    now_ms: int
    limits: Limits
    stats: Stats  # the shared counters and runtime parameters (CONFIG SET)
    blocks: list[int] | None = None  # blocks reserved for this write by a transaction's prepare


def encode_optional(value: bytes | None) -> bytes:
    """An optional argument of an internal command, at a fixed position: b"" is None."""
    return b"" if value is None else b"=" + value


def decode_optional(raw: bytes) -> bytes | None:
    return raw[1:] if raw else None


def parse_int(raw: bytes, error: str = NOT_INTEGER) -> int:
    """A signed 64-bit integer written the way Redis's string2ll accepts it."""
    n = parse_integer(raw)
    if n is None:
        raise CommandError(error)
    return n


INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1


def parse_int32(raw: bytes, error: str | None = None) -> int:
    """A C int as Redis reads one: past its range, `error` or Redis's range error."""
    n = parse_int(raw, error or NOT_INTEGER)
    if not INT32_MIN <= n <= INT32_MAX:
        raise CommandError(error or f"ERR value is out of range, value must between {INT32_MIN} and {INT32_MAX}")
    return n


def db_index(raw: bytes, databases: int) -> int:
    """A database as Redis reads it for SELECT, MOVE and COPY: a C int, then one of the databases."""
    db = parse_int32(raw)
    if not 0 <= db < databases:
        raise CommandError(DB_INDEX)
    return db


def parse_cursor(raw: bytes) -> int:
    """A SCAN-family cursor as Redis reads it (strtoul): decimal, an optional sign, a negative
    number wrapping around 2**64, the empty string as 0, else Redis's error."""
    if not raw:
        return 0
    digits = raw[1:] if raw[:1] in (b"+", b"-") else raw
    if not digits.isdigit() or len(digits) > 20 or int(digits) >= 1 << 64:
        raise CommandError("ERR invalid cursor")
    n = int(digits)
    return (-n) % (1 << 64) if raw[:1] == b"-" else n


def maybe_int(raw: bytes) -> int | None:
    """raw as Redis's string2ll reads it, or None."""
    return parse_integer(raw)


LONG_DOUBLE_CHARS_MAX = 5 * 1024  # Redis's MAX_LONG_DOUBLE_CHARS
_LONG_DOUBLE_MAX = Decimal("1.18973149535723176502e4932")
_LONG_DOUBLE_TRUE_MIN = Decimal("3.64519953188247460253e-4951")  # the smallest subnormal


def parse_long_double(raw: bytes, error: str = NOT_FLOAT) -> float:
    """A number as Redis reads a long double (strtold, whole string, INCRBYFLOAT and timeouts):
    no space around it, no NaN; `inf` itself is a number, but a value past the long double's
    range, or so small that it reads as 0, is `error`.  Returned as the nearest double."""
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise CommandError(error) from None
    if not text or len(text) > LONG_DOUBLE_CHARS_MAX or text != text.strip() or "_" in text:
        raise CommandError(error)
    try:
        if text.lstrip("+-")[:2].lower() == "0x":
            value, exact = float.fromhex(text), None
        else:
            value, exact = float(text), Decimal(text)
    except (ValueError, ArithmeticError):
        raise CommandError(error) from None
    if math.isnan(value):
        raise CommandError(error)
    if exact is not None and exact.is_finite() and (
            abs(exact) > _LONG_DOUBLE_MAX or exact and abs(exact) < _LONG_DOUBLE_TRUE_MIN / 2):
        raise CommandError(error)  # strtold's ERANGE, at infinity or at zero
    return value


def add_to_long_double(old: bytes | None, increment: bytes, old_error: str) -> bytes:
    """INCRBYFLOAT's and HINCRBYFLOAT's sum, the increment already checked: the current value
    (None: 0) read as a long double (else `old_error`), the sum computed and printed as Redis does
    (native numbers.pyx), an error if it is NaN or infinite."""
    if old is not None:
        try:
            parse_long_double(old)
        except CommandError:
            raise CommandError(old_error) from None
    text = add_long_doubles(old if old is not None else b"0", increment)
    if text is None:
        raise CommandError(NAN_OR_INFINITY)
    return text


def glob_matcher(pattern: bytes) -> Callable[[bytes], bool]:
    """A matcher for Redis's glob (stringmatch): * ? [abc] [^a] [a-z] and backslash escapes.

    Compiled to a regex when it has at most one '*'; with more, a regex can backtrack
    exponentially ("a*a*a*...b"), so those use a star-backtracking matcher that is O(n * m)."""
    if pattern.count(b"*") <= 1:
        regex = _glob_regex(pattern)
        return lambda key: regex.match(key) is not None
    tokens = [_glob_regex(t) if t != b"*" else None for t in _glob_tokens(pattern)]

    def match(key: bytes) -> bool:
        ti = ki = 0
        star_ti, star_ki = -1, 0
        n = len(key)
        while ki < n:
            if ti < len(tokens) and tokens[ti] is None:  # '*': remember where to come back to
                star_ti, star_ki = ti, ki
                ti += 1
                continue
            tok = tokens[ti] if ti < len(tokens) else None
            if tok is not None and tok.match(key, ki, ki + 1):
                ti += 1
                ki += 1
            elif star_ti >= 0:
                ti = star_ti + 1
                star_ki += 1
                ki = star_ki
            else:
                return False
        return all(t is None for t in tokens[ti:])

    return match


def _glob_tokens(pattern: bytes) -> list[bytes]:
    """Split a glob into one-byte units: '*', '?', a [class], an escaped or plain byte."""
    out: list[bytes] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == 92 and i + 1 < n:
            out.append(pattern[i : i + 2])
            i += 2
        elif c == 91:
            j = i + 1
            while j < n and pattern[j] != 93:
                j += 2 if pattern[j] == 92 else 1
            out.append(pattern[i : j + 1])
            i = j + 1
        elif c == 42:
            if not out or out[-1] != b"*":
                out.append(b"*")
            i += 1
        else:
            out.append(pattern[i : i + 1])
            i += 1
    return out


def _glob_regex(pattern: bytes) -> re.Pattern[bytes]:
    out = bytearray()
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == 42:  # *
            out += b".*"
        elif c == 63:  # ?
            out += b"."
        elif c == 92 and i + 1 < n:  # \x
            i += 1
            out += re.escape(pattern[i : i + 1])
        elif c == 91:  # [
            j = i + 1
            negate = j < n and pattern[j] == 94
            if negate:
                j += 1
            items = bytearray()
            while j < n and pattern[j] != 93:
                if pattern[j] == 92 and j + 1 < n:
                    j += 1
                    items += re.escape(pattern[j : j + 1])
                elif j + 2 < n and pattern[j + 1] == 45 and pattern[j + 2] != 93:  # a-z
                    lo, hi = sorted((pattern[j], pattern[j + 2]))
                    items += re.escape(bytes([lo])) + b"-" + re.escape(bytes([hi]))
                    j += 2
                else:
                    items += re.escape(pattern[j : j + 1])
                j += 1
            if items:
                out += b"[" + (b"^" if negate else b"") + bytes(items) + b"]"
            else:
                out += b"." if negate else b"(?!)"  # [^] matches any byte, [] none
            i = j
        else:
            out += re.escape(pattern[i : i + 1])
        i += 1
    return re.compile(bytes(out) + rb"\Z", re.S)
