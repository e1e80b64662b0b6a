"""The vectorized wire decoder against upb on the encodings Go uses and the legal ones it does not.

Profiles here are written field by field with the independent encoder of
tests/reliability (not the engine's generated code), then parsed twice: by
``parse_profile`` and by upb into full ``profile_pb2.Profile`` messages. Every
sample's location ids, values and labels must agree. Small chunk and block sizes
force the chunked decoders across region and message boundaries, as a 262k-stack
profile does.
"""

from __future__ import annotations

import random

import pytest

from bot.errors import ProfileError
from bot.pprof import parse_profile, profile_pb2, wire
from tests.reliability.test_reliability_profiles import field_bytes, field_varint, packed, varint


def _unpacked(number: int, values: list[int]) -> bytes:
    return b"".join(field_varint(number, v) for v in values)


def _sample(locs: list[int], values: list[int], *, style: str,
            labels: list[bytes] = ()) -> bytes:
    """One Sample message; ``style`` picks how the repeated fields are written."""
    if style == "go":  # Go: lists of more than 2 packed, shorter ones unpacked
        def enc(number: int, xs: list[int]) -> bytes:
            return packed(number, xs) if len(xs) > 2 else _unpacked(number, xs)
        body = enc(2, values) + enc(1, locs)
    elif style == "unpacked":
        body = _unpacked(1, locs) + _unpacked(2, values)
    elif style == "split":  # legal: one list as packed and unpacked pieces, in order
        half = len(locs) // 2
        body = (packed(2, values) + packed(1, locs[:half]) + _unpacked(1, locs[half:-1])
                + packed(1, locs[-1:]))
    elif style == "reordered":  # labels first, then locations, then values
        body = b"".join(field_bytes(3, lab) for lab in labels) + packed(1, locs) + packed(2, values)
        return field_bytes(2, body)
    else:
        raise AssertionError(style)
    return field_bytes(2, body + b"".join(field_bytes(3, lab) for lab in labels))


def _profile(seed: int, n: int, loc_ids: list[int], styles: list[str]) -> bytes:
    """A heap-like profile: 4 values, stacks of 0-40 frames, Go-style "bytes" labels;
    locations and functions are written just before the first sample using them,
    as Go's runtime does."""
    rng = random.Random(seed)
    strings = ["", "alloc_objects", "count", "alloc_space", "bytes", "inuse_objects",
               "inuse_space", "main.f", "main.go", "tier", "gold"]
    out = bytearray()
    for t, u in ((1, 2), (3, 4), (5, 2), (6, 4)):
        out += field_bytes(1, field_varint(1, t) + field_varint(2, u))
    written: set[int] = set()
    for i in range(n):
        depth = rng.choice([0, 1, 2, 3, rng.randrange(4, 41)])
        locs = [rng.choice(loc_ids) for _ in range(depth)]
        for lid in locs:
            if lid not in written:
                written.add(lid)
                out += field_bytes(5, field_varint(1, lid) + field_varint(2, 7)
                                   + field_varint(4, 8))
                out += field_bytes(4, field_varint(1, lid) + field_varint(3, 0x1000 + lid)
                                   + field_bytes(4, field_varint(1, lid)
                                                 + field_varint(2, rng.randrange(1, 5000))))
        values = [rng.choice([0, 1, 127, 128, 300, 16384, (1 << 62) + 5, -1, -(1 << 40)])
                  for _ in range(4)]
        labels = [field_varint(1, 4) + field_varint(3, rng.randrange(1, 1 << 20))]
        if i % 7 == 0:
            labels.append(field_varint(1, 9) + field_varint(2, 10))
        out += _sample(locs, values, style=styles[i % len(styles)], labels=labels)
    out += field_varint(9, 1_700_000_000_000_000_000)
    for text in strings:
        out += field_bytes(6, text.encode())
    return bytes(out)


