"""A small time-bounded "seen" set: replayed signatures, redelivered event ids."""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from typing import Any

from redis.exceptions import RedisError

from bot.metrics import redis_error

log = logging.getLogger(__name__)


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


class SharedSeenSet:
    """A SeenSet shared by every replica through Redis (``SET key 1 NX EX ttl``).

    Slack may deliver a retry, or an attacker replay a captured request, to any
    replica behind the load balancer. The local set answers repeats at once;
    Redis catches the ones another replica saw. If Redis fails, the local set
    alone decides (a replay then needs to hit another replica within minutes).
    """

    def __init__(self, redis: Any | None, prefix: str, ttl: float) -> None:
        self.redis = redis
        self.prefix = prefix
        self.ttl = ttl
        self.local = SeenSet(ttl)

    async def first_time(self, key: str) -> bool:
        if not self.local.add(key):
            return False
        if self.redis is None:
            return True
        try:
            created = await self.redis.set(self.prefix + key, b"1", nx=True,
                                           ex=max(1, int(self.ttl)))
        except (RedisError, OSError) as exc:
            redis_error("slack_seen", exc)
            log.warning("seen-set in Redis unavailable (%s); using this replica's memory",
                        type(exc).__name__)
            return True
        return bool(created)
