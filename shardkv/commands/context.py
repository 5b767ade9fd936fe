"""What a command handler may do: the typed contexts the router and the worker implement.

Handlers live in `commands/` and never import `router/` or `worker/`; those layers sit above and
hand each handler one of these narrow views:
  * `ShardCtx` (commands/args.py): one shard's store, one db, the time: keyed and shard commands.
  * `Client`: a connection and, through `Client.server`, the whole server as the router sees it:
    connection commands (PING, CLIENT ...) and server commands (INFO, KEYS, FLUSHALL ...).
  * `WorkerView`: one worker's own clients: internal worker commands (CLIENT LIST's parts).
A reply is bytes, or a `Pending` that the router resolves later (another shard answers, or a
transaction finishes); a connection keeps its replies, pending or not, in request order.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from shardkv.limits import Limits
from shardkv.native import Pending
from shardkv.stats import Stats
from shardkv.store import Store

if TYPE_CHECKING:
    from shardkv.commands.pubsub import Subscriptions
    from shardkv.commands.tracking import ClientTracking
    from shardkv.scripting.engine import Library, LuaFunction


@dataclass(frozen=True, slots=True)
class BlockPlan:
    """How a blocking command runs: its non-blocking form, the keys it waits on, its timeout and
    how the form's decoded reply becomes the client's (None: nothing yet, keep waiting)."""

    attempt_argv: list[bytes]
    keys: list[bytes]
    timeout_s: float  # 0: forever
    reply: Callable[[object], bytes | None]


REPLY_ON, REPLY_OFF, REPLY_SKIP = b"on", b"off", b"skip"


class ReplySink(Protocol):
    def reply_ready(self, pending: Pending) -> None: ...

    def replies_ready(self, count: int, nbytes: int) -> None:
        """count replies from other shards (no barrier among them), nbytes in all, came back."""
        ...


Reply = bytes | Pending


class ScriptRunner(Protocol):
    """The worker's Lua scripts (router/scripts.py)."""

    def lookup(self, sha: bytes) -> bytes | None:
        """The body of a cached script (sha in lowercase hex)."""
        ...

    def exists(self, sha: bytes) -> bool: ...

    def cached_count(self) -> int:
        """Scripts in the shared cache."""
        ...

    def cache_bytes(self) -> int: ...

    def load(self, sha: bytes, body: bytes) -> bytes | None:
        """Compile and cache; an error reply if it does not compile or there is no room."""
        ...

    def store(self, sha: bytes, body: bytes) -> bytes | None:
        """Worker 0: write a script into the shared cache (OOM error reply if it is full)."""
        ...

    def flush(self) -> None:
        """SCRIPT FLUSH on this worker (worker 0 also empties the shared cache)."""
        ...

    def run(self, client: Client, sha: bytes, body: bytes, keys: list[bytes], args: list[bytes],
            readonly: bool) -> Reply:
        """Run a script atomically; its reply comes later."""
        ...

    @property
    def libraries(self) -> dict[str, Library]: ...  # FUNCTION libraries by lower-case name

    @property
    def running_name(self) -> str: ...  # the script or function running now, if any

    def sync_functions(self) -> None:
        """Catch up with the libraries loaded and deleted on any worker."""
        ...

    def function(self, name: str) -> tuple[Library, LuaFunction] | None: ...

    def check_library(self, code: bytes, replace: bool) -> str:
        """FUNCTION LOAD's checks (CommandError with Redis's text); the library's name."""
        ...

    def function_names(self, code: bytes) -> list[str]:
        """The functions a library registers (CommandError if it does not load)."""
        ...

    def log_function_change(self, kind: bytes, body: bytes) -> bytes | None:
        """Worker 0: log a library change (load, delete) or empty the log (flush)."""
        ...

    @property
    def running_command(self) -> list[bytes]: ...  # FUNCTION STATS: the FCALL running now

    def fcall(self, client: Client, lib: Library, fn: LuaFunction, keys: list[bytes], args: list[bytes],
              readonly: bool, command: list[bytes]) -> Reply:
        """Run a function atomically; its reply comes later."""
        ...


