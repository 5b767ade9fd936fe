"""FUNCTION DUMP / RESTORE payloads, in Redis 7.0's format.

A payload is, for each library, the opcode byte 0xF5 and the library's code as an RDB string;
then the RDB version (10) as 2 bytes little-endian; then a CRC-64 (Jones polynomial, reflected,
init 0, no final xor) of everything before it, 8 bytes little-endian.  An RDB string is its length
(RDB length encoding) and its bytes, or an LZF-compressed form (0xC3, compressed length, length,
data).  shardkv writes the plain form (Redis compresses strings over 20 bytes when that saves 4),
and reads both, so payloads travel both ways.
"""

from __future__ import annotations

import struct

FUNCTION_OPCODE = 0xF5
RDB_VERSION = 10
_CRC_POLY = 0x95AC9329AC4BC9B5  # 0xad93d23594c935a9, reflected


def _crc_table() -> list[int]:
    table = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ _CRC_POLY if crc & 1 else crc >> 1
        table.append(crc)
    return table


_TABLE = _crc_table()


def crc64(data: bytes, crc: int = 0) -> int:
    table = _TABLE
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc


def encode_length(n: int) -> bytes:
    if n < 64:
        return bytes((n,))
    if n < 16384:
        return bytes((0x40 | n >> 8, n & 0xFF))
    if n <= 0xFFFFFFFF:
        return b"\x80" + struct.pack(">I", n)
    return b"\x81" + struct.pack(">Q", n)


def dump(codes: list[bytes]) -> bytes:
    body = b"".join(bytes((FUNCTION_OPCODE,)) + encode_length(len(c)) + c for c in codes)
    body += struct.pack("<H", RDB_VERSION)
    return body + struct.pack("<Q", crc64(body))


class BadPayload(ValueError):
    pass


def restore(payload: bytes) -> list[bytes]:
    """The libraries' code in a payload; BadPayload if its version or checksum is wrong, or it
    cannot be read."""
    if len(payload) < 10:
        raise BadPayload("short")
    body, footer = payload[:-8], payload[-8:]
    (version,) = struct.unpack_from("<H", payload, len(payload) - 10)
    if version > RDB_VERSION or struct.unpack("<Q", footer)[0] != crc64(body):
        raise BadPayload("version or checksum")
    data = body[:-2]
    codes = []
    pos = 0
    while pos < len(data):
        if data[pos] != FUNCTION_OPCODE:
            raise BadPayload("opcode")
        code, pos = _read_string(data, pos + 1)
        codes.append(code)
    return codes


def _read_length(data: bytes, pos: int) -> tuple[int, int, bool]:
    """(length, next position, is an encoded value rather than a length)."""
    first = data[pos]
    kind = first >> 6
    if kind == 0:
        return first & 0x3F, pos + 1, False
    if kind == 1:
        return (first & 0x3F) << 8 | data[pos + 1], pos + 2, False
    if first == 0x80:
        return struct.unpack_from(">I", data, pos + 1)[0], pos + 5, False
    if first == 0x81:
        return struct.unpack_from(">Q", data, pos + 1)[0], pos + 9, False
    if kind == 3:
        return first & 0x3F, pos + 1, True
    raise BadPayload("length")


def _read_string(data: bytes, pos: int) -> tuple[bytes, int]:
    n, pos, encoded = _read_length(data, pos)
    if not encoded:
        if pos + n > len(data):
            raise BadPayload("string")
        return data[pos : pos + n], pos + n
    if n == 0:  # an 8-bit integer
        return b"%d" % struct.unpack_from("<b", data, pos)[0], pos + 1
    if n == 1:
        return b"%d" % struct.unpack_from("<h", data, pos)[0], pos + 2
    if n == 2:
        return b"%d" % struct.unpack_from("<i", data, pos)[0], pos + 4
    if n == 3:  # LZF
        clen, pos, _ = _read_length(data, pos)
        length, pos, _ = _read_length(data, pos)
        return lzf_decompress(data[pos : pos + clen], length), pos + clen
    raise BadPayload("encoding")


def lzf_decompress(src: bytes, length: int) -> bytes:
    """liblzf's format: literal runs (ctrl < 32: ctrl+1 bytes) and back references (length
    ctrl >> 5, plus a byte when that is 7; offset from the low 5 bits and the next byte)."""
    out = bytearray()
    i = 0
    while i < len(src):
        ctrl = src[i]
        i += 1
        if ctrl < 32:
            out += src[i : i + ctrl + 1]
            i += ctrl + 1
            continue
        n = ctrl >> 5
        if n == 7:
            n += src[i]
            i += 1
        ref = len(out) - ((ctrl & 0x1F) << 8) - src[i] - 1
        i += 1
        if ref < 0:
            raise BadPayload("lzf")
        for k in range(n + 2):
            out.append(out[ref + k])
    if len(out) != length:
        raise BadPayload("lzf length")
    return bytes(out)


__all__ = ["BadPayload", "crc64", "dump", "restore"]
