"""How heapbot writes numbers and time, in one place: bytes, rates, durations, clocks.

Values follow pprof's formatting (internal/measurement), so every table and
sentence reads like ``go tool pprof``: bytes scale by 1024 (B, kB, MB, GB, TB,
PB), times by SI steps (ns, us, ms, s, hrs), counts print plain; two decimals
with a trailing ".00" dropped (``41.20MB``, ``512kB``, ``1234``). Durations
have one grammar (:func:`parse_duration`, the one ``/heap help`` documents) and
one spelling (:func:`format_duration`), which parse back to each other.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime

from bot.errors import UsageError

_Unit = tuple[str, tuple[str, ...], float]
_UNIT_TYPES: tuple[tuple[tuple[_Unit, ...], _Unit], ...] = (
    (
        (
            ("B", ("b", "byte"), 1.0),
            ("kB", ("kb", "kbyte", "kilobyte"), float(1 << 10)),
            ("MB", ("mb", "mbyte", "megabyte"), float(1 << 20)),
            ("GB", ("gb", "gbyte", "gigabyte"), float(1 << 30)),
            ("TB", ("tb", "tbyte", "terabyte"), float(1 << 40)),
            ("PB", ("pb", "pbyte", "petabyte"), float(1 << 50)),
        ),
        ("B", ("b", "byte"), 1.0),
    ),
    (
        (
            ("ns", ("ns", "nanosecond"), 1.0),
            ("us", ("μs", "us", "microsecond"), 1e3),
            ("ms", ("ms", "millisecond"), 1e6),
            ("s", ("s", "sec", "second"), 1e9),
            ("hrs", ("hour", "hr"), 3600e9),
        ),
        ("s", (), 1e9),
    ),
)


def _sniff(units: tuple[_Unit, ...], unit: str) -> _Unit | None:
    unit = unit.lower()
    if len(unit) > 2:
        unit = unit.removesuffix("s")
    for u in units:
        if unit in u[1]:
            return u
    return None


def scale(value: float, from_unit: str, to_unit: str = "auto") -> tuple[float, str]:
    """pprof's measurement.Scale: (scaled value, unit label; "" for plain counts)."""
    if value < 0:
        v, u = scale(-value, from_unit, to_unit)
        return -v, u
    for units, default in _UNIT_TYPES:
        src = _sniff(units, from_unit)
        if src is None:
            continue
        base = value * src[2]
        if to_unit in ("auto", "minimum"):
            best, label = 0.0, ""
            for name, _, factor in units:
                if factor >= best and base / factor >= 1.0:
                    best, label = factor, name
            if best == 0:
                return base / default[2], default[0]
            return base / best, label
        dst = _sniff(units, to_unit) or default
        return base / dst[2], dst[0]
    if to_unit in ("count", "sample", "unit", "minimum", "auto"):
        return float(value), ""
    return float(value), to_unit


def _two_decimals(v: float) -> str:
    text = f"{v:.2f}"
    return text[:-3] if text.endswith(".00") else text


def scaled_label(value: int, from_unit: str, to_unit: str = "auto") -> str:
    """pprof's measurement.ScaledLabel."""
    v, u = scale(value, from_unit, to_unit)
    text = _two_decimals(v)
    if text in ("0", "-0"):
        return "0"
    return text + u


def format_value(value: int, unit: str) -> str:
    """One value the way pprof prints it on its own: ``41.20MB``, ``512kB``, ``1234``."""
    return scaled_label(value, unit, "auto")


def output_unit(values: list[int], total: int, unit: str) -> str:
    """The single unit pprof picks for a whole table (report.selectOutputUnit, "minimum").

    The smallest non-zero value decides, unless it is 100 times smaller than the
    total, in which case a larger unit is allowed (values may then show as 0.01).
    """
    nonzero = [abs(v) for v in values if v]
    min_value = min(nonzero) if nonzero else 0
    max_value = total
    if min_value == 0:
        min_value = max_value
    _, min_unit = scale(min_value, unit, "minimum")
    _, max_unit = scale(max_value, unit, "minimum")
    chosen = min_unit
    if min_unit != max_unit and min_value * 100 < max_value:
        _, chosen = scale(100 * min_value, unit, "minimum")
    return chosen or unit


def percentage(value: int, total: int) -> str:
    """pprof's measurement.Percentage: at least two digits, ``  100%`` when whole."""
    ratio = abs(value / total) * 100 if total else 0.0
    if 99.95 <= ratio <= 100.05:
        return "  100%"
    if ratio >= 1.0:
        return f"{ratio:5.2f}%"
    return f"{_go_g2(ratio):>5}%"


