"""What one series of distinct observations says: leak, bounded, one-off, noise or undecided.

The rules, each needing evidence rather than the absence of it:

- **growing** (a suspect): most changing steps rise, no step is a jump beyond
  what the fitted rate explains for its time gap (uneven spacing is fine: a long
  gap is allowed a large step), growth did not slow down, and at least
  ``MIN_POINTS`` distinct GC observations;
- **bounded** (a cache filling up, or a one-off load): after the growth, at least
  ``PLATEAU_POINTS`` distinct observations stay flat, over at least
  ``PLATEAU_SPAN_SHARE`` of the series' time;
- **noise**: it goes up and down;
- **undecided**: it rose, but the evidence above is missing (too few distinct
  observations, a short flat tail, growth slowing down); the reason says what
  more captures over how much time would decide.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bot.analysis.leaks.trend import theil_sen, theil_sen_range

GROWING = "growing"
BOUNDED = "bounded"
JUMP = "jump"
NOISE = "noise"
UNDECIDED = "undecided"
FLAT = "flat"
STOPPED = "stopped after restart"

MIN_POINTS = 4  # distinct observations for a suspect (3 steps)
PLATEAU_POINTS = 3  # distinct flat observations at the end for "bounded"
PLATEAU_SPAN_SHARE = 0.25  # ... covering at least this share of the series' time
MIN_UP_SHARE = 0.75
MAX_JUMP_SHARE = 0.6
MIN_RISING_TIME = 0.7  # share of the time between observations spent rising, for a suspect
MAX_FALL_SHARE = 0.25  # a fall larger than this share of the net growth: it goes up and down
SLOWING_RATIO = 0.55  # second-half rate below this share of the first half's: slowing


@dataclass(slots=True)
class Fit:
    """The classification of one series, with the numbers the evidence quotes."""

    kind: str
    why: str = ""
    first: float = 0.0
    last: float = 0.0
    growth: float = 0.0  # sum of changes inside restart segments
    slope: float = 0.0  # per second, Theil–Sen
    slope_low: float = 0.0
    slope_high: float = 0.0
    ups: int = 0
    downs: int = 0
    points: int = 0
    span: float = 0.0  # seconds from the first to the last observation
    flat_tail: int = 0  # distinct observations in the flat tail
    needed_points: int = 0  # more distinct observations that would decide
    needed_seconds: float = 0.0  # ... spread over about this much time
    jump: float = 0.0

    @property
    def up_share(self) -> float:
        moving = self.ups + self.downs
        return self.ups / moving if moving else 0.0


def classify(times: np.ndarray, values: np.ndarray, segments: np.ndarray,
             floor: float) -> Fit:
    """Classify one series; ``floor`` is the growth that matters (bytes or goroutines)."""
    n = len(values)
    parts = [(times[segments == s], values[segments == s]) for s in np.unique(segments)]
    same = segments[1:] == segments[:-1]
    deltas = np.diff(values)[same]
    gaps = np.diff(times)[same]
    fit = Fit(kind=FLAT, first=float(values[0]) if n else 0.0,
              last=float(values[-1]) if n else 0.0, points=n,
              span=float(times[-1] - times[0]) if n > 1 else 0.0)
    if n < 2 or not len(deltas):
        return fit
    fit.growth = float(deltas.sum())
    fit.slope = theil_sen(parts)
    fit.slope_low, fit.slope_high = theil_sen_range(parts)
    tol = 0.05 * floor
    fit.ups = int((deltas > tol).sum())
    fit.downs = int((deltas < -tol).sum())
    rise = max(float(values.max() - values.min()), fit.growth)
    if fit.growth < floor or rise < floor:
        return fit
    # Steps beyond what the rate explains for their gap: a long gap may hold a big step.
    excess = deltas - max(fit.slope, 0.0) * gaps
    fit.jump = float(excess.max())
    last_t, last_v = parts[-1]
    if len(parts) > 1 and len(last_t) >= 3:
        run_growth = float(last_v[-1] - last_v[0])
        if run_growth < 0.1 * fit.growth and run_growth < floor:
            fit.kind, fit.why = STOPPED, "grew before the restart, flat in the current run"
            return fit
    tail, tail_span = _flat_tail(last_t, last_v, fit.growth, floor)
    fit.flat_tail = tail
    span = max(fit.span, 1e-9)
    grew_before_tail = float(last_v[len(last_v) - tail] - last_v[0]) if tail else 0.0
    if tail >= 2 and grew_before_tail >= 0.5 * fit.growth:
        if tail >= PLATEAU_POINTS and tail_span >= PLATEAU_SPAN_SHARE * span:
            one_step = fit.jump > MAX_JUMP_SHARE * fit.growth or fit.ups <= 1
            fit.kind = JUMP if one_step else BOUNDED
            return fit
        fit.kind = UNDECIDED
        fit.needed_points = max(1, PLATEAU_POINTS - tail + 1)
        fit.needed_seconds = max(PLATEAU_SPAN_SHARE * span, span / max(1, n - 1)
                                 * fit.needed_points)
        fit.why = (f"rose, then flat over the last {tail} GC observation(s) only: too few to "
                   "tell a cache that filled up from a leak that paused")
        return fit
    largest_fall = float(-deltas.min()) if len(deltas) else 0.0
    if fit.up_share < MIN_UP_SHARE or largest_fall > MAX_FALL_SHARE * fit.growth:
        fit.kind, fit.why = NOISE, f"goes up and down ({fit.ups} rises, {fit.downs} falls)"
        return fit
    if fit.jump > MAX_JUMP_SHARE * fit.growth or fit.ups <= 1:
        fit.kind = UNDECIDED
        fit.needed_points = PLATEAU_POINTS
        fit.needed_seconds = max(span, 60.0)
        fit.why = ("one step carries most of the growth: distinct observations after it "
                   "would show whether it keeps rising or stays flat")
        return fit
    if n >= 5 and _slowing(last_t, last_v):
        fit.kind = UNDECIDED
        fit.needed_points = 3
        fit.needed_seconds = max(span, 60.0)
        fit.why = ("growth is slowing down, as a cache filling up does: a few more GC "
                   "observations would show whether it levels off")
        return fit
    rising_time = float(gaps[deltas > tol].sum()) / max(float(gaps.sum()), 1e-9)
    if rising_time < MIN_RISING_TIME:
        fit.kind = UNDECIDED
        fit.needed_points = 3
        fit.needed_seconds = max(span, 60.0)
        fit.why = (f"rose during only {rising_time:.0%} of the time between observations "
                   "(a staircase: a map doubling, buffers alive at a GC)")
        return fit
    if n < MIN_POINTS:
        fit.kind = UNDECIDED
        fit.needed_points = MIN_POINTS - n
        fit.needed_seconds = span / max(1, n - 1) * fit.needed_points
        fit.why = f"rose over only {n} distinct GC observations"
        return fit
    fit.kind = GROWING
    return fit


def _flat_tail(t: np.ndarray, v: np.ndarray, growth: float, floor: float
               ) -> tuple[int, float]:
    """(points, seconds) of the longest suffix that stays flat around its level.

    Flat means within a band (a tenth of the growth) AND far less than the
    series' own rate would have added over the suffix's time: a steady leak's
    last two points are never "flat", however small its steps.
    """
    band = max(0.1 * growth, 0.5 * floor)
    span = float(t[-1] - t[0])
    rate = growth / span if span > 0 else 0.0
    count = 1
    low = high = float(v[-1])
    for k in range(len(v) - 2, -1, -1):
        low, high = min(low, float(v[k])), max(high, float(v[k]))
        if high - low > band or high - low > 0.3 * rate * float(t[-1] - t[k]):
            break
        count += 1
    if count < 2:
        return count, 0.0
    return count, float(t[-1] - t[len(t) - count])


def _slowing(t: np.ndarray, v: np.ndarray) -> bool:
    """The average rate over the later half of the time fell well below the earlier half's.

    Halves by time, not by index, and average rates between the points nearest the
    ends and the middle, so bursts of captures do not weigh more than gaps.
    """
    mid = int(np.argmin(np.abs(t - (t[0] + t[-1]) / 2)))
    if mid == 0 or mid == len(t) - 1:
        return False
    early = (v[mid] - v[0]) / (t[mid] - t[0])
    late = (v[-1] - v[mid]) / (t[-1] - t[mid])
    return bool(early > 0 and late < SLOWING_RATIO * early)
