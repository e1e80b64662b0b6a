"""`/heap top SERVICE [N] [--cum] [--type T] [--focus RE]`: pprof's top table, live.

Captures every instance (or reuses a capture inside the cooldown), merges the
heap profiles like pprof and answers with the same numbers as
``go tool pprof -top``, plus one line that says what holds the memory and how
that changed since the previous stored capture.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Literal

from bot.errors import UsageError
from bot.logs import target_name
from bot.reply import Action, Attachment, Reply
from bot.units import format_bytes, signed
from handlers._common import (
    Args,
    capture_reply,
    check_regex,
    check_sample_type,
    instances_text,
    no_profile_reply,
    not_stored_text,
    parse_args,
    parse_count,
    standard_actions,
    top_table,
)

if TYPE_CHECKING:
    from bot.analysis.top import TopOptions, TopReport
    from bot.pprof import Profile
    from bot.runtime import Captured, Runtime
    from bot.store import StoredSnapshot
    from handlers.invocation import Invocation

USAGE = ("/heap top SERVICE [N] [--cum] [--type inuse_space|inuse_objects|alloc_space|"
         "alloc_objects] [--focus RE] [--download] [--flame] [--gc]")

# --download attaches the merged profile; --per-instance each instance's own raw file instead;
# --gc asks for a fresh heap (heap?gc=1)
FLAGS = {"--cum": "cum", "--download": "download", "--force": "force",
         "--per-instance": "per_instance", "--flame": "flame", "--gc": "gc"}
VALUED = {"--type": "type", "-t": "type", "--focus": "focus", "--ignore": "ignore",
          "--hide": "hide", "-n": "n", "--nodes": "n", "--snapshot": "snapshot"}

WHAT = {
    "inuse_space": "of in-use memory",
    "inuse_objects": "of in-use objects",
    "alloc_space": "of bytes allocated since start",
    "alloc_objects": "of objects allocated since start",
}


def check(argv: list[str]) -> Args:
    """Validate the arguments, syntax only (no I/O): shared by handle() and the instant ack.

    Returns the parsed arguments with ``n``, ``type`` and ``snapshot`` normalised.
    """
    args = parse_args(argv, USAGE, flags=FLAGS, valued=VALUED, min_positionals=1,
                      max_positionals=2)
    count_text = args.positionals[1] if len(args.positionals) > 1 else args.get("n")
    args.count = parse_count(count_text, USAGE)
    args.set("type", check_sample_type(args.get("type"), USAGE))
    for key in ("focus", "ignore", "hide"):
        check_regex(args.get(key), USAGE)
    if (snapshot := args.get("snapshot")):
        args.set("snapshot", snapshot_ref(snapshot, args.positionals[0]))
    return args


async def precheck(runtime: Runtime, argv: list[str], inv: Invocation) -> None:
    """A `--snapshot` that is not stored is refused before the console's "Loading…" ack."""
    args = check(argv)
    if (snapshot := args.get("snapshot")):
        await runtime.resolve_since(args.positionals[0], snapshot)


async def handle(runtime: Runtime, argv: list[str], inv: Invocation) -> Reply:
    """Capture (or load ``--snapshot ID``) and answer with the top table."""
    args = check(argv)
    service = args.positionals[0]
    if (snapshot := args.get("snapshot")):
        capture = await runtime.open_snapshot(service, snapshot)
    else:
        capture = await runtime.capture(service, requested_by=inv.user_id,
                                        force=args.flag("force"), gc=args.flag("gc"))
    download: bool | str = "instances" if args.flag("per_instance") else args.flag("download")
    return await top_reply(runtime, capture, sample_type=args.get("type"),
                           sort="cum" if args.flag("cum") else "flat", count=args.count,
                           focus=args.get("focus"), ignore=args.get("ignore"),
                           hide=args.get("hide"), download=download,
                           flame=args.flag("flame"))


def snapshot_ref(text: str, service: str) -> str:
    """A ``--snapshot`` value: a snapshot id (or a since-reference such as ``previous``)."""
    from bot.runtime import check_since_ref

    try:
        return check_since_ref(text)
    except UsageError:
        raise UsageError(f"`--snapshot {text[:40]}` is not a snapshot id (they look like "
                         "20261121-224512-a3f9).",
                         hint=f"`/heap history {service}` lists the stored ones.") from None


