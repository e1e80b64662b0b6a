"""Reply → Slack Block Kit, within Slack's limits.

A message holds at most 50 blocks, one ``table`` block, section texts of at most
3000 characters, a header of at most 150, button texts of at most 75 and button
values of at most 2000. Replies carry plain text (the console shows it as typed);
here, at Slack's edge, every shown text is made inert (:func:`neutralize_mentions`:
``<!channel>``, ``<@U…>``, ``<#C…>``, bare ``@here``) and every mrkdwn text is
escaped (``&``, ``<``, ``>``), so no text can form a link or a ping. The table
goes out twice: as Slack's native ``table`` block in the blocks, and as
preformatted text in the notification ``text`` (``fallback_text``) that clients
without table support show. Pass ``native_table=False`` to put the preformatted
table in the blocks instead (e.g. when Slack refuses the table block for a surface).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from bot.reply import Action, Column, Reply, Table

MAX_BLOCKS = 50
MAX_TEXT = 3000  # section text, mrkdwn text objects
MAX_HEADER = 150
MAX_BUTTON_TEXT = 75
MAX_BUTTON_VALUE = 2000
MAX_BUTTONS_PER_BLOCK = 25
MAX_CONTEXT_ELEMENTS = 10
MAX_TABLE_ROWS = 100  # including the header row
MAX_TABLE_COLUMNS = 20
MAX_CELL = 2000
MAX_FALLBACK = 4000  # Slack advises keeping the top-level text short
FUNCTION_WIDTH = 72  # widest function name in the preformatted table


# Slack's special syntax that pings or links: <!channel>, <!here|here>, <@U123>,
# <#C123|general>, <!subteam^S123|@team>, plus bare @channel/@here/@everyone.
_SLACK_SPECIAL = re.compile(r"<([!@#])([^<>|]*)(?:\|([^<>]*))?>")
_BARE_BROADCAST = re.compile(r"@(channel|here|everyone)\b", re.IGNORECASE)
_ZWSP = "\u200b"


def neutralize_mentions(text: str) -> str:
    """Make text unable to ping or link when shown in Slack, and still readable.

    ``<!channel>`` becomes ``@\u200bchannel``, ``<@U123>`` becomes ``@\u200bU123``,
    ``<#C123|ops>`` becomes ``#\u200bops``; bare ``@here`` gets a zero-width space.
    """

    def _replace(match: re.Match[str]) -> str:
        sigil, ref, label = match.group(1), match.group(2), match.group(3)
        if sigil == "#":
            return "#" + _ZWSP + (label or ref)
        shown = (label or ref).lstrip("@")
        if sigil == "!" and shown.startswith("subteam^"):
            shown = shown.split("^", 1)[1]
        return "@" + _ZWSP + shown

    text = _SLACK_SPECIAL.sub(_replace, text)
    return _BARE_BROADCAST.sub(lambda m: "@" + _ZWSP + m.group(1), text)


def inert_reply(reply: Reply) -> Reply:
    """A copy of ``reply`` whose every shown text is neutralised (button commands are kept)."""
    table = reply.table
    if table is not None:
        table = Table(columns=[Column(neutralize_mentions(c.name), c.align)
                               for c in table.columns],
                      rows=[[neutralize_mentions(cell) for cell in row] for row in table.rows],
                      caption=neutralize_mentions(table.caption))
    return dataclasses.replace(
        reply, title=neutralize_mentions(reply.title),
        context=[neutralize_mentions(c) for c in reply.context],
        summary=neutralize_mentions(reply.summary),
        sections=[neutralize_mentions(s) for s in reply.sections], table=table,
        actions=[Action(neutralize_mentions(a.label), a.command, a.style)
                 for a in reply.actions])


def escape_mrkdwn(text: str) -> str:
    """Escape the three characters Slack's mrkdwn treats as control characters."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clip(text: str, limit: int) -> str:
    """Cut ``text`` to ``limit`` characters, marking the cut with an ellipsis."""
    return text if len(text) <= limit else text[: max(0, limit - 1)] + "…"


def _clip_escaped(text: str, limit: int) -> str:
    """Escape, then clip without leaving half an ``&amp;`` entity behind."""
    escaped = escape_mrkdwn(text)
    if len(escaped) <= limit:
        return escaped
    cut = escaped[: limit - 1]
    amp = cut.rfind("&")
    if amp != -1 and ";" not in cut[amp:]:
        cut = cut[:amp]
    return cut + "…"


def _clip_left(text: str, width: int) -> str:
    """Keep the end of a long function name: the type and method say the most."""
    return text if len(text) <= width else "…" + text[-(width - 1):]


def table_text(table: Table, limit: int = MAX_TEXT - 8) -> str:
    """The table as aligned monospace text of at most ``limit`` characters (escaped).

    Rows that do not fit are dropped from the end and counted in a final
    "… N more rows" line; the caption comes first when there is one.
    """
    columns = table.columns[:MAX_TABLE_COLUMNS]
    rows = [[_clip_left(cell, FUNCTION_WIDTH) if col.align == "left" else cell
             for cell, col in zip(row, columns, strict=False)] for row in table.rows]
    header = [c.name for c in columns]
    widths = [len(h) for h in header]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))

    def line(cells: list[str]) -> str:
        parts = []
        for i, col in enumerate(columns):
            cell = cells[i] if i < len(cells) else ""
            parts.append(cell.ljust(widths[i]) if col.align == "left" else cell.rjust(widths[i]))
        return escape_mrkdwn("  ".join(parts).rstrip())

    out = [escape_mrkdwn(table.caption)] if table.caption else []
    out.append(line(header))
    used = sum(len(x) + 1 for x in out)
    for index, row in enumerate(rows):
        text = line(row)
        remaining = len(rows) - index
        more = f"… {remaining} more row{'s' if remaining != 1 else ''}"
        # keep room for the "more rows" line unless this is the last row
        reserve = 0 if remaining == 1 else len(more) + 1
        if used + len(text) + 1 + reserve > limit:
            if used + len(more) + 1 <= limit:
                out.append(more)
            break
        out.append(text)
        used += len(text) + 1
    return "\n".join(out)[:limit]


