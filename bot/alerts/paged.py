"""Paged threads: what an on-call engineer sees before opening a laptop.

A firing alert (or a watch whose verdict turns bad) captures heap, goroutines
and MemStats, posts a summary to the service's channel, and fills its thread
with the top table, the diff against the pre-incident baseline, the goroutine
groups, the trend chart and the raw profile. The thread's ts lives in Redis
(``heapbot:incident:<key>``), so a re-fire of the same group replies in the
same thread and a resolve closes it with the diff over the whole incident.

Jobs are delivered at least once. Each step records its progress in Redis
(bot.jobs.JobQueue.record_step) and a retried job skips what is done, so a
crash mid-thread does not post the summary twice. Before each capture and post a
job checks that this replica still holds it (JobQueue.check_held): one that
stalled past claim_idle_seconds, while another replica took its job over, stops
instead of posting the thread a second time. A post in flight at that moment is made
idempotent by Slack message metadata (bot.slack.marks): the step is recorded as being
posted first, and a holder that finds that record looks for the step's message before
posting it again (post_step); a replica that lost its job deletes its own later copy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from slack_sdk.errors import SlackApiError, SlackRequestError

import handlers
from bot.alerts.context import WorkContext
from bot.alerts.incidents import (
    OPEN,
    RESOLVED,
    Incident,
    incident_lock,
    latest_open_incident,
    load_incident,
    may_open_thread,
    save_incident,
)
from bot.alerts.payloads import FIRING, AlertJob
from bot.errors import HeapbotError, NotFoundError
from bot.jobs import Job, JobTakenOver
from bot.pprof.encode import encode_profile
from bot.render.chart import history_png
from bot.reply import Action, Attachment, Reply
from bot.slack.marks import find_marked, step_mark, thread_file_names, ts_key
from bot.slack.publish import attach_files, post_reply
from bot.slack.threads import ThreadMemory
from bot.units import format_bytes, format_rate, signed
from bot.units import format_clock as _clock

if TYPE_CHECKING:
    from bot.store import DeployMarker, StoredSnapshot

log = logging.getLogger(__name__)

FOLD_WAIT_SECONDS = 60.0  # how long an alert over the limit waits for a thread to join
POSTING = "posting:"  # progress field: this step's post was sent (the value: when)
CAPTURING = "capturing:"  # progress field: this step's capture was started (the value: when)
# How far before a step's first attempt (or its own post) a channel is searched for the
# step's mark: the posting replica's clock and Slack's may disagree a little.
MARK_LOOKBACK_SECONDS = 300.0

# -- formatting ------------------------------------------------------------


def _goroutines(snapshot: Any) -> int | None:
    value = getattr(snapshot, "goroutine_total", None)
    if value is None and getattr(snapshot, "summary", None) is not None:
        value = snapshot.summary.goroutine_total
    return value


def describe_now(snapshot: Any) -> str:
    heap = getattr(snapshot, "heap_inuse", None)
    parts = [f"heap in use {format_bytes(heap)}" if heap is not None else "heap in use unknown"]
    goroutines = _goroutines(snapshot)
    if goroutines is not None:
        parts.append(f"{goroutines:,} goroutines")
    return ", ".join(parts)


def describe_change(before: Any, after: Any) -> str:
    """"heap +18.20MB (+45%), goroutines +1,000" between two stored snapshots."""
    parts = []
    if before.heap_inuse is not None and after.heap_inuse is not None:
        delta = after.heap_inuse - before.heap_inuse
        pct = f" ({delta / before.heap_inuse * 100:+.0f}%)" if before.heap_inuse else ""
        parts.append(f"heap {signed(delta)}{pct}")
    g0, g1 = _goroutines(before), _goroutines(after)
    if g0 is not None and g1 is not None:
        parts.append(f"goroutines {g1 - g0:+,}")
    return ", ".join(parts) or "no comparable numbers"


# -- Runtime and Slack plumbing ----------------------------------------------


def channel_for(ctx: WorkContext, service: str) -> tuple[str, str]:
    """(channel, "") where an alert for ``service`` posts, or ("", why it may post nowhere).

    The registry's ``channel``, else HEAPBOT_ALERT_CHANNEL; a service with allow_channels
    posts only into one of them, since everyone in the channel reads the thread.
    """
    try:
        config = ctx.runtime.registry.resolve(service)
    except HeapbotError:
        config = None
    candidates = [c for c in ((config.channel if config else None), ctx.config.alert_channel)
                  if c]
    if not candidates:
        return "", "the service has no channel and HEAPBOT_ALERT_CHANNEL is not set"
    for channel in candidates:
        if config is None or config.may_post_in(channel):
            return channel, ""
    allowed = ", ".join(config.allow_channels) if config is not None else ""
    return "", (f"{' and '.join(candidates)} {'is' if len(candidates) == 1 else 'are'} not "
                f"among its allow_channels ({allowed or 'none: only user groups may use it'})")


def may_post(ctx: WorkContext, service: str, channel: str) -> bool:
    """Whether the registry, as it is now, lets ``service`` post into ``channel``."""
    try:
        return ctx.runtime.registry.resolve(service).may_post_in(channel)
    except HeapbotError:
        return True  # a service removed from the registry: the capture step says so


async def post(ctx: WorkContext, channel: str, reply: Reply, thread_ts: str | None = None,
               *, job: Job | None = None, step: str = "", retried: bool = False) -> str:
    """Post a visible reply (errors included: nobody is there to see an ephemeral one).

    With ``job`` and ``step`` the message carries that step's mark (bot.slack.marks); when
    another holder of the job may have posted the step too (``retried``, or this replica no
    longer holds the job), the later of two marked messages is deleted before its files
    are uploaded, so the thread shows the step once.
    """
    if ctx.slack is None:
        raise HeapbotError("Slack is not configured (SLACK_BOT_TOKEN), so heapbot cannot post.")
    reply.ephemeral = False
    if job is None:
        ts = await post_reply(ctx.slack, channel, reply, thread_ts=thread_ts)
    else:
        mark = step_mark(job.id, step)
        ts = await post_reply(ctx.slack, channel, reply, thread_ts=thread_ts, metadata=mark,
                              files=False)
        held = await ctx.queue.holder(job.id) == ctx.consumer
        if retried or not held:
            first = await _keep_first(ctx, channel, thread_ts, mark, ts)
            if first != ts:  # ours was the later copy, now deleted: its files stay unsent
                if not held:
                    raise JobTakenOver(f"step {step} of job {job.id} was posted by its "
                                       f"new holder as {first}")
                return first  # the earlier copy's poster uploads its files
        await attach_files(ctx.slack, channel, reply, thread_ts or ts)
    if thread_ts is None and reply.service:
        with contextlib.suppress(Exception):
            await ThreadMemory(ctx.redis).remember(channel, ts, reply.service)
    return ts


async def _keep_first(ctx: WorkContext, channel: str, thread_ts: str | None,
                      mark: dict[str, Any], ts: str) -> str:
    """The ts of the first message carrying ``mark``; ours (``ts``) is deleted if another
    holder of the job posted the step before it."""
    assert ctx.slack is not None
    found = await find_marked(ctx.slack, channel, mark, thread_ts=thread_ts,
                              oldest=ts_key(ts)[0] - MARK_LOOKBACK_SECONDS)
    first = found[0] if found else ts
    if first == ts:
        return ts
    log.warning("step %s was posted twice (%s, then %s by %s): deleting the second",
                mark["event_payload"], first, ts, ctx.consumer)
    try:
        await ctx.slack.chat_delete(channel=channel, ts=ts)
    except (SlackApiError, SlackRequestError) as exc:
        log.warning("could not delete the second post of %s: %s", mark["event_payload"], exc)
    return first


async def _missing_files(ctx: WorkContext, channel: str, thread_ts: str,
                         build: Callable[[], Awaitable[Reply | None]]) -> None:
    """Upload the files of a step whose message was found posted but which may have died
    before its files went up: only those not in the thread yet (none if it cannot tell)."""
    assert ctx.slack is not None
    reply = await build()
    if reply is None or not reply.attachments:
        return
    shared = await thread_file_names(ctx.slack, channel, thread_ts)
    if shared is None:
        return  # cannot read the thread: better a file missing than posted twice
    missing = [a for a in reply.attachments if a.filename not in shared]
    if missing:
        log.info("uploading %s, missing from the thread %s", [a.filename for a in missing],
                 thread_ts)
        reply.attachments = missing
        await attach_files(ctx.slack, channel, reply, thread_ts)


async def run_command(ctx: WorkContext, text: str, channel: str, service: str) -> Reply:
    """A /heap command through the same handlers as Slack (table, diff, goroutines)."""
    inv = handlers.Invocation(text=text, channel_id=channel, thread_service=service,
                              source="alert")
    return await handlers.run(ctx.runtime, inv)


async def capture_step(ctx: WorkContext, job: Job, service: str, trigger: str,
                       requested_by: str, step: str = "capture") -> Any:
    """Capture once per job: a retried job reuses the snapshot it already took.

    The snapshot (one Redis slot) and the job's progress (another) cannot be written in one
    transaction, so the step is recorded first as being captured (``capturing:<step>``, with
    the time) and the snapshot carries the step's tag (``StoredSnapshot.job``): a job retried
    after a crash between storing and recording finds its snapshot instead of storing a
    second one (a watch tick would have left an extra capture no tick accounts for).
    """
    done = await ctx.queue.progress(job)
    if step in done:
        try:
            return await ctx.runtime.get(service, done[step])
        except NotFoundError:
            log.warning("snapshot %s of job %s is gone; capturing again", done[step], job.id)
    tag = f"{job.id}:{step}"
    since = done.get(CAPTURING + step)
    if since is not None and step not in done:
        for stored in await ctx.runtime.snapshots_since(service, float(since) - 60):
            if stored.job == tag:
                log.info("job %s stored snapshot %s before it could record it; using it",
                         job.id, stored.id)
                await ctx.queue.record_step(job, step, stored.id)
                return stored
    await ctx.queue.check_held(job, ctx.consumer)  # not if another replica took the job
    if since is None:
        await ctx.queue.record_step(job, CAPTURING + step, f"{time.time():.6f}")
    captured = await ctx.runtime.capture(service, trigger=trigger, requested_by=requested_by,
                                         force=True, job=tag)
    await ctx.queue.record_step(job, step, captured.snapshot.id)
    return captured.snapshot


async def post_step(ctx: WorkContext, job: Job, step: str, channel: str, thread_ts: str | None,
                    build: Callable[[], Awaitable[Reply | None]]) -> str:
    """Post the reply ``build`` makes unless this job already posted ``step``; returns its ts.

    Before posting, the step is recorded as being posted (``posting:<step>``, with the time);
    a holder that finds that record (a retry, or a replica that took the job over while the
    poster stalled) first looks in Slack for the step's marked message and, if it is there,
    records it instead of posting it again.
    """
    done = await ctx.queue.progress(job)
    if step in done:
        return done[step]
    since = done.get(POSTING + step)
    if since is not None and ctx.slack is not None:
        mark = step_mark(job.id, step)
        found = await find_marked(ctx.slack, channel, mark, thread_ts=thread_ts,
                                  oldest=float(since) - MARK_LOOKBACK_SECONDS)
        if found:
            log.info("step %s of job %s was posted before (%s); not posting it again",
                     step, job.id, found[0])
            await _missing_files(ctx, channel, thread_ts or found[0], build)
            await ctx.queue.record_step(job, step, found[0])
            return found[0]
    reply = await build()
    ts = ""
    if reply is not None:
        await ctx.queue.check_held(job, ctx.consumer)  # it may have stalled while building
        if since is None:
            await ctx.queue.record_step(job, POSTING + step, f"{time.time():.6f}")
        ts = await post(ctx, channel, reply, thread_ts=thread_ts, job=job, step=step,
                        retried=since is not None)
    await ctx.queue.record_step(job, step, ts or "-")
    return ts


# -- the thread's parts -------------------------------------------------------


async def _leak_line(ctx: WorkContext, service: str) -> str:
    try:
        report = await ctx.runtime.leak_report(service)  # the same verdict as /heap leaks
    except Exception:  # a leak analysis problem must not stop the page
        log.exception("leak analysis failed for %s", service)
        return ""
    suspects = list(getattr(report, "suspects", []) or [])
    if not suspects:
        return f"Leak analysis: {getattr(report, 'verdict', 'unknown')}."
    top = suspects[0]
    growth = getattr(top, "growth_per_hour", None)
    unit = getattr(top, "unit", "")
    rate = ""
    if isinstance(growth, int | float):
        rate = ", " + format_rate(growth, unit)
    return (f"Top leak suspect ({report.verdict}): `{top.function}` "
            f"({getattr(top, 'kind', 'heap')}{rate}).")


async def chart_reply(ctx: WorkContext, service: str) -> Reply | None:
    summaries = await ctx.runtime.summaries(service, limit=500)
    if not summaries:
        return None
    deploys = await ctx.runtime.deploys(service)
    png = await asyncio.to_thread(history_png, summaries, deploys)
    return Reply(title=f"{service}: heap in use and goroutines over time", service=service,
                 context=[f"{len(summaries)} captures, {len(deploys)} deploys marked"],
                 attachments=[Attachment(f"{service}-history.png", png,
                                         f"{service} heap and goroutines", kind="chart")])


async def profile_reply(ctx: WorkContext, service: str, snapshot: Any) -> Reply | None:
    """One .pb.gz of the service's merged heap profile: what the thread's tables show."""
    profile = await ctx.runtime.load_profile(snapshot, missing_ok=True)
    if profile is None:
        return None
    data = await asyncio.to_thread(encode_profile, profile)
    answered = snapshot.answered
    filename = f"{service}-{snapshot.id}-heap.pb.gz"
    return Reply(title="Heap profile",
                 context=[f"merged from {answered} instance{'s' if answered != 1 else ''}; "
                          f"`go tool pprof -top {filename}` reads it"],
                 attachments=[Attachment(filename, data, f"heap profile of {service}")],
                 service=service, snapshot_id=snapshot.id)


async def _baseline_before(ctx: WorkContext, service: str, when: float | None,
                           exclude: str) -> Any | None:
    if when is None:
        return None
    return await ctx.runtime.before(service, when, exclude=exclude)


async def _deploy_baseline(ctx: WorkContext, service: str, current: Any) -> tuple[Any, Any]:
    """(last deploy marker, first snapshot after it) — either may be None."""
    deploys = await ctx.runtime.deploys(service)
    if not deploys:
        return None, None
    marker = deploys[-1]
    after = await ctx.runtime.snapshots_since(service, marker.taken_at)
    after = [s for s in after if s.id != current.id]
    return marker, (min(after, key=lambda s: s.taken_at) if after else None)


def _diff_action(service: str, marker: DeployMarker | None,
                 baseline: StoredSnapshot | None) -> Action:
    """A diff button that can work: since the deploy only when one is recorded."""
    if marker is not None:
        return Action("Diff since deploy", f"diff {service} since deploy")
    if baseline is not None:
        return Action("Diff since the baseline", f"diff {service} since {baseline.id}")
    return Action("Diff since previous", f"diff {service} since previous")


async def open_thread(ctx: WorkContext, job: Job, *, service: str, incident_key: str,
                      channel: str, title: str, lines: Sequence[str], started_at: float | None,
                      source: str, trigger: str, icon: str = ":rotating_light:") -> Incident:
    """Capture, post the summary, then the thread: top, diff, goroutines, chart, profile."""
    snapshot = await capture_step(ctx, job, service, trigger, f"{source}: {title}"[:200])
    baseline = await _baseline_before(ctx, service, started_at or snapshot.taken_at - 1,
                                      exclude=snapshot.id)
    marker, after_deploy = await _deploy_baseline(ctx, service, snapshot)

    async def summary() -> Reply:
        sections = [line for line in lines if line]
        if baseline is not None:
            sections.append(f"Since the last capture before it started ({_clock(baseline.taken_at)}"
                            f", `{baseline.id}`): {describe_change(baseline, snapshot)}.")
        else:
            sections.append("No capture before it started: this capture is the baseline now.")
        if marker is not None and after_deploy is not None:
            sections.append(f"Since the last deploy ({marker.version}, {_clock(marker.taken_at)})"
                            f": {describe_change(after_deploy, snapshot)}.")
        elif marker is not None:
            sections.append(f"Last deploy: {marker.version} at {_clock(marker.taken_at)} (no "
                            "capture since then to compare with).")
        else:
            sections.append("No deploy recorded (`/heap deploy` or POST /hooks/deploy adds one).")
        leak = await _leak_line(ctx, service)
        if leak:
            sections.append(leak)
        sections.append("In the thread: top table, diff vs the baseline, goroutine groups, "
                        "trend chart and the raw profile.")
        answered = f"{snapshot.answered}/{len(snapshot.instances)} instances"
        return Reply(
            title=f"{title} — {service}",
            context=[f"{icon} {source}", f"captured {answered} at {_clock(snapshot.taken_at)}"],
            summary=f"Now: {describe_now(snapshot)}.",
            sections=sections,
            actions=[Action("Leaks", f"leaks {service}"), _diff_action(service, marker, baseline)],
            service=service, snapshot_id=snapshot.id,
        )

    ts = await post_step(ctx, job, "summary", channel, None, summary)
    incident = Incident(
        key=incident_key, service=service, channel=channel, ts=ts, status=OPEN, title=title,
        source=source, opened_at=time.time(), opened_by_job=job.id, first_snapshot=snapshot.id,
        baseline_snapshot=baseline.id if baseline is not None else "",
    )
    existing = await load_incident(ctx.redis, incident_key)
    if existing is None or existing.ts != ts:
        await save_incident(ctx.redis, incident)

    async def diff() -> Reply | None:
        if baseline is None:
            return None
        return await run_command(ctx, f"diff {service} since {baseline.id} --flame", channel,
                                 service)

    steps: list[tuple[str, Callable[[], Awaitable[Reply | None]]]] = [
        ("top", lambda: run_command(ctx, f"top {service}", channel, service)),
        ("diff", diff),
        ("goroutines", lambda: run_command(ctx, f"goroutines {service}", channel, service)),
        ("chart", lambda: chart_reply(ctx, service)),
        ("profile", lambda: profile_reply(ctx, service, snapshot)),
    ]
    for name, build in steps:
        await post_step(ctx, job, name, channel, ts, build)
    return incident


async def follow_up(ctx: WorkContext, job: Job, incident: Incident, *, resolved: bool,
                    note: str = "") -> None:
    """A re-fire (reply in the thread) or a resolve (final capture, diff over the incident)."""
    service = incident.service
    if not may_post(ctx, service, incident.channel):
        log.warning("%s thread of %s not followed up: %s is no longer one of its "
                    "allow_channels", incident.source, service, incident.channel)
        return
    trigger = "alert" if incident.source != "watch" else "watch"
    snapshot = await capture_step(ctx, job, service, trigger,
                                  f"{incident.source}: {incident.title}"[:200])
    try:
        first = await ctx.runtime.get(service, incident.first_snapshot)
    except NotFoundError:
        first = None
    minutes = max(0, int((snapshot.taken_at - incident.opened_at) / 60))

    async def message() -> Reply:
        change = (f"Since the incident's first capture ({_clock(first.taken_at)}): "
                  f"{describe_change(first, snapshot)}." if first is not None else "")
        if resolved:
            title = f":white_check_mark: Resolved after {minutes}m: {incident.title}"
        else:
            title = f":repeat: Still firing ({minutes}m): {incident.title}"
        return Reply(title=title, summary=f"Now: {describe_now(snapshot)}.",
                     sections=[s for s in (note, change) if s], service=service,
                     snapshot_id=snapshot.id)

    await post_step(ctx, job, "follow_up", incident.channel, incident.ts, message)

    async def diff() -> Reply | None:
        if first is None or first.id == snapshot.id:
            return None
        return await run_command(ctx, f"diff {service} since {first.id}", incident.channel,
                                 service)

    await post_step(ctx, job, "incident_diff", incident.channel, incident.ts, diff)
    if resolved:
        incident.status = RESOLVED
        incident.resolved_at = time.time()
        await save_incident(ctx.redis, incident)


async def handle_alert(ctx: WorkContext, job: Job) -> str:
    """Run one alert job (from /hooks/alertmanager or /hooks/pagerduty); returns the outcome."""
    alert = AlertJob.of(job)
    service, key = alert.service, alert.incident_key
    channel, why = channel_for(ctx, service)
    if ctx.slack is None or not channel:
        why = "Slack is not configured" if ctx.slack is None else why
        log.warning("alert for %s not posted: %s (capturing anyway)", service, why)
        if alert.status == FIRING:
            await capture_step(ctx, job, service, "alert", f"{alert.source}: {alert.title}")
        return "refused_channel" if "allow_channels" in why else "not_posted"
    async with incident_lock(ctx.redis, key, ctx.config.claim_idle_seconds):
        incident = await load_incident(ctx.redis, key)
        done = await ctx.queue.progress(job)
        resuming_open = "summary" in done or (incident is not None and
                                              incident.opened_by_job == job.id)
        if alert.status == FIRING:
            if incident is not None and incident.status == OPEN and not resuming_open:
                await follow_up(ctx, job, incident, resolved=False, note=alert.summary)
                return "refired"
            if not resuming_open and not await _counted_new_thread(ctx, job, service):
                return await _fold_into_latest(ctx, job, alert)
            lines = [alert.summary,
                     f"{alert.alerts} alert(s), severity {alert.severity}"
                     if alert.severity else "",
                     f"Started {_clock(alert.starts_at)}" if alert.starts_at else "",
                     alert.link]
            await open_thread(ctx, job, service=service, incident_key=key, channel=channel,
                              title=alert.title, lines=lines, started_at=alert.starts_at,
                              source=alert.source, trigger="alert")
            return "opened"
        if incident is None or incident.status != OPEN:
            log.info("resolve for %s has no open thread (key %s); nothing to close", service, key)
            return "no_thread"
        await follow_up(ctx, job, incident, resolved=True)
        return "resolved"


async def _counted_new_thread(ctx: WorkContext, job: Job, service: str) -> bool:
    """Whether this job may open a new thread for ``service`` (counted once per job)."""
    done = await ctx.queue.progress(job)
    if "new_thread" in done:
        return done["new_thread"] == "yes"
    allowed = await may_open_thread(ctx.redis, service, ctx.config.alert_max_new_incidents,
                                    ctx.config.alert_incident_window_seconds)
    await ctx.queue.record_step(job, "new_thread", "yes" if allowed else "no")
    return allowed


async def _fold_into_latest(ctx: WorkContext, job: Job, alert: AlertJob) -> str:
    """Over the per-service limit: one line in the newest open thread instead of a new one."""
    limit = ctx.config.alert_max_new_incidents
    minutes = ctx.config.alert_incident_window_seconds / 60
    # The threads that used up the limit may still be posting their summaries: wait a bit.
    deadline = time.monotonic() + FOLD_WAIT_SECONDS
    latest = await latest_open_incident(ctx.redis, alert.service)
    while latest is None and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        latest = await latest_open_incident(ctx.redis, alert.service)
    if latest is None or not may_post(ctx, alert.service, latest.channel):
        log.warning("alert %r for %s dropped: %d new threads in %.0f min is the limit and no "
                    "thread is open to add it to", alert.title, alert.service, limit, minutes)
        return "rate_limited"

    async def note() -> Reply:
        return Reply(title=f":heavy_plus_sign: Also firing: {alert.title}",
                     summary=alert.summary,
                     sections=[f"heapbot opens at most {limit} new threads per service every "
                               f"{minutes:.0f} minutes, so this alert is added here instead "
                               "of opening another."],
                     service=alert.service)

    await post_step(ctx, job, "folded", latest.channel, latest.ts, note)
    log.info("alert %r for %s folded into thread %s (new-thread limit)", alert.title,
             alert.service, latest.key)
    return "folded"
