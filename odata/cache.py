"""Response and count caches keyed by data version: exact answers at memory speed.

An entry is valid only while its entity set's data version is the one it was built under, so a
hit is always the answer PostgreSQL would give now (up to the NOTIFY delay). Both caches are
per process, bounded (bytes for responses, entries for counts) and evict least recently used.
"""

from __future__ import annotations

import zlib
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, Generic, NamedTuple, TypeVar


class Entry(NamedTuple):
    """A cached response. A tuple of atomic values on purpose: the garbage collector stops
    tracking it after one pass, so a full cache adds nothing to later collections."""

    status: int
    body: bytes
    content_type: str | None
    entity_set: str
    version: int
    etag: str
    key: tuple[str | bytes, ...]
    gzipped: bytes | None = None

    @property
    def size(self) -> int:
        return len(self.body) + (len(self.gzipped) if self.gzipped else 0) + 256


def etag(version: int, body: bytes) -> str:
    # Weak: the same data may be sent gzipped or not. The body's checksum tells apart the
    # representations of one version, and is the same in every worker and dyno.
    return f'W/"{version:x}-{zlib.crc32(body):08x}"'


# What the cache holds: an Entry as a plain tuple. CPython's collector untracks exact tuples of
# atomic values (not NamedTuple instances), so a full cache costs later collections nothing.
_Stored = tuple[Any, ...]


class ResponseCache:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        self._entries: OrderedDict[Hashable, _Stored] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: Hashable) -> bool:
        """Whether `key` has an entry, current or stale."""
        return key in self._entries

    def lookup(self, key: Hashable, version_of: Callable[[str], int | None]) -> Entry | None:
        """The entry for `key` if it was built under its entity set's current version.

        A stale entry stays until the fresh answer replaces it (or the LRU evicts it): that it
        is there says the URL was worth keeping before the change."""
        stored = self._entries.get(key)
        entry = None if stored is None else Entry._make(stored)
        if entry is None or entry.version != version_of(entry.entity_set):
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry

    def put(self, entry: Entry) -> None:
        if entry.size > self.max_bytes // 4:
            return  # one huge page must not flush everything else
        key = entry.key
        if key in self._entries:
            self._drop(key)
        self._entries[key] = tuple(entry)
        self.bytes += entry.size
        while self.bytes > self.max_bytes and self._entries:
            oldest = next(iter(self._entries))
            self._drop(oldest)
            self.evictions += 1

    def gzipped(self, entry: Entry) -> bytes:
        """The entry's body gzipped, compressed once on first use and counted in the budget."""
        if entry.gzipped is not None:
            return entry.gzipped
        compressor = zlib.compressobj(6, zlib.DEFLATED, 31)
        packed = compressor.compress(entry.body) + compressor.flush()
        stored = self._entries.get(entry.key)
        if stored is not None and Entry._make(stored).etag == entry.etag:
            self._entries[entry.key] = tuple(entry._replace(gzipped=packed))
            self.bytes += len(packed)
        return packed

    def _drop(self, key: Hashable) -> None:
        self.bytes -= Entry._make(self._entries.pop(key)).size


K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Lru(Generic[K, V]):
    """A small LRU map bounded by entry count."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._items: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        if len(self._items) > self.max_entries:
            self._items.popitem(last=False)

    def clear(self) -> None:
        self._items.clear()


# For Doorkeeper's ageing: each counter byte mapped to half its value.
_HALVE = bytes(n // 2 for n in range(256))


class Doorkeeper:
    """Admission filter: about how often each key was asked, in fixed memory and O(1).

    A response is kept only once its URL has been asked `min_uses` times, so one-off queries
    (a record page opened once, a search typed once) cost the cache nothing. As in TinyLFU's
    doorkeeper, counters are bytes in a table, two per key at positions taken from the key's
    hash; a key's count is the smaller of its two. Collisions can only admit a one-off answer
    early, which costs an LRU slot, never a wrong answer. When a quarter of the slots are in
    use every counter is halved, so popularity fades, the table never fills up, and a key
    asked once passes for one asked twice with a probability of at most 1/16.
    """

    def __init__(self, min_uses: int, slots: int = 1 << 21) -> None:
        if slots & (slots - 1):
            raise ValueError("slots must be a power of two")
        self.min_uses = min_uses
        self._counts = bytearray(slots)
        self._mask = slots - 1
        self._used = 0

    def admit(self, key: Hashable) -> bool:
        """Count one more use of `key`; True once it has been asked `min_uses` times."""
        h = hash(key)
        i, j = h & self._mask, (h >> 32) & self._mask
        counts = self._counts
        first, second = counts[i], counts[j]
        uses = min(first, second) + 1
        if uses < 256:
            # Conservative update: raise only the counters below the new count.
            if first < uses:
                counts[i] = uses
                self._used += first == 0
            if second < uses and j != i:
                counts[j] = uses
                self._used += second == 0
            if self._used > (self._mask + 1) // 4:
                self._age()
        return uses >= self.min_uses

    def _age(self) -> None:
        self._counts = bytearray(self._counts.translate(_HALVE))
        self._used = len(self._counts) - self._counts.count(0)


class CountCache:
    """Exact `count(*)` per (entity set, filter, search, version): once per data change."""

    def __init__(self, max_entries: int = 10_000) -> None:
        self._counts: Lru[Hashable, int] = Lru(max_entries)
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable) -> int | None:
        value = self._counts.get(key)
        if value is None:
            self.misses += 1
        else:
            self.hits += 1
        return value

    def put(self, key: Hashable, value: int) -> None:
        self._counts.put(key, value)