def _go_g2(x: float) -> str:
    """Go's %.2g (shortest of %e/%f with 2 significant digits, zeros trimmed)."""
    if x == 0 or not math.isfinite(x):
        return "0" if x == 0 else str(x)
    return f"{x:.2g}"


# -- bytes, changes and rates ------------------------------------------------------------


def format_bytes(value: float | None) -> str:
    """Bytes the way pprof prints them: ``41.20MB``, ``512kB``, ``0``; ``-`` when unknown."""
    if value is None:
        return "-"
    return format_value(round(value), "bytes")


def signed(value: float, unit: str = "bytes") -> str:
    """A change with its sign, pprof units: ``+18.20MB``, ``-512kB``, ``0``."""
    value = round(value)
    if value == 0:
        return "0"
    return ("+" if value > 0 else "-") + format_value(abs(value), unit)


def format_rate(per_hour: float, unit: str) -> str:
    """Growth per hour: ``+18.20MB/h`` for bytes, ``+1,200 goroutines/h`` for counts."""
    if unit in ("bytes", "B"):
        return signed(per_hour, "bytes") + "/h"
    if abs(per_hour) >= 10:
        return f"{per_hour:+,.0f} {unit}/h"
    return f"{per_hour:+,.1f} {unit}/h"


# -- durations -----------------------------------------------------------------------------

DURATION_HELP = ("Durations: a number and a unit, units in any order and combined: "
                 "500ms, 90s, 15m, 1h30m, 1.5h, 2d.")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def duration_seconds(text: str) -> float | None:
    """Seconds in ``text`` (``90s``, ``15m``, ``1h30m``, ``1.5h``, ``2d``, ``500ms``), or None."""
    cleaned = text.strip().lower()
    pos, total = 0, 0.0
    for match in _DURATION_PART.finditer(cleaned):
        if match.start() != pos:
            return None
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if not cleaned or pos != len(cleaned):
        return None
    return total


def parse_duration(text: str, *, what: str = "duration") -> float:
    """Seconds in a duration (the grammar of :func:`duration_seconds`); UsageError if not one."""
    seconds = duration_seconds(text)
    if seconds is None:
        shown = text.strip()[:40].replace("`", "'")
        raise UsageError(f"`{shown}` is not a {what}.",
                         hint="Write it like 90s, 15m, 1h30m or 2d.")
    return seconds


def format_duration(seconds: float) -> str:
    """A span of time in its two largest units: ``45s``, ``15m``, ``1h30m``, ``2d4h``.

    :func:`parse_duration` reads every result back (to the precision shown).
    """
    seconds = max(0.0, float(seconds))
    if 0 < seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    rest = round(seconds)
    parts: list[tuple[int, str]] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, rest = divmod(rest, size)
        if count or (parts and len(parts) < 2):
            parts.append((count, unit))
        if len(parts) == 2:
            break
    shown = "".join(f"{count}{unit}" for count, unit in parts if count)
    return shown or "0s"


def format_about(seconds: float) -> str:
    """A rough span in one unit, for "done in about …": ``50s``, ``15m``, ``3h``, ``2d``."""
    seconds = max(1.0, float(seconds))
    for unit, size, up_to in (("s", 1, 90), ("m", 60, 90 * 60), ("h", 3600, 48 * 3600)):
        if seconds < up_to:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds / 86400:.0f}d"


# -- clock times ---------------------------------------------------------------------------


def format_clock(ts: float | None, *, now: float | None = None) -> str:
    """``14:02:11 UTC`` today, ``Nov 20 14:02 UTC`` on another day."""
    if not ts:
        return "unknown time"
    when = datetime.fromtimestamp(ts, tz=UTC)
    today = datetime.fromtimestamp(now, tz=UTC) if now else datetime.now(tz=UTC)
    if when.date() == today.date():
        return when.strftime("%H:%M:%S UTC")
    return when.strftime("%b %d %H:%M UTC")


def format_since(earlier: float | None, later: float | None, *, now: float | None = None) -> str:
    """Clock text of an earlier capture that a reader can tell apart from ``later``'s.

    Two captures in the same second printed "-512kB since 15:45:08 UTC" under
    "captured 15:45:08 UTC", as if compared with itself: then the gap is said.
    """
    text = format_clock(earlier, now=now)
    if not earlier or not later or text != format_clock(later, now=now):
        return text
    gap = later - earlier
    if abs(gap) < 0.05:
        return f"{text} (the same moment as this capture)"
    return f"{text} ({abs(gap):.1f} s {'before' if gap > 0 else 'after'} this capture)"
