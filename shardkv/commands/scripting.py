"""Lua scripting: EVAL, EVALSHA, EVAL_RO, EVALSHA_RO and SCRIPT (LOAD EXISTS FLUSH KILL HELP).

The arguments, the shebang (`#!lua flags=...`) and the replies are Redis 7.0's; the script runs
through the server's script runner (router/scripts.py: every shard locked, an undo log on each,
the interpreter in scripting/engine.py).
"""

from __future__ import annotations

import hashlib
import time

from shardkv import errors, protocol
from shardkv.commands.args import glob_matcher, parse_int
from shardkv.commands.context import Client, Reply, WorkerView
from shardkv.commands.table import Where, client_command, worker_command
from shardkv.errors import CommandError
from shardkv.scripting.dump import BadPayload, dump, restore
from shardkv.scripting.engine import library_name as library_metadata_name
from shardkv.stats import G_SCRIPT_FUNCTION, G_SCRIPT_KILL, G_SCRIPT_STARTED_MS, G_SCRIPT_WORKER, G_SCRIPT_WROTE

SERVER = Where.SERVER
SHEBANG_FLAGS = ("no-writes", "allow-oom", "allow-stale", "no-cluster", "allow-cross-slot-keys")


def shebang_flags(body: bytes) -> frozenset[str] | None:
    """The flags of a `#!lua flags=...` first line; None without a shebang (compatibility mode)."""
    if not body.startswith(b"#!"):
        return None
    end = body.find(b"\n")
    if end < 0:
        raise CommandError("ERR Invalid script shebang")
    tokens = body[:end].split()
    if not tokens or tokens[0] != b"#!lua":
        raise CommandError(f"ERR Unexpected engine in script shebang: {_text(tokens[0] if tokens else b'')}")
    flags: set[str] = set()
    for token in tokens[1:]:
        if not token.startswith(b"flags="):
            raise CommandError(f"ERR Unknown lua shebang option: {_text(token)}")
        for flag in token[6:].split(b","):
            if not flag:
                continue
            name = flag.decode(errors="replace")
            if name not in SHEBANG_FLAGS:
                raise CommandError(f"ERR Unexpected flag in script shebang: {_text(flag)}")
            flags.add(name)
    return frozenset(flags)


def _text(b: bytes) -> str:
    return b.decode("utf-8", "surrogateescape")


def numkeys_keys(argv: list[bytes]) -> list[int]:
    """Key positions of EVAL / FCALL (COMMAND GETKEYS): numkeys at argv[2], then the keys."""
    try:
        n = int(argv[2])
    except (IndexError, ValueError):
        return []
    return list(range(3, 3 + n)) if 0 < n <= len(argv) - 3 else []


def _keys_and_args(argv: list[bytes], not_integer: str = errors.NOT_INTEGER) -> tuple[list[bytes], list[bytes]]:
    """EVAL's and FCALL's keys and arguments, split at numkeys (argv[2])."""
    numkeys = parse_int(argv[2], not_integer)
    if numkeys < 0:
        raise CommandError("ERR Number of keys can't be negative")
    if numkeys > len(argv) - 3:
        raise CommandError("ERR Number of keys can't be greater than number of args")
    return argv[3 : 3 + numkeys], argv[3 + numkeys :]


def _run(client: Client, sha: bytes, body: bytes, argv: list[bytes], ro_command: bool) -> Reply:
    keys, args = _keys_and_args(argv)
    flags = shebang_flags(body)
    readonly = ro_command
    if flags is not None:
        if "no-writes" in flags:
            readonly = True
        elif ro_command:
            raise CommandError("ERR Can not execute a script with write flag using *_ro command.")
    return client.server.scripts.run(client, sha, body, keys, args, readonly)


def _eval(client: Client, argv: list[bytes], ro: bool) -> Reply:
    body = argv[1]
    return _run(client, hashlib.sha1(body).hexdigest().encode(), body, argv, ro)


def _evalsha(client: Client, argv: list[bytes], ro: bool) -> Reply:
    sha = argv[1].lower()
    body = client.server.scripts.lookup(sha) if len(sha) == 40 else None
    if body is None:
        raise CommandError(errors.NOSCRIPT)
    return _run(client, sha, body, argv, ro)


