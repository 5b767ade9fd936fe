"""The one command table: name, arity, flags, key positions, where it runs, how it merges.

Dispatch, arity errors, routing by key, the OOM gate, COMMAND / COMMAND INFO / DOCS / GETKEYS and
(later) cluster routing all read this table; there is no second list of commands.

Where a command runs (`Command.where`):
  KEYED       on the shard that owns its keys; a multi-key command whose keys span shards is
              split per shard (same handler, fewer keys) and its replies merged (`merge`).
  CONNECTION  in the router, with the connection's state (PING, HELLO, SELECT, CLIENT ...).
  SERVER      in the router, with the worker's view of the whole server (INFO, DBSIZE, CONFIG ...).
  SHARD, WORKER  internal parts of server commands, sent to every shard / worker; named `__...`,
              never callable by clients and not listed by COMMAND.
"""

from __future__ import annotations

import enum
import importlib
import pkgutil
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from shardkv import errors
from shardkv.commands.args import ShardCtx
from shardkv.commands.context import BlockPlan, Client, Reply, WorkerView

if TYPE_CHECKING:
    from shardkv.commands.across import CrossShard


class Where(enum.Enum):
    KEYED = "keyed"
    CONNECTION = "connection"
    SERVER = "server"
    SHARD = "shard"  # internal: run on each shard it is sent to (FLUSHALL's parts)
    WORKER = "worker"  # internal: run on each worker it is sent to (CLIENT LIST's parts)


class Merge(enum.Enum):
    NONE = "none"  # one shard, or, with `across`, a command-specific transaction body
    SUM = "sum"  # integer replies added up (DEL, EXISTS, UNLINK, TOUCH)
    VALUES = "values"  # array replies put back in key order (MGET)
    OK = "ok"  # every part answers +OK (MSET)


KeyedHandler = Callable[[ShardCtx, list[bytes]], bytes]  # KEYED and SHARD commands
ClientHandler = Callable[[Client, list[bytes]], Reply]  # CONNECTION and SERVER commands
WorkerHandler = Callable[[WorkerView, list[bytes]], bytes]  # WORKER commands
AcrossBody = Callable[["CrossShard", list[bytes]], Awaitable[bytes]]
KH = TypeVar("KH", bound=KeyedHandler)
CH = TypeVar("CH", bound=ClientHandler)
WH = TypeVar("WH", bound=WorkerHandler)


@dataclass(frozen=True, slots=True)
class Command:
    name: str
    arity: int  # Redis convention: n = exactly n arguments with the name, -n = at least n
    flags: tuple[str, ...]
    first_key: int
    last_key: int
    key_step: int
    where: Where
    merge: Merge
    group: str
    summary: str
    handler: KeyedHandler | None = None  # exactly one of the three handlers, by `where`
    client_handler: ClientHandler | None = None
    worker_handler: WorkerHandler | None = None
    subcommands: tuple[str, ...] = ()
    sizes: Callable[[list[bytes]], list[int]] | None = None  # record bytes a write will need
    across: AcrossBody | None = None  # the body of a cross-shard transaction (commands/across.py)
    find_keys: Callable[[list[bytes]], list[int]] | None = None  # key positions of movable-key commands
    blocking: Callable[[list[bytes]], BlockPlan] | None = None  # run by router/blocking.py
    lock_all: Callable[[list[bytes]], bool] | None = None  # this call reaches keys it does not name
    one_key: bool = False  # exactly one key, at argv[1], nothing special: the router's fast path
    readonly: bool = False  # its key lookups count as keyspace hits / misses
    acl_categories: tuple[str, ...] = ()  # as COMMAND reports them, in Redis's order (acl_categories())
    # COMMAND GETKEYSANDFLAGS: the flags of the 1st, 2nd ... key (the last repeats), e.g. "RW insert";
    # () means "RO access" for a read-only command, "RW access update" for a write.
    key_flags: tuple[str, ...] = ()

    # Derived from the fields above once (the pipeline reads them for every command).
    internal: bool = field(init=False)  # a part of a server command, never callable by clients
    is_write: bool = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "internal", self.where in (Where.SHARD, Where.WORKER))
        object.__setattr__(self, "is_write", "write" in self.flags)

    @property
    def denies_oom(self) -> bool:
        return "denyoom" in self.flags

    def key_indexes(self, argv: list[bytes]) -> list[int] | range:
        """Positions of the keys in argv (argv[0] is the name)."""
        if self.find_keys is not None:
            return self.find_keys(argv)
        if self.first_key == 0:
            return range(0)
        argc = len(argv)
        last = self.last_key if self.last_key >= 0 else argc + self.last_key
        return range(self.first_key, min(last, argc - 1) + 1, self.key_step)

    def arity_ok(self, argc: int) -> bool:
        if self.last_key == -1 and self.key_step > 1 and (argc - self.first_key) % self.key_step:
            return False  # MSET k v k: keys and values must pair up
        return argc == self.arity if self.arity > 0 else argc >= -self.arity