async def top_reply(runtime: Runtime, capture: Captured, *, sample_type: str | None = None,
                    sort: Literal["flat", "cum"] = "flat", count: int = 10,
                    focus: str | None = None, ignore: str | None = None, hide: str | None = None,
                    download: bool | str = False, flame: bool = False) -> Reply:
    """The top Reply for a capture (shared with `/heap capture`-like callers)."""
    from bot.analysis.top import TopOptions, top

    service, snapshot = capture.service, capture.snapshot
    if capture.heap is None:
        return no_profile_reply(service, snapshot)
    options = TopOptions(sample_type=sample_type, sort=sort, node_count=count, focus=focus,
                         ignore=ignore, hide=hide)
    report = await asyncio.to_thread(top, capture.heap, options)
    shown = len(report.rows)
    caption = pprof_header(report)
    filtered = bool(focus or ignore or hide)
    previous = await runtime.previous(service, snapshot)
    summary = takeaway(report, previous, filtered=filtered, taken_at=snapshot.taken_at,
                       stored=capture.stored)

    reply = capture_reply(
        capture,
        title=f"{service}: top {shown} by {target_name(report.sample_type)}"
              + (f" (focus {focus})" if focus else ""),
        context=[target_name(report.sample_type)],
        summary=summary,
        table=top_table(report, caption=caption),
        sections=[heap_numbers_note(report.sample_type, snapshot), not_stored_text(capture)],
        actions=standard_actions(service, capture.snapshot_id, stored=capture.stored),
        data={**report.to_json(), "taken_at": capture.taken_at, "reused": capture.reused,
              "build_id": snapshot.build_id},
    )
    if download == "instances":
        reply.attachments.extend(await raw_profile_attachments(runtime, service, snapshot))
        if not reply.attachments:
            reply.sections.append("The raw profiles of this capture are no longer stored.")
        elif reply.attachments[0].filename.endswith("-merged-heap.pb.gz"):
            reply.sections.append(
                "Only the merged profile of this capture is stored: heapbot keeps each "
                "instance's own file for the newest captures only (HEAPBOT_RAW_CAPTURES).")
        elif len(reply.attachments) > 1:
            reply.sections.append(
                f"One file per instance; `go tool pprof -top {service}-*-heap.pb.gz` merges "
                "them like this table does.")
    elif download:
        attachment = await merged_profile_attachment(capture, capture.heap)
        reply.attachments.append(attachment)
        reply.sections.append(f"`go tool pprof -top {attachment.filename}` shows this table "
                              "(the profiles of every answering instance, merged).")
    await add_flame(reply, capture, capture.heap, options, flame)
    return reply


async def add_flame(reply: Reply, capture: Captured, profile: Profile, options: TopOptions,
                    draw: bool) -> None:
    """The "Flame graph" button, or with ``--flame`` the flame graph files themselves."""
    from handlers._flame import flame_attachments, flame_option_words

    if draw:
        reply.attachments.extend(await flame_attachments(
            profile, options, service=capture.service, snapshot_id=capture.snapshot_id,
            captured_at=capture.taken_at))
    elif capture.snapshot_id:
        words = flame_option_words(options)
        reply.actions.append(Action("Flame graph", f"top {capture.service} --snapshot "
                                    f"{capture.snapshot_id} --flame" + (f" {words}" if words
                                                                        else "")))


def pprof_header(report: TopReport) -> str:
    """pprof's lines above the table (``TopReport.header_lines``) as one caption."""
    return "; ".join([*report.header_lines(), *(["sorted by cum"] if report.sort == "cum" else [])])


def heap_numbers_note(sample_type: str, snapshot: StoredSnapshot) -> str:
    """One line on why Total differs from the capture's "heap in use" (MemStats HeapInuse)."""
    heap_inuse = snapshot.memstats.get("HeapInuse")
    if sample_type != "inuse_space" or not heap_inuse:
        return ""
    return (f"Two heap numbers: Total is pprof's inuse_space (sampled live objects as of the "
            f"last GC); heap in use {format_bytes(heap_inuse)} is MemStats HeapInuse (whole "
            "spans in use now), so the two differ.")


