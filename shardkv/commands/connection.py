"""Connection commands: PING, ECHO, QUIT, SELECT, AUTH, HELLO, CLIENT.

Handlers take the client (`context.Client`) and argv.  CLIENT LIST / KILL see the clients of every worker:
the router asks each worker for its part (`__clients`, `__kill`) and joins the answers.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from shardkv import errors, protocol
from shardkv.commands import tracking
from shardkv.commands.args import db_index, decode_optional, encode_optional, parse_int
from shardkv.commands.context import REPLY_OFF, REPLY_ON, REPLY_SKIP, Client, Pending, Reply, WorkerClient, WorkerView
from shardkv.commands.multi import reset_multi, unwatch_all
from shardkv.commands.table import Where, client_command, worker_command
from shardkv.errors import CommandError
from shardkv.protocol import read_reply

CONN = Where.CONNECTION
SERVER_VERSION = b"7.0.15"


@client_command("ping", -1, "fast", where=CONN, group="connection", summary="Ping the server")
def ping(conn: Client, argv: list[bytes]) -> bytes:
    if len(argv) > 2:
        raise CommandError(errors.wrong_arity("ping"))
    if conn.proto == 2 and (conn.channels or conn.patterns or conn.shard_channels):
        return protocol.bulk_array([b"pong", argv[1] if len(argv) == 2 else b""])  # as a subscriber sees it
    return protocol.bulk(argv[1]) if len(argv) == 2 else protocol.PONG


@client_command("reset", 1, "noscript loading stale fast no_auth allow_busy", where=CONN, group="connection",
                summary="Reset the connection")
def reset(conn: Client, argv: list[bytes]) -> bytes:
    """Back to a fresh connection's state: no MULTI or WATCH, no subscriptions (no replies for
    them), db 0, RESP2, no name, replies on, and authenticated only if no password is set."""
    reset_multi(conn)
    unwatch_all(conn)
    conn.server.pubsub.drop(conn)
    tracking.disable(conn)
    conn.db = 0
    conn.proto = 2
    conn.name = b""
    conn.reply_mode = REPLY_ON
    conn.authenticated = not conn.server.stats.password_set()
    return protocol.simple("RESET")


@client_command("echo", 2, "fast", where=CONN, group="connection", summary="Echo the given string")
def echo(conn: Client, argv: list[bytes]) -> bytes:
    return protocol.bulk(argv[1])


@client_command("quit", -1, "fast", where=CONN, group="connection", summary="Close the connection")
def quit_(conn: Client, argv: list[bytes]) -> bytes:
    conn.closing = True
    return protocol.OK


@client_command("select", 2, "fast", where=CONN, group="connection", summary="Change the selected database")
def select(conn: Client, argv: list[bytes]) -> bytes:
    conn.db = db_index(argv[1], conn.server.limits.databases)
    return protocol.OK


def check_password(conn: Client, user: bytes, password: bytes) -> None:
    """Compare digests, not passwords: equal lengths, and compare_digest takes the same time
    wherever they differ, so neither the length nor a prefix of the password leaks by timing."""
    given = hashlib.sha256(password).digest()
    expected = conn.server.stats.password_digest()
    if not hmac.compare_digest(given, expected) or user != b"default":
        raise CommandError(errors.WRONGPASS)
    conn.authenticated = True


@client_command("auth", -2, "fast noscript loading stale", where=CONN, group="connection",
         summary="Authenticate to the server")
def auth(conn: Client, argv: list[bytes]) -> bytes:
    if len(argv) > 3:
        raise CommandError(errors.SYNTAX)
    if not conn.server.stats.password_set():
        if len(argv) == 2:
            raise CommandError(errors.AUTH_NOT_CONFIGURED)
        if argv[1] != b"default":
            raise CommandError(errors.WRONGPASS)
        return protocol.OK
    user, password = (b"default", argv[1]) if len(argv) == 2 else (argv[1], argv[2])
    check_password(conn, user, password)
    return protocol.OK


@client_command("hello", -1, "fast noscript loading stale", where=CONN, group="connection",
         summary="Handshake: choose the protocol version, authenticate, name the connection")
def hello(conn: Client, argv: list[bytes]) -> bytes:
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
            if not conn.server.stats.password_set():
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
            raise CommandError(f"ERR Syntax error in HELLO option '{argv[i].decode(errors='surrogateescape')}'")
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
    "REPLY (ON|OFF|SKIP)", "    Control the replies sent to the current connection.",
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
    "TRACKING (ON|OFF) [REDIRECT <id>] [BCAST] [PREFIX <prefix> [...]] [OPTIN] [OPTOUT] [NOLOOP]",
    "    Turn invalidation messages for client-side caching on or off.",
    "CACHING (YES|NO)",
    "    In OPTIN (OPTOUT) mode: track (do not track) the keys the next command reads.",
    "GETREDIR", "    The client the invalidation messages go to (0: this one, -1: tracking is off).",
    "TRACKINGINFO", "    This connection's tracking mode, redirection and prefixes.",
    "HELP", "    Print this help.",
]


@client_command("client", -2, "", where=CONN, group="connection", summary="Inspect and manage client connections",
         subcommands=("id", "getname", "setname", "setinfo", "info", "list", "kill", "unblock", "reply", "tracking",
                      "caching", "getredir", "trackinginfo", "help"))
def client(conn: Client, argv: list[bytes]) -> Reply:
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
            raise CommandError(f"ERR {argv[2].decode(errors='surrogateescape')} cannot contain spaces, newlines or "
                               "special characters.")
        if attr == b"lib-name":
            conn.lib_name = argv[3]
        elif attr == b"lib-ver":
            conn.lib_ver = argv[3]
        else:
            raise CommandError(f"ERR Unrecognized option '{argv[2].decode(errors='surrogateescape')}'")
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
    if sub == b"reply" and n == 3:
        # The connection drops the replies: of every command while OFF, of the next after SKIP.
        mode = argv[2].lower()
        if mode == b"on":
            conn.reply_mode = REPLY_ON
            return protocol.OK
        if mode == b"off":
            conn.reply_mode = REPLY_OFF
            return b""
        if mode == b"skip":
            if conn.reply_mode != REPLY_OFF:
                conn.reply_mode = REPLY_SKIP
            return b""
        raise CommandError(errors.SYNTAX)
    if sub == b"tracking" and n >= 3:
        return tracking.client_tracking(conn, argv)
    if sub == b"caching" and n >= 3:
        return tracking.client_caching(conn, argv)
    if sub == b"getredir" and n == 2:
        return tracking.client_getredir(conn)
    if sub == b"trackinginfo" and n == 2:
        return tracking.client_trackinginfo(conn)
    if sub == b"help" and n == 2:
        return protocol.array([protocol.simple(line) for line in CLIENT_HELP])
    if sub in (b"id", b"getname", b"setname", b"setinfo", b"info", b"help", b"kill", b"unblock", b"reply",
               b"tracking", b"caching", b"getredir", b"trackinginfo"):
        raise CommandError(errors.wrong_arity(f"client|{sub.decode()}"))
    raise CommandError(errors.unknown_subcommand(argv[1], "client"))


def client_list(conn: Client, argv: list[bytes]) -> Pending:
    ids: list[bytes] = []
    i = 2
    while i < len(argv):
        opt = argv[i].upper()
        if opt == b"TYPE" and i + 1 < len(argv):
            kind = argv[i + 1].lower()
            if kind not in (b"normal", b"master", b"replica", b"slave", b"pubsub"):
                raise CommandError(f"ERR Unknown client type '{argv[i + 1].decode(errors='surrogateescape')}'")
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


@dataclass(frozen=True, slots=True)
class KillFilter:
    """CLIENT KILL's filters, sent to every worker as `__kill` (fixed positions, so no value of
    the client's can be mistaken for an option)."""

    caller_id: int
    skipme: bool
    client_id: int = 0  # 0: any
    addr: bytes | None = None
    laddr: bytes | None = None
    kind: bytes | None = None  # normal, master, replica, pubsub

    def encode(self) -> list[bytes]:
        return [b"__kill", b"%d" % self.caller_id, b"1" if self.skipme else b"0", b"%d" % self.client_id,
                encode_optional(self.addr), encode_optional(self.laddr), encode_optional(self.kind)]

    @staticmethod
    def decode(argv: list[bytes]) -> KillFilter:
        assert argv[0] == b"__kill" and len(argv) == 7, argv
        addr, laddr, kind = (decode_optional(raw) for raw in argv[4:7])
        return KillFilter(int(argv[1]), argv[2] == b"1", int(argv[3]), addr, laddr, kind)

    def matches(self, c: WorkerClient) -> bool:
        if self.skipme and c.id == self.caller_id:
            return False
        return ((not self.client_id or c.id == self.client_id)
                and (self.addr is None or c.addr.encode() == self.addr)
                and (self.laddr is None or c.laddr.encode() == self.laddr)
                and (self.kind is None or self.kind == b"normal"))


