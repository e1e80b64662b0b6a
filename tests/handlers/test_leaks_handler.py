"""/heap leaks: argument errors and what the reply shows for each verdict."""

from __future__ import annotations

import pytest

from bot.analysis.leaks import analyze
from bot.errors import UsageError
from bot.render.blocks import fallback_text, reply_to_blocks
from handlers import leaks as leaks_handler
from tests.analysis.test_leaks import BACKGROUND, MB, captures, fills, flat, grows


@pytest.mark.parametrize(("text", "expected"), [("3x30s", (3, 30.0)), ("5x1m", (5, 60.0)),
                                                 ("2X2s", (2, 2.0))])
def test_sample_parses(text: str, expected: tuple[int, float]) -> None:
    assert leaks_handler.parse_sample(text) == expected


@pytest.mark.parametrize("text", ["3", "x30s", "1x30s", "50x1s", "3x0s", "3xsoon", "20x1h"])
def test_bad_sample_is_a_usage_error_with_the_usage_line(text: str) -> None:
    with pytest.raises(UsageError) as err:
        leaks_handler.parse_sample(text)
    assert "--sample" in err.value.user_message()


@pytest.mark.parametrize("argv", [[], ["demo", "extra"], ["demo", "--sample"],
                                  ["demo", "--since", "1h"]])
async def test_bad_arguments_are_usage_errors(argv: list[str]) -> None:
    with pytest.raises(UsageError) as err:
        await leaks_handler.handle(None, argv, None)
    assert leaks_handler.USAGE in err.value.user_message()


def test_not_enough_data_reply_offers_the_sample() -> None:
    report = analyze(captures(2, BACKGROUND))
    reply = leaks_handler.build_reply("payments", report)
    assert "not enough" in reply.title
    assert "1 more" in reply.summary
    assert reply.table is None
    assert reply.actions[0].command == "leaks payments --sample 3x30s"
    assert reply.data["needed_captures"] == 1


def test_leak_reply_table_sections_and_actions() -> None:
    caps = captures(10, {**BACKGROUND, "main.cachePut": fills(0, 3 * MB, 12 * MB),
                         "main.auditAppend": grows(MB, MB)},
                    {"main.start;main.sendResult": ("chan send", grows(10, 40))})
    report = analyze(caps)
    reply = leaks_handler.build_reply("payments", report)
    assert reply.title == "payments: leak likely"
    assert [row[0] for row in reply.table.rows] == [s.function for s in report.suspects]
    assert {row[1] for row in reply.table.rows} == {"heap", "goroutines"}
    audit = next(row for row in reply.table.rows if row[0] == "main.auditAppend")
    # 1 MB per 5 minutes over 45 minutes: a per-hour rate, in the top table's units (MiB)
    assert audit[2] == "+11.44MB/h" and audit[3] == "10"  # 12e6 B/h, pprof units (1024)
    assert any("Hint:" in s for s in reply.sections)
    assert any(s.startswith("Not suspects:") and "main.cachePut" in s for s in reply.sections)
    commands = [a.command for a in reply.actions]
    assert "list payments main\\.auditAppend" in commands
    assert "goroutines payments" in commands and "capture payments" in commands
    assert reply.data["verdict"] == "leak likely"
    blocks = reply_to_blocks(reply)
    assert len(blocks) <= 50
    assert "main.auditAppend" in fallback_text(reply) or "auditAppend" in str(blocks)


def test_bounded_reply_is_not_alarming() -> None:
    report = analyze(captures(12, {**BACKGROUND, "main.cachePut": fills(0, 3 * MB, 18 * MB),
                                   "main.x": flat(MB)}))
    reply = leaks_handler.build_reply("payments", report)
    assert reply.title == "payments: growth bounded, no leak"
    assert reply.table is None
    assert "main.cachePut" in reply.summary


def test_a_function_both_suspect_and_not_names_the_kind_in_not_suspects() -> None:
    jump = lambda i: 4 * MB if i < 5 else 30 * MB  # noqa: E731
    caps = captures(10, {**BACKGROUND, "main.sendResult": jump},
                    {"main.start;main.sendResult": ("chan send", grows(10, 40))})
    report = analyze(caps)
    both = ({s.function for s in report.suspects}
            & {n.function for n in report.not_suspects})
    assert "main.sendResult" in both
    reply = leaks_handler.build_reply("payments", report)
    not_suspects = next(s for s in reply.sections if s.startswith("Not suspects:"))
    kind = next(n.kind for n in report.not_suspects if n.function == "main.sendResult")
    assert f"• main.sendResult ({kind}): " in not_suspects