COMMANDS: dict[bytes, Command] = {}

# Redis's ACL categories, in the order it lists them (acl.c).
ACL_CATEGORIES = (
    "keyspace", "read", "write", "set", "sortedset", "list", "hash", "string", "bitmap", "hyperloglog", "geo",
    "stream", "pubsub", "admin", "fast", "slow", "blocking", "dangerous", "connection", "transaction", "scripting",
)
# The category Redis declares for the commands of a group, unless a command declares its own.
GROUP_ACL_CATEGORY = {
    "generic": "keyspace", "string": "string", "list": "list", "hash": "hash", "set": "set", "bitmap": "bitmap",
    "sorted_set": "sortedset", "hyperloglog": "hyperloglog", "geo": "geo", "stream": "stream",
    "pubsub": "pubsub", "connection": "connection", "transactions": "transaction", "scripting": "scripting",
}


def acl_categories(flags: tuple[str, ...], group: str, declared: str | None, container: bool) -> tuple[str, ...]:
    """A command's ACL categories as Redis 7.0 computes them: those its definition declares (here:
    `declared`, else its group's), plus those its flags imply -- write, read (not for scripting),
    admin and dangerous, pubsub, fast, blocking -- and slow for every command that is not fast.
    A container of subcommands (CONFIG, OBJECT ...) gets only what it declares, and slow: in Redis
    its flags are its own (none); here they stand for its subcommands', which Redis does not
    report on the container."""
    if declared is not None:
        cats = {c.removeprefix("@") for c in declared.split()}
    elif container or group not in GROUP_ACL_CATEGORY:
        cats = set()
    else:
        cats = {GROUP_ACL_CATEGORY[group]}
    assert cats <= set(ACL_CATEGORIES), f"unknown ACL categories {cats - set(ACL_CATEGORIES)}"
    implied = {"write": ("write",), "readonly": () if "scripting" in cats else ("read",),
               "admin": ("admin", "dangerous"), "pubsub": ("pubsub",), "fast": ("fast",), "blocking": ("blocking",)}
    for flag in () if container else flags:
        cats.update(implied.get(flag, ()))
    if "fast" not in cats:
        cats.add("slow")
    return tuple(c for c in ACL_CATEGORIES if c in cats)


def _register(cmd: Command) -> None:
    key = cmd.name.encode()
    assert key not in COMMANDS, f"command {cmd.name} registered twice"
    assert cmd.first_key > 0 or cmd.where is not Where.KEYED, f"{cmd.name}: a keyed command has keys"
    assert cmd.first_key == 0 or cmd.where in (Where.KEYED, Where.CONNECTION), f"{cmd.name}: parts have no keys"
    handlers = (cmd.handler, cmd.client_handler, cmd.worker_handler)
    assert sum(h is not None for h in handlers) == 1, f"{cmd.name}: one handler"
    COMMANDS[key] = cmd


