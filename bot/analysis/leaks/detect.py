"""Per-kind detection: heap functions, goroutine groups, MemStats signals."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from bot.analysis.goroutines import BLOCKED_STATES, is_own_code, is_runtime
from bot.analysis.leaks.hints import GOROUTINE_HINTS, heap_hint
from bot.analysis.leaks.model import (
    MAX_JUMP_SHARE,
    MIN_GOROUTINE_GROWTH,
    MIN_HEAP_GROWTH_BYTES,
    MIN_HEAP_GROWTH_SHARE,
    MIN_UP_SHARE,
    HeapSite,
    NotSuspect,
    Suspect,
)
from bot.analysis.leaks.text import rate as _rate
from bot.analysis.leaks.text import size as _size
from bot.analysis.leaks.trend import Trend, trend
from bot.analysis.summary import SnapshotSummary


def _series(caps: Sequence[SnapshotSummary], sample_type: str, *, cum: bool = False
            ) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    n = len(caps)
    for i, s in enumerate(caps):
        for fv in s.heap.functions.get(sample_type, ()):
            arr = out.get(fv.function)
            if arr is None:
                arr = out[fv.function] = np.zeros(n, dtype=np.float64)
            arr[i] = fv.cum if cum else fv.flat
    return out


def _heap_sample_types(caps: Sequence[SnapshotSummary]) -> tuple[str, str | None]:
    last = caps[-1].heap
    if "inuse_space" in last.functions or "inuse_space" in last.totals:
        return "inuse_space", "inuse_objects" if "inuse_objects" in last.functions else None
    return (last.default_sample_type or next(iter(last.functions), "inuse_space")), None


def heap(caps: Sequence[SnapshotSummary], times: np.ndarray, seg: np.ndarray,
          sites: dict[str, HeapSite]) -> tuple[list[Suspect], list[NotSuspect], float]:
    space_type, objects_type = _heap_sample_types(caps)
    space = _series(caps, space_type)
    objects = _series(caps, objects_type) if objects_type else {}
    totals = np.array([s.heap.totals.get(space_type, 0) for s in caps], dtype=np.float64)
    mean_heap = float(totals.mean()) if len(totals) else 0.0
    span_h = max((times[-1] - times[0]) / 3600.0, 1e-9)
    floor = max(MIN_HEAP_GROWTH_BYTES, MIN_HEAP_GROWTH_SHARE * mean_heap)

    same = seg[1:] == seg[:-1]
    # Only series that rose at all get the full (pairwise) treatment.
    rising = {fn: v for fn, v in space.items()
              if float(np.diff(v)[same].sum()) > 0 and float(v.max() - v.min()) >= floor}
    trends = {fn: trend(times, v, seg, floor) for fn, v in rising.items()}
    cum_growth = {fn: float(np.diff(v)[seg[1:] == seg[:-1]].sum())
                  for fn, v in _series(caps, space_type, cum=True).items() if is_own_code(fn)}
    positive = sum(max(0.0, t.net_growth) for t in trends.values()) or 1.0
    total_trend = trend(times, totals, seg)
    suspects: list[Suspect] = []
    not_suspects: list[NotSuspect] = []
    for fn, t in trends.items():
        grew = max(t.net_growth, t.slope_per_hour * span_h)
        if t.net_growth <= 0 or grew < floor:
            continue
        site = sites.get(fn) or _guess_site(fn, t, cum_growth)
        obj = trend(times, objects[fn], seg) if fn in objects else None
        if t.plateau:
            not_suspects.append(NotSuspect(
                fn, "heap", f"bounded, looks like a cache filling up: grew "
                f"{_rate(t.early_rate, 'bytes')} then {_rate(t.recent_rate, 'bytes')} over the "
                "last captures", t.early_rate, "bytes", bounded=True))
            continue
        if t.stopped_after_restart:
            not_suspects.append(NotSuspect(
                fn, "heap", f"grew before the restart, flat over the {t.current_run_captures} "
                "captures of the current run: watch it, not a leak now", t.slope_per_hour))
            continue
        steady = t.up_share >= MIN_UP_SHARE and t.ups >= 2 and t.jump_share <= MAX_JUMP_SHARE
        if not steady or t.slope_per_hour <= 0:
            if t.ups <= 1 or t.jump_share > MAX_JUMP_SHARE:
                reason = (f"one jump of {_size(t.largest_step)}, flat otherwise: a one-off load "
                          "(warm-up, a batch), not steady growth")
            else:
                reason = (f"goes up and down ({t.ups} rises, {t.downs} falls): noise or load, "
                          "not a leak")
            not_suspects.append(NotSuspect(fn, "heap", reason, t.slope_per_hour, "bytes"))
            continue
        share = max(0.0, t.net_growth) / positive
        evidence = [
            f"in-use {_size(t.first)} → {_size(t.last)} ({_rate(t.slope_per_hour, 'bytes')}, "
            "Theil–Sen)",
            f"rose in {t.ups} of {t.ups + t.downs} changing steps; largest step "
            f"{t.jump_share:.0%} of the growth",
            f"{share:.0%} of the heap growth in the window"
            + (f"; the whole heap grew {_size(max(0.0, total_trend.net_growth))}"
               if total_trend.net_growth > 0 else ""),
        ]
        if obj is not None and obj.net_growth > 0:
            evidence.append(f"objects {int(obj.first):,} → {int(obj.last):,} "
                            f"(rose in {obj.ups} of {obj.ups + obj.downs} steps)")
        score = (t.up_share ** 2) * (1.0 - 0.5 * t.jump_share) * (0.4 + 0.6 * min(1.0, share * 2))
        own = site.own_caller if site else ""
        suspects.append(Suspect(
            function=fn, kind="heap", growth_per_hour=t.slope_per_hour, unit="bytes",
            captures=t.present, share=share, evidence=evidence,
            site=site.location if site else "", own_caller=own if own != fn else "",
            hint=heap_hint(fn, own), score=score, net_growth=t.net_growth))
    return suspects, not_suspects, total_trend.slope_per_hour


def _guess_site(fn: str, t: Trend, cum_growth: Mapping[str, float]) -> HeapSite | None:
    """Own-code caller without stack data: the own function whose cum growth covers this
    site's growth most tightly (the nearest caller has the smallest such cum)."""
    if is_own_code(fn):
        return HeapSite(location="", own_caller=fn)
    covering = [(g, name) for name, g in cum_growth.items()
                if 0.8 * t.net_growth <= g <= 3.0 * t.net_growth]
    if not covering:
        return None
    return HeapSite(location="", own_caller=min(covering)[1])


