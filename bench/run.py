"""Every benchmark of shardkv beside redis-server, one command, markdown tables on stdout.

    .venv/bin/python bench/run.py [--only throughput,memory,scaling,store,hop,txn] [--quick]

- throughput: redis-benchmark against redis-server and shardkv (--shards 1 and --shards = CPUs)
  in alternation, rounds x (redis, shardkv 1, shardkv N), each server started fresh and prefilled
  so that GETs hit, keys drawn from 100,000 (-r; 10,000 for 4 KiB values); each test run on its own:
  median rps with the spread of the rounds, the ratio, p50 and p99 latency, and the server's CPU
  time per command (/proc, all its processes, over every round: at least 2,000,000 commands per
  figure at -P 16 with the defaults); -c 50, -P 1 and -P 16, 100-byte values (and 4 KiB for
  SET/GET).  Where the machine has at least 4 CPUs the servers are pinned to the first half and
  the client to the second (taskset); the header says which.
- latency: redis-benchmark -c 1 -P 1 (PING, SET, GET): p50 and p99 of each server.
- memory: 1,000,000 keys of 100-byte values, then 100,000 hashes of 10 fields, loaded into each
  server: redis-server's used_memory and RSS beside shardkv's used bytes, allocated footprint,
  PSS of all its processes (shared pages counted once) and worker RssAnon growth, per key.
- scaling: GET/SET -P 16 from bench/lean.py with one client process per CPU, shardkv with 1, 2,
  ... CPUs shards, as a ratio to 1 shard.
- store: one shard's Store without any I/O: GET hit, GET miss, SET overwrite, SET new key, ns per
  operation in random key order, beside a Python dict, for 100,000 and 10,000,000 keys.
- hop: the same GET/SET -P 16 load on --shards 2 when every key is owned by the connection's
  own worker and when every key is owned by the other one: the price of the ring.

Needs redis-server, redis-benchmark and taskset (util-linux) on PATH; Linux.
"""

from __future__ import annotations

import argparse
import csv
import io
import mmap
import os
import platform
import random
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.append(ROOT)  # after the installed shardkv (a non-editable install has no sources built)

from bench.lean import frame, free_port, info_of, load, preload  # noqa: E402
from shardkv.layout import TYPE_STRING  # noqa: E402
from shardkv.limits import Footprint, Limits  # noqa: E402
from shardkv.store import Store  # noqa: E402

CPUS = os.cpu_count() or 1
PIN = CPUS >= 4
SERVER_CPUS = f"0-{CPUS // 2 - 1}" if PIN else ""
CLIENT_CPUS = f"{CPUS // 2}-{CPUS - 1}" if PIN else ""


def wait_port(port: int) -> None:
    for _ in range(600):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


def pinned(cmd: list[str], cpus: str) -> list[str]:
    return ["taskset", "-c", cpus, *cmd] if cpus else cmd


@contextmanager
def redis_server() -> Iterator[tuple[int, int]]:
    """(port, pid) of a redis-server with no persistence."""
    port = free_port()
    proc = subprocess.Popen(pinned(["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"],
                                   SERVER_CPUS), stdout=subprocess.DEVNULL)
    try:
        wait_port(port)
        yield port, proc.pid
    finally:
        proc.terminate()
        proc.wait(10)


@contextmanager
def shardkv(shards: int, maxmemory: str = "1gb") -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    port = free_port()
    proc = subprocess.Popen(pinned([sys.executable, "-P", "-m", "shardkv", "--port", str(port), "--shards", str(shards),
                                    "--maxmemory", maxmemory, "--maxclients", "1000", "--name", f"skvbench{port}"],
                                   SERVER_CPUS), stdout=subprocess.DEVNULL, cwd=ROOT)
    try:
        wait_port(port)
        ready(port, shards)
        yield port, proc
    finally:
        proc.terminate()
        proc.wait(30)


def info(port: int, section: str) -> dict[str, str]:
    with socket.create_connection(("127.0.0.1", port)) as s:
        return info_of(s, section)


