"""Heap series per instance, one point per GC cycle.

A Go heap profile shows the heap as of the last completed GC. When GCs are
rare (a growing heap raises NextGC), consecutive captures return the same
profile: those are one observation, not several flat ones. This module turns
the captures of a window into, per instance, the distinct observations (same
digest as the previous one = dropped), timed at the GC they reflect (LastGC),
split into segments at process restarts (NumGC or TotalAlloc going back).
Snapshots stored before observations existed count as one merged instance.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from bot.analysis.summary import InstanceObservation, SnapshotSummary

MERGED = "all instances"


@dataclass(slots=True)
class InstanceSeries:
    """The distinct GC observations of one instance over the window."""

    target: str
    times: np.ndarray  # seconds: the GC each observation reflects
    segments: np.ndarray  # restart segment id per point
    points: list[InstanceObservation]
    captures: int  # captures of the window in which this instance answered
    repeated: int  # captures dropped because they repeated the previous GC's profile
    taken: list[float] = field(default_factory=list)  # capture times of the points

    def values(self, function: str) -> np.ndarray:
        return np.array([p.inuse.get(function, 0) for p in self.points], dtype=np.float64)

    def totals(self) -> np.ndarray:
        return np.array([p.inuse_total for p in self.points], dtype=np.float64)

    @property
    def sample_period(self) -> int:
        """Bytes per heap sample of this instance (0: unknown, e.g. stored before it was
        kept); the in-use values are estimates with noise of about √(period·bytes)."""
        return max((p.sample_period or 0 for p in self.points), default=0)

    @property
    def gcs(self) -> int | None:
        """GC cycles between the first and the last observation (None if unknown)."""
        known = [p.num_gc for p in self.points if p.num_gc is not None]
        if len(known) < 2 or len(set(self.segments.tolist())) > 1:
            return None
        return known[-1] - known[0]


def _legacy(cap: SnapshotSummary) -> InstanceObservation:
    """One merged observation for a snapshot stored without per-instance ones."""
    heap = cap.heap
    functions = heap.functions.get("inuse_space") or heap.functions.get(
        heap.default_sample_type, [])
    total = heap.totals.get("inuse_space", heap.totals.get(heap.default_sample_type, 0))
    return InstanceObservation(
        target=MERGED, num_gc=cap.memstats.get("NumGC"), heap_alloc=cap.memstats.get("HeapAlloc"),
        next_gc=cap.memstats.get("NextGC"), heap_inuse=cap.memstats.get("HeapInuse"),
        total_alloc=cap.memstats.get("TotalAlloc"), inuse_total=int(total),
        inuse={fv.function: fv.flat for fv in functions})


def _restarted(prev: InstanceObservation, cur: InstanceObservation) -> bool:
    for a, b in ((prev.num_gc, cur.num_gc), (prev.total_alloc, cur.total_alloc)):
        if a is not None and b is not None and b < a:
            return True
    return False


def instance_series(caps: Sequence[SnapshotSummary], merged_segments: np.ndarray
                    ) -> list[InstanceSeries]:
    """Distinct GC observations per instance (oldest first), restarts as segment breaks."""
    per: dict[str, list[tuple[float, InstanceObservation, int]]] = {}
    for i, cap in enumerate(caps):
        observations = cap.observations or ([_legacy(cap)] if cap.heap.functions else [])
        for obs in observations:
            per.setdefault(obs.target, []).append((cap.taken_at, obs, i))
    out: list[InstanceSeries] = []
    for target, rows in per.items():
        times: list[float] = []
        taken: list[float] = []
        segs: list[int] = []
        points: list[InstanceObservation] = []
        repeated = 0
        seg = 0
        prev: InstanceObservation | None = None
        prev_cap = -1
        for taken_at, obs, i in rows:
            if prev is not None:
                restart = _restarted(prev, obs) or (
                    target == MERGED and int(merged_segments[i]) != int(merged_segments[prev_cap]))
                if restart:
                    seg += 1
                elif obs.digest and obs.digest == prev.digest:
                    repeated += 1  # the same GC cycle's profile again: one observation
                    continue
                elif (obs.num_gc is not None and obs.num_gc == prev.num_gc
                      and obs.last_gc == prev.last_gc):
                    # No GC completed in between, yet the profile moved (Go publishes a
                    # cycle's profile when sweeping ends): keep the later, fuller view.
                    repeated += 1
                    points[-1], taken[-1] = obs, taken_at
                    prev, prev_cap = obs, i
                    continue
            at = obs.last_gc if obs.last_gc and obs.last_gc <= taken_at else taken_at
            if times and at <= times[-1]:
                at = times[-1] + 1e-3
            times.append(at)
            taken.append(taken_at)
            segs.append(seg)
            points.append(obs)
            prev, prev_cap = obs, i
        out.append(InstanceSeries(target, np.array(times), np.array(segs, dtype=np.int64), points,
                                  captures=len(rows), repeated=repeated, taken=taken))
    return sorted(out, key=lambda s: s.target)
