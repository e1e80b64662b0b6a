"""pprof's merge: one profile from several (e.g. one per instance of a service).

Like google/pprof's profile.Merge: functions, mappings and locations are
deduplicated by content (never by id, ids differ between processes); samples
with the same stack and the same labels are summed; samples whose values are
all zero are dropped. Headers: the earliest non-zero time, summed durations,
the largest period, the first profile's default sample type and frame filters.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from bot.errors import ProfileError
from bot.logs import target_names
from bot.pprof.model import Mapping, Profile

_FnKey = tuple[str, str, str, int]


def _compatible(profiles: Sequence[Profile]) -> None:
    first = [(s.type, s.unit) for s in profiles[0].sample_types]
    for p in profiles[1:]:
        other = [(s.type, s.unit) for s in p.sample_types]
        if other != first:
            raise ProfileError(
                "These profiles cannot be merged: their sample types differ ("
                + target_names(t for t, _ in first) + " vs " + target_names(t for t, _ in other)
                + ").",
                hint="Merge profiles of the same kind (all heap, or all goroutine).")


def _mapping_key(m: Mapping) -> tuple:
    # pprof keys a mapping by its size, offset and build id (else file name).
    size = m.memory_limit - m.memory_start
    return (size, m.file_offset, m.build_id or m.filename, m.filename if not m.build_id else "")


def _first_order_groups(keys: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Group rows with equal ``keys`` columns: (group of each row, first row of each group).

    Groups are numbered in order of first appearance, like a dict filled row by row.
    """
    n = keys[0].size
    if n == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    order = np.lexsort(keys[::-1])  # stable: the first row of a group sorts first
    sorted_keys = [k[order] for k in keys]
    starts = np.ones(n, dtype=bool)
    starts[1:] = False
    for k in sorted_keys:
        starts[1:] |= k[1:] != k[:-1]
    group_sorted = np.cumsum(starts) - 1
    firsts = order[starts]
    rank = np.empty(firsts.size, dtype=np.int64)
    by_appearance = np.argsort(firsts, kind="stable")
    rank[by_appearance] = np.arange(firsts.size)
    groups = np.empty(n, dtype=np.int64)
    groups[order] = rank[group_sorted]
    return groups, firsts[by_appearance]


_HASH_BASE = 0x100000001B3  # odd, so invertible modulo 2**64
_LENGTH_MIX = 0x9E3779B97F4A7C15


def _list_hashes(offsets: np.ndarray, items: np.ndarray) -> np.ndarray:
    """A 64-bit polynomial hash of each list: (sum of (item + 1) * B**i) * B**n, plus its length.

    Computed as differences of one running sum over all items (B**k at global
    index k); the list starting at s is multiplied by B**(n - s), n the item
    count, which brings every list to the same scale (B is odd, so invertible
    modulo 2**64: the scaling never makes two different sums equal). A few
    passes over the items, whatever the lists' lengths.
    """
    total = int(offsets[-1])
    powers = np.full(total + 1, _HASH_BASE, dtype=np.uint64)
    powers[0] = 1
    np.multiply.accumulate(powers, out=powers)  # wraps modulo 2**64, as intended
    terms = items.astype(np.uint64)
    terms += np.uint64(1)
    terms *= powers[:-1]
    sums = np.empty(total + 1, dtype=np.uint64)
    sums[0] = 0
    np.cumsum(terms, out=sums[1:])
    del terms
    starts = offsets[:-1]
    hashes = (sums[offsets[1:]] - sums[starts]) * powers[total - starts]
    hashes += np.diff(offsets).astype(np.uint64) * np.uint64(_LENGTH_MIX)
    return hashes


