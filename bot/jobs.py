"""A durable job queue on a Redis Stream, shared by every heapbot replica.

Webhooks only validate and enqueue; workers (bot/worker.py) do the slow part.
Delivery is at-least-once: a job stays in the consumer group's pending list
until the worker acks it, after its effects are durable. A replica that dies
mid-job leaves the entry pending, and another replica takes it over with
XAUTOCLAIM once it has been idle long enough. A job delivered too many times
(a poison job) moves to a dead-letter stream instead of looping forever.
Duplicate deliveries of one webhook are dropped with a SET NX dedupe key that
is set in the same Lua script as the XADD, so a job is never half-enqueued.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, TypeVar

import redis.asyncio as aioredis
from pydantic import Field, field_validator
from pydantic_settings import NoDecode
from redis.exceptions import RedisError, ResponseError
from redis.typing import EncodableT, FieldT, StreamIdT

from bot import keys
from bot.errors import StoreUnavailableError
from bot.metrics import JOBS, QUEUE_DEPTH, redis_error
from bot.redisconn import store_errors
from bot.settings import EnvSettings

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Awaitable[Any]])

STREAM = keys.JOB_STREAM  # heapbot:{jobs}: one hash tag for every key of the queue (Cluster)
DEAD_LETTER = keys.JOB_DEAD_LETTER
GROUP = "heapbot-workers"

# KEYS[1] stream, KEYS[2] (optional) dedupe key; ARGV: ttl_ms, maxlen, field/value pairs.
# Both keys carry the {jobs} hash tag: one Cluster slot, so the script may touch both.
_ENQUEUE_LUA = """
if #KEYS > 1 then
  if not redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[1]) then
    return false
  end
