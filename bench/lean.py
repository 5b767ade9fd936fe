"""A lean load generator: precomputed pipelines over raw sockets, replies counted by their bytes.

redis-benchmark tops out near 1.5M rps on one core, and a Python client far lower; this one
does almost nothing per command (one sendall of a prebuilt pipeline, then recv until the known
number of reply bytes arrived), so it measures the server rather than itself.

    from bench.lean import load
    rps = load(port, command="GET", pipeline=16, connections=50, processes=2, seconds=3.0,
               placement="any" | "local" | "remote", shards=N)

`placement` needs shardkv: each connection asks INFO which worker it landed on and then uses keys
that worker owns ("local") or that another worker owns ("remote"), to show the cost of the hop.
"""

from __future__ import annotations

import multiprocessing
import os
import selectors
import socket
import sys
import time

sys.path.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # after the installed shardkv

from shardkv.protocol import encode_command  # noqa: E402
from shardkv.router.dispatch import key_slot, slot_owners  # noqa: E402

VALUE = b"v" * 100


def frame(*argv: bytes) -> bytes:
    return encode_command(list(argv))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def info_of(sock: socket.socket, section: str) -> dict[str, str]:
    """INFO <section> over this connection, as a dict."""
    sock.sendall(frame(b"INFO", section.encode()))
    buf = b""
    while b"\r\n" not in buf or len(buf) < int(buf[1 : buf.index(b"\r\n")]) + buf.index(b"\r\n") + 4:
        buf += sock.recv(65536)
    out = {}
    for line in buf.decode().split("\r\n")[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            out[k] = v
    return out


def keys_by_shard(shards: int, per_shard: int) -> list[list[bytes]]:
    owners = slot_owners(shards)
    out: list[list[bytes]] = [[] for _ in range(shards)]
    i = 0
    while min(len(x) for x in out) < per_shard:
        key = b"lean:%d" % i
        owner = owners[key_slot(key)]
        if len(out[owner]) < per_shard:
            out[owner].append(key)
        i += 1
    return out


def preload(port: int, shards: int, per_shard: int = 1000) -> None:
    """SET every key a GET will read, so a GET reply has a known size."""
    s = socket.create_connection(("127.0.0.1", port))
    keys = [k for group in keys_by_shard(max(shards, 1), per_shard) for k in group]
    s.sendall(b"".join(frame(b"SET", k, VALUE) for k in keys))
    want = 5 * len(keys)
    got = 0
    while got < want:
        got += len(s.recv(1 << 20))
    s.close()


def _worker_of(sock: socket.socket) -> int:
    return int(info_of(sock, "server").get("worker_id", -1))


def _pipeline(command: str, keys: list[bytes], pipeline: int, offset: int) -> tuple[bytes, int]:
    """(request bytes, reply bytes) of one pipeline."""
    picked = [keys[(offset + i) % len(keys)] for i in range(pipeline)]
    if command == "SET":
        return b"".join(frame(b"SET", k, VALUE) for k in picked), 5 * pipeline
    if command == "GET":
        return b"".join(frame(b"GET", k) for k in picked), len(b"$%d\r\n%s\r\n" % (len(VALUE), VALUE)) * pipeline
    if command == "PING":
        return frame(b"PING") * pipeline, 7 * pipeline
    raise ValueError(command)


def _run(args: tuple[int, str, int, int, float, str, int, int]) -> int:
    port, command, pipeline, connections, seconds, placement, shards, seed = args
    groups = keys_by_shard(max(shards, 1), 1000)
    sel = selectors.DefaultSelector()
    plans: dict[socket.socket, tuple[bytes, int]] = {}
    for c in range(connections):
        s = socket.create_connection(("127.0.0.1", port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if placement == "any":
            keys = [k for g in groups for k in g]
        else:
            worker = _worker_of(s)
            if placement == "local":
                keys = groups[worker]
            else:
                keys = [k for i, g in enumerate(groups) if i != worker for k in g]
        plans[s] = _pipeline(command, keys, pipeline, seed * 7919 + c * 131)
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, [0])
    done = 0
    for s, (req, _) in plans.items():
        s.sendall(req)
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        for key, _ in sel.select(0.1):
            s = key.fileobj
            assert isinstance(s, socket.socket)
            got = key.data
            data = s.recv(1 << 20)
            if not data:
                raise SystemExit("server closed a benchmark connection")
            got[0] += len(data)
            req, want = plans[s]
            while got[0] >= want:
                got[0] -= want
                done += pipeline
                if got[0] == 0:
                    s.setblocking(True)
                    s.sendall(req)
                    s.setblocking(False)
    for s in plans:
        s.close()
    return done


def load(port: int, command: str = "GET", pipeline: int = 16, connections: int = 50, processes: int = 1,
         seconds: float = 3.0, placement: str = "any", shards: int = 1) -> float:
    """Commands per second the server answered over `seconds`."""
    per = max(1, connections // processes)
    with multiprocessing.Pool(processes) as pool:
        counts = pool.map(_run, [(port, command, pipeline, per, seconds, placement, shards, i)
                                 for i in range(processes)])
    return sum(counts) / seconds
