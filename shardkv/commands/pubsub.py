"""Pub/sub: SUBSCRIBE, PSUBSCRIBE, SSUBSCRIBE, their UNSUBSCRIBEs, PUBLISH, SPUBLISH, PUBSUB.

Each worker keeps the subscriptions of its own clients (`Subscriptions`).  PUBLISH delivers to
the subscribers of the publisher's worker at once and sends the message to every other worker
(`__publish`), each of which delivers to its own; the reply counts every receiver.  Messages from
one client arrive in the order it published them: its next command waits for the reply, and the
rings between two workers are FIFO.  A subscriber that does not read piles up its messages until
its output limit (`client-output-buffer-limit pubsub`) closes it; the publisher never waits on it.

Shard channels (SSUBSCRIBE / SPUBLISH) are a namespace of their own; without cluster mode every
worker serves them all, as a standalone Redis does.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from shardkv import errors, protocol
from shardkv.commands.args import glob_matcher
from shardkv.commands.context import Client, Reply, Server, WorkerView
from shardkv.commands.table import Where, client_command, worker_command
from shardkv.errors import CommandError

CONNECTION, SERVER = Where.CONNECTION, Where.SERVER
CHANNEL, PATTERN, SHARD = "channel", "pattern", "shard"


@dataclass(frozen=True, slots=True)
class Kind:
    """One of the three kinds of subscription: its reply words and its client-side set."""

    name: str
    subscribe: bytes
    unsubscribe: bytes
    message: bytes


KINDS = {
    CHANNEL: Kind(CHANNEL, b"subscribe", b"unsubscribe", b"message"),
    PATTERN: Kind(PATTERN, b"psubscribe", b"punsubscribe", b"pmessage"),
    SHARD: Kind(SHARD, b"ssubscribe", b"sunsubscribe", b"smessage"),
}


def subscriptions_of(client: Client, kind: str) -> dict[bytes, None]:
    return client.channels if kind == CHANNEL else client.patterns if kind == PATTERN else client.shard_channels


def count_for(client: Client, kind: str) -> int:
    """The count a (un)subscribe reply carries: channels and patterns together, or shard channels."""
    if kind == SHARD:
        return len(client.shard_channels)
    return len(client.channels) + len(client.patterns)


def push(client: Client, items: list[bytes | int | None]) -> bytes:
    """An out-of-band message: a RESP3 push, or in RESP2 the array Redis sends instead."""
    head = b">%d\r\n" % len(items) if client.proto == 3 else b"*%d\r\n" % len(items)
    out = [head]
    for item in items:
        if item is None:
            out.append(protocol.null(client.proto))
        elif isinstance(item, int):
            out.append(protocol.integer(item))
        else:
            out.append(protocol.bulk(item))
    return b"".join(out)


class Subscriptions:
    """The subscriptions of one worker's clients, bounded by `subscriptions_max` entries."""

    def __init__(self, subscriptions_max: int) -> None:
        self.subscriptions_max = subscriptions_max
        self.table: dict[str, dict[bytes, dict[Client, None]]] = {CHANNEL: {}, PATTERN: {}, SHARD: {}}
        self.matchers: dict[bytes, object] = {}
        self.entries = 0

    def add(self, client: Client, kind: str, name: bytes) -> bool:
        """Subscribe; False if it already was.  Raises past the limit."""
        mine = subscriptions_of(client, kind)
        if name in mine:
            return False
        if self.entries >= self.subscriptions_max:
            raise CommandError(errors.SUBSCRIPTIONS_FULL)
        self.table[kind].setdefault(name, {})[client] = None
        if kind == PATTERN and name not in self.matchers:
            self.matchers[name] = glob_matcher(name)
        mine[name] = None
        self.entries += 1
        return True

    def remove(self, client: Client, kind: str, name: bytes) -> bool:
        mine = subscriptions_of(client, kind)
        if name not in mine:
            return False
        del mine[name]
        clients = self.table[kind][name]
        del clients[client]
        if not clients:
            del self.table[kind][name]
            self.matchers.pop(name, None)
        self.entries -= 1
        return True

    def drop(self, client: Client) -> None:
        """The client left (or RESET): every subscription ends."""
        for kind in KINDS:
            for name in list(subscriptions_of(client, kind)):
                self.remove(client, kind, name)

    def deliver(self, shard: bool, channel: bytes, message: bytes) -> int:
        """Hand a published message to this worker's subscribers; returns how many got it."""
        received = 0
        if shard:
            for client in self.table[SHARD].get(channel, ()):
                client.push(push(client, [b"smessage", channel, message]))
                received += 1
            return received
        for client in self.table[CHANNEL].get(channel, ()):
            client.push(push(client, [b"message", channel, message]))
            received += 1
        for pattern, clients in self.table[PATTERN].items():
            if self.matchers[pattern](channel):  # type: ignore[operator]
                for client in clients:
                    client.push(push(client, [b"pmessage", pattern, channel, message]))
                    received += 1
        return received

    def names(self, kind: str) -> Iterable[bytes]:
        return self.table[kind].keys()

    def subscribers(self, kind: str, name: bytes) -> int:
        return len(self.table[kind].get(name, ()))


