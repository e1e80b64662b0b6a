"""Precision and recall of leak detection over the demo's scenarios.

Runs the demo Go service (deploy/demo) with every scenario, captures it over
HTTP N times (heap proto, goroutine proto, heap?debug=1 MemStats), builds the
same SnapshotSummary the store keeps, and runs ``bot.analysis.leaks.analyze``.
A leaking scenario (leakmap, slice, blocked, ticker) counts as found when a
suspect's function or own-code caller is one of its functions (main.<scenario>…);
a harmless one (cache, churn, pool) flagged is a false positive, and so is a
suspect that belongs to no scenario. Prints per-run results and the totals.

    .venv/bin/python bench/leaks/run.py [--runs 2] [--captures 14] [--interval 2.5]
"""

from __future__ import annotations

import argparse
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bot.analysis.goroutines import parse_goroutines  # noqa: E402
from bot.analysis.leaks import analyze, heap_sites, summarize_heap_bytes  # noqa: E402
from bot.analysis.memstats import parse_memstats  # noqa: E402
from bot.analysis.summary import SnapshotSummary  # noqa: E402
from bot.pprof import parse_profile  # noqa: E402
from tests.support.demo import build_demo, start_demo  # noqa: E402

LEAKING = ("leakmap", "slice", "blocked", "ticker")
HARMLESS = ("cache", "churn", "pool")


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.read()


def capture(base: str, index: int) -> tuple[SnapshotSummary, bytes]:
    heap = fetch(f"{base}/debug/pprof/heap")
    goroutines = parse_goroutines(fetch(f"{base}/debug/pprof/goroutine"))
    memstats = parse_memstats(fetch(f"{base}/debug/pprof/heap?debug=1"))
    summary = SnapshotSummary(
        snapshot_id=f"b{index}", service="demo", taken_at=time.time(), build_id="",
        instances=1, heap=summarize_heap_bytes([heap]), goroutine_total=goroutines.total,
        goroutine_groups=goroutines.summaries(), memstats=memstats.fields)
    return summary, heap


def scenario_of(*names: str) -> str | None:
    for name in names:
        for scenario in LEAKING + HARMLESS:
            if name.startswith(f"main.{scenario}"):
                return scenario
    return None


def one_run(binary: Path, rate: float, captures: int, interval: float) -> tuple[int, int, int]:
    demo = start_demo(binary, scenarios="all", rate=rate, memprofilerate=512,
                      env={"DEMO_MAX_ITEMS": "1000000", "DEMO_MAX_GOROUTINES": "100000"})
    try:
        summaries: list[SnapshotSummary] = []
        heap = b""
        for i in range(captures):
            if i:
                time.sleep(interval)
            summary, heap = capture(demo.url, i)
            summaries.append(summary)
    finally:
        demo.stop()
    sites = heap_sites(heap)
    started = time.perf_counter()
    report = analyze(summaries, sites=sites)
    elapsed = time.perf_counter() - started
    # Anchor measured in the same run: decoding one heap profile of this demo.
    started = time.perf_counter()
    parse_profile(heap)
    anchor = time.perf_counter() - started
    flagged: dict[str, list[str]] = {}
    for s in report.suspects:
        flagged.setdefault(scenario_of(s.function, s.own_caller) or "?", []).append(
            f"{s.function} ({s.kind})")
    tp = sum(1 for s in LEAKING if s in flagged)
    fp = sum(1 for s in flagged if s not in LEAKING)
    fn = len(LEAKING) - tp
    bounded = [n.function for n in report.not_suspects if n.bounded]
    print(f"rate {rate:g}: verdict {report.verdict!r}; analyze() {elapsed * 1000:.1f} ms over "
          f"{len(summaries)} captures = {elapsed / anchor:.1f}x the time to decode one heap "
          f"profile ({anchor * 1000:.1f} ms)")
    for scenario in (*LEAKING, *HARMLESS, "?"):
        if scenario in flagged:
            print(f"  flagged {scenario:8} {', '.join(flagged[scenario])}")
    for scenario in LEAKING:
        if scenario not in flagged:
            print(f"  MISSED  {scenario}")
    print(f"  bounded: {', '.join(bounded) or '-'}")
    return tp, fp, fn


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--captures", type=int, default=14)
    parser.add_argument("--interval", type=float, default=2.5)
    args = parser.parse_args()
    binary = build_demo()
    tp = fp = fn = 0
    for run in range(args.runs):
        a, b, c = one_run(binary, rate=1.0 + run, captures=args.captures,
                          interval=args.interval)
        tp, fp, fn = tp + a, fp + b, fn + c
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    print(f"precision {precision:.2f} ({tp}/{tp + fp})  recall {recall:.2f} ({tp}/{tp + fn})  "
          f"over {args.runs} run(s) x {len(LEAKING) + len(HARMLESS)} scenarios")
    return 0


if __name__ == "__main__":
    sys.exit(main())
