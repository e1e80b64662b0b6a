"""Profile → profile.proto bytes: what lets heapbot hand out ONE merged .pb.gz.

A service's snapshot is one profile per instance; heapbot's tables are over
their merge. Writing the merge back in pprof's own format means the file a user
downloads opens in ``go tool pprof`` and its ``-top`` equals heapbot's table.

Ids are renumbered 1..n in table order (the columnar model keeps references as
positions, and merged profiles have no meaningful ids anyway), and the string
table is rebuilt with only the strings the profile uses, "" first as the format
requires. Everything else is written as it is: sample types, values, stacks
(leaf first), labels, mappings with build ids, comments, default sample type,
period, time and duration, drop/keep frames and doc url.
"""

from __future__ import annotations

import gzip as gzip_module

import numpy as np

from bot.pprof import profile_pb2
from bot.pprof.model import Profile, SampleType

# Go's pprof writes with gzip level 1 (compress/gzip.BestSpeed): profiles are
# written on demand, so speed matters more than the last few percent of size.
_GZIP_LEVEL = 1
_MAX_VARINT = 10


class _StringTable:
    """Interns strings: index 0 is always the empty string."""

    def __init__(self) -> None:
        self.strings: list[str] = [""]
        self._index: dict[str, int] = {"": 0}

    def __call__(self, text: str) -> int:
        found = self._index.get(text)
        if found is None:
            found = self._index[text] = len(self.strings)
            self.strings.append(text)
        return found


def _value_type(message: profile_pb2.ValueType, value: SampleType, intern: _StringTable) -> None:
    message.type = intern(value.type)
    message.unit = intern(value.unit)


def encode_profile(profile: Profile, *, gzip: bool = True) -> bytes:
    """Serialize ``profile`` as profile.proto, gzip-compressed unless ``gzip=False``.

    The small tables go through upb; the samples (hundreds of thousands in a
    big heap profile) are written by :func:`_sample_records` with numpy. Still
    CPU-bound: call it through ``asyncio.to_thread`` from async code.
    """
    profile.decode_labels()
    intern = _StringTable()
    head = profile_pb2.Profile()
    for sample_type in profile.sample_types:
        _value_type(head.sample_type.add(), sample_type, intern)
    samples = _sample_records(profile, intern)
    rest = _tables_and_header(profile, intern)
    # Serialized messages concatenate like a merge: fields 1, 2 (samples), then 3..15.
    raw = head.SerializeToString() + samples.tobytes() + rest.SerializeToString()
    if not gzip:
        return raw
    return gzip_module.compress(raw, compresslevel=_GZIP_LEVEL, mtime=0)


def _tables_and_header(profile: Profile, intern: _StringTable) -> profile_pb2.Profile:
    """Mappings, locations, functions, header fields and, last, the string table."""
    out = profile_pb2.Profile()
    for position, mapping in enumerate(profile.mappings):
        out.mapping.add(
            id=position + 1, memory_start=mapping.memory_start,
            memory_limit=mapping.memory_limit, file_offset=mapping.file_offset,
            filename=intern(mapping.filename), build_id=intern(mapping.build_id),
            has_functions=mapping.has_functions, has_filenames=mapping.has_filenames,
            has_line_numbers=mapping.has_line_numbers,
            has_inline_frames=mapping.has_inline_frames)

    line_offsets = profile.location_line_offsets.tolist()
    line_functions = profile.line_functions.tolist()
    line_numbers = profile.line_numbers.tolist()
    line_columns = profile.line_columns.tolist()
    for position, (mapping, address, folded) in enumerate(zip(
            profile.location_mappings.tolist(), profile.location_addresses.tolist(),
            profile.location_folded.tolist(), strict=True)):
        location = out.location.add(id=position + 1, mapping_id=mapping + 1, address=address,
                                    is_folded=folded)
        for k in range(line_offsets[position], line_offsets[position + 1]):
            location.line.add(function_id=line_functions[k] + 1, line=line_numbers[k],
                              column=line_columns[k])

    for position, (name, system_name, filename, start_line) in enumerate(zip(
            profile.function_names, profile.function_system_names, profile.function_filenames,
            profile.function_start_lines.tolist(), strict=True)):
        out.function.add(id=position + 1, name=intern(name), system_name=intern(system_name),
                         filename=intern(filename), start_line=start_line)

    if profile.period_type is not None:
        _value_type(out.period_type, profile.period_type, intern)
    out.period = profile.period
    out.time_nanos = profile.time_nanos
    out.duration_nanos = profile.duration_nanos
    out.comment.extend(intern(comment) for comment in profile.comments)
    out.default_sample_type = intern(profile.default_sample_type)
    out.drop_frames = intern(profile.drop_frames)
    out.keep_frames = intern(profile.keep_frames)
    out.doc_url = intern(profile.doc_url)
    out.string_table.extend(intern.strings)
    return out


# ------------------------------------------------------------ samples, vectorized

_Piece = tuple[np.ndarray, np.ndarray]  # bytes of every row's segment, each row's length