def _group_lists(offsets: np.ndarray, items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Group equal variable-length lists (CSR): (group of each list, first list of each).

    Lists are grouped by a 64-bit hash, then every list is checked element by
    element against its group's first list; a hash collision (possible, never
    seen) falls back to comparing exact byte strings.
    """
    lengths = np.diff(offsets)
    groups, firsts = _first_order_groups([_list_hashes(offsets, items)])
    twin = firsts[groups]
    starts = offsets[:-1]
    same = bool(np.array_equal(lengths, lengths[twin]))
    if same:
        shift = np.repeat(starts[twin] - starts, lengths)
        shift += np.arange(int(offsets[-1]))
        same = bool(np.array_equal(items, items[shift]))
    if same:
        return groups, firsts
    keys = [items[a:b].tobytes() for a, b in zip(starts.tolist(), offsets[1:].tolist(),
                                                  strict=True)]
    seen: dict[bytes, int] = {}
    exact = np.array([seen.setdefault(k, len(seen)) for k in keys], dtype=np.int64)
    return exact, np.unique(exact, return_index=True)[1]


def _concat(arrays: list[np.ndarray], dtype: type) -> np.ndarray:
    return np.concatenate(arrays).astype(dtype, copy=False) if arrays else np.zeros(0, dtype)


def _concat_offsets(offsets: list[np.ndarray]) -> np.ndarray:
    """One CSR offsets array from several, each shifted past the ones before."""
    parts, shift = [np.zeros(1, dtype=np.int64)], 0
    for o in offsets:
        parts.append(o[1:].astype(np.int64) + shift)
        shift += int(o[-1])
    return np.concatenate(parts)


def merge_profiles(profiles: Sequence[Profile]) -> Profile:
    """Merge ``profiles`` (at least one) into a new Profile.

    Whole columns at a time (numpy), so merging three 300k-stack heap profiles
    takes a fraction of a second: only mappings, functions and strings (a few
    thousand) are deduplicated in Python.
    """
    if not profiles:
        raise ProfileError("There is no profile to merge.")
    _compatible(profiles)
    first = profiles[0]
    ntypes = len(first.sample_types)

    mappings: list[Mapping] = []
    mapping_ix: dict[tuple, int] = {}
    fn_ix: dict[_FnKey, int] = {}
    fn_keys: list[_FnKey] = []
    strings: dict[str, int] = {}

    # The main binary first, like pprof.
    for p in profiles:
        if p.mappings:
            m = p.main_mapping or p.mappings[0]
            mapping_ix[_mapping_key(m)] = 0
            mappings.append(Mapping(1, m.memory_start, m.memory_limit, m.file_offset, m.filename,
                                    m.build_id, m.has_functions, m.has_filenames,
                                    m.has_line_numbers, m.has_inline_frames))
            break

    # Per profile: its tables renumbered into the merged ones (global indexes).
    loc_mapping, loc_offset, loc_address, loc_folded, loc_lines = [], [], [], [], []
    line_fn, line_no, line_col = [], [], []
    stack_offsets, stack_items, values = [], [], []
    lab_sample, lab_key, lab_str, lab_num, lab_unit = [], [], [], [], []
    loc_base = sample_base = 0
    for p in profiles:
        m_new = np.zeros(len(p.mappings), dtype=np.int64)
        starts = np.zeros(len(p.mappings), dtype=np.uint64)
        for i, m in enumerate(p.mappings):
            key = _mapping_key(m)
            if key not in mapping_ix:
                mapping_ix[key] = len(mappings)
                mappings.append(Mapping(len(mappings) + 1, m.memory_start, m.memory_limit,
                                        m.file_offset, m.filename, m.build_id, m.has_functions,
                                        m.has_filenames, m.has_line_numbers,
                                        m.has_inline_frames))
            m_new[i] = mapping_ix[key]
            starts[i] = m.memory_start
        f_new = np.zeros(len(p.function_names), dtype=np.int64)
        for i, key in enumerate(zip(p.function_names, p.function_system_names,
                                    p.function_filenames, p.function_start_lines.tolist(),
                                    strict=True)):
            f_new[i] = fn_ix.setdefault(key, len(fn_ix))
            if f_new[i] == len(fn_keys):
                fn_keys.append(key)

        lm = p.location_mappings.astype(np.int64)
        has_mapping = lm >= 0
        loc_mapping.append(np.where(has_mapping, m_new[np.maximum(lm, 0)] if m_new.size
                                    else -1, -1))
        addresses = p.location_addresses.astype(np.uint64)
        # ASLR: compare offsets into the mapping, not addresses
        loc_offset.append(np.where(has_mapping, addresses - (starts[np.maximum(lm, 0)]
                                                            if starts.size else 0), addresses))
        loc_address.append(addresses)
        loc_folded.append(p.location_folded.astype(np.int64))
        loc_lines.append(p.location_line_offsets)
        line_fn.append(f_new[p.line_functions] if p.line_functions.size else
                       np.zeros(0, dtype=np.int64))
        line_no.append(p.line_numbers.astype(np.int64))
        line_col.append(p.line_columns.astype(np.int64))

        # samples whose values are all zero are dropped, like pprof
        keep = p.nonzero_samples()
        if keep.all():
            kept_items = p.sample_locations.astype(np.int64)
            stack_offsets.append(p.sample_offsets)
        else:
            lengths = np.diff(p.sample_offsets)
            kept_items = p.sample_locations[np.repeat(keep, lengths)].astype(np.int64)
            stack_offsets.append(np.concatenate(([0], np.cumsum(lengths[keep]))))
        kept_items += loc_base
        stack_items.append(kept_items)
        values.append(p.values[keep].astype(np.int64, copy=False))

        p.decode_labels()
        if p.label_samples.size:
            s_new = np.cumsum(keep) - 1 + sample_base  # old sample → kept sample
            lab_keep = keep[p.label_samples]
            s_ix = np.array([strings.setdefault(x, len(strings)) for x in p.strings],
                            dtype=np.int64)
            lab_sample.append(s_new[p.label_samples[lab_keep]])
            lab_key.append(s_ix[p.label_keys[lab_keep]])
            lab_str.append(s_ix[p.label_strs[lab_keep]])
            lab_num.append(p.label_nums[lab_keep].astype(np.int64))
            lab_unit.append(s_ix[p.label_units[lab_keep]])
        loc_base += p.num_locations
        sample_base += int(keep.sum())

    # Locations: equal when mapping, offset, folding and lines (function, line, column) are.
    line_offsets = _concat_offsets(loc_lines)
    fns, nos, cols = (_concat(line_fn, np.int64), _concat(line_no, np.int64),
                      _concat(line_col, np.int64))
    line_ids, _ = _first_order_groups([fns, nos, cols])
    line_lists, _ = _group_lists(line_offsets, line_ids)
    addresses = _concat(loc_address, np.uint64)
    mapping_of, folded = _concat(loc_mapping, np.int64), _concat(loc_folded, np.int64)
    loc_new, loc_firsts = _first_order_groups([
        mapping_of, _concat(loc_offset, np.uint64), folded, line_lists])

    # Samples: equal when their stacks (merged locations) and their label sets are.
    offsets = _concat_offsets(stack_offsets)
    stacks = loc_new[_concat(stack_items, np.int64)]
    stack_ids, _ = _group_lists(offsets, stacks)
    num_samples = offsets.size - 1
    label_sets = np.zeros(num_samples, dtype=np.int64)
    labels = np.zeros((0, 5), dtype=np.int64)
    if lab_sample:
        labels = np.column_stack([_concat(c, np.int64) for c in
                                  (lab_sample, lab_key, lab_str, lab_num, lab_unit)])
        width = max(len(strings), 1)
        if width**3 < 2**62:  # key, string value and unit as one column: a 2-key sort
            names = (labels[:, 1] * width + labels[:, 2]) * width + labels[:, 4]
            label_ids, _ = _first_order_groups([names, labels[:, 3]])
        else:
            label_ids, _ = _first_order_groups([labels[:, i] for i in range(1, 5)])
        order = np.lexsort((label_ids, labels[:, 0]))  # per sample, a canonical label order
        labels, label_ids = labels[order], label_ids[order]
        counts = np.bincount(labels[:, 0], minlength=num_samples)
        label_sets, _ = _group_lists(np.concatenate(([0], np.cumsum(counts))), label_ids)
    sample_new, sample_firsts = _first_order_groups([stack_ids, label_sets])
    all_values = np.concatenate(values) if values else np.zeros((0, ntypes), dtype=np.int64)
    summed = np.zeros((sample_firsts.size, ntypes), dtype=np.int64)
    np.add.at(summed, sample_new, all_values)
    return _assemble(profiles, first, mappings, fn_keys, list(strings), line_offsets,
                     (fns, nos, cols), (addresses, mapping_of, folded), loc_firsts, offsets,
                     stacks, sample_firsts, summed, labels, sample_new)


def _gather(offsets: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The lists ``rows`` of a CSR table: (new offsets, element indexes to take)."""
    lengths = np.diff(offsets)[rows]
    new_offsets = np.concatenate(([0], np.cumsum(lengths))).astype(np.int64)
    owner = np.repeat(np.arange(rows.size), lengths)
    return new_offsets, offsets[:-1][rows][owner] + (np.arange(int(new_offsets[-1]))
                                                     - new_offsets[:-1][owner])


