"""Build and run bench/gen_profile to get a big real heap profile (cached in .cache/bench).

Benchmarks call :func:`big_heap_profile`; ``python bench/gen_profile/gen_profile.py``
prints where the profile is.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from bot.gotool import find_go, go_env  # noqa: E402


def big_heap_profile(path: Path | None = None, stacks: int = 300_000, *, base: int = 10,
                     depth: int = 0) -> Path:
    """A heap profile with ``stacks`` distinct stacks; reused while main.go is unchanged."""
    shape = f"{stacks}" if (base, depth) == (10, 0) else f"{stacks}-{base}-{depth}"
    key = hashlib.sha256((HERE / "main.go").read_bytes() + shape.encode()).hexdigest()[:16]
    # cached under the checkout's .cache/ (gitignored), not the system temp dir
    target = path or HERE.parents[1] / ".cache" / "bench" / f"big-heap-{key}.pb.gz"
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() and target.stat().st_size > 0:
        return target
    partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
    subprocess.run([find_go(), "run", ".", "-o", str(partial), "-stacks", str(stacks),
                    "-base", str(base), "-depth", str(depth)],
                   cwd=HERE, env=go_env(), check=True, timeout=600,
                   stdout=subprocess.DEVNULL)
    os.replace(partial, target)
    return target


def deep_heap_profile(path: Path | None = None, stacks: int = 262_144) -> Path:
    """Deep recursion: 3 mutually recursive functions, 18 digits (about 36 frames) per stack."""
    return big_heap_profile(path, stacks, base=3, depth=18)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("path", nargs="?", type=Path)
    parser.add_argument("--stacks", type=int, default=300_000)
    parser.add_argument("--deep", action="store_true",
                        help="3 mutually recursive functions 18 deep, 262,144 stacks")
    args = parser.parse_args()
    profile = (deep_heap_profile(args.path) if args.deep
               else big_heap_profile(args.path, args.stacks))
    print(f"{profile} {profile.stat().st_size} bytes")


if __name__ == "__main__":
    main()
