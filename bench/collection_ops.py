"""Per-operation cost of list, hash and set commands on small and large collections.

    .venv/bin/python bench/collection_ops.py [--elements 100000] [--ops 1000]

Starts redis-server (no persistence) and shardkv (--shards 1) on free ports, fills one 10-element
and one N-element collection of each type in each server, then times each command on both sizes
(one command per round trip, median of --ops calls, each server's calls alternating with the
other's so that both see the same moments of a noisy host) and prints the microseconds per call, the
large/small ratio (the issue's target: at most 3x) and, for LINDEX/LSET in the middle, the ratio
to redis-server.  Needs redis-server on PATH.
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import redis

sys.path.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # after the installed shardkv

from bench.lean import free_port  # noqa: E402


def wait(r: redis.Redis) -> None:
    for _ in range(300):
        try:
            r.ping()
            return
        except redis.ConnectionError:
            time.sleep(0.05)
    raise SystemExit("server did not start")


def fill(r: redis.Redis, name: str, n: int) -> None:
    r.delete(f"l:{name}", f"h:{name}", f"s:{name}")
    for start in range(0, n, 10000):
        chunk = range(start, min(n, start + 10000))
        r.rpush(f"l:{name}", *[f"e{i}" for i in chunk])
        r.hset(f"h:{name}", mapping={f"f{i}": f"v{i}" for i in chunk})
        r.sadd(f"s:{name}", *[f"m{i}" for i in chunk])


def timed(fns: dict[str, Callable[[], object]], ops: int) -> dict[str, float]:
    """Median microseconds per call of each server's fn, ops calls each. The servers' calls
    alternate one by one: on a VM a round trip costs 40 or 100+ us by whether the host keeps the
    idle vCPU polling, which changes by the second, so timing one server's calls and then the
    other's compares moments, not servers."""
    samples: dict[str, list[int]] = {label: [] for label in fns}
    for _ in range(ops):
        for label, fn in fns.items():
            t0 = time.perf_counter_ns()
            fn()
            samples[label].append(time.perf_counter_ns() - t0)
    return {label: statistics.median(xs) / 1000 for label, xs in samples.items()}


def cases(r: redis.Redis, name: str, n: int) -> dict[str, Callable[[], object]]:
    """Each command alone, in an order that leaves every collection at its size: the pushes and
    adds are undone by the pops and removes that follow them."""
    mid = n // 2
    fresh = itertools.count()
    gone = itertools.count()
    lst, h, s = f"l:{name}", f"h:{name}", f"s:{name}"
    return {
        "LPUSH": lambda: r.lpush(lst, "x"),
        "LPOP": lambda: r.lpop(lst),
        "RPUSH": lambda: r.rpush(lst, "x"),
        "RPOP": lambda: r.rpop(lst),
        "LINDEX 0": lambda: r.lindex(lst, 0),
        "LINDEX -1": lambda: r.lindex(lst, -1),
        "LINDEX middle": lambda: r.lindex(lst, mid),
        "LSET middle": lambda: r.lset(lst, mid, "y"),
        "HSET": lambda: r.hset(h, f"new{next(fresh)}", "v"),
        "HGET": lambda: r.hget(h, "f1"),
        "HDEL": lambda: r.hdel(h, f"new{next(gone)}"),
        "SADD": lambda: r.sadd(s, f"new{next(fresh)}"),
        "SISMEMBER": lambda: r.sismember(s, "m1"),
        "SREM": lambda: r.srem(s, f"new{next(gone)}"),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--elements", type=int, default=100000)
    ap.add_argument("--ops", type=int, default=1000)
    opts = ap.parse_args()
    if shutil.which("redis-server") is None:
        raise SystemExit("redis-server is not installed (apt-get install redis-server)")
    rport, sport = free_port(), free_port()
    procs = [
        subprocess.Popen(["redis-server", "--port", str(rport), "--save", "", "--appendonly", "no"],
                         stdout=subprocess.DEVNULL),
        subprocess.Popen([sys.executable, "-P", "-m", "shardkv", "--port", str(sport), "--shards", "1",
                          "--maxmemory", "1gb", "--name", "skvcoll"], stdout=subprocess.DEVNULL),
    ]
    try:
        servers = {"redis": redis.Redis(port=rport), "shardkv": redis.Redis(port=sport)}
        results: dict[tuple[str, str, str], float] = {}
        for r in servers.values():
            wait(r)
            fill(r, "small", 10)
            fill(r, "large", opts.elements)
        for size, n in (("small", 10), ("large", opts.elements)):
            each = {label: cases(r, size, n) for label, r in servers.items()}
            for case in each["redis"]:
                medians = timed({label: fns[case] for label, fns in each.items()}, opts.ops)
                for label, median in medians.items():
                    results[(label, case, size)] = median
        print(f"# {time.strftime('%Y-%m-%d')}: median microseconds per call (one call per round trip), "
              f"10 vs {opts.elements} elements, --shards 1")
        print(f"{'command':<15} {'redis 10':>9} {'redis N':>9} {'shardkv 10':>11} {'shardkv N':>10} "
              f"{'N/10':>6} {'vs redis':>9}")
        for case in cases(servers["redis"], "small", 10):
            r10, rn = results[("redis", case, "small")], results[("redis", case, "large")]
            s10, sn = results[("shardkv", case, "small")], results[("shardkv", case, "large")]
            print(f"{case:<15} {r10:>9.1f} {rn:>9.1f} {s10:>11.1f} {sn:>10.1f} {sn / s10:>6.1f} {sn / rn:>9.1f}")
    finally:
        for p in procs:
            p.terminate()
            p.wait(10)


if __name__ == "__main__":
    main()
