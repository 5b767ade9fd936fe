"""Connection commands: PING, ECHO, QUIT, SELECT, AUTH, HELLO, CLIENT.

Handlers take the `Connection` and argv.  CLIENT LIST / KILL see the clients of every worker:
the router asks each worker for its part (`__clients`, `__kill`) and joins the answers.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import TYPE_CHECKING, Any

from shardkv import errors, protocol
from shardkv.commands.args import parse_int
from shardkv.commands.table import Where, command
from shardkv.errors import CommandError
from shardkv.protocol import read_reply
from shardkv.router.dispatch import Pending

if TYPE_CHECKING:
    from shardkv.router.connection import Connection
    from shardkv.worker.process import Worker

CONN = Where.CONNECTION
SERVER_VERSION = b"7.0.15"


@command("ping", -1, "fast", where=CONN, group="connection", summary="Ping the server")
def ping(conn: Connection, argv: list[bytes]) -> bytes:
    if len(argv) > 2:
        raise CommandError(errors.wrong_arity("ping"))
    return protocol.bulk(argv[1]) if len(argv) == 2 else protocol.PONG


@command("echo", 2, "fast", where=CONN, group="connection", summary="Echo the given string")
def echo(conn: Connection, argv: list[bytes]) -> bytes:
    return protocol.bulk(argv[1])


@command("quit", -1, "fast", where=CONN, group="connection", summary="Close the connection")
def quit_(conn: Connection, argv: list[bytes]) -> bytes:
    conn.closing = True
    return protocol.OK


@command("select", 2, "fast", where=CONN, group="connection", summary="Change the selected database")
def select(conn: Connection, argv: list[bytes]) -> bytes:
    db = parse_int(argv[1])
    if not 0 <= db < conn.worker.limits.databases:
        raise CommandError(errors.DB_INDEX)
    conn.db = db
    return protocol.OK


def check_password(conn: Connection, user: bytes, password: bytes) -> None:
    """Compare digests, not passwords: equal lengths, and compare_digest takes the same time
    wherever they differ, so neither the length nor a prefix of the password leaks by timing."""
    given = hashlib.sha256(password).digest()
    expected = conn.worker.stats.password_digest()
    if not hmac.compare_digest(given, expected) or user != b"default":
        raise CommandError(errors.WRONGPASS)
    conn.authenticated = True


@command("auth", -2, "fast noscript loading stale", where=CONN, group="connection",
         summary="Authenticate to the server")
def auth(conn: Connection, argv: list[bytes]) -> bytes:
    if len(argv) > 3:
        raise CommandError(errors.SYNTAX)
    if not conn.worker.stats.password_set():
        if len(argv) == 2:
            raise CommandError(errors.AUTH_NOT_CONFIGURED)
        if argv[1] != b"default":
            raise CommandError(errors.WRONGPASS)
        return protocol.OK
    user, password = (b"default", argv[1]) if len(argv) == 2 else (argv[1], argv[2])
    check_password(conn, user, password)
    return protocol.OK


@command("hello", -1, "fast noscript loading stale", where=CONN, group="connection",
         summary="Handshake: choose the protocol version, authenticate, name the connection")
def hello(conn: Connection, argv: list[bytes]) -> bytes:
    proto = conn.proto
    if len(argv) >= 2:
        try:
            proto = parse_int(argv[1])
        except CommandError:
            raise CommandError("ERR Protocol version is not an integer or out of range") from None
        if proto not in (2, 3):
            raise CommandError(errors.PROTO_UNSUPPORTED)
    name = None
    i = 2
    while i < len(argv):
        opt = argv[i].upper()
        if opt == b"AUTH" and i + 2 < len(argv):
            if not conn.worker.stats.password_set():
                if argv[i + 1] != b"default":
                    raise CommandError(errors.WRONGPASS)
            else:
                check_password(conn, argv[i + 1], argv[i + 2])
            i += 3
        elif opt == b"SETNAME" and i + 1 < len(argv):
            name = argv[i + 1]
            check_client_name(name)
            i += 2
        else:
            raise CommandError(f"ERR Syntax error in HELLO option '{argv[i].decode(errors='replace')}'")
    if not conn.authenticated:
        raise CommandError(
            "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO "
            "<proto> AUTH <user> <pass> option can be used to authenticate the client and select "
            "the RESP protocol version at the same time")
    if name is not None:
        conn.name = name
    conn.proto = proto
    fields = [
        (b"server", protocol.bulk(b"redis")),
        (b"version", protocol.bulk(SERVER_VERSION)),
        (b"proto", protocol.integer(proto)),
        (b"id", protocol.integer(conn.id)),
        (b"mode", protocol.bulk(b"standalone")),
        (b"role", protocol.bulk(b"master")),
        (b"modules", protocol.EMPTY_ARRAY),
    ]
    return protocol.map_reply(proto, [(protocol.bulk(k), v) for k, v in fields])


def check_client_name(name: bytes) -> None:
    if any(c < 33 or c > 126 for c in name):
        raise CommandError("ERR Client names cannot contain spaces, newlines or special characters.")


CLIENT_HELP = [
    "CLIENT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "ID", "    Return the ID of the current connection.",
    "GETNAME", "    Return the name of the current connection.",
    "SETNAME <name>", "    Assign the name <name> to the current connection.",
    "SETINFO <LIB-NAME|LIB-VER> <value>", "    Set client library name or version.",
    "INFO", "    Return information about the current client connection.",
    "LIST [TYPE (NORMAL|MASTER|REPLICA|PUBSUB)] [ID <id> [<id> ...]]",
    "    Return information about client connections.",
    "KILL <ip:port>", "    Kill connection made from <ip:port>.",
    "UNBLOCK <clientid> [TIMEOUT|ERROR]",
    "    Unblock the specified blocked client.",
    "KILL <option> <value> [<option> <value> [...]]",
    "    Kill connections. Options are: ID <client-id>, ADDR <ip:port>, LADDR <ip:port>, SKIPME (YES|NO).",
    "HELP", "    Print this help.",
]


@command("client", -2, "", where=CONN, group="connection", summary="Inspect and manage client connections",
         subcommands=("id", "getname", "setname", "setinfo", "info", "list", "kill", "unblock", "help"))
def client(conn: Connection, argv: list[bytes]) -> bytes | Pending:
    sub = argv[1].lower()
    n = len(argv)
    if sub == b"id" and n == 2:
        return protocol.integer(conn.id)
    if sub == b"getname" and n == 2:
        return protocol.bulk(conn.name) if conn.name else protocol.null(conn.proto)
    if sub == b"setname" and n == 3:
        check_client_name(argv[2])
        conn.name = argv[2]
        return protocol.OK
    if sub == b"setinfo" and n == 4:
        attr = argv[2].lower()
        if any(c < 33 or c > 126 for c in argv[3]):
            raise CommandError(f"ERR {argv[2].decode(errors='replace')} cannot contain spaces, newlines or "
                               "special characters.")
        if attr == b"lib-name":
            conn.lib_name = argv[3]
        elif attr == b"lib-ver":
            conn.lib_ver = argv[3]
        else:
            raise CommandError(f"ERR Unrecognized option '{argv[2].decode(errors='replace')}'")
        return protocol.OK
    if sub == b"info" and n == 2:
        return protocol.verbatim(conn.proto, conn.client_info().encode() + b"\n")
    if sub == b"list":
        return client_list(conn, argv)
    if sub == b"kill" and n >= 3:
        return client_kill(conn, argv)
    if sub == b"unblock" and n in (3, 4):
        client_id = parse_int(argv[2])
        mode = argv[3].upper() if n == 4 else b"TIMEOUT"
        if mode not in (b"TIMEOUT", b"ERROR"):
            raise CommandError("ERR CLIENT UNBLOCK reason should be TIMEOUT or ERROR")
        return fan_out_sum(conn, [b"__unblock", b"%d" % client_id, mode])
    if sub == b"help" and n == 2:
        return protocol.array([protocol.simple(line) for line in CLIENT_HELP])
    if sub in (b"id", b"getname", b"setname", b"setinfo", b"info", b"help", b"kill", b"unblock"):
        raise CommandError(errors.wrong_arity(f"client|{sub.decode()}"))
    raise CommandError(errors.unknown_subcommand(argv[1], "client"))


def client_list(conn: Connection, argv: list[bytes]) -> Pending:
    ids: list[bytes] = []
    i = 2
    while i < len(argv):
        opt = argv[i].upper()
        if opt == b"TYPE" and i + 1 < len(argv):
            kind = argv[i + 1].lower()
            if kind not in (b"normal", b"master", b"replica", b"slave", b"pubsub"):
                raise CommandError(f"ERR Unknown client type '{argv[i + 1].decode(errors='replace')}'")
            if kind != b"normal":
                ids = [b"-1"]  # no such clients here
            i += 2
        elif opt == b"ID" and i + 1 < len(argv):
            for raw in argv[i + 1 :]:
                if parse_int(raw, "ERR Invalid client ID") <= 0:
                    raise CommandError("ERR Invalid client ID")
            ids = argv[i + 1 :]
            break
        else:
            raise CommandError(errors.SYNTAX)
    return fan_out_text(conn, [b"__clients", *ids])


def client_kill(conn: Connection, argv: list[bytes]) -> Pending:
    if len(argv) == 3:  # old form: CLIENT KILL addr
        return fan_out_sum(conn, [b"__kill", b"ADDR", argv[2], b"SKIPME", b"NO", b"OLD", b"%d" % conn.id])
    filters = argv[2:]
    if len(filters) % 2:
        raise CommandError(errors.SYNTAX)
    for i in range(0, len(filters), 2):
        opt = filters[i].upper()
        if opt == b"ID":
            parse_int(filters[i + 1], "ERR client-id should be greater than 0")
        elif opt == b"SKIPME":
            if filters[i + 1].lower() not in (b"yes", b"no"):
                raise CommandError(errors.SYNTAX)
        elif opt == b"TYPE":
            if filters[i + 1].lower() not in (b"normal", b"master", b"replica", b"slave", b"pubsub"):
                raise CommandError(f"ERR Unknown client type '{filters[i + 1].decode(errors='replace')}'")
        elif opt not in (b"ADDR", b"LADDR", b"USER", b"MAXAGE"):
            raise CommandError(errors.SYNTAX)
    return fan_out_sum(conn, [b"__kill", *filters, b"ME", b"%d" % conn.id])


def fan_out_text(conn: Connection, argv: list[bytes]) -> Pending:
    pending = Pending(conn)

    async def run() -> None:
        replies = await conn.router.fan_out(argv)
        text = b"".join(r for r in (read_reply(x)[0] for x in replies) if isinstance(r, bytes))
        pending.resolve(protocol.verbatim(conn.proto, text))

    conn.worker.spawn(run())
    return pending


def fan_out_sum(conn: Connection, argv: list[bytes]) -> Pending:
    pending = Pending(conn)

    async def run() -> None:
        replies = await conn.router.fan_out(argv)
        total = sum(r for r in (read_reply(x)[0] for x in replies) if isinstance(r, int))
        old_form = b"OLD" in argv
        if old_form:
            pending.resolve(protocol.OK if total else protocol.error("ERR No such client"))
        else:
            pending.resolve(protocol.integer(total))

    conn.worker.spawn(run())
    return pending


@command("__clients", -1, "", where=Where.WORKER, group="internal", summary="This worker's CLIENT LIST lines")
def worker_clients(worker: Worker, argv: list[bytes]) -> bytes:
    ids = {int(x) for x in argv[1:]}
    lines = [c.client_info() + "\n" for c in sorted(worker.connections, key=lambda c: c.id)
             if c.transport is not None and (not ids or c.id in ids)]
    return protocol.bulk("".join(lines).encode())


@command("__unblock", 3, "", where=Where.WORKER, group="internal", summary="CLIENT UNBLOCK on this worker")
def worker_unblock(worker: Worker, argv: list[bytes]) -> bytes:
    return protocol.ONE if worker.blocking.unblock(int(argv[1]), argv[2] == b"ERROR") else protocol.ZERO


@command("__kill", -1, "", where=Where.WORKER, group="internal", summary="Kill this worker's matching clients")
def worker_kill(worker: Worker, argv: list[bytes]) -> bytes:
    args = argv[1:]
    me = int(args[args.index(b"ME") + 1]) if b"ME" in args else int(args[args.index(b"OLD") + 1])
    skipme = True
    filters: list[tuple[bytes, bytes]] = []
    for i in range(0, len(args) - 1, 2):
        opt, value = args[i].upper(), args[i + 1]
        if opt == b"SKIPME":
            skipme = value.lower() == b"yes"
        elif opt not in (b"ME", b"OLD"):
            filters.append((opt, value))
    killed = 0
    for c in list(worker.connections):
        if c.transport is None or (skipme and c.id == me):
            continue
        if all(_matches(c, opt, value) for opt, value in filters):
            killed += 1
            c.closing = True
            c.flush()
            if c.transport is not None:
                c.transport.close()
    return protocol.integer(killed)


def _matches(c: Any, opt: bytes, value: bytes) -> bool:
    if opt == b"ID":
        return bool(c.id == int(value))
    if opt == b"ADDR":
        return bool(c.addr.encode() == value)
    if opt == b"LADDR":
        return bool(c.laddr.encode() == value)
    if opt == b"USER":
        return value == b"default"
    if opt == b"TYPE":
        return value.lower() == b"normal"
    if opt == b"MAXAGE":
        import time
        return bool(time.monotonic() - c.created > int(value))
    return False
