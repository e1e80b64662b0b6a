"""Streaming merge (bot.pprof.fold.Merger) equals pprof's merge, one profile at a time.

The same inputs as tests/pprof/test_pprof_merge.py: the fixtures, random Go programs and
synthetic protos with labels, ASLR shifts, inlined frames and zero samples. Each
is folded one by one and compared with `go tool pprof` given every file at once.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bot.errors import ProfileError
from bot.pprof import Profile, merge_profiles, parse_profile
from bot.pprof.fold import Merger, fold_profiles
from tests.golden.pprof_tool import FIXTURES, go_or_none
from tests.pprof.test_pprof_merge import assert_tops_equal_pprof, raw_samples, synthetic

pytestmark = pytest.mark.skipif(go_or_none() is None, reason="no Go toolchain")
HEAPS = [FIXTURES / "heap_1.pb.gz", FIXTURES / "heap_2.pb.gz", FIXTURES / "heap_other.pb.gz"]


def folded(files: list[Path]) -> Profile:
    return fold_profiles(parse_profile(f.read_bytes()) for f in files)


def assert_folded_equals_pprof(files: list[Path]) -> None:
    merged = folded(files)
    assert_tops_equal_pprof(merged, files)
    assert sorted(tuple(int(v) for v in row) for row in merged.values) == raw_samples(files)


def canonical(profile: object) -> dict:
    """Samples as (function names of the stack, sorted labels) → values."""
    p = profile
    p.decode_labels()
    out: dict = {}
    labels = p.sample_label_keys()
    for s in range(p.num_samples):
        locs = p.sample_locations[p.sample_offsets[s]:p.sample_offsets[s + 1]].tolist()
        stack = tuple(tuple((p.function_names[p.line_functions[j]], int(p.line_numbers[j]))
                            for j in range(p.location_line_offsets[loc],
                                           p.location_line_offsets[loc + 1])) for loc in locs)
        key = (stack, tuple(sorted(map(str, labels[s]))))
        out[key] = tuple(int(v) for v in p.values[s])
    return out


def test_fixtures_fold_like_pprof() -> None:
    assert_folded_equals_pprof(HEAPS)


def test_synthetic_labels_aslr_and_zero_samples_fold_like_pprof(tmp_path: Path) -> None:
    files = [synthetic(tmp_path / "a.pb.gz", 1, shift=0, label_values=["x"]),
             synthetic(tmp_path / "b.pb.gz", 2, shift=0x7000, label_values=["x", "y"]),
             synthetic(tmp_path / "c.pb.gz", 3, shift=0x20000, label_values=["y", "z", "x"])]
    assert_folded_equals_pprof(files)
    merged = folded(files)
    assert merged.num_locations == 14 and len(merged.function_names) == 14
    assert not (merged.values == 0).all(axis=1).any()
    every = merge_profiles([parse_profile(f.read_bytes()) for f in files])
    assert canonical(merged) == canonical(every)


def test_forty_copies_fold_to_forty_times_the_values() -> None:
    data = HEAPS[1].read_bytes()
    merger = Merger()
    for _ in range(40):
        merger.add(parse_profile(data))
    merged, one = merger.result(), merge_profiles([parse_profile(data)])
    assert merger.count == 40
    assert merged.num_samples == one.num_samples
    assert np.array_equal(merged.values, 40 * one.values)
    assert canonical(merged).keys() == canonical(one).keys()


def test_hash_collisions_fall_back_to_an_exact_merge(monkeypatch: pytest.MonkeyPatch) -> None:
    """With every stack's first hash alike, the second hash shows it and the fold merges
    exactly instead (merge_profiles compares element by element)."""
    from bot.pprof import fold

    real = fold._stack_hashes

    def colliding(offsets: np.ndarray, items_a: np.ndarray, items_b: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
        first, second = real(offsets, items_a, items_b)
        return np.zeros_like(first), second

    monkeypatch.setattr(fold, "_stack_hashes", colliding)
    merger = Merger()
    for f in HEAPS:
        merger.add(parse_profile(f.read_bytes()))
    assert merger._fallback is not None  # the collision was seen
    assert_folded_equals_pprof(HEAPS)


def test_folding_heap_with_goroutine_is_refused() -> None:
    merger = Merger()
    merger.add(parse_profile(HEAPS[0].read_bytes()))
    with pytest.raises(ProfileError, match="sample types differ"):
        merger.add(parse_profile((FIXTURES / "goroutine.pb.gz").read_bytes()))


def test_sample_keys_are_the_same_in_every_process(tmp_path: Path) -> None:
    """Decode workers make the keys the fold looks up: they must not depend on the process
    (e.g. its string-hash seed), or one fleet's instances would never merge."""
    import pickle
    import subprocess
    import sys

    from bot.pprof.fold import sample_keys

    out = tmp_path / "keys.pickle"
    code = ("import pickle, sys; from bot.pprof import parse_profile; "
            "from bot.pprof.fold import sample_keys; "
            f"k = sample_keys(parse_profile(open({str(HEAPS[0])!r}, 'rb').read())); "
            f"pickle.dump(k, open({str(out)!r}, 'wb'))")
    root = Path(__file__).resolve().parents[2]
    for seed in ("1", "2"):
        subprocess.run([sys.executable, "-c", code], check=True, cwd=root,
                       env={"PYTHONHASHSEED": seed, "PATH": "/usr/bin:/bin"})
        theirs = pickle.loads(out.read_bytes())
        mine = sample_keys(parse_profile(HEAPS[0].read_bytes()))
        for name in ("keys", "check", "loc_a", "loc_b"):
            assert np.array_equal(getattr(theirs, name), getattr(mine, name)), (seed, name)


def test_folding_with_keys_made_elsewhere_equals_folding_alone() -> None:
    from bot.pprof.fold import sample_keys

    profiles = [parse_profile(f.read_bytes()) for f in HEAPS]
    given, alone = Merger(), Merger()
    for p in profiles:
        given.add(p, sample_keys(p))
        alone.add(p)
    assert canonical(given.result()) == canonical(alone.result())
    assert canonical(given.result()) == canonical(merge_profiles(profiles))
