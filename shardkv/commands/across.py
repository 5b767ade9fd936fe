"""What a cross-shard command body sees: its shards are locked; `apply` runs a command on one.

A multi-key command whose keys live on several shards and whose parts cannot simply be merged
(RENAME, COPY, MSETNX, BITOP, LCS) declares an `across` body in the command table.  The router
locks every shard the keys live on (ascending order), then awaits the body, then unlocks: the
body's reads and writes are atomic for every other client.  A CommandError the body raises (a
bad argument) becomes the client's error reply, as in a handler.
"""

from __future__ import annotations

import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from shardkv import protocol
from shardkv.limits import Limits
from shardkv.protocol import read_reply

_BLOB_HEAD = struct.Struct("<IQ")  # type (with STRING_RAW), expire-at ms; then the record's value area


@dataclass(slots=True)
class CrossShard:
    apply: Callable[[int, list[bytes]], Awaitable[bytes]]
    shard_of: Callable[[bytes], int]
    db: int
    proto: int
    limits: Limits

    async def value(self, key: bytes) -> object:
        """GET key on its shard, decoded (bytes, None, or a protocol.ReplyError)."""
        return read_reply(await self.apply(self.shard_of(key), [b"get", key]))[0]


def pack_blob(kind: int, expire_ms: int, value_area: bytes) -> bytes:
    return _BLOB_HEAD.pack(kind, expire_ms) + value_area


def unpack_blob(blob: bytes) -> tuple[int, int, bytes]:
    kind, expire_ms = _BLOB_HEAD.unpack_from(blob)
    return kind, expire_ms, blob[_BLOB_HEAD.size :]


def is_error(reply: bytes) -> bool:
    return reply.startswith(b"-")


__all__ = ["CrossShard", "is_error", "pack_blob", "protocol", "unpack_blob"]
