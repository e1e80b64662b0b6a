"""Benchmark: `heapbot top SERVICE` over N instances vs `go tool pprof -top` on the same N files.

Each instance serves the same 64k-stack heap profile (bench/gen_profile, about
300 kB gzip) over real HTTP on 127.0.0.1 (one port per instance, served by a
separate process), with a small goroutine profile and a heap?debug=1 MemStats
page. heapbot runs as the real CLI in service mode (registry file, its own
embedded Redis, snapshot stored); pprof merges the same N files given on its
command line. Both are measured in the same run, alternating: wall time and the
peak of the summed RSS of the process tree (heapbot plus its decode workers),
sampled every 20 ms. heapbot stores into one redis-server started by the bench
(not counted in its RSS); the Redis bytes each capture added (MEMORY USAGE of
every key) are printed, and the DB is emptied after each run.

Done means (issue 13): N=40 at least 1.5x faster than pprof with at most 1/4 of
its peak RSS; heapbot's RSS at N=40 within 1.5x of N=1; Redis bytes per capture
at N=40 at most 2x those at N=1 (a capture as stored once it is older than the newest
HEAPBOT_RAW_CAPTURES, default 3; the newest keep every instance's file and are printed too).

    .venv/bin/python bench/fanout/run.py [--sizes 1,10,40] [--runs 3] [--stacks 65536] [--chunked]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench" / "gen_profile"))

from bench._common import ProfileServer, run_with_tree_peaks  # noqa: E402
from bot.gotool import find_go, go_env  # noqa: E402
from tests.support.registry import write_registry  # noqa: E402


def redis_bytes(url: str) -> tuple[int, int]:
    """(keys, summed MEMORY USAGE) in the bench's Redis; then it is emptied for the next run."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(count=1000))
        used = sum(int(client.memory_usage(k, samples=0) or 0) for k in keys)
        client.flushdb()
        return len(keys), used
    finally:
        client.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1,10,40")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--stacks", type=int, default=65_536)
    parser.add_argument("--chunked", action="store_true",
                        help="serve the profiles chunked, without Content-Length, as Go does")
    args = parser.parse_args()
    from gen_profile import big_heap_profile

    profile = big_heap_profile(stacks=args.stacks)
    sizes = [int(x) for x in args.sizes.split(",")]
    work = Path(tempfile.mkdtemp(prefix="heapbot-fanout-"))
    from bot.redis_server import EmbeddedRedis

    store = EmbeddedRedis(work / "redis")  # one Redis for every run, emptied after each
    redis_url = store.ensure()
    server = ProfileServer(profile, count=max(sizes), chunked=args.chunked).__enter__()
    try:
        print(f"profile {profile} ({profile.stat().st_size / 1e3:.0f} kB gzip, "
              f"{args.stacks} stacks, served {'chunked' if args.chunked else 'sized'}); "
              f"{os.cpu_count()} CPUs", flush=True)
        go_environ = go_env()
        find_go()
        results = {}
        for n in sizes:
            files = []
            for i in range(n):
                f = work / f"instance{i}.pb.gz"
                if not f.exists():
                    shutil.copyfile(profile, f)
                files.append(str(f))
            registry = write_registry(work / f"heapbot-{n}.yaml", {"fleet": server.urls[:n]},
                                      cooldown_seconds=0, concurrency=40, timeout_seconds=120)
            pprof = [find_go(), "tool", "pprof", "-top", *files]
            run_with_tree_peaks(pprof, go_environ)  # warm go's build cache
            h_runs, p_runs, stored = [], [], []
            for run in range(args.runs):
                env = dict(os.environ, HEAPBOT_CONFIG=str(registry), REDIS_URL=redis_url,
                           HEAPBOT_DATA_DIR=str(work / "data"), HEAPBOT_LOG_LEVEL="WARNING")
                heapbot = [sys.executable, "-m", "bot", "top", "fleet"]
                h_runs.append(run_with_tree_peaks(heapbot, env))
                p_runs.append(run_with_tree_peaks(pprof, go_environ))
                stored.append(redis_bytes(redis_url))
                print(f"N={n} run {run + 1}: heapbot {h_runs[-1][0]:.2f}s "
                      f"{h_runs[-1][1]:.0f}MB (PSS {h_runs[-1][2]:.0f}MB) | "
                      f"pprof {p_runs[-1][0]:.2f}s "
                      f"{p_runs[-1][1]:.0f}MB | redis {stored[-1][1] / 1e3:.0f} kB "
                      f"in {stored[-1][0]} keys", flush=True)
            # Redis bytes of a capture once older than the newest HEAPBOT_RAW_CAPTURES:
            # the same capture stored with no raw files kept (what it is trimmed to)
            aged_env = dict(env, HEAPBOT_RAW_CAPTURES="0")
            run_with_tree_peaks([sys.executable, "-m", "bot", "top", "fleet"], aged_env)
            aged = redis_bytes(redis_url)
            print(f"N={n}: Redis per capture: newest (raw files kept) "
                  f"{statistics.median(x[1] for x in stored) / 1e3:.0f} kB, "
                  f"aged (merged heap only) {aged[1] / 1e3:.0f} kB", flush=True)
            hw = statistics.median(r[0] for r in h_runs)
            pw = statistics.median(r[0] for r in p_runs)
            hm = max(r[1] for r in h_runs)
            hp = max(r[2] for r in h_runs)
            pm = max(r[1] for r in p_runs)
            rb = aged[1]
            results[n] = (hw, pw, hm, pm, rb, hp)
            print(f"N={n}: heapbot {hw:.2f}s, pprof {pw:.2f}s: {pw / hw:.2f}x faster; "
                  f"peak RSS heapbot {hm:.0f} MB (PSS {hp:.0f} MB), pprof {pm:.0f} MB "
                  f"(heapbot/pprof {hm / pm:.2f}); Redis {rb / 1e3:.0f} kB per aged capture",
                  flush=True)
        if len(results) > 1:
            lo, hi = min(results), max(results)
            print(f"RSS N={hi} / N={lo}: {results[hi][2] / results[lo][2]:.2f} "
                  f"(target <= 1.5; PSS {results[hi][5] / results[lo][5]:.2f}); "
                  f"Redis bytes per capture N={hi} / N={lo}: "
                  f"{results[hi][4] / max(results[lo][4], 1):.2f} (target <= 2)")
            print(f"N={hi}: speed {results[hi][1] / results[hi][0]:.2f}x pprof "
                  f"(target >= 1.5), RSS {results[hi][2] / results[hi][3]:.2f} of pprof's "
                  "(target <= 0.25)")
    finally:
        server.close()
        store.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
