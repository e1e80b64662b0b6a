"""Watches: capture a service on a schedule and page when its verdict turns bad.

``/heap watch payments every 15m [in #channel]`` stores a watch in Redis
(bot/watchlist.py), so it survives restarts. Every replica runs the
scheduler loop; time is cut into slots of the watch's interval and a slot's
tick is enqueued only by the replica that moves the watch's cursor past it (one
script, which also checks the watch exists), so each tick runs once across replicas.
Unwatch deletes the cursor with the watch (one script), so a watch made again starts a
fresh schedule: its first slot ticks even inside the slot the old watch last ticked (a
per-slot lease used to outlive the watch and skip it). A scheduler that was late (a
stalled event loop, a failover) enqueues the slots it missed, up to ``CATCH_UP_SLOTS``,
so no tick is lost to a slow poll. A tick captures (trigger "watch"), runs the leak analysis,
and when the verdict turns to "leak likely" or the goroutines cross the
threshold it opens a thread like an alert's — once per turn, not every tick.

Once per turn holds whatever happens to the tick that turns the verdict. The tick
decides (one script: verdict, recovery streak, and which job owns the turn) before it
posts anything, so a second tick never reads a stale "ok": not when the first tick's
replica froze past its lock's TTL, nor while the first tick's job waits for a retry
after Slack refused a post mid-thread. Only the turn's job (its retries included)
posts the turn's thread or close; if that job dies for good (dead-lettered), the next
tick takes the turn over, so a turn is not left without its thread. Each slot is
logged once (one script keyed by the slot), so a tick run again logs nothing twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from bot import keys
from bot.alerts.context import WorkContext
from bot.alerts.incidents import OPEN, incident_lock, load_incident
from bot.alerts.lifecycle import stop_requested, tracked
from bot.alerts.paged import capture_step, follow_up, open_thread
from bot.alerts.payloads import WatchTickJob
from bot.errors import StoreError
from bot.jobs import Job, as_text
from bot.redisconn import store_errors
from bot.units import format_duration
from bot.watchlist import (
    ENDED_TICK_LOG_SECONDS,
    Watch,
    WatchStore,
    channel_allowed,
)

log = logging.getLogger(__name__)

# A bad verdict is called back to normal only after this many good ticks in a row, so a
# verdict that flickers (one quiet capture in a leak) does not close and reopen threads.
RECOVERY_TICKS = 3
OK = "ok"
UNWATCHED = "unwatched"
# Slots a late scheduler still enqueues; older ones (the bot was down) are logged as missed.
CATCH_UP_SLOTS = 10

# The tick log keeps this many ticks per watch.
TICK_LOG_LENGTH = 1000

# Log a tick once per slot: KEYS[1] the log, KEYS[2] the watch hash; ARGV slot, snapshot id,
# length, service, TTL of an ended watch's log. Returns 1 when logged, 0 when the slot
# already was (a retry, or a copy of the job on another replica). A tick still running
# after an unwatch logs too (its capture is accounted for), but the log keeps the TTL the
# unwatch gave it; a live watch's log has none. Nothing else (the job's progress lives in
# the {jobs} slot) must be written with it: a crash right after it leaves a retry nothing
# to duplicate.
_LOG_TICK = """
local prefix = ARGV[1] .. ':'
for _, row in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
  if string.sub(row, 1, #prefix) == prefix then return 0 end
end
redis.call('RPUSH', KEYS[1], prefix .. ARGV[2])
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[3]), -1)
if redis.call('HEXISTS', KEYS[2], ARGV[4]) == 0 then
  redis.call('EXPIRE', KEYS[1], ARGV[5])
else
  redis.call('PERSIST', KEYS[1])
