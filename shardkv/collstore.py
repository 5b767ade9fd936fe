"""Collections inside a shard segment: the layouts of a list, set or hash record; no sockets.

A collection record's value area starts with a layout byte:

PACKED (small collections): `[1][u32 length][bytes]...`; a hash stores field, value, field,
value.  A change writes a new record and publishes it, exactly like a string.

TABLE (large hashes and sets): `[2][pad to 8][u64 offset of the table]`.  The table is a keyless
record whose value area is words: count, used (live + deleted slots), log2 of the slot count,
then the slots.  A slot is 0 (empty), 1 (deleted) or a link `fp << 40 | node offset >> 3` where
fp is 24 bits of the field's crc32.  A field's home slot is the top bits of its fp and it sits
at the first free slot from home on (linear probing), so slots are in fp order but for runs:
HSCAN/SSCAN's cursor is an fp, which stays valid while the table grows or shrinks.  A node is a
record whose key is the field (member) and whose value is the hash value (empty for a set).

CHUNKS (large lists): `[3][pad to 8][u64 offset of the directory]`.  The directory is a keyless
record of words: window (first slot << 32 | slots in use), total entries, slot count, then the
slots `entries << 48 | node offset >> 3`.  A node is a keyless record whose value is up to
CHUNK_ENTRIES_MAX packed entries (CHUNK_BYTES_MAX bytes, or one larger entry).

Crash consistency is the index's: nodes are written first, then published by one 8-byte store (a
slot, the window, or the head's pointer to a new table or directory).  A change that needs
several stores goes through Store.commit_words (a redo journal).  Counters are stored after the
publishing store; a restart derives them again (Store.rebuild).
"""

from __future__ import annotations

import random
import zlib
from array import array
from collections.abc import Callable

from shardkv.errors import OOM, CommandError
from shardkv.journal import word_journal_sizes
from shardkv.layout import (
    CHUNK_OFF_MASK,
    KLEN_MASK,
    LAYOUT_CHUNKS,
    LAYOUT_PACKED,
    LAYOUT_TABLE,
    OFF_MASK,
    RECORD_HEADER_BYTES,
    STRUCT_WORDS,
    TOMBSTONE,
    TYPE_HASH,
    TYPE_LIST,
    VLEN_MASK,
    record_bytes,
)
from shardkv.native import (  # compiled: layouts.pyx
    CHUNK_BYTES_MAX,
    CHUNK_ENTRIES_MAX,
    chunk_locate,
    chunks_pop_end,
    chunks_push_end,
    field_of,
    list_entry,
    node_take,
    pack_entries,
    pack_node,
    table_probe,
    table_set_one,
    unpack_entries,
    unpack_node,
)
from shardkv.store import Store

PACKED_ENTRIES_MAX = 128  # more entries (hash: fields) than this take the large layout
PACKED_BYTES_MAX = 8192  # so does a packed value larger than this
TABLE_SLOTS_MIN_LOG2 = 4
TABLE_SLOTS_MAX_LOG2 = 24  # fp bits: at most 12.5 million entries in one hash or set
FP_SPACE = 1 << 24
DIRECTORY_SLOTS_MIN = 16

Entry = tuple[bytes, bytes]  # field and value (a set member's value is empty)


# ---------------------------------------------------------------------- packed entries


def pack(items: list[bytes]) -> bytes:
    return bytes((LAYOUT_PACKED,)) + pack_entries(items)


def clamp_range(n: int, start: int, stop: int) -> tuple[int, int]:
    """Redis's reading of [start, stop] over n entries (negative from the end, then clamped);
    empty when start > stop."""
    if start < 0:
        start += n
    if stop < 0:
        stop += n
    return max(start, 0), min(stop, n - 1)


def packed_bytes(items: list[bytes]) -> int:
    return 1 + sum(4 + len(x) for x in items)


def wants_large(items: list[bytes], per_entry: int) -> bool:
    """Whether items (per_entry of them make one entry) are past the packed layout's limits."""
    return len(items) > PACKED_ENTRIES_MAX * per_entry or packed_bytes(items) > PACKED_BYTES_MAX


