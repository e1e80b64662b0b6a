"""`/heap leaks SERVICE --sample NxD` as scheduled captures, not a held command slot.

A sampling used to sleep between its captures inside the command, holding one of
the Slack runner's few slots for up to 15 minutes (eight of them took every slot).
Now the command only reserves and records the sampling here; each capture is a
short job that the worker runs when it is due (the scheduler moves due samplings
from the ``due`` sorted set onto the job queue), and the last one posts the
verdict where the command was asked.

Caps, checked atomically in one Lua script (all keys share the hash tag
``{sampling}``, so it also runs on Redis Cluster): samplings in progress per
user, per service (one at a time: a second asker is told when the running one
ends), heapbot-wide, and the span of one sampling. A reservation expires by
itself a few minutes after its planned end, so a replica dying mid-sampling does
not lock anyone out for good.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import asdict, dataclass

import redis.asyncio as aioredis

from bot import keys
from bot.errors import HeapbotError
from bot.jobs import QueueSettings
from bot.units import format_about

PREFIX = keys.SAMPLING_PREFIX  # one {sampling} hash tag: the scripts touch several keys
DUE = PREFIX + "due"  # zset: sampling id → when its next capture is due
ACTIVE = PREFIX + "active"  # zset: sampling id → when its reservation lapses
GRACE_SECONDS = 300.0  # a reservation outlives the planned end by this much (slow captures)

# KEYS: active, user zset, service key, record, due.
# ARGV: now, id, expires_at, max_per_user, max_active, record JSON, ttl_ms.
# Returns {"ok"} or {reason, detail}.
_RESERVE_LUA = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
local running = redis.call('GET', KEYS[3])
if running then
  local id, until_ = string.match(running, '^(%S+) (%S+)$')
  if id and tonumber(until_) > tonumber(ARGV[1]) then
    return {'service', id}
  end
end
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[4]) then
  local soonest = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
  return {'user', soonest[2] or ARGV[1]}
end
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[5]) then
  return {'busy', ''}
end
redis.call('SET', KEYS[3], ARGV[2] .. ' ' .. ARGV[3], 'PX', ARGV[7])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[7])
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[2])
redis.call('SET', KEYS[4], ARGV[6], 'PX', ARGV[7])
redis.call('ZADD', KEYS[5], ARGV[1], ARGV[2])
return {'ok', ''}
"""

# KEYS: active, user zset, service key, record, due. ARGV: id.
_RELEASE_LUA = """
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[5], ARGV[1])
local running = redis.call('GET', KEYS[3])
if running and string.match(running, '^(%S+) ') == ARGV[1] then redis.call('DEL', KEYS[3]) end
redis.call('DEL', KEYS[4])
return 1
"""


class SamplingRefusedError(HeapbotError):
    """A sampling that a cap does not allow now; the message says when it can start."""


@dataclass(slots=True)
class Sampling:
    """One ``--sample NxD`` request: where its verdict goes, and how far it got."""

    service: str
    count: int
    interval_seconds: float
    user_id: str = ""
    channel: str = ""
    thread_ts: str = ""  # the thread of the command's reply, once it is posted
    created_at: float = 0.0
    taken: int = 0
    id: str = ""

    @property
    def span_seconds(self) -> float:
        return (self.count - 1) * self.interval_seconds

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> Sampling:
        data = json.loads(text)
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


def _keys(sampling: Sampling) -> list[str]:
    return [ACTIVE, f"{PREFIX}user:{sampling.user_id or '-'}",
            f"{PREFIX}service:{sampling.service}", f"{PREFIX}run:{sampling.id}", DUE]


