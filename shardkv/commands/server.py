"""Server commands: COMMAND, CONFIG, INFO, DBSIZE, FLUSHDB, FLUSHALL, TIME, SHUTDOWN, ROLE, WAIT.

Counts come from the shard headers and the stats segment, which every worker can read, so INFO
and DBSIZE need no message to other workers.  FLUSHDB / FLUSHALL run as a transaction over every
shard (`__flush` parts), so no client sees a half-flushed keyspace.
"""

from __future__ import annotations

import asyncio
import fnmatch
import os
import platform
import random
import sys
import time
from collections.abc import Callable

from shardkv import errors, protocol
from shardkv.commands import notify
from shardkv.commands.args import ShardCtx, parse_cursor, parse_int, parse_int32
from shardkv.commands.context import Client, Pending, Reply, Server
from shardkv.commands.keyspace import ScanPart
from shardkv.commands.table import Command, Where, acl_categories, client_command, command, lookup, public_commands
from shardkv.errors import CommandError
from shardkv.limits import REQUIREPASS_BYTES_MAX, Footprint
from shardkv.protocol import read_reply
from shardkv.stats import (
    CMD_WORDS,
    G_EXPIRED_BASE,
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
    W_TRACKING_CLIENTS,
    W_TRACKING_ITEMS,
    W_TRACKING_KEYS,
    W_TRACKING_PREFIXES,
)

SERVER = Where.SERVER
VERSION = "7.0.15"


# ---------------------------------------------------------------------- COMMAND


# Command flags in the order COMMAND INFO lists them (Redis's addReplyFlagsForCommand).
REPLY_FLAGS = (
    "write", "readonly", "denyoom", "module", "admin", "pubsub", "noscript", "blocking", "loading", "stale",
    "skip_monitor", "skip_slowlog", "asking", "fast", "no_auth", "no_mandatory_keys", "no_async_loading",
    "no_multi", "movablekeys", "allow_busy",
)


def _reply_flags(cmd: Command) -> list[str]:
    """The flags COMMAND INFO reports, in Redis's order; movablekeys is implied by find_keys,
    as Redis implies it from a key-finding function."""
    flags = set(cmd.flags)
    if cmd.find_keys is not None:
        flags.add("movablekeys")
    assert flags <= set(REPLY_FLAGS), f"{cmd.name}: unknown flags {flags - set(REPLY_FLAGS)}"
    return [f for f in REPLY_FLAGS if f in flags]


def _acl_categories(cmd: Command) -> list[bytes]:
    return [b"@" + c.encode() for c in cmd.acl_categories]


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
        protocol.set_reply(proto, [protocol.simple(f) for f in _reply_flags(cmd)]),
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


@client_command("command", -1, "loading stale", where=SERVER, group="server", acl="@connection",
         summary="Details about all commands",
         subcommands=("count", "info", "docs", "getkeys", "getkeysandflags", "list", "help"))
