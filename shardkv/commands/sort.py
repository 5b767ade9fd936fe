"""SORT and SORT_RO over lists and sets, with BY / GET patterns that may name keys on any shard.

When the patterns look other keys up (or STORE writes to another shard) the router runs SORT as
a transaction that locks every shard (`lock_all`), so SORT is atomic as in Redis; otherwise the
owning shard sorts in place.  Both paths share `sort_elements`.
"""

from __future__ import annotations

import functools
import math
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

from shardkv import errors, protocol
from shardkv.collstore import items_of
from shardkv.commands.across import CrossShard, is_error
from shardkv.commands.args import ShardCtx, parse_int
from shardkv.commands.collections import Fields, ReplyBudget, replace
from shardkv.commands.notify import LIST
from shardkv.commands.table import Where, command
from shardkv.errors import CommandError
from shardkv.layout import TYPE_HASH, TYPE_LIST, TYPE_SET, TYPE_STRING
from shardkv.protocol import read_reply

SCORES_ERROR = "ERR One or more scores can't be converted into double"
NULL_BYTES_MIN = 3  # RESP3's null "_\r\n": the least an element of SORT's reply (or a stored one) takes
Lookup = Callable[[bytes, bytes | None], bytes | None]  # key, hash field -> value


@dataclass
class SortOptions:
    by: bytes | None = None
    dont_sort: bool = False
    offset: int = 0
    count: int = -1
    gets: list[bytes] = field(default_factory=list)
    desc: bool = False
    alpha: bool = False
    store: bytes | None = None


def parse_sort(argv: list[bytes], read_only: bool) -> SortOptions:
    o = SortOptions()
    i = 2
    while i < len(argv):
        opt = argv[i].upper()
        left = len(argv) - i - 1
        if opt == b"ASC":
            o.desc = False
        elif opt == b"DESC":
            o.desc = True
        elif opt == b"ALPHA":
            o.alpha = True
        elif opt == b"LIMIT" and left >= 2:
            o.offset, o.count = parse_int(argv[i + 1]), parse_int(argv[i + 2])
            i += 2
        elif opt == b"STORE" and left >= 1 and not read_only:
            o.store = argv[i + 1]
            i += 1
        elif opt == b"BY" and left >= 1:
            o.by = argv[i + 1]
            o.dont_sort = b"*" not in o.by  # a pattern with no '*' means: do not sort
            i += 1
        elif opt == b"GET" and left >= 1:
            o.gets.append(argv[i + 1])
            i += 1
        else:
            raise CommandError(errors.SYNTAX)
        i += 1
    return o


_STRTOD = re.compile(  # what C's strtod reads: a decimal or hex float, inf, nan, after white space
    rb"[ \t\n\v\f\r]*([+-]?)(?:(inf(?:inity)?)|(nan(?:\([0-9a-z_]*\))?)"
    rb"|0x((?:[0-9a-f]+(?:\.[0-9a-f]*)?|\.[0-9a-f]+)(?:p[+-]?[0-9]+)?)"
    rb"|((?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:e[+-]?[0-9]+)?))", re.IGNORECASE)


def sort_score(raw: bytes) -> float | None:
    """A SORT weight as Redis reads it, with strtod up to the first NUL byte: the whole of it must
    be a number (else None: the scores error); NaN and results out of a double's normal range
    (ERANGE) are refused too.  So ' 1', '0x10' and '' (0) sort, '1e400' does not."""
    text = raw.split(b"\0", 1)[0]
    if not text:
        return 0.0
    m = _STRTOD.fullmatch(text)
    if m is None or m.group(3):
        return None
    sign, inf, hex_digits, decimal = m.group(1), m.group(2), m.group(4), m.group(5)
    if inf:
        return -math.inf if sign == b"-" else math.inf
    try:
        value = float.fromhex("0x" + hex_digits.decode()) if hex_digits is not None else float(decimal)
    except OverflowError:
        return None
    mantissa = (hex_digits or decimal).lower().split(b"p" if hex_digits is not None else b"e")[0]
    if math.isinf(value) or (abs(value) < sys.float_info.min and mantissa.strip(b"0.")):
        return None  # overflow or underflow: strtod sets ERANGE
    return -value if sign == b"-" else value


def pattern_target(pattern: bytes, element: bytes) -> tuple[bytes, bytes | None] | None:
    """The key (and hash field) a BY/GET pattern names for an element, as Redis reads it: the
    first '*' takes the element, a '->' after it (with a field after that) names a hash field.
    None where there is nothing to look up: a pattern without '*' names no key (GET answers
    nil), and GET '#' is the element itself (the caller's case)."""
    star = pattern.find(b"*")
    if star < 0:
        return None
    field_name = None
    arrow = pattern.find(b"->", star + 1)
    if arrow > 0 and arrow + 2 < len(pattern):
        pattern, field_name = pattern[:arrow], pattern[arrow + 2 :]
    return pattern[:star] + element + pattern[star + 1 :], field_name