def command(
    name: str,
    arity: int,
    flags: str,
    *,
    keys: tuple[int, int, int] = (0, 0, 0),
    where: Where = Where.KEYED,
    merge: Merge = Merge.NONE,
    group: str,
    summary: str,
    subcommands: tuple[str, ...] = (),
    sizes: Callable[[list[bytes]], list[int]] | None = None,
    across: AcrossBody | None = None,
    find_keys: Callable[[list[bytes]], list[int]] | None = None,
    blocking: Callable[[list[bytes]], BlockPlan] | None = None,
    lock_all: Callable[[list[bytes]], bool] | None = None,
    acl: str | None = None,
    key_flags: tuple[str, ...] = (),
) -> Callable[[KH], KH]:
    """Register a command that runs on a shard: a keyed command, or an internal SHARD part.
    `acl`: the ACL categories Redis declares for it ("@keyspace @dangerous"), only where they are
    not its group's; those its flags imply are added anyway."""
    assert where in (Where.KEYED, Where.SHARD), name

    def register(handler: KH) -> KH:
        _register(Command(
            name=name.lower(), arity=arity, flags=tuple(flags.split()), first_key=keys[0],
            last_key=keys[1], key_step=keys[2], where=where, merge=merge, group=group,
            summary=summary, handler=handler, subcommands=subcommands, sizes=sizes, across=across,
            find_keys=find_keys, blocking=blocking, lock_all=lock_all,
            one_key=keys == (1, 1, 1) and where is Where.KEYED and find_keys is None and blocking is None
            and lock_all is None, readonly="readonly" in flags.split(),
            acl_categories=acl_categories(tuple(flags.split()), group, acl, bool(subcommands)), key_flags=key_flags,
        ))
        return handler

    return register


def client_command(name: str, arity: int, flags: str, *, where: Where, group: str, summary: str,
                   subcommands: tuple[str, ...] = (), acl: str | None = None,
                   keys: tuple[int, int, int] = (0, 0, 0),
                   find_keys: Callable[[list[bytes]], list[int]] | None = None) -> Callable[[CH], CH]:
    """Register a command that runs in the router with the client's connection (and the server).
    `keys`, `find_keys`: the key positions COMMAND and COMMAND GETKEYS report (WATCH, EVAL); the
    router does not route by them."""
    assert where in (Where.CONNECTION, Where.SERVER), name

    def register(handler: CH) -> CH:
        _register(Command(
            name=name.lower(), arity=arity, flags=tuple(flags.split()), first_key=keys[0], last_key=keys[1],
            key_step=keys[2], where=where, merge=Merge.NONE, group=group, summary=summary,
            client_handler=handler, subcommands=subcommands, readonly="readonly" in flags.split(),
            find_keys=find_keys,
            acl_categories=acl_categories(tuple(flags.split()), group, acl, bool(subcommands))))
        return handler

    return register


def worker_command(name: str, arity: int, *, summary: str) -> Callable[[WH], WH]:
    """Register an internal command run on one worker with its own clients (CLIENT LIST's parts)."""
    assert name.startswith("__"), name

    def register(handler: WH) -> WH:
        _register(Command(
            name=name, arity=arity, flags=(), first_key=0, last_key=0, key_step=0, where=Where.WORKER,
            merge=Merge.NONE, group="internal", summary=summary, worker_handler=handler))
        return handler

    return register


def lookup(name: bytes) -> Command | None:
    cmd = COMMANDS.get(name)
    if cmd is None:
        cmd = COMMANDS.get(name.lower())
    return cmd


def check_arity(cmd: Command, argc: int) -> None:
    if not cmd.arity_ok(argc):
        raise errors.CommandError(errors.wrong_arity(cmd.name))


# The command families, registered explicitly; every other module of the package is a helper.
# A module that is neither is an error at start (`load_all`), not a silently missing family.
FAMILIES = ("bits", "connection", "hashes", "keyspace", "lists", "multi", "pubsub", "scripting", "server", "sets",
            "sort", "strings", "tracking")
HELPERS = ("across", "args", "collections", "context", "notify", "table")


def load_all() -> None:
    """Import every command family so that each registers its commands."""
    if _loaded:
        return
    import shardkv.commands as package

    found = {m.name for m in pkgutil.iter_modules(package.__path__)}
    unknown = found - set(FAMILIES) - set(HELPERS)
    missing = set(FAMILIES) - found
    if unknown or missing:
        raise RuntimeError(f"shardkv.commands: modules neither family nor helper: {sorted(unknown)}; "
                           f"families not found: {sorted(missing)} (see FAMILIES in commands/table.py)")
    for name in FAMILIES:
        importlib.import_module(f"shardkv.commands.{name}")
    _loaded.append(True)


_loaded: list[bool] = []


def public_commands() -> list[Command]:
    load_all()
    return sorted((c for c in COMMANDS.values() if not c.internal), key=lambda c: c.name)


def command_index() -> dict[str, int]:
    """A stable position per command (commandstats rows in the stats segment)."""
    load_all()
    return {name: i for i, name in enumerate(sorted(c.name for c in COMMANDS.values()))}
