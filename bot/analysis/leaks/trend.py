"""Trend statistics of one series: Theil–Sen slope, rises and falls, jumps and plateaus."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bot.analysis.leaks.model import MIN_CAPTURES, PLATEAU_RATIO


@dataclass(slots=True)
class Trend:
    """How one series moved over the window (values per capture, segments split)."""

    slope_per_hour: float
    ups: int
    downs: int
    steps: int
    net_growth: float  # sum of within-segment changes
    largest_step: float
    present: int  # captures in which the series is > 0
    first: float
    last: float
    plateau: bool = False
    early_rate: float = 0.0
    recent_rate: float = 0.0
    segments: int = 1
    current_run_captures: int = 0  # captures in the latest segment
    current_run_rate: float = 0.0  # Theil–Sen slope per hour inside the latest segment

    @property
    def stopped_after_restart(self) -> bool:
        """Grew in an earlier run but is flat over ≥3 captures of the current one."""
        return (self.segments > 1 and self.current_run_captures >= MIN_CAPTURES
                and self.current_run_rate <= 0.1 * max(self.slope_per_hour, 0.0))

    @property
    def up_share(self) -> float:
        moving = self.ups + self.downs
        return self.ups / moving if moving else 0.0

    @property
    def jump_share(self) -> float:
        return self.largest_step / self.net_growth if self.net_growth > 0 else 1.0


@functools.lru_cache(maxsize=128)
def _pairs(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs i < j of n points (cached: every series of a window has the same n)."""
    return np.triu_indices(n, k=1)


def theil_sen(segments: Sequence[tuple[np.ndarray, np.ndarray]]) -> float:
    """Median of pairwise slopes, pairs taken inside one segment only (per second)."""
    slopes: list[np.ndarray] = []
    for t, v in segments:
        if len(t) < 2:
            continue
        i, j = _pairs(len(t))
        dt = t[j] - t[i]
        ok = dt > 0
        if ok.any():
            slopes.append((v[j][ok] - v[i][ok]) / dt[ok])
    if not slopes:
        return 0.0
    return float(np.median(np.concatenate(slopes)))


def trend(times: np.ndarray, values: np.ndarray, segment_ids: np.ndarray,
          min_growth: float = 0.0) -> Trend:
    """Trend of one series; ``segment_ids`` numbers the restart segments.

    ``min_growth`` is the growth below which a rise does not count for the
    plateau test (noise on a flat series is not "growth that stopped").
    """
    segments = [(times[segment_ids == s], values[segment_ids == s])
                for s in np.unique(segment_ids)]
    same = segment_ids[1:] == segment_ids[:-1]
    deltas = np.diff(values)[same]
    ups = int((deltas > 0).sum())
    downs = int((deltas < 0).sum())
    net = float(deltas.sum()) if len(deltas) else 0.0
    result = Trend(
        slope_per_hour=theil_sen(segments) * 3600.0, ups=ups, downs=downs, steps=len(deltas),
        net_growth=net, largest_step=float(deltas.max()) if len(deltas) else 0.0,
        present=int((values > 0).sum()), first=float(values[0]), last=float(values[-1]),
    )
    result.segments = len(segments)
    last_t, last_v = segments[-1]
    result.current_run_captures = len(last_t)
    result.current_run_rate = theil_sen([(last_t, last_v)]) * 3600.0
    _plateau(result, segments, min_growth)
    return result


def _plateau(result: Trend, segments: Sequence[tuple[np.ndarray, np.ndarray]],
             min_growth: float) -> None:
    """Did growth stop? Compare the last third of the longest recent segment with before."""
    t, v = max(reversed(segments), key=lambda s: len(s[0]))  # longest, latest on ties
    if len(t) < 5:
        return
    cut = len(t) - max(2, (len(t) - 1) // 3) - 1
    early_t, early_v = t[: cut + 1], v[: cut + 1]
    recent_t, recent_v = t[cut:], v[cut:]
    early_span = early_t[-1] - early_t[0]
    recent_span = recent_t[-1] - recent_t[0]
    if early_span <= 0 or recent_span <= 0:
        return
    result.early_rate = theil_sen([(early_t, early_v)]) * 3600.0
    result.recent_rate = theil_sen([(recent_t, recent_v)]) * 3600.0
    early_growth = float(early_v[-1] - early_v[0])
    early_deltas = np.diff(early_v)
    early_up = (early_deltas > 0).sum() / max(1, (early_deltas != 0).sum())
    recent_growth = float(recent_v.max() - recent_v[0])
    result.plateau = bool(
        result.early_rate > 0 and early_growth > max(0.0, min_growth) and early_up >= 0.6
        and (early_deltas > 0).sum() >= 2
        and result.recent_rate <= PLATEAU_RATIO * result.early_rate
        and recent_growth <= 0.25 * early_growth
    )



def theil_sen_range(segments: Sequence[tuple[np.ndarray, np.ndarray]]
                    ) -> tuple[float, float]:
    """(low, high) of the pairwise slopes' middle 80% (per second): the slope's spread."""
    slopes: list[np.ndarray] = []
    for t, v in segments:
        if len(t) < 2:
            continue
        i, j = _pairs(len(t))
        dt = t[j] - t[i]
        ok = dt > 0
        if ok.any():
            slopes.append((v[j][ok] - v[i][ok]) / dt[ok])
    if not slopes:
        return 0.0, 0.0
    every = np.concatenate(slopes)
    return float(np.percentile(every, 10)), float(np.percentile(every, 90))
