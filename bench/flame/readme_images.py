"""Make the README's two flame graphs from the demo: one of a capture, one diff.

Starts the demo Go service (deploy/demo, built like the tests build it), takes
its heap profile, waits, takes it again, and draws with the same code as
`/heap top demo --flame` and `/heap diff demo --flame`:

    .venv/bin/python bench/flame/readme_images.py [--warmup 60] [--wait 30] [--out docs/flame]
"""

from __future__ import annotations

import argparse
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bot.analysis.flame import flame, flame_diff  # noqa: E402
from bot.pprof import parse_profile  # noqa: E402
from bot.render.flame import flame_png  # noqa: E402
from tests.support.demo import build_demo, start_demo  # noqa: E402


def heap(url: str) -> bytes:
    with urllib.request.urlopen(f"{url}/debug/pprof/heap", timeout=30) as response:
        return response.read()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--warmup", type=float, default=60.0,
                        help="seconds before the first capture (the demo's cache fills up)")
    parser.add_argument("--wait", type=float, default=30.0, help="seconds between captures")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "flame")
    args = parser.parse_args()
    demo = start_demo(build_demo())
    try:
        time.sleep(args.warmup)
        before_at, before = time.time(), heap(demo.url)
        time.sleep(args.wait)
        after_at, after = time.time(), heap(demo.url)
    finally:
        demo.stop()
    base, new = parse_profile(before), parse_profile(after)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "demo-flame.png").write_bytes(flame_png(flame(new), "demo", after_at))
    (args.out / "demo-diff-flame.png").write_bytes(
        flame_png(flame_diff(base, new), "demo", after_at, before_at))
    print(f"wrote {args.out / 'demo-flame.png'} and {args.out / 'demo-diff-flame.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
