"""`/heap stats SERVICE`: runtime.MemStats and goroutines now, and the change since before.

These are the numbers engineers read first in ``heap?debug=1``: HeapAlloc and
HeapInuse (live objects), HeapIdle − HeapReleased (free memory the runtime still
holds, which looks like growth in RSS but is not a leak), Sys, NextGC, NumGC.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bot.reply import Action, Column, Reply, Table
from bot.units import format_bytes, format_since, signed
from handlers._common import (
    Args,
    capture_reply,
    no_profile_reply,
    parse_service,
)

if TYPE_CHECKING:
    from bot.runtime import Runtime
    from handlers.invocation import Invocation

USAGE = "/heap stats SERVICE"

FIELDS = ("HeapAlloc", "HeapInuse", "HeapIdle", "HeapReleased", "HeapSys", "HeapObjects",
          "Sys", "StackInuse", "NextGC", "NumGC", "goroutines")
BYTE_FIELDS = frozenset({"HeapAlloc", "HeapInuse", "HeapIdle", "HeapReleased", "HeapSys",
                         "Sys", "StackInuse", "NextGC"})


def show(name: str, value: int | None) -> str:
    """Bytes in pprof units, counts with thousands separators."""
    if name in BYTE_FIELDS or value is None:
        return format_bytes(value)
    return f"{value:,}"


def change(name: str, now: int | None, before: int | None) -> str:
    """The signed change, in the field's own unit."""
    if now is None or before is None:
        return ""
    delta = now - before
    if name in BYTE_FIELDS or delta == 0:
        return signed(delta)
    return f"{delta:+,}"


def check(argv: list[str]) -> Args:
    """Validate the arguments, syntax only (no I/O): shared by handle() and the instant ack."""
    return parse_service(argv, USAGE)


async def handle(runtime: Runtime, argv: list[str], inv: Invocation) -> Reply:
    """Capture and show MemStats with the change since the previous capture."""
    args = check(argv)
    service = args.positionals[0]
    capture = await runtime.capture(service, requested_by=inv.user_id,
                                    force=args.flag("force"))
    snapshot = capture.snapshot
    now: dict[str, int] = dict(capture.memstats)
    goroutines = (capture.goroutines.total if capture.goroutines is not None
                  else snapshot.goroutine_total)
    if goroutines is not None:
        now["goroutines"] = int(goroutines)
    if not capture.memstats:
        return no_profile_reply(service, snapshot, "runtime.MemStats (heap?debug=1)")

    previous = await runtime.previous(service, snapshot)
    before: dict[str, int] = {}
    if previous is not None:
        before = dict(previous.memstats)
        prev_summary = previous.summary
        if not before and prev_summary is not None:
            before = dict(prev_summary.memstats)
        prev_goroutines = previous.goroutine_total
        if prev_goroutines is None and prev_summary is not None:
            prev_goroutines = prev_summary.goroutine_total
        if prev_goroutines is not None:
            before["goroutines"] = int(prev_goroutines)
    when = format_since(previous.taken_at, snapshot.taken_at) if previous is not None else ""

    columns = [Column("field", "left"), Column("now")]
    if before:
        columns += [Column(f"at {when}"), Column("change")]
    rows = []
    for name in FIELDS:
        if name not in now and name not in before:
            continue
        row = [name, show(name, now.get(name))]
        if before:
            row += [show(name, before.get(name)), change(name, now.get(name), before.get(name))]
        rows.append(row)

    return capture_reply(
        capture,
        title=f"{service}: runtime.MemStats",
        context=["summed over instances"],
        summary=takeaway(now, before, when),
        table=Table(columns=columns, rows=rows),
        actions=[Action("Top", f"top {service}", "primary"),
                 Action("Goroutines", f"goroutines {service}"),
                 Action("Diff vs previous", f"diff {service} since previous"),
                 Action("Leaks", f"leaks {service}")],
        data={"memstats": now, "previous": before or None,
              "previous_snapshot_id": previous.id if previous is not None else None},
        shows_heap=False,  # the heap profile's GC note belongs to top/diff/peek/list
    )


def takeaway(now: dict[str, int], before: dict[str, int], when: str) -> str:
    """What the numbers say: live heap, its change, and free-but-held memory."""
    parts = []
    inuse = now.get("HeapInuse")
    if inuse is not None:
        text = f"HeapInuse {show('HeapInuse', inuse)}"
        if "HeapInuse" in before:
            delta = change("HeapInuse", inuse, before["HeapInuse"])
            text += f" ({delta} since {when})" if delta != "0" else f" (unchanged since {when})"
        parts.append(text)
    held = max(0, now.get("HeapIdle", 0) - now.get("HeapReleased", 0))
    if held:
        parts.append(f"{show('HeapIdle', held)} is idle heap the runtime has not returned to "
                     "the OS yet (HeapIdle − HeapReleased): it counts in RSS but is not a leak")
    if "goroutines" in now:
        text = f"{now['goroutines']:,} goroutines"
        if "goroutines" in before:
            moved = now["goroutines"] - before["goroutines"]
            text += f" ({moved:+,})" if moved else " (unchanged)"
        parts.append(text)
    return "; ".join(parts) + "." if parts else "No MemStats fields were reported."
