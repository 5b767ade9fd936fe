"""Transactions and pub/sub beside redis-server, in the same run: a markdown table on stdout.

    .venv/bin/python bench/txn.py [--seconds 3]

- MULTI + 3 SETs + EXEC: 20 connections, each with 8 transactions in flight (raw RESP pipelines),
  keys spread so that on --shards 2 most transactions touch both shards (and with {tags} so they
  stay on one shard, the common case of a cluster-minded client); transactions per second.
- PUBLISH to 1 and to 100 subscribers: 4 publishing connections, 16 PUBLISHes in flight each; the
  subscribers drain their sockets; messages delivered per second (publishes x subscribers).
Each row runs redis-server, then shardkv --shards 1, then shardkv --shards 2, and prints the
ratio to redis-server.
- EVALSHA of a 2-key script (SET one key, GET the other): 20 connections, 8 calls in flight each.
"""

from __future__ import annotations

import argparse
import os
import selectors
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.append(ROOT)  # after the installed shardkv (a non-editable install has no sources built)

from bench.lean import frame, free_port  # noqa: E402
from bench.run import ready, wait_port  # noqa: E402


@contextmanager
def server(kind: str) -> Iterator[int]:
    port = free_port()
    if kind == "redis":
        cmd = ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"]
    else:
        cmd = [sys.executable, "-P", "-m", "shardkv", "--port", str(port), "--shards", kind, "--maxmemory", "256mb",
               "--name", f"benchtxn{os.getpid()}"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        if kind != "redis":
            ready(port, int(kind))
        yield port
    finally:
        proc.terminate()
        proc.wait(20)


def drive(port: int, connections: int, batch: Callable[[int], tuple[bytes, int]], seconds: float,
          drains: list[socket.socket] | None = None) -> tuple[int, float]:
    """Keep each connection busy with batch(i) (bytes, replies expected); count the replies."""
    sel = selectors.DefaultSelector()
    socks = []
    for i in range(connections):
        s = socket.create_connection(("127.0.0.1", port))
        s.setblocking(False)
        data, n = batch(i)
        s.sendall(data)
        sel.register(s, selectors.EVENT_READ, [i, n, b""])
        socks.append(s)
    for d in drains or []:
        d.setblocking(False)
        sel.register(d, selectors.EVENT_READ, None)
    done = 0
    start = time.perf_counter()
    end = start + seconds
    while time.perf_counter() < end:
        for key, _ in sel.select(0.1):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            chunk = sock.recv(1 << 20)
            state = key.data
            if state is None:
                continue  # a subscriber: just drain
            state[2] += chunk
            while _complete(state):  # the batch's closing PONG came: all its replies are in
                data, n = batch(state[0])
                sock.sendall(data)
                done += 1
    elapsed = time.perf_counter() - start
    for s in socks:
        s.close()
    sel.close()
    return done, elapsed


def _complete(state: list[object]) -> bool:
    """The connection's buffer holds its whole batch's replies (a marker PING ends each batch)."""
    buf: bytes = state[2]  # type: ignore[assignment]
    at = buf.find(b"+PONG\r\n")
    if at < 0:
        return False
    state[2] = buf[at + 7 :]
    return True


def txn_batch(tagged: bool, depth: int = 8) -> Callable[[int], tuple[bytes, int]]:
    def batch(i: int) -> tuple[bytes, int]:
        out = []
        for j in range(depth):
            keys = [(b"{t%d}k%d" % (i, n)) if tagged else (b"k%d-%d-%d" % (i, j, n)) for n in range(3)]
            out.append(frame(b"MULTI") + b"".join(frame(b"SET", k, b"v" * 16) for k in keys) + frame(b"EXEC"))
        return b"".join(out) + frame(b"PING"), 1
    return batch


SCRIPT = b"redis.call('set', KEYS[1], ARGV[1]) return redis.call('get', KEYS[2])"


def evalsha_batch(sha: bytes, depth: int = 8) -> Callable[[int], tuple[bytes, int]]:
    def batch(i: int) -> tuple[bytes, int]:
        return b"".join(frame(b"EVALSHA", sha, b"2", b"{e%d}a" % i, b"{e%d}b" % i, b"v") for _ in range(depth)) + \
            frame(b"PING"), 1
    return batch


def script_sha(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(frame(b"SCRIPT", b"LOAD", SCRIPT))
        reply = s.recv(1024)
    return reply.split(b"\r\n")[1]


def publish_batch(depth: int = 16) -> Callable[[int], tuple[bytes, int]]:
    def batch(i: int) -> tuple[bytes, int]:
        return b"".join(frame(b"PUBLISH", b"bench", b"m" * 32) for _ in range(depth)) + frame(b"PING"), 1
    return batch


def subscribers(port: int, n: int) -> list[socket.socket]:
    out = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(frame(b"SUBSCRIBE", b"bench"))
        s.recv(1024)
        out.append(s)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=3.0)
    run(parser.parse_args().seconds)


def run(seconds: float) -> None:
    """Print the table (also bench/run.py's `txn` section)."""
    opts = argparse.Namespace(seconds=seconds)
    kinds = ["redis", "1", "2"]
    print(f"# transactions and pub/sub, {opts.seconds:.0f} s per cell, {os.cpu_count()} CPUs")
    print("| load | unit | redis-server | shardkv 1 | ratio | shardkv 2 | ratio |")
    print("|---|---|---|---|---|---|---|")
    rows: list[tuple[str, str, Callable[[int], float]]] = [
        ("MULTI + 3 SET + EXEC, keys on any shard", "txn/s",
         lambda port: 8 * _rate(drive(port, 20, txn_batch(False), opts.seconds))),
        ("MULTI + 3 SET + EXEC, one {tag}", "txn/s",
         lambda port: 8 * _rate(drive(port, 20, txn_batch(True), opts.seconds))),
    ]
    rows.append(("EVALSHA of a 2-key script", "calls/s",
                 lambda port: 8 * _rate(drive(port, 20, evalsha_batch(script_sha(port)), opts.seconds))))
    for subs in (1, 100):
        def pub(port: int, subs: int = subs) -> float:
            drains = subscribers(port, subs)
            rate = 16 * _rate(drive(port, 4, publish_batch(), opts.seconds, drains))
            for d in drains:
                d.close()
            return rate * subs
        rows.append((f"PUBLISH to {subs} subscriber{'s' * (subs > 1)}", "msgs delivered/s", pub))
    for label, unit, fn in rows:
        values = []
        for kind in kinds:
            with server(kind) as port:
                values.append(fn(port))
        r, s1, s2 = values
        print(f"| {label} | {unit} | {r:,.0f} | {s1:,.0f} | {s1 / r:.2f} | {s2:,.0f} | {s2 / r:.2f} |", flush=True)


def _rate(result: tuple[int, float]) -> float:
    done, elapsed = result
    return done / elapsed


if __name__ == "__main__":
    main()
