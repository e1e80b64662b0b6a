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

Sampling (``period``, bytes per heap sample: Go's ``runtime.MemProfileRate``,
512 KiB by default). A heap profile's in-use bytes are estimates: an allocation
of s bytes is recorded with probability about 1 − e^(−s/period), and pprof scales
each recorded one back up, so a small object counts as about ``period`` bytes and
B bytes of new objects read as B give or take √(period·B). A leak's sampled series
is a staircase of such quanta (samples of retained objects stay). Every rule that
weighs a size or a pause is judged against that noise, so at 512 B per sample
(σ of a few kB) nothing changes, and at 512 KiB:

- growth counts only beyond ``NOISE_Z`` standard deviations of its own sampling
  noise (9 samples: 4.5MB at 512 KiB), else it is undecided with how long the
  fitted rate needs to get there ("sampled every 512kB: +1MB is about 2 samples"),
  even when it fell on the way by less than 9 samples (a fall within the noise does
  not make it "up and down");
- a flat tail is a plateau only when the rate before it would have added
  ``PLATEAU_SAMPLES`` samples over it (a pause in a staircase is not a plateau);
- a level that stays within the sampling noise after growing fast (a full cache
  whose entries turn over) is undecided.

Noise only ever makes a verdict less sure: the rules that hold a series back as
undecided (slowing down, a staircase, one big step) apply to sampled values as
they are, even where the sampling alone could explain what they see.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bot.analysis.leaks.text import format_duration, signed, size
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
NOISE_Z = 3.0  # growth beyond this many σ of the sampling noise counts as growth
SLOWING_Z = 2.0  # a level's shortfall beyond this many σ of the sampling noise: levelled
PLATEAU_SAMPLES = 3.0  # samples the earlier rate would add over a flat tail (e^-3 ≈ 5%)


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
    period: int = 0  # bytes per heap sample (0: unknown or exact counts)
    sampling_limited: bool = False  # undecided because the sampling cannot tell yet

    @property
    def up_share(self) -> float:
        moving = self.ups + self.downs
        return self.ups / moving if moving else 0.0


def sampling_sigma(period: int, *levels: float) -> float:
    """σ of the difference of heap estimates at these levels, sampled every ``period``
    bytes (each estimate of B bytes is off by about √(period·B)); 0 when exact."""
    if period <= 0:
        return 0.0
    return float(np.sqrt(period * sum(max(0.0, x) for x in levels)))


def classify(times: np.ndarray, values: np.ndarray, segments: np.ndarray,
             floor: float, period: int = 0) -> Fit:
    """Classify one series; ``floor`` is the growth that matters (bytes or goroutines);
    ``period`` the bytes per heap sample when the values are sampled estimates."""
    n = len(values)
    parts = [(times[segments == s], values[segments == s]) for s in np.unique(segments)]
    same = segments[1:] == segments[:-1]
    deltas = np.diff(values)[same]
    gaps = np.diff(times)[same]
    fit = Fit(kind=FLAT, first=float(values[0]) if n else 0.0,
              last=float(values[-1]) if n else 0.0, points=n,
              span=float(times[-1] - times[0]) if n > 1 else 0.0, period=period)
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
    largest_fall = float(-deltas.min()) if len(deltas) else 0.0
    up_and_down = fit.up_share < MIN_UP_SHARE or largest_fall > MAX_FALL_SHARE * fit.growth
    # A fall of fewer than 9 samples is within the sampling noise too (one freed sampled
    # object reads as ~period bytes, however small it was: a leaking map's old table), so
    # it cannot make growth that is itself within the noise read as "up and down".
    falls_within_noise = largest_fall < NOISE_Z * NOISE_Z * period
    if period and (not up_and_down or falls_within_noise) and _within_noise(fit, period):
        return fit
    tail, tail_span = _flat_tail(last_t, last_v, fit.growth, floor)
    fit.flat_tail = tail
    span = max(fit.span, 1e-9)
    grew_before_tail = float(last_v[len(last_v) - tail] - last_v[0]) if tail else 0.0
    if tail >= 2 and grew_before_tail >= 0.5 * fit.growth:
        before = float(last_t[len(last_t) - tail] - last_t[0])
        # At the rate before the tail, this many samples would have landed in it.
        expected = (grew_before_tail / before * tail_span / period
                    if period and before > 0 else float("inf"))
        if (tail >= PLATEAU_POINTS and tail_span >= PLATEAU_SPAN_SHARE * span
                and expected >= PLATEAU_SAMPLES):
            one_step = fit.jump > MAX_JUMP_SHARE * fit.growth or fit.ups <= 1
            fit.kind = JUMP if one_step else BOUNDED
            return fit
        fit.kind = UNDECIDED
        fit.needed_points = max(1, PLATEAU_POINTS - tail + 1)
        fit.needed_seconds = max(PLATEAU_SPAN_SHARE * span, span / max(1, n - 1)
                                 * fit.needed_points)
        fit.why = (f"rose, then flat over the last {tail} GC observation(s) only: too few to "
                   "tell a cache that filled up from a leak that paused")
        if expected < PLATEAU_SAMPLES and tail >= PLATEAU_POINTS:
            # Long enough in captures, too short for the sampling: wait until the rate
            # before it would have added PLATEAU_SAMPLES samples.
            fit.sampling_limited = True
            fit.needed_seconds = max(fit.needed_seconds,
                                     tail_span * (PLATEAU_SAMPLES / max(expected, 1e-9) - 1))
            fit.why = (f"rose, then flat over the last {tail} GC observations, but sampled "
                       f"every {size(period)} the rate before would have added only "
                       f"{expected:.1f} sample(s) in that time: a pause, not yet a plateau")
        return fit
    if up_and_down:
        fit.kind, fit.why = NOISE, f"goes up and down ({fit.ups} rises, {fit.downs} falls)"
        return fit
    if period and _levelled_within_noise(fit, last_t, last_v, period):
        return fit
    if fit.jump > MAX_JUMP_SHARE * fit.growth or fit.ups <= 1:
        fit.kind = UNDECIDED
        fit.needed_points = PLATEAU_POINTS
        fit.needed_seconds = max(span, 60.0)
        fit.why = ("one step carries most of the growth: distinct observations after it "
                   "would show whether it keeps rising or stays flat")
        return fit
    if n >= 4 and _slowing(last_t, last_v):
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


