"""Which captures a verdict reads: since the last deploy, split at process restarts."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bot.analysis.leaks.model import MAX_CAPTURES, MIN_CAPTURES, DeployMarker
from bot.analysis.summary import SnapshotSummary

_MONOTONIC_MEMSTATS = ("TotalAlloc", "Mallocs", "Frees", "NumGC")
_MONOTONIC_TOTALS = ("alloc_space", "alloc_objects")


def _restarted(prev: SnapshotSummary, cur: SnapshotSummary) -> bool:
    """A process restart between two captures: counters that only grow went back."""
    if prev.instances and cur.instances and prev.instances != cur.instances:
        return True
    for name in _MONOTONIC_MEMSTATS:
        a, b = prev.memstats.get(name), cur.memstats.get(name)
        if a is not None and b is not None and b < a:
            return True
    for name in _MONOTONIC_TOTALS:
        a, b = prev.heap.totals.get(name), cur.heap.totals.get(name)
        if a is not None and b is not None and b < a:
            return True
    return False


@dataclass(slots=True)
class Window:
    captures: list[SnapshotSummary]
    segment_ids: np.ndarray
    deploy: str = ""
    deploy_at: float | None = None
    since_deploy: int = 0


def select_window(summaries: Sequence[SnapshotSummary], deploys: Sequence[DeployMarker],
                   now: float, window: float | None) -> Window:
    ordered = sorted((s for s in summaries if s.taken_at <= now), key=lambda s: s.taken_at)
    start_at: float | None = None
    version = ""
    for d in deploys:
        if d.taken_at <= now and (start_at is None or d.taken_at > start_at):
            start_at, version = d.taken_at, getattr(d, "version", "")
    # A new build id is a deploy even when nobody recorded one.
    for prev, cur in itertools.pairwise(ordered):
        if prev.build_id and cur.build_id and prev.build_id != cur.build_id and (
                start_at is None or cur.taken_at > start_at):
            start_at, version = cur.taken_at, f"build {cur.build_id[:12]}"
    since = [s for s in ordered if start_at is None or s.taken_at >= start_at]
    chosen = since
    if window is not None:
        recent = [s for s in since if s.taken_at >= now - window]
        chosen = recent if len(recent) >= MIN_CAPTURES else since[-MIN_CAPTURES:]
    chosen = chosen[-MAX_CAPTURES:]
    ids = [0]
    for prev, cur in itertools.pairwise(chosen):
        ids.append(ids[-1] + (1 if _restarted(prev, cur) else 0))
    return Window(captures=chosen, segment_ids=np.array(ids[: len(chosen)], dtype=np.int64),
                   deploy=version, deploy_at=start_at, since_deploy=len(since))

