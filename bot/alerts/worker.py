"""The job worker every heapbot replica runs: queue consumer plus watch scheduler.

Each replica is one consumer of the ``heapbot:jobs`` group. It reads new jobs,
runs a few at a time, acks each after its effects are durable, keeps its
running jobs from looking idle (XCLAIM to itself, which resets the idle
time), and periodically takes over jobs that another replica left pending
for longer than ``claim_idle_seconds`` (XAUTOCLAIM). Run it inside
``heapbot serve`` (bot/serve.py calls :func:`start_worker`) or alone
with ``python -m bot.alerts.worker``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

from redis.exceptions import RedisError
from slack_sdk.web.async_client import AsyncWebClient

from bot.alerts.context import WorkContext
from bot.alerts.lifecycle import stop_requested, tracked
from bot.alerts.paged import capture_step, handle_alert
from bot.alerts.payloads import CaptureJob, DeployJob
from bot.alerts.sampling import SampleScheduler, run_sample_step
from bot.alerts.watches import WatchScheduler, run_tick
from bot.errors import HeapbotError, StoreError
from bot.jobs import Job, JobQueue, JobTakenOver, QueueSettings
from bot.metrics import redis_error
from bot.runtime import Runtime
from bot.settings import Settings, get_settings
from bot.slack.client import build_web_client

log = logging.getLogger(__name__)

JobHandler = Callable[[WorkContext, Job], Awaitable[str]]


async def run_deploy(ctx: WorkContext, job: Job) -> str:
    """Record a deploy marker sent to /hooks/deploy."""
    deploy = DeployJob.of(job)
    await ctx.runtime.add_deploy(deploy.service, deploy.version, deploy.by)
    return "done"


async def run_capture(ctx: WorkContext, job: Job) -> str:
    """Take the capture asked for on /hooks/capture (stored like any other)."""
    capture = CaptureJob.of(job)
    by = f"{capture.by}: {capture.reason}".strip(": ")[:200]
    await capture_step(ctx, job, capture.service, "user", by)
    return "done"


HANDLERS: dict[str, JobHandler] = {
    "alert": handle_alert,
    "deploy": run_deploy,
    "capture": run_capture,
    "watch_tick": run_tick,
    "sample": run_sample_step,
}


async def stop_worker(task: asyncio.Task[Any], timeout: float = 30.0) -> bool:
    """Cancel a task from :func:`start_worker` and wait until it has really stopped.

    Bounded, so shutdown never hangs on a stuck job; returns False (and logs) when
    the task is still running after ``timeout`` seconds.
    """
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=timeout)
    if not done:
        log.error("worker %s did not stop within %.0f s", task.get_name(), timeout)
        return False
    if not task.cancelled() and task.exception() is not None:
        log.error("worker %s had crashed", task.get_name(), exc_info=task.exception())
    return True


def default_consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class Worker:
    """One replica's consumer loop; :meth:`run` until cancelled."""

    def __init__(self, ctx: WorkContext, handlers: dict[str, JobHandler] | None = None,
                 stop: asyncio.Event | None = None) -> None:
        self.ctx = ctx
        self.stop = stop or asyncio.Event()
        self.handlers = handlers or HANDLERS
        self.running: dict[str, asyncio.Task[None]] = {}
        self.slots = asyncio.Semaphore(ctx.config.concurrency)

    @property
    def queue(self) -> JobQueue:
        return self.ctx.queue

    async def process(self, job: Job) -> None:
        """Run one job; ack when it is done, dead-letter it when it keeps failing."""
        handler = self.handlers.get(job.kind)
        if handler is None:
            await self.queue.dead_letter_job(job, f"no handler for job kind {job.kind!r}")
            return
        started = time.monotonic()
        try:
            outcome = await handler(self.ctx, job)
        except asyncio.CancelledError:
            raise  # shutting down: the job stays pending and another replica takes it over
        except JobTakenOver as exc:
            log.warning("job %s (%s) stopped on %s: %s (this replica stalled; the one "
                        "holding the job finishes it)", job.id, job.kind, self.ctx.consumer, exc)
            return
        except HeapbotError as exc:
            log.warning("job %s (%s) failed: %s", job.id, job.kind, exc.user_message())
            if await self._still_held(job):
                await self.queue.fail(job, exc.user_message())
            return
        except Exception as exc:
            log.exception("job %s (%s) crashed", job.id, job.kind)
            if await self._still_held(job):
                await self.queue.fail(job, f"{type(exc).__name__}: {exc}")
            return
        if not await self._still_held(job):
            return  # acking would delete the progress of the replica running it now
        await self.queue.ack(job, outcome or "done")
        log.info("job %s (%s) %s in %.2fs", job.id, job.kind, outcome,
                 time.monotonic() - started)

    async def _still_held(self, job: Job) -> bool:
        """Whether this replica still holds ``job`` (False: another took it over; logged)."""
        try:
            await self.queue.check_held(job, self.ctx.consumer)
        except JobTakenOver as exc:
            log.warning("job %s (%s) finished on %s, but %s: not acked here",
                        job.id, job.kind, self.ctx.consumer, exc)
            return False
        return True

    def _start(self, job: Job) -> None:
        async def guarded() -> None:
            try:
                with tracked(f"job {job.id} ({job.kind}) of consumer {self.ctx.consumer}"):
                    await self.process(job)
            except (StoreError, RedisError, OSError) as exc:  # Redis went away: retried later
                if not isinstance(exc, StoreError):  # a StoreError was counted at the boundary
                    redis_error("job", exc)
                log.warning("job %s (%s): Redis error %s", job.id, job.kind, exc)
            finally:
                self.running.pop(job.id, None)
                self.slots.release()

        self.running[job.id] = asyncio.create_task(guarded(), name=f"job-{job.id}")

    async def _heartbeat(self) -> None:
        """Reset the idle time of running jobs so no other replica takes them over."""
        with tracked(f"job heartbeat {self.ctx.consumer}"):
            await self._heartbeat_loop()

    async def _heartbeat_loop(self) -> None:
        interval = self.ctx.config.claim_idle_seconds / 3
        while not stop_requested(self.stop):
            await asyncio.sleep(interval)
            if not self.running:
                continue
            try:
                await self.queue.heartbeat(self.ctx.consumer, set(self.running))
            except (StoreError, RedisError, OSError) as exc:
                log.warning("heartbeat failed: %s", exc)

    async def run(self) -> None:
        """Consume jobs until cancelled or ``stop`` is set; running jobs get a grace period."""
        with tracked(f"job consumer {self.ctx.consumer}"):
            await self._run()

    async def _run(self) -> None:
        while not stop_requested(self.stop):  # Redis may come up after heapbot: wait, do not die
            try:
                await self.queue.ensure_group()
                break
            except (StoreError, RedisError, OSError) as exc:
                if not isinstance(exc, StoreError):
                    redis_error("job_group", exc)
                log.warning("job queue unreachable (%s); retrying in 1 s", exc)
                await asyncio.sleep(1)
        heartbeat = asyncio.create_task(self._heartbeat(), name="job-heartbeat")
        claim_every = max(0.2, self.ctx.config.claim_idle_seconds / 2)
        next_claim = 0.0
        try:
            while not stop_requested(self.stop):
                await self.slots.acquire()
                self.slots.release()
                try:
                    jobs: list[Job] = []
                    # Take only what can start now: a job claimed or read but waiting for
                    # a slot is not in self.running, so no heartbeat keeps it, and another
                    # replica would take it over while it still waits here (run twice).
                    free = max(1, self.ctx.config.concurrency - len(self.running))
                    if time.monotonic() >= next_claim:
                        next_claim = time.monotonic() + claim_every
                        jobs = await self.queue.claim_stale(self.ctx.consumer, count=free,
                                                            running=set(self.running))
                    if not jobs:
                        block = int(min(1000, claim_every * 1000))
                        jobs = await self.queue.read(self.ctx.consumer, count=free,
                                                     block_ms=block)
                    await self.queue.depth()
                except (StoreError, RedisError, OSError) as exc:
                    if not isinstance(exc, StoreError):
                        redis_error("job_read", exc)
                    log.warning("job queue unreachable (%s); retrying in 1 s", exc)
                    await asyncio.sleep(1)
                    continue
                for job in jobs:
                    if stop_requested(self.stop):
                        break  # read but not started: it stays pending for another replica
                    if job.id in self.running:
                        continue
                    await self.slots.acquire()
                    self._start(job)
        finally:
            self.stop.set()  # the heartbeat stops even if its cancel below is swallowed
            heartbeat.cancel()
            await self._drain()
            await asyncio.wait({heartbeat}, timeout=5)

    async def _drain(self, grace_seconds: float = 10) -> None:
        """On shutdown give running jobs a moment, then leave the rest pending for others."""
        tasks = list(self.running.values())
        if not tasks:
            return
        _done, pending = await asyncio.wait(tasks, timeout=grace_seconds)
        for task in pending:
            task.cancel()
        if pending:  # bounded: a job that ignores its cancel must not hold up shutdown
            _done, stuck = await asyncio.wait(pending, timeout=5)
            if stuck:
                log.error("jobs still running after shutdown: %s", [t.get_name() for t in stuck])