# ---------------------------------------------------------------------- subscribing


def _subscribe(client: Client, argv: list[bytes], kind: str) -> bytes:
    hub = client.server.pubsub
    out = []
    for name in argv[1:]:
        hub.add(client, kind, name)
        out.append(push(client, [KINDS[kind].subscribe, name, count_for(client, kind)]))
    return b"".join(out)


def _unsubscribe(client: Client, argv: list[bytes], kind: str) -> bytes:
    hub = client.server.pubsub
    names = argv[1:] or list(subscriptions_of(client, kind))
    if not names:
        return push(client, [KINDS[kind].unsubscribe, None, count_for(client, kind)])
    out = []
    for name in names:
        hub.remove(client, kind, name)
        out.append(push(client, [KINDS[kind].unsubscribe, name, count_for(client, kind)]))
    return b"".join(out)


@client_command("subscribe", -2, "pubsub noscript loading stale", where=CONNECTION, group="pubsub",
                summary="Listen for messages published to the given channels")
def subscribe(client: Client, argv: list[bytes]) -> bytes:
    return _subscribe(client, argv, CHANNEL)


@client_command("psubscribe", -2, "pubsub noscript loading stale", where=CONNECTION, group="pubsub",
                summary="Listen for messages published to channels matching the given patterns")
def psubscribe(client: Client, argv: list[bytes]) -> bytes:
    return _subscribe(client, argv, PATTERN)


@client_command("ssubscribe", -2, "pubsub noscript loading stale", where=CONNECTION, group="pubsub",
                summary="Listen for messages published to the given shard channels")
def ssubscribe(client: Client, argv: list[bytes]) -> bytes:
    return _subscribe(client, argv, SHARD)


@client_command("unsubscribe", -1, "pubsub noscript loading stale", where=CONNECTION, group="pubsub",
                summary="Stop listening for messages posted to the given channels")
def unsubscribe(client: Client, argv: list[bytes]) -> bytes:
    return _unsubscribe(client, argv, CHANNEL)


@client_command("punsubscribe", -1, "pubsub noscript loading stale", where=CONNECTION, group="pubsub",
                summary="Stop listening for messages posted to channels matching the given patterns")
def punsubscribe(client: Client, argv: list[bytes]) -> bytes:
    return _unsubscribe(client, argv, PATTERN)


@client_command("sunsubscribe", -1, "pubsub noscript loading stale", where=CONNECTION, group="pubsub",
                summary="Stop listening for messages posted to the given shard channels")
def sunsubscribe(client: Client, argv: list[bytes]) -> bytes:
    return _unsubscribe(client, argv, SHARD)


# ---------------------------------------------------------------------- publishing


def _publish(client: Client, channel: bytes, message: bytes, shard: bool) -> Reply:
    server = client.server
    here = server.pubsub.deliver(shard, channel, message)
    if server.workers == 1:
        return protocol.integer(here)
    part = [b"__publish", b"1" if shard else b"0", channel, message]

    async def elsewhere() -> bytes:
        replies = await server.fan_out(part, exclude_self=True)
        return protocol.integer(here + sum(int(r[1:-2]) for r in replies if r.startswith(b":")))

    return server.later(client, elsewhere())


@client_command("publish", 3, "pubsub loading stale fast", where=SERVER, group="pubsub",
                summary="Post a message to a channel")
def publish(client: Client, argv: list[bytes]) -> Reply:
    return _publish(client, argv[1], argv[2], shard=False)


@client_command("spublish", 3, "pubsub loading stale fast", where=SERVER, group="pubsub",
                summary="Post a message to a shard channel")
def spublish(client: Client, argv: list[bytes]) -> Reply:
    return _publish(client, argv[1], argv[2], shard=True)