def ready(port: int, shards: int) -> None:
    for _ in range(600):
        if int(info(port, "server").get("workers_ready", "0")) >= shards:
            return
        time.sleep(0.05)
    raise SystemExit("shardkv workers did not come up")


# ---------------------------------------------------------------------- throughput

TESTS_100 = ["ping_mbulk", "set", "get", "incr", "lpush", "lpop", "sadd", "hset", "mset"]
TESTS_4K = ["set", "get"]
KEYSPACE_100, KEYSPACE_4K = 100_000, 10_000  # redis-benchmark -r: key:000000000000 .. key:<keyspace - 1>


def prefill(port: int, keyspace: int, size: int) -> None:
    """SET every key redis-benchmark -r <keyspace> can name (key:%012d), so every GET hits."""
    s = socket.create_connection(("127.0.0.1", port))
    value = b"x" * size
    step = max(1, min(10_000, (1 << 22) // (size + 40)))
    for start in range(0, keyspace, step):
        batch = range(start, min(keyspace, start + step))
        s.sendall(b"".join(frame(b"SET", b"key:%012d" % i, value) for i in batch))
        want, got = 5 * len(batch), 0
        while got < want:
            got += len(s.recv(1 << 20))
    s.close()


def cpu_s(pids: list[int]) -> float:
    """User + system CPU seconds these processes used so far (all their threads)."""
    ticks = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def server_pids(proc_pid: int) -> list[int]:
    """A server process and its children (shardkv's workers)."""
    out = subprocess.run(["pgrep", "-P", str(proc_pid)], capture_output=True, text=True).stdout
    return [proc_pid, *map(int, out.split())]


def redis_benchmark(port: int, test: str, pipeline: int, size: int, requests: int, keyspace: int,
                    clients: int = 50) -> list[float]:
    """[rps, p50 ms, p99 ms] of one redis-benchmark test over a key space of `keyspace` keys."""
    out = subprocess.run(pinned(["redis-benchmark", "-p", str(port), "-t", test, "-n", str(requests),
                                 "-c", str(clients), "-P", str(pipeline), "-d", str(size), "-r", str(keyspace),
                                 "--csv"], CLIENT_CPUS),
                         capture_output=True, text=True, check=True).stdout
    (row,) = csv.DictReader(io.StringIO(out))
    return [float(row["rps"]), float(row["p50_latency_ms"]), float(row["p99_latency_ms"])]


@contextmanager
def any_server(shards: int) -> Iterator[tuple[int, int]]:
    """(port, pid) of redis-server (shards 0) or shardkv with this many shards."""
    if shards == 0:
        with redis_server() as server:
            yield server
    else:
        with shardkv(shards) as (port, sk):
            yield port, sk.pid


def throughput(opts: argparse.Namespace) -> None:
    """Rounds of (redis-server, shardkv 1 shard, shardkv N shards), each started fresh and
    prefilled; every test run on its own, so the server CPU it took is its own."""
    configs = [("redis", 0), ("shardkv 1", 1)] + ([(f"shardkv {CPUS}", CPUS)] if CPUS > 1 else [])
    plan = [(TESTS_100, 100, KEYSPACE_100), (TESTS_4K, 4096, KEYSPACE_4K)]
    runs: dict[tuple[str, int, int, str], list[list[float]]] = {}  # rps, p50, p99, CPU s, commands
    for _ in range(opts.rounds):
        for label, shards in configs:
            with any_server(shards) as (port, pid):
                pids = server_pids(pid)
                for tests, size, keyspace in plan:
                    prefill(port, keyspace, size)
                    for pipeline in (1, 16):
                        requests = opts.requests if pipeline > 1 else opts.requests_p1
                        for test in tests:
                            before = cpu_s(pids)
                            row = redis_benchmark(port, test, pipeline, size, requests, keyspace)
                            runs.setdefault((label, pipeline, size, test), []).append(
                                [*row, cpu_s(pids) - before, requests])
    print(f"\n### Throughput: redis-benchmark -c 50 -r <key space>, {opts.rounds} rounds, servers started in "
          f"turn each round (redis, shardkv 1 shard, shardkv {CPUS} shards) and prefilled so every GET hits; "
          f"-n {opts.requests:,} per test at -P 16, {opts.requests_p1:,} at -P 1; "
          + (f"servers pinned to CPUs {SERVER_CPUS}, client to {CLIENT_CPUS}" if PIN else
             f"not pinned ({CPUS} CPUs: client and servers share them)") + "\n")
    print("rps: median (min-max) of the rounds; ratio: of the medians; CPU: server CPU seconds of all its "
          "processes (/proc) over every round's commands, in microseconds per command.\n")
    head = "| test | value | keys | -P | redis rps | redis p50/p99 ms | redis CPU us/cmd |"
    for label, _ in configs[1:]:
        head += f" {label} rps | ratio | p50/p99 ms | CPU us/cmd | CPU vs redis |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for tests, size, keyspace in plan:
        for pipeline in (1, 16):
            for test in tests:
                r = _summary(runs[("redis", pipeline, size, test)])
                line = (f"| {test} | {size} B | {keyspace:,} | {pipeline} | {r['rps']} | {r['lat']} | "
                        f"{r['cpu']:.2f} |")
                for label, _ in configs[1:]:
                    m = _summary(runs[(label, pipeline, size, test)])
                    versus = f"{m['cpu'] / r['cpu']:.1f}x" if r["cpu"] else "-"
                    line += f" {m['rps']} | {m['median'] / r['median']:.2f} | {m['lat']} | {m['cpu']:.2f} | {versus} |"
                print(line)


def _summary(rows: list[list[float]]) -> dict[str, Any]:
    rps = [row[0] for row in rows]
    median = statistics.median(rps)
    return {
        "median": median,
        "rps": f"{median:,.0f} ({min(rps):,.0f}-{max(rps):,.0f})",
        "lat": f"{statistics.median(r[1] for r in rows):.3f}/{statistics.median(r[2] for r in rows):.3f}",
        "cpu": sum(r[3] for r in rows) / sum(r[4] for r in rows) * 1e6,
    }


def latency(opts: argparse.Namespace) -> None:
    """One client, one command at a time: the round trip, where the target is redis-server's p50
    plus 50 us."""
    requests = 5_000 if opts.quick else 20_000
    configs = [("redis", 0), ("shardkv 1", 1)] + ([(f"shardkv {CPUS}", CPUS)] if CPUS > 1 else [])
    runs: dict[tuple[str, str], list[list[float]]] = {}
    for _ in range(opts.rounds):
        for label, shards in configs:
            with any_server(shards) as (port, _):
                prefill(port, KEYSPACE_100, 100)
                for test in ("ping_mbulk", "set", "get"):
                    row = redis_benchmark(port, test, 1, 100, requests, KEYSPACE_100, clients=1)
                    runs.setdefault((label, test), []).append(row)
    print(f"\n### Latency: redis-benchmark -c 1 -P 1 -n {requests}, medians of {opts.rounds} rounds (us)\n")
    head = "| test |" + "".join(f" {label} p50 | {label} p99 |" for label, _ in configs)
    head += " shardkv 1 p50 - redis p50 |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for test in [t for (lab, t) in runs if lab == "redis"]:
        cells = []
        p50 = {}
        for label, _ in configs:
            rows = runs[(label, test)]
            p50[label] = statistics.median(r[1] for r in rows) * 1000
            cells.append(f" {p50[label]:.0f} | {statistics.median(r[2] for r in rows) * 1000:.0f} |")
        print(f"| {test} |" + "".join(cells) + f" {p50['shardkv 1'] - p50['redis']:+.0f} |")


# ---------------------------------------------------------------------- memory


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def pss_kib(pid: int) -> int:
    """Proportional set size: shared pages (the segments) divided among the processes mapping
    them, so the sum over all processes counts each page once."""
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return 0


def fill_strings(port: int, n: int) -> None:
    s = socket.create_connection(("127.0.0.1", port))
    value = b"v" * 100
    for start in range(0, n, 10000):
        s.sendall(b"".join(frame(b"SET", b"key:%010d" % i, value) for i in range(start, min(n, start + 10000))))
        want, got = 5 * (min(n, start + 10000) - start), 0
        while got < want:
            got += len(s.recv(1 << 20))
    s.close()


def fill_hashes(port: int, n: int) -> None:
    s = socket.create_connection(("127.0.0.1", port))
    fields = [x for f in range(10) for x in (b"field%d" % f, b"v" * 10)]
    for start in range(0, n, 5000):
        batch = range(start, min(n, start + 5000))
        s.sendall(b"".join(frame(b"HSET", b"hash:%010d" % i, *fields) for i in batch))
        want, got = 5 * len(batch), 0
        while got < want:
            got += len(s.recv(1 << 20))
    s.close()


def memory(opts: argparse.Namespace) -> None:
    n_keys, n_hashes = (100_000, 10_000) if opts.quick else (1_000_000, 100_000)
    print(f"\n### Memory: {n_keys:,} keys of 100-byte values; {n_hashes:,} hashes of 10 fields "
          "(bytes per key)\n")
    print("| data | redis used_memory | redis RSS | shardkv used | shardkv allocated | shardkv PSS | "
          "shardkv worker RssAnon growth |")
    print("|---|---|---|---|---|---|---|")
    for label, filler, n in (("strings", fill_strings, n_keys), ("hashes", fill_hashes, n_hashes)):
        with redis_server() as (port, _):
            base = int(info(port, "memory")["used_memory"])
            filler(port, n)
            mem = info(port, "memory")
            r_used = (int(mem["used_memory"]) - base) / n
            r_rss = int(mem["used_memory_rss"]) / n
        with shardkv(1, "512mb") as (port, proc):
            workers = [int(p) for p in subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True,
                                                      text=True).stdout.split()]
            anon0 = sum(rss_kib(w, "RssAnon") for w in workers)
            filler(port, n)
            used = int(info(port, "memory")["used_memory_dataset"]) / n
            allocated = int(info(port, "memory")["used_memory"]) / n
            anon = (sum(rss_kib(w, "RssAnon") for w in workers) - anon0) * 1024 / n
            pss = sum(pss_kib(p) for p in [proc.pid, *workers]) * 1024 / n
        print(f"| {label} | {r_used:.0f} | {r_rss:.0f} | {used:.0f} | {allocated:.0f} (fixed, 512 MiB) | "
              f"{pss:.0f} | {anon:.1f} |")


# ---------------------------------------------------------------------- scaling and hop


def scaling(opts: argparse.Namespace) -> None:
    seconds = 2.0 if opts.quick else 4.0
    print(f"\n### Scaling: bench/lean.py, {CPUS} client processes x 25 connections, -P 16, {seconds:.0f} s\n")
    print("| shards | GET rps | vs 1 shard | SET rps | vs 1 shard |")
    print("|---|---|---|---|---|")
    first: dict[str, float] = {}
    for shards in range(1, CPUS + 1):
        with shardkv(shards) as (port, _):
            preload(port, shards)
            row = f"| {shards} |"
            for command in ("GET", "SET"):
                rps = load(port, command, 16, connections=25 * CPUS, processes=CPUS, seconds=seconds, shards=shards)
                first.setdefault(command, rps)
                row += f" {rps:,.0f} | {rps / first[command]:.2f} |"
            print(row)


def hop(opts: argparse.Namespace) -> None:
    seconds = 2.0 if opts.quick else 4.0
    print(f"\n### The hop: --shards 2, bench/lean.py 1 process x 20 connections, {seconds:.0f} s\n")
    print("| command | -P | keys on the connection's worker | keys on the other worker | remote / local |")
    print("|---|---|---|---|---|")
    with shardkv(2) as (port, _):
        preload(port, 2)
        for command in ("GET", "SET"):
            for pipeline in (1, 16):
                local = load(port, command, pipeline, 20, 1, seconds, "local", 2)
                remote = load(port, command, pipeline, 20, 1, seconds, "remote", 2)
                print(f"| {command} | {pipeline} | {local:,.0f} | {remote:,.0f} | {remote / local:.2f} |")


# ---------------------------------------------------------------------- the store alone


def ns_per_op(fn: Callable[[bytes], object], keys: list[bytes]) -> float:
    t0 = time.perf_counter_ns()
    for k in keys:
        fn(k)
    return (time.perf_counter_ns() - t0) / len(keys)


def store(opts: argparse.Namespace) -> None:
    sizes = [100_000] if opts.quick else [100_000, 10_000_000]
    print("\n### The store alone (one shard, no I/O): ns per operation, keys in random order\n")
    print("| keys | GET hit | GET miss | SET overwrite | SET new key | dict get | dict miss | dict overwrite | "
          "dict new key |")
    print("|---|---|---|---|---|---|---|---|---|")
    for n in sizes:
        print(_store_row(n))


def _store_row(n: int) -> str:
    limits = Limits(shards=1, maxmemory=max(64 << 20, n * 400), maxclients=16).resolved()
    fp = Footprint(limits)
    st = Store(mmap.mmap(-1, fp.shard_segment_bytes), fp, format_segment=True)
    keys = [b"key:%010d" % i for i in range(n)]
    value = b"v" * 100
    for k in keys:
        st.put(0, k, TYPE_STRING, value, 0, st._find_stored(0, k))
    sample = random.sample(keys, min(n, 200_000))
    missing = [b"nokey:%010d" % i for i in range(len(sample))]
    fresh = [b"new:%010d" % i for i in range(min(len(sample), 50_000))]
    now = int(time.time() * 1000)
    hit = ns_per_op(lambda k: st.string_resp_of(0, k, now), sample)
    miss = ns_per_op(lambda k: st.string_resp_of(0, k, now), missing)
    over = ns_per_op(lambda k: st.put(0, k, TYPE_STRING, value, 0, st.find(0, k, now)), sample)
    new = ns_per_op(lambda k: st.put(0, k, TYPE_STRING, value, 0, st.find(0, k, now)), fresh)
    d = dict.fromkeys(keys, value)
    dget = ns_per_op(d.get, sample)
    dmiss = ns_per_op(d.get, missing)
    dset = ns_per_op(lambda k: d.__setitem__(k, value), sample)
    dnew = ns_per_op(lambda k: d.__setitem__(k, value), fresh)
    st.close()
    return (f"| {n:,} | {hit:.0f} | {miss:.0f} | {over:.0f} | {new:.0f} | {dget:.0f} | {dmiss:.0f} | {dset:.0f} | "
            f"{dnew:.0f} |")


def transactions(opts: argparse.Namespace) -> None:
    """MULTI + 3 SET + EXEC, EVALSHA of a 2-key script, PUBLISH to 1 and 100 subscribers (bench/txn.py)."""
    from txn import run  # bench/ is this script's directory, first on sys.path

    run(1.0 if opts.quick else 3.0)


SECTIONS = {
    "throughput": throughput, "latency": latency, "memory": memory, "scaling": scaling, "store": store, "hop": hop,
    "txn": transactions,
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--requests", type=int, default=400_000, help="per test and round at -P 16")
    ap.add_argument("--requests-p1", type=int, default=100_000, help="per test and round at -P 1")
    ap.add_argument("--quick", action="store_true", help="smaller data and shorter runs (a smoke test)")
    opts = ap.parse_args()
    if opts.quick:
        opts.rounds, opts.requests, opts.requests_p1 = 1, 20_000, 5_000
    for tool in ("redis-server", "redis-benchmark") + (("taskset",) if PIN else ()):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed (apt-get install redis-server redis-tools util-linux)")
    cpu = platform.processor() or platform.machine()
    model = ""
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    version = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.split()
    print(f"# shardkv benchmarks, {time.strftime('%Y-%m-%d %H:%M')}: {CPUS} CPUs ({model or cpu}), "
          f"Python {platform.python_version()}, {' '.join(version[:3])}")
    for name in opts.only.split(","):
        SECTIONS[name.strip()](opts)


if __name__ == "__main__":
    main()
