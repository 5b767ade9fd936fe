"""Keyspace notifications (`notify-keyspace-events`): the event classes, and how a command emits one.

A keyed handler calls `notify(ctx, CLASS, b"event", key)` after each change Redis signals; the
router publishes what the command emitted once it has run (`__keyspace@<db>__:<key>` with the
event as message, `__keyevent@<db>__:<event>` with the key), to subscribers on every worker.
Nothing is collected unless the classes are enabled (CONFIG SET notify-keyspace-events), so a
server with notifications off pays one integer test per change.
"""

from __future__ import annotations

from shardkv.commands.args import ShardCtx

KEYSPACE, KEYEVENT, GENERIC, STRING, LIST, SET, HASH, ZSET, EXPIRED, EVICTED, STREAM, KEY_MISS = (
    1 << i for i in range(12))
MODULE, NEW = 1 << 13, 1 << 14
ALL = GENERIC | STRING | LIST | SET | HASH | ZSET | EXPIRED | EVICTED | STREAM | MODULE  # "A"

_LETTERS = {"g": GENERIC, "$": STRING, "l": LIST, "s": SET, "h": HASH, "z": ZSET, "x": EXPIRED, "e": EVICTED,
            "t": STREAM, "d": MODULE, "n": NEW}
_PARSE = {**_LETTERS, "A": ALL, "K": KEYSPACE, "E": KEYEVENT, "m": KEY_MISS}
INVALID_CLASS = "Invalid event class character. Use 'Ag$lshzxeKEtmdn'."


def parse_flags(text: str) -> int | None:
    """The classes of a notify-keyspace-events value; None if a character is not a class."""
    flags = 0
    for ch in text:
        if ch not in _PARSE:
            return None
        flags |= _PARSE[ch]
    return flags


def format_flags(flags: int) -> str:
    """CONFIG GET's spelling of the classes, in Redis's order."""
    out = "A" if flags & ALL == ALL else "".join(ch for ch, bit in _LETTERS.items() if flags & bit)
    return out + "K" * bool(flags & KEYSPACE) + "E" * bool(flags & KEYEVENT) + "m" * bool(flags & KEY_MISS)


def notify(ctx: ShardCtx, cls: int, event: bytes, key: bytes) -> None:
    """Emit an event of class cls for key in the command's db (if that class is enabled)."""
    store = ctx.store
    if store.event_flags & cls:
        store.events.append((ctx.db, event, key))


def messages(flags: int, events: list[tuple[int, bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The (channel, message) pairs to publish for a command's events."""
    out = []
    for db, event, key in events:
        if flags & KEYSPACE:
            out.append((b"__keyspace@%d__:%s" % (db, key), event))
        if flags & KEYEVENT:
            out.append((b"__keyevent@%d__:%s" % (db, event), key))
    return out
