"""Benchmark: drawing a flame graph of a 262,144-stack deep heap profile.

Two figures, measured in the same run:

1. **render** (the target, < 2 s): in a fresh process that has parsed the profile
   (and imported matplotlib, as a long-lived worker has), the time to lay the
   flame graph out (``bot.analysis.flame.flame``, the filtered stacks included) and draw
   the PNG and the SVG, median of several runs; with the process's peak RSS
   before and after, so the memory the flame graph costs on top of the parsed
   profile is visible.
2. **vs pprof** (the anchor): the whole ``heapbot top --profile F -n 1 --flame
   out.png`` process against ``go tool pprof -http`` started on the same file
   until its flame graph page (``/ui/flamegraph``, with the stacks it draws)
   has been served, each with its peak RSS. Printed as pprof / heapbot.

The profile comes from bench/gen_profile: ``deep_heap_profile()`` (262,144 stacks
through 3 mutually recursive functions, about 36 frames each) when that generator
exists, else ``big_heap_profile(stacks=262_144)``.

    .venv/bin/python bench/flame/run.py [--runs 5] [--profile PATH]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench" / "gen_profile"))

from bench._common import run_measured, tree_hwm_mb  # noqa: E402
from bot.gotool import find_go, go_env  # noqa: E402
from tests.support.redis import free_port  # noqa: E402

TARGET_S = 2.0

# In a fresh process: parse, warm matplotlib, then time layout + PNG + SVG.
_RENDER = r"""
import gc, json, statistics, sys, time
from pathlib import Path
def hwm_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
from bot.pprof import parse_profile
from bot.analysis.flame import flame
from bot.analysis.top import top
from bot.render import flame as draw
import matplotlib.figure, matplotlib.backends.backend_agg  # a worker has these loaded
small = parse_profile(Path("tests/fixtures/heap_2.pb.gz").read_bytes())
draw.flame_png(flame(small), "warm-up")  # fonts loaded, as in a long-lived worker
data = Path(sys.argv[1]).read_bytes()
runs = int(sys.argv[2])
start = time.perf_counter()
profile = parse_profile(data)
parse_s = time.perf_counter() - start
rss_parsed = hwm_mb()
times, parts = [], []
for i in range(runs):
    if i:
        del profile, layout
        gc.collect()
        profile = parse_profile(data)  # fresh: no node stacks cached from an earlier run
    t0 = time.perf_counter()
    layout = flame(profile)
    t1 = time.perf_counter()
    png = draw.flame_png(layout, "bench")
    t2 = time.perf_counter()
    svg = draw.flame_svg(layout, "bench")
    t3 = time.perf_counter()
    times.append(t3 - t0)
    parts.append((t1 - t0, t2 - t1, t3 - t2))
    if i == 0:
        rss_rendered = hwm_mb()
shared = []
for _ in range(runs):  # the product path: /heap top --flame computes the table first
    del profile, layout
    gc.collect()
    profile = parse_profile(data)
    top(profile)
    t0 = time.perf_counter()
    layout = flame(profile)
    draw.flame_png(layout, "bench")
    draw.flame_svg(layout, "bench")
    shared.append(time.perf_counter() - t0)
print(json.dumps({"parse": parse_s, "render": times, "parts": parts, "after_top": shared,
                  "rects": len(layout.rects), "rows": layout.depth,
                  "png_bytes": len(png), "svg_bytes": len(svg),
                  "rss_parsed_mb": rss_parsed, "rss_peak_mb": rss_rendered}))
