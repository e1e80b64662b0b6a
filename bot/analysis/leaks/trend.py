"""Theil–Sen: the median of pairwise slopes (robust to outliers and uneven gaps), and its spread."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np


@functools.lru_cache(maxsize=128)
def _pairs(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs i < j of n points (cached: every series of a window has the same n)."""
    return np.triu_indices(n, k=1)


def _pairwise_slopes(segments: Sequence[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Every pairwise slope (per second), pairs taken inside one segment only."""
    slopes: list[np.ndarray] = []
    for t, v in segments:
        if len(t) < 2:
            continue
        i, j = _pairs(len(t))
        dt = t[j] - t[i]
        ok = dt > 0
        if ok.any():
            slopes.append((v[j][ok] - v[i][ok]) / dt[ok])
    return np.concatenate(slopes) if slopes else np.zeros(0)


def theil_sen(segments: Sequence[tuple[np.ndarray, np.ndarray]]) -> float:
    """Median of pairwise slopes, pairs taken inside one segment only (per second)."""
    slopes = _pairwise_slopes(segments)
    return float(np.median(slopes)) if slopes.size else 0.0


def theil_sen_range(segments: Sequence[tuple[np.ndarray, np.ndarray]]
                    ) -> tuple[float, float]:
    """(low, high) of the pairwise slopes' middle 80% (per second): the slope's spread."""
    every = _pairwise_slopes(segments)
    if not every.size:
        return 0.0, 0.0
    return float(np.percentile(every, 10)), float(np.percentile(every, 90))
