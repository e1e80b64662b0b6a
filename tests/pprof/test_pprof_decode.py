"""Decoding: real profiles parse, every kind of bad input gets one clear ProfileError."""

from __future__ import annotations

import gzip
import time
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.errors import HeapbotError, ProfileError, UsageError
from bot.pprof import Limits, merge_profiles, parse_profile, profile_pb2, sample_type_index
from bot.pprof.limits import MiB

FIXTURES = Path(__file__).parents[1] / "fixtures"
REAL = sorted(p.name for p in FIXTURES.glob("*.pb.gz"))


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def test_upb_backend_is_used() -> None:
    from google.protobuf.internal import api_implementation

    assert api_implementation.Type() == "upb"


@pytest.mark.parametrize("name", REAL)
def test_real_profiles_parse_gzip_and_raw_alike(name: str) -> None:
    gz = fixture(name)
    a = parse_profile(gz)
    b = parse_profile(gzip.decompress(gz))
    assert a.num_samples == b.num_samples > 0
    assert (a.values == b.values).all()
    assert a.sample_types and a.sample_types == b.sample_types
    # upb's own view of the same bytes agrees with the vectorized decoder
    ref = profile_pb2.Profile.FromString(gzip.decompress(gz))
    assert a.num_samples == len(ref.sample)
    assert [list(s.value) for s in ref.sample] == a.values.tolist()
    ids = a.location_ids[a.sample_locations].tolist()
    assert ids == [lid for s in ref.sample for lid in s.location_id]
    assert a.main_build_id == ref.string_table[ref.mapping[0].build_id]


def test_heap_profile_model() -> None:
    p = parse_profile(fixture("heap_1.pb.gz"))
    assert [s.type for s in p.sample_types] == ["alloc_objects", "alloc_space",
                                                "inuse_objects", "inuse_space"]
    assert p.sample_types[3].unit == "bytes"
    assert sample_type_index(p, None) == 3  # no default_sample_type: the last one
    assert sample_type_index(p, "alloc_space") == 1
    with pytest.raises(UsageError) as info:
        sample_type_index(p, "inuse_bytes")
    assert "`inuse_space`" in info.value.user_message()
    # Go heap samples carry the object size as a numeric "bytes" label
    p.decode_labels()
    assert "bytes" in {p.strings[k] for k in p.label_keys.tolist()}
    allocs = parse_profile(fixture("allocs.pb.gz"))
    assert allocs.default_sample_type == "alloc_space"
    assert sample_type_index(allocs, None) == 1


def _minimal(**overrides: object) -> profile_pb2.Profile:
    """A small valid profile built field by field (ids 1.., strings indexed)."""
    p = profile_pb2.Profile()
    p.string_table.extend(["", "inuse_space", "bytes", "main.f", "f.go", "/bin/app", "id1"])
    p.sample_type.add(type=1, unit=2)
    p.mapping.add(id=1, filename=5, build_id=6)
    p.function.add(id=1, name=3, filename=4)
    loc = p.location.add(id=1, mapping_id=1, address=0x1000)
    loc.line.add(function_id=1, line=10)
    p.sample.add(location_id=[1], value=[42])
    for key, value in overrides.items():
        value(p) if callable(value) else setattr(p, key, value)
    return p


def test_minimal_profile_parses() -> None:
    p = parse_profile(_minimal().SerializeToString())
    assert p.function_names == ["main.f"] and p.values.tolist() == [[42]]
    assert p.main_build_id == "id1"


def _set_line_function(fid: int):
    return lambda p: setattr(p.location[0].line[0], "function_id", fid)


BROKEN = {
    "string index out of range": lambda p: setattr(p.function[0], "name", 99),
    "sample type string out of range": lambda p: setattr(p.sample_type[0], "unit", 77),
    "location to missing function": _set_line_function(5),
    "sample to missing location": lambda p: p.sample.add(location_id=[9], value=[1]),
    "location to missing mapping": lambda p: setattr(p.location[0], "mapping_id", 4),
    "duplicate location id": lambda p: p.location.add(id=1),
    "reserved id 0": lambda p: p.function.add(id=0, name=3),
    "wrong number of values": lambda p: p.sample.add(location_id=[1], value=[1, 2]),
}


@pytest.mark.parametrize("what", list(BROKEN))
def test_broken_references_are_refused(what: str) -> None:
    p = _minimal()
    BROKEN[what](p)
    with pytest.raises(ProfileError) as info:
        parse_profile(p.SerializeToString())
    assert "corrupt" in info.value.user_message() or "string table" in info.value.message


@pytest.mark.parametrize("data,phrase", [
    (b"", "empty"),
    (b"<!DOCTYPE html><html><body>Login</body></html>", "HTML page"),
    (b'{"error": "unauthorized"}', "JSON"),
    (b"heap profile: 1: 2 [3: 4] @ heap/1048576\n", "text form"),
    (b"goroutine profile: total 4\n1 @ 0x1\n", "`heapbot goroutines --profile FILE`"),
    # the leak profile's text (/debug/pprof/goroutineleak?debug=1, Go ≥ 1.26): was "not a
    # pprof profile"
    (b"goroutineleak profile: total 2\n2 @ 0x1\n", "goroutineleak dump (?debug=1)"),
    (b"goroutine 1 [running]:\nmain.main()\n\t/x/main.go:10 +0x1d\n",
     "goroutine dump (?debug=2)"),
    (b"\x1f\x8b\x08\x00garbage-not-deflate", "not valid gzip"),
    (b"hello, world, not a profile at all", "not a pprof profile"),
])
def test_wrong_inputs_have_one_clear_message(data: bytes, phrase: str) -> None:
    with pytest.raises(ProfileError) as info:
        parse_profile(data)
    msg = info.value.user_message()
    assert phrase in msg and "Traceback" not in msg and "{" not in msg[:1]


