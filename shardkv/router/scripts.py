"""Running Lua scripts (EVAL, EVALSHA and their _RO forms) atomically across shards.

A script may touch any key, named or not (Redis's own tests do), and a shard cannot be locked
half-way through a script without breaking the ascending lock order; so a script takes every
shard, in ascending order, as an EXEC does (router/transaction.py), with an undo log on each:
the script is a transaction, whole or nothing if a worker dies, and no client anywhere sees part
of it.  While it runs the whole server is busy, as one Redis is.

The Lua interpreter runs in a thread of its own (lupa releases the GIL while Lua runs), so this
worker's event loop goes on: the rings are served, the heartbeat ticks, and a script past
busy-reply-threshold leaves other clients -BUSY replies.  `redis.call` hands each command to the
loop (`asyncio.run_coroutine_threadsafe`), which runs it on its shard like a command of an EXEC,
and waits for the reply.  The count hook of the interpreter checks for SCRIPT KILL (a word in the
stats segment, so SCRIPT KILL works from any worker).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from shardkv import errors, protocol, segments
from shardkv.commands.context import Client, Pending, Reply, Server
from shardkv.commands.table import Command, lookup
from shardkv.commands.tracking import ClientTracking
from shardkv.errors import CommandError
from shardkv.limits import RUNNING_SCRIPT_BYTES
from shardkv.router.dispatch import HOLDING, MODIFIER
from shardkv.scripting.cache import ScriptCache
from shardkv.scripting.engine import Aborted, Library, LuaEngine, LuaFunction, RedisCallError, ScriptError, library_name
from shardkv.stats import G_SCRIPT_FUNCTION, G_SCRIPT_KILL, G_SCRIPT_STARTED_MS, G_SCRIPT_WORKER, G_SCRIPT_WROTE
from shardkv.worker.peers import PeerReset

if TYPE_CHECKING:
    from shardkv.worker.process import Worker

KILLED = b"ERR Script killed by user with SCRIPT KILL..."
LOG_LEVELS = ("debug", "verbose", "notice", "warning")


Caller = Callable[[bool, list[bytes]], tuple[bool, Any]]


@dataclass(eq=False)
class ScriptClient:
    """The client a script's commands run as: the caller's db and name, its own SELECT and
    RESP version (redis.setresp), so nothing it does changes the caller's connection."""

    server: Server
    id: int
    db: int
    proto: int = 2
    name: bytes = b""
    lib_name: bytes = b""
    lib_ver: bytes = b""
    authenticated: bool = True
    closing: bool = False
    multi: list[list[bytes]] | None = None
    multi_bytes: int = 0
    multi_failed: bool = False
    watching: set[int] = field(default_factory=set)
    executing: bool = True  # nothing blocks inside a script
    channels: dict[bytes, None] = field(default_factory=dict)
    patterns: dict[bytes, None] = field(default_factory=dict)
    shard_channels: dict[bytes, None] = field(default_factory=dict)
    reply_mode: bytes = b"on"
    tracking: ClientTracking | None = None  # (the caller's tracking applies: Scripts._execute)

    @property
    def connected(self) -> bool:
        return True

    def client_info(self) -> str:
        return f"id={self.id} name= db={self.db} flags=s cmd=eval user=default resp={self.proto}"

    def reply_ready(self, pending: Pending) -> None:
        pass

    def replies_ready(self, count: int, nbytes: int) -> None:
        pass

    def push(self, data: bytes) -> None:
        pass


