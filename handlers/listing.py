"""`/heap list SERVICE FUNC_RE`: which source lines of the matching functions hold memory.

pprof's ``-list``: for each matching function its file, flat and cum, then every
line that carries a value, with its source text when the registry's ``source:``
block says where the source is (bot/source.py); otherwise a line saying how to
configure it.
"""

from __future__ import annotations

import shlex
from typing import TYPE_CHECKING

from bot.logs import target_name
from bot.reply import Action, Column, Reply, Table
from handlers._common import capture_reply, short_path
from handlers.peek import RegexCommand, capture_and_analyse, parse_regex_command

if TYPE_CHECKING:
    from bot.runtime import Runtime
    from handlers.invocation import Invocation

USAGE = "/heap list SERVICE FUNC_RE"
MAX_FUNCTIONS = 6
MAX_LINES = 15
MAX_SOURCE_CHARS = 72  # a source line in the table, cut with "…" beyond this


def check(argv: list[str]) -> RegexCommand:
    """Validate the arguments, syntax only (no I/O): the instant ack uses what handle() uses."""
    return parse_regex_command(argv, USAGE)


async def handle(runtime: Runtime, argv: list[str], inv: Invocation) -> Reply:
    """Capture and show per-line values of the functions matching FUNC_RE."""
    from bot.analysis.listing import list_lines
    from bot.units import format_value, percentage

    service, regex, capture, report = await capture_and_analyse(runtime, argv, inv, USAGE,
                                                                list_lines)
    functions = sorted(report.functions, key=lambda f: -abs(f.cum))[:MAX_FUNCTIONS]
    sources = await runtime.sources(service, [f.file for f in functions],
                                    build_id=capture.snapshot.build_id)

    def fmt(value: int) -> str:
        return format_value(value, report.unit) if value else "."

    rows: list[list[str]] = []
    for function in functions:
        rows.append([f"{function.function} ({_short_file(function.file)})",
                     fmt(function.flat), fmt(function.cum),
                     percentage(function.cum, report.total).strip()])
        lines = sorted(function.lines, key=lambda x: -abs(x.flat or x.cum))[:MAX_LINES]
        text = sources.texts.get(function.file, [])
        for line in sorted(lines, key=lambda x: x.line):
            rows.append([_line_label(line.line, text), fmt(line.flat), fmt(line.cum),
                         percentage(line.cum, report.total).strip()])
        if len(function.lines) > MAX_LINES:
            rows.append([f"    … {len(function.lines) - MAX_LINES} more lines", "", "", ""])
    more = len(report.functions) - len(functions)
    caption = (f"{target_name(report.sample_type)}; "
               f"total {format_value(report.total, report.unit)}; "
               "lines with no value are left out"
               + (f"; {more} more matching functions (narrow FUNC_RE)" if more > 0 else ""))
    summary = ""
    candidates = [(line.flat, function, line) for function in report.functions
                  for line in function.lines if line.flat > 0]
    if candidates:
        flat, function, line = max(candidates, key=lambda c: c[0])
        summary = (f"{_short_file(function.file)}:{line.line} in {function.function} holds "
                   f"{fmt(flat)} ({percentage(flat, report.total).strip()} of "
                   f"{target_name(report.sample_type)}): the line that allocates the most.")
    elif functions:
        summary = (f"{functions[0].function} allocates nothing itself; {fmt(functions[0].cum)} "
                   "is in what it calls (try peek).")
    return capture_reply(
        capture,
        sections=[sources.note(service)],
        title=f"{service}: list {regex}",
        context=[target_name(report.sample_type)],
        summary=summary,
        table=Table(columns=[Column("function / line", "left"), Column("flat"), Column("cum"),
                             Column("cum%")], rows=rows, caption=caption),
        actions=[Action("Peek callers", f"peek {service} {shlex.quote(regex)}", "primary"),
                 Action("Top", f"top {service}"),
                 Action("Leaks", f"leaks {service}")],
        data=report.to_json(),
    )


def _short_file(path: str) -> str:
    """The package directory and file name: enough to open it in an editor."""
    return short_path(path) or "?"


def _line_label(number: int, text: list[str]) -> str:
    """"    line 80", or "    80  return &sessionUser{…}" when the source was found."""
    if not 0 < number <= len(text):
        return f"    line {number}"
    code = " ".join(text[number - 1].split())
    if len(code) > MAX_SOURCE_CHARS:
        code = code[: MAX_SOURCE_CHARS - 1] + "…"
    return f"    {number}  {code}"