def items_of(store: Store, off: int) -> list[bytes]:
    """Every entry of a collection record, any layout (a hash: field, value, field, value ...)."""
    sp = store.struct_of(off)
    a, b = store.value_span(off)
    if not sp:
        assert store.mm[a] == LAYOUT_PACKED, f"record {off}: unknown collection layout {store.mm[a]}"
        return unpack_entries(store.mm[a:b], 1)
    if store.mm[a] == LAYOUT_TABLE:
        return Table(store, off).flat_items()
    return Chunks(store, off).range(0, -1)


def field_value(store: Store, off: int, field: bytes) -> bytes | None:
    """One field's value in the hash or set record at off, either layout (a set member's is
    empty), or None if absent: the compiled read (layouts.pyx) the fast path makes too."""
    return field_of(store.index, off, field, store.type_of(off) == TYPE_HASH)


def list_value(store: Store, off: int, index: int) -> bytes | None:
    """LINDEX: entry `index` (negative: from the end) of the list record at off, either layout,
    or None past either end: the compiled read (layouts.pyx) the fast path makes too."""
    return list_entry(store.index, off, index)


def value_bytes(store: Store, off: int) -> bytes:
    """A record's value area as position-independent bytes (to copy or move the key): a large
    collection is written out packed; its next change takes the large layout again."""
    a, b = store.value_span(off)
    if not store.struct_of(off):
        return store.mm[a:b]
    return pack(items_of(store, off))


def _head_value(klen: int, layout: int, struct_off: int) -> bytes:
    pad = -(klen + 1) % 8  # the value area starts at a record offset + RECORD_HEADER_BYTES + klen
    return bytes((layout,)) + bytes(pad) + struct_off.to_bytes(8, "little")


def _pointer_word(store: Store, head: int) -> int:
    start = head + RECORD_HEADER_BYTES + (store.q[(head >> 3) + 2] & KLEN_MASK)
    return (start + 8) >> 3


def _struct_value(words: list[int] | array[int]) -> bytes:
    return array("Q", words).tobytes()


def _fp(field: bytes) -> int:
    return zlib.crc32(field) >> 8


def _log2_for(entries: int) -> int:
    """Slots for a table of this many entries: at most half full."""
    log2 = max(TABLE_SLOTS_MIN_LOG2, (2 * entries - 1).bit_length())
    if log2 > TABLE_SLOTS_MAX_LOG2:
        raise CommandError(OOM)
    return log2


def _place(slots: array[int], log2: int, link: int) -> None:
    mask = (1 << log2) - 1
    i = (link >> 40) >> (24 - log2)
    while slots[i]:
        i = (i + 1) & mask
    slots[i] = link


# ---------------------------------------------------------------------- tables (hashes, sets)


def write_table(store: Store, db: int, key: bytes, kind: int, entries: list[Entry], expire_ms: int,
                found: tuple[int, int, int]) -> None:
    """Make key a large hash or set of these distinct entries (in place of found[0], if any):
    every block is reserved first, so OOM changes nothing."""
    log2 = _log2_for(len(entries))
    blocks = store.reserve([record_bytes(len(f), len(v)) for f, v in entries] + _large_sizes(key, 1 << log2))
    pdb = store.dbmap[db]
    slots = array("Q", bytes(8 << log2))
    for (f, v), off in zip(entries, blocks, strict=False):
        store.write_record(off, pdb, f, kind, v, 0)
        _place(slots, log2, _fp(f) << 40 | off >> 3)
    _publish_large(store, db, key, kind, LAYOUT_TABLE, [len(entries), len(entries), log2], slots, blocks,
                   expire_ms, found)


def _large_sizes(key: bytes, slots: int) -> list[int]:
    """The blocks a large collection needs besides its nodes: its structure, then its head."""
    return [record_bytes(0, 8 * (STRUCT_WORDS + slots)), record_bytes(len(key), len(_head_value(len(key), 0, 0)))]


def _publish_large(store: Store, db: int, key: bytes, kind: int, layout: int, words: list[int], slots: array[int],
                   blocks: list[int], expire_ms: int, found: tuple[int, int, int]) -> None:
    """Write the structure record (words, then slots) and the head, in the last two of the blocks
    reserved with _large_sizes; putting the head publishes the whole collection."""
    structure = blocks[-2]
    store.write_record(structure, store.dbmap[db], b"", kind, _struct_value(words) + slots.tobytes(), 0)
    store.put(db, key, kind, _head_value(len(key), layout, structure), expire_ms, found, block=blocks[-1])


