"""Benchmark: heapbot's profile decoder vs its floor (gzip inflate + upb parse), same run.

``parse_profile`` turns a heap profile (.pb.gz) into the columnar Profile every
command works on; in a fleet capture it runs once per instance, so it is the
biggest CPU cost and its peak memory sets the bot's RSS. The floor is what any
decoder must do: inflate the same bytes with zlib and parse them with upb into
``profile_pb2.Profile`` (full messages, no columns). Two profiles from
bench/gen_profile: "wide" (65,536 stacks, about 14 frames each, 0.3 MB gzip) and
"deep" (262,144 stacks of 3 mutually recursive functions 18 calls deep, about 40
frames each, 1.4 MB gzip).

Printed per profile:

- time: median of --runs, decode and floor alternating in one process; ratio
  decode/floor, the median over rounds of each decode against the floor run next to
  it (1.0 would be "as fast as inflate + upb"; a busy machine moves it less than a
  ratio of medians); decode with labels is what a fleet capture's worker does
  (``Profile.decode_labels``);
- peak memory: tracemalloc peak (Python and numpy allocations; upb's arena is
  not traced) and RSS growth (getrusage high-water mark in a fresh process that
  has imported everything and read the file, so it counts upb and numpy alike);
- with --old COMMIT: the same decoder as of that commit (git archive of bot/),
  measured the same way in the same run, for a before/after figure.

    .venv/bin/python bench/decode/run.py [--runs 7] [--only wide|deep] [--old COMMIT]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench" / "gen_profile"))
sys.path.insert(0, str(ROOT))

from bench._common import old_code  # noqa: E402

# Runs in a child process whose sys.path starts with the bot/ to measure.
_CHILD = r"""
import gc, json, resource, statistics, sys, time, tracemalloc, zlib
code, mode, path, runs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
sys.path.insert(0, code)
from bot.pprof import parse_profile, profile_pb2
data = open(path, "rb").read()

def floor():
    raw = zlib.decompress(data, 31)
    msg = profile_pb2.Profile()
    msg.ParseFromString(raw)
    return msg

def decode():
    return parse_profile(data)

def labels():
    p = parse_profile(data)
    p.decode_labels()
    return p

ops = {"floor": floor, "decode": decode, "labels": labels}
if mode.startswith("rss:"):
    op = ops[mode[4:]]
    gc.collect()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = op()
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"rss_mb": (after - before) / 1024}))
    sys.exit(0)
for op in ops.values():  # warm: first-use imports, allocator
    op()
times = {name: [] for name in ops}
for _ in range(runs):
    for name, op in ops.items():
        gc.collect()
        start = time.perf_counter()
        result = op()
        times[name].append(time.perf_counter() - start)
        del result
out = {f"{name}_s": statistics.median(t) for name, t in times.items()}
for name in ("decode", "labels"):  # per round: each op beside its own floor run
    out[f"{name}_ratio"] = statistics.median(
        a / b for a, b in zip(times[name], times["floor"], strict=True))
for name, op in ops.items():
    gc.collect()
    tracemalloc.start()
    result = op()
    out[f"{name}_traced_mb"] = tracemalloc.get_traced_memory()[1] / 1e6
    tracemalloc.stop()
    del result
print(json.dumps(out))
"""


def child(code: Path, mode: str, profile: Path, runs: int) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", _CHILD, str(code), mode, str(profile), str(runs)],
                         check=True, capture_output=True, text=True, timeout=900,
                         env={**os.environ, "PYTHONHASHSEED": "0"})
    return json.loads(out.stdout)


def rss(code: Path, op: str, profile: Path, repeat: int = 3) -> float:
    """Median RSS growth of one ``op`` in fresh processes."""
    return statistics.median(child(code, f"rss:{op}", profile, 0)["rss_mb"]
                             for _ in range(repeat))


def report(name: str, profile: Path, runs: int, old: Path | None) -> None:
    codes = {"heapbot": ROOT} | ({"old": old} if old else {})
    print(f"{name}: {profile.name}, {profile.stat().st_size / 1e6:.2f} MB gzip", flush=True)
    for label, code in codes.items():
        t = child(code, "time", profile, runs)
        r = {op: rss(code, op, profile) for op in ("floor", "decode", "labels")}
        fl = t["floor_s"]
        print(f"{name} {label}: floor (inflate + upb parse) {fl * 1e3:.1f} ms, "
              f"traced {t['floor_traced_mb']:.1f} MB, RSS +{r['floor']:.0f} MB")
        for op, what in (("decode", "parse_profile"), ("labels", "parse_profile + labels")):
            print(f"{name} {label}: {what} {t[f'{op}_s'] * 1e3:.1f} ms "
                  f"(x{t[f'{op}_ratio']:.2f} the floor), "
                  f"traced peak {t[f'{op}_traced_mb']:.1f} MB, RSS +{r[op]:.0f} MB "
                  f"(x{r[op] / max(r['floor'], 1):.2f} the floor's)", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--only", choices=["wide", "deep"])
    parser.add_argument("--old", metavar="COMMIT", help="also measure bot/ as of COMMIT")
    args = parser.parse_args()
    from gen_profile import big_heap_profile, deep_heap_profile

    old = old_code(args.old, "decode") if args.old else None
    shapes = {"wide": lambda: big_heap_profile(stacks=65_536), "deep": deep_heap_profile}
    for name, make in shapes.items():
        if args.only in (None, name):
            report(name, make(), args.runs, old)
    return 0


if __name__ == "__main__":
    sys.exit(main())
