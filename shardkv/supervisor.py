"""The supervisor: computes the footprint, allocates every segment, runs and restarts workers.

It owns the shared-memory segments: workers only attach to them, so a worker killed with SIGKILL
loses nothing that it had published; the supervisor starts a new worker for the same shard, which
rebuilds its allocator from the shard's index and carries on.  On SIGTERM (or SHUTDOWN) it stops
the workers, unlinks every segment and exits 0.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

from shardkv import segments
from shardkv.commands.table import command_index
from shardkv.limits import Footprint, Limits, LimitsError, human_bytes, parse_args
from shardkv.stats import G_STARTED_MS, G_SUPERVISOR_PID, W_READY, W_RESTARTS, Stats, segment_bytes
from shardkv.store import Store
from shardkv.worker.process import Boot

VERSION = "7.0.15"  # the Redis version whose behaviour shardkv follows
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 4.0
POLL_S = 0.05


class BootError(Exception):
    pass


@dataclass
class Supervisor:
    limits: Limits
    footprint: Footprint = field(init=False)
    names: list[str] = field(default_factory=list)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    doorbells: list[int] = field(default_factory=list)
    stopping: bool = False

    def __post_init__(self) -> None:
        self.footprint = Footprint(self.limits)
        lim = self.limits
        self.shard_names = [segments.segment_name(lim.name, lim.port, f"shard{i}") for i in range(lim.shards)]
        self.ring_name = segments.segment_name(lim.name, lim.port, "rings")
        self.stats_name = segments.segment_name(lim.name, lim.port, "stats")

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
            self.names.append(self.stats_name)
            self.stats_mm = segments.create(self.stats_name, stats_bytes)
        except OSError as exc:
            raise BootError(f"cannot allocate the shared-memory segments: {exc.strerror or exc}") from None
        self.stats = Stats(self.stats_mm, self.limits.shards, len(command_index()))
        self.stats.global_set(G_SUPERVISOR_PID, os.getpid())
        self.stats.global_set(G_STARTED_MS, int(time.time() * 1000))
        self.stats.reset_tunables()
        self.stats.set_tunable("timeout", self.limits.timeout)
        if self.limits.shards > 1:
            self.doorbells = [os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC) for _ in range(self.limits.shards)]

    def spawn(self, worker: int) -> subprocess.Popen[bytes]:
        boot = Boot(worker=worker, limits=self.limits, shard_names=self.shard_names,
                    ring_name=self.ring_name, stats_name=self.stats_name, doorbells=self.doorbells,
                    supervisor_pid=os.getpid())
        return subprocess.Popen([sys.executable, "-m", "shardkv.worker", boot.to_json()],
                                pass_fds=self.doorbells)

    def start_workers(self) -> None:
        self.procs = [self.spawn(i) for i in range(self.limits.shards)]
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not all(self.stats.get(i, W_READY) for i in range(self.limits.shards)):
            for i, p in enumerate(self.procs):
                if p.poll() is not None:
                    raise BootError(f"worker {i} exited with code {p.returncode} during boot")
            if time.monotonic() > deadline:
                raise BootError("workers did not become ready in time")
            time.sleep(0.01)

    def watch(self) -> None:
        """Restart dead workers until asked to stop."""
        while not self.stopping:
            for i, p in enumerate(self.procs):
                if p.poll() is not None and not self.stopping:
                    log(f"worker {i} (pid {p.pid}) exited with code {p.returncode}; restarting it")
                    self.stats.set(i, W_READY, 0)
                    self.stats.add(i, W_RESTARTS)
                    self.procs[i] = self.spawn(i)
            time.sleep(POLL_S)

    def stop_workers(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for p in self.procs:
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


def log(text: str) -> None:
    print(f"{os.getpid()}:M {time.strftime('%d %b %Y %H:%M:%S')} * {text}", flush=True)


def main() -> None:
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