class _Large:
    """A large hash, set or list, operated on in place: its head record and its structure (the
    table or chunk directory) record."""

    def __init__(self, store: Store, head: int) -> None:
        self.store = store
        self.head = head
        info = store.q[(head >> 3) + 2]
        self.kind = (info >> 32) & 0xFF
        self.pdb = (info >> 40) & 0xFF  # the stored db its records carry
        self._attach(store.struct_of(head))

    def _changed(self) -> None:
        """Tell the store this collection changes in place (a client may WATCH or track its key)."""
        if self.store.cas or self.store.tracking:
            self.store.note_record(self.head)

    def _attach(self, structure: int) -> None:
        self.structure = structure
        self.s = (structure + RECORD_HEADER_BYTES) >> 3
        self.slot0 = self.s + STRUCT_WORDS

    def _replace_structure(self, words: list[int], slots: array[int]) -> None:
        """Write a new structure record of these words and slots and publish it by the head's
        pointer; the nodes stay where they are."""
        store = self.store
        (structure,) = store.reserve([record_bytes(0, 8 * (STRUCT_WORDS + len(slots)))])
        store.write_record(structure, self.pdb, b"", self.kind, _struct_value(words) + slots.tobytes(), 0)
        old = self.structure
        store.q[_pointer_word(store, self.head)] = structure  # publish
        store.release([old])
        self._attach(structure)


