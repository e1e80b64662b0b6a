"""Synthetic profiles with every corner pprof handles (nameless functions, locations
without lines, deep inlining, recursion, several binaries, zero and negative values,
labels, empty stacks), compared with `go tool pprof` on the same bytes."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from bot.analysis.diff import diff
from bot.analysis.top import TopOptions, top
from bot.pprof import parse_profile, profile_pb2
from tests.golden.pprof_tool import go_or_none, parse_top, run_pprof

pytestmark = pytest.mark.skipif(go_or_none() is None, reason="no Go toolchain")


def synthetic(seed: int) -> bytes:
    rnd = random.Random(seed)
    p = profile_pb2.Profile()
    strings = [""]

    def s(text: str) -> int:
        strings.append(text)
        return len(strings) - 1

    p.sample_type.add(type=s("objects"), unit=s("count"))
    p.sample_type.add(type=s("space"), unit=s("bytes"))
    p.mapping.add(id=1, filename=s("/srv/app"), build_id=s("abc"), memory_start=0x400000,
                  memory_limit=0x800000, has_functions=True)
    p.mapping.add(id=2, filename=s("/lib/libc.so.6"), memory_start=0x7f0000000000,
                  memory_limit=0x7f0000100000)
    nfun = rnd.randint(5, 40)
    for f in range(1, nfun + 1):
        name = "" if rnd.random() < 0.1 else f"pkg{f % 4}.Func{f}"
        p.function.add(id=f, name=s(name) if name else 0, filename=s(f"/src/f{f % 6}.go"),
                       start_line=rnd.randint(1, 50))
    nloc = rnd.randint(5, 60)
    for loc_id in range(1, nloc + 1):
        loc = p.location.add(id=loc_id, mapping_id=rnd.choice([1, 1, 1, 2]),
                             address=0x400000 + loc_id * 16)
        for _ in range(rnd.choice([0, 1, 1, 1, 2, 3]) if loc_id > 2 else 1):
            loc.line.add(function_id=rnd.randint(1, nfun), line=rnd.randint(1, 200))
    for _ in range(rnd.randint(20, 300)):
        depth = rnd.randint(0, 12)
        stack = [rnd.randint(1, nloc) for _ in range(depth)]
        if stack and rnd.random() < 0.3:  # recursion: repeat a frame
            stack.insert(rnd.randrange(len(stack)), rnd.choice(stack))
        objects = rnd.choice([0, 1, 2, 5, 100])
        sign = rnd.choice([1, 1, -1])
        sample = p.sample.add(location_id=stack,
                              value=[objects * sign, objects * rnd.randint(8, 4096)])
        if rnd.random() < 0.3:
            sample.label.add(key=s("bytes"), num=rnd.randint(1, 999))
    p.string_table.extend(strings)
    return p.SerializeToString()


def canonical(rows: list[tuple[str, int, int]], cum: bool) -> list[tuple[str, int, int]]:
    """pprof leaves rows with the same printed name and value in map order (its sort
    sees them as equal: e.g. two nameless functions both shown as "[app]"), so such
    runs are compared as sets."""
    out: list[tuple[str, int, int]] = []
    run: list[tuple[str, int, int]] = []
    for row in [*rows, ("", 0, 0)]:
        key = (row[0], abs(row[2] if cum else row[1]))
        if run and key != (run[0][0], abs(run[0][2] if cum else run[0][1])):
            out.extend(sorted(run))
            run = []
        run.append(row)
    return out


@pytest.mark.parametrize("seed", range(8))
def test_synthetic_profiles_match_pprof(seed: int, tmp_path: Path) -> None:
    data = synthetic(seed)
    path = tmp_path / f"synthetic{seed}.pb"
    path.write_bytes(data)
    profile = parse_profile(data)
    for sample_type in ("objects", "space"):
        for cum in (False, True):
            flags = ["-top", "-unit=B", "-nodefraction=0", "-edgefraction=0",
                     f"-sample_index={sample_type}", *(["-cum"] if cum else [])]
            expected = parse_top(run_pprof([*flags, str(path)]))
            report = top(profile, TopOptions(sample_type, "cum" if cum else "flat"))
            assert report.total == expected.total
            got = [(r.function, r.flat, r.cum) for r in report.rows]
            assert canonical(got, cum) == canonical(expected.rows, cum)


@pytest.mark.parametrize("seed", range(4))
def test_synthetic_filters_match_pprof(seed: int, tmp_path: Path) -> None:
    """focus/ignore/hide also match file names and binaries (libc), like pprof."""
    data = synthetic(100 + seed)
    path = tmp_path / "synthetic.pb"
    path.write_bytes(data)
    profile = parse_profile(data)
    for flags, options in [
        (["-focus=pkg1"], TopOptions("space", focus="pkg1")),
        (["-ignore=libc"], TopOptions("space", ignore="libc")),
        (["-hide=pkg0|/srv/app"], TopOptions("objects", hide="pkg0|/srv/app")),
        (["-focus=f2\\.go", "-hide=pkg3", "-cum"],
         TopOptions("space", "cum", focus="f2\\.go", hide="pkg3")),
        # RE2-only syntax (Python's re reads both differently): a POSIX class and \z.
        (["-focus=pkg[[:digit:]]\\.Func1[[:digit:]]\\z"],
         TopOptions("space", focus="pkg[[:digit:]]\\.Func1[[:digit:]]\\z")),
    ]:
        index = f"-sample_index={options.sample_type}"
        expected = parse_top(run_pprof(["-top", "-unit=B", "-nodefraction=0", index, *flags,
                                        str(path)]))
        report = top(profile, options)
        got = [(r.function, r.flat, r.cum) for r in report.rows]
        assert canonical(got, options.sort == "cum") == canonical(expected.rows,
                                                                   options.sort == "cum")
        assert report.total == expected.total


@pytest.mark.parametrize("seed", range(4))
def test_synthetic_diffs_match_pprof(seed: int, tmp_path: Path) -> None:
    base_path, new_path = tmp_path / "base.pb", tmp_path / "new.pb"
    base_path.write_bytes(synthetic(200 + seed))
    new_path.write_bytes(synthetic(300 + seed))
    base, new = parse_profile(base_path.read_bytes()), parse_profile(new_path.read_bytes())
    for sample_type, cum in (("space", False), ("objects", True)):
        flags = ["-top", "-unit=B", "-nodefraction=0", f"-sample_index={sample_type}",
                 *(["-cum"] if cum else []), f"-diff_base={base_path}"]
        expected = parse_top(run_pprof([*flags, str(new_path)]))
        report = diff(base, new, TopOptions(sample_type, "cum" if cum else "flat"))
        assert report.percent_total == expected.total
        got = [(r.function, r.flat, r.cum) for r in report.rows]
        assert canonical(got, cum) == canonical(expected.rows, cum)


@pytest.mark.parametrize("seed", range(4))
def test_profile_drop_frames_are_applied_like_pprof(seed: int, tmp_path: Path) -> None:
    """A profile's own drop_frames/keep_frames prune stacks (pprof RemoveUninteresting)."""
    p = profile_pb2.Profile.FromString(synthetic(400 + seed))
    p.string_table.extend(["pkg2\\..*|pkg0\\.Func1.*", "pkg0\\.Func12"])
    p.drop_frames = len(p.string_table) - 2
    if seed % 2:
        p.keep_frames = len(p.string_table) - 1
    data = p.SerializeToString()
    path = tmp_path / "dropped.pb"
    path.write_bytes(data)
    profile = parse_profile(data)
    for cum in (False, True):
        flags = ["-top", "-unit=B", "-nodefraction=0", "-sample_index=space",
                 *(["-cum"] if cum else [])]
        expected = parse_top(run_pprof([*flags, str(path)]))
        report = top(profile, TopOptions("space", "cum" if cum else "flat"))
        got = [(r.function, r.flat, r.cum) for r in report.rows]
        assert canonical(got, cum) == canonical(expected.rows, cum)
    p.drop_frames = 0
    unpruned = top(parse_profile(p.SerializeToString()), TopOptions("space", "cum"))
    assert [(r.function, r.cum) for r in unpruned.rows] != \
        [(r.function, r.cum) for r in report.rows]  # pruning changed something
