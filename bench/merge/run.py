"""Benchmark: merge_profiles on 3 copies of the 300k-stack heap profile vs go tool pprof.

Every `/heap top` over a service with several instances merges their heap
profiles, so merging must stay a small part of the answer. The 3 files are
copies of bench/gen_profile's big profile (300,000 distinct stacks), i.e. the
worst case: every stack appears in every file.

Printed, medians over --runs:

- heapbot merge_profiles alone (profiles already parsed);
- heapbot parse + merge + top, in this process;
- anchor, measured in the same run: `go tool pprof -top a b c` and
  `go tool pprof -raw a b c` as whole processes (pprof parses, merges, reports);
- ratio pprof -top / heapbot parse + merge + top, and merge's share of that;
- with --old COMMIT: the same merge with bot/pprof/merge.py as of that commit.

    .venv/bin/python bench/merge/run.py [--runs 3] [--old 0ac7043]
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench" / "gen_profile"))

from bot.analysis.top import TopOptions, top  # noqa: E402
from bot.gotool import find_go, go_env  # noqa: E402
from bot.pprof import merge_profiles, parse_profile  # noqa: E402


def timed(fn: Callable[[], Any]) -> float:
    gc.collect()
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def old_merge(commit: str) -> Callable[..., Any]:
    """merge_profiles from bot/pprof/merge.py at ``commit`` (for a before/after figure)."""
    source = subprocess.run(["git", "show", f"{commit}:bot/pprof/merge.py"], cwd=ROOT,
                            check=True, capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp(prefix="heapbot-old-merge-")) / "old_merge.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("old_merge", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.merge_profiles


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--profile", type=Path, help="default: bench/gen_profile's big profile")
    parser.add_argument("--old", metavar="COMMIT",
                        help="also time merge_profiles as of this git commit")
    args = parser.parse_args()
    if args.profile:
        source = args.profile
    else:
        from gen_profile import big_heap_profile

        source = big_heap_profile()
    workdir = Path(tempfile.mkdtemp(prefix="heapbot-bench-merge-"))
    files = [workdir / f"instance{i}.pb.gz" for i in range(3)]
    for f in files:
        shutil.copyfile(source, f)
    datas = [f.read_bytes() for f in files]
    profiles = [parse_profile(d) for d in datas]
    print(f"profile: {source} ({source.stat().st_size / 1e6:.1f} MB gzip, "
          f"{profiles[0].num_samples} samples) x 3", flush=True)

    env = go_env()
    pprof_top = [find_go(), "tool", "pprof", "-top", *map(str, files)]
    pprof_raw = [find_go(), "tool", "pprof", "-raw", *map(str, files)]
    subprocess.run(pprof_top, env=env, check=True, capture_output=True, timeout=900)  # build

    def heapbot_all() -> None:
        merged = merge_profiles([parse_profile(d) for d in datas])
        top(merged, TopOptions())

    def run_process(cmd: list[str]) -> None:
        subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, timeout=900)

    old = old_merge(args.old) if args.old else None
    figures: dict[str, list[float]] = {"merge": [], "all": [], "top": [], "raw": [], "old": []}
    merged = merge_profiles(profiles)  # warm-up
    for i in range(args.runs):
        figures["merge"].append(timed(lambda: merge_profiles(profiles)))
        figures["all"].append(timed(heapbot_all))
        figures["top"].append(timed(lambda: run_process(pprof_top)))
        figures["raw"].append(timed(lambda: run_process(pprof_raw)))
        if old is not None:
            figures["old"].append(timed(lambda: old(profiles)))
        print(f"run {i + 1}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in figures.items()
                                           if v), flush=True)
    med = {k: statistics.median(v) for k, v in figures.items() if v}
    print(f"merged: {merged.num_samples} samples, {merged.num_locations} locations")
    print(f"heapbot merge_profiles (3 parsed profiles):    {med['merge']:.3f} s")
    print(f"heapbot parse + merge + top:                    {med['all']:.3f} s")
    print(f"anchor go tool pprof -top a b c (process):      {med['top']:.3f} s")
    print(f"anchor go tool pprof -raw a b c (process):      {med['raw']:.3f} s")
    if "old" in med:
        print(f"merge_profiles as of {args.old}:              {med['old']:.3f} s "
              f"({med['old'] / med['merge']:.1f}x slower)")
    print(f"ratio pprof -top / heapbot parse+merge+top = {med['top'] / med['all']:.1f}x; "
          f"merge is {med['merge'] / med['all']:.0%} of heapbot's time, "
          f"{med['merge'] / med['top']:.2f} of pprof -top's")
    return 0


if __name__ == "__main__":
    sys.exit(main())