def _cell(text: str) -> dict[str, Any]:
    # raw_text must not be empty
    return {"type": "raw_text", "text": _clip(text, MAX_CELL) or "-"}


def table_block(table: Table) -> dict[str, Any]:
    """Slack's native ``table`` block: a header row, then at most 99 rows."""
    columns = table.columns[:MAX_TABLE_COLUMNS]
    rows = [[_cell(c.name) for c in columns]]
    body = table.rows
    if len(body) > MAX_TABLE_ROWS - 1:
        kept = body[: MAX_TABLE_ROWS - 2]
        dropped = len(body) - len(kept)
        note = [f"… {dropped} more rows"] + [""] * (len(columns) - 1)
        body = [*kept, note]
    for row in body:
        cells = list(row[: len(columns)]) + [""] * max(0, len(columns) - len(row))
        rows.append([_cell(c) for c in cells])
    return {
        "type": "table",
        "column_settings": [
            {"align": c.align, "is_wrapped": c.align == "left"} for c in columns
        ],
        "rows": rows,
    }


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def _actions_blocks(reply: Reply) -> list[dict[str, Any]]:
    buttons: list[dict[str, Any]] = []
    for index, action in enumerate(reply.actions):
        if not action.command or len(action.command) > MAX_BUTTON_VALUE:
            continue  # a button that cannot carry its command is worse than none
        button: dict[str, Any] = {
            "type": "button",
            "text": {"type": "plain_text", "text": _clip(action.label, MAX_BUTTON_TEXT) or "Run",
                     "emoji": True},
            "action_id": f"heap_action_{index}",
            "value": action.command,
        }
        if action.style in ("primary", "danger"):
            button["style"] = action.style
        buttons.append(button)
    return [{"type": "actions", "elements": buttons[i: i + MAX_BUTTONS_PER_BLOCK]}
            for i in range(0, len(buttons), MAX_BUTTONS_PER_BLOCK)]


def reply_to_blocks(reply: Reply, *, native_table: bool = True) -> list[dict[str, Any]]:
    """Block Kit blocks for a Reply: header, context, summary, sections, table, actions."""
    reply = inert_reply(reply)
    head: list[dict[str, Any]] = [{
        "type": "header",
        "text": {"type": "plain_text", "text": _clip(reply.title or "heapbot", MAX_HEADER),
                 "emoji": True},
    }]
    if reply.context:
        elements = [{"type": "mrkdwn", "text": _clip_escaped(c, MAX_TEXT)}
                    for c in reply.context if c]
        if len(elements) > MAX_CONTEXT_ELEMENTS:
            rest = " · ".join(c for c in reply.context[MAX_CONTEXT_ELEMENTS - 1:] if c)
            elements = [*elements[: MAX_CONTEXT_ELEMENTS - 1],
                        {"type": "mrkdwn", "text": _clip_escaped(rest, MAX_TEXT)}]
        if elements:
            head.append({"type": "context", "elements": elements})
    if reply.summary:
        head.append(_section(_clip_escaped(reply.summary, MAX_TEXT)))

    tail: list[dict[str, Any]] = []
    if reply.table is not None and reply.table.rows:
        if native_table:
            tail.append(table_block(reply.table))
            if reply.table.caption:
                tail.append({"type": "context", "elements": [
                    {"type": "mrkdwn", "text": _clip_escaped(reply.table.caption, MAX_TEXT)}]})
        else:
            tail.append(_section("```\n" + table_text(reply.table) + "\n```"))
    if reply.attachments:
        names = ", ".join(a.filename for a in reply.attachments)
        tail.append({"type": "context", "elements": [
            {"type": "mrkdwn", "text": _clip_escaped(f"Attached in the thread: {names}", MAX_TEXT)}
        ]})
    tail.extend(_actions_blocks(reply))

    budget = MAX_BLOCKS - len(head) - len(tail)
    sections = [s for s in reply.sections if s]
    middle: list[dict[str, Any]] = []
    if budget > 0 and sections:
        if len(sections) > budget:  # fold the overflow into the last allowed section
            sections = [*sections[: budget - 1], "\n\n".join(sections[budget - 1:])]
        middle = [_section(_clip_escaped(s, MAX_TEXT)) for s in sections]
    return (head + middle + tail)[:MAX_BLOCKS]


def fallback_text(reply: Reply) -> str:
    """The message's top-level ``text``: notifications, screen readers, old clients.

    Title, context, summary and the table as preformatted text (≤ 3000
    characters), then the first sections; at most 4000 characters in all.
    """
    reply = inert_reply(reply)
    parts = [f"*{_clip_escaped(reply.title or 'heapbot', MAX_HEADER)}*"]
    if reply.context:
        parts.append(_clip_escaped(" · ".join(c for c in reply.context if c), 500))
    if reply.summary:
        parts.append(_clip_escaped(reply.summary, 1000))
    if reply.table is not None and reply.table.rows:
        room = min(MAX_TEXT, MAX_FALLBACK - sum(len(p) + 2 for p in parts)) - 8
        if room > 200:
            parts.append("```\n" + table_text(reply.table, room) + "\n```")
    for section in reply.sections:
        if not section:
            continue
        room = MAX_FALLBACK - sum(len(p) + 2 for p in parts)
        if room < 40:
            break
        parts.append(_clip_escaped(section, room))
    return "\n\n".join(parts)[:MAX_FALLBACK]