@client_command("eval", -3, "noscript skip_monitor stale no_mandatory_keys movablekeys", where=SERVER,
                group="scripting", summary="Execute a Lua script server side", find_keys=numkeys_keys)
def eval_(client: Client, argv: list[bytes]) -> Reply:
    return _eval(client, argv, ro=False)


@client_command("eval_ro", -3, "readonly noscript skip_monitor stale no_mandatory_keys movablekeys", where=SERVER,
                group="scripting", summary="Execute a read-only Lua script server side", find_keys=numkeys_keys)
def eval_ro(client: Client, argv: list[bytes]) -> Reply:
    return _eval(client, argv, ro=True)


@client_command("evalsha", -3, "noscript skip_monitor stale no_mandatory_keys movablekeys", where=SERVER,
                group="scripting", summary="Execute a Lua script server side", find_keys=numkeys_keys)
def evalsha(client: Client, argv: list[bytes]) -> Reply:
    return _evalsha(client, argv, ro=False)


@client_command("evalsha_ro", -3, "readonly noscript skip_monitor stale no_mandatory_keys movablekeys",
                where=SERVER, group="scripting", summary="Execute a read-only Lua script server side",
                find_keys=numkeys_keys)
def evalsha_ro(client: Client, argv: list[bytes]) -> Reply:
    return _evalsha(client, argv, ro=True)


SCRIPT_HELP = [
    "SCRIPT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "DEBUG (YES|SYNC|NO)",
    "    Set the debug mode for subsequent scripts executed.",
    "EXISTS <sha1> [<sha1> ...]",
    "    Return information about the existence of the scripts in the script cache.",
    "FLUSH [ASYNC|SYNC]",
    "    Flush the Lua scripts cache. Very dangerous on replicas.",
    "    When called without the optional mode argument, the behavior is determined by the",
    "    lazyfree-lazy-user-flush configuration directive. Valid modes are:",
    "    * ASYNC: Asynchronously flush the scripts cache.",
    "    * SYNC: Synchronously flush the scripts cache.",
    "KILL",
    "    Kill the currently executing Lua script.",
    "LOAD <script>",
    "    Load a script into the scripts cache without executing it.",
    "HELP",
    "    Prints this help.",
]


@client_command("script", -2, "", where=SERVER, group="scripting",
                subcommands=("load", "exists", "flush", "kill", "help"),
                summary="A container for Lua scripts management commands")
def script(client: Client, argv: list[bytes]) -> Reply:
    sub = argv[1].lower()
    scripts = client.server.scripts
    n = len(argv)
    if sub == b"load" and n == 3:
        body = argv[2]
        shebang_flags(body)
        sha = hashlib.sha1(body).hexdigest().encode()
        error = scripts.load(sha, body)
        if error is not None:
            return error
        server = client.server

        async def stored() -> bytes:  # in the shared cache (worker 0 writes it) before the reply
            answer = await server.call_shard(0, [b"__scriptstore", sha, body], 0, 2)
            return answer if answer.startswith(b"-") else protocol.bulk(sha)

        return server.later(client, stored())
    if sub == b"exists" and n >= 3:
        return protocol.array([protocol.ONE if scripts.exists(s.lower()) else protocol.ZERO for s in argv[2:]])
    if sub == b"flush" and n <= 3:
        if n == 3 and argv[2].upper() not in (b"ASYNC", b"SYNC"):
            raise CommandError("ERR SCRIPT FLUSH only support SYNC|ASYNC option")
        server = client.server

        async def flush_everywhere() -> bytes:
            await server.fan_out([b"__scriptflush"])
            return protocol.OK

        return server.later(client, flush_everywhere())
    if sub == b"kill" and n == 2:
        return _kill(client, function=False)
    if sub == b"help" and n == 2:
        return protocol.array([protocol.simple(line) for line in SCRIPT_HELP])
    if sub in (b"load", b"exists", b"flush", b"kill", b"help"):
        raise CommandError(errors.wrong_arity(f"script|{sub.decode()}"))
    raise CommandError(errors.unknown_subcommand(argv[1], "script"))


def _kill(client: Client, function: bool) -> bytes:
    """SCRIPT KILL / FUNCTION KILL: ask the running script (on any worker) to stop at its next hook."""
    stats = client.server.stats
    if not stats.global_get(G_SCRIPT_WORKER):
        raise CommandError("NOTBUSY No scripts in execution right now.")
    running_function = bool(stats.global_get(G_SCRIPT_FUNCTION))
    if running_function != function:  # each KILL stops only its own kind; the text names the running one's
        raise CommandError(errors.BUSY_FUNCTION if running_function else errors.BUSY_SCRIPT)
    if stats.global_get(G_SCRIPT_WROTE):
        raise CommandError("UNKILLABLE Sorry the script already executed write commands against the dataset. "
                           "You can either wait the script termination or kill the server in a hard way using "
                           "the SHUTDOWN NOSAVE command.")
    stats.global_set(G_SCRIPT_KILL, 1)
    return protocol.OK


@worker_command("__scriptstore", 3, summary="Worker 0: write a script into the shared cache: sha, body")
def worker_script_store(worker: WorkerView, argv: list[bytes]) -> bytes:
    return worker.scripts.store(argv[1], argv[2]) or protocol.OK


@worker_command("__scriptflush", 1, summary="SCRIPT FLUSH on one worker")
def worker_script_flush(worker: WorkerView, argv: list[bytes]) -> bytes:
    worker.scripts.flush()
    return protocol.OK


# ---------------------------------------------------------------------- functions


def _fcall(client: Client, argv: list[bytes], ro: bool) -> Reply:
    keys, args = _keys_and_args(argv, "ERR Bad number of keys provided")
    scripts = client.server.scripts
    found = scripts.function(argv[1].decode(errors="surrogateescape"))
    if found is None:
        raise CommandError("ERR Function not found")
    lib, fn = found
    if ro and "no-writes" not in fn.flags:
        raise CommandError("ERR Can not execute a script with write flag using *_ro command.")
    return scripts.fcall(client, lib, fn, keys, args, ro, argv)


@client_command("fcall", -3, "noscript skip_monitor stale no_mandatory_keys movablekeys", where=SERVER,
                group="scripting", summary="Invoke a function", find_keys=numkeys_keys)
def fcall(client: Client, argv: list[bytes]) -> Reply:
    return _fcall(client, argv, ro=False)


@client_command("fcall_ro", -3, "readonly noscript skip_monitor stale no_mandatory_keys movablekeys", where=SERVER,
                group="scripting", summary="Invoke a read-only function", find_keys=numkeys_keys)
def fcall_ro(client: Client, argv: list[bytes]) -> Reply:
    return _fcall(client, argv, ro=True)


FUNCTION_HELP = [
    "FUNCTION <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "LOAD [REPLACE] <FUNCTION CODE>",
    "    Create a new library with the given library name and code.",
    "DELETE <LIBRARY NAME>",
    "    Delete the given library.",
    "LIST [LIBRARYNAME PATTERN] [WITHCODE]",
    "    Return general information on all the libraries:",
    "    * Library name",
    "    * The engine used to run the Library",
    "    * Library description",
    "    * Functions list",
    "    * Library code (if WITHCODE is given)",
    "    It also possible to get only function that matches a pattern using LIBRARYNAME argument.",
    "STATS",
    "    Return information about the current function running:",
    "    * Function name",
    "    * Command used to run the function",
    "    * Duration in MS that the function is running",
    "    If no function is running, return nil",
    "    In addition, returns a list of available engines.",
    "KILL",
    "    Kill the current running function.",
    "FLUSH [ASYNC|SYNC]",
    "    Delete all the libraries.",
    "    When called without the optional mode argument, the behavior is determined by the",
    "    lazyfree-lazy-user-flush configuration directive. Valid modes are:",
    "    * ASYNC: Asynchronously flush the libraries.",
    "    * SYNC: Synchronously flush the libraries.",
    "DUMP",
    "    Return a serialized payload representing the current libraries, can be restored using FUNCTION RESTORE "
    "command",
    "RESTORE <PAYLOAD> [FLUSH|APPEND|REPLACE]",
    "    Restore the libraries represented by the given payload, it is possible to give a restore policy to",
    "    control how to handle existing libraries (default APPEND):",
    "    * FLUSH: delete all existing libraries.",
    "    * APPEND: appends the restored libraries to the existing libraries. On collision, abort.",
    "    * REPLACE: appends the restored libraries to the existing libraries, On collision, replace the old",
    "      libraries with the new libraries (notice that even on this option there is a chance of failure",
    "      in case of functions name collision with another library).",
    "HELP",
    "    Prints this help.",
]


