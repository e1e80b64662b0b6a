"""One home for how heapbot writes numbers and time (bot/units.py).

Durations have one grammar, accepted by every command that takes one (diff's
``since 1h``, ``--sample 3x30s``, ``watch … every 15m``), and one spelling that
parses back. Bytes are pprof's everywhere: the leak table's rates use the same
units as the top table.
"""

from __future__ import annotations

import pytest

from bot.errors import UsageError
from bot.units import (
    duration_seconds,
    format_bytes,
    format_clock,
    format_duration,
    format_rate,
    parse_duration,
    signed,
)

MIB = 1 << 20


@pytest.mark.parametrize(("text", "seconds"), [
    # what `since 1h` (bot/runtime.py) accepted: d h m s in order, integers
    ("90s", 90), ("30m", 1800), ("1h", 3600), ("2d", 172800), ("1h30m", 5400),
    ("1d2h3m4s", 93784), ("0m", 0),
    # what `every 15m` (watches) accepted: any order, decimals, milliseconds
    ("15m", 900), ("1.5h", 5400), ("30m1h", 5400), ("500ms", 0.5), ("1D", 86400),
    (" 2h ", 7200),
])
def test_one_duration_grammar_takes_both_old_ones(text: str, seconds: float) -> None:
    assert duration_seconds(text) == seconds
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "previous", "-5m", "15", "m", "15 m", "1h-30m",
                                  "soon", "1w"])
def test_what_is_not_a_duration_says_how_to_write_one(text: str) -> None:
    assert duration_seconds(text) is None
    with pytest.raises(UsageError) as err:
        parse_duration(text)
    assert "is not a duration" in err.value.user_message()
    assert "15m" in err.value.user_message()


@pytest.mark.parametrize(("seconds", "shown"), [
    (0, "0s"), (0.25, "250ms"), (45, "45s"), (100, "1m40s"), (900, "15m"), (5400, "1h30m"),
    (3 * 3600 + 5 * 60 + 20, "3h5m"), (86400, "1d"), (2 * 86400 + 4 * 3600 + 180, "2d4h"),
])
def test_one_duration_spelling_that_parses_back(seconds: float, shown: str) -> None:
    assert format_duration(seconds) == shown
    assert parse_duration(shown) <= seconds < parse_duration(shown) + 60 * 60


def test_bytes_and_rates_read_like_pprof() -> None:
    assert format_bytes(18 * MIB) == "18MB"  # the top table's 18MB, not 18.87MB
    assert format_bytes(41.2 * MIB) == "41.20MB" and format_bytes(512 * 1024) == "512kB"
    assert format_bytes(None) == "-"
    assert signed(18 * MIB) == "+18MB" and signed(-512 * 1024) == "-512kB" and signed(0) == "0"
    assert format_rate(18 * MIB, "bytes") == "+18MB/h"
    assert format_rate(1200, "goroutines") == "+1,200 goroutines/h"
    assert format_rate(-2.5, "goroutines") == "-2.5 goroutines/h"


def test_clock_times_name_the_day_when_it_is_not_today() -> None:
    now = 1_764_400_000.0  # 2025-11-29 07:06:40 UTC
    assert format_clock(now - 60, now=now) == "07:05:40 UTC"
    assert format_clock(now - 2 * 86400, now=now) == "Nov 27 07:06 UTC"
    assert format_clock(None) == "unknown time"


@pytest.mark.parametrize("duration", ["90s", "1m30s", "1.5m", "30s1m", "90000ms"])
async def test_every_command_that_takes_a_duration_reads_it_alike(duration: str) -> None:
    from handlers import diff, leaks, watch
    from handlers.help import handle as help_handle
    from handlers.invocation import Invocation

    assert diff.check(["payments", "since", duration]).get("since") == duration
    assert leaks.parse_sample(f"3x{duration}") == (3, 90.0)
    assert watch.parse_watch(["payments", "every", duration], 60)[1] == 90.0
    for command in ("diff", "leaks", "watch"):
        explained = await help_handle(None, [command], Invocation(f"help {command}"))
        assert any("1h30m" in s and "500ms" in s for s in explained.sections), command
