import mmap

from shardkv.alloc import Allocator
from shardkv.index import Index

SOURCE_SHA256: str
FAST_COMMANDS: tuple[str, ...]

def slot_of(key: bytes) -> int: ...

class Counters:
    def __init__(self, segment: mmap.mmap) -> None: ...
    def add(self, word: int, n: int) -> None: ...
    def command(self, base: int, elapsed_ns: int, failed: bool) -> None: ...

class FastPath:
    damaged: bool
    def __init__(self, index: Index, allocator: Allocator, counters: Counters, dbmap: bytearray, owners: bytes,
                 me: int, key_bytes_max: int, words: dict[str, int], hits_word: int, misses_word: int) -> None: ...
    def run(self, requests: list[tuple[list[bytes], int, int]], i: int, db: int, proto: int,
            writes: bool) -> tuple[int, bytes]: ...