CLIENT_TYPES = {b"normal": b"normal", b"master": b"master", b"replica": b"replica", b"slave": b"replica",
                b"pubsub": b"pubsub"}


def client_kill(conn: Client, argv: list[bytes]) -> Pending:
    if len(argv) == 3:  # the old form: CLIENT KILL addr, which may kill the caller too
        old = KillFilter(conn.id, skipme=False, addr=argv[2])
        return fan_out_sum(conn, old.encode(), old_form=True)
    fields: dict[str, object] = {}
    skipme = True
    for i in range(2, len(argv), 2):
        opt = argv[i].upper()
        if i + 1 >= len(argv):
            raise CommandError(errors.SYNTAX)
        value = argv[i + 1]
        if opt == b"ID":
            n = parse_int(value, "ERR client-id should be greater than 0")
            if n <= 0:
                raise CommandError("ERR client-id should be greater than 0")
            fields["client_id"] = n
        elif opt == b"TYPE":
            if value.lower() not in CLIENT_TYPES:
                raise CommandError(f"ERR Unknown client type '{value.decode(errors='surrogateescape')}'")
            fields["kind"] = CLIENT_TYPES[value.lower()]
        elif opt == b"ADDR":
            fields["addr"] = value
        elif opt == b"LADDR":
            fields["laddr"] = value
        elif opt == b"USER":
            if value != b"default":
                raise CommandError(f"ERR No such user '{value.decode(errors='surrogateescape')}'")
        elif opt == b"SKIPME":
            if value.lower() not in (b"yes", b"no"):
                raise CommandError(errors.SYNTAX)
            skipme = value.lower() == b"yes"
        else:
            raise CommandError(errors.SYNTAX)
    kill = KillFilter(conn.id, skipme, **fields)  # type: ignore[arg-type]
    return fan_out_sum(conn, kill.encode())