class Table(_Large):
    """A large hash or set."""

    def _attach(self, structure: int) -> None:
        super()._attach(structure)
        self.log2 = self.store.q[self.s + 2]
        self.mask = (1 << self.log2) - 1

    def __len__(self) -> int:
        return self.store.q[self.s]

    def _probe(self, field: bytes, taken: set[int] | None = None) -> tuple[int, int]:
        """(slot of field or -1, the slot a new entry for it would take).  Slots in `taken` are
        spoken for by this same change and count as occupied.  (Compiled: layouts.pyx.)"""
        return table_probe(self.store.index, self.s, field, taken or None)

    def _node(self, i: int) -> int:
        return (self.store.q[self.slot0 + i] & OFF_MASK) << 3

    def get(self, field: bytes) -> bytes | None:
        return field_value(self.store, self.head, field)

    def contains(self, field: bytes) -> bool:
        return field_value(self.store, self.head, field) is not None

    def set_many(self, entries: dict[bytes, bytes]) -> int:
        """Write entries (new or replacing) as one change; returns how many are new."""
        self._changed()
        store = self.store
        if len(entries) == 1:  # the usual change: compiled (layouts.pyx), one publishing store
            ((field, value),) = entries.items()
            added = table_set_one(store.index, self.head, field, value)
            if added < 0:  # the table is 3/4 full: it grows first
                self._rehash(_log2_for(len(self) + 1))
                added = table_set_one(store.index, self.head, field, value)
            assert added >= 0, "a table just grown has room for one more entry"
            return added
        q = store.q
        if q[self.s + 1] + len(entries) > (3 << self.log2) // 4:
            self._rehash(_log2_for(len(self) + len(entries)))
        taken: set[int] = set()
        plan = []
        for field, value in entries.items():
            fp = _fp(field)
            at, free = self._probe(field, taken)
            slot = at if at >= 0 else free
            taken.add(slot)
            plan.append((field, value, fp, slot, at >= 0))
        blocks = store.reserve([record_bytes(len(f), len(v)) for f, v, *_ in plan] + word_journal_sizes(len(plan)))
        pdb, kind = self.pdb, self.kind
        stores, frees = [], []
        added = was_empty = 0
        for (field, value, fp, slot, exists), off in zip(plan, blocks, strict=False):
            store.write_record(off, pdb, field, kind, value, 0)
            old = q[self.slot0 + slot]
            if exists:
                frees.append((old & OFF_MASK) << 3)
            else:
                added += 1
                was_empty += old == 0
            stores.append((self.slot0 + slot, fp << 40 | off >> 3))
        store.commit_words(stores, blocks[-1] if len(stores) > 1 else 0, frees)
        q[self.s] += added
        q[self.s + 1] += was_empty
        return added

    def delete_many(self, fields: list[bytes]) -> int:
        """Remove fields as one change; returns how many were there.  The caller deletes the key
        when the count reaches 0."""
        store = self.store
        slots = {i for i in (self._probe(f)[0] for f in set(fields)) if i >= 0}
        if not slots:
            return 0
        self._changed()
        journal = store.reserve(word_journal_sizes(len(slots)))
        store.commit_words([(self.slot0 + i, TOMBSTONE) for i in slots], journal[0] if journal else 0,
                           [self._node(i) for i in slots])
        store.q[self.s] -= len(slots)
        if len(self) and len(self) < (1 << self.log2) // 8 and self.log2 > TABLE_SLOTS_MIN_LOG2:
            try:
                self._rehash(_log2_for(len(self)))
            except CommandError:
                pass  # no room to shrink now: the table stays as it is, still correct
        return len(slots)

    def _rehash(self, log2: int) -> None:
        """Move the links into a new table of 2**log2 slots and publish it (nodes stay)."""
        links = self.links()
        slots = array("Q", bytes(8 << log2))
        for link in links:
            _place(slots, log2, link)
        self._replace_structure([len(links), len(links), log2], slots)

    def _entry(self, link: int) -> Entry:
        q, mm = self.store.q, self.store.mm
        off = (link & OFF_MASK) << 3
        w = off >> 3
        klen = q[w + 2] & KLEN_MASK
        start = off + RECORD_HEADER_BYTES + klen
        return mm[off + RECORD_HEADER_BYTES : start], mm[start : start + (q[w + 3] & VLEN_MASK)]

    def links(self) -> list[int]:
        return [w for w in self.store.q[self.slot0 : self.slot0 + (1 << self.log2)] if w > TOMBSTONE]

    def entries(self) -> list[Entry]:
        entry = self._entry
        return [entry(w) for w in self.links()]

    def flat_items(self) -> list[bytes]:
        """field, value, field, value ... (a hash) or the members (a set)."""
        if self.kind == TYPE_HASH:
            return [x for entry in self.entries() for x in entry]
        entry = self._entry
        return [entry(w)[0] for w in self.links()]

    def random_entries(self, n: int) -> list[Entry]:
        """n entries picked at random, with repeats (the table is at least 1/8 full, so a few
        probes find each)."""
        q = self.store.q
        out: list[Entry] = []
        size = 1 << self.log2
        while len(out) < n and len(self):
            w = q[self.slot0 + random.randrange(size)]
            if w > TOMBSTONE:
                out.append(self._entry(w))
        return out

    def scan(self, cursor: int, count: int) -> tuple[int, list[Entry]]:
        """The entries whose fp lies in [cursor, next cursor), about count of them; the next
        cursor is 0 at the end."""
        if cursor >= FP_SPACE or not len(self):
            return 0, []
        q = self.store.q
        hi = min(FP_SPACE, cursor + max(1, count * FP_SPACE // len(self)))
        shift = 24 - self.log2
        i = cursor >> shift
        last_home = (hi - 1) >> shift
        out = []
        while True:
            w = q[self.slot0 + (i & self.mask)]
            if w == 0 and i > last_home:
                break
            if w > TOMBSTONE and cursor <= w >> 40 < hi:
                out.append(self._entry(w))
            i += 1
        return (hi if hi < FP_SPACE else 0), out


# ---------------------------------------------------------------------- chunks (lists)


def _chunk(items: list[bytes]) -> list[list[bytes]]:
    """Split entries into nodes of at most CHUNK_ENTRIES_MAX entries and CHUNK_BYTES_MAX bytes."""
    nodes: list[list[bytes]] = []
    node: list[bytes] = []
    size = 0
    for x in items:
        if node and (len(node) == CHUNK_ENTRIES_MAX or size + 8 + len(x) > CHUNK_BYTES_MAX):
            nodes.append(node)
            node, size = [], 0
        node.append(x)
        size += 8 + len(x)
    if node:
        nodes.append(node)
    return nodes


def write_chunks(store: Store, db: int, key: bytes, items: list[bytes], expire_ms: int,
                 found: tuple[int, int, int]) -> None:
    """Make key a large list of these items (in place of found[0], if any), all or nothing."""
    nodes = _chunk(items)
    cap = max(DIRECTORY_SLOTS_MIN, 2 * len(nodes))
    payloads = [pack_node(node) for node in nodes]
    blocks = store.reserve([record_bytes(0, len(p)) for p in payloads] + _large_sizes(key, cap))
    pdb = store.dbmap[db]
    first = (cap - len(nodes)) // 2
    slots = array("Q", bytes(8 * cap))
    for i, (node, payload, off) in enumerate(zip(nodes, payloads, blocks, strict=False)):
        store.write_record(off, pdb, b"", TYPE_LIST, payload, 0)
        slots[first + i] = len(node) << 48 | off >> 3
    _publish_large(store, db, key, TYPE_LIST, LAYOUT_CHUNKS, [first << 32 | len(nodes), len(items), cap], slots,
                   blocks, expire_ms, found)


class Chunks(_Large):
    """A large list."""

    def __len__(self) -> int:
        return self.store.q[self.s + 1]

    def _window(self) -> tuple[int, int]:
        w = self.store.q[self.s]
        return w >> 32, w & KLEN_MASK

    def _slots(self) -> list[int]:
        first, n = self._window()
        return list(self.store.q[self.slot0 + first : self.slot0 + first + n])

    def _payload(self, slot_word: int) -> bytes:
        off = (slot_word & CHUNK_OFF_MASK) << 3
        start = off + RECORD_HEADER_BYTES
        return self.store.mm[start : start + (self.store.q[(off >> 3) + 3] & VLEN_MASK)]

    def _node_items(self, slot_word: int) -> list[bytes]:
        return unpack_node(self._payload(slot_word))

    def _locate(self, index: int) -> tuple[int, int]:
        """(position in the window, index in that node) of entry `index` (0 <= index < len)."""
        return chunk_locate(self.store.index, self.head, index)

    def index(self, index: int) -> bytes:
        value = list_value(self.store, self.head, index)
        assert value is not None, f"entry {index} of a list of {len(self)}"
        return value

    def range(self, start: int, stop: int, pay: Callable[[list[bytes]], list[bytes]] | None = None) -> list[bytes]:
        """Entries start..stop inclusive, Python-style negative indexes, clamped (LRANGE).  `pay`
        sees each node's share before it is kept, and may stop a reply that grows too large."""
        start, stop = clamp_range(len(self), start, stop)
        if start > stop:
            return []
        pos, at = self._locate(start)
        slots = self._slots()
        out: list[bytes] = []
        want = stop - start + 1
        while len(out) < want:
            items = self._node_items(slots[pos])[at : at + want - len(out)]
            out += pay(items) if pay is not None else items
            pos, at = pos + 1, 0
        return out

    def set(self, index: int, value: bytes) -> None:
        self._changed()
        pos, at = self._locate(index)
        first, _ = self._window()
        word = self.slot0 + first + pos
        items = self._node_items(self.store.q[word])
        items[at] = value
        self._replace_nodes([(word, items)])

    def trim(self, start: int, stop: int) -> None:
        """LTRIM: keep entries start..stop (0 <= start <= stop < len) as one change."""
        if start == 0 and stop == len(self) - 1:
            return
        self._changed()
        first, n = self._window()
        pos_a, at_a = self._locate(start)
        pos_b, at_b = self._locate(stop)
        slots = self._slots()
        dropped = [(w & CHUNK_OFF_MASK) << 3 for pos, w in enumerate(slots) if pos < pos_a or pos > pos_b]
        changes = []
        items_a = self._node_items(slots[pos_a])
        if pos_a == pos_b:
            if at_b - at_a + 1 < len(items_a):
                changes.append((self.slot0 + first + pos_a, items_a[at_a : at_b + 1]))
        else:
            if at_a:
                changes.append((self.slot0 + first + pos_a, items_a[at_a:]))
            items_b = self._node_items(slots[pos_b])
            if at_b + 1 < len(items_b):
                changes.append((self.slot0 + first + pos_b, items_b[: at_b + 1]))
        window = (first + pos_a) << 32 | (pos_b - pos_a + 1)
        self._replace_nodes(changes, window if window != self.store.q[self.s] else None, dropped=dropped)
        self.store.q[self.s + 1] = stop - start + 1

    def _replace_nodes(self, changes: list[tuple[int, list[bytes]]], window: int | None = None,
                       added: list[tuple[int, list[bytes]]] | None = None, dropped: list[int] | None = None) -> None:
        """Write new nodes for slots (word index, entries), nodes into unused slots (added), and
        the new window, as one change."""
        self._publish_nodes([(word, pack_node(items), len(items)) for word, items in changes], window,
                            [(word, pack_node(items), len(items)) for word, items in added or []], dropped or [])

    def _publish_nodes(self, changes: list[tuple[int, bytes, int]], window: int | None,
                       added: list[tuple[int, bytes, int]], dropped: list[int]) -> None:
        """_replace_nodes with the nodes' payloads and entry counts already made."""
        store = self.store
        q = store.q
        stores = len(changes) + (window is not None)
        blocks = store.reserve([record_bytes(0, len(p)) for _, p, _ in changes + added] + word_journal_sizes(stores))
        pdb = self.pdb
        plan = []
        for (word, payload, entries), off in zip(changes + added, blocks, strict=False):
            store.write_record(off, pdb, b"", TYPE_LIST, payload, 0)
            plan.append((word, entries << 48 | off >> 3))
        for word, link in plan[len(changes) :]:
            q[word] = link  # outside the window: not visible until the window moves
        frees = [(q[word] & CHUNK_OFF_MASK) << 3 for word, _, _ in changes] + dropped
        stores_list = plan[: len(changes)] + ([(self.s, window)] if window is not None else [])
        store.commit_words(stores_list, blocks[-1] if stores > 1 else 0, frees)

    def _room(self, left: bool, nodes: int) -> None:
        """Make sure `nodes` more slots are free at one end of the directory (a new directory,
        recentred and maybe larger, published by the head's pointer)."""
        first, n = self._window()
        cap = self.store.q[self.s + 2]
        if (first if left else cap - first - n) >= nodes:
            return
        new_cap = max(DIRECTORY_SLOTS_MIN, 2 * (n + nodes))
        new_first = (new_cap - n) // 2  # at least `nodes` free slots on each side
        slots = array("Q", bytes(8 * new_cap))
        slots[new_first : new_first + n] = array("Q", self._slots())
        self._replace_structure([new_first << 32 | n, len(self), new_cap], slots)

    def push(self, items: list[bytes], left: bool) -> int:
        """LPUSH (items in the order pushed) / RPUSH; returns the new length."""
        self._changed()
        length = chunks_push_end(self.store.index, self.head, items, left)
        if length >= 0:  # the usual push, compiled (layouts.pyx): the end node had room
            return length
        # The end node is full: the new entries go into new nodes beyond it.
        q = self.store.q
        nodes = _chunk(list(reversed(items)) if left else items)
        extra = len(nodes)
        self._room(left, extra)
        first, n = self._window()
        if left:
            start = self.slot0 + first - extra
            window = (first - extra) << 32 | (n + extra)
        else:
            start = self.slot0 + first + n
            window = first << 32 | (n + extra)
        self._replace_nodes([], window, [(start + i, node) for i, node in enumerate(nodes)])
        q[self.s + 1] += len(items)
        return len(self)

    def pop(self, count: int, left: bool) -> list[bytes]:
        """LPOP / RPOP of up to count entries, in the order popped.  The caller deletes the key
        when the list becomes empty."""
        if count <= 0:  # nothing to take: no journal, nothing published (LPOP key 0)
            return []
        self._changed()
        if count == 1:  # the usual pop, compiled (layouts.pyx); not the list's last entry
            value = chunks_pop_end(self.store.index, self.head, left)
            if value is not None:
                return [value]
        store = self.store
        q = store.q
        first, n = self._window()
        out: list[bytes] = []
        dropped: list[int] = []
        change: list[tuple[int, bytes, int]] = []
        pos = 0
        while len(out) < count and pos < n:
            word = self.slot0 + (first + pos if left else first + n - 1 - pos)
            link = q[word]
            entries = link >> 48
            want = count - len(out)
            if want >= entries:
                out += node_take(self._payload(link), entries, left)[0]
                dropped.append((link & CHUNK_OFF_MASK) << 3)
                pos += 1
                continue
            taken, rest = node_take(self._payload(link), want, left)
            out += taken
            change.append((word, rest, entries - want))
            break
        if pos == n:  # the whole list: the caller deletes the key
            return out
        window = ((first + pos) << 32 | (n - pos)) if left else (first << 32 | (n - pos))
        self._publish_nodes(change, window if pos else None, [], dropped)
        q[self.s + 1] -= len(out)
        return out