def goroutines(caps: Sequence[SnapshotSummary], times: np.ndarray, seg: np.ndarray
                ) -> tuple[list[Suspect], list[NotSuspect]]:
    n = len(caps)
    counts: dict[str, np.ndarray] = {}
    info: dict[str, Any] = {}
    for i, s in enumerate(caps):
        for g in s.goroutine_groups:
            arr = counts.get(g.signature)
            if arr is None:
                arr = counts[g.signature] = np.zeros(n, dtype=np.float64)
            arr[i] += g.count
            info[g.signature] = g  # the latest capture's view of the group
    trends = {sig: trend(times, v, seg, MIN_GOROUTINE_GROWTH) for sig, v in counts.items()}
    positive = sum(max(0.0, t.net_growth) for t in trends.values()) or 1.0
    suspects: list[Suspect] = []
    not_suspects: list[NotSuspect] = []
    for sig, t in trends.items():
        g = info[sig]
        name = g.wait_function or g.top_function or sig
        if t.net_growth < MIN_GOROUTINE_GROWTH:
            continue
        if t.plateau:
            not_suspects.append(NotSuspect(
                name, "goroutines", f"bounded: rose to {int(t.last)} and stopped (a pool "
                "reaching its size)", t.early_rate, "goroutines", bounded=True))
            continue
        if t.stopped_after_restart:
            not_suspects.append(NotSuspect(
                name, "goroutines", "grew before the restart, flat in the current run",
                t.slope_per_hour, "goroutines"))
            continue
        steady = t.up_share >= MIN_UP_SHARE and t.ups >= 2 and t.jump_share <= MAX_JUMP_SHARE
        if not steady:
            not_suspects.append(NotSuspect(
                name, "goroutines", f"count goes up and down ({t.ups} rises, {t.downs} falls)",
                t.slope_per_hour, "goroutines"))
            continue
        if g.state not in BLOCKED_STATES:
            why = {"IO wait": "waiting on network IO: follows open connections (compare with "
                              "the connection count); a leak only if connections are never "
                              "closed",
                   "sleep": "sleeping goroutines wake up on their own",
                   "running": "running goroutines make progress",
                   "runnable": "runnable goroutines make progress"}.get(
                g.state, f"state {g.state!r} is not a blocking wait")
            not_suspects.append(NotSuspect(name, "goroutines", f"grows, but {why}",
                                           t.slope_per_hour, "goroutines"))
            continue
        share = t.net_growth / positive
        evidence = [
            f"{int(t.first):,} → {int(t.last):,} goroutines "
            f"({_rate(t.slope_per_hour, 'goroutines')}), rose in {t.ups} of "
            f"{t.ups + t.downs} changing steps",
            f"all blocked in {g.state} at {g.wait_location or name}",
        ]
        if g.creator and g.creator != name:
            evidence.append(f"started by {g.creator}")
        score = (t.up_share ** 2) * (1.0 - 0.5 * t.jump_share) * (0.4 + 0.6 * min(1.0, share * 2))
        suspects.append(Suspect(
            function=name, kind="goroutines", growth_per_hour=t.slope_per_hour,
            unit="goroutines", captures=t.present, share=share, evidence=evidence,
            site=g.wait_location,
            own_caller=g.creator if is_own_code(g.creator) and g.creator != name else "",
            hint=GOROUTINE_HINTS.get(g.state, ""), state=g.state, score=score))
    return suspects, not_suspects


