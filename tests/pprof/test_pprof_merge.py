"""merge_profiles (vectorized) against `go tool pprof` given several files at once.

pprof merges every profile named on its command line (profile.Merge), so
`go tool pprof -top a b c` is the reference for the merged top table and
`-raw` for the merged samples themselves (how many, with which values).
Profiles come from the fixtures, from random Go programs built here, and
from synthetic protos written here with pprof's corner cases: the same stack
under other ids, shifted mappings (ASLR), labels, zero samples, inlined frames.
"""

from __future__ import annotations

import gzip
import random
import re
from pathlib import Path

import pytest

from bot.analysis.top import TopOptions, TopReport, top
from bot.errors import ProfileError
from bot.pprof import Profile, merge_profiles, parse_profile, profile_pb2
from tests.golden.goprog import build_and_run
from tests.golden.pprof_tool import FIXTURES, HEAP_TYPES, go_or_none, parse_top, run_pprof

pytestmark = pytest.mark.skipif(go_or_none() is None, reason="no Go toolchain")
EXACT = ["-unit=B", "-nodefraction=0", "-edgefraction=0"]
RAW_SAMPLE = re.compile(r"^\s*((?:-?\d+\s+)*-?\d+):(?:\s|$)")


def assert_tops_equal_pprof(merged: Profile, files: list[Path]) -> list[TopReport]:
    """`top` of ``merged`` equals `go tool pprof -top` given ``files``, for every sample
    type, by flat and by cum; returns the reports."""
    reports = []
    for sample_type in [st.type for st in merged.sample_types]:
        for sort in ("flat", "cum"):
            flags = [f"-sample_index={sample_type}", *(["-cum"] if sort == "cum" else [])]
            expected = parse_top(run_pprof(["-top", *EXACT, *flags, *map(str, files)]))
            report = top(merged, TopOptions(sample_type, sort))
            assert report.total == expected.total, (sample_type, sort)
            assert [(r.function, r.flat, r.cum) for r in report.rows] == expected.rows
            reports.append(report)
    return reports


def assert_top_equals_pprof(files: list[Path]) -> None:
    merged = merge_profiles([parse_profile(f.read_bytes()) for f in files])
    for report in assert_tops_equal_pprof(merged, files):
        assert report.rows


def raw_samples(files: list[Path]) -> list[tuple[int, ...]]:
    """The merged samples' value rows as `go tool pprof -raw` prints them, sorted."""
    text = run_pprof(["-raw", *map(str, files)])
    body = text.split("Samples:", 1)[1].split("Locations", 1)[0]
    rows = [tuple(int(v) for v in m.group(1).split())
            for m in map(RAW_SAMPLE.match, body.splitlines()) if m]
    return sorted(rows)


def merged_samples(files: list[Path]) -> list[tuple[int, ...]]:
    merged = merge_profiles([parse_profile(f.read_bytes()) for f in files])
    return sorted(tuple(int(v) for v in row) for row in merged.values)


def test_fixtures_merged_top_equals_pprof() -> None:
    assert_top_equals_pprof([FIXTURES / "heap_1.pb.gz", FIXTURES / "heap_2.pb.gz",
                             FIXTURES / "heap_other.pb.gz"])


def test_fixtures_merged_samples_equal_pprof_raw() -> None:
    files = [FIXTURES / "heap_1.pb.gz", FIXTURES / "heap_2.pb.gz", FIXTURES / "heap_other.pb.gz"]
    assert merged_samples(files) == raw_samples(files)


@pytest.fixture(scope="module")
def random_programs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return [build_and_run(seed, tmp_path_factory.mktemp(f"mergeprog{seed}"))
            for seed in (5, 17, 23)]


def test_random_programs_merged_top_equals_pprof(random_programs: list[Path]) -> None:
    assert_top_equals_pprof(random_programs)
    assert merged_samples(random_programs) == raw_samples(random_programs)


def test_same_program_twice_sums_every_sample(random_programs: list[Path]) -> None:
    """A profile merged with itself: the same samples, every value doubled."""
    one = parse_profile(random_programs[0].read_bytes())
    twice = merge_profiles([one, parse_profile(random_programs[0].read_bytes())])
    assert twice.num_samples == merge_profiles([one]).num_samples
    assert sorted(map(tuple, twice.values.tolist())) == sorted(
        tuple(2 * v for v in row) for row in merge_profiles([one]).values.tolist())
    assert sorted(st.type for st in twice.sample_types) == HEAP_TYPES


# -- synthetic profiles -----------------------------------------------------------------------


