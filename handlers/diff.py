"""`/heap diff SERVICE [since previous|deploy|1h|ID]`: what grew, pprof -diff_base style.

Captures now, resolves the earlier capture through the Runtime, and diffs the
merged heap profiles with the engine: base negated and merged, percentages of
the base total, rows by absolute change, "new"/"gone" marked.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from bot.errors import UsageError
from bot.logs import target_name
from bot.reply import Action, Reply
from bot.units import format_clock, format_duration, format_since, signed
from handlers._common import (
    Args,
    capture_reply,
    check_regex,
    check_sample_type,
    context_lines,
    no_profile_reply,
    parse_args,
    parse_count,
    short_build_id,
    top_table,
)

if TYPE_CHECKING:
    from bot.analysis.top import TopReport
    from bot.runtime import Captured, Runtime
    from bot.store import StoredSnapshot
    from handlers.invocation import Invocation

USAGE = "/heap diff SERVICE [since previous|deploy|1h|SNAPSHOT_ID] [--flame] [--gc]"

FLAGS = {"--cum": "cum", "--force": "force", "--flame": "flame", "--gc": "gc"}
VALUED = {"--type": "type", "-t": "type", "--focus": "focus", "--ignore": "ignore",
          "--hide": "hide", "-n": "n", "--nodes": "n", "--since": "since"}


def since_ref(positionals: list[str], option: str | None) -> str:
    """`payments`, `payments since deploy`, `payments deploy`, `--since 1h` → the reference."""
    rest = positionals[1:]
    if rest and rest[0].lower() == "since":
        rest = rest[1:]
        if not rest:
            raise UsageError("`since` needs a reference.", hint=f"Usage: `{USAGE}`")
    if len(rest) > 1:
        raise UsageError(f"Unexpected argument `{' '.join(rest[1:])[:40]}`.",
                         hint=f"Usage: `{USAGE}`")
    if rest and option:
        raise UsageError("Give the reference once (either `since X` or `--since X`).",
                         hint=f"Usage: `{USAGE}`")
    from bot.runtime import check_since_ref

    return check_since_ref(rest[0] if rest else option)


def check(argv: list[str]) -> Args:
    """Validate the arguments, syntax only (no I/O): shared by handle() and the instant ack.

    Returns the parsed arguments with ``since``, ``n`` and ``type`` normalised.
    """
    args = parse_args(argv, USAGE, flags=FLAGS, valued=VALUED, min_positionals=1,
                      max_positionals=3)
    args.set("since", since_ref(args.positionals, args.get("since")))
    args.count = parse_count(args.get("n"), USAGE)
    args.set("type", check_sample_type(args.get("type"), USAGE))
    for key in ("focus", "ignore", "hide"):
        check_regex(args.get(key), USAGE)
    return args


async def precheck(runtime: Runtime, argv: list[str], inv: Invocation) -> None:
    """Refusals that need the store, before anything is captured or acked.

    `since 1h`, `since deploy`, an id: a base that is not there is said before a
    capture is spent on the answer (and the service's cooldown with it), and before
    the console prints "capturing demo to compare…". Inside the cooldown the capture
    that would be reused is known, so the base is resolved against it (`since
    previous` included) and naming that very capture is refused too. Outside it, `since
    previous` is the capture before the one about to be taken: unknowable before it.
    """
    args = check(argv)
    service = args.positionals[0]
    ref = args.get("since") or "previous"
    forced = args.flag("force") or args.flag("gc")
    reused = None if forced else await runtime.reusable(service)
    if reused is not None:
        base = await runtime.resolve_since(service, ref, reused)
        if base.id == reused.id:
            name = runtime.registry.resolve(service).name
            raise UsageError(
                f"`{ref}` names the capture heapbot would reuse now (the cooldown of "
                f"`{name}`), so there is no change to show.",
                hint=f"`/heap diff {name} since {ref} --force` takes a new capture to compare.")
    elif ref.lower() not in ("previous", "prev", "last"):
        await runtime.resolve_since(service, ref)


async def handle(runtime: Runtime, argv: list[str], inv: Invocation) -> Reply:
    """Capture now, compare with the referenced capture, show the change table."""
    args = check(argv)
    service = args.positionals[0]
    ref, count, sample_type = args.get("since") or "previous", args.count, args.get("type")
    focus, ignore, hide = args.get("focus"), args.get("ignore"), args.get("hide")

    from bot.analysis.diff import diff
    from bot.analysis.top import TopOptions
    from bot.units import format_value

    await precheck(runtime, argv, inv)
    capture = await runtime.capture(service, requested_by=inv.user_id,
                                    force=args.flag("force"), gc=args.flag("gc"))
    heap = capture.heap
    if heap is None:
        return no_profile_reply(service, capture.snapshot)
    base = await runtime.resolve_since(service, ref, capture.snapshot)
    if base.id == capture.snapshot_id:
        return Reply(
            title=f"{service}: nothing to compare yet",
            context=context_lines(capture),
            summary=f"`{ref}` names the capture just taken, so there is no change to show.",
            sections=["Wait for the cooldown to pass (or `/heap capture` later), then diff "
                      "again."],
            service=service, snapshot_id=capture.snapshot_id, ephemeral=True,
        )
    base_profile = await runtime.load_profile(base)
    options = TopOptions(sample_type=sample_type, sort="cum" if args.flag("cum") else "flat",
                         node_count=count, focus=focus, ignore=ignore, hide=hide)
    report = await asyncio.to_thread(diff, base_profile, heap, options)

    base_time = format_clock(base.taken_at)
    span = format_duration(capture.taken_at - base.taken_at)
    base_total = report.base_total if report.base_total is not None else 0
    new_total = base_total + sum_change(report, capture, base)
    caption = (f"Change in {target_name(report.sample_type)} from {base_time} to "
               f"{format_clock(capture.taken_at)} ({span}); % of the base total "
               f"{format_value(base_total, report.unit)}; "
               f"showing {len(report.rows)} of {report.node_total} changed nodes")
    summary = growth_takeaway(report, base_total, new_total,
                              format_since(base.taken_at, capture.taken_at))
    base_build = short_build_id(base.build_id)
    now_build = short_build_id(capture.snapshot.build_id)
    extra = await base_label(runtime, service, ref, base, base_time)
    # the "Diff since deploy" hint only when it can work (and is not this very answer)
    offer_deploy = ref.lower() != "deploy" and await _deploy_recorded(runtime, service)
    sections = []
    if base_build and now_build and base_build != now_build:
        sections.append(f"The binary changed between the captures (build {base_build} → "
                        f"{now_build}): part of the change can be the deploy itself.")
    reply = capture_reply(
        capture,
        title=f"{service}: {target_name(report.sample_type)} change since {ref}",
        context=[extra],
        summary=summary,
        table=top_table(report, caption=caption, with_status=True),
        sections=sections,
        actions=[
            Action("Leaks", f"leaks {service}", "primary"),
            Action("Top now", f"top {service}"),
            Action("Goroutines", f"goroutines {service}"),
            *([Action("Diff since deploy", f"diff {service} since deploy")]
              if offer_deploy else []),
        ],
        data={**report.to_json(), "since": ref, "base_snapshot_id": base.id},
    )
    from handlers._flame import flame_attachments, flame_option_words

    if args.flag("flame"):
        reply.attachments.extend(await flame_attachments(
            heap, options, service=service, snapshot_id=capture.snapshot_id,
            captured_at=capture.taken_at, base=base_profile, base_id=base.id,
            base_captured_at=base.taken_at))
    else:  # the button pins the base, so "previous" still means this one later
        words = flame_option_words(options)
        reply.actions.append(Action("Flame graph", f"diff {service} since {base.id} --flame"
                                    + (f" {words}" if words else "")))
    return reply


async def _deploy_recorded(runtime: Runtime, service: str) -> bool:
    """Whether `since deploy` can work: a deploy marker is stored (False if Redis cannot say)."""
    from bot.errors import HeapbotError

    try:
        return bool(await runtime.deploys(service))
    except HeapbotError:
        return False


async def base_label(runtime: Runtime, service: str, ref: str, base: StoredSnapshot,
                     base_time: str) -> str:
    """"vs the capture of 14:02 UTC, first after deploy v1.2.3": which capture, and why."""
    if ref.lower() != "deploy":
        return f"vs {ref} ({base_time})"
    from bot.errors import HeapbotError

    try:
        markers = await runtime.deploys(service)
    except HeapbotError:
        markers = []
    marker = next((m for m in reversed(markers)
                   if m.taken_at <= base.taken_at), None)
    latest = markers[-1] if markers else None
    if latest is not None and marker is not latest:  # no capture since the deploy but this one
        return (f"vs the capture of {base_time}, the last before deploy "
                f"{latest.version or short_build_id(latest.build_id)}")
    if marker is not None:
        return (f"vs the capture of {base_time}, the first after deploy "
                f"{marker.version or short_build_id(marker.build_id)}")
    return f"vs {ref} ({base_time})"


def sum_change(report: TopReport, capture: Captured, base: StoredSnapshot) -> int:
    """Total change of the sample type: from the stored summaries when both have it."""
    new_summary = capture.snapshot.summary
    base_summary = base.summary
    name = report.sample_type
    if new_summary is not None and base_summary is not None:
        new_total = new_summary.heap.totals.get(name)
        old_total = base_summary.heap.totals.get(name)
        if new_total is not None and old_total is not None:
            return int(new_total) - int(old_total)
    return sum(int(r.flat) for r in report.rows)


def growth_takeaway(report: TopReport, base_total: int, new_total: int, base_time: str) -> str:
    """"main.leak +18.20MB since 14:02 (new); total 120MB, +25MB (+26%)"."""
    unit = report.unit
    from bot.units import format_value

    change = new_total - base_total
    pct = f" ({change / base_total * 100:+.0f}%)" if base_total else ""
    total_text = (f"Total {format_value(max(new_total, 0), unit)}, {signed(change, unit)}"
                  f"{pct} since {base_time}.")
    if not report.rows:
        return "No function changed. " + total_text
    grown = max(report.rows, key=lambda r: r.flat)
    if grown.flat <= 0:
        shrunk = min(report.rows, key=lambda r: r.flat)
        return (f"Nothing grew; the biggest drop is {shrunk.function} "
                f"{signed(shrunk.flat, unit)}. " + total_text)
    status = grown.status
    note = " (new since then)" if status == "new" else ""
    return f"Biggest growth: {grown.function} {signed(grown.flat, unit)}{note}. " + total_text
