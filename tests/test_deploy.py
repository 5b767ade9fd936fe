"""The deploy files agree with the footprint that shardkv prints for the same flags."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

from conftest import ROOT


def footprint(args: list[str]) -> dict[str, str]:
    out = subprocess.run([sys.executable, "-m", "shardkv", *args, "--print-footprint"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60, check=True).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def test_kubernetes_manifest_matches_footprint() -> None:
    with open(os.path.join(ROOT, "deploy", "kubernetes.yaml")) as f:
        text = f.read()
    args = json.loads(re.search(r"^\s*args: (\[.*\])$", text, re.M).group(1))  # type: ignore[union-attr]
    fp = footprint(args)
    assert re.search(rf"sizeLimit: {fp['pod_shm_limit']}$", text, re.M), fp
    memory = re.findall(r"^\s*memory: (\S+)$", text, re.M)
    assert memory == [fp["pod_memory_limit"]] * 2, (memory, fp)
    assert "medium: Memory" in text and "redis-cli" in text and "terminationGracePeriodSeconds" in text


def test_dockerfile_default_args_match_the_manifest() -> None:
    with open(os.path.join(ROOT, "deploy", "Dockerfile")) as f:
        docker = f.read()
    with open(os.path.join(ROOT, "deploy", "kubernetes.yaml")) as f:
        manifest = f.read()
    cmd = json.loads(re.search(r"^CMD (\[.*\])$", docker, re.M).group(1))  # type: ignore[union-attr]
    args = json.loads(re.search(r"^\s*args: (\[.*\])$", manifest, re.M).group(1))  # type: ignore[union-attr]
    assert cmd == args