def _varints(values: np.ndarray) -> _Piece:
    """Protobuf varints of many int64/uint64 values: the bytes, and each value's length."""
    u = values.astype(np.int64, copy=False).view(np.uint64) if values.dtype.kind == "i" \
        else values.astype(np.uint64, copy=False)
    lengths = np.ones(u.size, dtype=np.int64)
    widest = 1  # bytes of the longest varint: most values need one or two
    while widest < _MAX_VARINT:
        longer = (u >> np.uint64(7 * widest)) != 0
        if not longer.any():
            break
        lengths += longer
        widest += 1
    groups = np.empty((u.size, widest), dtype=np.uint8)
    for k in range(widest):
        groups[:, k] = ((u >> np.uint64(7 * k)) & np.uint64(0x7F)).astype(np.uint8)
    column = np.arange(widest)
    if widest > 1:
        groups[column < (lengths - 1)[:, None]] |= 0x80
    if int(lengths.min(initial=widest)) == widest:  # every value as wide: no holes to drop
        return groups.reshape(-1), lengths
    return groups[column < lengths[:, None]], lengths


def _tags(tag: int, present: np.ndarray) -> _Piece:
    """One tag byte for each row where ``present``."""
    return np.full(int(present.sum()), tag, dtype=np.uint8), present.astype(np.int64)


def _optional_varint(tag: int, values: np.ndarray) -> list[_Piece]:
    """A proto3 scalar field: tag and varint where the value is non-zero, nothing elsewhere."""
    present = values != 0
    data, lengths = _varints(values[present])
    row_lengths = np.zeros(values.size, dtype=np.int64)
    row_lengths[present] = lengths
    return [_tags(tag, present), (data, row_lengths)]


def _length_delimited(tag: int, payload: _Piece, present: np.ndarray | None = None,
                      ) -> list[_Piece]:
    """A length-delimited field per row: tag, varint length, payload (where ``present``)."""
    lengths = payload[1]
    if present is None:
        present = np.ones(lengths.size, dtype=bool)
    length_bytes, length_lengths = _varints(lengths[present])
    row_lengths = np.zeros(lengths.size, dtype=np.int64)
    row_lengths[present] = length_lengths
    return [_tags(tag, present), (length_bytes, row_lengths), payload]


def _interleave(rows: int, pieces: list[_Piece]) -> _Piece:
    """Row i of the result is piece 0's row i, then piece 1's row i, and so on."""
    row_lengths = np.zeros(rows, dtype=np.int64)
    for _, lengths in pieces:
        row_lengths += lengths
    row_ends = np.cumsum(row_lengths)
    out = np.empty(int(row_ends[-1]) if rows else 0, dtype=np.uint8)
    cursor = row_ends - row_lengths
    for data, lengths in pieces:
        segment_starts = np.cumsum(lengths) - lengths
        out[np.repeat(cursor - segment_starts, lengths) + np.arange(data.size)] = data
        cursor += lengths
    return out, row_lengths


def _segment_sums(per_item: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Sum of ``per_item`` over each CSR segment ``offsets[i]:offsets[i+1]``."""
    running = np.concatenate(([0], np.cumsum(per_item)))
    return running[offsets[1:]] - running[offsets[:-1]]


def _sample_records(profile: Profile, intern: _StringTable) -> np.ndarray:
    """Every Sample as field 2 of Profile: location ids (packed), values (packed), labels."""
    ns = profile.num_samples
    offsets = profile.sample_offsets.astype(np.int64)
    location_bytes, location_lengths = _varints(profile.sample_locations.astype(np.int64) + 1)
    locations = (location_bytes, _segment_sums(location_lengths, offsets))
    has_locations = offsets[1:] > offsets[:-1]
    value_bytes, value_lengths = _varints(profile.values.reshape(-1))
    values = (value_bytes, _segment_sums(value_lengths,
                                         np.arange(ns + 1) * len(profile.sample_types)))
    sample = _interleave(ns, [*_length_delimited(0x0A, locations, has_locations),
                              *_length_delimited(0x12, values),
                              _label_bytes(profile, intern)])
    return _interleave(ns, _length_delimited(0x12, sample))[0]


def _label_bytes(profile: Profile, intern: _StringTable) -> _Piece:
    """Each sample's Label fields (field 3), re-indexed into the new string table."""
    ns = profile.num_samples
    order = np.argsort(profile.label_samples, kind="stable")
    owners = profile.label_samples[order]
    if owners.size == 0:
        return np.zeros(0, dtype=np.uint8), np.zeros(ns, dtype=np.int64)
    remap = np.array([intern(text) for text in profile.strings], dtype=np.int64)
    label = _interleave(owners.size, [
        *_optional_varint(0x08, remap[profile.label_keys[order]]),
        *_optional_varint(0x10, remap[profile.label_strs[order]]),
        *_optional_varint(0x18, profile.label_nums[order].astype(np.int64)),
        *_optional_varint(0x20, remap[profile.label_units[order]]),
    ])
    data, lengths = _interleave(owners.size, _length_delimited(0x1A, label))
    return data, np.bincount(owners, weights=lengths, minlength=ns).astype(np.int64)