_GOROUTINE_CREATION = ("runtime.malg", "runtime.newproc1", "runtime.newproc",
                       "runtime.allgadd")


def relate_goroutines_to_memory(caps: Sequence[SnapshotSummary], times: np.ndarray,
                                 seg: np.ndarray, g_suspects: list[Suspect],
                                 heap_suspects: list[Suspect],
                                 heap_not: list[NotSuspect]) -> None:
    """Leaked goroutines hold stacks (StackInuse) and g structs (runtime.malg)."""
    if not g_suspects:
        return
    last = caps[-1]
    stack = last.memstats.get("StackInuse")
    per_goroutine = stack / last.goroutine_total if stack and last.goroutine_total else 0
    if stack:
        series = np.array([c.memstats.get("StackInuse", 0) for c in caps], dtype=np.float64)
        st = trend(times, series, seg)
        for s in g_suspects:
            held = s.growth_per_hour * per_goroutine
            s.evidence.append(
                f"stacks: StackInuse {_size(st.first)} → {_size(st.last)}; about "
                f"{_size(per_goroutine)} per goroutine, so this group adds ~{_rate(held, 'bytes')}")
    # Growth of the runtime's goroutine bookkeeping (cum of newproc1/malg/allgadd).
    creation = _series(caps, _heap_sample_types(caps)[0], cum=True)
    creation_growth = max((float(np.diff(creation[fn])[seg[1:] == seg[:-1]].sum())
                           for fn in _GOROUTINE_CREATION if fn in creation), default=0.0)
    for h in list(heap_suspects):
        runtime_only = is_runtime(h.function) and not h.own_caller
        made_by_goroutine_creation = runtime_only and creation_growth >= 0.5 * h.net_growth
        if h.function.startswith(_GOROUTINE_CREATION) or made_by_goroutine_creation:
            heap_suspects.remove(h)
            heap_not.append(NotSuspect(
                h.function, "heap", "goroutine descriptors (g structs) of the leaking "
                f"goroutines ({g_suspects[0].function}): follows the goroutine leak",
                h.growth_per_hour, "bytes"))
            rate = _rate(h.growth_per_hour, "bytes")
            g_suspects[0].evidence.append(f"heap: {h.function} grows {rate} with them")


def memstats_signals(caps: Sequence[SnapshotSummary], times: np.ndarray, seg: np.ndarray,
                      heap_slope: float) -> list[str]:
    """MemStats observations that separate held-but-free memory from live growth."""
    names = ("HeapInuse", "HeapIdle", "HeapReleased", "NextGC", "NumGC", "Sys")
    if not all(c.memstats for c in caps):
        return []
    series = {n: np.array([c.memstats.get(n, 0) for c in caps], dtype=np.float64) for n in names}
    tr = {n: trend(times, v, seg) for n, v in series.items()}
    out: list[str] = []
    inuse, idle, released = tr["HeapInuse"], tr["HeapIdle"], tr["HeapReleased"]
    held_free = series["HeapIdle"] - series["HeapReleased"]
    if inuse.slope_per_hour > 0 and inuse.up_share >= MIN_UP_SHARE:
        out.append(f"HeapInuse {_size(inuse.first)} → {_size(inuse.last)} "
                   f"({_rate(inuse.slope_per_hour, 'bytes')}): live spans keep growing.")
    elif tr["Sys"].net_growth > 0 and idle.net_growth > 0:
        out.append(f"HeapInuse is flat while HeapIdle grew {_size(idle.net_growth)}: memory "
                   "freed by the GC and held by the runtime (free-but-held, not a leak); it "
                   "goes back to the OS as HeapReleased grows.")
    if held_free[-1] > 0 and series["HeapInuse"][-1] > 0:
        out.append(f"{_size(held_free[-1])} is free but not yet returned to the OS "
                   f"(HeapIdle − HeapReleased); HeapReleased {_size(released.last)}.")
    nextgc = tr["NextGC"]
    if nextgc.net_growth > 0 and nextgc.up_share >= MIN_UP_SHARE and nextgc.ups >= 2:
        out.append(f"NextGC rose {_size(nextgc.first)} → {_size(nextgc.last)}: the heap live "
                   "after each GC grows (NextGC ≈ live heap × (1 + GOGC/100)).")
    numgc = tr["NumGC"]
    if numgc.steps and numgc.slope_per_hour > 0:
        out.append(f"{numgc.slope_per_hour:,.0f} GCs per hour.")
    return out

