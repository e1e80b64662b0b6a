"""Leak rules on synthetic capture series (one rule per test, each able to fail).

Each series is a list of SnapshotSummary as bot.store keeps them: per-function
flat/cum in-use bytes and objects, goroutine groups, MemStats. Values carry
deterministic noise (a seeded RNG) so that the rules see what sampled heap
profiles look like, not perfect lines.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping

import pytest

from bot.analysis import leaks
from bot.analysis.leaks import Deploy, HeapSite, analyze
from bot.analysis.summary import (
    FunctionValue,
    GoroutineGroupSummary,
    ProfileSummary,
    SnapshotSummary,
)

MB = 1_000_000
T0 = 1_800_000_000.0
STEP = 300.0  # five minutes between captures

Series = Callable[[int], float]


def captures(
    n: int,
    heap: Mapping[str, Series],
    goroutines: Mapping[str, tuple[str, Series]] | None = None,
    *,
    restart_at: int | None = None,
    build_change_at: int | None = None,
    noise: float = 0.0,
    seed: int = 1,
    step: float = STEP,
) -> list[SnapshotSummary]:
    """n captures ``step`` seconds apart; ``heap[fn](i)`` is fn's in-use bytes at capture i."""
    rng = random.Random(seed)
    out: list[SnapshotSummary] = []
    run_start = 0
    for i in range(n):
        if restart_at is not None and i == restart_at:
            run_start = i
        k = i - run_start  # captures since the process started
        functions = []
        objects = []
        for fn, f in heap.items():
            value = max(0.0, f(i) * (1 + rng.uniform(-noise, noise)))
            functions.append(FunctionValue(fn, int(value), int(value)))
            objects.append(FunctionValue(fn, int(value) // 512, int(value) // 512))
        total = sum(fv.flat for fv in functions)
        groups = []
        g_total = 0
        for sig, (state, f) in (goroutines or {}).items():
            count = int(f(i))
            g_total += count
            groups.append(GoroutineGroupSummary(
                signature=sig, count=count, state=state, wait_function=sig.split(";")[-1],
                wait_location=f"/src/app/{sig.split(';')[-1].split('.')[-1]}.go:42",
                top_function="runtime.gopark", creator=sig.split(";")[0]))
        alloc_total = 50 * MB * (k + 1) + total
        memstats = {
            "HeapInuse": total + 2 * MB, "HeapIdle": 3 * MB, "HeapReleased": 2 * MB,
            "TotalAlloc": alloc_total, "Mallocs": 1000 * (k + 1), "Frees": 900 * (k + 1),
            "NumGC": 10 * (k + 1), "NextGC": 2 * (total + 2 * MB), "Sys": total + 20 * MB,
            "StackInuse": 8192 * max(1, g_total),
        }
        build = "b1" if build_change_at is None or i < build_change_at else "b2"
        out.append(SnapshotSummary(
            snapshot_id=f"s{i}", service="payments", taken_at=T0 + i * step, build_id=build,
            instances=1,
            heap=ProfileSummary(
                sample_types={"inuse_space": "bytes", "inuse_objects": "count",
                              "alloc_space": "bytes"},
                default_sample_type="inuse_space",
                totals={"inuse_space": total, "inuse_objects": total // 512,
                        "alloc_space": alloc_total},
                functions={"inuse_space": functions, "inuse_objects": objects}),
            goroutine_total=g_total, goroutine_groups=groups, memstats=memstats))
    return out


def flat(value: float) -> Series:
    return lambda i: value


def grows(start: float, per_capture: float) -> Series:
    return lambda i: start + per_capture * i


def fills(start: float, per_capture: float, cap: float) -> Series:
    return lambda i: min(cap, start + per_capture * i)


BACKGROUND = {"main.handleRequest": flat(5 * MB), "bufio.NewReaderSize": flat(2 * MB)}


def names(items: list) -> list[str]:
    return [s.function for s in items]


def test_steady_growth_is_the_top_suspect_with_rate_and_evidence() -> None:
    caps = captures(10, {**BACKGROUND, "main.(*sessionStore).Put": grows(1 * MB, 2 * MB)},
                    noise=0.02)
    report = analyze(caps)
    assert report.verdict == leaks.LEAK_LIKELY
    top = report.suspects[0]
    assert top.function == "main.(*sessionStore).Put"
    assert top.kind == "heap"
    # 2 MB per 5 minutes = 24 MB/h; Theil–Sen on ±2% noise lands close to it.
    assert 20 * MB < top.growth_per_hour < 28 * MB
    assert top.captures == 10
    assert top.share > 0.8
    assert any("rose in" in e for e in top.evidence)
    assert "main.handleRequest" not in names(report.suspects)
    # no deploy is recorded: the way back to the start is the window's age, which resolves
    from bot.units import duration_seconds

    back = next(s for s in report.next_steps if s.startswith("/heap diff"))
    assert "since deploy" not in back
    ago = duration_seconds(back.split(" since ")[1].split()[0])
    assert ago is not None and 0 < ago <= report.window_end - report.window_start
    data = report.to_json()
    assert data["verdict"] == "leak likely"
    assert {"function", "kind", "growth_per_hour", "evidence"} <= set(data["suspects"][0])


def test_noise_alone_is_no_growth() -> None:
    caps = captures(12, {"main.handleRequest": flat(40 * MB), "main.render": flat(10 * MB)},
                    noise=0.08, seed=7)
    report = analyze(caps)
    assert report.verdict == leaks.NO_GROWTH
    assert report.suspects == []


@pytest.mark.parametrize("seed", range(5))
def test_noise_never_makes_a_suspect(seed: int) -> None:
    caps = captures(8, {"main.handleRequest": flat(40 * MB)}, noise=0.1, seed=seed)
    assert analyze(caps).suspects == []


def test_a_single_jump_is_not_a_leak() -> None:
    jump: Series = lambda i: 4 * MB if i < 5 else 30 * MB  # noqa: E731
    caps = captures(10, {**BACKGROUND, "main.loadCatalog": jump}, noise=0.01)
    report = analyze(caps)
    assert "main.loadCatalog" not in names(report.suspects)
    reasons = {n.function: n.reason for n in report.not_suspects}
    assert "one jump" in reasons["main.loadCatalog"]
    assert report.verdict == leaks.NO_GROWTH


def test_plateau_is_bounded_like_a_cache_not_a_suspect() -> None:
    caps = captures(12, {**BACKGROUND, "main.cachePut": fills(0, 3 * MB, 18 * MB)}, noise=0.01)
    report = analyze(caps)
    assert "main.cachePut" not in names(report.suspects)
    bounded = [n for n in report.not_suspects if n.bounded]
    assert names(bounded) == ["main.cachePut"]
    assert "cache" in bounded[0].reason
    assert report.verdict == leaks.GROWTH_BOUNDED


def test_leak_next_to_a_filling_cache_ranks_only_the_leak() -> None:
    caps = captures(12, {**BACKGROUND, "main.cachePut": fills(0, 3 * MB, 18 * MB),
                         "main.auditAppend": grows(0, 0.5 * MB)}, noise=0.01)
    report = analyze(caps)
    assert names(report.suspects) == ["main.auditAppend"]
    assert "main.cachePut" in [n.function for n in report.not_suspects if n.bounded]


def test_restart_in_the_window_is_neither_no_growth_nor_a_leak_by_itself() -> None:
    # Leaks 1 MB per capture; the process restarts at capture 6 (heap back to 1 MB).
    leak: Series = lambda i: (i if i < 6 else i - 6) * MB + MB  # noqa: E731
    caps = captures(12, {**BACKGROUND, "main.leakyHandler": leak}, restart_at=6, noise=0.01)
    report = analyze(caps)
    assert report.restarts == 1
    assert report.verdict == leaks.LEAK_LIKELY
    top = report.suspects[0]
    assert top.function == "main.leakyHandler"
    assert 10 * MB < top.growth_per_hour < 14 * MB  # 1 MB / 5 min inside each run
    assert any("restart" in s for s in report.signals)


def test_restart_drop_of_a_flat_heap_is_not_growth() -> None:
    # Before the restart 30 MB, after it 10 MB, flat inside both runs: no leak either way.
    level: Series = lambda i: 30 * MB if i < 5 else 10 * MB  # noqa: E731
    caps = captures(10, {**BACKGROUND, "main.loadCatalog": level}, restart_at=5, noise=0.01)
    report = analyze(caps)
    assert report.restarts == 1
    assert report.suspects == []
    assert report.verdict == leaks.NO_GROWTH


def test_deploy_in_the_window_starts_the_analysis_there() -> None:
    # The old version leaked; the new one (deployed at capture 6) is flat.
    before_fix: Series = lambda i: MB + 2 * MB * i if i < 6 else 3 * MB  # noqa: E731
    caps = captures(12, {**BACKGROUND, "main.oldLeak": before_fix}, restart_at=6, noise=0.01)
    deploy = Deploy(taken_at=caps[6].taken_at - 1, version="v2")
    report = analyze(caps, [deploy])
    assert report.deploy == "v2"
    assert report.captures == 6
    assert report.verdict == leaks.NO_GROWTH
    # Without the marker the restart splits the window; the current run is flat, so the
    # old run's growth is reported, not suspected.
    unmarked = analyze(caps)
    assert unmarked.restarts == 1
    assert unmarked.suspects == []
    reasons = {n.function: n.reason for n in unmarked.not_suspects}
    assert "before the restart" in reasons["main.oldLeak"]


def test_build_id_change_is_a_deploy_even_without_a_marker() -> None:
    before_fix: Series = lambda i: MB + 2 * MB * i if i < 6 else 3 * MB  # noqa: E731
    caps = captures(12, {**BACKGROUND, "main.oldLeak": before_fix}, restart_at=6,
                    build_change_at=6)
    report = analyze(caps)
    assert report.captures == 6
    assert report.deploy.startswith("build")


def test_too_few_captures_since_deploy_says_how_many_are_needed() -> None:
    caps = captures(8, {**BACKGROUND, "main.oldLeak": grows(MB, MB)})
    report = analyze(caps, [Deploy(taken_at=caps[7].taken_at - 1, version="v3")])
    assert report.verdict == leaks.NOT_ENOUGH_DATA
    assert report.needed_captures == 2
    assert report.suspects == []
    assert any("--sample" in s for s in report.next_steps)
    assert analyze([]).needed_captures == 3


def test_window_keeps_at_least_three_captures() -> None:
    caps = captures(10, {**BACKGROUND, "main.leak": grows(MB, MB)})
    report = analyze(caps, window=60.0)  # only the last capture is inside 60 s
    assert report.captures == 3
    # Three rising observations are not yet steady growth: undecided, and says what decides.
    assert report.verdict == leaks.UNDECIDED
    assert [u.function for u in report.undecided] == ["main.leak"]
    assert report.needed_captures == 1 and "1 more capture" in report.undecided[0].reason


def test_goroutines_blocked_on_chan_send_that_keep_growing_are_suspects() -> None:
    caps = captures(10, BACKGROUND, {
        "main.startWorker;main.sendResult": ("chan send", grows(10, 40)),
        "main.pool;main.worker": ("chan receive", flat(64)),  # a stable worker pool
        "net/http.(*conn).serve": ("IO wait", flat(20)),
    })
    report = analyze(caps)
    assert report.verdict == leaks.LEAK_LIKELY
    g = [s for s in report.suspects if s.kind == "goroutines"]
    assert names(g) == ["main.sendResult"]
    assert g[0].state == "chan send"
    assert g[0].site == "/src/app/sendResult.go:42"
    assert 400 < g[0].growth_per_hour < 560  # 40 per 5 minutes = 480/h
    assert "buffer" in g[0].hint
    assert any("StackInuse" in e for e in g[0].evidence)
    assert "main.worker" not in names(report.suspects)


def test_growing_goroutines_in_io_wait_are_explained_not_suspected() -> None:
    caps = captures(10, BACKGROUND, {"main.serveConn": ("IO wait", grows(10, 25))})
    report = analyze(caps)
    assert report.suspects == []
    reasons = {n.function: n.reason for n in report.not_suspects}
    assert "connections" in reasons["main.serveConn"]


def test_goroutine_pool_reaching_its_size_is_bounded() -> None:
    caps = captures(12, BACKGROUND, {"main.pool;main.worker": ("select", fills(0, 30, 150))})
    report = analyze(caps)
    assert report.suspects == []
    assert report.verdict == leaks.GROWTH_BOUNDED


def test_runtime_malg_growth_is_folded_into_the_goroutine_leak() -> None:
    caps = captures(10, {**BACKGROUND, "runtime.malg": grows(MB, 0.5 * MB)},
                    {"main.startWorker;main.sendResult": ("chan send", grows(10, 500))})
    report = analyze(caps)
    assert "runtime.malg" not in names(report.suspects)
    g = report.suspects[0]
    assert g.kind == "goroutines"
    assert any("runtime.malg" in e for e in g.evidence)


def test_ranking_is_by_evidence_not_size() -> None:
    # A big, jumpy-but-rising function vs a small one that rises every single step.
    rng = random.Random(3)
    jumpy_values = [50 * MB + (i * 0.5 * MB) + rng.uniform(-3, 3) * MB for i in range(12)]
    caps = captures(12, {"main.bigBuffer": lambda i: jumpy_values[i],
                         "main.steadyLeak": grows(MB, 0.6 * MB)})
    report = analyze(caps)
    assert names(report.suspects)[:1] == ["main.steadyLeak"]


def test_hints_name_known_patterns() -> None:
    slice_leak = captures(10, {**BACKGROUND, "runtime.growslice": grows(MB, MB)})
    report = analyze(slice_leak, sites={"runtime.growslice": HeapSite(
        "/go/src/runtime/slice.go:191", "main.auditAppend", "/src/app/audit.go:12")})
    top = report.suspects[0]
    assert top.own_caller == "main.auditAppend"
    assert top.site.endswith("slice.go:191")
    assert "append" in top.hint and "main.auditAppend" in top.hint

    assert "ClearHandler" in leaks.heap_hint("github.com/gorilla/context.Set", "main.handler")
    assert "Reset" in leaks.heap_hint("time.NewTicker", "main.poll")
    assert "pool" in leaks.heap_hint("reflect.MakeSlice", "github.com/lunny/tango.(*Router)")
    assert "gob" in leaks.heap_hint("reflect.mapassign", "main.load")
    assert "never deleted" in leaks.heap_hint("runtime.mapassign_fast64", "main.track")
    assert "eviction" in leaks.heap_hint("main.(*userCache).Set", "")


def test_own_caller_guessed_from_cum_growth_without_sites() -> None:
    caps = captures(10, {**BACKGROUND, "runtime.growslice": grows(MB, MB)})
    # main.auditAppend's cum covers growslice's growth; main.main's cum is far larger.
    for i, s in enumerate(caps):
        fns = s.heap.functions["inuse_space"]
        fns.append(FunctionValue("main.auditAppend", 0, int(MB + MB * i)))
        fns.append(FunctionValue("main.main", 0, int(100 * MB + 9 * MB * i)))
    report = analyze(caps)
    assert report.suspects[0].own_caller == "main.auditAppend"


def test_memstats_free_but_held_is_not_a_leak() -> None:
    caps = captures(8, BACKGROUND)
    for i, s in enumerate(caps):
        s.memstats["HeapIdle"] = 3 * MB + i * 4 * MB
        s.memstats["Sys"] = 30 * MB + i * 4 * MB
    report = analyze(caps)
    assert report.verdict == leaks.NO_GROWTH
    assert any("free-but-held" in s for s in report.signals)
