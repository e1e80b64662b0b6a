"""The verdict: one function that turns stored summaries into a LeakReport."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

import numpy as np

from bot.analysis.leaks.detect import (
    goroutines,
    memstats_signals,
    proven,
    relate_goroutines_to_memory,
)
from bot.analysis.leaks.heap import heap
from bot.analysis.leaks.model import (
    GROWTH_BOUNDED,
    LEAK_LIKELY,
    MIN_CAPTURES,
    NO_GROWTH,
    NOT_ENOUGH_DATA,
    UNDECIDED,
    DeployMarker,
    HeapSite,
    LeakReport,
    Suspect,
    Undecided,
)
from bot.analysis.leaks.text import format_duration
from bot.analysis.leaks.window import Window, select_window
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
    win = select_window(summaries, deploys, now, window)
    caps = win.captures
    report = LeakReport(verdict=NOT_ENOUGH_DATA, captures=len(caps), deploy=win.deploy,
                        window_start=caps[0].taken_at if caps else None,
                        window_end=caps[-1].taken_at if caps else None,
                        restarts=int(win.segment_ids[-1]) if len(caps) else 0)
    steps = int((win.segment_ids[1:] == win.segment_ids[:-1]).sum()) if len(caps) > 1 else 0
    if len(caps) < MIN_CAPTURES or steps < MIN_CAPTURES - 1:
        report.needed_captures = max(MIN_CAPTURES - len(caps), MIN_CAPTURES - 1 - steps, 1)
        _explain_not_enough(report, win, service)
        times = np.array([s.taken_at for s in caps], dtype=np.float64)
        report.suspects = proven(caps, times) if caps else []
        if report.suspects:  # proof needs no series: one goroutineleak profile suffices
            report.verdict = LEAK_LIKELY
            top = report.suspects[0]
            report.summary = (f"{top.function} is a proven goroutine leak. " + report.summary
                              .replace("leak detection needs", "growth-based detection needs"))
        return report

    times = np.array([s.taken_at for s in caps], dtype=np.float64)
    found = heap(caps, win.segment_ids, dict(sites or {}))
    g_suspects, g_not, g_undecided = goroutines(caps, times, win.segment_ids)
    g_suspects = _with_proven(g_suspects, proven(caps, times), g_undecided)
    relate_goroutines_to_memory(caps, times, win.segment_ids, g_suspects, found.suspects,
                                found.not_suspects)
    report.signals = memstats_signals(caps, found)
    if report.restarts:
        report.signals.insert(0, f"{report.restarts} process restart(s) in the window: growth is "
                                 "measured inside each run, not across the restart.")
    report.suspects = sorted(found.suspects + g_suspects, key=lambda s: (-s.score, s.function))
    report.not_suspects = sorted(found.not_suspects + g_not,
                                 key=lambda n: (not n.bounded, n.function))
    report.undecided = sorted(found.undecided + g_undecided, key=lambda u: u.function)
    live_grows = any("the live heap keeps growing" in s for s in report.signals)
    if not report.suspects and live_grows and not report.undecided:
        # The process says the heap grows; no function explains it: never "no growth".
        report.undecided.append(Undecided(
            "(whole heap)", "heap", "the live heap grows, but no single function's growth is "
            "clear yet; more captures after fresh GCs would show which one",
            needed_captures=3, needed_seconds=max(60.0, float(times[-1] - times[0]))))
    distinct = max((len(s.points) for s in found.series), default=0)
    if report.suspects:
        report.verdict = LEAK_LIKELY
    elif report.undecided:
        report.verdict = UNDECIDED
        report.needed_captures = max(u.needed_captures for u in report.undecided)
    elif distinct < 2 and found.series and not g_not:
        report.verdict = NOT_ENOUGH_DATA
        report.needed_captures = 2
    elif any(n.bounded for n in report.not_suspects):
        report.verdict = GROWTH_BOUNDED
    else:
        report.verdict = NO_GROWTH
    _explain(report, service)
    return report


def _with_proven(suspects: list[Suspect], proven_ones: list[Suspect],
                 undecided: list[Undecided]) -> list[Suspect]:
    """Proven leaks replace the growth-based finding of the same group (and its doubt)."""
    names = {p.function for p in proven_ones}
    undecided[:] = [u for u in undecided if u.function not in names]
    kept = [s for s in suspects if s.function not in names]
    for p in proven_ones:
        grown = next((s for s in suspects if s.function == p.function), None)
        if grown is not None:
            p.evidence.extend(e for e in grown.evidence[:1])
            if not p.attribution and grown.attribution:
                p.attribution, p.instances = grown.attribution, grown.instances
    return proven_ones + kept


def _explain_not_enough(report: LeakReport, win: Window, service: str) -> None:
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
        how = "is a proven leak" if top.proven else f"grows steadily: {top.growth_text}"
        where = f"; {top.attribution}" if top.attribution else ""
        report.summary = f"{top.function} {how}{where} ({window})."
        for s in [s for s in report.suspects if s.kind == "heap"][:2]:
            report.next_steps.append(f"/heap list {svc} {_regex(s.own_caller or s.function)}"
                                     " shows the lines that allocate.")
        waits = [s.site or s.function for s in report.suspects if s.kind == "goroutines"]
        if waits:
            report.next_steps.append(f"/heap goroutines {svc} shows the stacks waiting at "
                                     f"{', '.join(waits[:3])}.")
        if report.deploy:
            report.next_steps.append(f"/heap diff {svc} since deploy compares with the start.")
        elif span >= 1:  # no deploy to name: the window's age, rounded down so it is found
            ago = f"{int(span) // 60}m" if span >= 120 else f"{int(span)}s"
            report.next_steps.append(f"/heap diff {svc} since {ago} compares with the start.")
    elif report.verdict == UNDECIDED:
        names = ", ".join(u.function for u in report.undecided[:3])
        longest = max(u.needed_seconds for u in report.undecided)
        report.summary = (f"Undecided: {names} grew, but these captures cannot tell a leak "
                          f"from a cache filling up ({window}). About {report.needed_captures} "
                          f"more capture(s) after fresh GCs over "
                          f"{format_duration(max(longest, 60.0))} would decide.")
        report.next_steps.append(
            f"/heap leaks {svc} --sample {max(3, report.needed_captures)}x"
            f"{_sample_gap(longest, report.needed_captures)} takes them now (with ?gc=1).")
    elif report.verdict == NOT_ENOUGH_DATA:
        report.summary = (f"The {report.captures} captures show the heap of one GC cycle only "
                          "(no GC ran between them): nothing to compare yet.")
        report.next_steps.append(f"/heap leaks {svc} --sample 3x30s takes fresh heaps (?gc=1).")
        return
    elif report.verdict == GROWTH_BOUNDED:
        bounded = [n.function for n in report.not_suspects if n.bounded]
        report.summary = (f"Memory grew but levelled off ({', '.join(bounded[:3])}): bounded, "
                          f"not a leak ({window}).")
        report.next_steps.append(f"/heap leaks {svc} again later confirms it stays flat.")
    else:
        report.summary = f"Nothing grows steadily ({window})."
        report.next_steps.append(f"/heap diff {svc} since deploy shows what changed anyway.")
    report.next_steps.append(f"/heap capture {svc} adds a capture; more captures, surer verdict.")


def _sample_gap(seconds: float, captures: int) -> str:
    """A --sample interval that spreads the captures over ``seconds`` (1s … 5m)."""
    gap = min(300, max(10, int(seconds / max(1, captures))))
    return f"{gap // 60}m" if gap >= 60 and gap % 60 == 0 else f"{gap}s"


def _regex(function: str) -> str:
    """A FUNC_RE for /heap list that matches this function literally enough."""
    return function.replace("(", "\\(").replace(")", "\\)").replace("*", "\\*").replace(
        ".", "\\.")

