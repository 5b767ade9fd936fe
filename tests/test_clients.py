"""Real clients run against shardkv unchanged: redis-benchmark and redis-cli."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from conftest import Server

needs_tools = pytest.mark.skipif(shutil.which("redis-benchmark") is None, reason="redis-tools not installed")


@needs_tools
@pytest.mark.parametrize("pipeline", ["1", "16"])
def test_redis_benchmark_completes_without_errors(server2: Server, pipeline: str) -> None:
    out = subprocess.run(["redis-benchmark", "-p", str(server2.port), "-q", "-t", "ping,set,get,incr,mset",
                          "-n", "5000", "-c", "20", "-P", pipeline], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    text = out.stdout.replace("\r", "\n")
    finals = [line for line in text.splitlines() if "requests per second" in line]
    names = [line.split(":")[0].strip() for line in finals]
    assert names == ["PING_INLINE", "PING_MBULK", "SET", "GET", "INCR", "MSET (10 keys)"], text
    assert "ERR" not in text and "rror" not in text


@needs_tools
def test_redis_cli_round_trip(server2: Server) -> None:
    def cli(*args: str) -> str:
        return subprocess.run(["redis-cli", "-p", str(server2.port), *args], capture_output=True, text=True,
                              timeout=30, check=True).stdout.rstrip("\n")

    assert cli("set", "cli:key", "hello world") == "OK"
    assert cli("get", "cli:key") == "hello world"
    assert cli("incr", "cli:n") == "1"
    assert cli("nosuch") == "ERR unknown command 'nosuch', with args beginning with: "
    assert "redis_version:7.0.15" in cli("info", "server")