class Server(Protocol):
    """The whole server as a connection or server command sees it (router.Router implements it)."""

    @property
    def limits(self) -> Limits: ...
    @property
    def stats(self) -> Stats: ...
    @property
    def stores(self) -> list[Store]: ...  # every shard's store, read-only use (counts, headers)
    @property
    def workers(self) -> int: ...
    @property
    def worker_id(self) -> int: ...
    @property
    def command_index(self) -> dict[str, int]: ...

    @property
    def pubsub(self) -> Subscriptions: ...  # this worker's subscribers

    @property
    def scripts(self) -> ScriptRunner: ...

    def fan_out(self, argv: list[bytes], db: int = 0, proto: int = 2,
                exclude_self: bool = False) -> Awaitable[list[bytes]]:
        """Run an internal SHARD or WORKER command on every worker (or every other one);
        replies in worker order."""
        ...

    def call_shard(self, shard: int, argv: list[bytes], db: int, proto: int) -> Awaitable[bytes]:
        """Run an internal SHARD or WORKER command on one worker."""
        ...

    def later(self, client: Client, coro: Coroutine[Any, Any, bytes]) -> Pending:
        """The client's reply is what coro returns; an exception in it becomes an error reply.
        The client's next commands wait for it (what coro sends to other shards goes first)."""
        ...

    def shard_of(self, key: bytes) -> int:
        """The shard owning key (its hash slot's)."""
        ...

    def tell_shard(self, shard: int, argv: list[bytes]) -> None:
        """Run an internal SHARD command on one shard, one way: no reply, in order after what
        this worker sent that shard before."""
        ...

    def exec_transaction(self, client: Client, queue: list[list[bytes]], watching: set[int]) -> Reply:
        """EXEC: run the queued commands as one transaction, if the client's watched keys (on
        the shards `watching`) did not change; ends those watches."""
        ...

    def transaction_reply(self, client: Client, parts: dict[int, list[bytes]],
                          merge: Callable[[dict[int, bytes]], bytes]) -> Pending:
        """Run internal parts on their shards as one transaction; reply merge(their replies)."""
        ...

    def shutdown(self) -> None:
        """Ask the supervisor to stop every worker and release the segments."""
        ...


class Client(Protocol):
    """One client connection, as connection and server commands see it."""

    id: int
    db: int
    proto: int
    name: bytes
    lib_name: bytes
    lib_ver: bytes
    authenticated: bool
    closing: bool  # close once the replies queued so far are written
    multi: list[list[bytes]] | None  # after MULTI: the commands queued for EXEC
    multi_bytes: int  # their argument bytes (bounded by client-query-buffer-limit)
    multi_failed: bool  # a command was refused while queueing: EXEC answers EXECABORT
    watching: set[int]  # shards holding keys this client WATCHes
    executing: bool  # its EXEC is running: commands that would block answer at once
    channels: dict[bytes, None]  # SUBSCRIBEd channels, in order
    patterns: dict[bytes, None]  # PSUBSCRIBEd patterns
    shard_channels: dict[bytes, None]  # SSUBSCRIBEd shard channels
    reply_mode: bytes  # CLIENT REPLY: REPLY_ON, REPLY_OFF or REPLY_SKIP (the next command's)
    tracking: ClientTracking | None  # CLIENT TRACKING (None: off)

    @property
    def server(self) -> Server: ...

    @property
    def connected(self) -> bool: ...

    def client_info(self) -> str: ...

    def reply_ready(self, pending: Pending) -> None: ...

    def replies_ready(self, count: int, nbytes: int) -> None: ...

    def push(self, data: bytes) -> None:
        """Send an out-of-band message (a published message), after the replies queued so far."""
        ...


class WorkerClient(Client, Protocol):
    """A client as its own worker sees it (CLIENT LIST / KILL filters)."""

    addr: str
    laddr: str
    created: float  # time.monotonic() at accept

    def kill(self, after_reply: bool) -> None:
        """Close the connection: at once, or (the caller itself) once its reply is written."""
        ...


class WorkerView(Protocol):
    """One worker as its internal commands see it (worker.process.Worker implements it)."""

    @property
    def id(self) -> int: ...

    @property
    def pubsub(self) -> Subscriptions: ...  # its clients' subscriptions

    @property
    def scripts(self) -> ScriptRunner: ...

    @property
    def workers(self) -> int: ...

    def clients(self) -> Iterable[WorkerClient]:
        """This worker's open connections."""
        ...

    def client_by_id(self, client_id: int) -> WorkerClient | None:
        """This worker's open connection with that id, if any."""
        ...

    def tell_worker(self, worker: int, argv: list[bytes]) -> None:
        """Run an internal WORKER command on another worker, one way (no reply), in order after
        what this worker sent it before."""
        ...

    def unblock(self, client_id: int, as_error: bool) -> bool:
        """CLIENT UNBLOCK of one of this worker's clients; False if it is not blocked here."""
        ...


__all__ = ["REPLY_OFF", "REPLY_ON", "REPLY_SKIP", "BlockPlan", "Client", "Pending", "Reply", "ReplySink",
           "ScriptRunner", "Server", "WorkerClient", "WorkerView"]
