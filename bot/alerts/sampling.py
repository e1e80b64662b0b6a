"""The worker side of ``/heap leaks SERVICE --sample NxD`` (bot/sampling.py holds the plan).

Every replica's scheduler calls :func:`promote_due`: a sampling whose next
capture is due becomes one ``sample`` job (the ZREM of its due entry is the
lease, so one replica queues it). :func:`run_sample_step` takes that capture and
either makes the next one due ``interval`` later or, after the last, posts the
leak verdict into the thread of the command's reply and releases the sampling's
caps. No step waits: a job takes seconds, however long the sampling spans.
"""

from __future__ import annotations

import asyncio
import logging
import time

from redis.exceptions import RedisError

from bot import sampling
from bot.alerts.context import WorkContext
from bot.alerts.lifecycle import stop_requested, tracked
from bot.alerts.payloads import SampleJob
from bot.errors import HeapbotError, UnknownServiceError
from bot.jobs import Job
from bot.reply import Reply
from bot.slack.publish import post_reply
from handlers.leaks import build_reply

log = logging.getLogger(__name__)

# Due samplings are looked for this often (at most; HEAPBOT_WATCH_POLL_SECONDS if shorter).
POLL_SECONDS = 1.0


async def promote_due(ctx: WorkContext, now: float | None = None) -> list[str]:
    """Queue one capture job per due sampling this replica wins; returns their ids."""
    won = await sampling.take_due(ctx.redis, now)
    for sampling_id in won:
        plan = await sampling.load(ctx.redis, sampling_id)
        if plan is None:
            continue
        await SampleJob(id=sampling_id, step=plan.taken).enqueue(
            ctx.queue, dedupe_key=f"sample:{sampling_id}:{plan.taken}")
    return won


class SampleScheduler:
    """Every replica's loop that queues the due captures of samplings."""

    def __init__(self, ctx: WorkContext, stop: asyncio.Event | None = None) -> None:
        self.ctx = ctx
        self.stop = stop

    async def run(self) -> None:
        with tracked(f"sample scheduler {self.ctx.consumer}"):
            while not stop_requested(self.stop):
                try:
                    await promote_due(self.ctx)
                except (RedisError, OSError) as exc:
                    log.warning("sample scheduler: Redis error %s", exc)
                except Exception:
                    log.exception("sample scheduler pass failed")
                await asyncio.sleep(min(POLL_SECONDS, self.ctx.config.watch_poll_seconds))


async def run_sample_step(ctx: WorkContext, job: Job) -> str:
    """One capture of a sampling; after the last one, the verdict."""
    payload = SampleJob.of(job)
    step = payload.step
    plan = await sampling.load(ctx.redis, payload.id)
    if plan is None:
        return "lapsed"
    done = await ctx.queue.progress(job)
    if "captured" not in done:
        try:
            await ctx.runtime.capture(plan.service, trigger="sample", requested_by=plan.user_id,
                                      force=True)
        except HeapbotError as exc:
            await _post(ctx, plan, Reply.failure(
                f"The sampling of `{plan.service}` stopped after {plan.taken} of {plan.count} "
                f"captures: {exc.user_message()}", service=plan.service))
            await sampling.finish(ctx.redis, plan)
            return "capture_failed"
        plan.taken = step + 1
        await sampling.save(ctx.redis, plan)
        await ctx.queue.record_step(job, "captured")
    if plan.taken < plan.count:
        await sampling.schedule(ctx.redis, plan.id, time.time() + plan.interval_seconds)
        return "captured"
    try:
        report = await ctx.runtime.leak_report(plan.service)
    except HeapbotError as exc:  # e.g. Redis went away: say so where the verdict was due
        await _post(ctx, plan, Reply.failure(
            f"The sampling of `{plan.service}` took its {plan.count} captures but could not "
            f"judge them: {exc.user_message()}", service=plan.service))
        await sampling.finish(ctx.redis, plan)
        return "verdict_failed"
    if "posted" not in done:  # a retried job does not post the verdict twice
        await _post(ctx, plan, build_reply(plan.service, report, sampled=plan.taken))
        await ctx.queue.record_step(job, "posted")
    await sampling.finish(ctx.redis, plan)
    return "verdict"


async def _post(ctx: WorkContext, plan: sampling.Sampling, reply: Reply) -> None:
    """Into the thread of the command's reply (or the channel when it has none)."""
    if ctx.slack is None or not plan.channel:
        log.warning("sampling %s of %s finished but Slack is not configured; verdict not "
                    "posted", plan.id, plan.service)
        return
    if not _may_post(ctx, plan):
        return
    reply.ephemeral = False  # a failure goes to the thread too: the asker is not waiting
    try:
        await post_reply(ctx.slack, plan.channel, reply, plan.thread_ts or None,
                         user_id=plan.user_id or None)
    except HeapbotError as exc:
        log.warning("could not post the verdict of sampling %s into %s: %s", plan.id,
                    plan.channel, exc.message)


def _may_post(ctx: WorkContext, plan: sampling.Sampling) -> bool:
    """Re-check at verdict time: the registry may have narrowed the service's channels."""
    try:
        allowed = ctx.runtime.registry.resolve(plan.service).may_post_in(plan.channel)
    except UnknownServiceError:
        return True  # nothing restricts a service the registry no longer names
    if not allowed:
        log.warning("verdict of sampling %s of %s not posted: %s is not among its "
                    "allow_channels", plan.id, plan.service, plan.channel)
    return allowed
