"""Throughput of shardkv beside redis-server, same machine, same run, as a ratio.

    .venv/bin/python bench/compare.py [--shards N] [--rounds 3] [--requests 100000] [--clients 50]

Starts redis-server (no persistence) and shardkv on free ports, runs redis-benchmark against each
in alternation (A B A B ...), and prints the median rps of each test for -P 1 and -P 16 with the
ratio shardkv / redis-server.  Needs redis-server and redis-benchmark on PATH.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time

TESTS = "ping,set,get,incr,mset"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int) -> None:
    for _ in range(300):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


def benchmark(port: int, pipeline: int, requests: int, clients: int) -> dict[str, float]:
    out = subprocess.run(["redis-benchmark", "-p", str(port), "-q", "-t", TESTS, "-n", str(requests),
                          "-c", str(clients), "-P", str(pipeline)], capture_output=True, text=True, check=True)
    rps = {}
    for line in out.stdout.replace("\r", "\n").splitlines():
        m = re.match(r"\s*(.+?): ([\d.]+) requests per second", line)
        if m:
            rps[m.group(1)] = float(m.group(2))
    return rps


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shards", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--requests", type=int, default=100000)
    ap.add_argument("--clients", type=int, default=50)
    opts = ap.parse_args()
    for tool in ("redis-server", "redis-benchmark"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed (apt-get install redis-server redis-tools)")
    rport, sport = free_port(), free_port()
    redis_proc = subprocess.Popen(["redis-server", "--port", str(rport), "--save", "", "--appendonly", "no"],
                                  stdout=subprocess.DEVNULL)
    shard_proc = subprocess.Popen([sys.executable, "-m", "shardkv", "--port", str(sport), "--shards",
                                   str(opts.shards), "--name", "skvbench"], stdout=subprocess.DEVNULL)
    try:
        wait_port(rport)
        wait_port(sport)
        print(f"# {time.strftime('%Y-%m-%d')} {platform.machine()} {os.cpu_count()} CPUs, Python "
              f"{platform.python_version()}; shardkv --shards {opts.shards}; redis-benchmark -n {opts.requests} "
              f"-c {opts.clients}; {opts.rounds} rounds A/B alternating, medians; no CPU pinning")
        print(f"{'test':<16} {'-P':>3} {'redis rps':>12} {'shardkv rps':>12} {'ratio':>6}")
        for pipeline in (1, 16):
            runs: dict[str, dict[str, list[float]]] = {"redis": {}, "shardkv": {}}
            for _ in range(opts.rounds):
                for name, port in (("redis", rport), ("shardkv", sport)):
                    for test, rps in benchmark(port, pipeline, opts.requests, opts.clients).items():
                        runs[name].setdefault(test, []).append(rps)
            for test, values in runs["redis"].items():
                r = statistics.median(values)
                s = statistics.median(runs["shardkv"].get(test, [0.0]))
                print(f"{test:<16} {pipeline:>3} {r:>12.0f} {s:>12.0f} {s / r:>6.2f}")
    finally:
        shard_proc.terminate()
        redis_proc.terminate()
        shard_proc.wait(10)
        redis_proc.wait(10)


if __name__ == "__main__":
    main()
