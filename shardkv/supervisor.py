"""The supervisor: computes the footprint, allocates every segment, runs and restarts workers.

It owns the shared-memory segments: workers only attach to them, so a worker killed with SIGKILL
loses nothing that it had published; the supervisor starts a new worker for the same shard, which
rebuilds its allocator from the shard's index and carries on.  On SIGTERM (or SHUTDOWN) it stops
the workers, unlinks every segment and exits 0.

It also owns what keeps an instance whole and private: the instance lock (a second supervisor
for the same name and port refuses to start), the password (stored in the stats segment, never
on a worker's command line, and masked in the supervisor's own process title), and the
watchdog: a worker whose heartbeat word stands still for `watchdog_timeout_ms` is killed, and
every dead worker is restarted after a delay that doubles while it keeps dying soon after start.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field

import setproctitle

from shardkv import segments
from shardkv.commands.table import command_index
from shardkv.limits import Footprint, Limits, LimitsError, human_bytes, parse_args
from shardkv.stats import (
    G_STARTED_MS,
    G_SUPERVISOR_PID,
    W_BLOCKED,
    W_CONNECTED,
    W_HEARTBEAT_MS,
    W_READY,
    W_RESTARTS,
    Stats,
    segment_bytes,
)
from shardkv.store import Store
from shardkv.worker.process import Boot

VERSION = "7.0.15"  # the Redis version whose behaviour shardkv follows
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 4.0
POLL_S = 0.05
RESTART_DELAY_MIN_S = 0.05  # first restart of a worker that died
RESTART_DELAY_MAX_S = 5.0  # the delay doubles up to this while a worker keeps dying soon after start
STABLE_S = 10.0  # ready this long before dying: the next restart is immediate again
FIRST_BEAT_TIMEOUT_MS = 10_000  # a new worker's interpreter may take this long to show its first beat
SUPERVISOR_GAP_S = 1.0  # the supervisor itself did not run this long (stopped, starved): restart the clocks
PASSWORD_MASK = "******"


class BootError(Exception):
    pass


@dataclass
class WorkerLife:
    """The supervisor's view of one worker slot across its restarts."""

    proc: subprocess.Popen[bytes] | None = None  # None: dead, waiting out its restart delay
    spawned_at: float = 0.0  # monotonic s
    watched_from: float = 0.0  # monotonic s from which a still heartbeat counts as a stall
    ready_at: float | None = None  # when the supervisor first saw it ready
    restart_at: float = 0.0
    delay_s: float = 0.0  # the last restart delay (0: never restarted or stable since)