def function_columns(fn_keys: Sequence[_FnKey]) -> dict[str, Any]:
    """A merged profile's function table, ids 1..n in key order (merge and fold both)."""
    return {
        "function_ids": np.arange(1, len(fn_keys) + 1, dtype=np.uint64),
        "function_names": [k[0] for k in fn_keys],
        "function_system_names": [k[1] for k in fn_keys],
        "function_filenames": [k[2] for k in fn_keys],
        "function_start_lines": np.array([k[3] for k in fn_keys], dtype=np.int64),
    }


def _assemble(profiles: Sequence[Profile], first: Profile, mappings: list[Mapping],
              fn_keys: list[_FnKey], label_strings: list[str], line_offsets: np.ndarray,
              lines: tuple[np.ndarray, np.ndarray, np.ndarray],
              locations: tuple[np.ndarray, np.ndarray, np.ndarray], loc_firsts: np.ndarray,
              offsets: np.ndarray,
              stacks: np.ndarray, sample_firsts: np.ndarray, values: np.ndarray,
              labels: np.ndarray, sample_new: np.ndarray) -> Profile:
    """The merged Profile from the chosen first rows (locations, samples) and sums."""
    addresses, loc_mappings, loc_folded = locations
    loc_offsets, line_take = _gather(line_offsets, loc_firsts)
    sample_offsets, stack_take = _gather(offsets, sample_firsts)
    # labels of each merged sample: those of its first (representative) sample
    kept = np.zeros(sample_new.size, dtype=bool)
    kept[sample_firsts] = True
    labels = labels[kept[labels[:, 0]]] if labels.size else labels
    labels[:, 0] = sample_new[labels[:, 0]] if labels.size else labels[:, 0]
    labels = labels[np.argsort(labels[:, 0], kind="stable")] if labels.size else labels
    out_strings = [""]
    remap = np.full(len(label_strings) + 1, -1, dtype=np.int64)
    for i in np.unique(labels[:, [1, 2, 4]]).tolist() if labels.size else []:
        text = label_strings[i]
        remap[i] = 0 if text == "" else len(out_strings)
        if text:
            out_strings.append(text)
    compact = remap[labels[:, [1, 2, 4]]] if labels.size else np.zeros((0, 3), dtype=np.int64)
    times = [p.time_nanos for p in profiles if p.time_nanos]
    comments = list(dict.fromkeys(c for p in profiles for c in p.comments))
    return Profile(
        sample_types=list(first.sample_types),
        default_sample_type=first.default_sample_type,
        **function_columns(fn_keys),
        location_ids=np.arange(1, loc_firsts.size + 1, dtype=np.uint64),
        location_mappings=loc_mappings[loc_firsts].astype(np.int32),
        location_addresses=addresses[loc_firsts],
        location_folded=loc_folded[loc_firsts].astype(bool),
        location_line_offsets=loc_offsets,
        line_functions=lines[0][line_take].astype(np.int32),
        line_numbers=lines[1][line_take],
        line_columns=lines[2][line_take],
        sample_offsets=sample_offsets,
        sample_locations=stacks[stack_take].astype(np.int32),
        values=values,
        label_samples=labels[:, 0].astype(np.int64),
        label_keys=compact[:, 0].astype(np.int32),
        label_strs=compact[:, 1].astype(np.int32),
        label_nums=labels[:, 3].astype(np.int64),
        label_units=compact[:, 2].astype(np.int32),
        strings=out_strings,
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
