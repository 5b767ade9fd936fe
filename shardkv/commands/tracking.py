"""Client-side caching: CLIENT TRACKING / CACHING / GETREDIR / TRACKINGINFO, and the delivery of
invalidation messages to the clients of this worker.

The shard that owns a key keeps who tracks it (shardkv/tracking.py, the internal `__track*`
parts here run there).  A shard sends each invalidation to the worker of the tracking client
(`__invalidate`), which applies what only the client's own worker knows: its mode now (a key
tracked before it switched to BCAST is not announced), its protocol, and its redirection.  A
redirected message goes on to the target's worker (`__invalidateto`); a target that is gone
sends `tracking-redir-broken` back to the client (`__redirbroken`).

Messages are pushes, queued behind the replies the client is owed, so an invalidation caused by
a client's own command comes after that command's reply (after EXEC's, for a transaction).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from shardkv import errors, protocol
from shardkv.commands.args import ShardCtx, parse_int
from shardkv.commands.context import Client, Reply, WorkerClient, WorkerView
from shardkv.commands.table import Where, command, worker_command
from shardkv.errors import CommandError
from shardkv.stats import W_TRACKING_CLIENTS
from shardkv.tracking import EVERY_KEY, PER_KEY, PREFIX_BATCH, TrackingTable, prefix_collision

INVALIDATE_PUSH = b">2\r\n$10\r\ninvalidate\r\n"
INVALIDATE_MESSAGE = b"*3\r\n$7\r\nmessage\r\n$20\r\n__redis__:invalidate\r\n"  # RESP2, to a subscriber


@dataclass(slots=True)
class ClientTracking:
    """A client's tracking state (None on the client while tracking is off)."""

    redirect: int = 0  # the client that gets the messages (0: this one)
    bcast: bool = False
    optin: bool = False
    optout: bool = False
    noloop: bool = False
    prefixes: list[bytes] = field(default_factory=list)  # BCAST
    caching: bool = False  # CLIENT CACHING yes (OPTIN) / no (OPTOUT), for the next command or EXEC
    broken: bool = False  # the redirection target went away

    def flags(self) -> list[bytes]:
        out = [b"on"]
        if self.bcast:
            out.append(b"bcast")
        if self.optin:
            out.append(b"optin")
            if self.caching:
                out.append(b"caching-yes")
        if self.optout:
            out.append(b"optout")
            if self.caching:
                out.append(b"caching-no")
        if self.noloop:
            out.append(b"noloop")
        if self.broken:
            out.append(b"broken_redirect")
        return out

    def tracks_reads(self) -> bool:
        """Whether the client's next read-only command registers its keys."""
        if self.bcast:
            return False
        return not ((self.optin and not self.caching) or (self.optout and self.caching))


# ---------------------------------------------------------------------- CLIENT subcommands


def client_tracking(conn: Client, argv: list[bytes]) -> Reply:
    """CLIENT TRACKING (ON|OFF) [REDIRECT id] [BCAST] [PREFIX p ...] [OPTIN] [OPTOUT] [NOLOOP]."""
    redirect = 0
    bcast = optin = optout = noloop = False
    prefixes: list[bytes] = []
    j = 3
    while j < len(argv):
        opt = argv[j].lower()
        more = j + 1 < len(argv)
        if opt == b"redirect" and more:
            j += 1
            if redirect != 0:
                raise CommandError(errors.TRACKING_ONE_REDIRECT)
            redirect = parse_int(argv[j])
            if redirect <= 0:
                raise CommandError(errors.TRACKING_NO_SUCH_CLIENT)
        elif opt == b"bcast":
            bcast = True
        elif opt == b"optin":
            optin = True
        elif opt == b"optout":
            optout = True
        elif opt == b"noloop":
            noloop = True
        elif opt == b"prefix" and more:
            j += 1
            prefixes.append(argv[j])
        else:
            raise CommandError(errors.SYNTAX)
        j += 1
    mode = argv[2].lower()
    if mode == b"off":
        if redirect:
            return _after_client_check(conn, redirect, lambda: disable(conn))
        if conn.tracking is None or not conn.tracking.bcast:
            disable(conn)
            return protocol.OK
        disable(conn, drop_prefixes=False)
        server = conn.server

        async def dropped() -> bytes:  # gone from every worker before the reply
            await server.fan_out([b"__trackdrop", b"%d" % conn.id])
            return protocol.OK

        return server.later(conn, dropped())
    if mode != b"on":
        raise CommandError(errors.SYNTAX)
    old = conn.tracking
    if not bcast and prefixes:
        raise CommandError(errors.TRACKING_PREFIX_NEEDS_BCAST)
    if old is not None and old.bcast != bcast:
        raise CommandError(errors.TRACKING_SWITCH_BCAST)
    if bcast and (optin or optout):
        raise CommandError(errors.TRACKING_BCAST_OPTIN)
    if optin and optout:
        raise CommandError(errors.TRACKING_OPTIN_OPTOUT)
    if old is not None and ((optin and old.optout) or (optout and old.optin)):
        raise CommandError(errors.TRACKING_SWITCH_OPT)
    if bcast:
        collision = prefix_collision(old.prefixes if old is not None else [], prefixes)
        if collision is not None:
            raise CommandError(collision)

    def enable() -> None:
        t = conn.tracking
        if t is None:
            t = conn.tracking = ClientTracking()
            conn.server.stats.add(conn.server.worker_id, W_TRACKING_CLIENTS)
        t.redirect = redirect
        t.broken = False
        t.bcast, t.optin, t.optout, t.noloop = bcast, optin, optout, noloop
        if bcast:
            for prefix in prefixes or [b""]:
                if prefix not in t.prefixes:
                    t.prefixes.append(prefix)

    if not bcast:
        if redirect:
            return _after_client_check(conn, redirect, enable)
        enable()
        return protocol.OK
    server = conn.server
    registered = [*(old.prefixes if old is not None else []), *(prefixes or [b""])]

    async def register() -> bytes:
        if redirect and not await _client_exists(conn, redirect):
            return protocol.error(errors.TRACKING_NO_SUCH_CLIENT)
        # Every shard knows the prefixes before the reply: a write after it is announced.
        part = [b"__trackprefix", b"%d" % conn.id, b"1" if noloop else b"0", *registered]
        replies = await server.fan_out(part)
        if any(r.startswith(b"-") for r in replies):
            if old is None:
                for w in range(server.workers):
                    server.tell_shard(w, [b"__trackdrop", b"%d" % conn.id])
            return protocol.error(errors.TRACKING_PREFIXES_FULL)
        enable()
        return protocol.OK

    return server.later(conn, register())