def _log_change(client: Client, kind: bytes, body: bytes, reply: bytes) -> Reply:
    """Have worker 0 log a library change; once it has, this worker applies it and replies."""
    server = client.server

    async def log() -> bytes:
        answer = await server.call_shard(0, [b"__functionlog", kind, body], 0, 2)
        if answer.startswith(b"-"):
            return answer
        server.scripts.sync_functions()
        return reply

    return server.later(client, log())


@client_command("function", -2, "", where=SERVER, group="scripting",
                subcommands=("load", "delete", "flush", "list", "stats", "kill", "dump", "restore", "help"),
                summary="A container for function commands")
def function(client: Client, argv: list[bytes]) -> Reply:
    sub = argv[1].lower()
    n = len(argv)
    scripts = client.server.scripts
    if sub == b"load" and n >= 3:
        replace = False
        for opt in argv[2:-1]:
            if opt.upper() == b"REPLACE":
                replace = True
            else:
                raise CommandError(f"ERR Unknown option given: {_text(opt)}")
        code = argv[-1]
        name = scripts.check_library(code, replace)
        return _log_change(client, b"load", code, protocol.bulk(name.encode()))
    if sub == b"delete" and n == 3:
        scripts.sync_functions()
        lib = scripts.libraries.get(argv[2].decode(errors="replace").lower())
        if lib is None or lib.name != argv[2].decode(errors="replace"):
            raise CommandError("ERR Library not found")
        return _log_change(client, b"delete", argv[2], protocol.OK)
    if sub == b"flush":
        if n > 3:
            raise CommandError("ERR unknown subcommand or wrong number of arguments for 'flush'. Try FUNCTION HELP.")
        if n == 3 and argv[2].upper() not in (b"ASYNC", b"SYNC"):
            raise CommandError("ERR FUNCTION FLUSH only supports SYNC|ASYNC option")
        return _log_change(client, b"flush", b"", protocol.OK)
    if sub == b"list":
        return _function_list(client, argv)
    if sub == b"dump" and n == 2:
        scripts.sync_functions()
        return protocol.bulk(dump([lib.code for lib in scripts.libraries.values()]))
    if sub == b"restore":
        if n not in (3, 4):
            raise CommandError("ERR unknown subcommand or wrong number of arguments for 'restore'. "
                               "Try FUNCTION HELP.")
        return _function_restore(client, argv)
    if sub == b"stats" and n == 2:
        return _function_stats(client)
    if sub == b"kill" and n == 2:
        return _kill(client, function=True)
    if sub == b"help" and n == 2:
        return protocol.array([protocol.simple(line) for line in FUNCTION_HELP])
    if sub in (b"load", b"delete", b"flush", b"stats", b"kill", b"dump", b"restore", b"help"):
        raise CommandError(errors.wrong_arity(f"function|{sub.decode()}"))
    raise CommandError(errors.unknown_subcommand(argv[1], "function"))


def _function_restore(client: Client, argv: list[bytes]) -> Reply:
    """FUNCTION RESTORE payload [FLUSH|APPEND|REPLACE]: every library is checked first; then all
    are logged, or none."""
    policy = argv[3].upper() if len(argv) == 4 else b"APPEND"
    if policy not in (b"FLUSH", b"APPEND", b"REPLACE"):
        raise CommandError("ERR Wrong restore policy given, value should be either FLUSH, APPEND or REPLACE.")
    try:
        codes = restore(argv[2])
    except BadPayload:
        raise CommandError("ERR DUMP payload version or checksum are wrong") from None
    scripts = client.server.scripts
    scripts.sync_functions()
    existing = {} if policy == b"FLUSH" else dict(scripts.libraries)
    names: list[str] = []
    taken: dict[str, str] = {fn.name.lower(): lib.name for lib in existing.values() for fn in lib.functions}
    for code in codes:
        try:
            name = library_metadata_name(code)
        except CommandError as exc:
            raise CommandError(exc.text) from None
        old = existing.get(name.lower())
        if old is not None:
            if policy == b"APPEND":
                raise CommandError(f"ERR Library {name} already exists")
            for fn in old.functions:
                taken.pop(fn.name.lower(), None)
        for fn_name in scripts.function_names(code):
            if fn_name.lower() in taken:
                raise CommandError(f"ERR Function {fn_name} already exists")
            taken[fn_name.lower()] = name
        names.append(name)
    server = client.server

    async def log_all() -> bytes:
        if policy == b"FLUSH":
            answer = await server.call_shard(0, [b"__functionlog", b"flush", b""], 0, 2)
            if answer.startswith(b"-"):
                return answer
        for code in codes:
            answer = await server.call_shard(0, [b"__functionlog", b"load", code], 0, 2)
            if answer.startswith(b"-"):
                return answer
        server.scripts.sync_functions()
        return protocol.OK

    return server.later(client, log_all())


