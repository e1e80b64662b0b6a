"""One typed payload per job kind, used on both ends of the queue.

Webhooks and the watch scheduler build these and enqueue them; the worker's
runners read them back with :meth:`JobPayload.of`. A payload that does not fit
its model (an old or hand-written job) fails with one clear message and goes to
the dead-letter stream after its retries, instead of a ``KeyError`` mid-thread.
Unknown keys are ignored so a newer replica's extra fields do not break an older one.
"""

from __future__ import annotations

from typing import ClassVar, Final, Literal, Self

from pydantic import BaseModel, ConfigDict, ValidationError

from bot.errors import HeapbotError
from bot.jobs import Job, JobQueue

FIRING: Final = "firing"
RESOLVED: Final = "resolved"


class JobPayload(BaseModel):
    """Base of the job payloads: ``KIND`` names the job kind on the stream."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    KIND: ClassVar[str] = ""

    @classmethod
    def of(cls, job: Job) -> Self:
        """The typed payload of ``job``; HeapbotError when it does not fit this kind."""
        try:
            return cls.model_validate(job.payload)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ())) or "payload"
            raise HeapbotError(f"The {job.kind} job {job.id} has an unreadable payload "
                               f"({where}: {first.get('msg', 'invalid')}).") from None

    async def enqueue(self, queue: JobQueue, dedupe_key: str | None = None) -> str | None:
        """Queue this payload as a job of its kind; None when ``dedupe_key`` was seen."""
        return await queue.enqueue(self.KIND, self.model_dump(mode="json"),
                                   dedupe_key=dedupe_key)


class AlertJob(JobPayload):
    """A firing or resolved alert from Alertmanager or PagerDuty, for one service."""

    KIND: ClassVar[str] = "alert"
    source: str
    service: str
    status: Literal["firing", "resolved"] = FIRING
    incident_key: str
    title: str = "alert"
    severity: str = ""
    summary: str = ""
    starts_at: float | None = None
    alerts: int = 1
    link: str = ""


class DeployJob(JobPayload):
    """A deploy marker sent to /hooks/deploy."""

    KIND: ClassVar[str] = "deploy"
    service: str
    version: str
    by: str = "webhook"


class CaptureJob(JobPayload):
    """A capture asked for on /hooks/capture."""

    KIND: ClassVar[str] = "capture"
    service: str
    reason: str = ""
    by: str = "webhook"


class WatchTickJob(JobPayload):
    """One scheduled tick of a watch (slot = time // interval)."""

    KIND: ClassVar[str] = "watch_tick"
    service: str
    slot: int
    interval_seconds: float


class SampleJob(JobPayload):
    """One capture of a ``/heap leaks SERVICE --sample NxD`` (bot/sampling.py holds the plan)."""

    KIND: ClassVar[str] = "sample"
    id: str
    step: int = 0