def command_(conn: Client, argv: list[bytes]) -> bytes:
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
    if sub in (b"getkeys", b"getkeysandflags") and len(argv) >= 3:
        cmd = _public(argv[2])
        if cmd is None:
            raise CommandError("ERR Invalid command specified")
        if not cmd.arity_ok(len(argv) - 2):
            raise CommandError("ERR Invalid number of arguments specified for command")
        positions = cmd.key_indexes(argv[2:])
        if not positions:
            if "no_mandatory_keys" in cmd.flags:  # EVAL / FCALL with no keys
                return protocol.EMPTY_ARRAY
            raise CommandError("ERR The command has no key arguments")
        if sub == b"getkeys":
            return protocol.bulk_array([argv[2 + i] for i in positions])
        default = "RO access" if cmd.readonly else "RW access update"
        return protocol.array([protocol.array([
            protocol.bulk(argv[2 + i]),
            protocol.set_reply(proto, [protocol.simple(f) for f in (
                cmd.key_flags[min(j, len(cmd.key_flags) - 1)] if cmd.key_flags else default).split()]),
        ]) for j, i in enumerate(positions)])
    if sub == b"list":
        # Commands and their subcommands ("config|get").  A subcommand is listed under its
        # command's categories and its group's, and @slow (Redis 7.0 has no fast subcommand), a
        # HELP under @slow only; Redis may list one under more (@admin, @dangerous, @read ...).
        entries = [(c.name.encode(), _acl_categories(c)) for c in public_commands()]
        for c in public_commands():
            cats = [*_acl_categories(c), *(b"@" + x.encode() for x in acl_categories((), c.group, None, False))]
            entries += [(f"{c.name}|{sub}".encode(), [b"@slow"] if sub == "help" else cats) for sub in c.subcommands]
        entries.sort()
        names = [name for name, _ in entries]
        if len(argv) == 5 and argv[2].upper() == b"FILTERBY":
            how, what = argv[3].upper(), argv[4].lower()
            if how == b"PATTERN":
                names = [n for n in names if fnmatch.fnmatchcase(n.decode(), what.decode(errors="replace"))]
            elif how == b"ACLCAT":
                names = [name for name, cats in entries if b"@" + what in cats]
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
                 "GETKEYSANDFLAGS <full-command>", "    The keys of a full command, with their access flags.",
                 "HELP", "    Print this help."]
        return protocol.array([protocol.simple(line) for line in lines])
    if sub in (b"count", b"getkeys", b"getkeysandflags", b"help"):
        raise CommandError(errors.wrong_arity(f"command|{sub.decode()}"))
    raise CommandError(errors.unknown_subcommand(argv[1], "command"))


def _public(name: bytes) -> Command | None:
    cmd = lookup(name)
    return None if cmd is None or cmd.internal else cmd


# ---------------------------------------------------------------------- CONFIG


def config_values(conn: Client) -> dict[str, str]:
    """Every parameter CONFIG GET knows, as text (the password as surrogate-escaped UTF-8, so
    that any bytes survive the round trip)."""
    lim = conn.server.limits
    password = conn.server.stats.password().decode("utf-8", errors="surrogateescape")
    return {
        "port": str(lim.port), "bind": lim.bind, "shards": str(lim.shards),
        "maxmemory": str(lim.maxmemory), "maxmemory-policy": "noeviction", "maxclients": str(lim.maxclients),
        "databases": str(lim.databases), "proto-max-bulk-len": str(lim.value_bytes_max),
        "client-query-buffer-limit": str(lim.query_buffer_bytes_max), "key-bytes-max": str(lim.key_bytes_max),
        "args-max": str(lim.args_max), "requirepass": password, "save": "", "appendonly": "no",
        "timeout": "0", "tcp-keepalive": "0", "io-threads": "1", "cluster-enabled": "no",
        "daemonize": "no", "dir": os.getcwd(), "dbfilename": "dump.rdb", "loglevel": "notice",
        **{name: str(conn.server.stats.tunable(name)) for name in (*TUNABLES, *TUNABLE_ALIASES)},
        "notify-keyspace-events": notify.format_flags(conn.server.stats.tunable("notify-keyspace-events")),
    }


def _config_set_failed(name: str, reason: str) -> CommandError:
    return CommandError(f"ERR CONFIG SET failed (possibly related to argument '{name}') - {reason}")


def _config_change(conn: Client, name: str, raw: bytes, fixed: dict[str, str]) -> Callable[[], None] | None:
    """Check one CONFIG SET pair and return what applies it (None: nothing changes).  Runtime
    parameters may change; boot-fixed ones only to the value they have."""
    stats = conn.server.stats
    if name == "notify-keyspace-events":
        flags = notify.parse_flags(raw.decode(errors="replace"))
        if flags is None:
            raise _config_set_failed(name, notify.INVALID_CLASS)
        return lambda: stats.set_tunable(name, flags)
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


def config_set(conn: Client, argv: list[bytes]) -> Reply:
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
    if "tracking-table-max-keys" in seen:
        server = conn.server

        async def trim() -> bytes:
            # One shard after the other, each seeing what those before it kept: the server
            # ends with exactly the new number of keys, as one Redis would.
            for shard in range(server.workers):
                await server.call_shard(shard, [b"__tracktrim"], 0, 2)
            return protocol.OK

        return server.later(conn, trim())
    return protocol.OK


