"""Flame graphs checked against what a person reads off them, and against pprof.

- every frame's path value (cum) and self value (flat) equal the sums of
  `go tool pprof -traces` over the same path, with the same --type/--focus/--hide;
- the function totals in every SVG tooltip equal `go tool pprof -top`'s row;
- widths are proportional to cum within a pixel, children fit inside parents,
  narrow frames are folded into one "…" per parent holding exactly their sum;
- diff colours: red for growth, blue for shrinkage, intensity ∝ the change in flat.
"""

from __future__ import annotations

import functools
import itertools
import re
import xml.etree.ElementTree as ET
from collections import defaultdict

import pytest

from bot.analysis.flame import (
    FOLDED,
    MIN_FRACTION,
    NEUTRAL,
    ROOT,
    FlameLayout,
    flame,
    flame_diff,
    package_name,
    shorten_function_name,
)
from bot.analysis.top import TopOptions
from bot.errors import UsageError
from bot.pprof import Profile, parse_profile
from bot.render.flame import MARGIN, WIDTH_PX, flame_svg
from bot.units import format_value
from tests.golden.pprof_tool import EXACT_FLAGS, FIXTURES, go_or_none, parse_top, run_pprof

needs_go = pytest.mark.skipif(go_or_none() is None, reason="no Go toolchain")
SVG = "{http://www.w3.org/2000/svg}"
PLOT_PX = WIDTH_PX - 2 * MARGIN


@functools.cache
def load(name: str) -> Profile:
    return parse_profile((FIXTURES / name).read_bytes())


Path_ = tuple[str, ...]


@functools.cache
def pprof_paths(fixture: str, flags: tuple[str, ...]) -> dict[Path_, list[int]]:
    """[cum, flat] of every root-first path, summed from `go tool pprof -traces -unit=B`."""
    text = run_pprof(["-traces", "-unit=B", *flags, str(FIXTURES / fixture)])
    blocks = text.split("-----------+-------------------------------------------------------")
    tree: dict[Path_, list[int]] = defaultdict(lambda: [0, 0])
    for block in blocks[1:]:
        frames = [ln for ln in block.splitlines() if ln.strip() and ln[10:13] != ":  "]
        if not frames:
            continue
        value = int(re.sub(r"[A-Za-z]+$", "", frames[0][:10].strip()))
        names = [re.sub(r" \(inline\)$", "", ln[13:]) for ln in frames]
        stack = tuple(reversed(names))  # root first
        for depth in range(1, len(stack) + 1):
            tree[stack[:depth]][0] += value
        tree[stack][1] += value
    return dict(tree)


def path_of(layout: FlameLayout, index: int) -> Path_:
    names: list[str] = []
    while index > 0:
        names.append(layout.rects[index].function)
        index = layout.rects[index].parent
    return tuple(reversed(names))


def children(layout: FlameLayout) -> dict[int, list[int]]:
    out: dict[int, list[int]] = defaultdict(list)
    for i, r in enumerate(layout.rects):
        if i:
            out[r.parent].append(i)
    return out


CASES = [
    ("heap_2.pb.gz", TopOptions(), ()),
    ("heap_2.pb.gz", TopOptions(sample_type="alloc_space"), ("-sample_index=alloc_space",)),
    ("heap_1.pb.gz", TopOptions(sample_type="inuse_objects", focus="leakmap"),
     ("-sample_index=inuse_objects", "-focus=leakmap")),
    ("heap_other.pb.gz", TopOptions(sample_type="inuse_space", hide=r"runtime\.|fmt\."),
     ("-sample_index=inuse_space", r"-hide=runtime\.|fmt\.")),
    ("goroutine.pb.gz", TopOptions(), ()),
]
IDS = [f"{c[0]}{''.join(c[2])}" for c in CASES]


