"""The one `Limits` object that sizes every allocation, and the footprint it implies.

Limits come from (in order, later wins) the defaults, a redis.conf-style file given as the first
argument, and `--name value` / `--name=value` flags.  They are checked together at boot: an
inconsistent set is refused with a one-line reason before anything is allocated.  `Footprint`
turns a `Limits` into the exact byte counts the supervisor allocates, so the boot table, the
`/dev/shm` check, `--print-footprint` and the deploy manifests all come from one computation.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass

PAGE_BYTES = 64 * 1024  # allocator page: the unit a shard heap is carved into
SEGMENT_HEADER_BYTES = 8192  # shard segment header (counters, allocator roots)
PAGE_ENTRY_BYTES = 32  # allocator page table entry (8 x u32)
HEAP_BYTES_PER_BUCKET = 256  # one index bucket (8 bytes) per this many heap bytes
HASH_SLOTS = 16384  # Redis Cluster's key slots
SLOT_INDEX_BYTES = HASH_SLOTS * 8  # per shard: each slot's key count and first record
# A record links its slot's neighbours by offset / 16 in 32 bits, so a shard segment is at most 64 GiB.
SHARD_BYTES_MAX = 64 * 1024 * 1024 * 1024
RING_HEADER_BYTES = 128  # head and tail on separate cache lines
DATABASES_MAX = 256  # the shard header has room for this many per-db key counters
SHARDS_MAX = 256
SHARD_BYTES_MIN = 4 * 1024 * 1024
MIB = 1024 * 1024
REQUIREPASS_BYTES_MAX = 512  # room for the password in the stats segment (Redis has no small limit)
SUBSCRIPTION_ENTRY_BYTES = 256  # one subscription in a worker's tables, Python objects included, rounded up
WATCH_ENTRY_BYTES = 256  # one WATCHed (key, client) in a worker's table, Python objects included, rounded up
TRACKING_PREFIX_ENTRY_BYTES = 512  # one BCAST (prefix, client) registration, held by every worker
RUNNING_SCRIPT_BYTES = 4096  # the name and command of the script running now (FUNCTION STATS), any worker
PROCESS_OVERHEAD_MIB = 48  # CPython + uvloop + our modules, measured RSS of an idle worker, rounded up


class LimitsError(ValueError):
    """An operator error in the limits: printed as one line, exit code 1."""


@dataclass(frozen=True, slots=True)
class Limits:
    port: int = 6379
    bind: str = "127.0.0.1"
    shards: int = 0  # 0 = one per CPU, resolved in `resolved()`
    maxmemory: int = 256 * 1024 * 1024  # bytes of shard segments, all shards together
    maxclients: int = 1024
    databases: int = 16
    key_bytes_max: int = 64 * 1024
    value_bytes_max: int = 8 * 1024 * 1024  # CONFIG proto-max-bulk-len
    args_max: int = 65536  # arguments in one command
    query_buffer_bytes_max: int = 16 * 1024 * 1024  # CONFIG client-query-buffer-limit
    connection_buffer_bytes: int = 16 * 1024  # preallocated receive buffer per connection slot
    large_requests_max: int = 2  # per worker: requests bigger than a connection buffer at once
    output_buffer_bytes_max: int = 64 * 1024 * 1024  # a client's unsent replies; over it, it is closed
    inflight_per_client_max: int = 4096  # commands of one client awaiting another shard's reply
    ring_bytes: int = 1024 * 1024  # each one-way ring between two workers
    expire_keys_per_tick_max: int = 200
    watchdog_timeout_ms: int = 10_000  # a worker whose heartbeat stands still this long is killed; 0: never
    requirepass: str = ""  # the supervisor's copy only: workers get "" and read the stats segment
    name: str = "shardkv"  # prefix of the /dev/shm segment names
    # A client holding a parse arena (a command bigger than its connection buffer) must keep
    # sending at least this fast, or it is closed: no client can hold the arenas by stalling.
    large_request_bytes_per_s_min: int = 64 * 1024
    # Unsent replies of all the clients of one worker; past it the client with the most is closed.
    output_bytes_per_worker_max: int = 64 * 1024 * 1024
    timeout: int = 0  # seconds a client may stay idle before it is closed (Redis's `timeout`), 0 = never
    # Commands queued after MULTI, all the clients of one worker together (one client: at most
    # client-query-buffer-limit); past it a queued command is refused and its EXEC aborts.
    transaction_bytes_per_worker_max: int = 16 * 1024 * 1024
    # (key, client) entries of WATCH per shard; past it a client's WATCH covers its whole shard.
    watched_keys_per_shard_max: int = 16384
    # Pub/sub: channel, pattern and shard-channel subscriptions of one worker's clients together;
    # a subscriber's unsent messages past pubsub-output-bytes-max close it (Redis's
    # `client-output-buffer-limit pubsub` hard limit, 32mb by default).
    subscriptions_per_worker_max: int = 16384
    # Lua: the bytes of cached scripts, in a segment shared by the workers (past it, loading a
    # new one is refused with OOM; Redis never evicts scripts), and each worker's Lua heap.
    scripts_bytes_max: int = 4 * 1024 * 1024
    functions_bytes_max: int = 4 * 1024 * 1024  # FUNCTION libraries' code, in the same segment
    lua_heap_bytes_max: int = 48 * 1024 * 1024
    pubsub_output_bytes_max: int = 32 * 1024 * 1024
    # Client tracking (CLIENT TRACKING): the bytes one shard's table of tracked keys may take,
    # Python objects included (tracking.py counts them); past it, or past the runtime
    # `tracking-table-max-keys`, keys are dropped from it with an invalidation, as Redis does.
    tracking_table_bytes_per_shard_max: int = 8 * 1024 * 1024
    # BCAST registrations, (prefix, client), of the whole server; every worker holds them all.
    tracking_prefixes_max: int = 4096

    def resolved(self) -> Limits:
        shards = self.shards or (os.cpu_count() or 1)
        return dataclasses.replace(self, shards=shards)

    def check(self) -> None:
        """Raise LimitsError with a one-line reason if the limits cannot work together."""
        if not 0 < self.port < 65536:
            raise LimitsError(f"port {self.port} is not in 1..65535")
        if not 1 <= self.shards <= SHARDS_MAX:
            raise LimitsError(f"shards {self.shards} is not in 1..{SHARDS_MAX}")
        if not 1 <= self.databases <= DATABASES_MAX:
            raise LimitsError(f"databases {self.databases} is not in 1..{DATABASES_MAX}")
        if self.maxclients < self.shards:
            raise LimitsError(f"maxclients {self.maxclients} is below shards {self.shards}")
        shard_bytes = self.maxmemory // self.shards
        if shard_bytes < SHARD_BYTES_MIN:
            raise LimitsError(
                f"maxmemory {self.maxmemory} gives {shard_bytes} bytes per shard; "
                f"each of the {self.shards} shards needs at least {SHARD_BYTES_MIN}"
            )
        if Footprint(self).shard_segment_bytes > SHARD_BYTES_MAX:
            raise LimitsError(
                f"maxmemory {self.maxmemory} gives {shard_bytes} bytes per shard; "
                f"a shard holds at most {SHARD_BYTES_MAX} (64 GiB): use more shards"
            )
        heap = Footprint(self).heap_bytes_per_shard
        if self.value_bytes_max + self.key_bytes_max > heap // 2:
            raise LimitsError(
                f"value-bytes-max {self.value_bytes_max} + key-bytes-max {self.key_bytes_max} "
                f"exceed half of a shard's heap ({heap} bytes): raise maxmemory or lower them"
            )
        if self.key_bytes_max < 1 or self.value_bytes_max < 1:
            raise LimitsError("key-bytes-max and value-bytes-max must be positive")
        need = self.value_bytes_max + self.key_bytes_max + 1024
        if self.query_buffer_bytes_max < need:
            raise LimitsError(
                f"client-query-buffer-limit {self.query_buffer_bytes_max} is below "
                f"value-bytes-max + key-bytes-max + 1024 = {need}"
            )
        if self.connection_buffer_bytes < 1024:
            raise LimitsError("connection-buffer-bytes must be at least 1024")
        if self.args_max < 3:
            raise LimitsError("args-max must be at least 3")
        if self.ring_bytes < 64 * 1024 or self.ring_bytes & (self.ring_bytes - 1):
            raise LimitsError(f"ring-bytes {self.ring_bytes} must be a power of two >= 65536")
        if self.large_requests_max < 1:
            raise LimitsError("large-requests-max must be at least 1")
        if self.inflight_per_client_max < 1:
            raise LimitsError("inflight-per-client-max must be at least 1")
        if self.output_buffer_bytes_max < 64 * 1024:
            raise LimitsError("output-buffer-bytes-max must be at least 65536")
        if self.output_bytes_per_worker_max < self.output_buffer_bytes_max:
            raise LimitsError(f"output-bytes-per-worker-max {self.output_bytes_per_worker_max} is below "
                              f"output-buffer-bytes-max {self.output_buffer_bytes_max}")
        if self.large_request_bytes_per_s_min < 1:
            raise LimitsError("large-request-bytes-per-s-min must be at least 1")
        if self.timeout < 0:
            raise LimitsError("timeout must not be negative")
        if min(self.scripts_bytes_max, self.functions_bytes_max) < 64 * 1024 or self.lua_heap_bytes_max < 1024 * 1024:
            raise LimitsError("scripts-bytes-max and functions-bytes-max must be at least 65536, "
                              "lua-heap-bytes-max at least 1048576")
        if self.subscriptions_per_worker_max < 1:
            raise LimitsError("subscriptions-per-worker-max must be at least 1")
        if self.pubsub_output_bytes_max < 64 * 1024:
            raise LimitsError("pubsub-output-bytes-max must be at least 65536")
        if self.transaction_bytes_per_worker_max < 1024 or self.watched_keys_per_shard_max < 1:
            raise LimitsError("transaction-bytes-per-worker-max must be at least 1024, "
                              "watched-keys-per-shard-max at least 1")
        if self.tracking_table_bytes_per_shard_max < 64 * 1024 or self.tracking_prefixes_max < 1:
            raise LimitsError("tracking-table-bytes-per-shard-max must be at least 65536, "
                              "tracking-prefixes-max at least 1")
        if self.watchdog_timeout_ms < 0:
            raise LimitsError("watchdog-timeout-ms must be 0 (off) or positive")
        if len(self.password()) > REQUIREPASS_BYTES_MAX:
            raise LimitsError(f"requirepass is {len(self.password())} bytes; "
                              f"at most {REQUIREPASS_BYTES_MAX} are allowed")

    def password(self) -> bytes:
        """requirepass as bytes (a command line or file may hold any bytes: surrogateescape)."""
        return self.requirepass.encode("utf-8", errors="surrogateescape")

    @property
    def clients_per_worker_max(self) -> int:
        """Connection slots per worker: twice a fair share, since SO_REUSEPORT spreads connections
        by hash, not evenly; `maxclients` itself is enforced server-wide."""
        return min(self.maxclients, 2 * -(-self.maxclients // self.shards))


@dataclass(frozen=True, slots=True)
class Footprint:
    """Byte counts of everything allocated at boot, derived from Limits alone."""

    limits: Limits

    @property
    def shard_segment_bytes(self) -> int:
        return (self.limits.maxmemory // self.limits.shards) // PAGE_BYTES * PAGE_BYTES

    @property
    def buckets_per_shard(self) -> int:
        want = max(1024, self.shard_segment_bytes // HEAP_BYTES_PER_BUCKET)
        return 1 << (want.bit_length() - 1)  # a power of two, at most `want`

    @property
    def pages_per_shard(self) -> int:
        room = self.shard_segment_bytes - SEGMENT_HEADER_BYTES - self.index_bytes_per_shard
        return room // (PAGE_BYTES + PAGE_ENTRY_BYTES + 1)

    @property
    def heap_bytes_per_shard(self) -> int:
        return self.pages_per_shard * PAGE_BYTES

    @property
    def index_bytes_per_shard(self) -> int:
        """The buckets, and the key-slot index (each slot's keys: COUNTKEYSINSLOT, GETKEYSINSLOT)."""
        return 8 * self.buckets_per_shard + SLOT_INDEX_BYTES

    @property
    def allocator_bytes_per_shard(self) -> int:
        return SEGMENT_HEADER_BYTES + self.pages_per_shard * (PAGE_ENTRY_BYTES + 1)

    @property
    def rings_count(self) -> int:
        # Two rings (requests, replies) for each ordered pair of distinct workers.
        return 2 * self.limits.shards * (self.limits.shards - 1)

    @property
    def rings_segment_bytes(self) -> int:
        return self.rings_count * (RING_HEADER_BYTES + self.limits.ring_bytes)

    @property
    def connection_bytes_per_worker(self) -> int:
        return self.limits.clients_per_worker_max * self.limits.connection_buffer_bytes

    @property
    def arena_bytes_per_worker(self) -> int:
        return self.limits.large_requests_max * self.limits.query_buffer_bytes_max

    @property
    def shm_bytes(self) -> int:
        """What must fit in /dev/shm: every shard segment and the rings."""
        return self.limits.shards * self.shard_segment_bytes + self.rings_segment_bytes + self.scripts_segment_bytes

    @property
    def scripts_segment_bytes(self) -> int:
        return 64 + self.limits.scripts_bytes_max + 64 + self.limits.functions_bytes_max + RUNNING_SCRIPT_BYTES

    @property
    def worker_bytes(self) -> int:
        return (self.connection_bytes_per_worker + self.arena_bytes_per_worker + self.limits.output_bytes_per_worker_max
                + self.limits.transaction_bytes_per_worker_max + self.watch_bytes_per_worker
                + self.subscription_bytes_per_worker + self.limits.lua_heap_bytes_max
                + self.tracking_bytes_per_worker)

    @property
    def tracking_bytes_per_worker(self) -> int:
        return (self.limits.tracking_table_bytes_per_shard_max
                + self.limits.tracking_prefixes_max * TRACKING_PREFIX_ENTRY_BYTES)

    @property
    def subscription_bytes_per_worker(self) -> int:
        return self.limits.subscriptions_per_worker_max * SUBSCRIPTION_ENTRY_BYTES

    @property
    def watch_bytes_per_worker(self) -> int:
        return self.limits.watched_keys_per_shard_max * WATCH_ENTRY_BYTES

    @property
    def total_bytes(self) -> int:
        return self.shm_bytes + self.limits.shards * self.worker_bytes

    @property
    def pod_shm_limit_mib(self) -> int:
        """/dev/shm (an emptyDir of medium Memory) for a pod: the segments, plus 1 MiB for stats."""
        return -(-self.shm_bytes // MIB) + 1

    @property
    def pod_memory_limit_mib(self) -> int:
        """A pod's memory limit: the whole footprint plus the interpreter of each process."""
        return -(-self.total_bytes // MIB) + PROCESS_OVERHEAD_MIB * (self.limits.shards + 1)

    def table(self) -> str:
        lim = self.limits
        s = lim.shards
        rows = [
            ("shard index", f"{s} x ({self.buckets_per_shard} buckets + {HASH_SLOTS} key slots)",
             s * self.index_bytes_per_shard),
            ("shard heap", f"{s} x {self.pages_per_shard} pages of {PAGE_BYTES}", s * self.heap_bytes_per_shard),
            ("shard header + page table", f"{s} x {self.allocator_bytes_per_shard}",
             s * self.allocator_bytes_per_shard),
            ("rings", f"{self.rings_count} x {lim.ring_bytes}", self.rings_segment_bytes),
            ("connection buffers", f"{s} x {lim.clients_per_worker_max} x {lim.connection_buffer_bytes}",
             s * self.connection_bytes_per_worker),
            ("parse arenas", f"{s} x {lim.large_requests_max} x {lim.query_buffer_bytes_max}",
             s * self.arena_bytes_per_worker),
            ("unsent replies (bound)", f"{s} x {lim.output_bytes_per_worker_max}",
             s * lim.output_bytes_per_worker_max),
            ("queued transactions (bound)", f"{s} x {lim.transaction_bytes_per_worker_max}",
             s * lim.transaction_bytes_per_worker_max),
            ("scripts and functions", f"{lim.scripts_bytes_max} + {lim.functions_bytes_max}",
             self.scripts_segment_bytes),
            ("Lua heaps (bound)", f"{s} x {lim.lua_heap_bytes_max}", s * lim.lua_heap_bytes_max),
            ("subscriptions (bound)", f"{s} x {lim.subscriptions_per_worker_max} x {SUBSCRIPTION_ENTRY_BYTES}",
             s * self.subscription_bytes_per_worker),
            ("watched keys (bound)", f"{s} x {lim.watched_keys_per_shard_max} x {WATCH_ENTRY_BYTES}",
             s * self.watch_bytes_per_worker),
            ("tracking tables (bound)", f"{s} x ({lim.tracking_table_bytes_per_shard_max} + "
             f"{lim.tracking_prefixes_max} x {TRACKING_PREFIX_ENTRY_BYTES})", s * self.tracking_bytes_per_worker),
        ]
        width = max(len(r[0]) for r in rows)
        lines = [f"{'part':<{width}}  {'bytes':>12}  layout"]
        for name, layout, nbytes in rows:
            lines.append(f"{name:<{width}}  {nbytes:>12}  {layout}")
        lines.append(f"{'total':<{width}}  {self.total_bytes:>12}  ({human_bytes(self.total_bytes)}; "
                     f"/dev/shm {human_bytes(self.shm_bytes)})")
        return "\n".join(lines)


def human_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f}{unit}" if unit != "B" else f"{n}B"
        n /= 1024  # type: ignore[assignment]
    raise AssertionError("unreachable")


# ------------------------------------------------------------------------- parsing

_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1024, "m": 1000**2, "mb": 1024**2, "g": 1000**3, "gb": 1024**3}


def parse_memory(text: str) -> int:
    """Redis memory notation (`100mb`, `1gb`, `4096`) or a percentage of available memory."""
    t = text.strip().lower()
    if t.endswith("%"):
        try:
            pct = float(t[:-1])
        except ValueError:
            raise LimitsError(f"cannot read memory amount {text!r}") from None
        if not 0 < pct <= 100:
            raise LimitsError(f"memory percentage {text!r} is not in (0, 100]")
        return int(available_memory_bytes() * pct / 100)
    m = re.fullmatch(r"(\d+)([a-z]*)", t)
    if not m or m.group(2) not in _UNITS:
        raise LimitsError(f"cannot read memory amount {text!r}")
    return int(m.group(1)) * _UNITS[m.group(2)]


def available_memory_bytes() -> int:
    """The cgroup memory limit if one is set, else the machine's memory."""
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as f:
                raw = f.read().strip()
        except OSError:
            continue
        if raw.isdigit() and int(raw) < 1 << 60:
            return int(raw)
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def read_password_file(path: str) -> str:
    """--requirepass-file: the password is the file's first line.  The file must be a regular
    file that neither group nor others can read, like an ssh key."""
    import stat

    try:
        # A symlink is followed (Kubernetes mounts a Secret's keys as links); what counts is the
        # file opened, checked through its fd.  O_NONBLOCK: a FIFO must not hang the boot.
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        raise LimitsError(f"cannot open requirepass-file {path!r}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise LimitsError(f"requirepass-file {path!r} is not a regular file")
        if st.st_mode & 0o077:
            raise LimitsError(f"requirepass-file {path!r} has mode {stat.S_IMODE(st.st_mode):04o}; "
                              "group and others must have no access (chmod 600)")
        raw = os.read(fd, REQUIREPASS_BYTES_MAX + 3)
    finally:
        os.close(fd)
    text = raw.decode("utf-8", errors="surrogateescape").split("\n", 1)[0].removesuffix("\r")
    if len(text.encode("utf-8", errors="surrogateescape")) > REQUIREPASS_BYTES_MAX:
        raise LimitsError(f"requirepass-file {path!r} holds more than {REQUIREPASS_BYTES_MAX} bytes")
    if not text:
        raise LimitsError(f"requirepass-file {path!r} is empty: no password would be required")
    return text


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise LimitsError(f"{text!r} is not an integer") from None


# Option name -> (Limits field, converter).  Redis's own names where Redis has the setting.
OPTIONS: dict[str, tuple[str, object]] = {
    "port": ("port", _int),
    "bind": ("bind", str),
    "shards": ("shards", _int),
    "maxmemory": ("maxmemory", parse_memory),
    "maxclients": ("maxclients", _int),
    "databases": ("databases", _int),
    "key-bytes-max": ("key_bytes_max", parse_memory),
    "proto-max-bulk-len": ("value_bytes_max", parse_memory),
    "value-bytes-max": ("value_bytes_max", parse_memory),
    "args-max": ("args_max", _int),
    "client-query-buffer-limit": ("query_buffer_bytes_max", parse_memory),
    "connection-buffer-bytes": ("connection_buffer_bytes", parse_memory),
    "large-requests-max": ("large_requests_max", _int),
    "output-buffer-bytes-max": ("output_buffer_bytes_max", parse_memory),
    "inflight-per-client-max": ("inflight_per_client_max", _int),
    "ring-bytes": ("ring_bytes", parse_memory),
    "expire-keys-per-tick-max": ("expire_keys_per_tick_max", _int),
    "watchdog-timeout-ms": ("watchdog_timeout_ms", _int),
    "requirepass": ("requirepass", str),
    "requirepass-file": ("requirepass", read_password_file),
    "name": ("name", str),
    "large-request-bytes-per-s-min": ("large_request_bytes_per_s_min", parse_memory),
    "output-bytes-per-worker-max": ("output_bytes_per_worker_max", parse_memory),
    "transaction-bytes-per-worker-max": ("transaction_bytes_per_worker_max", parse_memory),
    "watched-keys-per-shard-max": ("watched_keys_per_shard_max", _int),
    "subscriptions-per-worker-max": ("subscriptions_per_worker_max", _int),
    "scripts-bytes-max": ("scripts_bytes_max", parse_memory),
    "functions-bytes-max": ("functions_bytes_max", parse_memory),
    "lua-heap-bytes-max": ("lua_heap_bytes_max", parse_memory),
    "pubsub-output-bytes-max": ("pubsub_output_bytes_max", parse_memory),
    "tracking-table-bytes-per-shard-max": ("tracking_table_bytes_per_shard_max", parse_memory),
    "tracking-prefixes-max": ("tracking_prefixes_max", _int),
    "timeout": ("timeout", _int),
}


@dataclass(frozen=True, slots=True)
class BootOptions:
    limits: Limits
    print_footprint: bool = False


def parse_args(argv: list[str]) -> BootOptions:
    """Redis-style command line: [config-file] [--name value | --name=value | --flag]..."""
    settings: dict[str, str] = {}
    print_footprint = False
    args = list(argv)
    if args and not args[0].startswith("--"):
        settings.update(read_config_file(args.pop(0)))
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--"):
            raise LimitsError(f"unexpected argument {arg!r}")
        name = arg[2:]
        if name == "print-footprint":
            print_footprint = True
            i += 1
            continue
        if "=" in name:
            name, value = name.split("=", 1)
            i += 1
        else:
            if i + 1 >= len(args):
                raise LimitsError(f"option --{name} needs a value")
            value = args[i + 1]
            i += 2
        settings[name.lower()] = value
    return BootOptions(limits=limits_from(settings), print_footprint=print_footprint)


def read_config_file(path: str) -> dict[str, str]:
    settings: dict[str, str] = {}
    try:
        with open(path) as f:
            lines = f.readlines()
    except OSError as exc:
        raise LimitsError(f"cannot read config file {path!r}: {exc.strerror}") from None
    for lineno, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(None, 1)
        if len(parts) != 2:
            raise LimitsError(f"{path}:{lineno}: expected 'name value'")
        settings[parts[0].lower()] = parts[1].strip().strip('"')
    return settings


def limits_from(settings: dict[str, str]) -> Limits:
    values: dict[str, object] = {}
    for name, raw in settings.items():
        if name not in OPTIONS:
            raise LimitsError(f"unknown option {name!r}")
        field, convert = OPTIONS[name]
        values[field] = convert(raw)  # type: ignore[operator]
    limits = Limits(**values).resolved()  # type: ignore[arg-type]
    limits.check()
    return limits
