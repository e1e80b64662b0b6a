"""`heapbot top|diff|peek|list --profile FILE` as a user runs it: a real process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bot.analysis.top import TopOptions, top
from bot.pprof import parse_profile

FIXTURES = Path(__file__).parents[1] / "fixtures"
HEAP1, HEAP2 = str(FIXTURES / "heap_1.pb.gz"), str(FIXTURES / "heap_2.pb.gz")


def heapbot(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bot", *args], capture_output=True, text=True,
                          timeout=120, check=False)


def test_top_text_defaults_to_ten_rows_like_pprof() -> None:
    out = heapbot("top", "--profile", HEAP1)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "Type: inuse_space"
    assert lines[1].startswith("Showing nodes accounting for ")
    assert "Showing top 10 nodes out of" in lines[2]
    header = lines.index("      flat  flat%   sum%        cum   cum%")
    rows = lines[header + 1:]
    assert len(rows) == 10
    expected = top(parse_profile(Path(HEAP1).read_bytes()), TopOptions(node_count=10))
    assert [r.split()[-1] for r in rows] == [r.function for r in expected.rows]


def test_top_json_every_row_with_contract_keys() -> None:
    out = heapbot("top", "--profile", HEAP2, "--type", "alloc_objects", "--cum",
                  "--format", "json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert list(data) == ["sample_type", "unit", "total", "rows"]
    assert data["sample_type"] == "alloc_objects" and data["unit"] == "count"
    expected = top(parse_profile(Path(HEAP2).read_bytes()), TopOptions("alloc_objects", "cum"))
    assert data["total"] == expected.total
    assert [(r["function"], r["flat"], r["cum"]) for r in data["rows"]] == \
        [(r.function, r.flat, r.cum) for r in expected.rows]
    assert all(set(r) == {"function", "flat", "cum", "flat_pct", "sum_pct", "cum_pct"}
               for r in data["rows"])
    cums = [abs(r["cum"]) for r in data["rows"]]
    assert cums == sorted(cums, reverse=True)


def test_n_zero_means_every_row_and_filters_apply() -> None:
    every = json.loads(heapbot("top", "--profile", HEAP2, "-n", "0", "--format", "json").stdout)
    text = heapbot("top", "--profile", HEAP2, "-n", "0").stdout
    assert len(every["rows"]) > 10
    assert len(text.splitlines()) == len(every["rows"]) + 3
    focused = json.loads(heapbot("top", "--profile", HEAP2, "--focus", "leakmap",
                                 "--hide", "runtime", "--format", "json").stdout)
    assert focused["rows"] and all("runtime" not in r["function"] for r in focused["rows"])
    assert focused["total"] == every["total"]  # pprof: percentages of the whole profile


def test_diff_json_has_base_total_and_status() -> None:
    out = heapbot("diff", "--base", HEAP1, "--profile", HEAP2, "--format", "json", "-n", "5")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert list(data) == ["sample_type", "unit", "total", "base_total", "rows"]
    assert len(data["rows"]) == 5
    changes = [abs(r["flat"]) for r in data["rows"]]
    assert changes == sorted(changes, reverse=True)


def test_peek_and_list_text() -> None:
    peek = heapbot("peek", "--profile", HEAP2, "leakmapNewRequest")
    assert peek.returncode == 0, peek.stderr
    assert "| main.leakmapNewRequest" in peek.stdout and "main.leakmapTick" in peek.stdout
    listing = heapbot("list", "--profile", HEAP2, "leakmapNewRequest")
    assert listing.returncode == 0, listing.stderr
    assert "ROUTINE ======================== main.leakmapNewRequest in " in listing.stdout
    assert ":" in listing.stdout.splitlines()[-1]


@pytest.mark.parametrize("args,phrase", [
    (["top", "--profile", "/nonexistent/heap.pb.gz"], "No such file"),
    (["top", "--profile", str(FIXTURES / "fixtures.json")], "JSON"),
    (["top", "--profile", HEAP1, "--type", "bogus"], "no sample type `bogus`"),
    (["top", "--profile", HEAP1, "--focus", "("], "not a valid regular expression"),
    (["diff", "--base", HEAP1, "--profile", str(FIXTURES / "goroutine.pb.gz")],
     "cannot be compared"),
    (["peek", "--profile", HEAP1, "no_such_function_xyz"], "No function matches"),
])
def test_errors_are_one_line_exit_2(args: list[str], phrase: str) -> None:
    out = heapbot(*args)
    assert out.returncode == 2
    assert out.stdout == ""
    assert len(out.stderr.strip().splitlines()) == 1 and phrase in out.stderr
    assert "Traceback" not in out.stderr


def test_file_mode_imports_nothing_heavy() -> None:
    code = (f"import sys; from bot.cli import main; main(['top', '--profile', {HEAP1!r}]);"
            "bad = [m for m in ('redis', 'slack_bolt', 'slack_sdk', 'matplotlib', 'aiohttp',"
            " 'httpx') if m in sys.modules]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"
