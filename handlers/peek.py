"""`/heap peek SERVICE FUNC_RE`: who calls the matching functions and what they call.

pprof's ``-peek``: for each matching function its flat and cum value, the callers
above it and the callees below it, each with the value that flows through that
call and its share of the function's cum.
"""

from __future__ import annotations

import asyncio
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from bot.analysis.top import TopOptions
from bot.errors import CaptureError
from bot.logs import target_name
from bot.reply import Action, Column, Reply, Table
from handlers._common import (
    capture_reply,
    check_regex,
    check_sample_type,
    no_profile_reply,
    parse_args,
    usage_error,
)

if TYPE_CHECKING:
    from bot.analysis.peek import PeekEdge
    from bot.pprof import Profile
    from bot.runtime import Captured, Runtime
    from handlers.invocation import Invocation

R = TypeVar("R")

USAGE = "/heap peek SERVICE FUNC_RE"
VALUED = {"--type": "type", "-t": "type", "--focus": "focus", "--ignore": "ignore",
          "--hide": "hide", "-n": "n", "--nodes": "n"}
MAX_FUNCTIONS = 6
MAX_EDGES = 8


@dataclass(frozen=True, slots=True)
class RegexCommand:
    """``SERVICE FUNC_RE [options]`` of peek and list, checked."""

    service: str
    regex: str
    options: TopOptions
    force: bool = False


def parse_regex_command(argv: list[str], usage: str) -> RegexCommand:
    """SERVICE FUNC_RE and the report options shared by peek and list."""
    args = parse_args(argv, usage, flags={"--force": "force"}, valued=VALUED,
                      min_positionals=1, max_positionals=2)
    if len(args.positionals) < 2:
        raise usage_error("Which functions? Give a FUNC_RE, e.g. `main\\.handle`.", usage)
    service, regex = args.positionals
    check_regex(regex, usage, "function regex")
    options = TopOptions(sample_type=check_sample_type(args.get("type"), usage),
                         focus=check_regex(args.get("focus"), usage),
                         ignore=check_regex(args.get("ignore"), usage),
                         hide=check_regex(args.get("hide"), usage))
    return RegexCommand(service, regex, options, force=args.flag("force"))


def check(argv: list[str]) -> RegexCommand:
    """Validate the arguments, syntax only (no I/O): the instant ack uses what handle() uses."""
    return parse_regex_command(argv, USAGE)


async def capture_and_analyse(runtime: Runtime, argv: list[str], inv: Invocation, usage: str,
                              analyse: Callable[[Profile, str, TopOptions], R]
                              ) -> tuple[str, str, Captured, R]:
    """Parse SERVICE FUNC_RE, capture, run ``analyse(profile, regex, options)`` off the loop.

    Raises CaptureError (a HeapbotError) when no instance returned a heap profile.
    """
    command = parse_regex_command(argv, usage)
    service, regex = command.service, command.regex
    capture = await runtime.capture(service, requested_by=inv.user_id, force=command.force)
    if capture.heap is None:
        raise CaptureError(no_profile_reply(service, capture.snapshot).sections[0])
    report = await asyncio.to_thread(analyse, capture.heap, regex, command.options)
    return service, regex, capture, report


def _edge_rows(kind: str, edges: list[PeekEdge], cum: int,
               fmt: Callable[[int], str]) -> list[list[str]]:
    """Rows of one side of a peek entry (callers or callees), the long tail counted."""
    from bot.units import percentage

    rows = [[kind, edge.function + (" (inline)" if edge.inline else ""), "", "",
             fmt(edge.value), percentage(edge.value, cum).strip()] for edge in edges[:MAX_EDGES]]
    if len(edges) > MAX_EDGES:
        rows.append([kind, f"… {len(edges) - MAX_EDGES} more {kind}s", "", "", "", ""])
    return rows


async def handle(runtime: Runtime, argv: list[str], inv: Invocation) -> Reply:
    """Capture and show callers and callees of the functions matching FUNC_RE."""
    from bot.analysis.peek import peek
    from bot.units import output_unit, percentage, scaled_label

    service, regex, capture, report = await capture_and_analyse(runtime, argv, inv, USAGE, peek)
    entries = report.entries[:MAX_FUNCTIONS]
    unit = output_unit([e.flat or e.cum for e in entries], report.total, report.unit)

    def fmt(value: int) -> str:
        return scaled_label(value, report.unit, unit)

    rows: list[list[str]] = []
    for entry in entries:
        rows.extend(_edge_rows("caller", entry.callers, entry.cum, fmt))
        rows.append(["▶", entry.function, fmt(entry.flat), fmt(entry.cum), "",
                     percentage(entry.cum, report.total).strip() + " of total"])
        rows.extend(_edge_rows("callee", entry.callees, entry.cum, fmt))
    more = len(report.entries) - len(entries)
    caption = (f"{len(entries)} matching function{'s' if len(entries) != 1 else ''}"
               + (f" (and {more} more: narrow FUNC_RE)" if more > 0 else "")
               + f"; calls% is the share of the function's cum; total {fmt(report.total)}")
    first = entries[0] if entries else None
    summary = ""
    if first is not None:
        summary = (f"{first.function}: flat {fmt(first.flat)}, cum {fmt(first.cum)} "
                   f"({percentage(first.cum, report.total).strip()} of "
                   f"{target_name(report.sample_type)})")
        if first.callers:
            main = max(first.callers, key=lambda e: e.value)
            summary += (f"; mostly reached from {main.function} "
                        f"({percentage(main.value, first.cum).strip()})")
        summary += "."
    return capture_reply(
        capture,
        title=f"{service}: peek {regex}",
        context=[target_name(report.sample_type)],
        summary=summary,
        table=Table(columns=[Column("", "left"), Column("function", "left"), Column("flat"),
                             Column("cum"), Column("calls"), Column("calls%")],
                    rows=rows, caption=caption),
        actions=[Action("List lines", f"list {service} {shlex.quote(regex)}", "primary"),
                 Action("Top", f"top {service}"),
                 Action("Leaks", f"leaks {service}")],
        data=report.to_json(),
    )
