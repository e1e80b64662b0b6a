"""GC-aware leak verdicts on stored captures with per-instance GC observations.

Each capture carries what heapbot stores per instance: NumGC, LastGC, the heap
profile's digest and its leading functions. A Go heap profile is as of the last
completed GC, so captures between two GCs repeat the same profile (same digest):
these tests build such series and check what `/heap leaks` concludes.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from bot.analysis import leaks
from bot.analysis.leaks import analyze
from bot.analysis.summary import (
    GoroutineGroupSummary,
    InstanceObservation,
    ProfileSummary,
    SnapshotSummary,
)
from handlers.leaks import build_reply

MB = 1_000_000
T0 = 1_800_000_000.0
Series = Callable[[float], float]  # value at GC time t (seconds since T0)


def observed(times: Sequence[float], gc_times: Sequence[float],
             instances: Mapping[str, Mapping[str, Series]], *,
             goroutines: Mapping[str, Callable[[float], int]] | None = None,
             leaked: Mapping[str, int] | None = None) -> list[SnapshotSummary]:
    """Captures at ``times``; each instance's heap profile is as of its last GC before
    the capture (``gc_times``), so captures between two GCs repeat it exactly."""
    out: list[SnapshotSummary] = []
    for k, t in enumerate(times):
        done = [g for g in gc_times if g <= t]
        at = done[-1] if done else 0.0
        observations = []
        merged: dict[str, int] = {}
        for target, functions in instances.items():
            inuse = {fn: int(f(at)) for fn, f in functions.items()}
            for fn, v in inuse.items():
                merged[fn] = merged.get(fn, 0) + v
            # the profile also carries allocation totals, which change at every GC
            digest = hashlib.sha1(repr((len(done), sorted(inuse.items()))).encode()).hexdigest()
            live = sum(inuse.values())
            groups = {sig: f(t) for sig, f in (goroutines or {}).items()}
            observations.append(InstanceObservation(
                target=target, num_gc=len(done), last_gc=T0 + at, heap_alloc=live,
                next_gc=2 * live, heap_inuse=live + int(sum(f(t) - f(at) for f in
                                                            functions.values())),
                total_alloc=10 * MB * (k + 1), digest=digest, inuse_total=live, inuse=inuse,
                goroutines=groups if target == next(iter(instances)) else {},
                leaked=[GoroutineGroupSummary(sig, n, "chan send", "main.sendResult",
                                              "/src/app/worker.go:42", "runtime.gopark",
                                              "main.startWorker")
                        for sig, n in (leaked or {}).items()] if leaked is not None else None))
        total = sum(merged.values())
        groups = [GoroutineGroupSummary(sig, f(t), "chan send", sig.split(";")[-1],
                                        "/src/app/worker.go:42", "runtime.gopark",
                                        sig.split(";")[0])
                  for sig, f in (goroutines or {}).items()]
        out.append(SnapshotSummary(
            snapshot_id=f"s{k}", service="payments", taken_at=T0 + t, build_id="b1",
            instances=len(instances),
            heap=ProfileSummary(sample_types={"inuse_space": "bytes"},
                                default_sample_type="inuse_space",
                                totals={"inuse_space": total}, functions={}),
            goroutine_total=sum(g.count for g in groups), goroutine_groups=groups,
            memstats={"HeapInuse": sum(o.heap_inuse or 0 for o in observations),
                      "NumGC": sum(o.num_gc or 0 for o in observations),
                      "NextGC": sum(o.next_gc or 0 for o in observations)},
            observations=observations))
    return out


def linear(start: float, per_second: float) -> Series:
    return lambda t: start + per_second * t


def filled(start: float, per_second: float, cap: float) -> Series:
    return lambda t: min(cap, start + per_second * t)


def flat(value: float) -> Series:
    return lambda t: value


BACKGROUND = {"main.handleRequest": flat(5 * MB), "bufio.NewReaderSize": flat(2 * MB)}
EVEN = [10.0 * i for i in range(11)]


def by_name(items: list) -> dict:
    return {x.function: x for x in items}


def test_stale_profiles_are_one_observation_and_never_read_as_a_plateau() -> None:
    # The case: GCs get rarer as the heap grows; 11 captures 10 s apart see
    # only 6 distinct profiles (the first, then 5 GCs), and the leak is still a leak.
    gcs = [1, 12, 28, 55, 72]
    caps = observed(EVEN, gcs, {"10.0.3.7:6060": {
        **BACKGROUND, "main.leakmapLoadUser": linear(0.5 * MB, 0.4 * MB),
        "main.sliceNewPayload": linear(0.2 * MB, 0.2 * MB)}})
    report = analyze(caps)
    assert report.verdict == leaks.LEAK_LIKELY
    suspects = by_name(report.suspects)
    assert {"main.leakmapLoadUser", "main.sliceNewPayload"} <= set(suspects)
    assert not any(n.bounded for n in report.not_suspects)
    top = suspects["main.leakmapLoadUser"]
    assert "6 distinct GC observations in 11 captures over 5 GCs" in " ".join(top.evidence)
    assert any("repeated the previous GC's heap profile" in s for s in report.signals)


def test_a_cache_that_filled_is_bounded_only_with_several_distinct_flat_observations() -> None:
    cache = {**BACKGROUND, "main.cachePut": filled(0, 0.5 * MB, 10 * MB)}
    many = observed(EVEN, [5 * i + 1 for i in range(20)], {"a:6060": cache})
    assert by_name(analyze(many).not_suspects)["main.cachePut"].bounded
    # The same cache where no GC ran after it filled: the flat tail is repeats only.
    few = observed(EVEN, [1, 8, 16], {"a:6060": cache})
    report = analyze(few)
    assert "main.cachePut" not in by_name(report.not_suspects)
    assert "main.cachePut" not in by_name(report.suspects)
    undecided = by_name(report.undecided)["main.cachePut"]
    assert "more capture" in undecided.reason and "would decide" in undecided.reason
    assert report.verdict == leaks.UNDECIDED


def test_uneven_spacing_a_long_gap_is_not_a_one_off_jump() -> None:
    # Story 2 of the issue: a burst, 3.5 minutes of nothing, then captures 15 s apart;
    # the leak rises at every step (27.5 → 73.6 → 76.1 → 80.6 MB shape).
    times = [0, 5, 10, 15, 225, 240, 255]
    caps = observed(times, [0.1] + [t - 0.5 for t in times[1:]],
                    {"a:6060": {**BACKGROUND, "main.leakmapLoadUser": linear(27 * MB, 0.22 * MB)}})
    report = analyze(caps)
    assert "main.leakmapLoadUser" in by_name(report.suspects), report.to_json()
    reasons = " ".join(n.reason for n in report.not_suspects)
    assert "one jump" not in reasons


def test_a_leak_on_one_instance_of_three_is_attributed_to_it() -> None:
    gcs = [5 * i + 1 for i in range(20)]
    healthy = {**BACKGROUND, "main.leakmapLoadUser": flat(1 * MB)}
    caps = observed(EVEN, gcs, {
        "10.0.3.5:6060": healthy, "10.0.3.6:6060": healthy,
        "10.0.3.7:6060": {**BACKGROUND, "main.leakmapLoadUser": linear(1 * MB, 0.3 * MB)}})
    report = analyze(caps)
    suspect = by_name(report.suspects)["main.leakmapLoadUser"]
    assert suspect.instances == ["10.0.3.7:6060"]
    assert suspect.attribution == "leaks on 10.0.3.7:6060 only; the other 2 are flat"
    reply = build_reply("payments", report)
    assert "leaks on 10.0.3.7:6060 only; the other 2 are flat" in reply.summary


def test_short_windows_show_the_observed_change_not_an_hourly_rate() -> None:
    caps = observed(EVEN, [5 * i + 1 for i in range(20)],
                    {"a:6060": {**BACKGROUND, "main.leak": linear(MB, 0.5 * MB)}})
    report = analyze(caps)
    suspect = by_name(report.suspects)["main.leak"]
    assert suspect.growth_text == "+45.78MB in 1m36s"  # 48e6 B in 96 s, the top table's units
    row = next(r for r in build_reply("payments", report).table.rows if r[0] == "main.leak")
    assert row[2] == suspect.growth_text
    text = " ".join([report.summary, *suspect.evidence])
    assert "/h" not in text
    # An hour of captures supports a rate, with the spread of the pairwise slopes.
    hourly = observed([360.0 * i for i in range(11)], [180.0 * i + 1 for i in range(25)],
                      {"a:6060": {**BACKGROUND, "main.leak": linear(MB, 1000.0)}})
    leak = by_name(analyze(hourly).suspects)["main.leak"]
    assert leak.growth_text.startswith("+3.43MB/h")


def test_no_verdict_contradicts_its_signals() -> None:
    # Only the process heap grows (no function explains it yet): not "no growth".
    caps = observed(EVEN, [5 * i + 1 for i in range(20)], {"a:6060": dict(BACKGROUND)})
    for i, c in enumerate(caps):
        c.observations[0].heap_inuse = 10 * MB + i * MB
    report = analyze(caps)
    assert report.verdict == leaks.UNDECIDED
    assert any("keeps growing" in s for s in report.signals)
    # Nothing grows at all: no signal says the heap grows.
    quiet = analyze(observed(EVEN, [5 * i + 1 for i in range(20)], {"a:6060": BACKGROUND}))
    assert quiet.verdict == leaks.NO_GROWTH
    assert not any("grow" in s for s in quiet.signals)


def test_captures_that_all_repeat_one_gc_are_not_enough_data() -> None:
    caps = observed(EVEN, [-1.0], {"a:6060": {**BACKGROUND, "main.leak": linear(MB, MB)}})
    report = analyze(caps)
    assert report.verdict == leaks.NOT_ENOUGH_DATA
    assert "one GC cycle" in report.summary


def test_proven_goroutine_leaks_are_reported_as_proven_with_the_blocking_line() -> None:
    sig = "main.startWorker;main.sendResult"
    caps = observed(EVEN, [5 * i + 1 for i in range(20)], {"a:6060": BACKGROUND},
                    goroutines={sig: lambda t: 10 + int(t)}, leaked={sig: 96})
    report = analyze(caps)
    top = report.suspects[0]
    assert top.proven and top.kind == "goroutines"
    assert top.function == "main.sendResult" and top.site == "/src/app/worker.go:42"
    assert "96 goroutines" in top.evidence[0] and "proven" in top.evidence[0]
    assert "proven leak" in report.summary
    row = build_reply("payments", report).table.rows[0]
    assert row[1] == "goroutines (proven)"


def test_real_captures_a_cache_seen_at_four_gcs_only_is_not_called_a_leak() -> None:
    # bench/leaks, GOGC=off under an 80MiB GOMEMLIMIT with bursty captures: 11 captures
    # saw 4 GCs. The filling catalogue cache read 1.4 → 10.6 → 11.9 → 14.4MB: its rate
    # fell from 190kB/s to 50kB/s, which is a cache filling up, not a steady leak.
    raw = (Path(__file__).resolve().parents[1] / "fixtures" / "leaks"
           / "memlimit_bursty_four_gcs.json.gz").read_bytes()
    caps = [SnapshotSummary.from_dict(s) for s in json.loads(gzip.decompress(raw))["summaries"]]
    report = analyze(caps)
    assert "main.fillcacheLoadPrice" not in by_name(report.suspects)
    assert "slowing down" in by_name(report.undecided)["main.fillcacheLoadPrice"].reason
    assert {"main.leakmapLoadUser", "main.sliceNewPayload", "main.slowleakKeepRecord"} <= set(
        by_name(report.suspects))
