"""pprof's value formatting (internal/measurement): 41.20MB, 512kB, 1.50s, 1234.

The rules are pprof's, so heapbot's tables read like ``go tool pprof``: bytes
scale by 1024 (B, kB, MB, GB, TB, PB), times by SI steps (ns, us, ms, s, hrs),
counts print plain; two decimals with a trailing ".00" dropped.
"""

from __future__ import annotations

import math

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
