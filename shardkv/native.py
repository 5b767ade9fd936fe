"""shardkv's compiled modules (Cython, built by `pip install .` or `pip install -e .`), each
imported through here: a module whose .pyx was edited after it was compiled is refused with a
one-line reason rather than run stale."""

from __future__ import annotations

import hashlib
import os
from types import ModuleType

try:
    from shardkv import alloc, fast, hop, index, layouts, numbers, resp
except ImportError as exc:  # never built (a checkout without `pip install -e .`), or built for another Python
    raise ImportError(f"shardkv's compiled modules are not built ({exc}): run `pip install -e .`, which needs a "
                      "C compiler, Python's headers and zlib's") from None

HERE = os.path.dirname(os.path.abspath(__file__))


def fresh(module: ModuleType, name: str) -> ModuleType:
    """The module, if its source beside it (an editable install or a checkout) is the one it was
    built from; a wheel ships no source, so there is nothing to compare."""
    source = os.path.join(HERE, f"{name}.pyx")
    if os.path.exists(source):
        with open(source, "rb") as f:
            digest = hashlib.sha256(f.read())
        for pxd in sorted(n for n in os.listdir(HERE) if n.endswith(".pxd")):  # as setup.py's source_digest
            with open(os.path.join(HERE, pxd), "rb") as f:
                digest.update(f.read())
        if digest.hexdigest() != getattr(module, "SOURCE_SHA256", None):
            raise ImportError(f"shardkv/{name}.pyx changed after it was compiled: run `pip install -e .` again")
    return module


fresh(index, "index")
fresh(alloc, "alloc")
fresh(numbers, "numbers")
fresh(resp, "resp")
fresh(hop, "hop")
fresh(layouts, "layouts")
fresh(fast, "fast")
Index = index.Index
Allocator = alloc.Allocator
SegmentCorrupt = index.SegmentCorrupt
EXPIRED, WRONG_TYPE = index.EXPIRED, index.WRONG_TYPE
record_bytes, bulk, integer = index.record_bytes, resp.bulk, resp.integer
INCR_STATUS: dict[str, int] = index.INCR_STATUS
add_long_doubles, is_infinite = numbers.add_long_doubles, numbers.is_infinite
parse_frames, parse_integer = resp.parse, resp.parse_integer
Counters, FastPath, slot_of = fast.Counters, fast.FastPath, index.slot_of
FAST_COMMANDS: tuple[str, ...] = fast.FAST_COMMANDS
fast_takes = fast.takes
Peers = hop.Peers
Pending = hop.Pending
take_ready = hop.take_ready
Ring = hop.Ring
RingDamaged = hop.RingDamaged
ring_index = hop.ring_index
KINDS: dict[str, int] = hop.KINDS
table_probe, table_set_one, field_of = layouts.table_probe, layouts.table_set_one, layouts.field_of
chunks_push_end, chunks_pop_end = layouts.chunks_push_end, layouts.chunks_pop_end
CHUNK_ENTRIES_MAX, CHUNK_BYTES_MAX = layouts.CHUNK_ENTRIES_MAX, layouts.CHUNK_BYTES_MAX
pack_entries, unpack_entries = layouts.pack_entries, layouts.unpack_entries
pack_node, unpack_node, node_take = layouts.pack_node, layouts.unpack_node, layouts.node_take
chunk_locate, list_entry = layouts.chunk_locate, layouts.list_entry
