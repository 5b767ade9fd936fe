"""Named shared-memory segments: created and committed by the supervisor, attached by workers.

`posix_ipc.SharedMemory` + `mmap` is used instead of `multiprocessing.shared_memory` because the
latter registers every attach with Python's resource tracker, which unlinks the segment when an
attaching process exits (before Python 3.13): a killed worker would take its shard with it.
Pages are committed at creation with posix_fallocate, so a footprint that does not fit in
/dev/shm (or the cgroup) fails the boot instead of raising SIGBUS on a write hours later.
"""

from __future__ import annotations

import mmap
import os

import posix_ipc

SHM_DIR = "/dev/shm"


def segment_name(prefix: str, port: int, part: str) -> str:
    return f"/{prefix}-{port}-{part}"


def create(name: str, size: int) -> mmap.mmap:
    """Create (replacing a stale one of the same name), commit its pages, map it."""
    try:
        posix_ipc.unlink_shared_memory(name)
    except posix_ipc.ExistentialError:
        pass
    shm = posix_ipc.SharedMemory(name, posix_ipc.O_CREX, mode=0o600, size=size)
    try:
        os.posix_fallocate(shm.fd, 0, size)
        return mmap.mmap(shm.fd, size)
    except BaseException:
        posix_ipc.unlink_shared_memory(name)
        raise
    finally:
        shm.close_fd()


def attach(name: str) -> mmap.mmap:
    shm = posix_ipc.SharedMemory(name)
    try:
        return mmap.mmap(shm.fd, shm.size)
    finally:
        shm.close_fd()


def unlink(name: str) -> None:
    try:
        posix_ipc.unlink_shared_memory(name)
    except posix_ipc.ExistentialError:
        pass


def shm_free_bytes() -> int:
    st = os.statvfs(SHM_DIR)
    return st.f_bavail * st.f_frsize
