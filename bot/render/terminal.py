"""Reply → rich text for the console and the service-mode CLI.

Every string is handed to rich as a ``Text`` (never as markup), so a function
name like ``[]byte`` or a user's ``[bold]`` prints literally.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TextIO, cast

from rich import box
from rich.console import Console
from rich.measure import Measurement
from rich.segment import Segments
from rich.table import Table as RichTable
from rich.text import Text

from bot.reply import Reply, Table

_UNBOUNDED = 100_000  # measuring width: larger than any table
PIPE_WIDTH = 100  # piped output: only rules and headings use it; text and tables never wrap


class _TrailingSpaceStripper:
    """A file wrapper that drops the spaces rich pads each line with, for piped output.

    rich pads every table cell (and the last column) to its column width; in a
    pipe that is noise at the end of every line (`heapbot help | cat -A`).
    Complete lines are written at once, without their trailing spaces.
    """

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._pending = ""

    def write(self, text: str) -> int:
        lines = (self._pending + text).split("\n")
        self._pending = lines.pop()
        if lines:
            self._stream.write("".join(line.rstrip(" ") + "\n" for line in lines))
        return len(text)

    def flush(self) -> None:
        if self._pending:
            self._stream.write(self._pending)
            self._pending = ""
        self._stream.flush()

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return self._stream.fileno()


def output_console(file: TextIO | None = None) -> Console:
    """The Console replies print to: the terminal as it is, or a pipe without wrapping.

    rich assumes 80 columns when stdout is not a terminal and folds long words,
    which broke ``main.leakmapSetContext`` in two; scripts grepping
    ``heapbot top demo | grep main.`` need whole names, as ``go tool pprof -top``
    prints them. Piped, text is never wrapped (``soft_wrap``), tables are as wide
    as their content (see :func:`print_table`), and lines carry no trailing spaces.
    """
    stream = file or sys.stdout
    if stream.isatty():
        return Console(file=stream)
    width = int(os.environ.get("COLUMNS", "0") or 0) or PIPE_WIDTH
    # cast: rich types ``file`` as IO[str] but only writes, flushes and asks isatty/fileno.
    return Console(file=cast(TextIO, _TrailingSpaceStripper(stream)), width=width,
                   soft_wrap=True)


def print_table(console: Console, table: RichTable) -> None:
    """Print a table at its natural width when that is wider than the console.

    A function name is never folded across lines: a table wider than the
    terminal is printed whole and the terminal wraps its long lines, as it
    does for ``go tool pprof -top``.
    """
    natural = Measurement.get(console, console.options.update_width(_UNBOUNDED), table).maximum
    if natural <= console.width:
        console.print(table)
        return
    console.print(Segments(console.render(table, console.options.update_width(natural))),
                  soft_wrap=True)


def rich_table(table: Table) -> RichTable:
    """A rich table with the Reply table's columns, alignment and caption."""
    out = RichTable(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False,
                    caption=Text(table.caption, style="dim") if table.caption else None,
                    caption_justify="left")
    for column in table.columns:
        out.add_column(Text(column.name, style="bold"), justify=column.align,
                       overflow="fold" if column.align == "left" else "ellipsis",
                       no_wrap=column.align != "left")
    for row in table.rows:
        cells = list(row[: len(table.columns)]) + [""] * max(0, len(table.columns) - len(row))
        out.add_row(*(Text(c) for c in cells))
    return out


def print_reply(reply: Reply, console: Console | None = None,
                saved: Mapping[str, Path] | None = None) -> None:
    """Print a Reply: title, context, summary, table, sections, actions, attachments.

    ``saved`` maps an attachment's filename to where the caller wrote it.
    """
    console = console or Console()
    title_style = "bold red" if reply.error else "bold"
    console.print(Text(reply.title, style=title_style))
    if reply.context:
        console.print(Text(" · ".join(c for c in reply.context if c), style="dim"))
    if reply.summary:
        console.print(Text(reply.summary, style="yellow" if not reply.error else ""))
    if reply.table is not None and reply.table.rows:
        print_table(console, rich_table(reply.table))
    for section in reply.sections:
        if section:
            console.print(Text(section))
    for attachment in reply.attachments:
        path = (saved or {}).get(attachment.filename)
        where = f" → saved to {path}" if path else ""
        console.print(Text(f"attached: {attachment.filename} ({len(attachment.content):,} "
                           f"bytes){where}", style="cyan"))
    if reply.actions:
        hints = "   ".join(f"{a.label}: /heap {a.command}" for a in reply.actions)
        console.print(Text("next: " + hints, style="dim"))


def reply_to_text(reply: Reply, width: int = 120) -> str:
    """The terminal rendering as plain text (no colours): for logs and tests."""
    console = Console(width=width, record=True, color_system=None, force_terminal=False,
                      file=cast(TextIO, _NullFile()))  # (cast: see output_console)
    print_reply(reply, console)
    return console.export_text()


class _NullFile:
    """A write sink for a recording Console."""

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass
