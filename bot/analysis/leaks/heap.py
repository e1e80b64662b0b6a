"""Heap suspects: each instance's distinct GC observations, classified, then merged.

A function is a suspect when it grows steadily on at least one instance (the
reply names which ones when a fleet disagrees); it is "bounded" or a one-off
only when distinct observations after its growth show it flat; anything in
between is undecided, with what would decide it. The live heap cross-check:
when an instance's heap in use keeps rising capture after capture, a function
that rose at every distinct observation there is a suspect even with few of them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from bot.analysis.goroutines import is_own_code
from bot.analysis.leaks.classify import (
    BOUNDED,
    GROWING,
    JUMP,
    MIN_POINTS,
    NOISE,
    STOPPED,
    UNDECIDED,
    Fit,
    classify,
)
from bot.analysis.leaks.hints import heap_hint
from bot.analysis.leaks.model import (
    MIN_HEAP_GROWTH_BYTES,
    MIN_HEAP_GROWTH_SHARE,
    HeapSite,
    NotSuspect,
    Suspect,
    Undecided,
)
from bot.analysis.leaks.series import MERGED, InstanceSeries, instance_series
from bot.analysis.leaks.text import format_duration, growth_text, size
from bot.analysis.summary import SnapshotSummary


@dataclass(slots=True)
class HeapFindings:
    suspects: list[Suspect] = field(default_factory=list)
    not_suspects: list[NotSuspect] = field(default_factory=list)
    undecided: list[Undecided] = field(default_factory=list)
    series: list[InstanceSeries] = field(default_factory=list)
    live: dict[str, Fit] = field(default_factory=dict)  # per instance: heap in use per capture
    at_gc: dict[str, Fit] = field(default_factory=dict)  # per instance: profile total per GC


def _floor(s: InstanceSeries) -> float:
    totals = s.totals()
    mean = float(totals.mean()) if len(totals) else 0.0
    return max(MIN_HEAP_GROWTH_BYTES, MIN_HEAP_GROWTH_SHARE * mean)


def _live_fit(s: InstanceSeries, caps: Sequence[SnapshotSummary]) -> Fit | None:
    """HeapInuse at every capture of this instance (not GC-stale), as a cross-check."""
    rows: list[tuple[float, float, int]] = []
    seg = 0
    prev = None
    for cap in caps:
        for obs in cap.observations:
            if obs.target == s.target and obs.heap_inuse is not None:
                if prev is not None and ((obs.num_gc or 0) < (prev.num_gc or 0)):
                    seg += 1
                rows.append((cap.taken_at, float(obs.heap_inuse), seg))
                prev = obs
    if s.target == MERGED:
        rows = [(c.taken_at, float(c.memstats["HeapInuse"]), 0) for c in caps
                if "HeapInuse" in c.memstats]
    if len(rows) < 4:
        return None
    t = np.array([r[0] for r in rows])
    v = np.array([r[1] for r in rows])
    g = np.array([r[2] for r in rows], dtype=np.int64)
    return classify(t, v, g, _floor(s))


def heap(caps: Sequence[SnapshotSummary], merged_segments: np.ndarray,
         sites: Mapping[str, HeapSite]) -> HeapFindings:
    """Classify every function that grew on some instance; merge the per-instance answers."""
    found = HeapFindings(series=instance_series(caps, merged_segments))
    fits: dict[str, dict[str, Fit]] = {}
    for s in found.series:
        if len(s.points) < 2:
            continue
        floor = _floor(s)
        period = s.sample_period
        found.at_gc[s.target] = classify(s.times, s.totals(), s.segments, floor, period)
        live = _live_fit(s, caps)
        if live is not None:
            found.live[s.target] = live
        same = s.segments[1:] == s.segments[:-1]
        names = {fn for p in s.points for fn in p.inuse}
        for fn in names:
            v = s.values(fn)
            if float(np.diff(v)[same].sum()) < floor:
                continue
            fit = classify(s.times, v, s.segments, floor, period)
            if (fit.kind == UNDECIDED and not fit.sampling_limited and live is not None
                    and live.kind == GROWING):
                fit = _cross_checked(fit, v)
            fits.setdefault(fn, {})[s.target] = fit
    by_target = {s.target: s for s in found.series}
    sites = {**_guessed_sites(caps, merged_segments, fits), **sites}
    positive = sum(max(0.0, f.growth) for per in fits.values() for f in per.values()
                   if f.kind in (GROWING, UNDECIDED)) or 1.0
    for fn, per in sorted(fits.items()):
        _merge(found, fn, per, by_target, positive, sites)
    return found


def _guessed_sites(caps: Sequence[SnapshotSummary], seg: np.ndarray,
                   fits: Mapping[str, Mapping[str, Fit]]) -> dict[str, HeapSite]:
    """Own-code caller without stack data: the own function whose cum growth covers a
    site's growth most tightly (the nearest caller has the smallest such cum)."""
    same = seg[1:] == seg[:-1]
    cum: dict[str, np.ndarray] = {}
    for i, cap in enumerate(caps):
        for fv in cap.heap.functions.get("inuse_space", ()):
            if is_own_code(fv.function):
                cum.setdefault(fv.function, np.zeros(len(caps)))[i] = fv.cum
    cum_growth = {fn: float(np.diff(v)[same].sum()) for fn, v in cum.items()}
    out: dict[str, HeapSite] = {}
    for fn, per in fits.items():
        if is_own_code(fn):
            continue
        growth = max(f.growth for f in per.values())
        covering = [(g, name) for name, g in cum_growth.items()
                    if 0.8 * growth <= g <= 3.0 * growth]
        if covering:
            out[fn] = HeapSite(location="", own_caller=min(covering)[1])
    return out


