"""``bot.pprof.encode.encode_profile``: heapbot's profiles written back as profile.proto.

What a user relies on: the one merged .pb.gz heapbot hands out opens in
``go tool pprof`` and its ``-top`` equals heapbot's table. So the tests check
round trips through heapbot's own decoder (every fixture, every sample type,
merged profiles, headers and labels), pprof itself on the encoded merge, and a
hypothesis property that decode→encode→decode is stable on fuzzed profiles.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.analysis.top import TopOptions, top
from bot.errors import HeapbotError
from bot.pprof import Profile, SampleType, merge_profiles, parse_profile
from bot.pprof.encode import encode_profile
from tests.golden.pprof_tool import FIXTURES, HEAP_TYPES, go_or_none, parse_top, run_pprof
from tests.reliability.test_fuzz_decoder import LIMITS, built, mutated

PROFILE_FIXTURES = sorted(FIXTURES.glob("*.pb.gz"))
HEAP_FIXTURES = [FIXTURES / n for n in ("heap_1.pb.gz", "heap_2.pb.gz", "heap_other.pb.gz")]
EXACT = ["-unit=B", "-nodefraction=0", "-edgefraction=0"]
needs_go = pytest.mark.skipif(go_or_none() is None, reason="no Go toolchain")


def load(path: Path) -> Profile:
    return parse_profile(path.read_bytes())


def tables(profile: Profile) -> dict[tuple[str, str], dict]:
    """Every top table a user can ask for: each sample type, by flat and by cum."""
    return {(kind.type, sort): top(profile, TopOptions(sample_type=kind.type, sort=sort)).to_json()
            for kind in profile.sample_types for sort in ("flat", "cum")}


def headers(profile: Profile) -> dict:
    """Everything but the tables: what must survive the round trip as it is."""
    return {
        "sample_types": profile.sample_types, "default": profile.default_sample_type,
        "time": profile.time_nanos, "duration": profile.duration_nanos,
        "period_type": profile.period_type, "period": profile.period,
        "comments": profile.comments, "drop": profile.drop_frames, "keep": profile.keep_frames,
        "doc_url": profile.doc_url, "main_build_id": profile.main_build_id,
        "mappings": [(m.memory_start, m.memory_limit, m.file_offset, m.filename, m.build_id,
                      m.has_functions, m.has_filenames, m.has_line_numbers, m.has_inline_frames)
                     for m in profile.mappings],
    }


def assert_same_profile(original: Profile, copy: Profile) -> None:
    assert headers(copy) == headers(original)
    assert tables(copy) == tables(original)
    assert copy.sample_label_keys() == original.sample_label_keys()
    assert copy.values.tolist() == original.values.tolist()


@pytest.mark.parametrize("path", PROFILE_FIXTURES, ids=lambda p: p.name)
def test_every_fixture_round_trips(path: Path) -> None:
    original = load(path)
    encoded = encode_profile(original)
    assert encoded[:2] == b"\x1f\x8b"
    assert_same_profile(original, parse_profile(encoded))


def test_raw_protobuf_without_gzip_is_the_same_profile() -> None:
    original = load(FIXTURES / "heap_2.pb.gz")
    raw = encode_profile(original, gzip=False)
    assert raw[:2] != b"\x1f\x8b"
    assert gzip.decompress(encode_profile(original)) == raw
    assert_same_profile(original, parse_profile(raw))


def test_merged_profiles_round_trip() -> None:
    merged = merge_profiles([load(p) for p in HEAP_FIXTURES])
    copy = parse_profile(encode_profile(merged))
    assert_same_profile(merged, copy)
    assert copy.num_samples == merged.num_samples
    assert copy.main_build_id and copy.main_build_id == load(HEAP_FIXTURES[0]).main_build_id
    # A merge of the copy with itself doubles every value: the copy is a real profile.
    doubled = merge_profiles([copy, copy])
    assert doubled.totals() == {k: 2 * v for k, v in merged.totals().items()}


def test_headers_comments_and_string_labels_survive() -> None:
    profile = load(FIXTURES / "heap_1.pb.gz")
    profile.comments = ["captured by heapbot", "snapshot 20261121-224512-a3f9"]
    profile.doc_url = "https://pkg.go.dev/runtime/pprof"
    profile.drop_frames = r"^runtime\.mallocgc$"
    profile.time_nanos, profile.duration_nanos = 1_763_765_112_000_000_000, 30_000_000_000
    profile.period_type, profile.period = SampleType("space", "bytes"), 524288
    profile.decode_labels()
    key, value = len(profile.strings), len(profile.strings) + 1
    profile.strings = [*profile.strings, "instance", "10.0.0.7:6060"]
    profile.label_samples = np.append(profile.label_samples, [0, 1])
    profile.label_keys = np.append(profile.label_keys, [key, key]).astype(np.int32)
    profile.label_strs = np.append(profile.label_strs, [value, value]).astype(np.int32)
    profile.label_nums = np.append(profile.label_nums, [0, 0])
    profile.label_units = np.append(profile.label_units, [0, 0]).astype(np.int32)
    copy = parse_profile(encode_profile(profile))
    assert_same_profile(profile, copy)
    assert ("instance", "10.0.0.7:6060", 0, "") in copy.sample_label_keys()[1]


def test_encoding_is_deterministic_and_idempotent() -> None:
    merged = merge_profiles([load(p) for p in HEAP_FIXTURES])
    once = encode_profile(merged)
    assert encode_profile(merged) == once
    assert encode_profile(parse_profile(once)) == once


@needs_go
@pytest.mark.parametrize("sample_type", [None, *HEAP_TYPES])
def test_pprof_top_of_the_encoded_merge_equals_heapbots(sample_type: str | None,
                                                        tmp_path: Path) -> None:
    merged = merge_profiles([load(p) for p in HEAP_FIXTURES])
    path = tmp_path / "service-merged-heap.pb.gz"
    path.write_bytes(encode_profile(merged))
    index = [f"-sample_index={sample_type}"] if sample_type else []
    expected = parse_top(run_pprof(["-top", *EXACT, *index, str(path)]))
    report = top(merged, TopOptions(sample_type=sample_type))
    assert report.rows, "an empty table would prove nothing"
    assert report.total == expected.total
    assert [(r.function, r.flat, r.cum) for r in report.rows] == expected.rows
    # and pprof reads the encoded merge as it reads the three original files
    originals = parse_top(run_pprof(["-top", *EXACT, *index, *map(str, HEAP_FIXTURES)]))
    assert (originals.total, originals.rows) == (expected.total, expected.rows)


@needs_go
def test_pprof_reads_the_encoded_goroutine_and_cpu_profiles(tmp_path: Path) -> None:
    for name, unit in (("goroutine.pb.gz", "-unit=B"), ("cpu.pb.gz", "-unit=ns")):
        original = load(FIXTURES / name)
        path = tmp_path / name
        path.write_bytes(encode_profile(original))
        expected = parse_top(run_pprof(["-top", unit, *EXACT[1:], str(path)]))
        report = top(original, TopOptions())
        assert report.total == expected.total
        assert [(r.function, r.flat, r.cum) for r in report.rows] == expected.rows


def stable(data: bytes) -> bool:
    """decode→encode→decode gives the same profile, and encoding it again the same bytes."""
    try:
        first = parse_profile(data, LIMITS)
        # labels are decoded when first used (a merge, an encode): a malformed one is
        # refused there, with a message; such a profile has no copy to compare
        first.decode_labels()
    except HeapbotError:
        return False
    encoded = encode_profile(first)
    second = parse_profile(encoded)
    assert headers(second) == headers(first)
    assert second.sample_label_keys() == first.sample_label_keys()
    assert second.values.tolist() == first.values.tolist()
    try:
        expected = tables(first)
    except HeapbotError as err:  # what the engine refuses, it refuses on the copy too
        with pytest.raises(HeapbotError):
            tables(second)
        assert err.user_message()
    else:
        assert tables(second) == expected
    assert encode_profile(second) == encoded
    return True


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_fuzzed_real_profiles_are_stable(data: bytes) -> None:
    stable(data)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(built())
def test_fuzzed_built_profiles_are_stable(data: bytes) -> None:
    stable(data)


def test_the_property_is_not_vacuous() -> None:
    """The unmutated seeds parse, so stable() really compares on them."""
    assert all(stable(p.read_bytes()) for p in PROFILE_FIXTURES)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(-(1 << 63), (1 << 63) - 1), max_size=40))
def test_the_vectorized_varints_are_protobufs(values: list[int]) -> None:
    """The numpy encoder writes the bytes upb writes for a packed int64 field."""
    from bot.pprof import profile_pb2
    from bot.pprof.encode import _varints

    data, lengths = _varints(np.array(values, dtype=np.int64))
    expected = profile_pb2.Sample(value=values).SerializeToString()  # tag, length, varints
    assert int(lengths.sum()) == data.size
    assert expected.endswith(data.tobytes())
    assert len(expected) - data.size == (0 if not values else 2 if data.size < 128 else 3)


def test_samples_are_the_bytes_upb_would_write() -> None:
    """Every Sample message (locations, values, labels) as protobuf's own encoder writes it."""
    from bot.pprof import profile_pb2

    merged = merge_profiles([load(p) for p in HEAP_FIXTURES])
    ours = profile_pb2.Profile.FromString(encode_profile(merged, gzip=False))
    strings = list(ours.string_table)
    labels = merged.sample_label_keys()
    offsets = merged.sample_offsets.tolist()
    assert len(ours.sample) == merged.num_samples
    for index, sample in enumerate(ours.sample):
        expected = profile_pb2.Sample(
            location_id=[i + 1 for i in merged.sample_locations[offsets[index]:
                                                                offsets[index + 1]].tolist()],
            value=merged.values[index].tolist(),
            label=[profile_pb2.Label(key=strings.index(k), str=strings.index(s), num=n,
                                     num_unit=strings.index(u)) for k, s, n, u in labels[index]])
        assert sample.SerializeToString() == expected.SerializeToString()
