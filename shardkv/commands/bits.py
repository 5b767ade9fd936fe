"""Bit commands over string values: SETBIT GETBIT BITCOUNT BITPOS BITOP BITFIELD BITFIELD_RO.

Bit 0 is the most significant bit of the first byte, as in Redis.  Whole-value work (counting,
searching, BITOP) goes through `int.from_bytes` and `bytes.lstrip`, which run in C.
"""

from __future__ import annotations

from dataclasses import dataclass

from shardkv import errors, protocol
from shardkv.commands.across import CrossShard
from shardkv.commands.args import ShardCtx, parse_int
from shardkv.commands.notify import GENERIC, STRING, notify
from shardkv.commands.table import command
from shardkv.errors import CommandError
from shardkv.layout import STRING_RAW, TYPE_STRING

BIT_OFFSET_ERROR = "ERR bit offset is not an integer or out of range"
BITFIELD_TYPE_ERROR = ("ERR Invalid bitfield type. Use something like i16 u8. Note that u64 is not supported "
                       "but i64 is.")


def _value(ctx: ShardCtx, key: bytes) -> tuple[tuple[int, int, int], bytes | None]:
    found = ctx.store.find(ctx.db, key, ctx.now_ms)
    if not found[0]:
        return found, None
    if ctx.store.type_of(found[0]) != TYPE_STRING:
        raise CommandError(errors.WRONGTYPE)
    return found, ctx.store.string_value(found[0])


def _store(ctx: ShardCtx, key: bytes, value: bytes, found: tuple[int, int, int]) -> None:
    expire_ms = ctx.store.expire_of(found[0]) if found[0] else 0
    ctx.store.put(ctx.db, key, TYPE_STRING | STRING_RAW, value, expire_ms, found)  # edited in place


def bit_offset(ctx: ShardCtx, raw: bytes, hash_bits: int = 0) -> int:
    """A bit offset within proto-max-bulk-len bytes; with hash_bits, '#N' means N * hash_bits."""
    use_hash = hash_bits > 0 and raw.startswith(b"#")
    offset = parse_int(raw[1:] if use_hash else raw, BIT_OFFSET_ERROR)
    if use_hash:
        offset *= hash_bits
    if offset < 0 or offset >> 3 >= ctx.limits.value_bytes_max:
        raise CommandError(BIT_OFFSET_ERROR)
    return offset


@command("setbit", 4, "write denyoom", keys=(1, 1, 1), group="bitmap",
         summary="Sets or clears the bit at offset in the string value stored at key")
