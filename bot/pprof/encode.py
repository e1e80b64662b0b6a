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

from bot.pprof import profile_pb2
from bot.pprof.model import Profile, SampleType

# Go's pprof writes with gzip level 1 (compress/gzip.BestSpeed): profiles are
# written on demand, so speed matters more than the last few percent of size.
_GZIP_LEVEL = 1


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

    CPU-bound (a Python step per sample): call it through ``asyncio.to_thread``
    from async code.
    """
    profile.decode_labels()
    intern = _StringTable()
    out = profile_pb2.Profile()

    for sample_type in profile.sample_types:
        _value_type(out.sample_type.add(), sample_type, intern)

    for position, mapping in enumerate(profile.mappings):
        out.mapping.add(
            id=position + 1, memory_start=mapping.memory_start,
            memory_limit=mapping.memory_limit, file_offset=mapping.file_offset,
            filename=intern(mapping.filename), build_id=intern(mapping.build_id),
            has_functions=mapping.has_functions, has_filenames=mapping.has_filenames,
            has_line_numbers=mapping.has_line_numbers,
            has_inline_frames=mapping.has_inline_frames)

    for position, (name, system_name, filename, start_line) in enumerate(zip(
            profile.function_names, profile.function_system_names, profile.function_filenames,
            profile.function_start_lines.tolist(), strict=True)):
        out.function.add(id=position + 1, name=intern(name), system_name=intern(system_name),
                         filename=intern(filename), start_line=start_line)

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

    labels_of = _labels_by_sample(profile, intern)
    sample_offsets = profile.sample_offsets.tolist()
    location_ids = (profile.sample_locations.astype("int64") + 1).tolist()
    for index, values in enumerate(profile.values.tolist()):
        sample = out.sample.add(
            location_id=location_ids[sample_offsets[index]:sample_offsets[index + 1]],
            value=values)
        for key, text, number, unit in labels_of.get(index, ()):
            sample.label.add(key=key, str=text, num=number, num_unit=unit)

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

    raw = out.SerializeToString()
    if not gzip:
        return raw
    return gzip_module.compress(raw, compresslevel=_GZIP_LEVEL, mtime=0)


def _labels_by_sample(profile: Profile, intern: _StringTable,
                      ) -> dict[int, list[tuple[int, int, int, int]]]:
    """Each sample's labels as (key, str, num, num_unit) indexes of the new string table."""
    strings = profile.strings
    by_sample: dict[int, list[tuple[int, int, int, int]]] = {}
    for sample, key, text, number, unit in zip(
            profile.label_samples.tolist(), profile.label_keys.tolist(),
            profile.label_strs.tolist(), profile.label_nums.tolist(),
            profile.label_units.tolist(), strict=True):
        by_sample.setdefault(sample, []).append(
            (intern(strings[key]), intern(strings[text]), number, intern(strings[unit])))
    return by_sample