def _after_client_check(conn: Client, client_id: int, then: Callable[[], None]) -> Reply:
    async def check() -> bytes:
        if not await _client_exists(conn, client_id):
            return protocol.error(errors.TRACKING_NO_SUCH_CLIENT)
        then()
        return protocol.OK

    return conn.server.later(conn, check())


async def _client_exists(conn: Client, client_id: int) -> bool:
    server = conn.server
    reply = await server.call_shard(client_id % server.workers, [b"__clientexists", b"%d" % client_id], 0, 2)
    return reply == protocol.ONE


def disable(conn: Client, drop_prefixes: bool = True) -> None:
    """Tracking off (CLIENT TRACKING OFF, RESET, disconnect).  Keys it tracked stay in the shards'
    tables until they change or are evicted, as in Redis; its BCAST prefixes go at once (unless
    the caller drops them itself)."""
    t = conn.tracking
    if t is None:
        return
    conn.tracking = None
    server = conn.server
    server.stats.add(server.worker_id, W_TRACKING_CLIENTS, -1)
    if t.bcast and drop_prefixes:
        for w in range(server.workers):
            server.tell_shard(w, [b"__trackdrop", b"%d" % conn.id])


def client_caching(conn: Client, argv: list[bytes]) -> bytes:
    t = conn.tracking
    if t is None:
        raise CommandError(errors.CACHING_NOT_TRACKING)
    opt = argv[2].lower()
    if opt == b"yes":
        if not t.optin:
            raise CommandError(errors.CACHING_YES)
    elif opt == b"no":
        if not t.optout:
            raise CommandError(errors.CACHING_NO)
    else:
        raise CommandError(errors.SYNTAX)
    t.caching = True
    return protocol.OK


def client_getredir(conn: Client) -> bytes:
    t = conn.tracking
    return protocol.integer(-1 if t is None else t.redirect)


def client_trackinginfo(conn: Client) -> bytes:
    t = conn.tracking
    flags = [b"off"] if t is None else t.flags()
    redirect = -1 if t is None else t.redirect
    prefixes = [] if t is None else t.prefixes
    return protocol.map_reply(conn.proto, [
        (protocol.bulk(b"flags"), protocol.bulk_array(flags)),
        (protocol.bulk(b"redirect"), protocol.integer(redirect)),
        (protocol.bulk(b"prefixes"), protocol.bulk_array(prefixes)),
    ])


def client_list_fields(conn: Client) -> tuple[str, int]:
    """CLIENT LIST: the tracking flags (t, B, R) and redir=."""
    t = conn.tracking
    if t is None:
        return "", -1
    return "t" + ("B" if t.bcast else "") + ("R" if t.broken else ""), t.redirect


# ---------------------------------------------------------------------- parts run on the key's shard


def _table(ctx: ShardCtx) -> TrackingTable:
    table = ctx.store.tracking_table
    assert table is not None, "the worker sets up its shard's tracking table at start"
    return table


@command("__track", -3, "readonly", where=Where.SHARD, group="internal",
         summary="A tracking client reads these keys of this shard: client id, keys")
