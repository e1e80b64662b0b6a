"""A small time-bounded "seen" set: replayed signatures, redelivered event ids."""

from __future__ import annotations

import time
from collections import OrderedDict


class SeenSet:
    """Remembers keys for ``ttl`` seconds; ``add`` says whether a key is new.

    Memory is bounded by ``max_keys``: the oldest keys go first, which only
    shortens how long a very old key is remembered.
    """

    def __init__(self, ttl: float, max_keys: int = 100_000) -> None:
        self.ttl = ttl
        self.max_keys = max_keys
        self._keys: OrderedDict[str, float] = OrderedDict()

    def add(self, key: str, now: float | None = None) -> bool:
        """Record ``key``; False if it was already seen within the TTL."""
        now = time.monotonic() if now is None else now
        self._expire(now)
        if key in self._keys:
            return False
        self._keys[key] = now + self.ttl
        while len(self._keys) > self.max_keys:
            self._keys.popitem(last=False)
        return True

    def __len__(self) -> int:
        return len(self._keys)

    def _expire(self, now: float) -> None:
        while self._keys:
            key, expires = next(iter(self._keys.items()))
            if expires > now:
                break
            del self._keys[key]
