"""Goroutine groups (growing while parked, and proven leaked), their memory, process signals."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from bot.analysis.goroutines import BLOCKED_STATES, is_own_code, is_runtime
from bot.analysis.leaks.classify import BOUNDED, GROWING, JUMP, NOISE, STOPPED, UNDECIDED, classify
from bot.analysis.leaks.heap import HeapFindings
from bot.analysis.leaks.hints import GOROUTINE_HINTS
from bot.analysis.leaks.model import MIN_GOROUTINE_GROWTH, NotSuspect, Suspect, Undecided
from bot.analysis.leaks.series import MERGED
from bot.analysis.leaks.text import format_duration, growth_text
from bot.analysis.leaks.text import size as _size
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


def goroutines(caps: Sequence[SnapshotSummary], times: np.ndarray, seg: np.ndarray
               ) -> tuple[list[Suspect], list[NotSuspect], list[Undecided]]:
    """Goroutine groups that keep growing while parked (counts are live, not GC-stale)."""
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
    fits = {sig: classify(times, v, seg, MIN_GOROUTINE_GROWTH) for sig, v in counts.items()
            if float(np.diff(v)[seg[1:] == seg[:-1]].sum()) >= MIN_GOROUTINE_GROWTH}
    positive = sum(max(0.0, f.growth) for f in fits.values()) or 1.0
    suspects: list[Suspect] = []
    not_suspects: list[NotSuspect] = []
    undecided: list[Undecided] = []
    span = float(times[-1] - times[0]) if n > 1 else 0.0
    for sig, fit in fits.items():
        g = info[sig]
        name = g.wait_function or g.top_function or sig
        per_hour = fit.slope * 3600.0
        if fit.kind in (BOUNDED, JUMP):
            not_suspects.append(NotSuspect(
                name, "goroutines", f"bounded: rose to {int(fit.last)} and stayed there over "
                f"{fit.flat_tail} captures (a pool reaching its size)", per_hour, "goroutines",
                bounded=True))
            continue
        if fit.kind == STOPPED:
            not_suspects.append(NotSuspect(
                name, "goroutines", "grew before the restart, flat in the current run",
                per_hour, "goroutines"))
            continue
        if fit.kind == NOISE:
            not_suspects.append(NotSuspect(
                name, "goroutines", f"count goes up and down ({fit.ups} rises, {fit.downs} "
                "falls)", per_hour, "goroutines"))
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
                                           per_hour, "goroutines"))
            continue
        text = growth_text(fit.growth, span, "goroutines", points=fit.points,
                           per_second=fit.slope, low=fit.slope_low, high=fit.slope_high)
        if fit.kind == UNDECIDED:
            undecided.append(Undecided(
                name, "goroutines", f"{fit.why}; {max(1, fit.needed_points)} more capture(s) "
                f"over about {format_duration(max(fit.needed_seconds, 60.0))} would decide",
                growth=text, needed_captures=max(1, fit.needed_points),
                needed_seconds=fit.needed_seconds, net_growth=fit.growth))
            continue
        share = fit.growth / positive
        evidence = [
            f"{int(fit.first):,} → {int(fit.last):,} goroutines: {text} "
            f"({fit.points} captures), rose in {fit.ups} of {fit.ups + fit.downs} changing steps",
            f"all blocked in {g.state} at {g.wait_location or name}",
        ]
        if g.creator and g.creator != name:
            evidence.append(f"started by {g.creator}")
        attribution, leaking = _goroutine_attribution(caps, sig)
        if attribution:
            evidence.append(attribution)
        score = (fit.up_share ** 2) * (0.4 + 0.6 * min(1.0, share * 2))
        suspects.append(Suspect(
            function=name, kind="goroutines", growth_per_hour=per_hour,
            unit="goroutines", captures=fit.points, share=share, evidence=evidence,
            site=g.wait_location,
            own_caller=g.creator if is_own_code(g.creator) and g.creator != name else "",
            hint=GOROUTINE_HINTS.get(g.state, ""), state=g.state, score=score,
            net_growth=fit.growth, growth_text=text, instances=leaking,
            attribution=attribution))
    return suspects, not_suspects, undecided


def _goroutine_attribution(caps: Sequence[SnapshotSummary], sig: str) -> tuple[str, list[str]]:
    """"leaks on X only; the other 2 are flat" from the per-instance parked counts."""
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    for cap in caps:
        for obs in cap.observations:
            count = obs.goroutines.get(sig, 0)
            first.setdefault(obs.target, count)
            last[obs.target] = count
    if len(last) < 2:
        return "", []
    growth = {t: last[t] - first[t] for t in last}
    total = sum(max(0, g) for g in growth.values()) or 1
    leaking = sorted(t for t, g in growth.items() if g >= max(MIN_GOROUTINE_GROWTH, 0.1 * total))
    others = len(last) - len(leaking)
    if not leaking:
        return "", []
    if not others:
        return f"grows on all {len(last)} instances", []
    return (f"leaks on {', '.join(leaking[:3])} only; the other {others} "
            f"{'is' if others == 1 else 'are'} flat", leaking)


def proven(caps: Sequence[SnapshotSummary], times: np.ndarray) -> list[Suspect]:
    """Goroutines /debug/pprof/goroutineleak proved leaked (Go ≥ 1.26): reported as proven."""
    with_leaks = [(t, c) for t, c in zip(times, caps, strict=True)
                  if any(o.leaked is not None for o in c.observations)]
    if not with_leaks:
        return []
    t_last, last = with_leaks[-1]
    latest: dict[str, Any] = {}
    where: dict[str, list[str]] = {}
    for obs in last.observations:
        for g in obs.leaked or []:
            seen = latest.get(g.signature)
            latest[g.signature] = g if seen is None else type(g)(
                g.signature, seen.count + g.count, g.state, g.wait_function, g.wait_location,
                g.top_function, g.creator)
            where.setdefault(g.signature, []).append(obs.target)
    out: list[Suspect] = []
    fleet = len(last.observations)
    for sig, g in latest.items():
        t_first, first = with_leaks[0]
        before = sum(x.count for o in first.observations for x in (o.leaked or [])
                     if x.signature == sig)
        span = float(t_last - t_first)
        change = g.count - before
        name = g.wait_function or g.top_function or sig
        evidence = [f"proven: the runtime's goroutine-leak GC found {g.count:,} goroutines "
                    f"blocked in {g.state} at {g.wait_location or name} that nothing reachable "
                    "can ever wake"]
        if len(with_leaks) > 1:
            evidence.append(f"{before:,} → {g.count:,} proven leaked over "
                            f"{format_duration(span)} ({len(with_leaks)} captures)")
        attribution = ""
        if fleet > 1:
            others = fleet - len(where[sig])
            attribution = (f"leaks on {', '.join(where[sig][:3])} only; the other {others} "
                           f"{'is' if others == 1 else 'are'} clean" if others
                           else f"leaks on all {fleet} instances")
            evidence.append(attribution)
        growth = (growth_text(change, span, "goroutines", points=len(with_leaks))
                  if len(with_leaks) > 1 else f"{g.count:,} leaked")
        out.append(Suspect(
            function=name, kind="goroutines", growth_per_hour=change / span * 3600 if span else 0,
            unit="goroutines", captures=len(with_leaks), share=1.0, evidence=evidence,
            site=g.wait_location,
            own_caller=g.creator if is_own_code(g.creator) and g.creator != name else "",
            hint=GOROUTINE_HINTS.get(g.state, ""), state=g.state, score=2.0 + g.count / 1e6,
            net_growth=float(change), growth_text=growth, proven=True,
            instances=where[sig] if fleet > 1 and len(where[sig]) < fleet else [],
            attribution=attribution))
    return out


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
        first = caps[0].memstats.get("StackInuse", 0)
        for s in g_suspects:
            held = s.net_growth * per_goroutine
            s.evidence.append(
                f"stacks: StackInuse {_size(first)} → {_size(stack)}; about "
                f"{_size(per_goroutine)} per goroutine, so this group holds "
                f"{'+' if held >= 0 else ''}{_size(held)} more")
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
            g_suspects[0].evidence.append(f"heap: {h.function} grows with them "
                                          f"({h.growth_text})")


def memstats_signals(caps: Sequence[SnapshotSummary], found: HeapFindings) -> list[str]:
    """Whole-process observations, worded so they never contradict the verdict's numbers.

    Growth of the live heap is read from distinct GC observations (the heap
    profile's in-use total) and from HeapInuse at every capture; "free but held"
    is only said when neither grows.
    """
    out: list[str] = []
    repeated = sum(s.repeated for s in found.series)
    if repeated:
        total = sum(s.captures for s in found.series)
        out.append(f"{repeated} of {total} instance captures repeated the previous GC's heap "
                   "profile (no GC ran in between): each GC cycle counts once.")
    growing_live = [t for t, f in found.live.items() if f.kind == GROWING]
    growing_gc = [t for t, f in found.at_gc.items() if f.kind == GROWING]
    for target in sorted(set(growing_live) | set(growing_gc)):
        f = found.live.get(target) or found.at_gc[target]
        where = "" if target == MERGED or len(found.series) == 1 else f" on {target}"
        out.append(f"Heap in use{where} {_size(f.first)} → {_size(f.last)} in "
                   f"{format_duration(f.span)}: the live heap keeps growing.")
    if not growing_live and not growing_gc and all(c.memstats for c in caps):
        idle = [c.memstats.get("HeapIdle", 0) - c.memstats.get("HeapReleased", 0) for c in caps]
        if idle[-1] > idle[0] and idle[-1] > 0:
            out.append(f"{_size(idle[-1])} is free but not yet returned to the OS "
                       "(HeapIdle − HeapReleased): memory the GC freed and the runtime holds "
                       "(free-but-held), not a leak.")
    nextgc = [v for c in caps if (v := c.memstats.get("NextGC"))]
    if (growing_live or growing_gc) and len(nextgc) >= 2 and nextgc[-1] > nextgc[0]:
        out.append(f"NextGC {_size(nextgc[0])} → {_size(nextgc[-1])}: the heap live after "
                   "each GC grows (NextGC ≈ live heap × (1 + GOGC/100)).")
    numgc = [v for c in caps if (v := c.memstats.get("NumGC")) is not None]
    span = caps[-1].taken_at - caps[0].taken_at
    if len(numgc) >= 2 and numgc[-1] >= numgc[0] and span > 0:
        gcs = numgc[-1] - numgc[0]
        out.append(f"{gcs:,} GCs in {format_duration(span)} over all instances.")
    return out