"""

def pprof_flamegraph(profile: Path) -> dict[str, float]:
    """`go tool pprof -http` on the file until /ui/flamegraph is served: wall time, peak RSS."""
    port = free_port()
    start = time.perf_counter()
    proc = subprocess.Popen([find_go(), "tool", "pprof", "-no_browser",
                             f"-http=127.0.0.1:{port}", str(profile)], env=go_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        body = b""
        while time.perf_counter() - start < 600:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ui/flamegraph",
                                            timeout=600) as response:
                    body = response.read()
                break
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError("go tool pprof -http exited early") from None
                time.sleep(0.02)
        wall = time.perf_counter() - start
        rss = tree_hwm_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    if b"stacks" not in body:
        raise RuntimeError("pprof's flame graph page carried no stacks")
    return {"wall": wall, "rss_mb": rss}


def deep_profile() -> Path:
    import gen_profile

    deep = getattr(gen_profile, "deep_heap_profile", None)
    return deep() if deep is not None else gen_profile.big_heap_profile(stacks=262_144)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--profile", type=Path, help="default: bench/gen_profile's deep profile")
    parser.add_argument("--render-only", action="store_true",
                        help="only the in-process render figure (no whole-process comparison)")
    args = parser.parse_args()
    profile = args.profile or deep_profile()
    print(f"profile: {profile} ({profile.stat().st_size / 1e6:.1f} MB gzip)", flush=True)

    out = subprocess.run([sys.executable, "-c", _RENDER, str(profile), str(args.runs)],
                         check=True, capture_output=True, text=True, timeout=900, cwd=ROOT)
    r = json.loads(out.stdout)
    median = statistics.median(r["render"])
    lay, png, svg = (statistics.median(p[i] for p in r["parts"]) for i in range(3))
    print(f"parse: {r['parse']:.2f}s; flame graph: {r['rects']} frames in {r['rows']} rows, "
          f"PNG {r['png_bytes'] / 1e3:.0f} kB, SVG {r['svg_bytes'] / 1e3:.0f} kB")
    print(f"render (layout {lay:.2f}s + PNG {png:.2f}s + SVG {svg:.2f}s), median of "
          f"{len(r['render'])}: {median:.2f}s (target < {TARGET_S:.0f}s: "
          f"{'met' if median < TARGET_S else 'MISSED'})")
    print(f"render after /heap top's table (what it cached is reused), median: "
          f"{statistics.median(r['after_top']):.2f}s")
    print(f"memory: peak RSS {r['rss_parsed_mb']:.0f} MB with the profile parsed, "
          f"{r['rss_peak_mb']:.0f} MB after its first flame graph "
          f"(+{r['rss_peak_mb'] - r['rss_parsed_mb']:.0f} MB: node stacks, tree, PNG, SVG)")

    if args.render_only:
        return 0 if median < TARGET_S else 1
    with tempfile.TemporaryDirectory() as tmp:
        heapbot = [sys.executable, "-m", "bot", "top", "--profile", str(profile), "-n", "1",
                   "--flame", str(Path(tmp) / "flame.png")]
        run_measured(heapbot)  # warm the font cache and the page cache
        pprof_flamegraph(profile)  # warm go's build cache (go tool builds pprof once)
        hb, pp = [], []
        for i in range(args.runs):
            hb.append(run_measured(heapbot))
            pp.append(pprof_flamegraph(profile))
            print(f"run {i + 1}: heapbot {hb[-1]['wall']:.2f}s {hb[-1]['rss_mb']:.0f}MB | "
                  f"pprof -http flame graph {pp[-1]['wall']:.2f}s {pp[-1]['rss_mb']:.0f}MB",
                  flush=True)
    hw = statistics.median(x["wall"] for x in hb)
    pw = statistics.median(x["wall"] for x in pp)
    hm, pm = max(x["rss_mb"] for x in hb), max(x["rss_mb"] for x in pp)
    print(f"whole process, median: heapbot top --flame {hw:.2f}s, "
          f"go tool pprof -http until /ui/flamegraph {pw:.2f}s: ratio (pprof/heapbot) "
          f"{pw / hw:.1f}x")
    print(f"peak RSS: heapbot {hm:.0f} MB, pprof {pm:.0f} MB (heapbot/pprof = {hm / pm:.2f})")
    return 0 if median < TARGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
