"""`/heap capture SERVICE [--force] [--gc]`: capture every instance now and store it.

The reply is about the capture itself (which instances answered, how much heap
and how many goroutines each holds), not a report: `top`, `diff` and `leaks`
read what this stored.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bot.reply import Column, Reply, Table
from bot.units import format_bytes, format_clock, format_duration
from handlers._common import (
    Args,
    failed_instances_text,
    not_stored_text,
    parse_args,
    short_build_id,
    standard_actions,
)

if TYPE_CHECKING:
    from bot.runtime import Runtime
    from bot.store import StoredSnapshot
    from handlers.invocation import Invocation

USAGE = "/heap capture SERVICE [--force] [--gc]"


def instance_table(snapshot: StoredSnapshot) -> Table:
    """One row per instance: status, HeapInuse, goroutines, time taken, and why it failed."""
    rows = []
    for inst in snapshot.instances:
        stats = snapshot.memstats_per_instance.get(inst.target, {})
        status = "ok" if inst.ok else "failed"
        note = inst.error or "; ".join(inst.warnings) or ""
        rows.append([
            inst.target, status, format_bytes(stats.get("HeapInuse")),
            f"{inst.goroutines:,}" if inst.goroutines is not None else "-",
            f"{inst.elapsed * 1000:.0f}ms", note,
        ])
    return Table(
        columns=[Column("instance", "left"), Column("status", "left"), Column("heap in use"),
                 Column("goroutines"), Column("took"), Column("note", "left")],
        rows=rows,
    )


def check(argv: list[str]) -> Args:
    """Validate the arguments, syntax only (no I/O): shared by handle() and the instant ack."""
    # --gc: a fresh heap (heap?gc=1), whatever the registry's gc_triggers say for users
    return parse_args(argv, USAGE, flags={"--force": "force", "--gc": "gc"}, min_positionals=1,
                      max_positionals=1)


async def handle(runtime: Runtime, argv: list[str], inv: Invocation) -> Reply:
    """Capture (or reuse one inside the cooldown unless --force) and show the outcome."""
    args = check(argv)
    service = args.positionals[0]
    captured = await runtime.capture(service, trigger="user", requested_by=inv.user_id,
                                     force=args.flag("force"), gc=args.flag("gc"))
    snapshot = captured.snapshot
    answered = sum(1 for i in snapshot.instances if i.ok)
    total = len(snapshot.instances)
    heap = snapshot.memstats.get("HeapInuse")
    goroutines = snapshot.goroutine_total
    facts = [f"heap in use {format_bytes(heap)} (MemStats HeapInuse; `/heap top` totals "
             "the sampled live objects, usually less)" if heap is not None else "",
             f"{goroutines:,} goroutines" if goroutines is not None else "",
             f"build {short_build_id(snapshot.build_id)}" if snapshot.build_id else ""]
    context = [" · ".join([service, f"{answered}/{total} instances",
                           f"captured {format_clock(snapshot.taken_at)}",
                           f"snapshot {snapshot.id}"])]
    sections = []
    if captured.reused:
        title = f"Reused the capture of {service} from {format_duration(captured.age_seconds)} ago"
        sections.append("Inside the service's cooldown heapbot reuses the latest capture; "
                        f"`/heap capture {service} --force` takes a new one now.")
    elif captured.shared:
        title = f"Captured {service}: {answered}/{total} instances (joined a capture in progress)"
    else:
        title = f"Captured {service}: {answered}/{total} instances"
    if (failed := failed_instances_text(snapshot)):
        sections.append(failed)
    if captured.heap_note:
        sections.append(captured.heap_note[0].upper() + captured.heap_note[1:] + ".")
    if (unstored := not_stored_text(captured)):
        sections.append(unstored)
    for marker in captured.deploys_detected:
        sections.append(f"New build since the previous capture ({marker.previous_build_id[:12]} "
                        f"→ {marker.build_id[:12]}): recorded as a deploy.")
    return Reply(
        title=title,
        context=context,
        summary=", ".join(f for f in facts if f),
        table=instance_table(snapshot),
        sections=sections,
        actions=standard_actions(service, snapshot.id, skip={"Capture again"},
                                 stored=captured.stored),
        service=service,
        snapshot_id=snapshot.id,
        data={"snapshot": snapshot.to_json(), "reused": captured.reused,
              "shared": captured.shared, "stored": captured.stored,
              "age_seconds": round(captured.age_seconds, 3),
              "instances_answered": answered, "instances_total": total},
    )
