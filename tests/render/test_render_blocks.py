"""Block Kit, terminal and chart renderers: limits, escaping, what a user sees."""

from __future__ import annotations

import json
import struct
import time
import zlib

from bot.analysis.summary import ProfileSummary, SnapshotSummary
from bot.render.blocks import (
    MAX_BLOCKS,
    fallback_text,
    reply_to_blocks,
    table_text,
)
from bot.render.chart import history_png
from bot.render.terminal import reply_to_text
from bot.reply import Action, Attachment, Column, Reply, Table


def huge_reply(functions: int = 5000, sections: int = 120) -> Reply:
    """A reply as large as a 5,000-function report with far too many paragraphs."""
    rows = [[f"github.com/acme/payments/internal/store.(*shard{i}).put{'X' * (i % 90)}",
             f"{i}.50MB", "1.00%", f"{i % 100}.00%", f"{i}.75MB", "2.00%"]
            for i in range(functions)]
    table = Table(columns=[Column("function", "left"), Column("flat"), Column("flat%"),
                           Column("sum%"), Column("cum"), Column("cum%")],
                  rows=rows, caption=f"Showing top {functions} nodes out of {functions}")
    return Reply(
        title="payments: top by inuse_space " + "T" * 300,
        context=[f"context item {i} " + "c" * 400 for i in range(15)],
        summary="S" * 5000,
        table=table,
        sections=[f"paragraph {i} " + "p" * 3500 for i in range(sections)],
        actions=[Action(f"Action {i} " + "L" * 100, f"top payments {i}") for i in range(30)]
        + [Action("too long", "x" * 2500)],
        attachments=[Attachment("heap.pb.gz", b"\x1f\x8b", "heap profile")],
    )


def every_text(blocks: list[dict]) -> list[str]:
    """Every string value in the blocks, nested."""
    found: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)
        elif isinstance(node, str):
            found.append(node)

    walk(blocks)
    return found


def test_a_5000_function_report_stays_within_block_kit_limits() -> None:
    reply = huge_reply()
    blocks = reply_to_blocks(reply)
    assert len(blocks) <= MAX_BLOCKS
    assert all(len(text) <= 3000 for text in every_text(blocks))
    header = blocks[0]
    assert header["type"] == "header" and len(header["text"]["text"]) <= 150
    tables = [b for b in blocks if b["type"] == "table"]
    assert len(tables) == 1
    assert len(tables[0]["rows"]) <= 100
    assert all(len(row) == 6 for row in tables[0]["rows"])
    assert all(cell["text"] for row in tables[0]["rows"] for cell in row)
    assert tables[0]["rows"][0][0]["text"] == "function"
    assert "more rows" in tables[0]["rows"][-1][0]["text"]
    for block in blocks:
        if block["type"] == "context":
            assert len(block["elements"]) <= 10
        if block["type"] == "actions":
            assert len(block["elements"]) <= 25
            for button in block["elements"]:
                assert len(button["text"]["text"]) <= 75
                assert len(button["value"]) <= 2000
                assert button["action_id"].startswith("heap_action_")
    buttons = [e for b in blocks if b["type"] == "actions" for e in b["elements"]]
    assert len(buttons) == 30  # the button whose command cannot fit is left out
    assert len({b["action_id"] for b in buttons}) == 30
    assert len(json.dumps(blocks)) < 200_000

    text = fallback_text(reply)
    assert len(text) <= 4000
    assert "more rows" in text


def test_preformatted_table_fits_3000_and_counts_what_it_dropped() -> None:
    reply = huge_reply(functions=5000, sections=0)
    text = table_text(reply.table)
    assert len(text) <= 3000
    lines = text.splitlines()
    assert lines[0].startswith("Showing top 5000")
    assert lines[1].split()[0] == "function"
    shown = len(lines) - 3
    assert lines[-1] == f"… {5000 - shown} more rows"
    blocks = reply_to_blocks(reply, native_table=False)
    assert not [b for b in blocks if b["type"] == "table"]
    code = [b for b in blocks if b["type"] == "section" and b["text"]["text"].startswith("```")]
    assert len(code) == 1 and len(code[0]["text"]["text"]) <= 3000


def test_small_table_keeps_every_row_aligned() -> None:
    table = Table(columns=[Column("function", "left"), Column("flat")],
                  rows=[["main.a", "1MB"], ["main.bbbbbb", "10.50MB"]])
    lines = table_text(table).splitlines()
    assert lines == ["function        flat", "main.a           1MB", "main.bbbbbb  10.50MB"]


