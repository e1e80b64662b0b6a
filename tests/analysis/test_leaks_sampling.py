"""Leak verdicts at Go's default heap sampling rate (runtime.MemProfileRate = 512 KiB).

A heap profile's in-use bytes are estimates: an allocation is recorded about once
per 512 KiB allocated and pprof scales each record back up, so a small object that
is recorded counts as about 512 KiB and a function's value moves in such quanta.
A slow leak is then a staircase of a few samples, and a full cache whose entries
turn over wanders by a few samples around its level. These tests check that the
verdict weighs growth against that noise: on real captures of the demo taken at
512 KiB (tests/fixtures/leaks/, written by ``bench/leaks/run.py --dump``), and on
series sampled the way the runtime samples (a Poisson process per allocated byte).
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from bot.analysis import leaks
from bot.analysis.leaks import analyze
from bot.analysis.leaks.observe import heap_facts
from bot.analysis.summary import SnapshotSummary
from bot.pprof import parse_profile
from tests.analysis.test_leaks_gc import BACKGROUND, by_name, linear, observed

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
DEFAULT_RATE = 524288  # Go's runtime.MemProfileRate
LEAK_FUNCTIONS = ("main.leakmapLoadUser", "main.leakmapNewRequest", "main.leakmapSetContext",
                  "main.sliceNewPayload", "main.slowleakKeepRecord")


def real_captures(name: str) -> list[SnapshotSummary]:
    data = json.loads(gzip.decompress((FIXTURES / "leaks" / name).read_bytes()))
    return [SnapshotSummary.from_dict(s) for s in data["summaries"]]


def with_period(caps: list[SnapshotSummary], period: int | None) -> list[SnapshotSummary]:
    for cap in caps:
        for obs in cap.observations:
            obs.sample_period = period
    return caps


def test_heap_facts_keep_the_profiles_sampling_period() -> None:
    profile = parse_profile((FIXTURES / "heap_1.pb.gz").read_bytes())
    assert profile.period == 4096  # the fixtures were captured at memprofilerate 4096
    assert heap_facts(profile).sample_period == 4096


def test_real_default_rate_captures_leaks_wait_for_samples_instead_of_a_wrong_all_clear() -> None:
    # 11 captures over 1m41s of the demo at 512 KiB per sample: each leak grew by one or
    # two samples. Read without the sampling, one of 512 KiB then nothing looked like "a
    # one-off load (warm-up, a batch)": an all-clear the evidence does not support.
    report = analyze(real_captures("default_rate_even.json.gz"))
    undecided = by_name(report.undecided)
    not_suspects = by_name(report.not_suspects)
    for fn in LEAK_FUNCTIONS:
        assert fn not in not_suspects, (fn, not_suspects.get(fn))
    assert not {s.function for s in report.suspects if s.kind == "heap"}
    for fn in ("main.slowleakKeepRecord", "main.sliceNewPayload", "main.leakmapLoadUser"):
        reason = undecided[fn].reason
        assert "sampled every 512kB (runtime.MemProfileRate)" in reason
        assert "within the sampling noise" in reason
        assert "4.50MB (9 samples) would tell, at the rate seen" in reason
        assert "more capture(s) after fresh GCs over about" in reason
    # One sample of +512kB at about 5kB/s: minutes more, never seconds.
    assert undecided["main.slowleakKeepRecord"].needed_seconds > 5 * 60
    # The goroutine leaks are counts, not samples: decided as before.
    assert {"main.blockedSendResult", "main.tickerPollUntilDone"} <= set(by_name(report.suspects))
    assert report.verdict == leaks.LEAK_LIKELY


def test_real_default_rate_captures_a_full_cache_wandering_by_samples_is_not_a_leak() -> None:
    # The bounded FIFO cache filled in 20 s, then its sampled size wandered 3 → 4 → 5 →
    # 6.5MB as entries turned over (±1.6MB of sampling noise at 5MB): read without the
    # sampling, six rises in a row made it a suspect.
    report = analyze(real_captures("default_rate_long_gap.json.gz"))
    assert "main.cacheBuildEntry" not in by_name(report.suspects)
    reason = by_name(report.undecided)["main.cacheBuildEntry"].reason
    assert "within the sampling noise of one every 512kB" in reason
    assert "a cache that filled up, or a leak that slowed down" in reason
    # The fastest leak grew 9 samples (4.50MB) over 3 minutes: found.
    assert "main.leakmapNewRequest" in by_name(report.suspects)


def test_the_same_real_captures_read_exactly_as_before_when_the_period_is_unknown() -> None:
    # Captures stored before the period was kept: no noise allowance, the old reading.
    report = analyze(with_period(real_captures("default_rate_long_gap.json.gz"), None))
    assert "main.cacheBuildEntry" in by_name(report.suspects)


def sampled_leak(bytes_per_second: float, period: int, seed: int, until: float = 3600.0
                 ) -> object:
    """A leak as a heap profile shows it: retained bytes recorded once per ``period``
    allocated bytes on average (a Poisson process), each record worth ``period``."""
    rng = np.random.default_rng(seed)
    gaps = rng.exponential(period / bytes_per_second, size=int(2 * until * bytes_per_second
                                                                 / period) + 50)
    arrivals = np.cumsum(gaps)
    return lambda t: period * float(np.searchsorted(arrivals, t, side="right"))


def sampled_cache(level: float, fill_seconds: float, period: int, seed: int) -> object:
    """A cache that fills to ``level`` bytes, then turns over: every GC sees a fresh
    Poisson draw of its recorded entries around the (filling) level."""
    rng = np.random.default_rng(seed)
    seen: dict[float, float] = {}

    def value(t: float) -> float:
        if t not in seen:
            mean = level * min(1.0, max(t, 0.0) / fill_seconds) / period
            seen[t] = period * float(rng.poisson(mean))
        return seen[t]
    return value


def run(times: Sequence[float], gcs: Sequence[float], functions: dict[str, object],
        period: int) -> leaks.LeakReport:
    caps = observed(times, gcs, {"10.0.3.7:6060": {**BACKGROUND, **functions}})  # type: ignore[dict-item]
    return analyze(with_period(caps, period))


MINUTELY = [60.0 * i for i in range(11)]  # `--sample 10x1m`-like: 11 captures, 10 minutes
GCS = [5.0 * i + 1 for i in range(200)]


def test_a_20kb_per_second_leak_at_the_default_rate_is_found_over_ten_minutes() -> None:
    # 20kB/s = one sample every 26 s: about 23 samples over 10 minutes. The staircase
    # sometimes pauses over the last two captures (e^-2.3 = 10% per pause): that run
    # is undecided ("flat over the last 2 GC observations only"), never cleared.
    found = 0
    for seed in range(20):
        report = run(MINUTELY, GCS, {"main.leak": sampled_leak(20_000, DEFAULT_RATE, seed)},
                     DEFAULT_RATE)
        found += "main.leak" in by_name(report.suspects)
        assert "main.leak" not in by_name(report.not_suspects), report.to_json()
    assert found >= 17


def test_a_leak_in_a_function_that_already_holds_200mb_is_judged_by_its_new_samples() -> None:
    # A service up for days: the leaking function holds 200MB, whose samples stay in
    # the profile; 40kB/s more (one sample every 13 s) is about 46 samples in 10 minutes.
    found = 0
    for seed in range(20):
        leak = sampled_leak(40_000, DEFAULT_RATE, seed)
        report = run(MINUTELY, GCS, {"main.leak": lambda t, leak=leak: 200e6 + leak(t)},
                     DEFAULT_RATE)
        found += "main.leak" in by_name(report.suspects)
        assert "main.leak" not in by_name(report.not_suspects), report.to_json()
    assert found >= 18


@pytest.mark.parametrize("seed", range(8))
def test_the_same_leak_over_100_seconds_is_undecided_with_how_long_would_decide(seed: int
                                                                                ) -> None:
    report = run([10.0 * i for i in range(11)], GCS,
                 {"main.leak": sampled_leak(20_000, DEFAULT_RATE, seed)}, DEFAULT_RATE)
    assert "main.leak" not in by_name(report.suspects)
    assert "main.leak" not in by_name(report.not_suspects)
    undecided = by_name(report.undecided).get("main.leak")
    if undecided is not None:  # (no sample recorded in 100 s: nothing to say about it)
        assert "sampled every 512kB" in undecided.reason
        # 9 samples (4.5MB) tell; at 20kB/s that is about 4 minutes from the start.
        assert 60 < undecided.needed_seconds < 15 * 60


@pytest.mark.parametrize("times", [MINUTELY, [10.0 * i for i in range(11)]])
def test_a_full_cache_turning_over_is_never_a_suspect_at_the_default_rate(
        times: list[float]) -> None:
    # Its sampled size is a fresh draw around 5MB (±1.6MB) at every GC.
    for seed in range(40):
        report = run(times, GCS, {"main.cachePut": sampled_cache(5e6, 20.0, DEFAULT_RATE,
                                                                 seed)}, DEFAULT_RATE)
        assert "main.cachePut" not in by_name(report.suspects), (seed, report.to_json())


def test_at_512_bytes_per_sample_the_verdict_is_the_one_without_sampling() -> None:
    # The noise of a 512-byte period is a few kB: every rule reads as without it.
    gcs = [1, 12, 28, 55, 72]
    functions = {"main.leakmapLoadUser": linear(0.5e6, 0.4e6),
                 "main.cachePut": lambda t: min(10e6, 0.5e6 * t)}
    times = [10.0 * i for i in range(11)]
    sampled = run(times, gcs, functions, 512)
    exact = analyze(with_period(observed(times, gcs, {"a": {**BACKGROUND, **functions}}), None))
    assert sampled.verdict == exact.verdict
    assert [s.function for s in sampled.suspects] == [s.function for s in exact.suspects]
    assert ([(n.function, n.reason) for n in sampled.not_suspects]
            == [(n.function, n.reason) for n in exact.not_suspects])
    assert [u.function for u in sampled.undecided] == [u.function for u in exact.undecided]