class Scripts:
    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        mm = segments.attach(worker.boot.scripts_name)
        half = 64 + worker.limits.scripts_bytes_max
        self.cache = ScriptCache(memoryview(mm)[:half])
        self.flog = ScriptCache(memoryview(mm)[half : len(mm) - RUNNING_SCRIPT_BYTES])  # the libraries' log
        self.running_area = memoryview(mm)[len(mm) - RUNNING_SCRIPT_BYTES :]
        self.flog_generation = -1
        self.flog_offset = 0
        self.libraries: dict[str, Library] = {}  # lower-case name -> library

        self.engine = LuaEngine(worker.limits.lua_heap_bytes_max, self._log)
        self.engine.hook = self._hook
        self.thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="lua")
        self.running: ScriptClient | None = None
        self.readonly = False
        self.read = False  # the running script called a read-only command (client tracking)
        self.wrote = False

    # ------------------------------------------------------------------ the cache

    def lookup(self, sha: bytes) -> bytes | None:
        return self.cache.get(sha)

    def cached_count(self) -> int:
        return len(self.cache)

    def cache_bytes(self) -> int:
        return self.cache.used_bytes()

    def exists(self, sha: bytes) -> bool:
        return sha in self.cache or sha.decode(errors="replace") in self.engine.functions

    def load(self, sha: bytes, body: bytes) -> bytes | None:
        """Compile and cache a script; an error reply if it does not compile or has no room."""
        if sha not in self.cache and not self.cache.has_room(body):
            return protocol.error(errors.OOM)  # Redis never evicts scripts: nor do we
        try:
            self.engine.compile(sha.decode(), body)
        except ScriptError as exc:
            return protocol.error(str(exc))
        if sha not in self.cache:
            if self.worker.id == 0:
                try:
                    self.cache.add(sha, body)
                except Exception as exc:
                    self.engine.functions.pop(sha.decode(), None)
                    return protocol.error(getattr(exc, "text", str(exc)))
            else:  # worker 0 writes the shared cache; this worker has it compiled already
                self.worker.router.tell_shard(0, [b"__scriptstore", sha, body])
        return None

    def store(self, sha: bytes, body: bytes) -> bytes | None:
        try:
            self.cache.add(sha, body)
        except Exception as exc:
            return protocol.error(getattr(exc, "text", str(exc)))
        return None

    def flush(self) -> None:
        self.engine.flush()
        if self.worker.id == 0:
            self.cache.flush()

    # ------------------------------------------------------------------ running

    def run(self, client: Client, sha: bytes, body: bytes, keys: list[bytes], args: list[bytes],
            readonly: bool) -> Reply:
        error = self.load(sha, body)
        if error is not None:
            return error
        name = sha.decode()
        announcement = self.announce(sha, [b"eval", body[:64]])

        def job(call: Caller) -> bytes:
            if name not in self.engine.functions:  # SCRIPT FLUSH came between its load and its turn
                try:
                    self.engine.compile(name, body)
                except ScriptError as exc:
                    return protocol.error(str(exc))
            return self.engine.run(name, name, keys, args, client.proto, call)

        return self.worker.router.later(client, self._run(client, job, readonly, False, announcement, keys))

    async def _run(self, client: Client, job: Callable[[Caller], bytes], readonly: bool, function: bool,
                   announcement: bytes, keys: list[bytes]) -> bytes:
        router = self.worker.router
        if HOLDING.get() is not None:  # EVAL queued in a MULTI: the EXEC holds every shard already
            return await self._execute(client, job, readonly, function, announcement, keys)
        transactions = router.transactions
        async with router.txn_lock:
            txn_id = transactions.begin()
            committed = False
            locked: list[int] = []
            shards = list(range(self.worker.workers))
            token = HOLDING.set(frozenset(shards))
            try:
                locked = await router.lock_shards(shards, client.db, client.proto, router.me << 56 | txn_id)
                reply = await self._execute(client, job, readonly, function, announcement, keys)
                await transactions.decidable(txn_id)
                transactions.decide(txn_id, commit=True)
                committed = True
                return reply
            except (PeerReset, Aborted):
                return protocol.error(errors.SCRIPT_SHARD_RESTARTED)
            finally:
                HOLDING.reset(token)
                if not committed:
                    transactions.decide(txn_id, commit=False)
                await router.unlock_and_settle(locked, None, commit=committed)

    async def _execute(self, client: Client, job: Callable[[Caller], bytes], readonly: bool, function: bool,
                       announcement: bytes, keys: list[bytes]) -> bytes:
        stats = self.worker.stats
        self.running = ScriptClient(client.server, client.id, client.db, 2, client.name)
        self.readonly = readonly
        self.wrote = False
        self.read = False
        stats.global_set(G_SCRIPT_KILL, 0)
        stats.global_set(G_SCRIPT_WROTE, 0)
        stats.global_set(G_SCRIPT_FUNCTION, int(function))
        stats.global_set(G_SCRIPT_STARTED_MS, int(time.time() * 1000))
        self.running_area[4 : 4 + len(announcement)] = announcement
        self.running_area[0:4] = len(announcement).to_bytes(4, "little")
        stats.global_set(G_SCRIPT_WORKER, self.worker.id + 1)
        loop = asyncio.get_running_loop()
        holding = HOLDING.get()
        modifier = MODIFIER.get()
        try:
            reply = await loop.run_in_executor(self.thread, job,
                                               lambda raise_errors, argv: self._call(loop, holding, modifier, argv))
            if self.read and client.tracking is not None and client.tracking.tracks_reads():
                # As in Redis: a script that called a read-only command tracks its declared keys
                # (registered while it still holds the shards).
                self.worker.router.remember(client, keys)
            return reply
        finally:
            stats.global_set(G_SCRIPT_WORKER, 0)
            self.running = None

    @staticmethod
    def announce(name: bytes, command: list[bytes]) -> bytes:
        """The name and command of a script, as it will be published when it starts, for FUNCTION
        STATS on any worker (one script runs at a time: it holds every shard)."""
        encoded = protocol.encode_command([name, *command])
        return encoded if len(encoded) <= RUNNING_SCRIPT_BYTES - 4 else protocol.encode_command([name, *command[:2]])

    @property
    def running_name(self) -> str:
        return self._running()[0].decode(errors="replace")

    @property
    def running_command(self) -> list[bytes]:
        return self._running()[1:]

    def _running(self) -> list[bytes]:
        n = int.from_bytes(self.running_area[0:4], "little")
        try:
            parsed = protocol.parse_requests(bytes(self.running_area[4 : 4 + n]), n, 1 << 20, 1 << 30, 1)
            return parsed.requests[0][0] if parsed.requests else [b""]
        except Exception:
            return [b""]

    # ------------------------------------------------------------------ function libraries

    def sync_functions(self) -> None:
        """Apply what the shared log of FUNCTION LOAD / DELETE / FLUSH holds beyond what this
        worker has applied (all of it again after a FLUSH, or at start).  Not while this worker runs
        a script: the interpreter belongs to the script's thread then (FUNCTION STATS when busy)."""
        if self.running is not None:
            return
        same = self.flog_generation == self.flog.q[0]
        entries, generation, end = self.flog.entries(self.flog_offset if same else 0)
        if not same or self.flog_generation != generation:
            self.libraries.clear()
            self.flog_generation = generation
        self.flog_offset = end
        for kind, body in entries:
            if kind == b"delete":
                self.libraries.pop(body.decode(errors="replace").lower(), None)
                continue
            try:
                name = library_name(body)
                functions = self.engine.load_library(body)
            except Exception as exc:  # validated before it was logged: a bug
                print(f"worker {self.worker.id}: cannot load a logged library: {exc}", file=sys.stderr, flush=True)
                continue
            self.libraries[name.lower()] = Library(name, body, functions)

    def function(self, name: str) -> tuple[Library, LuaFunction] | None:
        """A registered function by name (case-insensitive, as in Redis)."""
        self.sync_functions()
        name = name.lower()
        for lib in self.libraries.values():
            for fn in lib.functions:
                if fn.name.lower() == name:
                    return lib, fn
        return None

    def check_library(self, code: bytes, replace: bool) -> str:
        """FUNCTION LOAD's checks, Redis's errors; returns the library's name."""
        self.sync_functions()
        name = library_name(code)
        old = self.libraries.get(name.lower())
        if old is not None and not replace:
            raise CommandError(f"ERR Library '{name}' already exists")
        try:
            functions = self.engine.load_library(code)
        except ScriptError as exc:
            raise CommandError(str(exc)) from None
        taken = {fn.name.lower() for lib in self.libraries.values() if lib is not old for fn in lib.functions}
        for fn in functions:
            if fn.name.lower() in taken:
                raise CommandError(f"ERR Function {fn.name} already exists")
        return name

    def function_names(self, code: bytes) -> list[str]:
        """The functions a library's code registers (CommandError if it does not load)."""
        try:
            return [fn.name for fn in self.engine.load_library(code)]
        except ScriptError as exc:
            raise CommandError(str(exc)) from None

    def log_function_change(self, kind: bytes, body: bytes) -> bytes | None:
        """Worker 0: append to the shared log ("load", "delete"), or empty it ("flush")."""
        try:
            if kind == b"flush":
                self.flog.flush()
            else:
                self.flog.append(kind, body)
        except Exception as exc:
            return protocol.error(getattr(exc, "text", str(exc)))
        return None

    def fcall(self, client: Client, lib: Library, fn: LuaFunction, keys: list[bytes], args: list[bytes],
              readonly: bool, command: list[bytes]) -> Reply:
        def job(call: Caller) -> bytes:
            return self.engine.call(fn, keys, args, client.proto, call)

        announcement = self.announce(fn.name.encode(), command)
        return self.worker.router.later(client, self._run(client, job, readonly or "no-writes" in fn.flags, True,
                                                          announcement, keys))

    def _call(self, loop: asyncio.AbstractEventLoop, holding: frozenset[int] | None, modifier: int,
              argv: list[bytes]) -> tuple[bool, Any]:
        """redis.call / redis.pcall, in the script's thread: check, run on the loop, wait."""
        self._hook()  # a script that spends its time in redis.call is killed there too
        cmd = lookup(argv[0])
        if cmd is None or cmd.internal:
            return True, b"ERR Unknown Redis command called from script"
        if not cmd.arity_ok(len(argv)):
            return True, b"ERR Wrong number of args calling Redis command from script"
        if "noscript" in cmd.flags or cmd.blocking is not None or "no_multi" in cmd.flags:
            return True, b"ERR This Redis command is not allowed from script"
        if cmd.is_write and self.readonly:
            return True, b"ERR Write commands are not allowed from read-only scripts."
        if cmd.readonly:
            self.read = True
        future = asyncio.run_coroutine_threadsafe(self._in_loop(cmd, argv, holding, modifier), loop)
        try:
            reply = future.result()
        except PeerReset as exc:
            self.engine.aborting = exc
            raise
        if cmd.is_write and not self.wrote:
            self.wrote = True
            self.worker.stats.global_set(G_SCRIPT_WROTE, 1)
        if reply.startswith(b"-"):
            return True, reply[1:-2]
        return False, reply

    async def _in_loop(self, cmd: Command, argv: list[bytes], holding: frozenset[int] | None, modifier: int) -> bytes:
        HOLDING.set(holding)
        MODIFIER.set(modifier)
        client = self.running
        assert client is not None
        client.proto = self.engine.resp
        return await self.worker.router.transactions.run_one(client, cmd, argv)

    def _hook(self) -> None:
        """Every 100,000 Lua instructions, in the script's thread: was SCRIPT KILL asked for?"""
        if self.worker.stats.global_get(G_SCRIPT_KILL):
            self.engine.aborting = RedisCallError(KILLED)  # (the same text after FUNCTION KILL, as in Redis)
            raise self.engine.aborting

    def _log(self, level: int, text: bytes) -> None:
        print(f"worker {self.worker.id}: script log ({LOG_LEVELS[level]}): {text.decode(errors='replace')}",
              file=sys.stderr, flush=True)


__all__ = ["ScriptClient", "Scripts"]