# No flags, as Redis's CONFIG container has none; admin, noscript, loading and stale belong to its
# subcommands, which this table does not list as rows.
@client_command("config", -2, "", where=SERVER, group="server",
         summary="Read, change and reset server parameters",
         subcommands=("get", "set", "resetstat", "rewrite", "help"))
def config(conn: Client, argv: list[bytes]) -> Reply:
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
    if sub == b"rewrite" and len(argv) == 2:
        raise CommandError(errors.NO_CONFIG_FILE)  # parameters come from the command line only
    if sub == b"resetstat" and len(argv) == 2:
        stats = conn.server.stats
        for w in range(stats.workers):
            stats.reset(w)
        stats.global_set(G_EXPIRED_BASE, expired_keys(conn.server))
        return protocol.OK
    if sub == b"help" and len(argv) == 2:
        lines = ["CONFIG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                 "GET <pattern>", "    Return parameters matching the glob-like <pattern> and their values.",
                 "SET <directive> <value>", "    Set the configuration <directive> to <value>.",
                 "RESETSTAT", "    Reset statistics reported by the INFO command.",
                 "REWRITE", "    Rewrite the configuration file.",
                 "HELP", "    Print this help."]
        return protocol.array([protocol.simple(line) for line in lines])
    if sub in (b"get", b"set", b"resetstat", b"rewrite", b"help"):
        raise CommandError(errors.wrong_arity(f"config|{sub.decode()}"))
    raise CommandError(errors.unknown_subcommand(argv[1], "config"))


# Without cluster mode (the only mode so far) every CLUSTER subcommand answers as a standalone
# Redis does, so a cluster client learns where it is.
@client_command("cluster", -2, "", where=SERVER, group="cluster", summary="Cluster state and slots (disabled)",
                subcommands=("addslots", "addslotsrange", "bumpepoch", "count-failure-reports", "countkeysinslot",
                             "delslots", "delslotsrange", "failover", "flushslots", "forget", "getkeysinslot", "help",
                             "info", "keyslot", "links", "meet", "myid", "nodes", "replicas", "replicate", "reset",
                             "saveconfig", "set-config-epoch", "setslot", "shards", "slaves", "slots"))
def cluster(conn: Client, argv: list[bytes]) -> bytes:
    raise CommandError(errors.CLUSTER_DISABLED)


# ---------------------------------------------------------------------- INFO

# Redis 7.0's sections, in its order; "all" adds commandstats to the default ones.
INFO_DEFAULT = ["server", "clients", "memory", "persistence", "stats", "replication", "cpu", "modules",
                "errorstats", "cluster", "keyspace"]
INFO_ALL = INFO_DEFAULT[:8] + ["commandstats"] + INFO_DEFAULT[8:]


def expired_keys(server: Server) -> int:
    """Keys removed because their time passed, every shard's count since it was created."""
    return sum(s.expired_keys for s in server.stores)