async def start(redis: aioredis.Redis, sampling: Sampling,
                settings: QueueSettings | None = None, now: float | None = None) -> Sampling:
    """Reserve the caps and schedule the first capture now; SamplingRefusedError when full.

    The caps are ``settings.sample_max_*`` (HEAPBOT_SAMPLE_MAX_PER_USER, …_ACTIVE, …_SECONDS).
    """
    settings = settings or QueueSettings()
    now = time.time() if now is None else now
    if sampling.span_seconds > settings.sample_max_seconds:
        raise SamplingRefusedError(
            f"A sampling may span at most {format_about(settings.sample_max_seconds)}; "
            f"{sampling.count} captures {sampling.interval_seconds:g}s apart span "
            f"{format_about(sampling.span_seconds)}.",
            hint="Take fewer captures or put them closer together, e.g. `--sample 3x30s`.")
    sampling.id = sampling.id or secrets.token_hex(6)
    sampling.created_at = sampling.created_at or now
    expires_at = now + sampling.span_seconds + GRACE_SECONDS
    ttl_ms = int((expires_at - now) * 1000)
    reason, detail = await redis.eval(
        _RESERVE_LUA, 5, *_keys(sampling), f"{now:.6f}", sampling.id, f"{expires_at:.6f}",
        settings.sample_max_per_user, settings.sample_max_active, sampling.to_json(), ttl_ms)
    reason = reason.decode() if isinstance(reason, bytes) else str(reason)
    detail = detail.decode() if isinstance(detail, bytes) else str(detail)
    if reason == "ok":
        return sampling
    if reason == "service":
        running = await load(redis, detail)
        when = ""
        if running is not None:
            left = running.created_at + running.span_seconds - now
            when = f", done in about {format_about(left)}"
        raise SamplingRefusedError(
            f"`{sampling.service}` is already being sampled{when}; its verdict is posted where "
            "that sampling was asked.",
            hint=f"Afterwards `/heap leaks {sampling.service}` judges those captures too.")
    if reason == "user":
        raise SamplingRefusedError(
            f"You already have {settings.sample_max_per_user} samplings running, the most heapbot "
            "runs for one person.",
            hint=f"The next can start once one has posted its verdict (the first lapses in "
                 f"about {format_about(float(detail) - GRACE_SECONDS - now)}).")
    raise SamplingRefusedError(
        f"heapbot is already running {settings.sample_max_active} samplings, its limit.",
        hint="Try again in a few minutes, or run `/heap leaks SERVICE` on the stored captures.")


async def load(redis: aioredis.Redis, sampling_id: str) -> Sampling | None:
    """The sampling ``sampling_id``, or None once it finished or lapsed."""
    data = await redis.get(f"{PREFIX}run:{sampling_id}")
    return Sampling.from_json(data) if data else None


async def save(redis: aioredis.Redis, sampling: Sampling) -> None:
    """Record progress (``taken``, ``thread_ts``); keeps the reservation's expiry."""
    await redis.set(f"{PREFIX}run:{sampling.id}", sampling.to_json(), xx=True, keepttl=True)


async def set_thread(redis: aioredis.Redis, sampling_id: str, channel: str, ts: str) -> None:
    """Where the command's reply was posted: the verdict goes into that thread."""
    sampling = await load(redis, sampling_id)
    if sampling is None:
        return
    sampling.channel, sampling.thread_ts = channel, ts
    await save(redis, sampling)


async def schedule(redis: aioredis.Redis, sampling_id: str, at: float) -> None:
    """Make the next capture of ``sampling_id`` due at ``at`` (unix seconds)."""
    await redis.zadd(DUE, {sampling_id: at})


async def take_due(redis: aioredis.Redis, now: float | None = None,
                   limit: int = 50) -> list[str]:
    """Ids of samplings whose next capture is due; each id goes to one caller only."""
    now = time.time() if now is None else now
    due = await redis.zrangebyscore(DUE, "-inf", now, start=0, num=limit)
    taken = []
    for raw in due:
        sampling_id = raw.decode() if isinstance(raw, bytes) else str(raw)
        if await redis.zrem(DUE, sampling_id):  # ZREM is the lease: one replica removes it
            taken.append(sampling_id)
    return taken


async def finish(redis: aioredis.Redis, sampling: Sampling) -> None:
    """Release the sampling's caps and forget it."""
    await redis.eval(_RELEASE_LUA, 5, *_keys(sampling), sampling.id)