@needs_go
@pytest.mark.parametrize(("fixture", "options", "flags"), CASES, ids=IDS)
def test_frames_equal_pprof_traces_path_by_path(fixture: str, options: TopOptions,
                                                flags: tuple[str, ...]) -> None:
    layout = flame(load(fixture), options)
    paths = pprof_paths(fixture, flags)
    kids = children(layout)
    root = layout.rects[0]
    assert root.function == ROOT
    assert root.cum == sum(v[0] for p, v in paths.items() if len(p) == 1)
    drawn = 0
    for i, r in enumerate(layout.rects[1:], start=1):
        if r.folded:
            parent = path_of(layout, r.parent)
            shown = {layout.rects[k].function for k in kids[r.parent] if not layout.rects[k].folded}
            hidden = [v[0] for p, v in paths.items()
                      if len(p) == len(parent) + 1 and p[:-1] == parent and p[-1] not in shown
                      and v[0]]
            assert r.cum == sum(hidden) and r.folded == len(hidden)
            assert all(v < layout.width * MIN_FRACTION for v in hidden)
            continue
        expected = paths[path_of(layout, i)]
        assert (r.cum, r.flat) == (expected[0], expected[1]), path_of(layout, i)
        drawn += 1
    assert drawn >= 5
    # Nothing wide enough to see is missing: every path at least the fold threshold is drawn.
    visible = {path_of(layout, i) for i, r in enumerate(layout.rects) if i and not r.folded}
    limit = layout.width * MIN_FRACTION
    missing = [p for p, v in paths.items() if v[0] >= limit and len(p) <= layout.max_depth
               and all(paths[p[:d]][0] >= limit for d in range(1, len(p))) and p not in visible]
    assert missing == []


@needs_go
@pytest.mark.parametrize(("fixture", "options", "flags"), CASES[:4], ids=IDS[:4])
def test_svg_tooltips_equal_pprof_top(fixture: str, options: TopOptions,
                                      flags: tuple[str, ...]) -> None:
    layout = flame(load(fixture), options)
    svg = ET.fromstring(flame_svg(layout, fixture))
    top = {name: (flat, cum) for name, flat, cum in parse_top(run_pprof(
        ["-top", "-unit=B", *EXACT_FLAGS, *flags, str(FIXTURES / fixture)])).rows}
    checked = 0
    for g in svg.iter(f"{SVG}g"):
        title = g.find(f"{SVG}title").text
        name = title.splitlines()[0]
        if g.get("data-folded") or name.startswith("root"):
            continue
        flat, cum = top[name]
        assert (int(g.get("data-fn-flat")), int(g.get("data-fn-cum"))) == (flat, cum)
        assert f"flat {format_value(flat, layout.unit)} (" in title.splitlines()[2]
        assert f"cum {format_value(cum, layout.unit)} (" in title.splitlines()[2]
        assert f"this path: cum {format_value(int(g.get('data-cum')), layout.unit)} " in title
        checked += 1
    assert checked >= 5


def svg_boxes(svg_text: str) -> list[tuple[ET.Element, float, float]]:
    svg = ET.fromstring(svg_text)
    return [(g, float(g.find(f"{SVG}rect").get("x")), float(g.find(f"{SVG}rect").get("width")))
            for g in svg.iter(f"{SVG}g")]


@pytest.mark.parametrize("fixture", ["heap_1.pb.gz", "heap_2.pb.gz", "allocs.pb.gz"])
def test_widths_proportional_to_cum_within_a_pixel(fixture: str) -> None:
    layout = flame(load(fixture))
    boxes = svg_boxes(flame_svg(layout, fixture))
    assert len(boxes) >= 20
    root_cum = layout.rects[0].cum
    for g, x, w in boxes:
        assert abs(w - int(g.get("data-cum")) / root_cum * PLOT_PX) <= 1.0
        assert x >= MARGIN - 0.01 and x + w <= WIDTH_PX - MARGIN + 0.01


@pytest.mark.parametrize("diff", [False, True])
def test_children_fit_inside_their_parent(diff: bool) -> None:
    layout = (flame_diff(load("heap_1.pb.gz"), load("heap_2.pb.gz")) if diff
              else flame(load("heap_other.pb.gz")))
    for parent, kids in children(layout).items():
        p = layout.rects[parent]
        spans = sorted((layout.rects[k].x, layout.rects[k].width) for k in kids)
        assert sum(w for _, w in spans) <= p.width
        assert spans[0][0] >= p.x and spans[-1][0] + spans[-1][1] <= p.x + p.width
        assert all(a + w <= b for (a, w), (b, _) in itertools.pairwise(spans))
        assert all(layout.rects[k].depth == p.depth + 1 for k in kids)


def test_narrow_frames_fold_into_one_per_parent() -> None:
    coarse = flame(load("heap_2.pb.gz"), min_fraction=0.05)
    limit = 0.05 * coarse.width
    folded = [r for r in coarse.rects if r.folded]
    assert folded and all(r.function == FOLDED for r in folded)
    assert all(r.width >= limit for r in coarse.rects if not r.folded)
    parents = [r.parent for r in folded]
    assert len(parents) == len(set(parents))
    assert coarse.folded_frames == sum(r.folded for r in folded)
    everything = flame(load("heap_2.pb.gz"), min_fraction=0)
    assert not any(r.folded for r in everything.rects)
    assert len(everything.rects) > len(coarse.rects)


