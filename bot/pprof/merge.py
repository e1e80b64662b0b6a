"""pprof's merge: one profile from several (e.g. one per instance of a service).

Like google/pprof's profile.Merge: functions, mappings and locations are
deduplicated by content (never by id, ids differ between processes); samples
with the same stack and the same labels are summed; samples whose values are
all zero are dropped. Headers: the earliest non-zero time, summed durations,
the largest period, the first profile's default sample type and frame filters.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from bot.errors import ProfileError
from bot.pprof.model import Mapping, Profile

_FnKey = tuple[str, str, str, int]


def _compatible(profiles: Sequence[Profile]) -> None:
    first = [(s.type, s.unit) for s in profiles[0].sample_types]
    for p in profiles[1:]:
        other = [(s.type, s.unit) for s in p.sample_types]
        if other != first:
            raise ProfileError(
                "These profiles cannot be merged: their sample types differ ("
                + ", ".join(t for t, _ in first) + " vs " + ", ".join(t for t, _ in other) + ").",
                hint="Merge profiles of the same kind (all heap, or all goroutine).")


def _mapping_key(m: Mapping) -> tuple:
    # pprof keys a mapping by its size, offset and build id (else file name).
    size = m.memory_limit - m.memory_start
    return (size, m.file_offset, m.build_id or m.filename, m.filename if not m.build_id else "")


def merge_profiles(profiles: Sequence[Profile]) -> Profile:
    """Merge ``profiles`` (at least one) into a new Profile."""
    if not profiles:
        raise ProfileError("There is no profile to merge.")
    _compatible(profiles)
    first = profiles[0]

    mappings: list[Mapping] = []
    mapping_ix: dict[tuple, int] = {}
    fn_ix: dict[_FnKey, int] = {}
    fn_keys: list[_FnKey] = []
    loc_ix: dict[tuple, int] = {}
    loc_rows: list[tuple[int, int, bool, tuple[tuple[int, int, int], ...]]] = []
    sample_ix: dict[tuple[bytes, tuple], int] = {}
    sample_stacks: list[np.ndarray] = []
    sample_values: list[np.ndarray] = []
    sample_labels: list[tuple] = []

    # The main binary first, like pprof.
    for p in profiles:
        if p.mappings:
            m = p.main_mapping or p.mappings[0]
            mapping_ix[_mapping_key(m)] = 0
            mappings.append(Mapping(1, m.memory_start, m.memory_limit, m.file_offset, m.filename,
                                    m.build_id, m.has_functions, m.has_filenames,
                                    m.has_line_numbers, m.has_inline_frames))
            break

    for p in profiles:
        m_new = np.zeros(len(p.mappings), dtype=np.int32)
        for i, m in enumerate(p.mappings):
            key = _mapping_key(m)
            if key not in mapping_ix:
                mapping_ix[key] = len(mappings)
                mappings.append(Mapping(len(mappings) + 1, m.memory_start, m.memory_limit,
                                        m.file_offset, m.filename, m.build_id, m.has_functions,
                                        m.has_filenames, m.has_line_numbers,
                                        m.has_inline_frames))
            m_new[i] = mapping_ix[key]
        f_new = np.zeros(len(p.function_names), dtype=np.int32)
        for i, key in enumerate(zip(p.function_names, p.function_system_names,
                                    p.function_filenames, p.function_start_lines.tolist(),
                                    strict=True)):
            if key not in fn_ix:
                fn_ix[key] = len(fn_keys)
                fn_keys.append(key)
            f_new[i] = fn_ix[key]
        l_new = np.zeros(p.num_locations, dtype=np.int32)
        offs = p.location_line_offsets.tolist()
        lf = f_new[p.line_functions].tolist() if p.line_functions.size else []
        ln = p.line_numbers.tolist()
        lc = p.line_columns.tolist()
        for j in range(p.num_locations):
            mi = int(p.location_mappings[j])
            addr = int(p.location_addresses[j])
            mapping = -1
            if mi >= 0:
                mapping = int(m_new[mi])
                addr -= p.mappings[mi].memory_start  # ASLR: compare offsets, not addresses
            lines = tuple((lf[k], ln[k], lc[k]) for k in range(offs[j], offs[j + 1]))
            key = (mapping, addr, bool(p.location_folded[j]), lines)
            found = loc_ix.get(key)
            if found is None:
                found = loc_ix[key] = len(loc_rows)
                loc_rows.append((mapping, int(p.location_addresses[j]),
                                 bool(p.location_folded[j]), lines))
            l_new[j] = found
        stacks = l_new[p.sample_locations] if p.sample_locations.size else \
            np.zeros(0, dtype=np.int32)
        labels = p.sample_label_keys()
        s_off = p.sample_offsets.tolist()
        for s in range(p.num_samples):
            vals = p.values[s]
            if not vals.any():
                continue
            stack = stacks[s_off[s]:s_off[s + 1]]
            key = (stack.tobytes(), labels[s])
            found = sample_ix.get(key)
            if found is None:
                sample_ix[key] = len(sample_stacks)
                sample_stacks.append(stack)
                sample_values.append(vals.copy())
                sample_labels.append(labels[s])
            else:
                sample_values[found] += vals
    return _assemble(profiles, first, mappings, fn_keys, loc_rows, sample_stacks,
                     sample_values, sample_labels)


def _assemble(profiles: Sequence[Profile], first: Profile, mappings: list[Mapping],
              fn_keys: list[_FnKey], loc_rows: list, stacks: list[np.ndarray],
              values: list[np.ndarray], labels: list[tuple]) -> Profile:
    ntypes = len(first.sample_types)
    strings: list[str] = [""]
    string_ix: dict[str, int] = {"": 0}

    def intern(s: str) -> int:
        found = string_ix.get(s)
        if found is None:
            found = string_ix[s] = len(strings)
            strings.append(s)
        return found

    label_rows = [(i, *lab) for i, labs in enumerate(labels) for lab in labs]
    line_counts = [len(r[3]) for r in loc_rows]
    all_lines = [ln for r in loc_rows for ln in r[3]]
    counts = np.array([s.size for s in stacks], dtype=np.int64)
    times = [p.time_nanos for p in profiles if p.time_nanos]
    comments = list(dict.fromkeys(c for p in profiles for c in p.comments))
    return Profile(
        sample_types=list(first.sample_types),
        default_sample_type=first.default_sample_type,
        function_ids=np.arange(1, len(fn_keys) + 1, dtype=np.uint64),
        function_names=[k[0] for k in fn_keys],
        function_system_names=[k[1] for k in fn_keys],
        function_filenames=[k[2] for k in fn_keys],
        function_start_lines=np.array([k[3] for k in fn_keys], dtype=np.int64),
        location_ids=np.arange(1, len(loc_rows) + 1, dtype=np.uint64),
        location_mappings=np.array([r[0] for r in loc_rows], dtype=np.int32),
        location_addresses=np.array([r[1] for r in loc_rows], dtype=np.uint64),
        location_folded=np.array([r[2] for r in loc_rows], dtype=bool),
        location_line_offsets=np.concatenate(([0], np.cumsum(line_counts, dtype=np.int64))),
        line_functions=np.array([x[0] for x in all_lines], dtype=np.int32),
        line_numbers=np.array([x[1] for x in all_lines], dtype=np.int64),
        line_columns=np.array([x[2] for x in all_lines], dtype=np.int64),
        sample_offsets=np.concatenate(([0], np.cumsum(counts))).astype(np.int64),
        sample_locations=(np.concatenate(stacks).astype(np.int32) if stacks
                          else np.zeros(0, dtype=np.int32)),
        values=(np.vstack(values) if values else np.zeros((0, ntypes), dtype=np.int64)),
        label_samples=np.array([r[0] for r in label_rows], dtype=np.int64),
        label_keys=np.array([intern(r[1]) for r in label_rows], dtype=np.int32),
        label_strs=np.array([intern(r[2]) for r in label_rows], dtype=np.int32),
        label_nums=np.array([r[3] for r in label_rows], dtype=np.int64),
        label_units=np.array([intern(r[4]) for r in label_rows], dtype=np.int32),
        strings=strings,
        mappings=mappings,
        time_nanos=min(times) if times else 0,
        duration_nanos=sum(p.duration_nanos for p in profiles),
        period_type=first.period_type,
        period=max(p.period for p in profiles),
        comments=comments,
        drop_frames=first.drop_frames,
        keep_frames=first.keep_frames,
        doc_url=first.doc_url,
    )