@worker_command("__publish", -4, summary="Deliver published messages to this worker's subscribers: shard?, "
                                         "then channel, message pairs")
def worker_publish(worker: WorkerView, argv: list[bytes]) -> bytes:
    shard = argv[1] == b"1"
    return protocol.integer(sum(worker.pubsub.deliver(shard, argv[i], argv[i + 1]) for i in range(2, len(argv) - 1, 2)))


# ---------------------------------------------------------------------- PUBSUB introspection

PUBSUB_HELP = [
    "PUBSUB <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "CHANNELS [<pattern>]",
    "    Return the currently active channels matching a <pattern> (default: '*').",
    "NUMPAT",
    "    Return number of subscriptions to patterns.",
    "NUMSUB [<channel> ...]",
    "    Return the number of subscribers for the specified channels, excluding",
    "    pattern subscriptions(default: no channels).",
    "SHARDCHANNELS [<pattern>]",
    "    Return the currently active shard level channels matching a <pattern> (default: '*').",
    "SHARDNUMSUB [<shardchannel> ...]",
    "    Return the number of subscribers for the specified shard level channel(s)",
    "HELP",
    "    Prints this help.",
]


@client_command("pubsub", -2, "", where=SERVER, group="pubsub",
                subcommands=("channels", "numpat", "numsub", "shardchannels", "shardnumsub", "help"),
                summary="A container for Pub/Sub commands")
def pubsub(client: Client, argv: list[bytes]) -> Reply:
    sub = argv[1].lower()
    server = client.server
    if sub == b"help" and len(argv) == 2:
        return protocol.array([protocol.simple(line) for line in PUBSUB_HELP])
    if sub in (b"channels", b"shardchannels") and len(argv) <= 3:
        kind = CHANNEL if sub == b"channels" else SHARD
        part = [b"__pubsub", kind.encode(), *argv[2:3]]

        async def channels() -> bytes:
            return protocol.bulk_array(list(await _names(server, part)))

        return server.later(client, channels())
    if sub == b"numpat" and len(argv) == 2:
        async def numpat() -> bytes:  # patterns, each counted once however many subscribe to it
            return protocol.integer(len(await _names(server, [b"__pubsub", PATTERN.encode()])))

        return server.later(client, numpat())
    if sub in (b"numsub", b"shardnumsub"):
        kind = CHANNEL if sub == b"numsub" else SHARD
        wanted = argv[2:]

        async def numsub() -> bytes:
            totals = [0] * len(wanted)
            if wanted:
                for reply in await server.fan_out([b"__pubsubcount", kind.encode(), *wanted]):
                    counts = protocol.read_reply(reply)[0]
                    if isinstance(counts, list):
                        totals = [t + int(c) for t, c in zip(totals, counts, strict=True)]
            out = []
            for name, n in zip(wanted, totals, strict=True):
                out += [protocol.bulk(name), protocol.integer(n)]
            return protocol.array(out)

        return server.later(client, numsub())
    if sub in (b"channels", b"shardchannels", b"numpat", b"help"):
        raise CommandError(errors.wrong_arity(f"pubsub|{sub.decode(errors='replace')}"))
    raise CommandError(errors.unknown_subcommand(argv[1], "pubsub"))


async def _names(server: Server, part: list[bytes]) -> dict[bytes, None]:
    """The union of every worker's channel (or pattern) names, in the order first seen."""
    names: dict[bytes, None] = {}
    for reply in await server.fan_out(part):
        found = protocol.read_reply(reply)[0]
        if isinstance(found, list):
            names.update(dict.fromkeys(n for n in found if isinstance(n, bytes)))
    return names


@worker_command("__pubsub", -2, summary="This worker's channels (matching a pattern), patterns or shard channels")
def worker_pubsub_names(worker: WorkerView, argv: list[bytes]) -> bytes:
    names = list(worker.pubsub.names(argv[1].decode()))
    if len(argv) > 2:
        match = glob_matcher(argv[2])
        names = [n for n in names if match(n)]
    return protocol.bulk_array(names)


@worker_command("__pubsubcount", -2, summary="Subscribers of these channels (or shard channels) on this worker")
def worker_pubsub_count(worker: WorkerView, argv: list[bytes]) -> bytes:
    kind = argv[1].decode()
    return protocol.array([protocol.integer(worker.pubsub.subscribers(kind, n)) for n in argv[2:]])
