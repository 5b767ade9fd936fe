"""Server commands: COMMAND, CONFIG, INFO, DBSIZE, FLUSHDB, FLUSHALL, TIME, SHUTDOWN.

Counts come from the shard headers and the stats segment, which every worker can read, so INFO
and DBSIZE need no message to other workers.  FLUSHDB / FLUSHALL run as a transaction over every
shard (`__flush` parts), so no client sees a half-flushed keyspace.
"""

from __future__ import annotations

import fnmatch
import os
import platform
import random
import signal
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from shardkv import errors, protocol
from shardkv.commands.args import ShardCtx, parse_cursor, parse_int
from shardkv.commands.table import Command, Where, command, lookup, public_commands
from shardkv.errors import CommandError
from shardkv.limits import REQUIREPASS_BYTES_MAX, Footprint
from shardkv.protocol import read_reply
from shardkv.router.dispatch import Pending, first_error
from shardkv.stats import (
    G_STARTED_MS,
    G_SUPERVISOR_PID,
    TUNABLE_ALIASES,
    TUNABLES,
    W_BLOCKED,
    W_COMMAND_STATS,
    W_COMMANDS,
    W_CONNECTED,
    W_CONNECTIONS_RECEIVED,
    W_CPU_SYS_US,
    W_CPU_USER_US,
    W_HITS,
    W_MISSES,
    W_NET_INPUT,
    W_NET_OUTPUT,
    W_OUTPUT_LIMIT,
    W_READY,
    W_REJECTED,
    W_RESTARTS,
)

if TYPE_CHECKING:
    from shardkv.router.connection import Connection

SERVER = Where.SERVER
VERSION = "7.0.15"


# ---------------------------------------------------------------------- COMMAND


def _acl_categories(cmd: Command) -> list[bytes]:
    cats = [b"@" + cmd.group.encode()] if cmd.group in ("string", "keyspace", "connection") else []
    if cmd.group == "generic":
        cats = [b"@keyspace"]
    cats.append(b"@write" if cmd.is_write else b"@read" if cmd.first_key else b"@slow")
    cats.append(b"@fast" if "fast" in cmd.flags else b"@slow")
    return cats


def _key_specs(cmd: Command, proto: int) -> bytes:
    if not cmd.first_key:
        return protocol.EMPTY_ARRAY
    last = cmd.last_key - cmd.first_key if cmd.last_key >= 0 else cmd.last_key
    flags = [b"RW" if cmd.is_write else b"RO", b"UPDATE" if cmd.is_write else b"ACCESS"]
    spec = protocol.map_reply(proto, [
        (protocol.bulk(b"flags"), protocol.set_reply(proto, [protocol.simple(f.decode()) for f in flags])),
        (protocol.bulk(b"begin_search"), protocol.map_reply(proto, [
            (protocol.bulk(b"type"), protocol.bulk(b"index")),
            (protocol.bulk(b"spec"), protocol.map_reply(proto, [
                (protocol.bulk(b"index"), protocol.integer(cmd.first_key))]))])),
        (protocol.bulk(b"find_keys"), protocol.map_reply(proto, [
            (protocol.bulk(b"type"), protocol.bulk(b"range")),
            (protocol.bulk(b"spec"), protocol.map_reply(proto, [
                (protocol.bulk(b"lastkey"), protocol.integer(last)),
                (protocol.bulk(b"keystep"), protocol.integer(cmd.key_step)),
                (protocol.bulk(b"limit"), protocol.integer(0))]))])),
    ])
    return protocol.array([spec])


def command_info(cmd: Command, proto: int) -> bytes:
    return protocol.array([
        protocol.bulk(cmd.name.encode()),
        protocol.integer(cmd.arity),
        protocol.set_reply(proto, [protocol.simple(f) for f in cmd.flags]),
        protocol.integer(cmd.first_key),
        protocol.integer(cmd.last_key),
        protocol.integer(cmd.key_step),
        protocol.set_reply(proto, [protocol.simple(c.decode()) for c in _acl_categories(cmd)]),
        protocol.EMPTY_ARRAY,
        _key_specs(cmd, proto),
        protocol.EMPTY_ARRAY,
    ])


