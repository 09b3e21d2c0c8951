"""A thread-safe least-recently-used cache of decoded chunks, bounded in bytes."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable

import numpy as np

__all__ = ["ChunkCache"]


class ChunkCache:
    """Bounded LRU mapping of chunk keys to decoded pixel arrays.

    Parameters
    ----------
    capacity : int
        Maximum total size of the cached arrays in bytes. ``0`` disables caching.

    Notes
    -----
    The cache is shared by every reader thread of one slide. Arrays handed out are
    marked read-only, so a caller cannot corrupt what later readers receive.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 0:
            raise ValueError(f"cache capacity must be >= 0 bytes, got {capacity}")
        self.capacity = int(capacity)
        self._data: OrderedDict[Hashable, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self._nbytes = 0
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable) -> np.ndarray | None:
        with self._lock:
            value = self._data.get(key)
            if value is None:
                self.misses += 1
                return None
            self._data.move_to_end(key)
            self.hits += 1
            return value

    def put(self, key: Hashable, value: np.ndarray) -> None:
        if value.nbytes > self.capacity:
            return
        value.flags.writeable = False
        with self._lock:
            old = self._data.pop(key, None)
            if old is not None:
                self._nbytes -= old.nbytes
            self._data[key] = value
            self._nbytes += value.nbytes
            while self._nbytes > self.capacity:
                _, evicted = self._data.popitem(last=False)
                self._nbytes -= evicted.nbytes

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self._nbytes = 0

    @property
    def nbytes(self) -> int:
        """Total size in bytes of the arrays held now."""
        return self._nbytes

    def __len__(self) -> int:
        return len(self._data)
