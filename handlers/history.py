"""`/heap history SERVICE [N]`: stored captures with heap, goroutines, builds and deploys.

Deploy markers are shown between the captures they separate, because "did it
start growing after the deploy?" is the first question of every leak hunt.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from bot.render.chart import history_png
from bot.reply import Attachment, Column, Reply, Table
from bot.units import format_bytes, format_clock, signed
from handlers._common import Args, parse_args, parse_count, plural, short_build_id

if TYPE_CHECKING:
    from bot.runtime import Runtime
    from bot.store import DeployMarker, StoredSnapshot
    from handlers.invocation import Invocation

USAGE = "/heap history SERVICE [N]"
DEFAULT_LIMIT = 20


def _heap_inuse(snapshot: StoredSnapshot) -> int | None:
    """MemStats HeapInuse when captured, else the heap profile's inuse_space total."""
    value = snapshot.memstats.get("HeapInuse")
    if value is None and snapshot.summary is not None:
        value = snapshot.summary.heap.totals.get("inuse_space")
    return value


def check(argv: list[str]) -> Args:
    """Validate the arguments, syntax only (no I/O): shared by handle() and the instant ack."""
    args = parse_args(argv, USAGE, valued={"-n": "limit", "--limit": "limit"},
                      min_positionals=1, max_positionals=2)
    count_text = args.positionals[1] if len(args.positionals) > 1 else args.get("limit")
    args.count = parse_count(count_text, USAGE, default=DEFAULT_LIMIT)
    return args


async def handle(runtime: Runtime, argv: list[str], inv: Invocation) -> Reply:
    """List stored captures newest first, with deploy markers in between."""
    args = check(argv)
    service, limit = args.positionals[0], args.count
    snapshots = await runtime.history(service, limit)
    if not snapshots:
        return Reply(title=f"No stored captures of {service} yet", service=service,
                     sections=[f"`/heap capture {service}` (or `/heap top {service}`) takes "
                               "the first one; history, diff and leaks build on them."],
                     data={"service": service, "snapshots": [], "deploys": []})
    oldest = snapshots[-1].taken_at
    deploys = await runtime.deploys(service, since=oldest)
    rows: list[list[str]] = []
    pending = sorted(deploys, key=lambda d: d.taken_at, reverse=True)
    for snapshot in snapshots:  # newest first; a deploy row goes above the first capture after
        while pending and pending[0].taken_at > snapshot.taken_at:
            rows.append(_deploy_row(pending.pop(0)))
        answered = sum(1 for i in snapshot.instances if i.ok)
        rows.append([
            format_clock(snapshot.taken_at), snapshot.trigger, format_bytes(_heap_inuse(snapshot)),
            f"{snapshot.goroutine_total:,}" if snapshot.goroutine_total is not None else "-",
            f"{answered}/{len(snapshot.instances)}", short_build_id(snapshot.build_id) or "-",
            snapshot.id,
        ])
    rows.extend(_deploy_row(d) for d in pending if d.taken_at >= oldest)
    table = Table(
        columns=[Column("time", "left"), Column("trigger", "left"), Column("heap in use"),
                 Column("goroutines"), Column("instances"), Column("build", "left"),
                 Column("snapshot", "left")],
        rows=rows,
        caption=f"{len(snapshots)} most recent captures, newest first",
    )
    first, last = snapshots[-1], snapshots[0]
    summary = ""
    heap_first, heap_last = _heap_inuse(first), _heap_inuse(last)
    if len(snapshots) > 1 and heap_first is not None and heap_last is not None:
        summary = (f"heap in use {format_bytes(heap_first)} → {format_bytes(heap_last)} "
                   f"({signed(heap_last - heap_first)}) over {len(snapshots)} captures")
    attachments = []
    summaries = [s.summary for s in reversed(snapshots) if s.summary is not None]
    if len(summaries) >= 2:
        png = await asyncio.to_thread(history_png, summaries, deploys)
        attachments.append(Attachment(filename=f"{service}-history.png", content=png,
                                      title=f"{service}: heap and goroutines", kind="chart"))
    return Reply(
        title=f"History of {service}",
        context=[f"{service} · {len(snapshots)} captures since {format_clock(oldest)}"
                 + (f" · {plural(len(deploys), 'deploy')}" if deploys else "")],
        summary=summary,
        table=table,
        attachments=attachments,
        service=service,
        snapshot_id=last.id,
        data={"service": service,
              "snapshots": [{**s.to_json(), "heap_inuse": _heap_inuse(s)} for s in snapshots],
              "deploys": [_deploy_json(d) for d in deploys]},
    )


def _deploy_row(marker: DeployMarker) -> list[str]:
    who = f" by {marker.by}" if marker.by and marker.source != "build-id" else ""
    what = ("new build detected" if marker.source == "build-id"
            else f"deploy {marker.version}{who}")
    return [format_clock(marker.taken_at), "deploy", "", "", "",
            short_build_id(marker.build_id) or "", f"— {what}"]


def _deploy_json(marker: DeployMarker) -> dict[str, object]:
    return {"at": marker.taken_at, "version": marker.version, "by": marker.by,
            "source": marker.source, "build_id": marker.build_id}
