"""Named shared-memory segments: created and committed by the supervisor, attached by workers.

`posix_ipc.SharedMemory` + `mmap` is used instead of `multiprocessing.shared_memory` because the
latter registers every attach with Python's resource tracker, which unlinks the segment when an
attaching process exits (before Python 3.13): a killed worker would take its shard with it.
Pages are committed at creation with posix_fallocate, so a footprint that does not fit in
/dev/shm (or the cgroup) fails the boot instead of raising SIGBUS on a write hours later.

It also owns the instance lock: a file beside the segments that the supervisor holds with an
exclusive `flock` for its whole life, taken before any segment is touched, so a second instance
with the same name and port refuses to start instead of replacing the first one's segments.
The kernel drops the lock when its holder dies, however it dies.
"""

from __future__ import annotations

import fcntl
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


def lock_path(prefix: str, port: int) -> str:
    return f"{SHM_DIR}/{prefix}-{port}.lock"


def lock_instance(path: str) -> int | None:
    """Take the instance lock: its fd (keep it open), or None while another process holds it."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        # The holder we waited on may have unlinked the file as it exited: then our lock is on a
        # file nobody else can open, and a third instance would lock a new one.  Try again.
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)


def unlock_instance(path: str, fd: int) -> None:
    """Clean exit: remove the lock file while still holding it, then let go."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    os.close(fd)


def open_fd(name: str) -> int:
    """An fd of a segment, for flock between the processes that share it (close it yourself)."""
    shm = posix_ipc.SharedMemory(name)
    try:
        return os.dup(shm.fd)
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
