"""Transactions: MULTI, EXEC, DISCARD, WATCH, UNWATCH, and WATCH's internal parts.

MULTI puts the client in a queueing state: the router's pipeline (router/dispatch.py) checks each
later command as usual (unknown, arity, authentication), then queues it and answers QUEUED; a
command refused there flags the transaction, and EXEC then discards it with EXECABORT.  EXEC
hands the queue to the server (router/transaction.py), which locks the shards of every key the
queue touches, and of every WATCHed key, in ascending order, checks the watches, runs the
commands in order and unlocks: no client on any worker sees part of it.

WATCH registers its keys with the shards owning them (`__watch`, keywatch.KeyWatches); EXEC's
check (`__watchcheck`) also ends those watches, as does UNWATCH, DISCARD or a disconnect
(`__unwatch`).
"""

from __future__ import annotations

from shardkv import errors, protocol
from shardkv.commands.args import ShardCtx
from shardkv.commands.context import Client, Reply
from shardkv.commands.table import Where, client_command, command
from shardkv.errors import CommandError
from shardkv.keywatch import KeyWatches

CONNECTION = Where.CONNECTION


def reset_multi(client: Client) -> None:
    client.multi = None
    client.multi_bytes = 0
    client.multi_failed = False


def unwatch_all(client: Client) -> None:
    """End every WATCH of the client (one-way: a later WATCH to the same shard comes after it)."""
    watching, client.watching = client.watching, set()
    for shard in watching:
        client.server.tell_shard(shard, [b"__unwatch", b"%d" % client.id])


@client_command("multi", 1, "noscript loading stale fast allow_busy", where=CONNECTION, group="transactions",
                summary="Start a transaction")
def multi(client: Client, argv: list[bytes]) -> bytes:
    if client.multi is not None:
        raise CommandError("ERR MULTI calls can not be nested")
    client.multi = []
    client.multi_bytes = 0
    client.multi_failed = False
    return protocol.OK


@client_command("exec", 1, "noscript loading stale skip_slowlog", where=CONNECTION, group="transactions",
                summary="Execute all commands issued after MULTI")
def exec_(client: Client, argv: list[bytes]) -> Reply:
    queue = client.multi
    if queue is None:
        raise CommandError("ERR EXEC without MULTI")
    failed = client.multi_failed
    reset_multi(client)
    if failed:
        unwatch_all(client)
        raise CommandError(errors.EXECABORT)
    watching, client.watching = client.watching, set()
    return client.server.exec_transaction(client, queue, watching)


@client_command("discard", 1, "noscript loading stale fast allow_busy", where=CONNECTION, group="transactions",
                summary="Discard all commands issued after MULTI")
def discard(client: Client, argv: list[bytes]) -> bytes:
    if client.multi is None:
        raise CommandError("ERR DISCARD without MULTI")
    reset_multi(client)
    unwatch_all(client)
    return protocol.OK


@client_command("watch", -2, "noscript loading stale fast allow_busy", where=CONNECTION, group="transactions",
                keys=(1, -1, 1), summary="Watch the given keys to determine execution of the MULTI/EXEC block")
def watch(client: Client, argv: list[bytes]) -> Reply:
    if client.multi is not None:
        raise CommandError("ERR WATCH inside MULTI is not allowed")
    server = client.server
    parts: dict[int, list[bytes]] = {}
    for key in argv[1:]:
        parts.setdefault(server.shard_of(key), [b"__watch", b"%d" % client.id]).append(key)

    async def register() -> bytes:
        for shard, part in parts.items():
            reply = await server.call_shard(shard, part, client.db, client.proto)
            if reply.startswith(b"-"):
                return reply
            client.watching.add(shard)
        return protocol.OK

    return server.later(client, register())


@client_command("unwatch", 1, "noscript loading stale fast allow_busy", where=CONNECTION, group="transactions",
                summary="Forget about all watched keys")
def unwatch(client: Client, argv: list[bytes]) -> bytes:
    unwatch_all(client)
    return protocol.OK


# ---------------------------------------------------------------------- parts run on the key's shard


def _watches(ctx: ShardCtx) -> KeyWatches:
    watches = ctx.store.key_watches
    assert watches is not None, "the worker sets up its shard's watch table at start"
    return watches


@command("__watch", -3, "readonly", where=Where.SHARD, group="internal",
         summary="WATCH keys of this shard for a client: client id, keys")
def shard_watch(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    _watches(ctx).add(int(argv[1]), ctx.db, argv[2:], ctx.now_ms)
    return protocol.OK


@command("__watchcheck", 2, "readonly", where=Where.SHARD, group="internal",
         summary="At EXEC: 1 if none of the client's watched keys here changed, else 0; ends its watch")
def shard_watch_check(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    return protocol.ONE if _watches(ctx).check(int(argv[1]), ctx.now_ms) else protocol.ZERO


@command("__txnbegin", 2, "readonly", where=Where.SHARD, group="internal",
         summary="The lock part of an EXEC: the shard keeps an undo log for transaction <txn>")
def shard_txn_begin(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    return protocol.OK  # the worker starts the undo log as it takes the lock


@command("__unwatch", 2, "readonly", where=Where.SHARD, group="internal",
         summary="End a client's watch of keys of this shard")
def shard_unwatch(ctx: ShardCtx, argv: list[bytes]) -> bytes:
    _watches(ctx).drop(int(argv[1]))
    return protocol.OK
