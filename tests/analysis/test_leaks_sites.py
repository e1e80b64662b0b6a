"""Allocation sites, own-code callers and heap summaries from real demo heap profiles.

Expected values come from elsewhere: `go tool pprof -top` for flat/cum, the
demo's Go source for where each function's body is, and deploy/demo/README.md
for which scenario allocates through which stdlib function.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from bot.analysis.leaks import heap_sites, own_code_callers, summarize_heap_bytes
from bot.gotool import find_go, go_env
from bot.pprof import parse_profile

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
HEAP = (FIXTURES / "heap_1.pb.gz").read_bytes()
DEMO_SOURCES = list((ROOT / "deploy" / "demo").glob("*.go"))


def function_span(name: str) -> tuple[Path, int, int]:
    """File and line range of a top-level Go function of the demo (from its source)."""
    short = name.removeprefix("main.")
    for path in DEMO_SOURCES:
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines, start=1):
            if re.match(rf"func {re.escape(short)}\(", line):
                end = next(j for j in range(i, len(lines) + 1) if lines[j - 1] == "}")
                return path, i, end
    raise AssertionError(f"{name} not in the demo source")


def test_own_code_sites_point_inside_their_function_body() -> None:
    sites = heap_sites(HEAP)
    checked = 0
    for function, site in sites.items():
        if not re.fullmatch(r"main\.[a-z]\w+", function) or function in ("main.main", "main.init"):
            continue
        path, start, end = function_span(function)
        file, _, line = site.location.rpartition(":")
        assert Path(file).name == path.name, function
        assert start < int(line) <= end, (function, site.location, start, end)
        assert site.own_caller == function
        checked += 1
    assert checked >= 5


def test_stdlib_sites_get_the_nearest_own_code_caller() -> None:
    callers = own_code_callers(HEAP)
    # README: the ticker scenario allocates through time.NewTicker in its poller.
    assert callers["time.NewTicker"].startswith("main.ticker")
    for function, caller in callers.items():
        assert not caller.startswith(("runtime.", "internal/", "time.", "fmt.")), function


def test_sites_from_bytes_and_from_the_engine_profile_agree() -> None:
    assert heap_sites(HEAP) == heap_sites(parse_profile(HEAP))


def pprof_top(path: Path, sample_type: str) -> dict[str, tuple[int, int]]:
    out = subprocess.run(
        [find_go(), "tool", "pprof", "-top", "-nodefraction=0", "-edgefraction=0", "-unit=B",
         f"-sample_index={sample_type}", str(path)],
        capture_output=True, text=True, env=go_env(), timeout=120, check=True).stdout
    rows = {}
    for line in out.splitlines():
        m = re.match(r"\s*(-?\d+)B?\s+\S+%\s+\S+%\s+(-?\d+)B?\s+\S+%\s+(.+)$", line)
        if m:
            rows[m.group(3).strip().removesuffix(" (inline)")] = (int(m.group(1)), int(m.group(2)))
    return rows


@pytest.mark.parametrize("sample_type", ["inuse_space", "inuse_objects"])
def test_fallback_summary_matches_go_tool_pprof(sample_type: str) -> None:
    summary = summarize_heap_bytes([HEAP])
    expected = pprof_top(FIXTURES / "heap_1.pb.gz", sample_type)
    assert expected, "pprof printed no rows"
    got = {fv.function: (fv.flat, fv.cum) for fv in summary.functions[sample_type]}
    for function, values in expected.items():
        assert got[function] == values, function
    assert summary.totals[sample_type] == sum(flat for flat, _ in expected.values())


def test_fallback_summary_of_two_instances_is_their_sum() -> None:
    one = summarize_heap_bytes([HEAP])
    two = summarize_heap_bytes([HEAP, HEAP])
    assert two.totals == {k: 2 * v for k, v in one.totals.items()}
    flat_one = {f.function: f.flat for f in one.functions["inuse_space"]}
    flat_two = {f.function: f.flat for f in two.functions["inuse_space"]}
    assert flat_two == {k: 2 * v for k, v in flat_one.items()}
