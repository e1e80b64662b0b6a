"""Benchmark: `heapbot top --profile big.pb.gz` vs `go tool pprof -top big.pb.gz`.

Both run as whole processes on the same large real heap profiles (bench/gen_profile,
MemProfileRate=1): "wide", 300,000 distinct stacks about 6 digit calls deep, and
"deep", 262,144 stacks of 3 mutually recursive functions 18 calls deep (about 40
frames), alternating, several times each. The
script prints the median wall time of each, the ratio (pprof / heapbot: how many
times faster heapbot is) and each one's peak RSS, read per run with
getrusage(RUSAGE_CHILDREN) in a fresh wrapper process. Targets (issue 13): wide
>= 10x, deep >= 8x (goal 10x), heapbot's peak RSS <= 1/4 of pprof's.

    .venv/bin/python bench/top/run.py [--runs 5] [--only wide|deep] [--profile PATH]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench" / "gen_profile"))

from bench._common import run_measured  # noqa: E402
from bot.gotool import find_go, go_env  # noqa: E402


def compare(name: str, profile: Path, runs: int) -> tuple[float, float]:
    """Alternate heapbot and pprof on one profile; print and return (speed ratio, RSS ratio)."""
    env = go_env()
    heapbot = [sys.executable, "-m", "bot", "top", "--profile", str(profile)]
    pprof = [find_go(), "tool", "pprof", "-top", str(profile)]
    run_measured(pprof, env)  # warm the build cache (go tool builds pprof on first use)
    run_measured(heapbot, dict(os.environ))
    results: dict[str, list[dict[str, float]]] = {"heapbot": [], "pprof": []}
    for i in range(runs):
        results["heapbot"].append(run_measured(heapbot, dict(os.environ)))
        results["pprof"].append(run_measured(pprof, env))
        h, p = results["heapbot"][-1], results["pprof"][-1]
        print(f"{name} run {i + 1}: heapbot {h['wall']:.2f}s {h['rss_mb']:.0f}MB | "
              f"pprof {p['wall']:.2f}s {p['rss_mb']:.0f}MB", flush=True)
    hw = statistics.median(r["wall"] for r in results["heapbot"])
    pw = statistics.median(r["wall"] for r in results["pprof"])
    hm = max(r["rss_mb"] for r in results["heapbot"])
    pm = max(r["rss_mb"] for r in results["pprof"])
    target = "target >= 8x, goal 10x" if name == "deep" else "target >= 10x"
    print(f"{name}: profile {profile} ({profile.stat().st_size / 1e6:.1f} MB gzip)")
    print(f"{name}: median wall: heapbot {hw:.3f}s, go tool pprof {pw:.3f}s")
    print(f"{name}: speed ratio (pprof/heapbot): {pw / hw:.1f}x  ({target})")
    print(f"{name}: peak RSS: heapbot {hm:.0f} MB, go tool pprof {pm:.0f} MB "
          f"(heapbot/pprof = {hm / pm:.2f}, target <= 0.25)", flush=True)
    return pw / hw, hm / pm


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--profile", type=Path, help="one profile instead of wide + deep")
    parser.add_argument("--only", choices=["wide", "deep"], help="one of the two generated ones")
    args = parser.parse_args()
    if args.profile:
        compare("given", args.profile, args.runs)
        return 0
    from gen_profile import big_heap_profile, deep_heap_profile

    shapes = {"wide": big_heap_profile, "deep": deep_heap_profile}
    for name, make in shapes.items():
        if args.only in (None, name):
            compare(name, make(), args.runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
