"""The codec's bounded caches: a dict emptied when full, by entries and by bytes (private).

Every cache of the hand-written codec paths (:mod:`udf._fastcodec`,
:mod:`udf._fastdecode`, :mod:`udf._views`) is a :class:`BoundedCache`. A
lookup is a plain ``dict.get`` on its ``data`` (an exact dict: a method of a
dict subclass costs a third more, on the hot path); only
:meth:`BoundedCache.keep` (a miss) does the bookkeeping: an entry whose estimated size is over :data:`MAX_ENTRY_BYTES`
is not kept at all, and the cache is emptied (never evicted piecemeal) when
the next entry would take it past its count or its byte budget. So one
cache's memory never exceeds its budget plus one entry, whatever the traffic:
a point with 128 KiB tags is encoded and decoded as well as any other, it is
just not remembered.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any, TypeVar

V = TypeVar("V")

#: Entries estimated above this many bytes are never cached.
MAX_ENTRY_BYTES = 4096


class BoundedCache:
    """A dict (``data``) of at most ``entries`` entries and ``budget`` estimated bytes, emptied when full.

    Estimates are the caller's (the bytes of the keys and values it keeps,
    plus a fixed overhead per entry); ``max_entry`` (by default
    :data:`MAX_ENTRY_BYTES`) caps one entry. A ``shared`` cache (threads
    keep entries at once) takes a lock in ``keep`` so that the byte count
    stays exact; lookups never do. One stream's caches, used by its reader
    thread alone, need none.
    """

    __slots__ = ("name", "data", "entries", "budget", "max_entry", "used", "_lock")

    def __init__(
        self, name: str, entries: int, budget: int, max_entry: int = MAX_ENTRY_BYTES, *, shared: bool = True
    ) -> None:
        self.name = name
        #: The entries: look up with ``data.get`` (never replaced, only emptied, so a bound ``get`` stays valid).
        self.data: dict[Any, Any] = {}
        self.entries = entries
        self.budget = budget
        self.max_entry = max_entry
        self.used = 0  # estimated bytes held
        self._lock = threading.Lock() if shared else None

    def keep(self, key: Any, value: V, cost: int) -> V:
        """Remember ``value`` under ``key`` unless it costs over ``max_entry`` bytes; return ``value``."""
        if cost > self.max_entry:
            return value
        if self._lock is None:
            self._store(key, value, cost)
        else:
            with self._lock:
                self._store(key, value, cost)
        return value

    def _store(self, key: Any, value: Any, cost: int) -> None:
        data = self.data
        if key not in data:
            if len(data) >= self.entries or self.used + cost > self.budget:
                data.clear()
                self.used = 0
            self.used += cost
        data[key] = value

    def clear(self) -> None:
        """Forget every entry."""
        if self._lock is None:
            self.data.clear()
            self.used = 0
            return
        with self._lock:
            self.data.clear()
            self.used = 0

    def __len__(self) -> int:
        return len(self.data)

    def __iter__(self) -> Iterator[Any]:
        return iter(self.data)

    def __contains__(self, key: Any) -> bool:
        return key in self.data

    def __repr__(self) -> str:
        return f"<BoundedCache {self.name}: {len(self)}/{self.entries} entries, {self.used}/{self.budget} bytes>"