def _within_noise(fit: Fit, period: int) -> bool:
    """Growth not beyond NOISE_Z σ of the sampling noise: mark the fit undecided with
    how long the fitted rate needs to get there. True when it did so.

    The noise is that of the growth itself, √(period·G): G bytes of new objects are
    G/period samples give or take their square root, so NOISE_Z = 3 asks for 9
    samples. Samples of objects that stay alive stay in the profile, so a leaking
    function's earlier bytes add no noise; a level that turns over (a full cache)
    wanders by more, and goes up and down: the shape rules and
    :func:`_levelled_within_noise` see that.
    """
    sigma = sampling_sigma(period, fit.growth)
    if fit.growth >= NOISE_Z * sigma:
        return False
    needed = NOISE_Z * NOISE_Z * period  # G ≥ z·√(period·G)
    rate = max(fit.slope, fit.growth / max(fit.span, 1e-9))
    more_seconds = max(0.0, needed - fit.growth) / rate if rate > 0 else 0.0
    fit.kind = UNDECIDED
    fit.sampling_limited = True
    # What decides is time (the leak must add the samples), spread over a few captures
    # so the steps can be seen; not many captures close together.
    fit.needed_seconds = max(more_seconds, fit.span / max(1, fit.points - 1))
    fit.needed_points = max(PLATEAU_POINTS, MIN_POINTS - fit.points)
    grew = signed(fit.growth, "bytes")
    samples = round(fit.growth / period)
    fit.why = (f"sampled every {size(period)} (runtime.MemProfileRate), {grew} is about "
               f"{samples} sample{'' if samples == 1 else 's'}, within the sampling noise "
               f"(±{size(sigma)}): {size(needed)} ({NOISE_Z * NOISE_Z:.0f} samples) would "
               "tell, at the rate seen")
    return True


def _levelled_within_noise(fit: Fit, t: np.ndarray, v: np.ndarray, period: int) -> bool:
    """A level the sampling noise hides: the longest suffix whose spread is within 2σ of
    the sampling noise grew far less than the rate before it predicts (a cache that
    filled, then wanders by a few samples as its entries turn over). Undecided, never
    bounded: the noise that hides the plateau hides a pause of a leak too."""
    k = len(v) - 1
    while k > 0:
        low, high = float(v[k - 1:].min()), float(v[k - 1:].max())
        if high - low > 2.0 * sampling_sigma(period, low, high):
            break
        k -= 1
    # The level needs the evidence a plateau needs: PLATEAU_POINTS observations over
    # PLATEAU_SPAN_SHARE of the time (two close captures are no level).
    if k <= 0 or len(v) - k < PLATEAU_POINTS:
        return False
    t1, t2 = float(t[k] - t[0]), float(t[-1] - t[k])
    if t2 < PLATEAU_SPAN_SHARE * float(t[-1] - t[0]):
        return False
    grew_before, grew_after = float(v[k] - v[0]), float(v[-1] - v[k])
    if t1 <= 0 or t2 <= 0 or grew_before <= 0:
        return False
    expected = grew_before / t1 * t2
    sigma = sampling_sigma(period, expected * t2 / t1, grew_after)
    if grew_after >= SLOWING_RATIO * expected or expected - grew_after <= SLOWING_Z * sigma:
        return False
    fit.kind = UNDECIDED
    fit.sampling_limited = True
    fit.needed_points = PLATEAU_POINTS
    fit.needed_seconds = max(fit.span, 60.0)
    fit.why = (f"rose {signed(grew_before, 'bytes')} in {format_duration(t1)}, then "
               f"{signed(grew_after, 'bytes')} in {format_duration(t2)}, within the sampling "
               f"noise of one every {size(period)}: a cache that filled up, or a leak that "
               "slowed down")
    return True


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
    ends and the middle, so bursts of captures do not weigh more than gaps. Not
    weighed against the sampling noise: a slowdown the noise might explain still
    leaves the series undecided (noise never makes a verdict surer).
    """
    mid = int(np.argmin(np.abs(t - (t[0] + t[-1]) / 2)))
    if mid == 0 or mid == len(t) - 1:
        return False
    early = (v[mid] - v[0]) / (t[mid] - t[0])
    late = (v[-1] - v[mid]) / (t[-1] - t[mid])
    return bool(early > 0 and late < SLOWING_RATIO * early)