def shard_track(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    _table(ctx).remember(int(argv[1]), argv[2:], ctx.stats.tunable("tracking-table-max-keys"))
    return protocol.OK


@command("__tracktrim", 1, "readonly", where=Where.SHARD, group="internal",
         summary="Evict tracked keys past tracking-table-max-keys (after CONFIG SET)")
def shard_track_trim(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    _table(ctx).enforce(ctx.stats.tunable("tracking-table-max-keys"))
    return protocol.OK


@command("__trackprefix", -4, "readonly", where=Where.SHARD, group="internal",
         summary="Register a BCAST client's prefixes: client id, noloop (0/1), prefixes")
def shard_track_prefix(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    if not _table(ctx).add_prefixes(int(argv[1]), argv[2] == b"1", argv[3:]):
        return protocol.error(errors.TRACKING_PREFIXES_FULL)
    return protocol.OK


@command("__trackdrop", 2, "readonly", where=Where.SHARD, group="internal",
         summary="Forget a client's BCAST prefixes: client id")
def shard_track_drop(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    _table(ctx).drop_prefixes(int(argv[1]))
    return protocol.OK


# ---------------------------------------------------------------------- delivery, on the client's worker


@worker_command("__clientexists", 2, summary="1 if this worker has a client with this id")
def worker_client_exists(worker: WorkerView, argv: list[bytes]) -> bytes:
    return protocol.ONE if worker.client_by_id(int(argv[1])) is not None else protocol.ZERO


@worker_command("__invalidate", -3, summary="Invalidations for a tracking client of this worker: id, kind, keys")
def worker_invalidate(worker: WorkerView, argv: list[bytes]) -> bytes:
    client = worker.client_by_id(int(argv[1]))
    if client is not None:
        invalidate(worker, client, argv[2], argv[3:])
    return protocol.OK


def invalidate(worker: WorkerView, client: WorkerClient, kind: bytes, keys: list[bytes]) -> None:
    t = client.tracking
    if t is None or (kind == PER_KEY and t.bcast) or (kind == PREFIX_BATCH and not t.bcast):
        return  # off now, or keys of the mode it left
    if not t.redirect:
        send(client, client.proto, kind, keys, redirected=False)
        return
    home = t.redirect % worker.workers
    if home != worker.id:
        worker.tell_worker(home, [b"__invalidateto", b"%d" % t.redirect, b"%d" % client.id,
                                  b"%d" % client.proto, kind, *keys])
        return
    target = worker.client_by_id(t.redirect)
    if target is None:
        redirection_broken(client)
    else:
        send(target, client.proto, kind, keys, redirected=True)


@worker_command("__invalidateto", -5,
                summary="Redirected invalidations: target id, tracking client id, its protocol, kind, keys")
def worker_invalidate_to(worker: WorkerView, argv: list[bytes]) -> bytes:
    target = worker.client_by_id(int(argv[1]))
    origin = int(argv[2])
    if target is not None:
        send(target, int(argv[3]), argv[4], argv[5:], redirected=True)
    else:
        home = origin % worker.workers
        part = [b"__redirbroken", argv[2], argv[1]]
        if home == worker.id:
            worker_redirection_broken(worker, part)
        else:
            worker.tell_worker(home, part)
    return protocol.OK


@worker_command("__redirbroken", 3, summary="A tracking client's redirection target is gone: client id, target id")
def worker_redirection_broken(worker: WorkerView, argv: list[bytes]) -> bytes:
    client = worker.client_by_id(int(argv[1]))
    if client is not None and client.tracking is not None and client.tracking.redirect == int(argv[2]):
        redirection_broken(client)
    return protocol.OK


@worker_command("__trackflush", 1, summary="Every key is invalid (a flush): a null to each tracking client here")
def worker_track_flush(worker: WorkerView, argv: list[bytes]) -> bytes:
    for client in worker.clients():
        if client.tracking is not None:
            invalidate(worker, client, EVERY_KEY, [])
    return protocol.OK


def redirection_broken(client: WorkerClient) -> None:
    t = client.tracking
    assert t is not None
    t.broken = True
    if client.proto == 3:
        client.push(b">2\r\n$21\r\ntracking-redir-broken\r\n" + protocol.integer(t.redirect))


def send(target: WorkerClient, origin_proto: int, kind: bytes, keys: list[bytes], redirected: bool) -> None:
    """The message itself: a RESP3 push, or a message on __redis__:invalidate to a RESP2
    subscriber that is a redirection target; a RESP2 client of its own gets nothing."""
    if target.proto == 3:
        head = INVALIDATE_PUSH
    elif redirected and (target.channels or target.patterns or target.shard_channels):
        head = INVALIDATE_MESSAGE
    else:
        return
    if kind == EVERY_KEY:
        target.push(head + protocol.null(origin_proto))
    elif kind == PREFIX_BATCH:
        target.push(head + protocol.bulk_array(keys))
    else:
        for key in keys:
            target.push(head + b"*1\r\n" + protocol.bulk(key))


__all__ = ["ClientTracking", "client_caching", "client_getredir", "client_list_fields", "client_tracking",
           "client_trackinginfo", "disable", "invalidate"]
