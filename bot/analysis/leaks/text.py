"""How leak numbers read: sizes like the top table, rates, spans of time."""

from __future__ import annotations


def size(value: float) -> str:
    """pprof-style bytes: 512B, 41.20kB, 3.50MB."""
    v = abs(value)
    sign = "-" if value < 0 else ""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if v >= scale:
            return f"{sign}{v / scale:.2f}{unit}"
    return f"{sign}{v:.0f}B"


def rate(per_hour: float, unit: str) -> str:
    if unit == "bytes":
        return f"{'+' if per_hour >= 0 else ''}{size(per_hour)}/h"
    return f"{per_hour:+,.0f} {unit}/h" if abs(per_hour) >= 10 else f"{per_hour:+,.1f} {unit}/h"


def format_rate(per_hour: float, unit: str) -> str:
    """Growth per hour as users read it: "+18.20MB/h", "+1,200 goroutines/h"."""
    return rate(per_hour, unit)


def format_duration(seconds: float) -> str:
    """"45s", "12m", "3.5h", "2.1d": a span of time in one short unit."""
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"
