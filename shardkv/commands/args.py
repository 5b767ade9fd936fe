"""Typed argument conversion with Redis's exact errors, and the context a keyed handler gets."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from shardkv.errors import NOT_FLOAT, NOT_INTEGER, CommandError
from shardkv.limits import Limits
from shardkv.store import Store

INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1
_INT_RE = re.compile(rb"-?[1-9][0-9]{0,19}|0")


@dataclass(slots=True)
class ShardCtx:
    """What a keyed command handler sees: one shard, one db, the client's protocol, the time."""

    store: Store
    db: int
    proto: int
    now_ms: int
    limits: Limits
    blocks: list[int] | None = None  # blocks reserved for this write by a transaction's prepare


def parse_int(raw: bytes, error: str = NOT_INTEGER) -> int:
    """A signed 64-bit integer written the way Redis's string2ll accepts it."""
    if not _INT_RE.fullmatch(raw):
        raise CommandError(error)
    n = int(raw)
    if not INT64_MIN <= n <= INT64_MAX:
        raise CommandError(error)
    return n


def maybe_int(raw: bytes) -> int | None:
    if not _INT_RE.fullmatch(raw):
        return None
    n = int(raw)
    return n if INT64_MIN <= n <= INT64_MAX else None


def parse_float(raw: bytes) -> float:
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise CommandError(NOT_FLOAT) from None
    if not text or text != text.strip() or "_" in text:
        raise CommandError(NOT_FLOAT)
    try:
        value = float(text)
    except ValueError:
        raise CommandError(NOT_FLOAT) from None
    if math.isnan(value):
        raise CommandError(NOT_FLOAT)
    return value


def upper(raw: bytes) -> bytes:
    return raw.upper()
