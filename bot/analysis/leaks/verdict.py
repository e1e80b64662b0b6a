"""The verdict: one function that turns stored summaries into a LeakReport."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

import numpy as np

from bot.analysis.leaks.detect import (
    goroutines as _goroutines,
)
from bot.analysis.leaks.detect import (
    heap as _heap,
)
from bot.analysis.leaks.detect import (
    memstats_signals as _memstats_signals,
)
from bot.analysis.leaks.detect import (
    relate_goroutines_to_memory as _relate_goroutines_to_memory,
)
from bot.analysis.leaks.model import (
    GROWTH_BOUNDED,
    LEAK_LIKELY,
    MIN_CAPTURES,
    NO_GROWTH,
    NOT_ENOUGH_DATA,
    DeployMarker,
    HeapSite,
    LeakReport,
)
from bot.analysis.leaks.text import format_duration
from bot.analysis.leaks.text import rate as _rate
from bot.analysis.leaks.window import Window as _Window
from bot.analysis.leaks.window import select_window as _select_window
from bot.analysis.summary import SnapshotSummary


def analyze(
    summaries: Sequence[SnapshotSummary],
    deploys: Sequence[DeployMarker] = (),
    now: float | None = None,
    window: float | None = None,
    *,
    sites: Mapping[str, HeapSite] | None = None,
    service: str = "",
) -> LeakReport:
    """Decide whether a service leaks, from its stored summaries (oldest first or not).

    ``window`` bounds the analysis to the last ``window`` seconds (never fewer than
    3 captures); by default it spans everything since the last deploy. ``sites``
    (from :func:`heap_sites` on the latest profile) adds file:line and own-code callers.
    """
    if now is None:
        now = max((s.taken_at for s in summaries), default=time.time())
    service = service or next((s.service for s in summaries), "")
    win = _select_window(summaries, deploys, now, window)
    caps = win.captures
    report = LeakReport(verdict=NOT_ENOUGH_DATA, captures=len(caps), deploy=win.deploy,
                        window_start=caps[0].taken_at if caps else None,
                        window_end=caps[-1].taken_at if caps else None,
                        restarts=int(win.segment_ids[-1]) if len(caps) else 0)
    steps = int((win.segment_ids[1:] == win.segment_ids[:-1]).sum()) if len(caps) > 1 else 0
    if len(caps) < MIN_CAPTURES or steps < MIN_CAPTURES - 1:
        report.needed_captures = max(MIN_CAPTURES - len(caps), MIN_CAPTURES - 1 - steps, 1)
        _explain_not_enough(report, win, service)
        return report

    times = np.array([s.taken_at for s in caps], dtype=np.float64)
    sites = dict(sites or {})
    heap_suspects, heap_not, heap_growth = _heap(caps, times, win.segment_ids, sites)
    g_suspects, g_not = _goroutines(caps, times, win.segment_ids)
    _relate_goroutines_to_memory(caps, times, win.segment_ids, g_suspects, heap_suspects, heap_not)
    report.signals = _memstats_signals(caps, times, win.segment_ids, heap_growth)
    if report.restarts:
        report.signals.insert(0, f"{report.restarts} process restart(s) in the window: growth is "
                                 "measured inside each run, not across the restart.")
    suspects = sorted(heap_suspects + g_suspects, key=lambda s: (-s.score, s.function))
    report.suspects = suspects
    report.not_suspects = sorted(heap_not + g_not, key=lambda n: (not n.bounded, n.function))
    if suspects:
        report.verdict = LEAK_LIKELY
    elif any(n.bounded for n in report.not_suspects):
        report.verdict = GROWTH_BOUNDED
    else:
        report.verdict = NO_GROWTH
    _explain(report, service)
    return report


def _explain_not_enough(report: LeakReport, win: _Window, service: str) -> None:
    have = len(win.captures)
    since = f" since the deploy of {win.deploy}" if win.deploy else ""
    report.summary = (f"Only {have} usable capture(s){since}; leak detection needs at least "
                      f"{MIN_CAPTURES} in one run of the process "
                      f"({report.needed_captures} more).")
    svc = service or "SERVICE"
    report.next_steps = [
        f"/heap leaks {svc} --sample 3x30s takes the captures now and decides.",
        f"/heap capture {svc} a few times, minutes apart, then /heap leaks {svc}.",
    ]


def _explain(report: LeakReport, service: str) -> None:
    svc = service or "SERVICE"
    span = (report.window_end or 0) - (report.window_start or 0)
    window = f"{report.captures} captures over {format_duration(span)}"
    if report.deploy:
        window += f" since {report.deploy}"
    if report.verdict == LEAK_LIKELY:
        top = report.suspects[0]
        report.summary = (f"{top.function} grows {_rate(top.growth_per_hour, top.unit)} "
                          f"steadily ({window}).")
        for s in [s for s in report.suspects if s.kind == "heap"][:2]:
            report.next_steps.append(f"/heap list {svc} {_regex(s.own_caller or s.function)}"
                                     " shows the lines that allocate.")
        waits = [s.site or s.function for s in report.suspects if s.kind == "goroutines"]
        if waits:
            report.next_steps.append(f"/heap goroutines {svc} shows the stacks waiting at "
                                     f"{', '.join(waits[:3])}.")
        report.next_steps.append(f"/heap diff {svc} since deploy compares with the start.")
    elif report.verdict == GROWTH_BOUNDED:
        bounded = [n.function for n in report.not_suspects if n.bounded]
        report.summary = (f"Memory grew but levelled off ({', '.join(bounded[:3])}): bounded, "
                          f"not a leak ({window}).")
        report.next_steps.append(f"/heap leaks {svc} again later confirms it stays flat.")
    else:
        report.summary = f"Nothing grows steadily ({window})."
        report.next_steps.append(f"/heap diff {svc} since deploy shows what changed anyway.")
    report.next_steps.append(f"/heap capture {svc} adds a capture; more captures, surer verdict.")


def _regex(function: str) -> str:
    """A FUNC_RE for /heap list that matches this function literally enough."""
    return function.replace("(", "\\(").replace(")", "\\)").replace("*", "\\*").replace(
        ".", "\\.")

