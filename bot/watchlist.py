"""Watch definitions: what ``/heap watch`` stores and the scheduler reads.

A watch is one service captured every ``interval_seconds``, posting to
``channel``; watches live in one Redis hash (``heapbot:watches``, service →
JSON) so they survive restarts. Below handlers, so ``handlers/watch.py`` and
the alert wing's scheduler (bot/alerts/watches.py) share one definition.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import redis.asyncio as aioredis

from bot import keys, records
from bot.errors import UnknownServiceError, UsageError
from bot.redisconn import store_errors
from bot.registry import Registry

log = logging.getLogger(__name__)

WATCHES_KEY = keys.WATCHES  # every watch key shares the {watches} hash tag (bot/keys.py)

# How long the tick log of an ended watch is kept (a tick still running logs into it too).
ENDED_TICK_LOG_SECONDS = 24 * 3600

# Unwatch: KEYS[1] the watch hash, KEYS[2] the tick log, the rest the watch's own keys
# (keys.watch_keys); ARGV the service, the tick log's TTL. One script, so no scheduler, tick
# or decision sees the watch gone but its cursor or state still there (they check HEXISTS
# in their own scripts).
_UNWATCH = """
local removed = redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('DEL', unpack(KEYS, 3))
redis.call('EXPIRE', KEYS[2], ARGV[2])
return removed
"""


@dataclass(slots=True)
class Watch:
    """A service captured every ``interval_seconds``, posting to ``channel``."""

    service: str
    interval_seconds: float
    channel: str
    created_by: str = ""
    created_at: float = 0.0
    goroutine_threshold: int | None = None

    def to_json(self) -> str:
        return records.to_json(self)

    @classmethod
    def from_json(cls, text: str | bytes) -> Watch:
        return records.from_json(cls, text)


# A Slack conversation id: public (C…), private (G…) or direct (D…) channel. Channel
# names are lower-case, so an all-capitals word is an id, never a name.
_CHANNEL_ID = re.compile(r"[CGD][A-Z0-9]{2,20}")


def parse_channel(text: str) -> str:
    """The channel id a watch posts into, from what the surface passed on.

    Slack sends a channel picked from its list as ``<#C123|name>`` (the manifests set
    ``should_escape: true``), which reaches handlers as ``C123`` (bot/slack/text.py).
    A bare ``#name`` is refused: allow_channels and posts need the id, and heapbot has
    no ``channels:read`` scope to look names up (conversations.list).
    """
    name = text.strip()
    if _CHANNEL_ID.fullmatch(name):
        return name
    if not re.fullmatch(r"#?[A-Za-z0-9][A-Za-z0-9._-]{0,79}", name):
        raise UsageError(f"`{name[:40]}` is not a channel.",
                         hint="Pick it from Slack's list as you type `#`, or write its id, "
                              "e.g. C0123ABCD.")
    shown = name if name.startswith("#") else "#" + name
    raise UsageError(
        f"heapbot cannot tell which channel `{shown}` is: Slack sent its name, not its id "
        f"(a channel Slack knows arrives as a link).",
        hint="Pick the channel from Slack's list as you type `#` (invite heapbot to a private "
             "one first), or write its id, e.g. `in C0123ABCD` (channel details → About).")


class WatchStore:
    """Watches in one Redis hash: service → JSON."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis

    async def put(self, watch: Watch) -> None:
        async with store_errors("save a watch"):
            await self.redis.hset(WATCHES_KEY, watch.service, watch.to_json())

    async def get(self, service: str) -> Watch | None:
        async with store_errors("read a watch"):
            data = await self.redis.hget(WATCHES_KEY, service)
        return Watch.from_json(data) if data else None

    async def remove(self, service: str) -> bool:
        """Forget the watch and every key of it (schedule, verdict state), so a watch made
        again starts afresh and an ended one leaves nothing behind; its tick log expires a
        day later, its captures stay in the service's history."""
        names = [WATCHES_KEY, keys.watch_ticks(service), *keys.watch_keys(service)]
        async with store_errors("remove a watch"):
            removed = await self.redis.eval(_UNWATCH, len(names), *names, service,
                                            ENDED_TICK_LOG_SECONDS)
        return bool(removed)

    async def all(self) -> list[Watch]:
        async with store_errors("list watches"):
            data = await self.redis.hgetall(WATCHES_KEY)
        watches = []
        for raw in data.values():
            try:
                watches.append(Watch.from_json(raw))
            except (ValueError, TypeError):
                log.warning("unreadable watch in %s: %r", WATCHES_KEY, raw[:200])
        return sorted(watches, key=lambda w: w.service)


def channel_allowed(registry: Registry, watch: Watch) -> bool:
    """Whether the registry (as it is now) lets ``watch`` post into its channel."""
    try:
        return registry.resolve(watch.service).may_post_in(watch.channel)
    except UnknownServiceError:
        return True  # the capture step names the missing service
