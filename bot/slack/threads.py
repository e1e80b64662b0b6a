"""Which service a Slack thread is about, so follow-ups need no service name.

``/heap top payments`` posts a message; its ts becomes the thread key
``heapbot:thread:{channel}:{ts}`` → ``payments``. A later ``@heapbot diff`` in
that thread (or a button on a message in it) finds the service here. Losing
this memory only means the user has to name the service, so Redis errors are
logged and counted, never shown.
"""

from __future__ import annotations

import logging

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from bot import keys
from bot.metrics import redis_error

log = logging.getLogger(__name__)

THREAD_TTL_SECONDS = 90 * 24 * 3600


def thread_key(channel: str, ts: str) -> str:
    return keys.thread(channel, ts)


class ThreadMemory:
    """Thread → service in Redis (``None`` client: remembers nothing)."""

    def __init__(self, redis: aioredis.Redis | None, ttl: int = THREAD_TTL_SECONDS) -> None:
        self.redis = redis
        self.ttl = ttl

    async def remember(self, channel: str, ts: str, service: str) -> None:
        if self.redis is None or not (channel and ts and service):
            return
        try:
            await self.redis.set(thread_key(channel, ts), service, ex=self.ttl)
        except (RedisError, OSError) as exc:
            redis_error("thread_remember", exc)
            log.warning("could not remember thread %s:%s: %s", channel, ts, exc)

    async def service_of(self, channel: str, ts: str | None) -> str | None:
        if self.redis is None or not (channel and ts):
            return None
        try:
            value = await self.redis.get(thread_key(channel, ts))
        except (RedisError, OSError) as exc:
            redis_error("thread_lookup", exc)
            log.warning("could not look up thread %s:%s: %s", channel, ts, exc)
            return None
        if value is None:
            return None
        return value.decode() if isinstance(value, bytes) else str(value)