FLAG_ORDER = ("no-writes", "allow-oom", "allow-stale", "no-cluster", "allow-cross-slot-keys")


def _function_list(client: Client, argv: list[bytes]) -> bytes:
    with_code = False
    pattern: bytes | None = None
    i = 2
    while i < len(argv):
        opt = argv[i].upper()
        if opt == b"WITHCODE" and not with_code:
            with_code = True
            i += 1
        elif opt == b"LIBRARYNAME" and pattern is None:
            if i + 1 >= len(argv):
                raise CommandError("ERR library name argument was not given")
            pattern = argv[i + 1]
            i += 2
        else:
            raise CommandError(f"ERR Unknown argument {_text(argv[i])}")
    scripts = client.server.scripts
    scripts.sync_functions()
    proto = client.proto
    match = glob_matcher(pattern.lower()) if pattern is not None else None
    out = []
    for lib in scripts.libraries.values():
        if match is not None and not match(lib.name.lower().encode()):
            continue
        functions = []
        for fn in lib.functions:
            flags = [protocol.simple(f) for f in FLAG_ORDER if f in fn.flags]
            functions.append(protocol.map_reply(proto, [
                (protocol.bulk(b"name"), protocol.bulk(fn.name.encode())),
                (protocol.bulk(b"description"),
                 protocol.bulk(fn.description.encode()) if fn.description is not None else protocol.null(proto)),
                (protocol.bulk(b"flags"), protocol.set_reply(proto, flags)),
            ]))
        pairs = [(protocol.bulk(b"library_name"), protocol.bulk(lib.name.encode())),
                 (protocol.bulk(b"engine"), protocol.bulk(b"LUA")),
                 (protocol.bulk(b"functions"), protocol.array(functions))]
        if with_code:
            pairs.append((protocol.bulk(b"library_code"), protocol.bulk(lib.code)))
        out.append(protocol.map_reply(proto, pairs))
    return protocol.array(out)


def _function_stats(client: Client) -> bytes:
    scripts = client.server.scripts
    scripts.sync_functions()
    proto = client.proto
    stats = client.server.stats
    running = protocol.null(proto)
    if stats.global_get(G_SCRIPT_WORKER) and stats.global_get(G_SCRIPT_FUNCTION):
        duration = max(0, int(time.time() * 1000) - stats.global_get(G_SCRIPT_STARTED_MS))
        running = protocol.map_reply(proto, [
            (protocol.bulk(b"name"), protocol.bulk(scripts.running_name.encode())),
            (protocol.bulk(b"command"), protocol.bulk_array(scripts.running_command)),
            (protocol.bulk(b"duration_ms"), protocol.integer(duration)),
        ])
    functions = sum(len(lib.functions) for lib in scripts.libraries.values())
    engines = protocol.map_reply(proto, [(protocol.bulk(b"LUA"), protocol.map_reply(proto, [
        (protocol.bulk(b"libraries_count"), protocol.integer(len(scripts.libraries))),
        (protocol.bulk(b"functions_count"), protocol.integer(functions)),
    ]))])
    return protocol.map_reply(proto, [(protocol.bulk(b"running_script"), running),
                                      (protocol.bulk(b"engines"), engines)])


@worker_command("__functionlog", 3, summary="Worker 0: log a library change: load <code>, delete <name>, flush")
def worker_function_log(worker: WorkerView, argv: list[bytes]) -> bytes:
    return worker.scripts.log_function_change(argv[1], argv[2]) or protocol.OK