end
return 1
"""

# A tick's decision, before it posts anything. KEYS: state, ok slots, turn, the watch hash,
# the streak's pre-3818022 key (deleted: it has no TTL and nothing reads it any more);
# ARGV: verdict, job id, slot, RECOVERY_TICKS, the id of a dead turn job to take over ('' if
# none), service. Returns {state, previous state, turn}, or {'unwatched'} when the watch is
# gone: checked in the same script, since an unwatch between a separate check and this
# would leave it to decide on wiped state ("ok" before it: a new turn, a thread opened
# after "Stopped watching", and a state key left for a later watch to inherit).
# A job that already made the current turn (its
# retry, or a copy of it) changes nothing: its decision stands. A tick turns the verdict
# when bad follows ok, or ok follows bad RECOVERY_TICKS distinct slots in a row; the
# turning job's id goes into the turn key, and only that job posts the turn's thread.
_DECIDE = """
if redis.call('HEXISTS', KEYS[4], ARGV[6]) == 0 then return {'unwatched'} end
redis.call('DEL', KEYS[5])
local previous = redis.call('GET', KEYS[1]) or 'ok'
local turn = redis.call('GET', KEYS[3]) or ''
local job = ARGV[2]
if turn == job or turn == job .. ' done' then return {previous, previous, turn} end
local state = ARGV[1]
if state == 'ok' and previous ~= 'ok' then
  redis.call('SADD', KEYS[2], ARGV[3])
  if redis.call('SCARD', KEYS[2]) < tonumber(ARGV[4]) then state = previous end
else
  redis.call('DEL', KEYS[2])
end
if (state == 'ok') ~= (previous == 'ok') or (ARGV[5] ~= '' and turn == ARGV[5]) then
  redis.call('SET', KEYS[3], job)
  turn = job
  if state == 'ok' then redis.call('DEL', KEYS[2]) end
end
redis.call('SET', KEYS[1], state)
return {state, previous, turn}
"""

# The turn's thread (or close) is posted: mark it done, if the turn is still this job's.
_TURN_DONE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('SET', KEYS[1], ARGV[1] .. ' done') end
return 1
"""

# Move the cursor (KEYS[1], ms) forward to ARGV[1]; returns where it was (-1 when unset).
# The replica that moves it owns the slots in between, so a slot is handed out once. A
# watch removed meanwhile (KEYS[2] has no ARGV[2]) gets no cursor (it would outlive the
# unwatch, and a watch made again would start behind it): returns the target, so no slot.
_ADVANCE_CURSOR = """
if redis.call('HEXISTS', KEYS[2], ARGV[2]) == 0 then return ARGV[1] end
local cur = tonumber(redis.call('GET', KEYS[1]) or '-1')
local target = tonumber(ARGV[1])
if cur >= target then return tostring(cur) end
redis.call('SET', KEYS[1], ARGV[1])
return tostring(cur)
"""


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
            # The watch's creation time names this schedule: a dropped duplicate enqueue
            # (a retried script) is this schedule's, never a watch made again's first tick.
            schedule = int(watch.created_at * 1000)
            for slot in await self._due_slots(watch.service, interval, now):
                tick = WatchTickJob(service=watch.service, slot=slot, interval_seconds=interval)
                await tick.enqueue(self.ctx.queue,
                                   dedupe_key=f"watch:{watch.service}:{schedule}:{slot}")
                won.append((watch.service, slot))
        return won

    async def _due_slots(self, service: str, interval: float, now: float) -> list[int]:
        """The slots up to now that no replica has scheduled yet, oldest first.

        The cursor holds a slot's start time, not its number, so a watch re-created with
        another interval neither repeats nor skips ticks.
        """
        slot = int(now // interval)
        start_ms = int(slot * interval * 1000)
        previous = int(float(as_text(await self.ctx.redis.eval(
            _ADVANCE_CURSOR, 2, keys.watch_cursor(service), keys.WATCHES, start_ms,
            service))))
        if previous >= start_ms:
            return []
        if previous < 0:
            return [slot]
        first = int(previous // (interval * 1000)) + 1
        while first <= slot and int(first * interval * 1000) <= previous:
            first += 1
        if slot - first + 1 > CATCH_UP_SLOTS:
            log.warning("watch on %s: %d ticks were missed (the schedulers were down); "
                        "running the last %d", service, slot - first + 1 - CATCH_UP_SLOTS,
                        CATCH_UP_SLOTS)
            first = slot - CATCH_UP_SLOTS + 1
        return list(range(first, slot + 1))

    async def run(self) -> None:
        with tracked(f"watch scheduler {self.ctx.consumer}"):
            await self._run()

    async def _run(self) -> None:
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


async def log_tick(redis: aioredis.Redis, service: str, slot: int, snapshot_id: str) -> bool:
    """Log the tick of ``slot`` (its capture ``snapshot_id``); False if it was logged before."""
    async with store_errors("log a watch tick"):
        logged = await redis.eval(_LOG_TICK, 2, keys.watch_ticks(service), keys.WATCHES, slot,
                                  snapshot_id, TICK_LOG_LENGTH, service,
                                  ENDED_TICK_LOG_SECONDS)
    return bool(int(logged))


async def _dead_turn(ctx: WorkContext, service: str, job: Job) -> str:
    """The id of the job that owns the current turn if it died before finishing it, else ""."""
    async with store_errors("read a watch's turn"):
        raw = await ctx.redis.get(keys.watch_turn(service))
    turn = as_text(raw) if raw else ""
    if not turn or turn == job.id or turn.endswith(" done"):
        return ""
    if await ctx.queue.is_pending(turn):
        return ""  # running, or waiting for its retry: the turn is still its own
    log.warning("watch on %s: the tick job %s that turned the verdict ended without "
                "finishing its thread; tick job %s takes the turn over", service, turn, job.id)
    return turn


async def _decide(ctx: WorkContext, service: str, verdict: str, job: Job,
                  slot: int) -> tuple[str, bool]:
    """(the watch's state after this tick, whether this job owns the turn to post);
    ("unwatched", False) when the watch was removed (nothing is written then)."""
    dead = await _dead_turn(ctx, service, job)
    async with store_errors("record a watch's verdict"):
        decided = await ctx.redis.eval(
            _DECIDE, 5, keys.watch_state(service), keys.watch_ok_streak(service),
            keys.watch_turn(service), keys.WATCHES, keys.watch_legacy_ok_streak(service),
            verdict, job.id, slot, RECOVERY_TICKS, dead, service)
    if len(decided) == 1:
        return UNWATCHED, False
    state, _previous, turn = decided
    return as_text(state), as_text(turn) == job.id


async def run_tick(ctx: WorkContext, job: Job) -> str:
    """One watch tick: capture, judge, and open a thread when the verdict turns bad."""
    tick = WatchTickJob.of(job)
    service = tick.service
    watch = await WatchStore(ctx.redis).get(service)
    if watch is None:
        return UNWATCHED
    if not channel_allowed(ctx.runtime.registry, watch):
        log.warning("watch on %s skipped: it posts into %s, which is not one of the "
                    "service's allow_channels", service, watch.channel)
        return "refused_channel"
    snapshot = await capture_step(ctx, job, service, "watch", "watch")
    await log_tick(ctx.redis, service, tick.slot, snapshot.id)
    key = f"watch:{service}"
    # Ticks of one watch may overlap (slow capture, short interval, several replicas): the
    # lock keeps their posts apart, and the decision (made before posting, in Redis) makes
    # a turn page once even when a holder outlives its lock.
    async with incident_lock(ctx.redis, key, ctx.config.claim_idle_seconds):
        verdict, why = await _alarm(ctx, watch, snapshot)
        state, owns_turn = await _decide(ctx, service, verdict, job, tick.slot)
        if state == UNWATCHED:
            return UNWATCHED  # removed while this tick captured or judged: nothing to post
        if owns_turn and ctx.slack is not None and watch.channel:
            if state != OK:
                title = "Leak likely" if state == "leak likely" else "Goroutines above threshold"
                every = format_duration(watch.interval_seconds)
                await open_thread(ctx, job, service=service, incident_key=key,
                                  channel=watch.channel, title=f"Watch: {title}",
                                  lines=[why if verdict == state else "",
                                         f"Watched every {every}."],
                                  started_at=snapshot.taken_at - 1, source="watch",
                                  trigger="watch", icon=":eyes:")
            else:
                incident = await load_incident(ctx.redis, key)
                if incident is not None and incident.status == OPEN:
                    await follow_up(ctx, job, incident, resolved=True,
                                    note="The watch's verdict is back to normal.")
        if owns_turn:
            async with store_errors("record a watch's turn"):
                await ctx.redis.eval(_TURN_DONE, 1, keys.watch_turn(service),
                                     job.id)
    return f"tick_{state.replace(' ', '_')}"


async def list_ticks(redis: aioredis.Redis, service: str) -> list[tuple[int, str]]:
    """(slot, snapshot id) of every tick run for ``service``, oldest slot first.

    Sorted by slot, not by when each finished: replicas run ticks concurrently, and a
    slow capture can finish after the next slot's.
    """
    rows = await redis.lrange(keys.watch_ticks(service), 0, -1)
    out = []
    for row in rows:
        slot, _, snapshot_id = as_text(row).partition(":")
        out.append((int(slot), snapshot_id))
    return sorted(out, key=lambda tick: tick[0])