def test_truncated_gzip() -> None:
    data = fixture("heap_1.pb.gz")
    with pytest.raises(ProfileError, match="truncated"):
        parse_profile(data[: len(data) // 2])


def test_empty_profiles_are_refused() -> None:
    with pytest.raises(ProfileError, match="no sample types"):
        parse_profile(_minimal(sample_type=lambda p: p.ClearField("sample_type"),
                               sample=lambda p: p.ClearField("sample")).SerializeToString())
    with pytest.raises(ProfileError, match="no samples"):
        parse_profile(_minimal(sample=lambda p: p.ClearField("sample")).SerializeToString())


def test_gzip_bomb_is_refused_without_inflating_it_all() -> None:
    # 2 GiB of zeros compress to about 2 MiB; inflating it all would take seconds and memory.
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = b"\0" * (16 * MiB)
    bomb = b"".join(comp.compress(chunk) for _ in range(128)) + comp.flush()
    assert len(bomb) < 8 * MiB
    start = time.perf_counter()
    with pytest.raises(ProfileError, match="gzip bomb"):
        parse_profile(bomb, Limits(max_decompressed=32 * MiB))
    assert time.perf_counter() - start < 5
    with pytest.raises(ProfileError, match="more than"):
        parse_profile(bomb, Limits(max_compressed=1 * MiB))


def test_raw_profile_over_the_limit() -> None:
    raw = gzip.decompress(fixture("heap_1.pb.gz"))
    with pytest.raises(ProfileError):
        parse_profile(raw, Limits(max_decompressed=len(raw) - 1))
    assert parse_profile(raw, Limits(max_decompressed=len(raw))).num_samples > 0


def test_multi_member_gzip_is_one_stream() -> None:
    raw = gzip.decompress(fixture("heap_1.pb.gz"))
    half = len(raw) // 2
    two = gzip.compress(raw[:half]) + gzip.compress(raw[half:])
    assert parse_profile(two).num_samples == parse_profile(raw).num_samples


def test_merge_sums_identical_stacks_and_dedupes_by_content() -> None:
    a = parse_profile(fixture("heap_1.pb.gz"))
    once = merge_profiles([a])
    twice = merge_profiles([a, a])
    assert 0 < once.num_samples <= a.num_samples
    assert not (~once.values.any(axis=1)).any()  # all-zero samples dropped
    assert twice.num_samples == once.num_samples
    assert (twice.values == 2 * once.values).all()
    assert (once.values.sum(axis=0) == a.values.sum(axis=0)).all()
    assert len(twice.function_names) == len(set(zip(a.function_names, a.function_filenames,
                                                    strict=True)))
    with pytest.raises(ProfileError, match="sample types differ"):
        merge_profiles([a, parse_profile(fixture("goroutine.pb.gz"))])


def _must_be_profile_or_profile_error(data: bytes) -> None:
    """Parse, and when that works, every engine entry point works too."""
    from bot.analysis.summarize import summarize_heap
    from bot.analysis.top import top

    try:
        profile = parse_profile(data, Limits(max_compressed=1 * MiB, max_decompressed=8 * MiB))
        top(profile)
        summarize_heap(profile, k=5)
        merge_profiles([profile, profile])
    except ProfileError:
        pass
    except HeapbotError as exc:  # pragma: no cover - would be a contract violation
        raise AssertionError(f"unexpected {type(exc).__name__}") from exc


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2048))
def test_any_bytes_give_a_profile_or_a_profile_error(data: bytes) -> None:
    _must_be_profile_or_profile_error(data)


RAW_FIXTURES = {name: gzip.decompress(fixture(name)) for name in REAL}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(sorted(RAW_FIXTURES)), data=st.data())
def test_mutated_real_profiles_never_crash(name: str, data: st.DataObject) -> None:
    raw = bytearray(RAW_FIXTURES[name])
    for _ in range(data.draw(st.integers(1, 8))):
        kind = data.draw(st.sampled_from(["flip", "cut", "insert", "delete"]))
        pos = data.draw(st.integers(0, max(len(raw) - 1, 0)))
        if kind == "flip" and raw:
            raw[pos] ^= data.draw(st.integers(1, 255))
        elif kind == "cut":
            del raw[pos:]
        elif kind == "insert":
            raw[pos:pos] = data.draw(st.binary(min_size=1, max_size=16))
        elif raw:
            del raw[pos:pos + data.draw(st.integers(1, 64))]
    _must_be_profile_or_profile_error(bytes(raw))
    if data.draw(st.booleans()):
        _must_be_profile_or_profile_error(gzip.compress(bytes(raw)))
