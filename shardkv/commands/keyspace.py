"""Generic keyspace commands: DEL, EXISTS, TYPE, RENAME, COPY, MOVE, OBJECT, the EXPIRE and TTL
families, and the per-shard parts of KEYS, SCAN and RANDOMKEY (the router visits every shard)."""

from __future__ import annotations

import random
from dataclasses import dataclass

from shardkv import errors, protocol
from shardkv.collstore import items_of, value_bytes
from shardkv.commands.across import CrossShard, is_error, pack_blob, unpack_blob
from shardkv.commands.args import (
    INT64_MAX,
    INT64_MIN,
    ShardCtx,
    db_index,
    decode_optional,
    encode_optional,
    glob_matcher,
    maybe_int,
    parse_int,
)
from shardkv.commands.collections import notify_in, notify_new
from shardkv.commands.notify import GENERIC, notify
from shardkv.commands.sets import set_encoding
from shardkv.commands.table import Merge, Where, command
from shardkv.errors import CommandError
from shardkv.layout import (
    STRING_NOT_INT,
    STRING_OWN_INT,
    STRING_RAW,
    TYPE_HASH,
    TYPE_LIST,
    TYPE_NAMES,
    TYPE_SET,
    TYPE_STRING,
)
from shardkv.protocol import read_reply