def _get(pattern: bytes, element: bytes, lookup: Lookup) -> bytes | None:
    """What GET pattern gives for an element."""
    if pattern == b"#":
        return element
    target = pattern_target(pattern, element)
    return lookup(*target) if target is not None else None


def needs_other_keys(o: SortOptions) -> bool:
    return (o.by is not None and not o.dont_sort) or any(g != b"#" for g in o.gets)


def sort_elements(elements: list[bytes], is_set: bool, o: SortOptions, lookup: Lookup,
                  budget: ReplyBudget) -> list[bytes | None]:
    """The reply (or the list to STORE); budget pays for it as it grows: LIMIT and repeated GETs
    let a client ask for far more elements than the source holds."""
    dont_sort = o.dont_sort
    alpha = o.alpha
    if is_set and dont_sort and o.store is not None:  # a set's order must not depend on its layout
        dont_sort, alpha = False, True
    if not dont_sort:
        keys: dict[bytes, object] = {}
        for e in elements:
            raw: bytes | None = e
            if o.by is not None:
                target = pattern_target(o.by, e)  # BY with a '*' (else nothing is sorted)
                raw = lookup(*target) if target is not None else None
            if alpha:  # strcoll in the C locale, which stops at a NUL byte; STORE compares all bytes
                keys[e] = raw if raw is None or o.store is not None else raw.split(b"\0", 1)[0]
            else:
                score = sort_score(raw) if raw is not None else 0.0
                if score is None:
                    raise CommandError(SCORES_ERROR)
                keys[e] = score

        def compare(a: bytes, b: bytes) -> int:
            ka, kb = keys[a], keys[b]
            if alpha:
                if ka is None or kb is None:
                    c = (ka is not None) - (kb is not None)
                else:
                    c = (ka > kb) - (ka < kb)  # type: ignore[operator]
                # Equal ones keep the source's order (Redis's qsort is glibc's stable merge sort);
                # a set's order is its own (the README's known differences), so there the bytes decide.
                return c or (is_set and (a > b) - (a < b))
            c = (ka > kb) - (ka < kb)  # type: ignore[operator]
            return c or (a > b) - (a < b)  # equal scores: the elements' bytes, as Redis

        elements = sorted(elements, key=functools.cmp_to_key(compare), reverse=o.desc)
    elif o.desc and not is_set:  # a list left unsorted comes in its order, DESC from the tail
        elements = elements[::-1]
    start = max(o.offset, 0)
    end = len(elements) if o.count < 0 else start + o.count
    chosen = elements[start:end]
    budget.spend(NULL_BYTES_MIN * len(chosen) * max(len(o.gets), 1))  # the least each element takes
    if not o.gets:
        budget.spend(sum(map(len, chosen)))
        return list(chosen)
    out: list[bytes | None] = []
    for e in chosen:
        for g in o.gets:
            value = _get(g, e, lookup)
            if value is not None:
                budget.spend(len(value))
            out.append(value)
    return out


def _reply(ctx_proto: int, items: list[bytes | None]) -> bytes:
    null = protocol.null(ctx_proto)
    return protocol.array([protocol.bulk(x) if x is not None else null for x in items])


def _budget(o: SortOptions, output_bytes_max: int, maxmemory: int) -> ReplyBudget:
    """A reply may grow to the client's output limit; a list to STORE no larger than the memory."""
    if o.store is not None:
        return ReplyBudget(maxmemory, CommandError(errors.OOM))
    return ReplyBudget(output_bytes_max)


def _local_source(ctx: ShardCtx, key: bytes) -> tuple[list[bytes], bool]:
    off = ctx.store.lookup(ctx.db, key, ctx.now_ms)
    if not off:
        return [], False
    kind = ctx.store.type_of(off)
    if kind not in (TYPE_LIST, TYPE_SET):
        raise CommandError(errors.WRONGTYPE)
    return items_of(ctx.store, off), kind == TYPE_SET


def _local_lookup(ctx: ShardCtx) -> Lookup:
    def lookup(key: bytes, field_name: bytes | None) -> bytes | None:
        off = ctx.store.lookup(ctx.db, key, ctx.now_ms)
        if not off:
            return None
        kind = ctx.store.type_of(off)
        if field_name is None:
            return ctx.store.string_value(off) if kind == TYPE_STRING else None
        if kind != TYPE_HASH:
            return None
        return Fields(ctx, key, TYPE_HASH).get(field_name)
    return lookup


def _sort_keys(argv: list[bytes]) -> list[int]:
    """The source and, as in Redis, only the last STORE destination."""
    store = [i + 1 for i in range(2, len(argv) - 1) if argv[i].upper() == b"STORE"]
    return [1, store[-1]] if store else [1]