def _agree_with_upb(data: bytes) -> None:
    ours = parse_profile(data)
    ref = profile_pb2.Profile.FromString(data)
    assert ours.num_samples == len(ref.sample)
    assert ours.values.tolist() == [list(s.value) for s in ref.sample]
    offsets = ours.sample_offsets.tolist()
    ids = ours.location_ids[ours.sample_locations].tolist()
    assert [ids[offsets[i]:offsets[i + 1]] for i in range(ours.num_samples)] == \
        [list(s.location_id) for s in ref.sample]
    ours.decode_labels()
    got = sorted(zip(ours.label_samples.tolist(), ours.label_keys.tolist(),
                     ours.label_strs.tolist(), ours.label_nums.tolist(), strict=True))
    want = sorted((i, lab.key, lab.str, lab.num) for i, s in enumerate(ref.sample)
                  for lab in s.label)
    assert got == want


LOC_IDS = {
    "small ids (one-byte varints)": list(range(1, 100)),
    "ids past 127 (two and three bytes)": [1, 127, 128, 300, 16383, 16384, 70000],
    "sparse ids (no dense table)": [1, 1 << 33, (1 << 63) + 9, 5_000_000_000],
}
STYLES = {
    "go": ["go"],
    "go mixed with unpacked, split and reordered": ["go", "unpacked", "go", "split", "reordered"],
}


@pytest.mark.parametrize("styles", list(STYLES), ids=list(STYLES))
@pytest.mark.parametrize("ids", list(LOC_IDS), ids=list(LOC_IDS))
@pytest.mark.parametrize("chunk", [1 << 19, 64, 7])
def test_every_encoding_decodes_like_upb(ids: str, styles: str, chunk: int,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wire, "_CHUNK_BYTES", chunk)
    monkeypatch.setattr(wire, "_SCALAR_BLOCK", chunk)  # labels, a block of messages at a time
    _agree_with_upb(_profile(len(ids) + chunk, 400, LOC_IDS[ids], STYLES[styles]))


def test_ten_byte_varints_are_exact() -> None:
    extremes = [-1, -(1 << 63), (1 << 63) - 1, 1 << 62, -300]
    data = _profile(1, 3, [1, 2, 3], ["go"])
    extra = _sample([1, 2, 3], extremes[:4], style="go") + _sample([3], extremes[1:], style="go")
    data = data.replace(field_varint(9, 1_700_000_000_000_000_000), extra, 1)
    _agree_with_upb(data)
    p = parse_profile(data)
    assert p.values[-2].tolist() == extremes[:4] and p.values[-1].tolist() == extremes[1:]


@pytest.mark.parametrize("bad,phrase", [
    (varint(1 << 3 | 2) + varint(3) + bytes([0x80, 0x80, 0x80]), "truncated varint"),
    (varint(1 << 3 | 2) + varint(11) + bytes([0xFF] * 10 + [0x01]), "longer than 10 bytes"),
    (varint(1 << 3 | 2) + bytes([0xFF] * 9 + [0x01]), "impossible length"),
], ids=["truncated", "eleven bytes", "length near 2**64"])
def test_broken_packed_fields_are_one_clear_error(bad: bytes, phrase: str) -> None:
    data = _profile(2, 50, [1, 2, 3], ["go"])
    data += field_bytes(2, packed(2, [1, 2, 3, 4]) + bad)
    with pytest.raises(ProfileError) as info:
        parse_profile(data)
    assert phrase in info.value.message, info.value.message


@pytest.mark.parametrize("nlocs,width", [(300, "int16"), (40_000, "int32")])
def test_location_indexes_take_the_narrowest_width_that_holds_them(nlocs: int,
                                                                   width: str) -> None:
    p = profile_pb2.Profile()
    p.string_table.extend(["", "inuse_space", "bytes", "main.f"])
    p.sample_type.add(type=1, unit=2)
    p.function.add(id=1, name=3)
    for lid in range(1, nlocs + 1):
        p.location.add(id=lid).line.add(function_id=1, line=lid)
    rng = random.Random(nlocs)
    for _ in range(200):
        p.sample.add(location_id=[rng.randrange(1, nlocs + 1) for _ in range(rng.randrange(1, 30))]
                     + [nlocs], value=[rng.randrange(1, 1 << 20)])
    data = p.SerializeToString()
    ours = parse_profile(data)
    assert str(ours.sample_locations.dtype) == width
    _agree_with_upb(data)
    assert int(ours.sample_locations.max()) == nlocs - 1