def test_deep_stacks_are_cut_with_the_share_told() -> None:
    full = flame(load("heap_2.pb.gz"), min_fraction=0)
    cut = flame(load("heap_2.pb.gz"), min_fraction=0, max_depth=3)
    assert cut.depth == 4 and full.depth > 4
    deeper = sum(r.cum - r.flat for r in full.rects if r.depth == 3)
    assert cut.cut_value == deeper > 0


def test_frames_are_ordered_widest_first_and_coloured_by_package() -> None:
    layout = flame(load("heap_2.pb.gz"))
    for kids in children(layout).values():
        widths = [layout.rects[k].width for k in kids if not layout.rects[k].folded]
        assert widths == sorted(widths, reverse=True)
    colour_of: dict[str, set[str]] = defaultdict(set)
    for r in layout.rects[1:]:
        if not r.folded:
            colour_of[package_name(r.function)].add(r.color)
    assert all(len(c) == 1 for c in colour_of.values())
    top_packages = [p for p, _ in layout.packages[:6]]
    assert top_packages[0] == "main"
    assert len({next(iter(colour_of[p])) for p in top_packages}) == len(top_packages)


def _rgb(color: str) -> tuple[int, int, int]:
    return int(color[1:3], 16), int(color[3:5], 16), int(color[5:7], 16)


@needs_go
def test_diff_matches_both_profiles_and_colours_follow_the_change_in_flat() -> None:
    options = TopOptions(sample_type="inuse_space")
    layout = flame_diff(load("heap_1.pb.gz"), load("heap_2.pb.gz"), options)
    new = pprof_paths("heap_2.pb.gz", ("-sample_index=inuse_space",))
    base = pprof_paths("heap_1.pb.gz", ("-sample_index=inuse_space",))
    assert layout.is_diff and layout.base_total == sum(v[0] for p, v in base.items()
                                                       if len(p) == 1)
    top = {n: (f, c) for n, f, c in parse_top(run_pprof(
        ["-top", "-unit=B", *EXACT_FLAGS, "-sample_index=inuse_space",
         f"-diff_base={FIXTURES / 'heap_1.pb.gz'}", str(FIXTURES / "heap_2.pb.gz")])).rows}
    grew = shrank = 0
    neutral = _rgb(NEUTRAL)
    for i, r in enumerate(layout.rects[1:], start=1):
        if r.folded:
            continue
        path = path_of(layout, i)
        assert (r.cum, r.flat) == tuple(new.get(path, [0, 0]))
        assert (r.base_cum, r.base_flat) == tuple(base.get(path, [0, 0]))
        if r.function in top:
            assert (r.fn_flat, r.fn_cum) == top[r.function]
        red, green, blue = _rgb(r.color)
        if r.delta_flat > 0:
            assert red > blue
            grew += 1
        elif r.delta_flat < 0:
            assert blue > red
            shrank += 1
        else:
            assert r.color == NEUTRAL
        # Intensity: the way from neutral grey to full red/blue, ∝ |change in flat|.
        full = _rgb("#d62728" if r.delta_flat > 0 else "#1f63cd")
        way = (neutral[1] - green) / (neutral[1] - full[1])
        assert way == pytest.approx(abs(r.delta_flat) / layout.max_abs_delta, abs=0.01)
    assert grew and shrank
    biggest = max((r for r in layout.rects[1:] if not r.folded), key=lambda r: abs(r.delta_flat))
    assert abs(biggest.delta_flat) == layout.max_abs_delta
    assert biggest.color in ("#d62728", "#1f63cd")


def test_diff_width_shows_what_vanished_or_only_the_newer() -> None:
    base, new = load("heap_1.pb.gz"), load("heap_2.pb.gz")
    widest = flame_diff(new, base, min_fraction=0)  # heap_2 → heap_1: paths vanish
    newer = flame_diff(new, base, width="new", min_fraction=0)
    gone = [r for r in widest.rects[1:] if r.cum == 0 and r.base_cum > 0]
    assert gone, "some path of heap_2 is absent from heap_1"
    assert all(r.width >= max(abs(r.cum), abs(r.base_cum)) for r in widest.rects)
    assert all(r.width == abs(r.cum) for r in newer.rects[1:])
    assert not any(r.cum == 0 and not r.folded for r in newer.rects[1:])
    assert newer.width == widest.rects[0].cum < widest.width


def test_bad_options_get_one_clear_message() -> None:
    with pytest.raises(UsageError, match="no sample type `bogus`"):
        flame(load("heap_2.pb.gz"), TopOptions(sample_type="bogus"))
    with pytest.raises(UsageError, match="not a valid regular expression for --focus"):
        flame(load("heap_2.pb.gz"), TopOptions(focus="("))
    with pytest.raises(UsageError, match="Unknown diff width"):
        flame_diff(load("heap_1.pb.gz"), load("heap_2.pb.gz"), width="both")  # type: ignore[arg-type]


def test_empty_selection_draws_just_the_root() -> None:
    layout = flame(load("heap_2.pb.gz"), TopOptions(focus="no_such_function_anywhere"))
    assert [r.function for r in layout.rects] == [ROOT] and layout.width == 0
    assert "<svg" in flame_svg(layout, "empty")


# pprof's own cases (internal/graph/graph_test.go TestShortenFunctionName).
SHORTEN = [
    ("root", "root"), ("syscall.Syscall", "syscall.Syscall"),
    ("net/http.(*conn).serve", "http.(*conn).serve"),
    ("github.com/blahBlah/foo.Foo", "foo.Foo"),
    ("github.com/BlahBlah/foo.Foo[...]", "foo.Foo[...]"),
    ("github.com/blah-blah/foo_bar.(*FooBar).Foo", "foo_bar.(*FooBar).Foo"),
    ("encoding/json.(*structEncoder).(encoding/json.encode)-fm",
     "json.(*structEncoder).(encoding/json.encode)-fm"),
    ("github.com/foo/bar/v4.(*Foo).Bar", "bar.(*Foo).Bar"),
    ("github.com/foo/bar/v4/baz.Foo.Bar", "baz.Foo.Bar"),
    ("github.com/foo/bar/v123.(*Foo).Bar", "bar.(*Foo).Bar"),
    ("github.com/foobar/v0.(*Foo).Bar", "v0.(*Foo).Bar"), ("example.org/v2xyz.Foo", "v2xyz.Foo"),
    ("github.com/foo/bar/v4/foo/bar/v4.(*Foo).Bar", "v4.(*Foo).Bar"),
    ("java.util.concurrent.ThreadPoolExecutor$Worker.run", "ThreadPoolExecutor$Worker.run"),
    ("java.bar.foo.FooBar.run(java.lang.Runnable)", "FooBar.run"),
    ("(anonymous namespace)::Bar::Foo", "Bar::Foo"), ("(anonymous namespace)::foo", "foo"),
    ("cpp::namespace::Class::method()::$_100::operator()", "Class::method"),
    ("cpp::namespace::Class::method<float, long, int>()", "Class::method<float, long, int>"),
    ("foo", "foo"), ("foo/xyz", "foo/xyz"),
    ("com.google.perftools.gwp.benchmark.FloatBench.lambda$run$0", "FloatBench.lambda$run$0"),
]


@pytest.mark.parametrize(("name", "short"), SHORTEN)
def test_names_are_shortened_like_pprof(name: str, short: str) -> None:
    assert shorten_function_name(name) == short


def test_package_names_like_pprof() -> None:
    assert package_name("net/http.(*conn).serve") == "net/http"
    assert package_name("github.com/a/b.c.(*T).M") == "github.com/a/b"
    assert package_name("main.main") == "main"
    assert package_name("[demo]") == ""


def test_a_profile_with_negative_values_keeps_children_inside_parents() -> None:
    import dataclasses

    import numpy as np

    heap = load("heap_2.pb.gz")
    values = heap.values.copy()
    values[::3] *= -1  # every third sample negative, as in a diff written as one profile
    mixed = dataclasses.replace(heap, values=values, cache={})
    layout = flame(mixed, min_fraction=0)
    column = values[:, -1]
    assert layout.width == int(np.abs(column).sum()) == layout.rects[0].width
    assert layout.rects[0].cum == int(column.sum())  # cum stays signed, as pprof counts it
    for parent, kids in children(layout).items():
        assert sum(layout.rects[k].width for k in kids) <= layout.rects[parent].width
    assert all(r.width >= abs(r.cum) for r in layout.rects)
    assert any(r.cum < 0 for r in layout.rects)