def fan_out_text(conn: Client, argv: list[bytes]) -> Pending:
    async def run() -> bytes:
        replies = await conn.server.fan_out(argv)
        text = b"".join(r for r in (read_reply(x)[0] for x in replies) if isinstance(r, bytes))
        return protocol.verbatim(conn.proto, text)

    return conn.server.later(conn, run())


def fan_out_sum(conn: Client, argv: list[bytes], old_form: bool = False) -> Pending:
    async def run() -> bytes:
        replies = await conn.server.fan_out(argv)
        total = sum(r for r in (read_reply(x)[0] for x in replies) if isinstance(r, int))
        if old_form:
            return protocol.OK if total else protocol.error("ERR No such client")
        return protocol.integer(total)

    return conn.server.later(conn, run())


@worker_command("__clients", -1, summary="This worker's CLIENT LIST lines")
def worker_clients(worker: WorkerView, argv: list[bytes]) -> bytes:
    ids = {int(x) for x in argv[1:]}
    lines = [c.client_info() + "\n" for c in sorted(worker.clients(), key=lambda c: c.id)
             if not ids or c.id in ids]
    return protocol.bulk("".join(lines).encode())


@worker_command("__unblock", 3, summary="CLIENT UNBLOCK on this worker")
def worker_unblock(worker: WorkerView, argv: list[bytes]) -> bytes:
    return protocol.ONE if worker.unblock(int(argv[1]), argv[2] == b"ERROR") else protocol.ZERO


@worker_command("__kill", 7, summary="Kill this worker's clients that match CLIENT KILL's filters")
def worker_kill(worker: WorkerView, argv: list[bytes]) -> bytes:
    kill = KillFilter.decode(argv)
    killed = [c for c in worker.clients() if kill.matches(c)]
    for c in killed:
        c.kill(after_reply=c.id == kill.caller_id)
    return protocol.integer(len(killed))