def _cross_checked(fit: Fit, values: np.ndarray) -> Fit:
    """Few distinct observations, but the process heap grows: rose at every one → suspect."""
    deltas = np.diff(values)
    few = fit.points < MIN_POINTS  # only "too few observations" is what the process settles
    if few and fit.points >= 3 and fit.downs == 0 and fit.ups >= 2 and deltas[-1] > 0:
        fit.kind = GROWING
        fit.why = "cross-checked with the live heap, which grows at every capture"
    return fit


def _attribution(leaking: list[str], by_target: Mapping[str, InstanceSeries]) -> str:
    fleet = [t for t in by_target if t != MERGED]
    if len(fleet) < 2:
        return ""
    others = len(fleet) - len(leaking)
    if not others:
        return f"grows on all {len(fleet)} instances"
    where = ", ".join(leaking[:3]) + (f" and {len(leaking) - 3} more" if len(leaking) > 3 else "")
    return (f"leaks on {where} only; the other {others} "
            f"{'is' if others == 1 else 'are'} flat")


def _merge(found: HeapFindings, fn: str, per: Mapping[str, Fit],
           by_target: Mapping[str, InstanceSeries], positive: float,
           sites: Mapping[str, HeapSite]) -> None:
    growing = {t: f for t, f in per.items() if f.kind == GROWING}
    if growing:
        found.suspects.append(_suspect(fn, growing, by_target, positive, sites))
        return
    undecided = {t: f for t, f in per.items() if f.kind == UNDECIDED}
    if undecided:
        target, fit = max(undecided.items(), key=lambda kv: kv[1].growth)
        s = by_target[target]
        where = f" on {target}" if len(by_target) > 1 else ""
        need = max(1, fit.needed_points)
        reason = (f"{fit.why}{where}; {need} more capture(s) after fresh GCs over about "
                  f"{format_duration(max(fit.needed_seconds, 60.0))} would decide "
                  f"(`--gc` or the leak sampling take fresh heaps)")
        found.undecided.append(Undecided(
            fn, "heap", reason, growth=growth_text(fit.growth, fit.span, "bytes",
                                                   points=len(s.points)),
            needed_captures=need, needed_seconds=fit.needed_seconds,
            net_growth=fit.growth, sampling_limited=fit.sampling_limited))
        return
    for kind in (BOUNDED, JUMP, NOISE, STOPPED):
        chosen = {t: f for t, f in per.items() if f.kind == kind}
        if not chosen:
            continue
        target, fit = max(chosen.items(), key=lambda kv: kv[1].growth)
        where = f" (on {target})" if len(by_target) > 1 and len(chosen) < len(by_target) else ""
        if kind == BOUNDED:
            reason = (f"bounded, looks like a cache filling up: rose {size(fit.growth)}, then "
                      f"flat over the last {fit.flat_tail} distinct GC observations{where}")
        elif kind == JUMP:
            reason = (f"one jump of {size(fit.jump)}, then flat over {fit.flat_tail} distinct "
                      f"GC observations: a one-off load (warm-up, a batch){where}")
        elif kind == NOISE:
            reason = f"{fit.why}: noise or load, not a leak{where}"
        else:
            reason = f"{fit.why}: watch it, not a leak now{where}"
        found.not_suspects.append(NotSuspect(fn, "heap", reason, fit.slope * 3600.0, "bytes",
                                             bounded=kind == BOUNDED, net_growth=fit.growth))
        return


def _suspect(fn: str, growing: Mapping[str, Fit], by_target: Mapping[str, InstanceSeries],
             positive: float, sites: Mapping[str, HeapSite]) -> Suspect:
    leaking = sorted(growing)
    change = sum(f.growth for f in growing.values())
    slope = sum(f.slope for f in growing.values())
    low = sum(f.slope_low for f in growing.values())
    high = sum(f.slope_high for f in growing.values())
    span = max(f.span for f in growing.values())
    main = max(growing.values(), key=lambda f: f.growth)
    series = by_target[max(growing, key=lambda t: growing[t].growth)]
    points = min(f.points for f in growing.values())
    text = growth_text(change, span, "bytes", points=points, per_second=slope, low=low,
                       high=high)
    gcs = series.gcs
    observed = (f"{points} distinct GC observations in {series.captures} captures"
                + (f" over {gcs} GCs" if gcs else ""))
    evidence = [f"in-use {size(main.first)} → {size(main.last)}: {signed_change(change)} in "
                f"{format_duration(span)} ({observed})",
                f"rose in {main.ups} of {main.ups + main.downs} changing steps; no step larger "
                "than its time gap explains"]
    if series.repeated:
        evidence.append(f"{series.repeated} capture(s) repeated the previous GC's profile "
                        "(no GC in between) and were counted once")
    if main.why:
        evidence.append(main.why)
    attribution = _attribution(leaking, by_target)
    if attribution:
        evidence.append(attribution)
    share = max(0.0, change) / positive
    evidence.append(f"{share:.0%} of the growth seen in the window")
    site = sites.get(fn) or (HeapSite(location="", own_caller=fn) if is_own_code(fn) else None)
    own = site.own_caller if site else ""
    up = main.up_share
    score = (up ** 2) * (0.4 + 0.6 * min(1.0, share * 2))
    return Suspect(
        function=fn, kind="heap", growth_per_hour=slope * 3600.0, unit="bytes",
        captures=series.captures, share=share, evidence=evidence,
        site=site.location if site else "", own_caller=own if own != fn else "",
        hint=heap_hint(fn, own), score=score, net_growth=change, growth_text=text,
        instances=leaking if attribution else [], attribution=attribution)


def signed_change(value: float) -> str:
    return ("+" if value >= 0 else "-") + size(abs(value))
