"""Reply → rich text for the console and the service-mode CLI.

Every string is handed to rich as a ``Text`` (never as markup), so a function
name like ``[]byte`` or a user's ``[bold]`` prints literally.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

from rich import box
from rich.console import Console
from rich.table import Table as RichTable
from rich.text import Text

from bot.reply import Reply, Table

PIPE_WIDTH = 240  # piped output: wide enough that function names never fold mid-word


def output_console() -> Console:
    """The Console replies print to: the terminal's width, or a wide one when piped.

    rich assumes 80 columns when stdout is not a terminal, which folds function
    names like ``main.blockedSendResult`` in two; scripts grepping the output of
    ``heapbot top demo | grep`` need whole names, as ``go tool pprof -top`` prints.
    """
    if sys.stdout.isatty() or os.environ.get("COLUMNS"):
        return Console()
    return Console(width=PIPE_WIDTH)


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
        console.print(rich_table(reply.table))
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
                      file=_NullFile())
    print_reply(reply, console)
    return console.export_text()


class _NullFile:
    """A write sink for a recording Console."""

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass
