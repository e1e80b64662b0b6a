"""``bot.pprof.parse_profile`` under hypothesis: a Profile or a ProfileError, nothing else.

Inputs are mutations of real profiles (the demo's heap, allocs, goroutine and
CPU fixtures, gzip and raw), profiles built field by field with the independent
encoder from tests/reliability/test_reliability_profiles.py, and plain random bytes. Each
example is bounded (small inputs, tight Limits) so the run stays in seconds.
bench/fuzz/fuzz_decoder.py runs the same property under atheris for minutes.
"""

from __future__ import annotations

import gzip
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.errors import HeapbotError
from bot.pprof import Limits, Profile, parse_profile
from tests.reliability.test_reliability_profiles import (
    Frame,
    encode_profile,
    field_bytes,
    field_varint,
)

FIXTURES = Path(__file__).parents[1] / "fixtures"
SEEDS = [(FIXTURES / n).read_bytes() for n in
         ("heap_1.pb.gz", "allocs.pb.gz", "goroutine.pb.gz", "cpu.pb.gz")]
RAW_SEEDS = [gzip.decompress(s) for s in SEEDS]
LIMITS = Limits(max_compressed=1 << 20, max_decompressed=8 << 20)


def check(data: bytes) -> None:
    """The property: a usable Profile, or heapbot's own clear error."""
    try:
        profile = parse_profile(data, LIMITS)
    except HeapbotError as err:
        message = err.user_message()
        assert message and "Traceback" not in message and len(message) < 2000
        return
    assert isinstance(profile, Profile)
    assert profile.sample_types


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A real profile (raw protobuf, sometimes re-gzipped) with a few bytes changed."""
    data = bytearray(draw(st.sampled_from(RAW_SEEDS)))
    for _ in range(draw(st.integers(1, 8))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "delete"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[at] ^= draw(st.integers(1, 255))
        elif op == "cut":
            del data[at:]
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=12))
        elif data:
            del data[at:at + draw(st.integers(1, 32))]
    out = bytes(data)
    return gzip.compress(out, mtime=0) if draw(st.booleans()) else out


@st.composite
def built(draw: st.DrawFn) -> bytes:
    """Field-by-field profiles with ids, indexes and values drawn freely (many dangle)."""
    frames = {i: Frame(f"main.f{i}", line=draw(st.integers(0, 1 << 20)))
              for i in range(1, draw(st.integers(0, 6)) + 1)}
    ids = st.integers(0, 12)
    values = st.integers(-(1 << 63), (1 << 63) - 1)
    samples = draw(st.lists(st.tuples(st.lists(ids, max_size=5),
                                      st.lists(values, max_size=3)), max_size=20))
    types = draw(st.lists(st.tuples(st.sampled_from(["inuse_space", "alloc_objects", "samples",
                                                     "", "cpu"]),
                                    st.sampled_from(["bytes", "count", "nanoseconds", ""])),
                          max_size=4))
    names = draw(st.dictionaries(st.integers(1, 6), st.integers(-5, 64), max_size=3))
    extra = draw(st.lists(st.binary(max_size=16).map(lambda b: field_varint(1, 7) + b),
                          max_size=2))
    data = encode_profile(samples, frames, types, function_name_index=names,
                          extra_locations=extra)
    if draw(st.booleans()):  # a stray field of any number and wire type
        data += field_bytes(draw(st.integers(1, 40)), draw(st.binary(max_size=20)))
    return data


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_real_profiles(data: bytes) -> None:
    check(data)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(built())
def test_built_profiles_with_dangling_ids(data: bytes) -> None:
    check(data)


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.binary(max_size=512), st.binary(max_size=512).map(gzip.compress)))
def test_random_bytes(data: bytes) -> None:
    check(data)


def test_the_seeds_themselves_parse() -> None:
    """The property is not vacuous: the unmutated fixtures decode to profiles."""
    for seed in SEEDS:
        assert parse_profile(seed).sample_types