def setbit(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    offset = bit_offset(ctx, argv[2])
    if argv[3] not in (b"0", b"1"):
        raise CommandError("ERR bit is not an integer or out of range")
    found, old = _value(ctx, argv[1])
    buf = bytearray(old or b"")
    byte = offset >> 3
    if len(buf) <= byte:
        buf.extend(bytes(byte + 1 - len(buf)))
    mask = 0x80 >> (offset & 7)
    previous = 1 if buf[byte] & mask else 0
    if argv[3] == b"1":
        buf[byte] |= mask
    else:
        buf[byte] &= ~mask & 0xFF
    if old is None or bytes(buf) != old:  # Redis's test: created, grown, or the bit changed
        _store(ctx, argv[1], bytes(buf), found)
        notify(ctx, STRING, b"setbit", argv[1])
    elif not ctx.store.string_is_raw(found[0]):
        ctx.store.mark_string_raw(found[0])  # no change, but Redis has made the value raw
    return protocol.integer(previous)


@command("getbit", 3, "readonly fast", keys=(1, 1, 1), group="bitmap",
         summary="Returns the bit value at offset in the string value stored at key")
def getbit(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    offset = bit_offset(ctx, argv[2])
    _, value = _value(ctx, argv[1])
    if value is None or offset >> 3 >= len(value):
        return protocol.ZERO
    return protocol.ONE if value[offset >> 3] & (0x80 >> (offset & 7)) else protocol.ZERO


def bit_range(length: int, start: int, end: int, in_bits: bool) -> tuple[int, int]:
    """Redis's clamping of a [start, end] range (bytes or bits) over a value of `length` bytes,
    returned in bits; an empty range has start > end."""
    total = length * 8 if in_bits else length
    if start < 0:
        start += total
    if end < 0:
        end += total
    start, end = max(start, 0), max(end, 0)
    end = min(end, total - 1)
    if in_bits:
        return start, end
    return start * 8, end * 8 + 7


def _unit(raw: bytes) -> bool:
    u = raw.upper()
    if u == b"BIT":
        return True
    if u == b"BYTE":
        return False
    raise CommandError(errors.SYNTAX)


def _bits_between(value: bytes, first: int, last: int) -> int:
    """The bits first..last (inclusive) of value as an integer, most significant first."""
    chunk = value[first >> 3 : (last >> 3) + 1]
    n = int.from_bytes(chunk, "big")
    n >>= 7 - (last & 7)
    return n & ((1 << (last - first + 1)) - 1)


@command("bitcount", -2, "readonly", keys=(1, 1, 1), group="bitmap", summary="Count set bits in a string")
def bitcount(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    _, value = _value(ctx, argv[1])
    if value is None:
        return protocol.ZERO
    if len(argv) == 2:
        return protocol.integer(int.from_bytes(value, "big").bit_count())
    if len(argv) not in (4, 5):
        raise CommandError(errors.SYNTAX)
    start, end = parse_int(argv[2]), parse_int(argv[3])
    if start < 0 and end < 0 and start > end:  # as in Redis: 0 before the unit is read
        return protocol.ZERO
    in_bits = _unit(argv[4]) if len(argv) == 5 else False
    first, last = bit_range(len(value), start, end, in_bits)
    if first > last:
        return protocol.ZERO
    return protocol.integer(_bits_between(value, first, last).bit_count())


@command("bitpos", -3, "readonly", keys=(1, 1, 1), group="bitmap",
         summary="Find first bit set or clear in a string")
def bitpos(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    bit = parse_int(argv[2])
    if bit not in (0, 1):
        raise CommandError("ERR The bit argument must be 1 or 0.")
    _, value = _value(ctx, argv[1])
    if value is None:
        return protocol.integer(-1 if bit else 0)
    if len(argv) > 6:
        raise CommandError(errors.SYNTAX)
    end_given = len(argv) >= 5
    start = parse_int(argv[3]) if len(argv) >= 4 else 0  # Redis's order: start, unit, end
    in_bits = _unit(argv[5]) if len(argv) == 6 else False
    end = parse_int(argv[4]) if end_given else -1
    first, last = bit_range(len(value), start, end, in_bits)
    if first > last:
        return protocol.integer(-1)
    width = last - first + 1
    field = _bits_between(value, first, last)
    if bit == 0:
        field = ~field & ((1 << width) - 1)  # look for the first 1 of the complement
    if field:
        return protocol.integer(first + width - field.bit_length())
    if bit == 0 and not end_given:
        return protocol.integer(last + 1)  # all ones: the first clear bit is just past the end
    return protocol.integer(-1)


def _bitop_check(argv: list[bytes]) -> bytes:
    op = argv[1].upper()
    if op not in (b"AND", b"OR", b"XOR", b"NOT"):
        raise CommandError(errors.SYNTAX)
    if op == b"NOT" and len(argv) != 4:
        raise CommandError("ERR BITOP NOT must be called with a single source key.")
    return op


async def bitop_across(tx: CrossShard, argv: list[bytes]) -> bytes:
    """BITOP with its keys on several shards: read the sources, write the result."""
    op = _bitop_check(argv)  # a CommandError here becomes the reply (router.run_transaction)
    values = []
    for key in argv[3:]:
        v = await tx.value(key)
        if isinstance(v, str):  # an error reply: WRONGTYPE
            return protocol.error(errors.WRONGTYPE)
        values.append(v if isinstance(v, bytes) else b"")
    result = bitop_result(op, values)
    dest = tx.shard_of(argv[2])
    reply = await tx.apply(dest, [b"set", argv[2], result] if result else [b"del", argv[2]])
    return reply if reply.startswith(b"-") else protocol.integer(len(result))


@command("bitop", -4, "write denyoom", keys=(2, -1, 1), group="bitmap",
         summary="Perform bitwise operations between strings", across=lambda tx, argv: bitop_across(tx, argv))
def bitop(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    op = _bitop_check(argv)
    result = bitop_result(op, [_value(ctx, key)[1] or b"" for key in argv[3:]])
    dest = ctx.store.find(ctx.db, argv[2], ctx.now_ms)
    if not result:
        if dest[0]:
            ctx.store.delete(ctx.db, argv[2], ctx.now_ms)
            notify(ctx, GENERIC, b"del", argv[2])
        return protocol.ZERO
    ctx.store.put(ctx.db, argv[2], TYPE_STRING | STRING_RAW, result, 0, dest)  # built in place
    notify(ctx, STRING, b"set", argv[2])
    return protocol.integer(len(result))


def bitop_result(op: bytes, values: list[bytes]) -> bytes:
    size = max(len(v) for v in values)
    if size == 0:
        return b""
    ints = [int.from_bytes(v.ljust(size, b"\0"), "big") for v in values]
    result = ints[0]
    for n in ints[1:]:
        if op == b"AND":
            result &= n
        elif op == b"OR":
            result |= n
        else:
            result ^= n
    if op == b"NOT":
        result = ~result & ((1 << (8 * size)) - 1)
    return result.to_bytes(size, "big")


@dataclass(frozen=True, slots=True)
class FieldOp:
    kind: bytes  # GET SET INCRBY
    signed: bool
    bits: int
    offset: int
    value: int
    overflow: bytes  # WRAP SAT FAIL


def _field_type(raw: bytes) -> tuple[bool, int]:
    if raw[:1] not in (b"i", b"u", b"I", b"U"):
        raise CommandError(BITFIELD_TYPE_ERROR)
    signed = raw[:1] in (b"i", b"I")
    try:
        bits = int(raw[1:]) if raw[1:].isdigit() else -1
    except ValueError:
        bits = -1
    if bits < 1 or bits > (64 if signed else 63):
        raise CommandError(BITFIELD_TYPE_ERROR)
    return signed, bits


def parse_bitfield(ctx: ShardCtx, argv: list[bytes], read_only: bool) -> list[FieldOp]:
    ops: list[FieldOp] = []
    overflow = b"WRAP"
    i = 2
    while i < len(argv):
        sub = argv[i].upper()
        left = len(argv) - i - 1
        if sub == b"GET" and left >= 2:
            signed, bits = _field_type(argv[i + 1])
            ops.append(FieldOp(b"GET", signed, bits, bit_offset(ctx, argv[i + 2], bits), 0, overflow))
            i += 3
        elif sub in (b"SET", b"INCRBY") and left >= 3:
            if read_only:
                raise CommandError("ERR BITFIELD_RO only supports the GET subcommand")
            signed, bits = _field_type(argv[i + 1])
            offset = bit_offset(ctx, argv[i + 2], bits)
            ops.append(FieldOp(sub, signed, bits, offset, parse_int(argv[i + 3]), overflow))
            i += 4
        elif sub == b"OVERFLOW" and left >= 1:
            if read_only:
                raise CommandError("ERR BITFIELD_RO only supports the GET subcommand")
            overflow = argv[i + 1].upper()
            if overflow not in (b"WRAP", b"SAT", b"FAIL"):
                raise CommandError("ERR Invalid OVERFLOW type specified")
            i += 2
        else:
            raise CommandError(errors.SYNTAX)
    return ops


def _read_field(buf: bytearray, op: FieldOp) -> int:
    last = op.offset + op.bits - 1
    chunk = bytes(buf[op.offset >> 3 : (last >> 3) + 1]).ljust((last >> 3) - (op.offset >> 3) + 1, b"\0")
    n = _bits_between(chunk, op.offset & 7, (op.offset & 7) + op.bits - 1)
    if op.signed and n >> (op.bits - 1):
        n -= 1 << op.bits
    return n


def _write_field(buf: bytearray, op: FieldOp, value: int) -> None:
    first_byte, last_byte = op.offset >> 3, (op.offset + op.bits - 1) >> 3
    if len(buf) <= last_byte:
        buf.extend(bytes(last_byte + 1 - len(buf)))
    span = last_byte - first_byte + 1
    shift = span * 8 - (op.offset & 7) - op.bits
    mask = ((1 << op.bits) - 1) << shift
    current = int.from_bytes(buf[first_byte : last_byte + 1], "big")
    current = (current & ~mask) | ((value & ((1 << op.bits) - 1)) << shift)
    buf[first_byte : last_byte + 1] = current.to_bytes(span, "big")


def _fit(op: FieldOp, value: int) -> int | None:
    """value brought into the field's range by the op's overflow policy (None: FAIL)."""
    lo, hi = (-(1 << (op.bits - 1)), (1 << (op.bits - 1)) - 1) if op.signed else (0, (1 << op.bits) - 1)
    if lo <= value <= hi:
        return value
    if op.overflow == b"FAIL":
        return None
    if op.overflow == b"SAT":
        return hi if value > hi else lo
    value &= (1 << op.bits) - 1
    if op.signed and value >> (op.bits - 1):
        value -= 1 << op.bits
    return value


def _bitfield(ctx: ShardCtx, argv: list[bytes], read_only: bool) -> bytes:
    ops = parse_bitfield(ctx, argv, read_only)
    found, old = _value(ctx, argv[1])
    buf = bytearray(old or b"")
    writes = [op for op in ops if op.kind != b"GET"]
    if writes:  # as in Redis, the string grows to the farthest field written, even if a write FAILs
        size = max(op.offset + op.bits - 1 for op in writes) // 8 + 1
        buf.extend(bytes(max(0, size - len(buf))))
    replies = []
    written = False  # a SET or INCRBY that did not FAIL
    for op in ops:
        current = _read_field(buf, op)
        if op.kind == b"GET":
            replies.append(protocol.integer(current))
            continue
        target = op.value if op.kind == b"SET" else current + op.value
        if op.kind == b"SET" and not op.signed and target < 0:
            target += 1 << 64  # Redis reads the value as a uint64: past the field's top (SAT: max)
        fitted = _fit(op, target)
        if fitted is None:
            replies.append(protocol.null(ctx.proto))
            continue
        _write_field(buf, op, fitted)
        written = True
        replies.append(protocol.integer(current if op.kind == b"SET" else fitted))
    if (old is None and writes) or (old is not None and bytes(buf) != old):  # unchanged: no write
        _store(ctx, argv[1], bytes(buf), found)
        if written:  # Redis counts a change per write that grew the string or changed its field
            notify(ctx, STRING, b"setbit", argv[1])
    elif writes and old is not None and not ctx.store.string_is_raw(found[0]):
        ctx.store.mark_string_raw(found[0])  # no change, but a writing BITFIELD made the value raw
    return protocol.array(replies)


@command("bitfield", -2, "write denyoom", keys=(1, 1, 1), group="bitmap",
         summary="Perform arbitrary bitfield integer operations on strings")
def bitfield(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    return _bitfield(ctx, argv, read_only=False)


@command("bitfield_ro", -2, "readonly fast", keys=(1, 1, 1), group="bitmap",
         summary="Perform arbitrary bitfield integer operations on strings. Read-only variant of BITFIELD")
def bitfield_ro(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    return _bitfield(ctx, argv, read_only=True)
