"""`/heap goroutines SERVICE [N]`: how many goroutines, grouped by stack, and where they wait.

A goroutine leak shows as one group that keeps growing while parked on a
channel or a lock; each group's change since the previous capture is shown next
to its count so that growth stands out.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bot.analysis.goroutines import GoroutineGroup, creator_heading
from bot.reply import Action, Column, Reply, Table
from bot.units import format_since
from handlers._common import (
    Args,
    capture_reply,
    no_profile_reply,
    parse_args,
    parse_count,
    plural,
    short_path,
)

if TYPE_CHECKING:
    from bot.runtime import Runtime
    from handlers.invocation import Invocation

USAGE = "/heap goroutines SERVICE [N]"
VALUED = {"-n": "n", "--nodes": "n"}


def waits_in(group: GoroutineGroup) -> str:
    """Where a group waits; Go records some goroutines (just starting) with no stack at all."""
    return group.wait_function or ("(no stack recorded)" if not group.frames else "?")


def check(argv: list[str]) -> Args:
    """Validate the arguments, syntax only (no I/O): shared by handle() and the instant ack."""
    args = parse_args(argv, USAGE, flags={"--force": "force"}, valued=VALUED,
                      min_positionals=1, max_positionals=2)
    args.count = parse_count(
        args.positionals[1] if len(args.positionals) > 1 else args.get("n"), USAGE)
    return args


async def handle(runtime: Runtime, argv: list[str], inv: Invocation) -> Reply:
    """Capture and show the goroutine groups, largest first."""
    args = check(argv)
    service, count = args.positionals[0], args.count
    capture = await runtime.capture(service, requested_by=inv.user_id,
                                    force=args.flag("force"))
    report = capture.goroutines
    snapshot = capture.snapshot
    if report is None:
        return no_profile_reply(service, snapshot, "a goroutine profile")

    previous = await runtime.previous(service, snapshot)
    before: dict[str, int] = {}
    prev_total: int | None = None
    if previous is not None and previous.summary is not None:
        before = {g.signature: g.count for g in previous.summary.goroutine_groups}
        prev_total = previous.summary.goroutine_total
    elif previous is not None and previous.goroutine_total is not None:
        prev_total = previous.goroutine_total
    has_before = previous is not None and bool(before)

    columns = [Column("goroutines"), Column("change"), Column("state", "left"),
               Column("waits in", "left"), Column("at", "left"),
               Column(creator_heading(report.source), "left")]
    rows = []
    for group in report.groups[:count]:
        change = ""
        if has_before:
            delta = group.count - before.get(group.signature, 0)
            change = "new" if group.signature not in before else (f"{delta:+,}" if delta else "0")
        rows.append([f"{group.count:,}", change, group.state, waits_in(group),
                     short_path(group.wait_location), group.creator or ""])
    if not has_before:
        columns.pop(1)
        rows = [[r[0], *r[2:]] for r in rows]
    caption = (f"Showing {len(rows)} of {plural(len(report.groups), 'group')} "
               f"({plural(report.total, 'goroutine')})")

    when = format_since(previous.taken_at, snapshot.taken_at) if previous is not None else ""
    summary = f"{plural(report.total, 'goroutine')}"
    if prev_total is not None:
        delta = report.total - prev_total
        summary += f", {delta:+,} since {when}" if delta else f", unchanged since {when}"
    if report.groups:
        top = report.groups[0]
        share = top.count / report.total * 100 if report.total else 0
        summary += (f". The largest group ({top.count:,}, {share:.0f}%) is in {top.state} at "
                    f"{waits_in(top)}")
        if top.wait_location:
            summary += f" ({short_path(top.wait_location)})"
        if has_before and top.signature in before and top.count > before[top.signature]:
            summary += f", {top.count - before[top.signature]:+,} since {when}"
    summary += "."
    states = ", ".join(f"{n:,} {s}" for s, n in report.by_state().items())
    return capture_reply(
        capture,
        title=f"{service}: {plural(report.total, 'goroutine')}",
        context=[f"source {report.source}"],
        summary=summary,
        table=Table(columns=columns, rows=rows, caption=caption),
        sections=[f"By state: {states}." if states else ""],
        actions=[
            Action("Leaks", f"leaks {service}", "primary"),
            Action("Top", f"top {service}"),
            Action("Stats", f"stats {service}"),
            Action("Capture again", f"capture {service}"),
        ],
        data={**report.to_json(), "previous_total": prev_total},
        shows_heap=False,  # the heap profile's GC note belongs to top/diff/peek/list
    )