end
local args = {KEYS[1], 'MAXLEN', '~', ARGV[2], '*'}
for i = 3, #ARGV do args[#args + 1] = ARGV[i] end
local id = redis.call('XADD', unpack(args))
if #KEYS > 1 then redis.call('SET', KEYS[2], id, 'XX', 'KEEPTTL') end
return id
"""


# Record a step of a job still pending: KEYS stream, progress hash (one {jobs} slot); ARGV
# group, job id, step, value, TTL seconds. Returns 1 when recorded.
_RECORD_STEP = """
if #redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1) == 0 then return 0 end
redis.call('HSET', KEYS[2], ARGV[3], ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[5])
return 1
"""


class QueueSettings(EnvSettings):
    """Knobs of the queue, webhooks, paged threads and watches (environment variables).

    Kept apart from bot.settings (the queue's knobs do not concern the other
    surfaces); tests pass their own instance.
    """

    claim_idle_seconds: float = Field(60.0, gt=0, validation_alias="HEAPBOT_JOB_CLAIM_IDLE_SECONDS")
    max_deliveries: int = Field(5, ge=1, validation_alias="HEAPBOT_JOB_MAX_DELIVERIES")
    concurrency: int = Field(4, ge=1, le=64, validation_alias="HEAPBOT_JOB_CONCURRENCY")
    dedupe_seconds: float = Field(3600.0, gt=0, validation_alias="HEAPBOT_WEBHOOK_DEDUPE_SECONDS")
    consumer_name: str = Field("", validation_alias="HEAPBOT_WORKER_NAME")
    alert_service_labels: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["service", "app", "job", "app_kubernetes_io_name", "container"],
        validation_alias="HEAPBOT_ALERT_SERVICE_LABELS",
    )
    alert_channel: str = Field("", validation_alias="HEAPBOT_ALERT_CHANNEL")
    watch_min_interval_seconds: float = Field(
        60.0, gt=0, validation_alias="HEAPBOT_WATCH_MIN_INTERVAL_SECONDS"
    )
    watch_poll_seconds: float = Field(5.0, gt=0, validation_alias="HEAPBOT_WATCH_POLL_SECONDS")
    watch_goroutine_threshold: int = Field(
        10_000, ge=1, validation_alias="HEAPBOT_WATCH_GOROUTINE_THRESHOLD"
    )
    max_body_bytes: int = Field(1024 * 1024, ge=1024, validation_alias="HEAPBOT_WEBHOOK_MAX_BYTES")
    # Looked at per Alertmanager notification; the rest is counted in the answer, not read.
    alert_max_alerts: int = Field(200, ge=1, validation_alias="HEAPBOT_ALERT_MAX_ALERTS")
    alert_max_labels: int = Field(64, ge=1, validation_alias="HEAPBOT_ALERT_MAX_LABELS")
    # New paged threads per service per window; more alerts reply in the newest thread.
    alert_max_new_incidents: int = Field(
        3, ge=1, validation_alias="HEAPBOT_ALERT_MAX_NEW_INCIDENTS")
    alert_incident_window_seconds: float = Field(
        600.0, gt=0, validation_alias="HEAPBOT_ALERT_INCIDENT_WINDOW_SECONDS")
    # `/heap leaks --sample` (bot/sampling.py): samplings in progress per person and
    # heapbot-wide, and the longest span of one.
    sample_max_per_user: int = Field(2, ge=1, validation_alias="HEAPBOT_SAMPLE_MAX_PER_USER")
    sample_max_active: int = Field(20, ge=1, validation_alias="HEAPBOT_SAMPLE_MAX_ACTIVE")
    sample_max_seconds: float = Field(900.0, gt=0, validation_alias="HEAPBOT_SAMPLE_MAX_SECONDS")

    @field_validator("alert_service_labels", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    def queue(self, redis: aioredis.Redis) -> JobQueue:
        """A JobQueue on ``redis`` with these settings."""
        return JobQueue(redis, claim_idle_ms=int(self.claim_idle_seconds * 1000),
                        max_deliveries=self.max_deliveries, dedupe_ttl_s=self.dedupe_seconds)


def _guarded(operation: str) -> Callable[[F], F]:
    """The store boundary for a JobQueue method: Redis failures leave as StoreErrors."""
    def wrap(method: F) -> F:
        @functools.wraps(method)
        async def guarded(self: JobQueue, *args: Any, **kwargs: Any) -> Any:
            async with store_errors(operation, self.location):
                return await method(self, *args, **kwargs)
        return guarded  # type: ignore[return-value]
    return wrap


class JobTakenOver(Exception):
    """This replica no longer holds the job: another took it over while this one stalled.

    Not a HeapbotError: no person sees it. The worker drops its copy of the job (no ack,
    no retry) and leaves it to the replica that holds it now.
    """


@dataclass(slots=True)
class Job:
    """One delivery of a queued job."""

    id: str
    kind: str
    payload: dict[str, Any]
    enqueued_at: float
    deliveries: int = 1
    raw: dict[str, str] = field(default_factory=dict)


def as_text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _job_from_entry(entry_id: Any, fields: Mapping[Any, Any] | None) -> Job | None:
    """A Job from a stream entry; None for an entry trimmed away while pending."""
    if not fields:
        return None
    raw = {as_text(k): as_text(v) for k, v in fields.items()}
    try:
        payload = json.loads(raw.get("payload", "{}"))
    except json.JSONDecodeError:
        payload = {"_unreadable": raw.get("payload", "")}
    return Job(
        id=as_text(entry_id),
        kind=raw.get("kind", ""),
        payload=payload if isinstance(payload, dict) else {"value": payload},
        enqueued_at=float(raw.get("enqueued_at", "0") or 0),
        raw=raw,
    )


class JobQueue:
    """The `heapbot:jobs` stream and its consumer group.

    ``claim_idle_ms``: how long a pending job must sit untouched before another
    replica may take it over (keep it above the longest job; short in tests).
    ``max_deliveries``: deliveries after which a job goes to the dead-letter stream.
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        stream: str = STREAM,
        group: str = GROUP,
        dead_letter: str = DEAD_LETTER,
        claim_idle_ms: int = 60_000,
        max_deliveries: int = 5,
        dedupe_ttl_s: float = 3600,
        maxlen: int = 10_000,
        location: str = "Redis",
    ) -> None:
        self.redis = redis
        self.location = location
        self.stream = stream
        self.group = group
        self.dead_letter = dead_letter
        self.claim_idle_ms = claim_idle_ms
        self.max_deliveries = max_deliveries
        self.dedupe_ttl_ms = int(dedupe_ttl_s * 1000)
        self.maxlen = maxlen
        self._enqueue_script = redis.register_script(_ENQUEUE_LUA)
        self._group_ready = False

    @_guarded("create the job group")
    async def ensure_group(self) -> None:
        """Create the stream and consumer group if they do not exist yet."""
        if self._group_ready:
            return
        try:
            await self.redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    async def enqueue(
        self, kind: str, payload: Mapping[str, Any], dedupe_key: str | None = None
    ) -> str | None:
        """Add a job; returns its id, or None when ``dedupe_key`` was seen recently."""
        fields = {
            "kind": kind,
            "payload": json.dumps(dict(payload), separators=(",", ":"), default=str),
            "enqueued_at": f"{time.time():.6f}",
        }
        argv: list[Any] = [self.dedupe_ttl_ms, self.maxlen]
        for key, value in fields.items():
            argv += [key, value]
        names = [self.stream, keys.job_dedupe(dedupe_key)] if dedupe_key else [self.stream]
        try:
            await self.ensure_group()
            job_id = await self._enqueue_script(keys=names, args=argv)
        except RedisError as exc:
            redis_error("enqueue", exc)
            raise StoreUnavailableError(
                f"heapbot could not queue the {kind} job: Redis failed ({type(exc).__name__}).",
                hint="Check that Redis is up (REDIS_URL); the sender may retry.",
            ) from None
        if job_id is None:
            JOBS.labels(kind=kind, outcome="duplicate").inc()
            log.info("dropped duplicate %s job", kind, extra={"dedupe_key": dedupe_key})
            return None
        JOBS.labels(kind=kind, outcome="enqueued").inc()
        return as_text(job_id)

    async def _on_group(self, command: Any) -> Any:
        """Run ``command()``; when the stream or group is gone, recreate it and run it again.

        A Redis restarted without its data (or a FLUSHDB) loses the group; without this a
        worker would log NOGROUP forever and never see a new job.
        """
        await self.ensure_group()
        try:
            return await command()
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            log.warning("job stream %s lost its consumer group; creating it again", self.stream)
            self._group_ready = False
            await self.ensure_group()
            return await command()

    @_guarded("read jobs")
    async def read(self, consumer: str, count: int = 1, block_ms: int = 1000) -> list[Job]:
        """New jobs for ``consumer`` (blocks up to ``block_ms``)."""
        response = await self._on_group(lambda: self.redis.xreadgroup(
            self.group, consumer, {self.stream: ">"}, count=count, block=block_ms
        ))
        jobs: list[Job] = []
        for _stream, entries in response or []:
            for entry_id, fields in entries:
                job = _job_from_entry(entry_id, fields)
                if job is None:
                    await self.redis.xack(self.stream, self.group, entry_id)
                else:
                    jobs.append(job)
        return jobs

    @_guarded("take over stale jobs")
    async def claim_stale(self, consumer: str, count: int = 10,
                          running: Collection[str] = ()) -> list[Job]:
        """Take over jobs left pending by a replica that died or hung.

        Jobs past ``max_deliveries`` go to the dead-letter stream instead. ``running``: the
        ids ``consumer`` is running itself. XAUTOCLAIM hands those back too when their
        heartbeat came late (a stalled event loop) and counts a delivery; that is no new
        delivery, so the count is put back and they are neither returned nor dead-lettered
        (a stall of 0.2 s dead-lettered a job that was still running, as "delivered 3 times").
        """
        response = await self._on_group(lambda: self.redis.xautoclaim(
            self.stream, self.group, consumer, self.claim_idle_ms, start_id="0-0", count=count
        ))
        entries = response[1] if len(response) > 1 else []
        jobs: list[Job] = []
        for entry in entries:
            entry_id, fields = entry if entry else (None, None)
            if entry_id is None:
                continue
            job = _job_from_entry(entry_id, fields)
            if job is None:  # trimmed from the stream while pending: nothing left to run
                await self.redis.xack(self.stream, self.group, entry_id)
                continue
            job.deliveries = await self._delivery_count(job.id)
            if job.id in running:  # ours, still running here: undo the count XAUTOCLAIM added
                await self.redis.xclaim(self.stream, self.group, consumer, 0, [entry_id],
                                        retrycount=max(1, job.deliveries - 1), justid=True)
                continue
            if job.deliveries > self.max_deliveries:
                await self.dead_letter_job(job, f"delivered {job.deliveries} times")
                continue
            JOBS.labels(kind=job.kind, outcome="reclaimed").inc()
            log.warning("took over job %s (%s), delivery %d", job.id, job.kind, job.deliveries)
            jobs.append(job)
        return jobs

    @_guarded("look up a job")
    async def holder(self, job_id: str) -> str | None:
        """The consumer holding ``job_id`` (running it, or to retry it); None once it was
        acked or dead-lettered (and for an id never read)."""
        pending = await self._on_group(lambda: self.redis.xpending_range(
            self.stream, self.group, job_id, job_id, 1))
        return as_text(pending[0]["consumer"]) if pending else None

    async def is_pending(self, job_id: str) -> bool:
        """Whether ``job_id`` was read and is not finished: running, or waiting to be retried."""
        return await self.holder(job_id) is not None

    async def check_held(self, job: Job, consumer: str) -> None:
        """Raise JobTakenOver unless ``consumer`` still holds ``job``.

        Called before each visible effect (a post, a capture) and before the ack: a replica
        that stalled past ``claim_idle_ms`` lost the job to another, and must neither repeat
        what that one does nor ack (and so delete the progress of) the job it is running.
        """
        holder = await self.holder(job.id)
        if holder != consumer:
            raise JobTakenOver(f"job {job.id} is held by {holder or 'nobody (finished)'} now, "
                               f"not by {consumer}")

    async def _delivery_count(self, job_id: str) -> int:
        pending = await self.redis.xpending_range(self.stream, self.group, job_id, job_id, 1)
        return int(pending[0]["times_delivered"]) if pending else 1

    @_guarded("keep jobs claimed")
    async def heartbeat(self, consumer: str, running: Collection[str]) -> None:
        """Reset the idle time of ``consumer``'s running jobs so no other replica takes them.

        Only jobs still pending for this consumer: one taken over while it stalled stays
        taken over.
        """
        mine = await self.redis.xpending_range(self.stream, self.group, "-", "+", 1000,
                                               consumername=consumer)
        ids: list[StreamIdT] = [p["message_id"] for p in mine
                                if as_text(p["message_id"]) in running]
        if ids:
            await self.redis.xclaim(self.stream, self.group, consumer, 0, ids, justid=True)

    @_guarded("acknowledge a job")
    async def ack(self, job: Job, outcome: str = "done") -> None:
        """Mark a job finished; call only once its effects are durable."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xack(self.stream, self.group, job.id)
            pipe.xdel(self.stream, job.id)
            pipe.delete(keys.job_progress(job.id))
            await pipe.execute()
        JOBS.labels(kind=job.kind, outcome=outcome).inc()

    @_guarded("dead-letter a job")
    async def dead_letter_job(self, job: Job, reason: str) -> None:
        """Move a job that keeps failing to the dead-letter stream, with the reason."""
        fields: dict[FieldT, EncodableT] = dict(
            (job.raw or {"kind": job.kind, "payload": json.dumps(job.payload)}).items())
        fields.update({"job_id": job.id, "reason": reason[:500], "dead_at": f"{time.time():.3f}"})
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xadd(self.dead_letter, fields, maxlen=self.maxlen, approximate=True)
            pipe.xack(self.stream, self.group, job.id)
            pipe.xdel(self.stream, job.id)
            await pipe.execute()
        JOBS.labels(kind=job.kind, outcome="dead").inc()
        log.error("job %s (%s) moved to %s: %s", job.id, job.kind, self.dead_letter, reason)

    async def fail(self, job: Job, reason: str) -> bool:
        """A job raised: dead-letter it after max deliveries, else leave it to be retried.

        Returns True when the job went to the dead-letter stream.
        """
        if job.deliveries >= self.max_deliveries:
            await self.dead_letter_job(job, reason)
            return True
        JOBS.labels(kind=job.kind, outcome="failed").inc()
        return False

    @_guarded("measure the job queue")
    async def depth(self) -> int:
        """Jobs not yet finished: waiting to be read plus pending (read, not acked)."""
        try:
            groups = await self.redis.xinfo_groups(self.stream)
        except ResponseError:
            return 0
        depth = 0
        for group in groups:
            if as_text(group.get("name", "")) != self.group:
                continue
            depth += int(group.get("pending", 0) or 0)
            lag = group.get("lag")
            if lag is None:  # Redis < 7 has no lag: count entries after last-delivered-id
                last = as_text(group.get("last-delivered-id", "0-0"))
                lag = len(await self.redis.xrange(self.stream, min=f"({last}",
                                                  count=10_000) or [])
            depth += int(lag)
        QUEUE_DEPTH.set(depth)
        return depth

    @_guarded("read dead jobs")
    async def dead_jobs(self, count: int = 100) -> list[dict[str, str]]:
        """Entries of the dead-letter stream (for operators and tests)."""
        entries = await self.redis.xrange(self.dead_letter, count=count) or []
        return [{as_text(k): as_text(v) for k, v in (fields or {}).items()}
                for _id, fields in entries]

    # Progress of multi-step jobs, so a retried job skips steps already done.

    @_guarded("read a job's progress")
    async def progress(self, job: Job) -> dict[str, str]:
        """Steps of this job already done, with what each recorded (e.g. a message ts)."""
        data = await self.redis.hgetall(keys.job_progress(job.id))
        return {as_text(k): as_text(v) for k, v in data.items()}

    @_guarded("record a job's step")
    async def record_step(self, job: Job, step: str, value: str = "1") -> None:
        """Record that ``step`` of ``job`` is done (kept a week; removed on ack).

        Only while the job is pending (one script): a replica that lost the job while it
        stalled, back after the new holder acked it, writes no progress hash back.
        """
        await self.redis.eval(_RECORD_STEP, 2, self.stream, keys.job_progress(job.id),
                              self.group, job.id, step, value, 7 * 24 * 3600)
