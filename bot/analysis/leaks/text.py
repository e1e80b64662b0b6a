"""How leak numbers read: sizes like the top table, observed changes, rates, spans of time."""

from __future__ import annotations

from bot.analysis.units import format_value

# A per-hour rate is shown only from a window at least this long (and with at
# least RATE_MIN_POINTS distinct observations); shorter windows show the change.
RATE_MIN_SECONDS = 20 * 60
RATE_MIN_POINTS = 4


def size(value: float) -> str:
    """Bytes the way the top table prints them (pprof's units): 512B, 41.20kB, 3.50MB."""
    return format_value(round(value), "bytes")


def signed(value: float, unit: str) -> str:
    """"+3.50MB", "-12 goroutines"."""
    sign = "+" if value >= 0 else "-"
    if unit == "bytes":
        return sign + size(abs(value))
    return f"{sign}{abs(value):,.0f} {unit}"


def rate(per_hour: float, unit: str) -> str:
    if unit == "bytes":
        return f"{'+' if per_hour >= 0 else '-'}{size(abs(per_hour))}/h"
    return f"{per_hour:+,.0f} {unit}/h" if abs(per_hour) >= 10 else f"{per_hour:+,.1f} {unit}/h"


def format_rate(per_hour: float, unit: str) -> str:
    """Growth per hour as users read it: "+18MB/h", "+1,200 goroutines/h"."""
    return rate(per_hour, unit)


def rate_supported(span_seconds: float, points: int) -> bool:
    """Whether a window is long enough, with enough observations, for a per-hour rate."""
    return span_seconds >= RATE_MIN_SECONDS and points >= RATE_MIN_POINTS


def growth_text(change: float, span_seconds: float, unit: str, *, points: int,
                per_second: float = 0.0, low: float = 0.0, high: float = 0.0) -> str:
    """The change as observed ("+48MB in 4m"); a per-hour rate with its spread when the
    window supports one ("+12MB/h (10MB/h–14MB/h)")."""
    if rate_supported(span_seconds, points) and per_second > 0:
        text = rate(per_second * 3600, unit)
        if high > low > 0:
            text += f" ({rate(low * 3600, unit).lstrip('+')}–{rate(high * 3600, unit).lstrip('+')})"
        return text
    return f"{signed(change, unit)} in {format_duration(span_seconds)}"


def format_duration(seconds: float) -> str:
    """"45s", "12m", "3.5h", "2.1d": a span of time in one short unit."""
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"
