"""A paged thread's record in Redis (``heapbot:incident:<key>``) and its lock.

The record says where the thread is (channel, ts), whether it is open, and what
it compares against (first and baseline snapshot), so a re-fire replies in the
same thread and a resolve closes it. The lock serialises one incident's jobs
across replicas (alerts, re-fires, resolves and watch ticks of one key).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.typing import EncodableT, FieldT

from bot import keys, records
from bot.alerts.lifecycle import stop_requested
from bot.errors import HeapbotError
from bot.redisconn import store_errors

log = logging.getLogger(__name__)

INCIDENT_PREFIX = keys.incident("")
INCIDENT_TTL_SECONDS = 30 * 24 * 3600
OPEN, RESOLVED = "open", "resolved"

_RELEASE_LUA = (
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"
)
_REFRESH_LUA = (
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) "
    "end return 0"
)


@dataclass(slots=True)
class Incident:
    """One paged thread: where it is and what it compares against."""

    key: str
    service: str
    channel: str
    ts: str = ""
    status: str = OPEN
    title: str = ""
    source: str = ""
    opened_at: float = 0.0
    opened_by_job: str = ""
    first_snapshot: str = ""
    baseline_snapshot: str = ""
    resolved_at: float = 0.0

    @classmethod
    def from_hash(cls, data: Mapping[Any, Any]) -> Incident:
        return records.from_hash(cls, data)


async def load_incident(redis: aioredis.Redis, key: str) -> Incident | None:
    async with store_errors("read an incident"):
        data = await redis.hgetall(keys.incident(key))
    return Incident.from_hash(data) if data else None


async def save_incident(redis: aioredis.Redis, incident: Incident) -> None:
    key = keys.incident(incident.key)
    async with store_errors("save an incident"), redis.pipeline(transaction=True) as pipe:
        mapping: dict[FieldT, EncodableT] = dict(records.to_hash(incident).items())
        pipe.hset(key, mapping=mapping)
        pipe.expire(key, INCIDENT_TTL_SECONDS)
        await pipe.execute()
    if incident.status == OPEN and incident.source != "watch":  # another slot: no MULTI
        async with store_errors("save an incident"):
            await redis.set(keys.incident_latest(incident.service), incident.key,
                            ex=INCIDENT_TTL_SECONDS)


async def latest_open_incident(redis: aioredis.Redis, service: str) -> Incident | None:
    """The service's newest alert thread if it is still open (where a folded alert goes)."""
    async with store_errors("read an incident"):
        key = await redis.get(keys.incident_latest(service))
    if key is None:
        return None
    incident = await load_incident(redis, key.decode() if isinstance(key, bytes) else key)
    return incident if incident is not None and incident.status == OPEN else None


async def may_open_thread(redis: aioredis.Redis, service: str, limit: int,
                          window_seconds: float) -> bool:
    """Count one new thread for ``service``; False once ``limit`` were opened in the window.

    A burst of distinct groupKeys or fingerprints must not open a thread each.
    """
    key = keys.incidents_opened(service)
    async with store_errors("count new incidents"), redis.pipeline(transaction=True) as pipe:
        pipe.set(key, 0, nx=True, px=max(1, int(window_seconds * 1000)))  # window starts
        pipe.incr(key)  # keeps the TTL (Redis 6.2 has no EXPIRE NX)
        _, opened = await pipe.execute()
    return int(opened) <= limit


@contextlib.asynccontextmanager
async def incident_lock(redis: aioredis.Redis, key: str, ttl_seconds: float,
                        wait_seconds: float = 600) -> AsyncIterator[None]:
    """Serialise jobs of one incident across replicas.

    The lock expires ``ttl_seconds`` after its holder dies (the same idle time
    after which the holder's job is taken over) and is refreshed while held.
    """
    name = keys.incident_lock(key)
    token = secrets.token_hex(8)
    ttl_ms = max(1000, int(ttl_seconds * 1000))
    deadline = time.monotonic() + wait_seconds
    while not await redis.set(name, token, nx=True, px=ttl_ms):
        if time.monotonic() > deadline:
            raise HeapbotError(f"Another replica has held the incident {key} for too long.")
        await asyncio.sleep(0.1)

    held = asyncio.Event()
    held.set()

    async def refresh() -> None:
        # Not `while True`: redis-py can swallow a cancel, and the lock must still let go.
        while not stop_requested(None) and held.is_set():
            await asyncio.sleep(ttl_ms / 3000)
            if held.is_set() and not await redis.eval(_REFRESH_LUA, 1, name, token, ttl_ms):
                # Expired before this refresh: the loop stalled past the TTL, and another
                # holder may have it now. Callers must not rely on it alone (watches decide
                # their turn in Redis first); said here so such a stall can be seen.
                log.warning("incident lock %s lost: not refreshed within its %d ms TTL "
                            "(this replica stalled)", key, ttl_ms)
                return

    refresher = asyncio.create_task(refresh(), name=f"incident-lock-{key}")
    try:
        yield
    finally:
        held.clear()
        refresher.cancel()
        await asyncio.wait({refresher}, timeout=5)
        if refresher.done() and not refresher.cancelled() and refresher.exception():
            log.warning("incident lock %s: refresh failed: %s", key, refresher.exception())
        await redis.eval(_RELEASE_LUA, 1, name, token)
