"""Watches: capture a service on a schedule and page when its verdict turns bad.

``/heap watch payments every 15m [in #channel]`` stores a watch in Redis
(``heapbot:watches``), so it survives restarts. Every replica runs the
scheduler loop; time is cut into slots of the watch's interval and a slot's
tick is enqueued only by the replica that wins the lease
``heapbot:watch:lease:<service>:<slot>`` (SET NX PX), so each tick runs once
across replicas. A tick captures (trigger "watch"), runs the leak analysis,
and when the verdict turns to "leak likely" or the goroutines cross the
threshold it opens a thread like an alert's — once per turn, not every tick.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from bot import keys, records
from bot.errors import NotFoundError, StoreError, UnknownServiceError, UsageError
from bot.jobs import Job, WorkContext
from bot.redisconn import store_errors

log = logging.getLogger(__name__)

WATCHES_KEY = keys.WATCHES  # every watch key shares the {watches} hash tag (bot/keys.py)
# A bad verdict is called back to normal only after this many good ticks in a row, so a
# verdict that flickers (one quiet capture in a leak) does not close and reopen threads.
RECOVERY_TICKS = 3
OK = "ok"

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_CHANNEL_REF = re.compile(r"^<#([A-Z0-9]+)(?:\|[^>]*)?>$")


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


def parse_duration(text: str) -> float:
    """Seconds in "15m", "1h30m", "90s"; UsageError for anything else."""
    cleaned = text.strip().lower()
    pos, total = 0, 0.0
    for match in _DURATION.finditer(cleaned):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if pos != len(cleaned) or not cleaned or total <= 0:
        raise UsageError(f"`{text[:40]}` is not a duration.",
                         hint="Write it like 15m, 1h or 90s.")
    return total


def format_duration(seconds: float) -> str:
    seconds = round(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def parse_channel(text: str) -> str:
    """A channel id from Slack's ``<#C123|name>`` escape, or a ``#name`` as typed."""
    match = _CHANNEL_REF.match(text.strip())
    if match:
        return match.group(1)
    name = text.strip()
    if not re.fullmatch(r"#?[A-Za-z0-9][A-Za-z0-9._-]{0,79}", name):
        raise UsageError(f"`{name[:40]}` is not a channel.", hint="Write it like #payments-oncall.")
    return name if name.startswith("#") or (name[:1] in "CGD" and name.isupper()) else "#" + name


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
        async with store_errors("remove a watch"), \
                self.redis.pipeline(transaction=True) as pipe:
            pipe.hdel(WATCHES_KEY, service)
            pipe.delete(keys.watch_state(service), keys.watch_ok_streak(service))
            removed, _ = await pipe.execute()
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