def synthetic(path: Path, seed: int, *, shift: int, label_values: list[str]) -> Path:
    """A heap-like profile over a fixed call graph with its own ids, a mapping at
    ``shift`` (ASLR), inlined frames, string and numeric labels and zero samples."""
    rng = random.Random(seed)
    p = profile_pb2.Profile()
    strings = [""]

    def s(text: str) -> int:
        if text not in strings:
            strings.append(text)
        return strings.index(text)

    for t, u in (("alloc_objects", "count"), ("alloc_space", "bytes"),
                 ("inuse_objects", "count"), ("inuse_space", "bytes")):
        p.sample_type.add(type=s(t), unit=s(u))
    p.period_type.type, p.period_type.unit, p.period = s("space"), s("bytes"), 524288
    p.mapping.add(id=1, memory_start=0x400000 + shift, memory_limit=0x900000 + shift,
                  filename=s("/bin/app"), has_functions=True)
    names = [f"main.f{i}" for i in range(12)] + ["runtime.mallocgc", "main.(*T).inl"]
    id_base = 100 * (seed + 1)  # ids differ between files, contents do not
    order = list(range(len(names)))
    rng.shuffle(order)
    for i in order:
        p.function.add(id=id_base + i, name=s(names[i]), system_name=s(names[i]),
                       filename=s(f"/src/app/f{i % 3}.go"), start_line=10 * i)
    for i in order:
        loc = p.location.add(id=id_base + i, mapping_id=1, address=0x401000 + shift + 16 * i)
        if i == 5:  # an inlined frame, innermost first
            loc.line.add(function_id=id_base + 13, line=7)
        loc.line.add(function_id=id_base + i, line=100 + i)
    stack_rng = random.Random(99)  # the same stacks in every file
    for n in range(60):
        depth = stack_rng.randint(1, 8)
        stack = [stack_rng.randrange(12) for _ in range(depth)]
        sample = p.sample.add(location_id=[id_base + i for i in stack])
        count = 0 if n % 11 == 0 else rng.randint(1, 9)
        sample.value.extend([count, count * 512, count // 2, (count // 2) * 512])
        sample.label.add(key=s("kind"), str=s(label_values[n % len(label_values)]))
        sample.label.add(key=s("bytes"), num=512, num_unit=s("bytes"))
    p.string_table.extend(strings)
    path.write_bytes(gzip.compress(p.SerializeToString()))
    return path


def test_synthetic_profiles_with_labels_and_aslr_merge_like_pprof(tmp_path: Path) -> None:
    files = [synthetic(tmp_path / "a.pb.gz", 1, shift=0, label_values=["x"]),
             synthetic(tmp_path / "b.pb.gz", 2, shift=0x7000, label_values=["x", "y"]),
             synthetic(tmp_path / "c.pb.gz", 3, shift=0x20000, label_values=["y", "z", "x"])]
    assert_top_equals_pprof(files)
    assert merged_samples(files) == raw_samples(files)
    merged = merge_profiles([parse_profile(f.read_bytes()) for f in files])
    assert merged.num_locations == 14  # each file has the same 14, under other ids and shifts
    assert len(merged.function_names) == 14
    assert not (merged.values == 0).all(axis=1).any()  # zero samples dropped


def test_labels_keep_samples_apart(tmp_path: Path) -> None:
    """Same stacks, different label values: pprof keeps them as separate samples."""
    same = [synthetic(tmp_path / f"s{i}.pb.gz", 1, shift=0, label_values=["x"])
            for i in range(2)]
    other = synthetic(tmp_path / "o.pb.gz", 1, shift=0, label_values=["q"])
    together = merged_samples(same)
    apart = merged_samples([same[0], other])
    assert len(apart) == 2 * len(together) == len(raw_samples([same[0], other]))
    merged = merge_profiles([parse_profile(f.read_bytes()) for f in (same[0], other)])
    kinds = {merged.strings[v] for k, v in zip(merged.label_keys.tolist(),
                                                merged.label_strs.tolist(), strict=True)
             if merged.strings[k] == "kind"}
    assert kinds == {"x", "q"}


def test_merging_heap_with_goroutine_is_refused() -> None:
    with pytest.raises(ProfileError, match="sample types differ"):
        merge_profiles([parse_profile((FIXTURES / "heap_1.pb.gz").read_bytes()),
                        parse_profile((FIXTURES / "goroutine.pb.gz").read_bytes())])


def test_hash_collisions_fall_back_to_exact_comparison(
        random_programs: list[Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """Lists are grouped by hash and then compared element by element: with every
    hash colliding, the merge must still equal pprof's."""
    import numpy as np

    from bot.pprof import merge as merge_module

    monkeypatch.setattr(merge_module, "_list_hashes",
                        lambda offsets, items: np.zeros(offsets.size - 1, dtype=np.uint64))
    assert merged_samples(random_programs) == raw_samples(random_programs)
    assert_top_equals_pprof(random_programs[:2])
