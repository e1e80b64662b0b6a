"""`/heap leaks SERVICE [--sample 3x30s]`: suspected leak sites from the stored captures.

The verdict comes from ``Runtime.leak_report`` (the same one watches and paged
threads use) over the service's stored summaries since the last deploy.
With ``--sample NxD`` heapbot first takes N captures D apart (so a service with
no history can be judged now); without it, when history is too short, the
reply says how many captures are missing and offers the sample.
"""

from __future__ import annotations

import asyncio
import re
from typing import TYPE_CHECKING

from bot.analysis.leaks import LEAK_LIKELY, NOT_ENOUGH_DATA, UNDECIDED, LeakReport
from bot.errors import UsageError
from bot.reply import Action, Column, Reply, Table
from bot.units import duration_seconds, format_rate
from handlers._common import Args, parse_args, plural
from handlers._sampling import INLINE_SOURCES, schedule

if TYPE_CHECKING:
    from bot.runtime import Runtime
    from handlers.invocation import Invocation

USAGE = "/heap leaks SERVICE [--sample 3x30s]"
MAX_SAMPLES = 10
MIN_INTERVAL_S = 1.0
MAX_TOTAL_S = 15 * 60.0

_TITLE = {
    LEAK_LIKELY: "leak likely",
    "growth bounded": "growth bounded, no leak",
    "no growth": "no growth",
    NOT_ENOUGH_DATA: "not enough captures yet",
    UNDECIDED: "undecided, more captures needed",
}


def parse_sample(text: str) -> tuple[int, float]:
    """``3x30s`` → (3, 30.0); bounded so one command cannot capture for an hour."""
    match = re.fullmatch(r"(\d+)\s*[x×*]\s*(\S+)", text.strip().lower())
    seconds = duration_seconds(match.group(2)) if match else None
    if not match or seconds is None:
        raise UsageError(f"`--sample {text[:40]}` is not N×DURATION.",
                         hint=f"For example `--sample 3x30s`. Usage: `{USAGE}`")
    count = int(match.group(1))
    if not 2 <= count <= MAX_SAMPLES:
        raise UsageError(f"--sample takes 2 to {MAX_SAMPLES} captures, not {count}.",
                         hint=f"Usage: `{USAGE}`")
    if seconds < MIN_INTERVAL_S or seconds * (count - 1) > MAX_TOTAL_S:
        raise UsageError("--sample captures must be at least 1s apart and span at most 15m.",
                         hint=f"For example `--sample 3x30s`. Usage: `{USAGE}`")
    return count, seconds


def check(argv: list[str]) -> Args:
    """Validate the arguments, syntax only (no I/O): shared by handle() and the instant ack."""
    args = parse_args(argv, USAGE, valued={"--sample": "sample"}, min_positionals=1)
    if (sample := args.get("sample")):
        parse_sample(sample)
    return args


async def handle(runtime: Runtime, argv: list[str], inv: Invocation) -> Reply:
    """Judge the stored history (after sampling, if asked) and answer with the suspects."""
    args = check(argv)
    name = runtime.registry.resolve(args.positionals[0]).name
    sample = args.get("sample")
    sample_plan = parse_sample(sample) if sample else None
    taken = 0
    if sample_plan and inv.source not in INLINE_SOURCES:
        return await schedule(runtime, name, *sample_plan, inv)  # jobs, not a held slot
    if sample_plan:
        count, interval = sample_plan
        for i in range(count):
            if i:
                await asyncio.sleep(interval)
            await runtime.capture(name, trigger="sample", requested_by=inv.user_id, force=True)
            taken += 1
    report = await leak_report(runtime, name)
    return build_reply(name, report, sampled=taken)


async def leak_report(runtime: Runtime, service: str) -> LeakReport:
    """The leak verdict over a service's stored captures: :meth:`Runtime.leak_report`."""
    return await runtime.leak_report(service)


def build_reply(service: str, report: LeakReport, *, sampled: int = 0) -> Reply:
    """The Reply for a LeakReport: verdict, suspects table, evidence, next steps."""
    context = [f"{service} · {report.captures} captures analysed"]
    if report.deploy:
        context[0] += f" · since deploy {report.deploy}"
    if report.restarts:
        context[0] += f" · {report.restarts} restart(s) in the window"
    if sampled:
        context.append(f"took {sampled} new captures for this answer")
    table = None
    if report.suspects:
        rows = [[s.function, "goroutines (proven)" if s.proven else s.kind,
                 s.growth_text or format_rate(s.growth_per_hour, s.unit), str(s.captures),
                 f"{s.share:.0%}"] for s in report.suspects]
        table = Table(columns=[Column("function", "left"), Column("kind", "left"),
                               Column("growth"), Column("captures"), Column("share")],
                      rows=rows,
                      caption=f"{plural(len(rows), 'suspect')}, strongest evidence first")
    sections: list[str] = []
    for s in report.suspects[:5]:
        lines = [f"{s.function} ({s.kind})"]
        if s.site:
            lines.append(f"site: {s.site}")
        if s.own_caller:
            lines.append(f"called from your code in {s.own_caller}")
        lines.extend(f"• {e}" for e in s.evidence)
        if s.hint:
            lines.append(f"Hint: {s.hint}")
        sections.append("\n".join(lines))
    if report.undecided:
        sections.append(_bullets(
            "Undecided (not enough evidence either way):",
            [f"{u.function} ({u.kind}{', ' + u.growth if u.growth else ''}): {u.reason}"
             for u in report.undecided]))
    if report.not_suspects:
        suspected = {s.function for s in report.suspects}
        # "main.f (heap)" when main.f is also a suspect of the other kind, so the two agree
        sections.append(_bullets("Not suspects:", [
            f"{n.function}{f' ({n.kind})' if n.function in suspected else ''}: {n.reason}"
            for n in report.not_suspects]))
    if report.signals:
        sections.append("Process: " + " ".join(report.signals))
    if report.next_steps:
        sections.append("Next: " + " ".join(report.next_steps))
    actions: list[Action] = []
    if report.verdict in (NOT_ENOUGH_DATA, UNDECIDED):
        actions.append(Action("Sample 3x30s", f"leaks {service} --sample 3x30s", "primary"))
    for s in [s for s in report.suspects if s.kind == "heap"][:2]:
        target = s.own_caller or s.function
        actions.append(Action(f"List {target[:60]}", f"list {service} {re.escape(target)}"))
    if report.suspects and any(s.kind == "goroutines" for s in report.suspects):
        actions.append(Action("Goroutines", f"goroutines {service}"))
    actions.append(Action("Capture again", f"capture {service}"))
    return Reply(
        title=f"{service}: {_TITLE.get(report.verdict, report.verdict)}",
        context=context,
        summary=report.summary,
        table=table,
        sections=sections,
        actions=actions,
        service=service,
        data={**report.to_json(), "service": service},
    )


def _bullets(heading: str, items: list[str], limit: int = 8) -> str:
    """A heading and at most ``limit`` bulleted items, the rest counted."""
    lines = [heading, *(f"• {item}" for item in items[:limit])]
    if len(items) > limit:
        lines.append(f"… {len(items) - limit} more")
    return "\n".join(lines)
