"""Leak detection over stored snapshot summaries: which sites grow, and which only look like it.

One job per module:

- ``model``: thresholds, verdict names, the report's dataclasses;
- ``window``: which captures a verdict reads (since the last deploy, restarts split it);
- ``observe``: what each instance says per capture (GC cycle, heap digest), stored;
- ``series``: per instance, one point per GC cycle (repeated profiles dropped);
- ``trend``: Theil–Sen slopes and their spread;
- ``classify``: one series → growing, bounded, one-off, noise or undecided;
- ``heap``: heap suspects per instance, merged, with attribution and the live-heap check;
- ``detect``: goroutine groups (growing and proven), their memory, process signals;
- ``hints``: known leak patterns matched against sites and wait states;
- ``sites``: file:line and the nearest own-code caller, from a heap profile;
- ``text``: how sizes, rates and spans read;
- ``verdict``: :func:`analyze`, the one function that turns summaries into a LeakReport.
"""

from __future__ import annotations

from bot.analysis.leaks.hints import GOROUTINE_HINTS, heap_hint
from bot.analysis.leaks.model import (
    GROWTH_BOUNDED,
    LEAK_LIKELY,
    MAX_CAPTURES,
    MIN_CAPTURES,
    NO_GROWTH,
    NOT_ENOUGH_DATA,
    UNDECIDED,
    Deploy,
    DeployMarker,
    HeapSite,
    LeakReport,
    NotSuspect,
    Suspect,
    Undecided,
)
from bot.analysis.leaks.sites import heap_sites, own_code_callers, summarize_heap_bytes
from bot.analysis.leaks.text import format_duration, format_rate
from bot.analysis.leaks.trend import Trend, theil_sen, trend
from bot.analysis.leaks.verdict import analyze

__all__ = [
    "GOROUTINE_HINTS",
    "GROWTH_BOUNDED",
    "LEAK_LIKELY",
    "MAX_CAPTURES",
    "MIN_CAPTURES",
    "NOT_ENOUGH_DATA",
    "NO_GROWTH",
    "UNDECIDED",
    "Deploy",
    "DeployMarker",
    "HeapSite",
    "LeakReport",
    "NotSuspect",
    "Suspect",
    "Trend",
    "Undecided",
    "analyze",
    "format_duration",
    "format_rate",
    "heap_hint",
    "heap_sites",
    "own_code_callers",
    "summarize_heap_bytes",
    "theil_sen",
    "trend",
]