def command_docs(cmd: Command, proto: int) -> bytes:
    return protocol.map_reply(proto, [
        (protocol.bulk(b"summary"), protocol.bulk(cmd.summary.encode())),
        (protocol.bulk(b"since"), protocol.bulk(b"1.0.0")),
        (protocol.bulk(b"group"), protocol.bulk(cmd.group.encode())),
    ])


@command("command", -1, "loading stale", where=SERVER, group="server", summary="Details about all commands",
         subcommands=("count", "info", "docs", "getkeys", "list", "help"))
def command_(conn: Connection, argv: list[bytes]) -> bytes:
    proto = conn.proto
    if len(argv) == 1:
        return protocol.array([command_info(c, proto) for c in public_commands()])
    sub = argv[1].lower()
    if sub == b"count" and len(argv) == 2:
        return protocol.integer(len(public_commands()))
    if sub == b"info":
        cmds = public_commands() if len(argv) == 2 else [_public(name) for name in argv[2:]]
        return protocol.array([command_info(c, proto) if c else protocol.null_array(proto) for c in cmds])
    if sub == b"docs":
        cmds = public_commands() if len(argv) == 2 else [c for c in (_public(n) for n in argv[2:]) if c]
        return protocol.map_reply(proto, [(protocol.bulk(c.name.encode()), command_docs(c, proto)) for c in cmds])
    if sub == b"getkeys" and len(argv) >= 3:
        cmd = _public(argv[2])
        if cmd is None:
            raise CommandError("ERR Invalid command specified")
        if not cmd.arity_ok(len(argv) - 2):
            raise CommandError("ERR Invalid number of arguments specified for command")
        positions = cmd.key_indexes(argv[2:])
        if not positions:
            raise CommandError("ERR The command has no key arguments")
        return protocol.bulk_array([argv[2 + i] for i in positions])
    if sub == b"list":
        names = [c.name.encode() for c in public_commands()]
        if len(argv) == 5 and argv[2].upper() == b"FILTERBY":
            how, what = argv[3].upper(), argv[4].lower()
            if how == b"PATTERN":
                names = [n for n in names if fnmatch.fnmatchcase(n.decode(), what.decode(errors="replace"))]
            elif how == b"ACLCAT":
                names = [c.name.encode() for c in public_commands() if b"@" + what in _acl_categories(c)]
            elif how == b"MODULE":
                names = []
            else:
                raise CommandError(errors.SYNTAX)
        elif len(argv) != 2:
            raise CommandError(errors.SYNTAX)
        return protocol.bulk_array(names)
    if sub == b"help" and len(argv) == 2:
        lines = ["COMMAND <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                 "(no subcommand)", "    Return details about all Redis commands.",
                 "COUNT", "    Return the total number of commands in this Redis server.",
                 "LIST", "    Return a list of all commands in this Redis server.",
                 "INFO [<command-name> ...]", "    Return details about multiple Redis commands.",
                 "DOCS [<command-name> ...]", "    Return documentation details about multiple Redis commands.",
                 "GETKEYS <full-command>", "    Return the keys from a full Redis command.",
                 "HELP", "    Print this help."]
        return protocol.array([protocol.simple(line) for line in lines])
    if sub in (b"count", b"getkeys", b"help"):
        raise CommandError(errors.wrong_arity(f"command|{sub.decode()}"))
    raise CommandError(errors.unknown_subcommand(argv[1], "command"))


def _public(name: bytes) -> Command | None:
    cmd = lookup(name)
    return None if cmd is None or cmd.internal else cmd


# ---------------------------------------------------------------------- CONFIG