@dataclass
class Supervisor:
    limits: Limits
    footprint: Footprint = field(init=False)
    names: list[str] = field(default_factory=list)
    lives: list[WorkerLife] = field(default_factory=list)
    doorbells: list[int] = field(default_factory=list)
    lock_fd: int | None = None
    stopping: bool = False

    def __post_init__(self) -> None:
        self.footprint = Footprint(self.limits)
        lim = self.limits
        self.shard_names = [segments.segment_name(lim.name, lim.port, f"shard{i}") for i in range(lim.shards)]
        self.ring_name = segments.segment_name(lim.name, lim.port, "rings")
        self.stats_name = segments.segment_name(lim.name, lim.port, "stats")
        self.scripts_name = segments.segment_name(lim.name, lim.port, "scripts")
        self.lock_path = segments.lock_path(lim.name, lim.port)
        self.last_poll_at = time.monotonic()

    def lock(self) -> None:
        """Before any segment is touched: be the only instance of this name and port, and find
        the port free of any other listener (workers share it with SO_REUSEPORT, which would
        otherwise let a second server of the same user take half of the first one's clients)."""
        lim = self.limits
        self.lock_fd = segments.lock_instance(self.lock_path)
        if self.lock_fd is None:
            raise BootError(f"another shardkv named {lim.name!r} is running on port {lim.port} "
                            f"(it holds {self.lock_path}); stop it first or use another --port or --name")
        for host in bind_hosts(lim.bind):
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            with socket.socket(family, socket.SOCK_STREAM) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    probe.bind((host, lim.port))
                except OSError as exc:
                    raise BootError(f"cannot listen on {host} port {lim.port}: {exc.strerror or exc} "
                                    f"(is another server using it?)") from None

    def allocate(self) -> None:
        fp = self.footprint
        stats_bytes = segment_bytes(self.limits.shards, len(command_index()))
        need = fp.shm_bytes + stats_bytes
        free = segments.shm_free_bytes()
        if free < need:
            raise BootError(
                f"/dev/shm has {human_bytes(free)} free but the segments need {human_bytes(need)}: "
                f"lower --maxmemory or give /dev/shm more room (Docker: --shm-size; Kubernetes: an "
                f"emptyDir with medium: Memory mounted at /dev/shm)")
        try:
            for name in self.shard_names:
                self.names.append(name)
                mm = segments.create(name, fp.shard_segment_bytes)
                Store(mm, fp, format_segment=True).close()
                mm.close()
            if self.limits.shards > 1:
                self.names.append(self.ring_name)
                segments.create(self.ring_name, fp.rings_segment_bytes).close()
            self.names.append(self.scripts_name)
            segments.create(self.scripts_name, fp.scripts_segment_bytes).close()
            self.names.append(self.stats_name)
            self.stats_mm = segments.create(self.stats_name, stats_bytes)
        except OSError as exc:
            raise BootError(f"cannot allocate the shared-memory segments: {exc.strerror or exc}") from None
        self.stats = Stats(self.stats_mm, self.limits.shards, len(command_index()))
        self.stats.global_set(G_SUPERVISOR_PID, os.getpid())
        self.stats.global_set(G_STARTED_MS, int(time.time() * 1000))
        self.stats.reset_tunables()
        self.stats.set_tunable("timeout", self.limits.timeout)
        self.stats.set_password(self.limits.password())  # before any worker can read it
        if self.limits.shards > 1:
            self.doorbells = [os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC) for _ in range(self.limits.shards)]

    def spawn(self, worker: int) -> None:
        """Start (or restart) one worker.  Its boot description is on its command line, which
        any local user can read: it carries no password (workers read it from the stats segment)."""
        boot = Boot(worker=worker, limits=dataclasses.replace(self.limits, requirepass=""),
                    shard_names=self.shard_names, ring_name=self.ring_name, stats_name=self.stats_name,
                    scripts_name=self.scripts_name,
                    doorbells=self.doorbells, supervisor_pid=os.getpid())
        self.stats.set(worker, W_HEARTBEAT_MS, 0)  # no beat yet in this life
        life = self.lives[worker]
        life.proc = subprocess.Popen([sys.executable, "-m", "shardkv.worker", boot.to_json()],
                                     pass_fds=self.doorbells)
        life.spawned_at = life.watched_from = time.monotonic()
        life.ready_at = None

    def start_workers(self) -> None:
        self.lives = [WorkerLife() for _ in range(self.limits.shards)]
        for i in range(self.limits.shards):
            self.spawn(i)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not all(self.stats.get(i, W_READY) for i in range(self.limits.shards)):
            now = time.monotonic()
            for i, life in enumerate(self.lives):
                assert life.proc is not None
                if life.proc.poll() is not None:
                    raise BootError(f"worker {i} {exit_reason(life.proc.returncode)} during boot")
                stalled_ms = self.stalled_ms(i, life, now)
                if stalled_ms is not None:
                    raise BootError(f"worker {i} showed no progress for {stalled_ms} ms during boot")
            if now > deadline:
                raise BootError("workers did not become ready in time")
            time.sleep(0.01)

    def watch(self) -> None:
        """Restart dead workers and kill stalled ones until asked to stop."""
        self.last_poll_at = time.monotonic()
        while not self.stopping:
            self.poll(time.monotonic())
            time.sleep(POLL_S)

    def poll(self, now: float) -> None:
        if now - self.last_poll_at > SUPERVISOR_GAP_S:
            # We did not run for a while: the workers may not have either (the whole group was
            # stopped, or starved).  Their heartbeats count from now, not from before the gap.
            for life in self.lives:
                life.watched_from = max(life.watched_from, now)
        self.last_poll_at = now
        for i, life in enumerate(self.lives):
            if self.stopping:
                return
            if life.proc is None:
                if now >= life.restart_at:
                    self.spawn(i)
                continue
            code = life.proc.poll()
            if code is None:
                if life.ready_at is None and self.stats.get(i, W_READY):
                    life.ready_at = now
                stalled_ms = self.stalled_ms(i, life, now)
                if stalled_ms is None:
                    continue
                life.proc.kill()  # SIGKILL works on a stopped process too
                life.proc.wait()
                reason = (f"heartbeat stalled {stalled_ms} ms (watchdog-timeout-ms "
                          f"{self.limits.watchdog_timeout_ms}): killed it with SIGKILL")
            else:
                reason = exit_reason(code)
            self.schedule_restart(i, life, reason, now)

    def stalled_ms(self, worker: int, life: WorkerLife, now: float) -> int | None:
        """How long the worker's heartbeat has stood still, if past the watchdog's limit."""
        timeout_ms = self.limits.watchdog_timeout_ms
        if not timeout_ms:
            return None
        beat_ms = self.stats.get(worker, W_HEARTBEAT_MS)
        if not beat_ms:  # still starting its interpreter: allow for a slow start
            timeout_ms = max(timeout_ms, FIRST_BEAT_TIMEOUT_MS)
        still_ms = int(now * 1000) - max(beat_ms, int(life.watched_from * 1000))
        return still_ms if still_ms > timeout_ms else None

    def schedule_restart(self, worker: int, life: WorkerLife, reason: str, now: float) -> None:
        assert life.proc is not None
        stable = life.ready_at is not None and now - life.ready_at >= STABLE_S
        if stable or not life.delay_s:
            life.delay_s = RESTART_DELAY_MIN_S
        else:
            life.delay_s = min(2 * life.delay_s, RESTART_DELAY_MAX_S)
        self.stats.set(worker, W_READY, 0)
        self.stats.add(worker, W_RESTARTS)
        # Its clients are gone with it: do not let them count against maxclients (or show in
        # INFO) for the whole restart delay.  Nobody else writes a dead worker's row.
        self.stats.set(worker, W_CONNECTED, 0)
        self.stats.set(worker, W_BLOCKED, 0)
        warn(f"worker {worker} (pid {life.proc.pid}) {reason} after {now - life.spawned_at:.1f} s; "
             f"restarting it in {round(life.delay_s * 1000)} ms")
        life.proc = None
        life.restart_at = now + life.delay_s

    def stop_workers(self) -> None:
        procs = [life.proc for life in self.lives if life.proc is not None]
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for p in procs:
            try:
                p.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def release(self) -> None:
        if getattr(self, "stats", None) is not None:
            self.stats.close()
            self.stats_mm.close()
        for name in self.names:
            segments.unlink(name)
        for fd in self.doorbells:
            os.close(fd)
        if self.lock_fd is not None:  # last: the segments are gone before another may start
            segments.unlock_instance(self.lock_path, self.lock_fd)
            self.lock_fd = None