async def _run_all(ctx: WorkContext) -> None:
    """Run consumer and scheduler as child tasks; cancelling this task stops both for sure."""
    with tracked(f"worker {ctx.consumer}"):
        await _run_children(ctx)


async def _run_children(ctx: WorkContext) -> None:
    stop = asyncio.Event()
    children = {
        asyncio.create_task(Worker(ctx, stop=stop).run(), name="job-consumer"),
        asyncio.create_task(WatchScheduler(ctx, stop=stop).run(), name="watch-scheduler"),
        asyncio.create_task(SampleScheduler(ctx, stop=stop).run(), name="sample-scheduler"),
    }
    try:
        done, _ = await asyncio.wait(children, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()  # a crashed child is a bug: surface it
    finally:
        stop.set()
        for task in children:
            task.cancel()
        _done, stuck = await asyncio.wait(children, timeout=20)
        if stuck:
            log.error("worker tasks did not stop within 20 s: %s", [t.get_name() for t in stuck])


def start_worker(runtime: Runtime, settings: Settings | None,
                 slack_client: AsyncWebClient | None, *,
                 config: QueueSettings | None = None) -> asyncio.Task[None]:
    """Start this replica's job consumer and watch scheduler; cancel the task to stop them."""
    config = config or QueueSettings()
    queue = config.queue(runtime.redis)
    ctx = WorkContext(runtime=runtime, settings=settings, config=config, queue=queue,
                      slack=slack_client, consumer=config.consumer_name or default_consumer_name())
    log.info("job worker %s started", ctx.consumer)
    return asyncio.create_task(_run_all(ctx), name=f"heapbot-worker-{ctx.consumer}")


async def serve_worker() -> None:
    """A standalone worker process: Runtime from the environment, until SIGTERM/SIGINT."""
    settings = get_settings()
    runtime = await Runtime.create(settings)
    slack = build_web_client(settings) if settings.slack_bot_token is not None else None
    task = start_worker(runtime, settings, slack)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    waiter = asyncio.create_task(stop.wait())
    await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await runtime.close()


def main() -> None:
    logging.basicConfig(level=os.environ.get("HEAPBOT_LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(serve_worker())


if __name__ == "__main__":
    main()