@command("del", -2, "write", keys=(1, -1, 1), merge=Merge.SUM, group="generic", summary="Delete keys")
def del_(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    store = ctx.store
    deleted = 0
    for key in argv[1:]:
        if store.delete(ctx.db, key, ctx.now_ms):
            deleted += 1
            notify(ctx, GENERIC, b"del", key)
    return protocol.integer(deleted)


@command("unlink", -2, "write fast", keys=(1, -1, 1), merge=Merge.SUM, group="generic",
         summary="Delete keys (memory is reclaimed at once; same as DEL here)")
def unlink(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    return del_(ctx, argv)


@command("exists", -2, "readonly fast", keys=(1, -1, 1), merge=Merge.SUM, group="generic",
         summary="Count how many of the given keys exist")
def exists(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    store = ctx.store
    return protocol.integer(sum(1 for key in argv[1:] if store.lookup(ctx.db, key, ctx.now_ms)))


@command("touch", -2, "readonly fast", keys=(1, -1, 1), merge=Merge.SUM, group="generic",
         summary="Count how many of the given keys exist (access time is not tracked)")
def touch(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    return exists(ctx, argv)


@command("type", 2, "readonly fast", keys=(1, 1, 1), group="generic", summary="Determine the type of a key")
def type_(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    off = ctx.store.lookup(ctx.db, argv[1], ctx.now_ms)
    return b"+" + (TYPE_NAMES[ctx.store.type_of(off)] if off else b"none") + b"\r\n"


def expire_generic(ctx: ShardCtx, argv: list[bytes], unit_ms: int, absolute: bool) -> bytes:
    cmd = argv[0].decode(errors="replace").lower()
    nx = xx = gt = lt = False
    for opt in argv[3:]:
        o = opt.upper()
        if o == b"NX":
            nx = True
        elif o == b"XX":
            xx = True
        elif o == b"GT":
            gt = True
        elif o == b"LT":
            lt = True
        else:
            raise CommandError(f"ERR Unsupported option {opt.decode(errors='replace')}")
    if nx and (xx or gt or lt):
        raise CommandError("ERR NX and XX, GT or LT options at the same time are not compatible")
    if gt and lt:
        raise CommandError("ERR GT and LT options at the same time are not compatible")
    n = parse_int(argv[2])  # after the options, as in Redis
    if unit_ms == 1000:
        if not -(-INT64_MIN // 1000) <= n <= INT64_MAX // 1000:  # C's truncating division, as Redis
            raise CommandError(errors.INVALID_EXPIRE.format(cmd))
        n *= 1000
    if not absolute:
        if n > INT64_MAX - ctx.now_ms:
            raise CommandError(errors.INVALID_EXPIRE.format(cmd))
        n += ctx.now_ms
    store = ctx.store
    found = store.find(ctx.db, argv[1], ctx.now_ms)
    off = found[0]
    if not off:
        return protocol.ZERO
    current = store.expire_of(off)  # 0 = persistent, which GT/LT treat as infinite
    if (nx and current) or (xx and not current):
        return protocol.ZERO
    if gt and (not current or n <= current):
        return protocol.ZERO
    if lt and current and n >= current:
        return protocol.ZERO
    if n <= ctx.now_ms:
        store.delete(ctx.db, argv[1], ctx.now_ms)
        notify(ctx, GENERIC, b"del", argv[1])
        return protocol.ONE
    store.set_expire(off, ctx.db, n)
    notify(ctx, GENERIC, b"expire", argv[1])
    return protocol.ONE


@command("expire", -3, "write fast", keys=(1, 1, 1), group="generic",
         summary="Set a key's time to live in seconds")
def expire(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    return expire_generic(ctx, argv, 1000, absolute=False)


@command("pexpire", -3, "write fast", keys=(1, 1, 1), group="generic",
         summary="Set a key's time to live in milliseconds")
def pexpire(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    return expire_generic(ctx, argv, 1, absolute=False)


@command("expireat", -3, "write fast", keys=(1, 1, 1), group="generic",
         summary="Set the expiration for a key as a UNIX timestamp")
def expireat(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    return expire_generic(ctx, argv, 1000, absolute=True)


@command("pexpireat", -3, "write fast", keys=(1, 1, 1), group="generic",
         summary="Set the expiration for a key as a UNIX timestamp in milliseconds")
def pexpireat(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    return expire_generic(ctx, argv, 1, absolute=True)


def ttl_generic(ctx: ShardCtx, key: bytes, unit_ms: int) -> bytes:
    off = ctx.store.lookup(ctx.db, key, ctx.now_ms)
    if not off:
        return protocol.integer(-2)
    exp = ctx.store.expire_of(off)
    if not exp:
        return protocol.integer(-1)
    left = exp - ctx.now_ms
    return protocol.integer((left + unit_ms // 2) // unit_ms)


@command("ttl", 2, "readonly fast", keys=(1, 1, 1), group="generic", summary="Get the time to live in seconds")
def ttl(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    return ttl_generic(ctx, argv[1], 1000)


@command("pttl", 2, "readonly fast", keys=(1, 1, 1), group="generic", summary="Get the time to live in ms")
def pttl(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    return ttl_generic(ctx, argv[1], 1)


@command("persist", 2, "write fast", keys=(1, 1, 1), group="generic", summary="Remove the expiration from a key")
def persist(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    off = ctx.store.lookup(ctx.db, argv[1], ctx.now_ms)
    if not off or not ctx.store.expire_of(off):
        return protocol.ZERO
    ctx.store.set_expire(off, ctx.db, 0)
    notify(ctx, GENERIC, b"persist", argv[1])
    return protocol.ONE


def _rename(ctx: ShardCtx, argv: list[bytes], nx: bool) -> bytes:
    store = ctx.store
    src = store.find(ctx.db, argv[1], ctx.now_ms)
    if not src[0]:
        raise CommandError(errors.NO_SUCH_KEY)
    if argv[1] == argv[2]:
        return protocol.ZERO if nx else protocol.OK
    dst = store.find(ctx.db, argv[2], ctx.now_ms)
    if nx and dst[0]:
        return protocol.ZERO
    off = src[0]
    store.write_batch([(ctx.db, argv[2], store.kind_of(off), value_bytes(store, off), store.expire_of(off)),
                       (ctx.db, argv[1], 0, None, 0)])
    notify_new(ctx, argv[2])  # Redis deletes an existing destination and adds the key anew
    notify(ctx, GENERIC, b"rename_from", argv[1])
    notify(ctx, GENERIC, b"rename_to", argv[2])
    return protocol.ONE if nx else protocol.OK


@command("rename", 3, "write", keys=(1, 2, 1), group="generic", summary="Rename a key",
         across=lambda tx, argv: rename_across(tx, argv))
def rename(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    return _rename(ctx, argv, nx=False)


@command("renamenx", 3, "write fast", keys=(1, 2, 1), group="generic",
         summary="Rename a key, only if the new key does not exist", across=lambda tx, argv: rename_across(tx, argv))
def renamenx(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    return _rename(ctx, argv, nx=True)


def _copy_to(ctx: ShardCtx, off: int, key: bytes, db: int, replace: bool) -> bool:
    store = ctx.store
    dst = store.find(db, key, ctx.now_ms)
    if dst[0] and not replace:
        return False
    if dst[0]:  # Redis deletes the destination and adds the copy anew (put emits `new` otherwise)
        notify_new(ctx, key, db)
    kind = store.kind_of(off)
    if kind == TYPE_STRING:
        kind |= STRING_OWN_INT  # Redis duplicates the object: a shared integer's copy is its own
    store.put(db, key, kind, value_bytes(store, off), store.expire_of(off), dst)
    notify_in(ctx, db, GENERIC, b"copy_to", key)
    return True


def _copy_options(argv: list[bytes], current_db: int, databases: int) -> tuple[int, bool]:
    """(target db, REPLACE) of a COPY."""
    db = current_db
    replace = False
    i = 3
    while i < len(argv):
        opt = argv[i].upper()
        if opt == b"REPLACE":
            replace = True
        elif opt == b"DB" and i + 1 < len(argv):
            db = db_index(argv[i + 1], databases)
            i += 1
        else:
            raise CommandError(errors.SYNTAX)
        i += 1
    if db == current_db and argv[1] == argv[2]:
        raise CommandError("ERR source and destination objects are the same")
    return db, replace


@command("copy", -3, "write denyoom", keys=(1, 2, 1), group="generic", summary="Copy a key",
         across=lambda tx, argv: copy_across(tx, argv))
def copy(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    db, replace = _copy_options(argv, ctx.db, ctx.limits.databases)
    off = ctx.store.lookup(ctx.db, argv[1], ctx.now_ms)
    if not off:
        return protocol.ZERO
    return protocol.ONE if _copy_to(ctx, off, argv[2], db, replace) else protocol.ZERO


@command("move", 3, "write fast", keys=(1, 1, 1), group="generic", summary="Move a key to another database")
def move(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    db = db_index(argv[2], ctx.limits.databases)
    if db == ctx.db:
        raise CommandError("ERR source and destination objects are the same")
    store = ctx.store
    off = store.lookup(ctx.db, argv[1], ctx.now_ms)
    if not off or store.lookup(db, argv[1], ctx.now_ms):
        return protocol.ZERO
    store.write_batch([(db, argv[1], store.kind_of(off), value_bytes(store, off), store.expire_of(off)),
                       (ctx.db, argv[1], 0, None, 0)])
    notify_new(ctx, argv[1], db)
    notify(ctx, GENERIC, b"move_from", argv[1])
    notify_in(ctx, db, GENERIC, b"move_to", argv[1])
    return protocol.ONE


def _expiretime(ctx: ShardCtx, key: bytes, unit_ms: int) -> bytes:
    off = ctx.store.lookup(ctx.db, key, ctx.now_ms)
    if not off:
        return protocol.integer(-2)
    exp = ctx.store.expire_of(off)
    return protocol.integer((exp + unit_ms // 2) // unit_ms if exp else -1)  # rounded, as Redis does


@command("expiretime", 2, "readonly fast", keys=(1, 1, 1), group="generic",
         summary="Get the expiration Unix timestamp of a key")
def expiretime(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    return _expiretime(ctx, argv[1], 1000)


@command("pexpiretime", 2, "readonly fast", keys=(1, 1, 1), group="generic",
         summary="Get the expiration Unix timestamp of a key in milliseconds")
def pexpiretime(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    return _expiretime(ctx, argv[1], 1)


OBJECT_HELP = [
    "OBJECT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "ENCODING <key>", "    Return the kind of internal representation used in order to store the value",
    "    associated with a <key>.",
    "FREQ <key>", "    Return the access frequency index of the <key>. The returned integer is",
    "    proportional to the logarithm of the recent access frequency of the key.",
    "IDLETIME <key>", "    Return the idle time of the <key>, that is the approximated number of",
    "    seconds elapsed since the last access to the key.",
    "REFCOUNT <key>", "    Return the number of references of the value associated with the specified",
    "    <key>.",
    "HELP", "    Print this help.",
]


@command("object", -2, "readonly", keys=(2, 2, 1), group="generic",
         summary="Inspect the internals of Redis objects", subcommands=("encoding", "freq", "idletime", "refcount"))
def object_(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    sub = argv[1].lower()
    if sub == b"help" and len(argv) == 2:
        return protocol.array([protocol.simple(line) for line in OBJECT_HELP])
    if sub not in (b"help", b"encoding", b"freq", b"idletime", b"refcount"):
        raise CommandError(errors.unknown_subcommand(argv[1], "object"))
    if len(argv) != 3 or sub == b"help":
        raise CommandError(errors.wrong_arity(f"object|{sub.decode()}"))
    off = ctx.store.lookup(ctx.db, argv[2], ctx.now_ms)
    if not off:
        return protocol.null(ctx.proto)
    if sub == b"encoding":
        return protocol.bulk(encoding_name(ctx, off))
    if sub == b"freq":
        raise CommandError("ERR An LFU maxmemory policy is not selected, access frequency not tracked. Please note "
                           "that when switching between policies at runtime LRU and LFU data will take some time "
                           "to adjust.")
    if sub == b"refcount":
        return protocol.integer(SHARED_REFCOUNT if _shared_integer(ctx, off) else 1)
    return protocol.ZERO


SHARED_REFCOUNT = 2147483647  # what Redis reports for one of its shared objects
SHARED_INTEGERS = 10000  # Redis keeps the integers 0 .. 9999 as shared objects


def _shared_integer(ctx: ShardCtx, off: int) -> bool:
    """A string Redis would hold as one of its shared integers (it does so with no LRU/LFU
    policy, shardkv's only one)."""
    if ctx.store.type_of(off) != TYPE_STRING or ctx.store.string_flags(off):
        return False
    n = maybe_int(ctx.store.string_value(off))
    return n is not None and 0 <= n < SHARED_INTEGERS


def encoding_name(ctx: ShardCtx, off: int) -> bytes:
    """What Redis would report for this value (the real layout is the shard record, see README)."""
    kind = ctx.store.type_of(off)
    if kind == TYPE_STRING:
        flags = ctx.store.string_flags(off)
        if flags & STRING_RAW:
            return b"raw"
        value = ctx.store.string_value(off)
        if len(value) <= 20 and maybe_int(value) is not None and not flags & STRING_NOT_INT:
            return b"int"
        return b"embstr" if len(value) <= 44 else b"raw"
    if kind == TYPE_LIST:
        return b"quicklist"
    if ctx.store.struct_of(off) and kind == TYPE_HASH:
        return b"hashtable"
    items = items_of(ctx.store, off)
    if kind == TYPE_SET:
        return set_encoding(ctx, items)
    if kind == TYPE_HASH:
        small = len(items) // 2 <= ctx.stats.tunable("hash-max-listpack-entries")
        short = all(len(x) <= ctx.stats.tunable("hash-max-listpack-value") for x in items)
        return b"listpack" if small and short else b"hashtable"
    return b"raw"


# ---------------------------------------------------------------------- whole keyspace


@command("__keys", 2, "readonly", where=Where.SHARD, group="internal", summary="KEYS on one shard")
def shard_keys(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    match = glob_matcher(argv[1])
    every = argv[1] == b"*"
    keys: list[bytes] = []
    for b in ctx.store.busy_buckets():
        keys.extend(k for k in ctx.store.bucket_keys(b, ctx.db, ctx.now_ms) if every or match(k))
    return protocol.bulk_array(keys)


@dataclass(frozen=True, slots=True)
class ScanPart:
    """SCAN's call on one shard, as the internal command `__scan` (fixed positions)."""

    bucket: int
    count: int
    match: bytes | None = None
    kind: bytes | None = None  # a type name, lower case

    def encode(self) -> list[bytes]:
        return [b"__scan", b"%d" % self.bucket, b"%d" % self.count, encode_optional(self.match),
                encode_optional(self.kind)]

    @staticmethod
    def decode(argv: list[bytes]) -> ScanPart:
        assert argv[0] == b"__scan" and len(argv) == 5, argv
        return ScanPart(int(argv[1]), int(argv[2]), decode_optional(argv[3]), decode_optional(argv[4]))


@command("__scan", 5, "readonly", where=Where.SHARD, group="internal", summary="SCAN of one shard")
def shard_scan(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    """-> [next bucket or 0, keys]."""
    store = ctx.store
    part = ScanPart.decode(argv)
    bucket, count = part.bucket, part.count
    match = glob_matcher(part.match) if part.match is not None else None
    kind = part.kind
    keys: list[bytes] = []
    visited = 0
    while bucket < store.buckets and (len(keys) < count or visited < count):
        keys.extend(store.bucket_keys(bucket, ctx.db, ctx.now_ms))
        bucket += 1
        visited += 1
        if visited >= count * 10 + 100:  # a bound on one call's work in a sparse table
            break
    if match is not None:
        keys = [k for k in keys if match(k)]
    if kind is not None:
        keys = [k for k in keys if TYPE_NAMES.get(store.type_of(store.lookup(ctx.db, k, ctx.now_ms)), b"") == kind]
    next_bucket = bucket if bucket < store.buckets else 0
    return protocol.array([protocol.bulk(b"%d" % next_bucket), protocol.bulk_array(keys)])


@command("__randomkey", 1, "readonly", where=Where.SHARD, group="internal", summary="RANDOMKEY of one shard")
def shard_randomkey(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    store = ctx.store
    if not store.keys_in(ctx.db):
        return protocol.null(ctx.proto)
    start = random.randrange(store.buckets)
    for i in range(store.buckets):
        keys = store.bucket_keys((start + i) % store.buckets, ctx.db, ctx.now_ms)
        if keys:
            return protocol.bulk(random.choice(keys))
    return protocol.null(ctx.proto)


# ---------------------------------------------------------------------- keys moving between shards


@command("__dump", 2, "readonly", where=Where.SHARD, group="internal", summary="A key's record as a blob")
def shard_dump(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    store = ctx.store
    off = store.lookup(ctx.db, argv[1], ctx.now_ms)
    if not off:
        return protocol.null(ctx.proto)
    return protocol.bulk(pack_blob(store.kind_of(off), store.expire_of(off), value_bytes(store, off)))


@dataclass(frozen=True, slots=True)
class RestorePart:
    """Writing a blob from `__dump` under a key, as the internal command `__restore`; `event`
    (GENERIC, b"" for none) is emitted for the key once written, after its `new`."""

    key: bytes
    blob: bytes
    replace: bool
    db: int
    event: bytes = b""

    def encode(self) -> list[bytes]:
        return [b"__restore", self.key, self.blob, b"1" if self.replace else b"0", b"%d" % self.db, self.event]

    @staticmethod
    def decode(argv: list[bytes]) -> RestorePart:
        assert argv[0] == b"__restore" and len(argv) == 6, argv
        return RestorePart(argv[1], argv[2], argv[3] == b"1", int(argv[4]), argv[5])


@command("__restore", 6, "write denyoom", where=Where.SHARD, group="internal",
         summary="Write a blob from __dump under a key (RENAME, COPY across shards)")
def shard_restore(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    part = RestorePart.decode(argv)
    kind, expire_ms, value = unpack_blob(part.blob)
    db = part.db
    found = ctx.store.find(db, part.key, ctx.now_ms)
    if found[0] and not part.replace:
        return protocol.ZERO
    if found[0]:  # RENAME and COPY REPLACE delete the old key and add the new one: `new` either way
        notify_new(ctx, part.key, db)
    if part.event == b"copy_to" and kind == TYPE_STRING:
        kind |= STRING_OWN_INT  # a COPY duplicates the object, as _copy_to on one shard
    ctx.store.put(db, part.key, kind, value, expire_ms, found)
    if part.event:
        notify_in(ctx, db, GENERIC, part.event, part.key)
    return protocol.ONE


@command("__keyevent", 4, "write", where=Where.SHARD, group="internal",
         summary="Emit a generic keyspace event for a key, deleting the key first if asked: key, event, 1|0 "
                 "(RENAME across shards: rename_from, rename_to)")
def shard_keyevent(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    if argv[3] == b"1" and not ctx.store.delete(ctx.db, argv[1], ctx.now_ms):
        return protocol.ZERO
    notify(ctx, GENERIC, argv[2], argv[1])
    return protocol.ONE


async def rename_across(tx: CrossShard, argv: list[bytes]) -> bytes:
    """RENAME / RENAMENX with the two keys on different shards."""
    nx = argv[0].lower() == b"renamenx"
    src, dst = tx.shard_of(argv[1]), tx.shard_of(argv[2])
    blob = read_reply(await tx.apply(src, [b"__dump", argv[1]]))[0]
    if blob is None:
        return protocol.error(errors.NO_SUCH_KEY)
    assert isinstance(blob, bytes)
    if nx and read_reply(await tx.apply(dst, [b"exists", argv[2]]))[0]:
        return protocol.ZERO
    written = await tx.apply(dst, RestorePart(argv[2], blob, True, tx.db).encode())
    if is_error(written):
        return written
    # Redis's events, each from the shard whose key it names: new (above), rename_from, rename_to.
    await tx.apply(src, [b"__keyevent", argv[1], b"rename_from", b"1"])
    await tx.apply(dst, [b"__keyevent", argv[2], b"rename_to", b"0"])
    return protocol.ONE if nx else protocol.OK


async def copy_across(tx: CrossShard, argv: list[bytes]) -> bytes:
    """COPY with source and destination on different shards (options checked as COPY does)."""
    db, replace = _copy_options(argv, tx.db, tx.limits.databases)
    blob = read_reply(await tx.apply(tx.shard_of(argv[1]), [b"__dump", argv[1]]))[0]
    if blob is None:
        return protocol.ZERO
    assert isinstance(blob, bytes)
    return await tx.apply(tx.shard_of(argv[2]), RestorePart(argv[2], blob, replace, db, b"copy_to").encode())


@command("memory", -2, "readonly", keys=(2, 2, 1), group="server", summary="Memory usage of a key",
         subcommands=("usage", "help"))
def memory(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    sub = argv[1].lower()
    if sub == b"help" and len(argv) == 2:
        return protocol.array([protocol.simple(line) for line in (
            "MEMORY <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
            "USAGE <key> [SAMPLES <count>]",
            "    Return memory in bytes used by <key> and its value (its records in the shard).",
            "HELP", "    Print this help.")])
    if sub != b"usage":
        raise CommandError(errors.unknown_subcommand(argv[1], "memory"))
    if len(argv) not in (3, 5) or (len(argv) == 5 and argv[3].upper() != b"SAMPLES"):
        raise CommandError(errors.SYNTAX)
    off = ctx.store.lookup(ctx.db, argv[2], ctx.now_ms)
    if not off:
        return protocol.null(ctx.proto)
    store = ctx.store
    return protocol.integer(sum(store.record_size(block) for block in [off] + store.children(off)))