def test_mrkdwn_is_escaped_everywhere() -> None:
    reply = Reply(title="<!channel> title", context=["a <b> & c"],
                  summary="<https://evil.example|click> & <@U1>",
                  sections=["map[string]<-chan int & more"],
                  table=Table(columns=[Column("function", "left")], rows=[["chan<- x & y"]]))
    blocks = reply_to_blocks(reply)
    mrkdwn = [t["text"] for b in blocks for t in
              ([b["text"]] if b.get("text") else b.get("elements", []))
              if isinstance(t, dict) and t.get("type") == "mrkdwn"]
    assert mrkdwn, blocks
    for text in mrkdwn:
        assert "<" not in text and ">" not in text
        assert "&amp;" in text or "&lt;" in text or "&" not in text
    # mentions are made inert first (the renderer is Slack's edge), then mrkdwn is escaped
    assert "&lt;https://evil.example|click&gt; &amp; @\u200bU1" in mrkdwn
    fallback = fallback_text(reply)
    assert "<" not in fallback and ">" not in fallback
    # the native table's raw_text is shown literally by Slack: no escaping there
    table = next(b for b in blocks if b["type"] == "table")
    assert table["rows"][1][0]["text"] == "chan<- x & y"


def test_error_reply_and_empty_table() -> None:
    blocks = reply_to_blocks(Reply.failure("heapbot knows no service called `x`."))
    assert [b["type"] for b in blocks] == ["header", "section"]
    empty = Reply(title="t", table=Table(columns=[Column("function", "left")], rows=[]))
    assert [b["type"] for b in reply_to_blocks(empty)] == ["header"]


def test_terminal_shows_text_literally() -> None:
    reply = Reply(title="payments: top", context=["3/3 instances"],
                  summary="main.(*sessionStore).Put holds 41% [bold]x[/bold]",
                  table=Table(columns=[Column("function", "left"), Column("flat")],
                              rows=[["main.(*sessionStore).Put", "41.20MB"],
                                    ["[]byte conversion", "1kB"]],
                              caption="Showing top 2 nodes out of 2"),
                  actions=[Action("Diff vs previous", "diff payments since previous")])
    text = reply_to_text(reply)
    assert "main.(*sessionStore).Put" in text and "41.20MB" in text
    assert "[bold]x[/bold]" in text
    assert "[]byte conversion" in text
    assert "/heap diff payments since previous" in text


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    width, height = struct.unpack(">II", data[16:24])
    crc = struct.unpack(">I", data[29:33])[0]
    assert crc == zlib.crc32(data[12:29])
    return width, height


def summary_at(taken_at: float, heap_mb: int, goroutines: int) -> SnapshotSummary:
    return SnapshotSummary(
        snapshot_id=str(taken_at), service="payments", taken_at=taken_at, build_id="b",
        instances=3,
        heap=ProfileSummary(sample_types={"inuse_space": "bytes"},
                            default_sample_type="inuse_space",
                            totals={"inuse_space": heap_mb << 20}),
        goroutine_total=goroutines, goroutine_groups=[], memstats={"HeapInuse": heap_mb << 20},
    )


def test_history_chart_is_a_png_of_the_right_size() -> None:
    now = time.time()
    summaries = [summary_at(now - 600 * (10 - i), 20 + 5 * i, 100 + 40 * i) for i in range(10)]
    png = history_png(summaries, [(now - 3000, "v2"), {"at": now - 1200, "version": "v3"}])
    assert png_size(png) == (1000, 600)
    assert len(png) > 20_000  # two plotted panels, not a blank canvas
    empty = history_png([], [])
    assert png_size(empty) == (1000, 600)
    assert len(empty) < len(png)


def test_top_table_cells_are_the_engines_pprof_text() -> None:
    """The table a user sees has the same cells as the engine's pprof-format text."""
    from pathlib import Path

    from bot.analysis.top import TopOptions, top
    from bot.pprof import parse_profile
    from handlers._common import top_table

    fixtures = Path(__file__).parents[1] / "fixtures"
    for name, options in (("heap_1.pb.gz", TopOptions(node_count=15)),
                          ("heap_other.pb.gz", TopOptions(sort="cum", node_count=15,
                                                          sample_type="alloc_space"))):
        report = top(parse_profile((fixtures / name).read_bytes()), options)
        table = top_table(report)
        text_rows = [line.split(None, 5) for line in report.to_text().splitlines()
                     if line.strip() and line.split()[-1] in {r.function for r in report.rows}]
        assert [[*cells[1:], cells[0]] for cells in table.rows] == text_rows, name
        blocks = reply_to_blocks(Reply(title=name, table=table))
        rows = next(b for b in blocks if b["type"] == "table")["rows"]
        assert [[c["text"] for c in row] for row in rows[1:]] == table.rows