def config_values(conn: Connection) -> dict[str, str]:
    """Every parameter CONFIG GET knows, as text (the password as surrogate-escaped UTF-8, so
    that any bytes survive the round trip)."""
    lim = conn.worker.limits
    password = conn.worker.stats.password().decode("utf-8", errors="surrogateescape")
    return {
        "port": str(lim.port), "bind": lim.bind, "shards": str(lim.shards),
        "maxmemory": str(lim.maxmemory), "maxmemory-policy": "noeviction", "maxclients": str(lim.maxclients),
        "databases": str(lim.databases), "proto-max-bulk-len": str(lim.value_bytes_max),
        "client-query-buffer-limit": str(lim.query_buffer_bytes_max), "key-bytes-max": str(lim.key_bytes_max),
        "args-max": str(lim.args_max), "requirepass": password, "save": "", "appendonly": "no",
        "timeout": "0", "tcp-keepalive": "0", "io-threads": "1", "cluster-enabled": "no",
        "daemonize": "no", "dir": os.getcwd(), "dbfilename": "dump.rdb", "loglevel": "notice",
        **{name: str(conn.worker.stats.tunable(name)) for name in (*TUNABLES, *TUNABLE_ALIASES)},
    }


def _config_set_failed(name: str, reason: str) -> CommandError:
    return CommandError(f"ERR CONFIG SET failed (possibly related to argument '{name}') - {reason}")


def _config_change(conn: Connection, name: str, raw: bytes, fixed: dict[str, str]) -> Callable[[], None] | None:
    """Check one CONFIG SET pair and return what applies it (None: nothing changes).  Runtime
    parameters may change; boot-fixed ones only to the value they have."""
    stats = conn.worker.stats
    if name in TUNABLES or name in TUNABLE_ALIASES:
        try:
            value = int(raw)
        except ValueError:
            raise _config_set_failed(name, "argument couldn't be parsed into an integer") from None
        return lambda: stats.set_tunable(name, value)
    if name == "requirepass":  # every worker reads it from the stats segment: new clients see it at once
        if len(raw) > REQUIREPASS_BYTES_MAX:
            raise _config_set_failed(name, f"password is longer than {REQUIREPASS_BYTES_MAX} bytes")
        return lambda: stats.set_password(raw)
    if raw.decode(errors="replace") != fixed[name]:
        raise _config_set_failed(name, "can't set immutable config")
    return None


def config_set(conn: Connection, argv: list[bytes]) -> bytes:
    """All or nothing, as in Redis 7.0: every pair is checked before any is applied."""
    values = config_values(conn)
    names = [argv[i].decode(errors="replace").lower() for i in range(2, len(argv), 2)]
    for name in names:
        if name not in values and name not in TUNABLE_ALIASES:
            raise CommandError(f"ERR Unknown option or number of arguments for CONFIG SET - '{name}'")
    seen: set[str] = set()
    changes = []
    for name, raw in zip(names, argv[3::2], strict=True):
        canonical = TUNABLE_ALIASES.get(name, name)
        if canonical in seen:
            raise _config_set_failed(name, "duplicate parameter")
        seen.add(canonical)
        changes.append(_config_change(conn, name, raw, values))
    for change in changes:
        if change is not None:
            change()
    return protocol.OK


@command("config", -2, "admin noscript loading stale", where=SERVER, group="server",
         summary="Read, change and reset server parameters", subcommands=("get", "set", "resetstat", "help"))
def config(conn: Connection, argv: list[bytes]) -> bytes:
    sub = argv[1].lower()
    if sub == b"get" and len(argv) >= 3:
        values = config_values(conn)
        pairs: dict[str, str] = {}
        for raw in argv[2:]:
            pattern = raw.decode(errors="replace").lower()
            for name, value in values.items():
                if fnmatch.fnmatchcase(name, pattern):
                    pairs[name] = value
        return protocol.map_reply(conn.proto, [(protocol.bulk(k.encode()),
                                                protocol.bulk(v.encode("utf-8", errors="surrogateescape")))
                                               for k, v in pairs.items()])
    if sub == b"set" and len(argv) >= 4 and len(argv) % 2 == 0:
        return config_set(conn, argv)
    if sub == b"resetstat" and len(argv) == 2:
        stats = conn.worker.stats
        for w in range(stats.workers):
            stats.reset(w)
        return protocol.OK
    if sub == b"help" and len(argv) == 2:
        lines = ["CONFIG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                 "GET <pattern>", "    Return parameters matching the glob-like <pattern> and their values.",
                 "SET <directive> <value>", "    Set the configuration <directive> to <value>.",
                 "RESETSTAT", "    Reset statistics reported by the INFO command.",
                 "HELP", "    Print this help."]
        return protocol.array([protocol.simple(line) for line in lines])
    if sub in (b"get", b"set", b"resetstat", b"help"):
        raise CommandError(errors.wrong_arity(f"config|{sub.decode()}"))
    raise CommandError(errors.unknown_subcommand(argv[1], "config"))


# ---------------------------------------------------------------------- INFO

INFO_DEFAULT = ["server", "clients", "memory", "persistence", "stats", "replication", "cpu", "keyspace"]
INFO_ALL = INFO_DEFAULT + ["commandstats", "errorstats"]