def takeaway(report: TopReport, previous: StoredSnapshot | None, *,
             filtered: bool = False, taken_at: float | None = None, stored: bool = True) -> str:
    """"main.(*sessionStore).Put holds 41% of in-use memory, +18.20MB since 14:02:11 UTC"."""
    from bot.units import format_since, format_value

    if not report.rows or report.total == 0:
        return f"The profile holds nothing for {target_name(report.sample_type)}."
    leader = max(report.rows, key=lambda r: abs(r.flat))
    verb = "holds" if report.sample_type.startswith("inuse") else "accounts for"
    text = (f"{leader.function} {verb} {leader.flat_pct:.0f}% "
            f"{WHAT.get(report.sample_type, 'of ' + target_name(report.sample_type))}")
    prev_summary = previous.summary if previous is not None else None
    if previous is None or prev_summary is None or filtered:
        if previous is None and stored:  # unstored (Redis down): no history was read at all
            text += " (first stored capture: the next one will show the change)"
        return text + "."
    when = format_since(previous.taken_at, taken_at)
    before = {fv.function: fv.flat
              for fv in prev_summary.heap.functions.get(report.sample_type, [])}
    if leader.function in before:
        delta = leader.flat - before[leader.function]
        text += (f", {signed(delta, report.unit)} since {when}" if delta
                 else f", unchanged since {when}")
    elif before:  # the previous summary tracked the leading functions, and not this one
        text += f", new among the leading functions since {when}"
    prev_total = prev_summary.heap.totals.get(report.sample_type)
    if prev_total is not None:
        text += (f". Total {format_value(report.total, report.unit)}, "
                 f"{signed(report.total - prev_total, report.unit)} since {when}")
    return text + "."


async def merged_profile_attachment(capture: Captured, profile: Profile) -> Attachment:
    """The service's merged heap profile as ONE .pb.gz that ``go tool pprof`` opens.

    It is the profile this table was computed from, so pprof's ``-top`` on the
    file equals the table (same functions, values and totals).
    """
    from bot.pprof.encode import encode_profile

    snapshot_id = capture.snapshot_id or "unsaved"
    answered = instances_text(capture.snapshot)
    content = await asyncio.to_thread(encode_profile, profile)
    return Attachment(
        filename=f"{capture.service}-{snapshot_id}-heap.pb.gz",
        content=content,
        title=f"heap profile of {capture.service}, snapshot {snapshot_id}"
              + (f" (merged from {answered})" if answered else ""),
        kind="profile",
    )


MAX_PROFILE_FILES = 10


async def raw_profile_attachments(runtime: Runtime, service: str, snapshot: StoredSnapshot
                                  ) -> list[Attachment]:
    """Each answering instance's stored heap profile as a .pb.gz (at most 10): ``--instances``.

    ``go tool pprof -top a.pb.gz b.pb.gz …`` merges them the way heapbot did.
    """
    import gzip

    raws = await runtime.raw_profiles(service, snapshot.id, "heap")
    instances = snapshot.instances
    several = len(raws) > 1
    attachments = []
    for index, data in raws[:MAX_PROFILE_FILES]:
        if not data:
            continue
        if index < 0:  # per-instance files aged out: the stored merge (store.MERGED)
            attachments.append(Attachment(
                filename=f"{service}-{snapshot.id}-merged-heap.pb.gz", content=data,
                title=f"merged heap profile of {service}, snapshot {snapshot.id} "
                      "(per-instance files are no longer kept)", kind="profile"))
            continue
        if not data.startswith(b"\x1f\x8b"):  # Go serves gzip; keep the .pb.gz name honest
            data = gzip.compress(data)
        target = instances[index].target if index < len(instances) else ""
        suffix = f"-i{index}" if several else ""
        attachments.append(Attachment(
            filename=f"{service}-{snapshot.id}{suffix}-heap.pb.gz",
            content=data,
            title=f"heap profile of {service}" + (f" ({target})" if target else "")
                  + f", snapshot {snapshot.id}",
            kind="profile",
        ))
    return attachments
