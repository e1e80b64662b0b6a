"""heapbot's top and diff against `go tool pprof`: identical integers, totals and order.

Every case is checked against the committed golden file (pprof's own output) and,
when Go is present, against a live `go tool pprof` run on the same fixture.
"""

from __future__ import annotations

import functools

import pytest

from bot.analysis.diff import diff
from bot.analysis.top import TopOptions, TopReport, top
from bot.pprof import Profile, parse_profile
from tests.golden.pprof_tool import (
    CASES,
    FIXTURES,
    Case,
    PprofTop,
    go_or_none,
    parse_top,
    run_pprof,
)

needs_go = pytest.mark.skipif(go_or_none() is None, reason="no Go toolchain")


@functools.cache
def load(name: str) -> Profile:
    return parse_profile((FIXTURES / name).read_bytes())


def heapbot_report(case: Case) -> TopReport:
    options = TopOptions(sample_type=case.sample_type, sort="cum" if case.cum else "flat",
                         node_count=case.nodes, focus=case.focus, ignore=case.ignore,
                         hide=case.hide)
    if case.base:
        return diff(load(case.base), load(case.fixture), options)
    return top(load(case.fixture), options)


def assert_same(report: TopReport, expected: PprofTop) -> None:
    assert report.percent_total == expected.total
    assert report.shown_flat == expected.shown
    got = [(r.function, r.flat, r.cum) for r in report.rows]
    assert got == expected.rows
    if expected.node_total is not None:
        assert report.node_total == expected.node_total


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_matches_golden(case: Case) -> None:
    expected = parse_top(case.golden_path().read_text())
    assert expected.rows, "golden file without rows"
    assert_same(heapbot_report(case), expected)


LIVE = [c for c in CASES if c.fixture == "heap_other.pb.gz" or c.base or c.focus or c.hide]


@needs_go
@pytest.mark.parametrize("case", LIVE, ids=lambda c: c.name)
def test_matches_live_pprof(case: Case) -> None:
    assert_same(heapbot_report(case), parse_top(run_pprof(case.pprof_args())))


@needs_go
@pytest.mark.parametrize("case", [Case("heap_2.pb.gz"), Case("heap_other.pb.gz", "alloc_space",
                                                              cum=True, nodes=12),
                                  Case("goroutine.pb.gz", cum=True),
                                  Case("heap_2.pb.gz", "inuse_space", base="heap_1.pb.gz")],
                         ids=lambda c: c.name)
def test_text_is_pprofs_text(case: Case) -> None:
    """With pprof's automatic unit, the whole table reads the same, character for character."""
    text = run_pprof(case.pprof_args(exact=False))
    ours = heapbot_report(case).to_text()
    theirs = text[text.index("Showing nodes"):]
    assert ours[ours.index("Showing nodes"):].replace(" (new)", "").replace(" (gone)", "") \
        == theirs


def test_diff_marks_new_and_gone_functions() -> None:
    report = diff(load("heap_1.pb.gz"), load("heap_2.pb.gz"), TopOptions("inuse_space"))
    before = {r.function for r in top(load("heap_1.pb.gz"), TopOptions("inuse_space")).rows}
    after = {r.function for r in top(load("heap_2.pb.gz"), TopOptions("inuse_space")).rows}
    for row in report.rows:
        expected = "new" if row.function not in before else (
            "gone" if row.function not in after else "")
        assert row.status == expected, row
    assert report.base_total == sum(abs(int(v)) for v in load("heap_1.pb.gz").values[:, 3])
    assert report.total == sum(abs(int(v)) for v in load("heap_2.pb.gz").values[:, 3])


def test_json_has_the_contract_keys() -> None:
    data = top(load("heap_1.pb.gz"), TopOptions("alloc_space", node_count=3)).to_json()
    assert list(data) == ["sample_type", "unit", "total", "rows"]
    assert data["sample_type"] == "alloc_space" and data["unit"] == "bytes"
    assert len(data["rows"]) == 3
    assert set(data["rows"][0]) == {"function", "flat", "cum", "flat_pct", "sum_pct", "cum_pct"}
    d = diff(load("heap_1.pb.gz"), load("heap_2.pb.gz")).to_json()
    assert "base_total" in d and all("status" in r for r in d["rows"])
