"""Coverage-guided fuzzing of the pprof decoder with atheris (libFuzzer), for minutes, outside CI.

The property is the one tests/reliability/test_fuzz_decoder.py checks under hypothesis:
``bot.pprof.parse_profile`` returns a Profile or raises heapbot's own
``HeapbotError``; anything else (IndexError, struct.error, MemoryError, a hang)
is a crash that libFuzzer saves as ``crash-<sha1>`` in the working directory.
The corpus starts from the real fixtures (gzip and raw). Decoding is bounded by
tight Limits so an input can never ask for gigabytes.

    pip install -e '.[fuzz]'
    .venv/bin/python bench/fuzz/fuzz_decoder.py -max_total_time=300 [corpus_dir]
    .venv/bin/python bench/fuzz/fuzz_decoder.py crash-<sha1>     # replay one input

Without libFuzzer flags it runs for 120 s. Prints executions per second every 30 s
with an anchor measured in the same run (gzip.decompress of the same seed), so
the figure travels across machines as a ratio.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

try:
    import atheris
except ImportError:  # the optional `fuzz` extra
    sys.exit("atheris is not installed: pip install -e '.[fuzz]' (it ships wheels for "
             "CPython on Linux x86_64; elsewhere it needs clang with libFuzzer)")

with atheris.instrument_imports():
    from bot.errors import HeapbotError
    from bot.pprof import Limits, parse_profile

FIXTURES = REPO / "tests" / "fixtures"
LIMITS = Limits(max_compressed=1 << 20, max_decompressed=16 << 20)
EXECUTIONS = 0
REPORT_EVERY = 30.0  # libFuzzer ends with os._exit, so figures are printed as it runs
STATE = {"started": time.perf_counter(), "last": time.perf_counter(), "anchor": 1.0}


def report() -> None:
    elapsed = time.perf_counter() - STATE["started"]
    rate = EXECUTIONS / max(elapsed, 1e-9)
    print(f"heapbot decoder fuzz: {EXECUTIONS} inputs in {elapsed:.0f} s = {rate:.0f}/s; "
          f"anchor gzip.decompress {STATE['anchor']:.0f}/s; ratio {rate / STATE['anchor']:.4f}",
          flush=True)


def test_one_input(data: bytes) -> None:
    """libFuzzer's entry point: any exception other than HeapbotError is a finding."""
    global EXECUTIONS
    EXECUTIONS += 1
    with contextlib.suppress(HeapbotError):
        parse_profile(data, LIMITS)
    if EXECUTIONS % 2000 == 0 and time.perf_counter() - STATE["last"] > REPORT_EVERY:
        STATE["last"] = time.perf_counter()
        report()


def seed_corpus() -> Path:
    """A fresh corpus directory with every fixture profile, gzip and raw."""
    corpus = Path(tempfile.mkdtemp(prefix="heapbot-fuzz-corpus-"))
    for path in FIXTURES.glob("*.pb.gz"):
        shutil.copy(path, corpus / path.name)
        (corpus / (path.stem + ".raw")).write_bytes(gzip.decompress(path.read_bytes()))
    return corpus


def anchor_rate(seconds: float = 2.0) -> float:
    """Executions per second of a trivial decoder (gzip.decompress of a seed)."""
    seed = (FIXTURES / "heap_1.pb.gz").read_bytes()
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        gzip.decompress(seed)
        count += 1
    return count / (time.perf_counter() - started)


def main() -> None:
    args = sys.argv[1:]
    replay = [a for a in args if not a.startswith("-") and os.path.isfile(a)]
    if not any(a.startswith("-max_total_time") or a.startswith("-runs") for a in args) \
            and not replay:
        args.append("-max_total_time=120")
    if not replay and not any(not a.startswith("-") for a in args):
        args.append(str(seed_corpus()))
    STATE["anchor"] = anchor_rate()
    STATE["started"] = STATE["last"] = time.perf_counter()
    atheris.Setup([sys.argv[0], *args], test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