class WatchScheduler:
    """Enqueue each watch's tick once per slot across every replica."""

    def __init__(self, ctx: WorkContext, stop: asyncio.Event | None = None) -> None:
        self.ctx = ctx
        self.store = WatchStore(ctx.redis)
        self.stop = stop

    async def tick_once(self, now: float | None = None) -> list[tuple[str, int]]:
        """Enqueue the due ticks this replica wins; returns (service, slot) of each."""
        now = time.time() if now is None else now
        won = []
        for watch in await self.store.all():
            interval = max(watch.interval_seconds, 0.001)
            slot = int(now // interval)
            lease = keys.watch_lease(watch.service, slot)
            ttl_ms = max(1000, int(interval * 2000))
            if not await self.ctx.redis.set(lease, self.ctx.consumer, nx=True, px=ttl_ms):
                continue
            await self.ctx.queue.enqueue(
                "watch_tick", {"service": watch.service, "slot": slot,
                               "interval_seconds": interval},
                dedupe_key=f"watch:{watch.service}:{slot}")
            won.append((watch.service, slot))
        return won

    async def run(self) -> None:
        from bot.worker import tracked

        with tracked(f"watch scheduler {self.ctx.consumer}"):
            await self._run()

    async def _run(self) -> None:
        from bot.worker import stop_requested

        while not stop_requested(self.stop):
            try:
                await self.tick_once()
            except (StoreError, RedisError, OSError) as exc:
                log.warning("watch scheduler: Redis error %s", exc)
            except Exception:
                log.exception("watch scheduler tick failed")
            await asyncio.sleep(self._poll_seconds())

    def _poll_seconds(self) -> float:
        poll = self.ctx.config.watch_poll_seconds
        return max(0.05, min(poll, self.ctx.config.watch_min_interval_seconds / 4))


async def _alarm(ctx: WorkContext, watch: Watch, snapshot: Any) -> tuple[str, str]:
    """("leak likely" | "goroutines" | "ok", why) for the watch's service now."""
    threshold = watch.goroutine_threshold or ctx.config.watch_goroutine_threshold
    goroutines = snapshot.goroutine_total
    if goroutines is None and snapshot.summary is not None:
        goroutines = snapshot.summary.goroutine_total
    report = await ctx.runtime.leak_report(watch.service)  # the same verdict as /heap leaks
    if report.verdict == "leak likely":
        suspects = list(report.suspects)
        named = f": `{suspects[0].function}`" if suspects else ""
        return "leak likely", f"The leak analysis now says leak likely{named}."
    if goroutines is not None and goroutines >= threshold:
        return "goroutines", f"{goroutines:,} goroutines, at or above the threshold {threshold:,}."
    return OK, ""


def channel_allowed(runtime: Any, watch: Watch) -> bool:
    """Whether the registry (as it is now) lets ``watch`` post into its channel."""
    try:
        return bool(runtime.registry.resolve(watch.service).may_post_in(watch.channel))
    except UnknownServiceError:
        return True  # the capture step names the missing service


async def run_tick(ctx: WorkContext, job: Job) -> str:
    """One watch tick: capture, judge, and open a thread when the verdict turns bad."""
    from bot.paged import OPEN, capture_step, follow_up, incident_lock, load_incident, open_thread

    service = job.payload["service"]
    watch = await WatchStore(ctx.redis).get(service)
    if watch is None:
        return "unwatched"
    if not channel_allowed(ctx.runtime, watch):
        log.warning("watch on %s skipped: it posts into %s, which is not one of the "
                    "service's allow_channels", service, watch.channel)
        return "refused_channel"
    snapshot = await capture_step(ctx, job, service, "watch", "watch")
    ticks = keys.watch_ticks(service)
    done = await ctx.queue.progress(job)
    if "tick" not in done:
        async with ctx.redis.pipeline(transaction=True) as pipe:
            pipe.rpush(ticks, f"{job.payload.get('slot')}:{snapshot.id}")
            pipe.ltrim(ticks, -1000, -1)
            await pipe.execute()
        await ctx.queue.record_step(job, "tick")
    key = f"watch:{service}"
    # Ticks of one watch may overlap (slow capture, short interval, several replicas):
    # judging, posting and recording the state happen under one lock, so a turn pages once.
    async with incident_lock(ctx.redis, key, ctx.config.claim_idle_seconds):
        state, why = await _alarm(ctx, watch, snapshot)
        if await WatchStore(ctx.redis).get(service) is None:
            return "unwatched"  # removed while this tick captured: its state is gone too
        previous = (await ctx.redis.get(keys.watch_state(service)) or b"ok").decode()
        if state == OK and previous != OK:
            if await ctx.redis.incr(keys.watch_ok_streak(service)) < RECOVERY_TICKS:
                state = previous  # not yet: hold the bad state until it stays good
        else:
            await ctx.redis.delete(keys.watch_ok_streak(service))
        if ctx.slack is not None and watch.channel:
            incident = await load_incident(ctx.redis, key)
            resuming = "summary" in done
            if state != OK and (previous == OK or resuming):
                title = "Leak likely" if state == "leak likely" else "Goroutines above threshold"
                every = format_duration(watch.interval_seconds)
                await open_thread(ctx, job, service=service, incident_key=key,
                                  channel=watch.channel, title=f"Watch: {title}",
                                  lines=[why, f"Watched every {every}."],
                                  started_at=snapshot.taken_at - 1, source="watch",
                                  trigger="watch", icon=":eyes:")
            elif state == OK and previous != OK and incident is not None \
                    and incident.status == OPEN:
                await follow_up(ctx, job, incident, resolved=True,
                                note="The watch's verdict is back to normal.")
        await ctx.redis.set(keys.watch_state(service), state)
    return f"tick_{state.replace(' ', '_')}"


async def list_ticks(redis: aioredis.Redis, service: str) -> list[tuple[int, str]]:
    """(slot, snapshot id) of every tick run for ``service``, oldest slot first.

    Sorted by slot, not by when each finished: replicas run ticks concurrently, and a
    slow capture can finish after the next slot's.
    """
    rows = await redis.lrange(keys.watch_ticks(service), 0, -1)
    out = []
    for row in rows:
        slot, _, snapshot_id = row.decode().partition(":")
        out.append((int(slot), snapshot_id))
    return sorted(out, key=lambda tick: tick[0])


def require_watch(watch: Watch | None, service: str) -> Watch:
    if watch is None:
        raise NotFoundError(f"`{service}` is not watched.", hint="`/heap watches` lists watches.")
    return watch