def info_text(conn: Client, sections: list[str]) -> str:
    worker = conn.server
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
                ("worker_id", worker.worker_id), ("worker_pid", os.getpid()),
                ("worker_restarts", stats.total(W_RESTARTS)),
                ("workers_ready", stats.total(W_READY)),
            ])
        elif name == "clients":
            section("Clients", [
                ("connected_clients", stats.total(W_CONNECTED)), ("cluster_connections", 0),
                ("maxclients", lim.maxclients), ("client_recent_max_input_buffer", 0),
                ("client_recent_max_output_buffer", 0), ("blocked_clients", stats.total(W_BLOCKED)),
                ("tracking_clients", stats.total(W_TRACKING_CLIENTS)), ("clients_in_timeout_table", 0),
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
                ("used_memory_scripts", conn.server.scripts.cache_bytes()),
                ("number_of_cached_scripts", conn.server.scripts.cached_count()),
                ("number_of_functions", sum(len(lib.functions) for lib in conn.server.scripts.libraries.values())),
                ("number_of_libraries", len(conn.server.scripts.libraries)),
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
                ("expired_keys", expired_keys(worker) - stats.global_get(G_EXPIRED_BASE)), ("evicted_keys", 0),
                ("keyspace_hits", stats.total(W_HITS)), ("keyspace_misses", stats.total(W_MISSES)),
                ("pubsub_channels", 0), ("pubsub_patterns", 0),
                ("tracking_total_keys", stats.total(W_TRACKING_KEYS)),
                ("tracking_total_items", stats.total(W_TRACKING_ITEMS)),
                ("tracking_total_prefixes", max(stats.get(w, W_TRACKING_PREFIXES) for w in range(stats.workers))),
                ("total_error_replies", stats.error_totals()[0]),
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
        elif name == "modules":
            section("Modules", [])
        elif name == "cluster":
            section("Cluster", [("cluster_enabled", 0)])
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
                calls, usec, failed, rejected = _command_totals(conn, cmd)
                if calls or failed or rejected:
                    per_call = usec / calls if calls else 0
                    fields.append((f"cmdstat_{cmd.name}", f"calls={calls},usec={usec},usec_per_call={per_call:.2f},"
                                   f"rejected_calls={rejected},failed_calls={failed}"))
            section("Commandstats", fields)
        elif name == "errorstats":
            _, per_code = stats.error_totals()
            section("Errorstats", [(f"errorstat_{code.decode(errors='replace')}", f"count={n}")
                                   for code, n in sorted(per_code.items()) if n])
    return "\r\n".join(out) + "\r\n"


def _command_totals(conn: Client, cmd: Command) -> list[int]:
    """calls, usec, failed, rejected of one command, summed over the workers."""
    stats = conn.server.stats
    i = conn.server.command_index[cmd.name]
    totals = [0] * CMD_WORDS
    for w in range(stats.workers):
        base = stats.base(w) + W_COMMAND_STATS + CMD_WORDS * i
        for f in range(CMD_WORDS):
            totals[f] += stats.q[base + f]
    return totals


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


@client_command("info", -1, "loading stale", where=SERVER, group="server", acl="@dangerous",
         summary="Information and statistics")
def info(conn: Client, argv: list[bytes]) -> bytes:
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


@client_command("dbsize", 1, "readonly fast", where=SERVER, group="server", acl="@keyspace",
         summary="Number of keys in the selected database")
def dbsize(conn: Client, argv: list[bytes]) -> bytes:
    return protocol.integer(sum(s.keys_in(conn.db) for s in conn.server.stores))


def first_error(replies: dict[int, bytes]) -> bytes | None:
    """The first error reply among the parts' replies of a command run on every shard."""
    return next((r for r in replies.values() if r.startswith(b"-")), None)


def flush_generic(conn: Client, argv: list[bytes], every_db: bool) -> Pending:
    if len(argv) > 2 or (len(argv) == 2 and argv[1].upper() not in (b"ASYNC", b"SYNC")):
        raise CommandError(errors.SYNTAX)
    part = [b"__flush", b"all" if every_db else b"db"]
    server = conn.server
    parts = {s: list(part) for s in range(server.workers)}

    def merged(replies: dict[int, bytes]) -> bytes:
        error = first_error(replies)
        if error is not None:
            return error
        if server.stats.total(W_TRACKING_CLIENTS):  # as Redis: every tracking client gets a null
            for w in range(server.workers):
                server.tell_shard(w, [b"__trackflush"])
        return protocol.OK

    return server.transaction_reply(conn, parts, merged)


@client_command("flushdb", -1, "write", where=SERVER, group="server", acl="@keyspace @dangerous",
         summary="Remove all keys of the selected database")
def flushdb(conn: Client, argv: list[bytes]) -> Pending:
    return flush_generic(conn, argv, every_db=False)


@client_command("flushall", -1, "write", where=SERVER, group="server", acl="@keyspace @dangerous",
         summary="Remove all keys of every database")
def flushall(conn: Client, argv: list[bytes]) -> Pending:
    return flush_generic(conn, argv, every_db=True)


@command("__flush", 2, "write", where=Where.SHARD, group="internal", summary="Flush one shard (FLUSHDB/FLUSHALL part)")
def shard_flush(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    ctx.store.flush(None if argv[1] == b"all" else ctx.db)
    if ctx.store.tracking_table is not None:
        ctx.store.tracking_table.flush()
    return protocol.OK


@client_command("swapdb", 3, "write fast", where=SERVER, group="server", acl="@keyspace @dangerous",
         summary="Swap two databases")
def swapdb(conn: Client, argv: list[bytes]) -> Pending:
    a = parse_int32(argv[1], "ERR invalid first DB index")
    b = parse_int32(argv[2], "ERR invalid second DB index")
    if not (0 <= a < conn.server.limits.databases and 0 <= b < conn.server.limits.databases):
        raise CommandError(errors.DB_INDEX)
    parts = {s: [b"__swapdb", argv[1], argv[2]] for s in range(conn.server.workers)}
    return conn.server.transaction_reply(
        conn, parts, lambda replies: first_error(replies) or protocol.OK)


@command("__swapdb", 3, "write", where=Where.SHARD, group="internal", summary="SWAPDB on one shard")
def shard_swapdb(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    ctx.store.swap_dbs(int(argv[1]), int(argv[2]))
    return protocol.OK


@command("__noop", 1, "readonly", where=Where.SHARD, group="internal",
         summary="Nothing: the part of a transaction that only needs a shard locked")
def shard_noop(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    return protocol.OK


@client_command("time", 1, "loading stale fast", where=SERVER, group="server",
                summary="Return the current server time")
def time_(conn: Client, argv: list[bytes]) -> bytes:
    now = time.time_ns() // 1000
    return protocol.bulk_array([b"%d" % (now // 1_000_000), b"%d" % (now % 1_000_000)])


SHUTDOWN_SAVE_FAILED = "ERR Errors trying to SHUTDOWN. Check logs."


@client_command("shutdown", -1, "admin noscript loading stale no_multi allow_busy", where=SERVER, group="server",
         summary="Stop the server (every worker) and release its memory")
def shutdown(conn: Client, argv: list[bytes]) -> bytes | Pending:
    """Redis's rules for the modifiers.  shardkv keeps nothing on disk, so SAVE is a save that
    fails: Redis then refuses to stop and keeps serving, unless FORCE says to stop anyway."""
    modifiers = set()
    abort = False
    for raw in argv[1:]:
        modifier = raw.upper()
        if modifier == b"ABORT":
            abort = True
        elif modifier in (b"NOSAVE", b"SAVE", b"NOW", b"FORCE"):
            modifiers.add(modifier)
        else:
            raise CommandError(errors.SYNTAX)
    if (abort and modifiers) or {b"SAVE", b"NOSAVE"} <= modifiers:
        raise CommandError(errors.SYNTAX)
    if abort:
        raise CommandError("ERR No shutdown in progress.")
    if b"SAVE" in modifiers and b"FORCE" not in modifiers:
        print(f"worker {conn.server.worker_id}: SHUTDOWN SAVE refused: shardkv has no persistence to save to "
              f"(SHUTDOWN SAVE FORCE stops anyway)", file=sys.stderr, flush=True)
        raise CommandError(SHUTDOWN_SAVE_FAILED)
    conn.server.shutdown()
    return Pending(None)  # no reply: the connection closes as the server stops


@client_command("save", 1, "admin noscript no_async_loading no_multi", where=SERVER, group="server",
                summary="Synchronously save the dataset to disk")
def save(conn: Client, argv: list[bytes]) -> bytes:
    """shardkv keeps nothing on disk yet: SAVE fails the way a Redis save that cannot write
    does (a bare ERR), and says why in the log."""
    print(f"worker {conn.server.worker_id}: SAVE refused: shardkv has no persistence to save to",
          file=sys.stderr, flush=True)
    raise CommandError("ERR")


# ---------------------------------------------------------------------- replication (none)


@client_command("role", 1, "noscript loading stale fast", where=SERVER, group="server", acl="@admin @dangerous",
         summary="Return the role of the instance in the context of replication")
def role(conn: Client, argv: list[bytes]) -> bytes:
    """A master with no replicas, at replication offset 0."""
    return protocol.array([protocol.bulk(b"master"), protocol.ZERO, protocol.EMPTY_ARRAY])


WAIT_POLL_S = 0.1  # how soon a WAIT that can never be satisfied notices its client left


@client_command("wait", 3, "noscript", where=SERVER, group="generic", acl="@connection",
         summary="Wait for the synchronous replication of all the write commands sent in the context of the "
                 "current connection")
def wait(conn: Client, argv: list[bytes]) -> bytes | Pending:
    """No replica ever acknowledges: WAIT for none answers 0 at once; WAIT for some blocks the
    client, as Redis does, until the timeout (0: until it disconnects) and then answers 0."""
    replicas = parse_int(argv[1])
    timeout_ms = parse_int(argv[2], errors.TIMEOUT_NOT_INTEGER)
    if timeout_ms < 0:
        raise CommandError(errors.TIMEOUT_NEGATIVE)
    if replicas <= 0 or conn.executing:  # in EXEC nothing blocks: it answers at once, as in Redis
        return protocol.ZERO
    return conn.server.later(conn, _wait_out(conn, timeout_ms))  # the client blocks


async def _wait_out(conn: Client, timeout_ms: int) -> bytes:
    stats, me = conn.server.stats, conn.server.worker_id
    stats.add(me, W_BLOCKED)
    try:
        deadline = time.monotonic() + timeout_ms / 1000 if timeout_ms else float("inf")
        while conn.connected:
            left_s = deadline - time.monotonic()
            if left_s <= 0:
                break
            await asyncio.sleep(min(left_s, WAIT_POLL_S))
    finally:
        stats.add(me, W_BLOCKED, -1)
    return protocol.ZERO


# ---------------------------------------------------------------------- every shard's keys


@client_command("keys", 2, "readonly", where=SERVER, group="generic", acl="@keyspace @dangerous",
         summary="Find all keys matching the given pattern")
def keys(conn: Client, argv: list[bytes]) -> Pending:
    async def run() -> bytes:
        replies = await conn.server.fan_out([b"__keys", argv[1]], conn.db, conn.proto)
        found: list[bytes] = []
        for reply in replies:
            if reply.startswith(b"-"):
                return reply
            items = read_reply(reply)[0]
            assert isinstance(items, list)
            found.extend(items)
        return protocol.bulk_array(found)

    return conn.server.later(conn, run())


@client_command("scan", -2, "readonly", where=SERVER, group="generic",
                summary="Incrementally iterate the keys space")
def scan(conn: Client, argv: list[bytes]) -> Pending:
    """The cursor is bucket * shards + shard: one call walks buckets of one shard, then the next."""
    cursor = parse_cursor(argv[1])
    count = 10
    match: bytes | None = None
    kind: bytes | None = None
    i = 2
    while i < len(argv):
        opt = argv[i].upper()
        if opt == b"COUNT" and i + 1 < len(argv):
            count = parse_int(argv[i + 1])
            if count < 1:
                raise CommandError(errors.SYNTAX)
        elif opt == b"MATCH" and i + 1 < len(argv):
            match = argv[i + 1]
        elif opt == b"TYPE" and i + 1 < len(argv):
            kind = argv[i + 1].lower()
        else:
            raise CommandError(errors.SYNTAX)
        i += 2
    shards = conn.server.workers
    shard, bucket = cursor % shards, cursor // shards

    async def run() -> bytes:
        part = ScanPart(bucket, count, match, kind)
        reply = await conn.server.call_shard(shard, part.encode(), conn.db, conn.proto)
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

    return conn.server.later(conn, run())


@client_command("randomkey", 1, "readonly", where=SERVER, group="generic",
                summary="Return a random key from the keyspace")
def randomkey(conn: Client, argv: list[bytes]) -> Pending:
    stores = conn.server.stores

    async def run() -> bytes:
        weights = [s.keys_in(conn.db) for s in stores]
        order = [i for i in range(len(stores)) if weights[i]]
        if order:
            first = random.choices(order, weights=[weights[i] for i in order])[0]
            order.remove(first)
            order.insert(0, first)
        for shard in order:
            reply = await conn.server.call_shard(shard, [b"__randomkey"], conn.db, conn.proto)
            if reply.startswith(b"$") and reply != b"$-1\r\n":
                return reply
        return protocol.null(conn.proto)

    return conn.server.later(conn, run())