def bind_hosts(bind: str) -> list[str]:
    """The addresses of a Redis-style `bind` value ("-" marks one that may be missing)."""
    return [host.lstrip("-") for host in bind.split()]


def exit_reason(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def hide_password(argv: list[str]) -> list[str]:
    """argv with the value of --requirepass masked (option names are case-insensitive)."""
    out = list(argv)
    for i, arg in enumerate(out):
        name, eq, _ = arg.partition("=")
        if name.lower() != "--requirepass":
            continue
        if eq:
            out[i] = f"{name}={PASSWORD_MASK}"
        elif i + 1 < len(out):
            out[i + 1] = PASSWORD_MASK
    return out


def log(text: str) -> None:
    print(f"{os.getpid()}:M {time.strftime('%d %b %Y %H:%M:%S')} * {text}", flush=True)


def warn(text: str) -> None:
    """A line about something that went wrong: to stderr, in the log's format."""
    print(f"{os.getpid()}:M {time.strftime('%d %b %Y %H:%M:%S')} # {text}", file=sys.stderr, flush=True)


def set_title_without_password() -> None:
    """Any local user can read /proc/<pid>/cmdline: rewrite it with the password masked.
    setproctitle also renames the process (comm, what pgrep and top show): keep the old name."""
    try:
        with open("/proc/self/comm") as f:
            comm = f.read()
    except OSError:
        comm = ""
    setproctitle.setproctitle(" ".join(hide_password(sys.orig_argv)))
    if comm:
        with open("/proc/self/comm", "w") as f:
            f.write(comm)


def main() -> None:
    set_title_without_password()  # before anything else: the shorter the window, the better
    try:
        opts = parse_args(sys.argv[1:])
    except LimitsError as exc:
        print(f"shardkv: {exc}", file=sys.stderr)
        sys.exit(1)
    limits = opts.limits
    footprint = Footprint(limits)
    if opts.print_footprint:
        print(footprint.table())
        print(f"shm_bytes={footprint.shm_bytes}")
        print(f"worker_bytes={footprint.worker_bytes}")
        print(f"total_bytes={footprint.total_bytes}")
        print(f"pod_shm_limit={footprint.pod_shm_limit_mib}Mi")
        print(f"pod_memory_limit={footprint.pod_memory_limit_mib}Mi")
        return
    sup = Supervisor(limits)

    def on_signal(signum: int, frame: object) -> None:
        sup.stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log(f"shardkv (Redis {VERSION} compatible) starting: port {limits.port}, {limits.shards} shards")
    print(footprint.table(), flush=True)
    code = 0
    try:
        sup.lock()
        sup.allocate()
        sup.start_workers()
        log("Ready to accept connections")
        sup.watch()
        log("Received SIGTERM scheduling shutdown...")
    except BootError as exc:
        print(f"shardkv: {exc}", file=sys.stderr)
        code = 1
    finally:
        sup.stop_workers()
        sup.release()
    if code == 0:
        log("shardkv is now ready to exit, bye bye...")
    sys.exit(code)
