"""How leak numbers read: the observed change and its window, a per-hour rate only when
the window supports one. Units and spans come from :mod:`bot.units` (one home for them),
so a leak's bytes print like the top table's."""

from __future__ import annotations

from bot.units import format_bytes, format_duration, format_rate

# A per-hour rate is shown only from a window at least this long (and with at
# least RATE_MIN_POINTS distinct observations); shorter windows show the change.
RATE_MIN_SECONDS = 20 * 60
RATE_MIN_POINTS = 4


def size(value: float) -> str:
    """Bytes as the top table prints them: 512B, 41.20kB, 3.50MB."""
    return format_bytes(value)


def signed(value: float, unit: str) -> str:
    """"+3.50MB", "-12 goroutines"."""
    sign = "+" if value >= 0 else "-"
    if unit == "bytes":
        return sign + format_bytes(abs(value))
    return f"{sign}{abs(value):,.0f} {unit}"


def rate(per_hour: float, unit: str) -> str:
    """"+18.20MB/h", "+1,200 goroutines/h"."""
    return format_rate(per_hour, unit)


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


__all__ = ["format_duration", "format_rate", "growth_text", "rate", "rate_supported", "signed",
           "size"]
