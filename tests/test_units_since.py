"""A change is never shown "since" the clock time of the capture it is shown under (issue 15.7)."""

from __future__ import annotations

from datetime import UTC, datetime

from bot.units import format_since

NOW = datetime(2026, 11, 29, 15, 45, 8, 700000, tzinfo=UTC).timestamp()


def test_captures_in_the_same_second_say_how_far_apart_they_are() -> None:
    assert format_since(NOW - 0.4, NOW, now=NOW) == "15:45:08 UTC (0.4 s before this capture)"


def test_the_same_moment_is_called_that() -> None:
    assert format_since(NOW, NOW, now=NOW) == "15:45:08 UTC (the same moment as this capture)"


def test_an_earlier_second_is_the_plain_clock_time() -> None:
    assert format_since(NOW - 7, NOW, now=NOW) == "15:45:01 UTC"
    assert format_since(None, NOW, now=NOW) == "unknown time"