def _sort(ctx: ShardCtx, argv: list[bytes], read_only: bool) -> bytes:
    o = parse_sort(argv, read_only)
    elements, is_set = _local_source(ctx, argv[1])
    budget = _budget(o, ctx.limits.output_buffer_bytes_max, ctx.limits.maxmemory)
    result = sort_elements(elements, is_set, o, _local_lookup(ctx), budget)
    if o.store is None:
        return _reply(ctx.proto, result)
    items = [x if x is not None else b"" for x in result]
    replace(ctx, o.store, TYPE_LIST, items, LIST, b"sortstore")
    return protocol.integer(len(items))


async def sort_across(tx: CrossShard, argv: list[bytes]) -> bytes:
    """SORT whose patterns or STORE reach other shards; every shard is locked."""
    o = parse_sort(argv, argv[0].lower() == b"sort_ro")
    source = await tx.apply(tx.shard_of(argv[1]), [b"__sortsource", argv[1]])
    if is_error(source):
        return source
    decoded = read_reply(source)[0]
    assert isinstance(decoded, list)
    is_set, elements = decoded[0] == b"set", decoded[1]
    wanted: list[tuple[bytes, bytes | None]] = []
    for pattern in ([o.by] if o.by is not None and not o.dont_sort else []) + o.gets:
        for e in elements:
            target = pattern_target(pattern, e) if pattern != b"#" else None
            if target is not None:
                wanted.append(target)
    values: dict[tuple[bytes, bytes | None], bytes | None] = {}
    by_shard: dict[int, list[tuple[bytes, bytes | None]]] = {}
    for t in dict.fromkeys(wanted):
        by_shard.setdefault(tx.shard_of(t[0]), []).append(t)
    for shard, targets in by_shard.items():
        args = [x for k, f in targets for x in (k, f if f is not None else b"")]
        flags = b"".join(b"1" if f is not None else b"0" for _, f in targets)
        reply = read_reply(await tx.apply(shard, [b"__sortlookup", flags, *args]))[0]
        assert isinstance(reply, list)
        values.update(zip(targets, reply, strict=True))
    budget = _budget(o, tx.limits.output_buffer_bytes_max, tx.limits.maxmemory)
    result = sort_elements(elements, is_set, o, lambda k, f: values.get((k, f)), budget)
    if o.store is None:
        return _reply(tx.proto, result)
    items = [x if x is not None else b"" for x in result]
    stored = await tx.apply(tx.shard_of(o.store), [b"__lreplace", o.store, *items])
    return stored if is_error(stored) else protocol.integer(len(items))


def _lock_all(argv: list[bytes]) -> bool:
    try:
        o = parse_sort(argv, argv[0].lower() == b"sort_ro")
    except CommandError:
        return False
    return needs_other_keys(o)


@command("sort", -2, "write denyoom", keys=(1, 1, 1), group="generic", find_keys=_sort_keys, lock_all=_lock_all,
         acl="@set @sortedset @list @dangerous",  # as Redis declares SORT, not its group's @keyspace
         key_flags=("RO access", "OW update"),  # the sorted key, the STORE destination
         summary="Sort the elements in a list or set", across=lambda tx, argv: sort_across(tx, argv))
def sort(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    return _sort(ctx, argv, read_only=False)


# movablekeys, as Redis reports it: BY and GET patterns reach keys the command does not name.
@command("sort_ro", -2, "readonly movablekeys", keys=(1, 1, 1), group="generic", lock_all=_lock_all,
         acl="@set @sortedset @list @dangerous",  # as Redis declares SORT, not its group's @keyspace
         summary="Sort the elements in a list or set (read-only)", across=lambda tx, argv: sort_across(tx, argv))
def sort_ro(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    return _sort(ctx, argv, read_only=True)


@command("__sortsource", 2, "readonly", where=Where.SHARD, group="internal", summary="SORT's source elements")
def shard_sortsource(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    elements, is_set = _local_source(ctx, argv[1])
    return protocol.array([protocol.bulk(b"set" if is_set else b"list"), protocol.bulk_array(elements)])


@command("__sortlookup", -2, "readonly", where=Where.SHARD, group="internal",
         summary="Values of SORT's BY/GET targets on this shard: flags key field key field ...")
def shard_sortlookup(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    lookup = _local_lookup(ctx)
    flags = argv[1]
    out = []
    for i, flag in enumerate(flags):
        value = lookup(argv[2 + 2 * i], argv[3 + 2 * i] if flag == ord("1") else None)
        out.append(protocol.bulk(value) if value is not None else protocol.null(ctx.proto))
    return protocol.array(out)


@command("__lreplace", -2, "write denyoom", where=Where.SHARD, group="internal",
         summary="Replace a key with a list of these elements (SORT ... STORE)")
def shard_lreplace(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    replace(ctx, argv[1], TYPE_LIST, argv[2:], LIST, b"sortstore")
    return protocol.OK