def info_text(conn: Connection, sections: list[str]) -> str:
    worker = conn.worker
    lim = worker.limits
    stats = worker.stats
    fp = Footprint(lim)
    now_ms = int(time.time() * 1000)
    started = stats.global_get(G_STARTED_MS) or now_ms
    used = sum(s.used_bytes for s in worker.stores) + lim.shards * (fp.index_bytes_per_shard +
                                                                  fp.allocator_bytes_per_shard)
    out: list[str] = []

    def section(name: str, fields: list[tuple[str, object]]) -> None:
        if out:
            out.append("")
        out.append(f"# {name}")
        out.extend(f"{k}:{v}" for k, v in fields)

    for name in sections:
        if name == "server":
            uptime = (now_ms - started) // 1000
            section("Server", [
                ("redis_version", VERSION), ("redis_git_sha1", "00000000"), ("redis_git_dirty", 0),
                ("redis_build_id", "shardkv"), ("redis_mode", "standalone"), ("shardkv_version", "0.1.0"),
                ("os", f"{platform.system()} {platform.release()} {platform.machine()}"),
                ("arch_bits", 64), ("multiplexing_api", "epoll"), ("process_id", stats.global_get(G_SUPERVISOR_PID)),
                ("run_id", f"{stats.global_get(G_SUPERVISOR_PID):040x}"), ("tcp_port", lim.port),
                ("server_time_usec", int(time.time() * 1e6)), ("uptime_in_seconds", uptime),
                ("uptime_in_days", uptime // 86400), ("hz", 10), ("configured_hz", 10),
                ("executable", "shardkv"), ("config_file", ""), ("shards", lim.shards),
                ("worker_id", worker.id), ("worker_restarts", stats.total(W_RESTARTS)),
                ("workers_ready", stats.total(W_READY)),
            ])
        elif name == "clients":
            section("Clients", [
                ("connected_clients", stats.total(W_CONNECTED)), ("cluster_connections", 0),
                ("maxclients", lim.maxclients), ("client_recent_max_input_buffer", 0),
                ("client_recent_max_output_buffer", 0), ("blocked_clients", stats.total(W_BLOCKED)),
                ("tracking_clients", 0), ("clients_in_timeout_table", 0),
            ])
        elif name == "memory":
            section("Memory", [
                ("used_memory", used), ("used_memory_human", _human(used)),
                ("used_memory_rss", _rss()), ("used_memory_peak", used), ("used_memory_dataset",
                                                                          sum(s.used_bytes for s in worker.stores)),
                ("total_system_memory", os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")),
                ("maxmemory", lim.maxmemory), ("maxmemory_human", _human(lim.maxmemory)),
                ("maxmemory_policy", "noeviction"), ("allocator_footprint", fp.total_bytes),
                ("shm_segments_bytes", fp.shm_bytes), ("mem_fragmentation_ratio", "1.00"),
                ("mem_allocator", "shardkv-slab"), ("lazyfree_pending_objects", 0),
            ])
        elif name == "persistence":
            section("Persistence", [
                ("loading", 0), ("async_loading", 0),
                ("rdb_changes_since_last_save", sum(s.dirty for s in worker.stores)),
                ("rdb_bgsave_in_progress", 0), ("rdb_last_save_time", started // 1000),
                ("rdb_last_bgsave_status", "ok"), ("aof_enabled", 0), ("aof_rewrite_in_progress", 0),
                ("aof_last_write_status", "ok"),
            ])
        elif name == "stats":
            section("Stats", [
                ("total_connections_received", stats.total(W_CONNECTIONS_RECEIVED)),
                ("total_commands_processed", stats.total(W_COMMANDS)),
                ("instantaneous_ops_per_sec", 0),
                ("total_net_input_bytes", stats.total(W_NET_INPUT)),
                ("total_net_output_bytes", stats.total(W_NET_OUTPUT)),
                ("rejected_connections", stats.total(W_REJECTED)),
                ("expired_keys", sum(s.expired_keys for s in worker.stores)), ("evicted_keys", 0),
                ("keyspace_hits", stats.total(W_HITS)), ("keyspace_misses", stats.total(W_MISSES)),
                ("pubsub_channels", 0), ("pubsub_patterns", 0),
                ("total_error_replies", _total_errors(conn)),
                ("client_output_buffer_limit_disconnections", stats.total(W_OUTPUT_LIMIT)),
            ])
        elif name == "replication":
            section("Replication", [("role", "master"), ("connected_slaves", 0),
                                    ("master_failover_state", "no-failover"), ("master_repl_offset", 0)])
        elif name == "cpu":
            section("CPU", [
                ("used_cpu_sys", f"{stats.total(W_CPU_SYS_US) / 1e6:.6f}"),
                ("used_cpu_user", f"{stats.total(W_CPU_USER_US) / 1e6:.6f}"),
                ("used_cpu_sys_children", "0.000000"), ("used_cpu_user_children", "0.000000"),
            ])
        elif name == "keyspace":
            fields: list[tuple[str, object]] = []
            for db in range(lim.databases):
                keys = sum(s.keys_in(db) for s in worker.stores)
                if keys:
                    expires = sum(s.expires_in(db) for s in worker.stores)
                    fields.append((f"db{db}", f"keys={keys},expires={expires},avg_ttl=0"))
            section("Keyspace", fields)
        elif name == "commandstats":
            fields = []
            for cmd in public_commands():
                calls, usec, failed = _command_totals(conn, cmd)
                if calls:
                    fields.append((f"cmdstat_{cmd.name}", f"calls={calls},usec={usec},"
                                   f"usec_per_call={usec / calls:.2f},rejected_calls=0,failed_calls={failed}"))
            section("Commandstats", fields)
        elif name == "errorstats":
            section("Errorstats", [])
    return "\r\n".join(out) + "\r\n"


def _command_totals(conn: Connection, cmd: Command) -> tuple[int, int, int]:
    stats = conn.worker.stats
    i = conn.worker.command_index[cmd.name]
    calls = usec = failed = 0
    for w in range(stats.workers):
        base = stats.base(w) + W_COMMAND_STATS + 3 * i
        calls += stats.q[base]
        usec += stats.q[base + 1]
        failed += stats.q[base + 2]
    return calls, usec, failed


def _total_errors(conn: Connection) -> int:
    return sum(_command_totals(conn, c)[2] for c in public_commands())


def _human(n: int) -> str:
    for unit in ("B", "K", "M", "G", "T"):
        if n < 1024 or unit == "T":
            return f"{n}{unit}" if unit == "B" else f"{n:.2f}{unit}"
        n /= 1024  # type: ignore[assignment]
    raise AssertionError("unreachable")


def _rss() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


@command("info", -1, "loading stale", where=SERVER, group="server", summary="Information and statistics")
def info(conn: Connection, argv: list[bytes]) -> bytes:
    names: list[str] = []
    for raw in argv[1:] or [b"default"]:
        name = raw.decode(errors="replace").lower()
        if name == "default":
            names += INFO_DEFAULT
        elif name in ("all", "everything"):
            names += INFO_ALL
        else:
            names.append(name)
    seen: list[str] = []
    for n in names:
        if n not in seen:
            seen.append(n)
    return protocol.verbatim(conn.proto, info_text(conn, seen).encode())


# ---------------------------------------------------------------------- keyspace-wide


@command("dbsize", 1, "readonly fast", where=SERVER, group="server", summary="Number of keys in the selected database")
def dbsize(conn: Connection, argv: list[bytes]) -> bytes:
    return protocol.integer(sum(s.keys_in(conn.db) for s in conn.worker.stores))


def flush_generic(conn: Connection, argv: list[bytes], every_db: bool) -> Pending:
    if len(argv) > 2 or (len(argv) == 2 and argv[1].upper() not in (b"ASYNC", b"SYNC")):
        raise CommandError(errors.SYNTAX)
    part = [b"__flush", b"all" if every_db else b"db"]
    parts = {s: list(part) for s in range(conn.worker.workers)}
    return conn.router.transaction_reply(
        conn, parts, lambda replies: first_error(list(replies.values())) or protocol.OK)


@command("flushdb", -1, "write", where=SERVER, group="server", summary="Remove all keys of the selected database")
def flushdb(conn: Connection, argv: list[bytes]) -> Pending:
    return flush_generic(conn, argv, every_db=False)


@command("flushall", -1, "write", where=SERVER, group="server", summary="Remove all keys of every database")
def flushall(conn: Connection, argv: list[bytes]) -> Pending:
    return flush_generic(conn, argv, every_db=True)


@command("__flush", 2, "write", where=Where.SHARD, group="internal", summary="Flush one shard (FLUSHDB/FLUSHALL part)")
def shard_flush(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    ctx.store.flush(None if argv[1] == b"all" else ctx.db)
    return protocol.OK


@command("swapdb", 3, "write fast", where=SERVER, group="server", summary="Swap two databases")
def swapdb(conn: Connection, argv: list[bytes]) -> Pending:
    a = parse_int(argv[1], "ERR invalid first DB index")
    b = parse_int(argv[2], "ERR invalid second DB index")
    if not (0 <= a < conn.worker.limits.databases and 0 <= b < conn.worker.limits.databases):
        raise CommandError(errors.DB_INDEX)
    parts = {s: [b"__swapdb", argv[1], argv[2]] for s in range(conn.worker.workers)}
    return conn.router.transaction_reply(
        conn, parts, lambda replies: first_error(list(replies.values())) or protocol.OK)


@command("__swapdb", 3, "write", where=Where.SHARD, group="internal", summary="SWAPDB on one shard")
def shard_swapdb(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    ctx.store.swap_dbs(int(argv[1]), int(argv[2]))
    return protocol.OK


@command("__noop", 1, "readonly", where=Where.SHARD, group="internal",
         summary="Nothing: the part of a transaction that only needs a shard locked")
def shard_noop(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    return protocol.OK


@command("time", 1, "loading stale fast", where=SERVER, group="server", summary="Return the current server time")
def time_(conn: Connection, argv: list[bytes]) -> bytes:
    now = time.time_ns() // 1000
    return protocol.bulk_array([b"%d" % (now // 1_000_000), b"%d" % (now % 1_000_000)])


@command("shutdown", -1, "admin noscript loading stale", where=SERVER, group="server",
         summary="Stop the server (every worker) and release its memory")
def shutdown(conn: Connection, argv: list[bytes]) -> bytes | Pending:
    for raw in argv[1:]:
        if raw.upper() not in (b"NOSAVE", b"SAVE", b"NOW", b"FORCE", b"ABORT"):
            raise CommandError(errors.SYNTAX)
    if any(raw.upper() == b"ABORT" for raw in argv[1:]):
        raise CommandError("ERR No shutdown in progress.")
    os.kill(conn.worker.stats.global_get(G_SUPERVISOR_PID), signal.SIGTERM)
    return Pending(None)  # no reply: the connection closes as the server stops



# ---------------------------------------------------------------------- every shard's keys


@command("keys", 2, "readonly", where=SERVER, group="generic", summary="Find all keys matching the given pattern")
def keys(conn: Connection, argv: list[bytes]) -> Pending:
    async def run() -> bytes:
        replies = await conn.router.fan_out([b"__keys", argv[1]], conn.db, conn.proto)
        found: list[bytes] = []
        for reply in replies:
            if reply.startswith(b"-"):
                return reply
            items = read_reply(reply)[0]
            assert isinstance(items, list)
            found.extend(items)
        return protocol.bulk_array(found)

    return conn.router.reply_later(conn, run())


@command("scan", -2, "readonly", where=SERVER, group="generic", summary="Incrementally iterate the keys space")
def scan(conn: Connection, argv: list[bytes]) -> Pending:
    """The cursor is bucket * shards + shard: one call walks buckets of one shard, then the next."""
    cursor = parse_cursor(argv[1])
    count = 10
    extra: list[bytes] = []
    i = 2
    while i < len(argv):
        opt = argv[i].upper()
        if opt == b"COUNT" and i + 1 < len(argv):
            count = parse_int(argv[i + 1])
            if count < 1:
                raise CommandError(errors.SYNTAX)
        elif opt in (b"MATCH", b"TYPE") and i + 1 < len(argv):
            extra += [opt, argv[i + 1]]
        else:
            raise CommandError(errors.SYNTAX)
        i += 2
    shards = conn.worker.workers
    shard, bucket = cursor % shards, cursor // shards

    async def run() -> bytes:
        reply = await conn.router.call_shard(shard, [b"__scan", b"%d" % bucket, b"%d" % count, *extra],
                                             conn.db, conn.proto)
        if reply.startswith(b"-"):
            return reply
        parts = read_reply(reply)[0]
        assert isinstance(parts, list)
        next_bucket = int(parts[0])
        if next_bucket:
            cursor_out = next_bucket * shards + shard
        else:
            cursor_out = shard + 1 if shard + 1 < shards else 0
        return protocol.array([protocol.bulk(b"%d" % cursor_out), protocol.bulk_array(parts[1])])

    return conn.router.reply_later(conn, run())


@command("randomkey", 1, "readonly", where=SERVER, group="generic", summary="Return a random key from the keyspace")
def randomkey(conn: Connection, argv: list[bytes]) -> Pending:
    stores = conn.worker.stores

    async def run() -> bytes:
        weights = [s.keys_in(conn.db) for s in stores]
        order = [i for i in range(len(stores)) if weights[i]]
        if order:
            first = random.choices(order, weights=[weights[i] for i in order])[0]
            order.remove(first)
            order.insert(0, first)
        for shard in order:
            reply = await conn.router.call_shard(shard, [b"__randomkey"], conn.db, conn.proto)
            if reply.startswith(b"$") and reply != b"$-1\r\n":
                return reply
        return protocol.null(conn.proto)

    return conn.router.reply_later(conn, run())
