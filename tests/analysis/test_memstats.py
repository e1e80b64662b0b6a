"""runtime.MemStats from real `heap?debug=1` output: every field, Go's own invariants."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bot.analysis.memstats import merge_memstats, parse_memstats
from bot.errors import ProfileError

FIXTURES = Path(__file__).parents[1] / "fixtures"
ROOT = Path(__file__).resolve().parents[2]
TEXT = (FIXTURES / "heap_debug1.txt").read_text()

GO_FIELDS = {"Alloc", "TotalAlloc", "Sys", "Lookups", "Mallocs", "Frees", "HeapAlloc",
             "HeapSys", "HeapIdle", "HeapInuse", "HeapReleased", "HeapObjects", "StackInuse",
             "StackSys", "MSpanInuse", "MSpanSys", "MCacheInuse", "MCacheSys", "BuckHashSys",
             "GCSys", "OtherSys", "NextGC", "LastGC", "NumGC", "NumForcedGC"}


def printed(name: str) -> str:
    """The value Go printed for one field, read straight from the text."""
    match = re.search(rf"^# {name} = (.*)$", TEXT, flags=re.M)
    assert match, name
    return match.group(1)


def test_every_field_go_prints_is_read() -> None:
    stats = parse_memstats(TEXT)
    assert set(stats.fields) >= GO_FIELDS
    for name in GO_FIELDS - {"StackInuse", "StackSys", "MSpanInuse", "MSpanSys", "MCacheInuse",
                             "MCacheSys"}:
        assert stats.fields[name] == int(printed(name)), name
    inuse, sys_ = (int(v) for v in printed("Stack").split("/"))
    assert (stats["StackInuse"], stats["StackSys"]) == (inuse, sys_)
    assert stats.pause_ns == [int(v) for v in printed("PauseNs").strip("[]").split()]
    assert len(stats.pause_ns) == len(stats.pause_end) == 256
    assert stats.gc_cpu_fraction == float(printed("GCCPUFraction"))
    assert stats.debug_gc is (printed("DebugGC") == "true")
    if "# MaxRSS" in TEXT:
        assert stats["MaxRSS"] == int(printed("MaxRSS"))


def test_go_invariants_hold_on_the_parsed_numbers() -> None:
    s = parse_memstats(TEXT)
    assert s["HeapSys"] == s["HeapInuse"] + s["HeapIdle"]
    assert s["Alloc"] == s["HeapAlloc"]
    assert s["HeapObjects"] == s["Mallocs"] - s["Frees"]
    assert s["HeapReleased"] <= s["HeapIdle"]
    assert s["StackInuse"] <= s["StackSys"] and s["MSpanInuse"] <= s["MSpanSys"]
    assert s.held_free == s["HeapIdle"] - s["HeapReleased"]


def test_merge_sums_instances_and_keeps_the_latest_gc_time() -> None:
    a = parse_memstats(TEXT)
    b = parse_memstats(TEXT.replace(f"# NumGC = {a['NumGC']}", f"# NumGC = {a['NumGC'] + 5}")
                       .replace(f"# LastGC = {a['LastGC']}", "# LastGC = 1"))
    merged = merge_memstats([a, b])
    assert merged.instances == 2
    assert merged["HeapInuse"] == 2 * a["HeapInuse"]
    assert merged["NumGC"] == 2 * a["NumGC"] + 5
    assert merged["LastGC"] == a["LastGC"]
    assert merged.gc_cpu_fraction == pytest.approx(a.gc_cpu_fraction)
    with pytest.raises(ProfileError):
        merge_memstats([])


def test_bytes_input_and_block_in_the_middle() -> None:
    assert parse_memstats(TEXT.encode()).fields == parse_memstats(TEXT).fields
    block = TEXT[TEXT.index("# runtime.MemStats"):]
    assert parse_memstats("heap profile: junk\n\n" + block).fields == parse_memstats(TEXT).fields


@pytest.mark.parametrize(("data", "words"), [
    ("heap profile: 1: 2 [3: 4] @ heap/1048576\n", "heap?debug=1"),
    ((FIXTURES / "heap_1.pb.gz").read_bytes(), "heap?debug=1"),
    ('{"HeapAlloc": 1}', "heap?debug=1"),
    ("# runtime.MemStats\n", "empty"),
    ("# runtime.MemStats\n# HeapAlloc = lots\n", "HeapAlloc"),
])
def test_missing_or_bad_block_says_what_to_fetch(data: str | bytes, words: str) -> None:
    with pytest.raises(ProfileError) as err:
        parse_memstats(data)
    assert words in err.value.user_message()


def test_cli_text_and_json() -> None:
    path = str(FIXTURES / "heap_debug1.txt")
    out = subprocess.run([sys.executable, "-m", "bot", "memstats", "--file", path],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    row = next(line for line in out.stdout.splitlines() if line.startswith("HeapInuse "))
    assert row.split()[1] == f"{int(printed('HeapInuse')):,}"
    out = subprocess.run([sys.executable, "-m", "bot", "memstats", "--file", path, "--format",
                          "json"], capture_output=True, text=True, timeout=60, cwd=ROOT)
    data = json.loads(out.stdout)
    assert data["fields"]["NextGC"] == int(printed("NextGC"))
    missing = subprocess.run([sys.executable, "-m", "bot", "memstats", "--file",
                              str(FIXTURES / "nope.txt")], capture_output=True, text=True,
                             timeout=60, cwd=ROOT)
    assert missing.returncode == 2 and "No file" in missing.stderr
