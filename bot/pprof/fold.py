"""Streaming merge: fold profiles one at a time into a running merge (issue 13).

``merge_profiles`` needs every input decoded at once: for a fleet of 40 instances
that is 40 decoded profiles in memory (2.8 GB for 64k-stack profiles). A
``Merger`` keeps only the merge so far; each ``add`` maps the new profile's
tables into it and sums samples found by a 64-bit key per (stack, label set),
so the caller can drop each profile as soon as it is folded in. The result is
pprof's merge, like ``merge_profiles`` on the same inputs in the same order
(first-appearance order of mappings, functions, locations and samples).

Sample keys are content-defined (:func:`sample_keys`): a location's fingerprint
hashes what pprof keys it by (its mapping, address offset, lines and their
functions), a sample's key hashes its stack of fingerprints and its label set.
So they are computed where the profile was decoded (a worker process, in
parallel) and the fold itself only looks keys up: per sample, not per frame.
Keys are checked: equal keys must have equal second (independent) hashes and
stack lengths; a mismatch (a collision, never seen) falls back to
``merge_profiles`` for that fold.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from bot.errors import ProfileError
from bot.pprof.merge import _LENGTH_MIX, _mapping_key, function_columns, merge_profiles
from bot.pprof.model import Mapping, Profile

_MIX_A = np.uint64(0x9E3779B97F4A7C15)
_MIX_B = np.uint64(0xC2B2AE3D27D4EB4F)
_MIX_C = np.uint64(0x165667B19E3779F9)


_BASES = (np.uint64(0x100000001B3), np.uint64(0xD6E8FEB86659FD93))


_POWERS: dict[int, tuple[np.ndarray, np.ndarray]] = {}


def _powers(base: np.uint64, count: int) -> tuple[np.ndarray, np.ndarray]:
    """B**k and B**-k for k < count (cached: the same for every profile, grown on need)."""
    cached = _POWERS.get(int(base))
    if cached is None or cached[0].size < count:
        size = max(count, 1 << 16, 2 * (cached[0].size if cached else 0))
        powers = np.full(size, base, dtype=np.uint64)
        powers[0] = 1
        np.multiply.accumulate(powers, out=powers)
        inverse = np.full(size, np.uint64(pow(int(base), -1, 1 << 64)), dtype=np.uint64)
        inverse[0] = 1
        np.multiply.accumulate(inverse, out=inverse)
        cached = _POWERS[int(base)] = (powers, inverse)
    return cached[0][:count], cached[1][:count]


def _stack_hashes(offsets: np.ndarray, items_a: np.ndarray, items_b: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Two independent 64-bit polynomial hashes of each list, comparable between calls.

    hash = sum over the list of (item + 1) * B**(position in the list), plus a length
    term; from one running sum over all items times B**-start (B odd: invertible
    modulo 2**64). Each base hashes its own item fingerprints (``items_a``,
    ``items_b``): an undetected collision is a 2**-128 event.
    """
    total = int(offsets[-1])
    lengths = np.diff(offsets).astype(np.uint64) * np.uint64(_LENGTH_MIX)
    starts = offsets[:-1]
    out = []
    sums = np.zeros(total + 1, dtype=np.uint64)
    for base, items in zip(_BASES, (items_a, items_b), strict=True):
        powers, inverse = _powers(base, total + 1)
        with np.errstate(over="ignore"):
            terms = items.astype(np.uint64)
            terms += np.uint64(1)
            terms *= powers[:-1]
            np.cumsum(terms, out=sums[1:])
            del terms
            out.append((sums[offsets[1:]] - sums[starts]) * inverse[starts] + lengths)
    return out[0], out[1]


def _mix(x: np.ndarray, salt: np.uint64) -> np.ndarray:
    """A splitmix64-style scramble of uint64 values (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        z = x.astype(np.uint64) + salt
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def _fingerprints(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Two independent 64-bit fingerprints of each text (stable across processes,
    unlike ``hash()``)."""
    raw = b"".join(hashlib.blake2b(t.encode("utf-8", "surrogatepass"), digest_size=16).digest()
                   for t in texts)
    pairs = np.frombuffer(raw, dtype="<u8").reshape(-1, 2) if raw else \
        np.zeros((0, 2), dtype=np.uint64)
    return pairs[:, 0].astype(np.uint64), pairs[:, 1].astype(np.uint64)


@dataclass(slots=True)
class SampleKeys:
    """Content-defined keys of one profile's samples, made where it was decoded.

    ``keep`` marks the samples the merge keeps (pprof drops all-zero ones; None: all);
    ``keys``/``check`` are two independent 64-bit hashes of each kept sample's stack
    and label set, ``order`` sorts ``keys`` (stable); ``loc_a``/``loc_b`` fingerprint
    each location as pprof keys it.
    """

    keep: np.ndarray | None
    keys: np.ndarray
    check: np.ndarray
    order: np.ndarray
    loc_a: np.ndarray
    loc_b: np.ndarray


def sample_keys(p: Profile) -> SampleKeys:
    """The keys :meth:`Merger.add` folds ``p`` by (CPU-heavy: per frame; run it in the
    process that decoded ``p``)."""
    fn_a, fn_b = _fingerprints([f"{n}\0{s}\0{f}\0{line}" for n, s, f, line in zip(
        p.function_names, p.function_system_names, p.function_filenames,
        p.function_start_lines.tolist(), strict=True)])
    map_a, map_b = _fingerprints([repr(_mapping_key(m)) for m in p.mappings])
    mi = np.asarray(p.location_mappings, dtype=np.int64)
    mapped = mi >= 0
    starts = np.array([m.memory_start for m in p.mappings], dtype=np.uint64)
    offset = np.asarray(p.location_addresses, dtype=np.uint64).copy()
    with np.errstate(over="ignore"):
        if starts.size:
            offset[mapped] -= starts[mi[mapped]]
        lf = np.asarray(p.line_functions, dtype=np.int64)
        line_terms = _mix(np.asarray(p.line_numbers).view(np.uint64), _MIX_B) \
            ^ _mix(np.asarray(p.line_columns).view(np.uint64), _MIX_C)
        lines_a, lines_b = _stack_hashes(np.asarray(p.location_line_offsets, dtype=np.int64),
                                         _mix(fn_a[lf] ^ line_terms, _MIX_A),
                                         _mix(fn_b[lf] ^ line_terms, _MIX_C))
        folded = np.asarray(p.location_folded, dtype=np.uint64)
        place = _mix(offset, _MIX_A) ^ _mix(folded, _MIX_B)
        none = np.uint64(0x5851F42D4C957F2D)  # a location with no mapping
        m_a = np.where(mapped, map_a[np.where(mapped, mi, 0)] if map_a.size else none, none)
        m_b = np.where(mapped, map_b[np.where(mapped, mi, 0)] if map_b.size else none, none)
        loc_a = _mix(_mix(m_a ^ place, _MIX_C) ^ lines_a, _MIX_A)
        loc_b = _mix(_mix(m_b ^ place, _MIX_A) ^ lines_b, _MIX_B)
    keep = p.nonzero_samples()
    lengths = np.diff(p.sample_offsets)
    if keep.all():
        items, kept = p.sample_locations, None
    else:
        items, kept = p.sample_locations[np.repeat(keep, lengths)], keep
        lengths = lengths[keep]
    offsets = np.zeros(lengths.size + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    keys, check = _stack_hashes(offsets, loc_a[items], loc_b[items])
    del items
    keys, check = _label_keys(p, keep, keys, check)
    return SampleKeys(kept, keys, check, np.argsort(keys, kind="stable"), loc_a, loc_b)


def _label_keys(p: Profile, keep: np.ndarray, keys: np.ndarray, check: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
    """Mix each kept sample's label set (order-free) into its two keys."""
    p.decode_labels()
    if not p.label_samples.size:
        return keys, check
    str_a, str_b = _fingerprints(p.strings)
    s_new = np.cumsum(keep) - 1
    lab_keep = keep[p.label_samples]
    sample = s_new[p.label_samples[lab_keep]]
    n = keys.size
    nums = p.label_nums[lab_keep].astype(np.int64).view(np.uint64)
    ks, vs, us = p.label_keys[lab_keep], p.label_strs[lab_keep], p.label_units[lab_keep]
    per = np.bincount(sample, minlength=n).astype(np.uint64)  # labels per sample
    out = []
    for fp, key, salt in ((str_a, keys, _MIX_C), (str_b, check, _MIX_A)):
        with np.errstate(over="ignore"):
            row = _mix(fp[ks], _MIX_A) ^ _mix(fp[vs], _MIX_B)
            row = _mix(row ^ _mix(nums, _MIX_C), _MIX_A) ^ _mix(fp[us], _MIX_C)
            total = np.zeros(n, dtype=np.uint64)
            np.add.at(total, sample, row)  # a sum: independent of the labels' order
            out.append(key ^ _mix(total + per, salt))
    return out[0], out[1]


class Merger:
    """pprof's merge, one profile at a time; ``result()`` is the merged Profile."""

    def __init__(self) -> None:
        self.count = 0
        self._first: Profile | None = None
        self._mappings: list[Mapping] = []
        self._mapping_ix: dict[tuple, int] = {}
        self._fn_ix: dict[tuple[str, str, str, int], int] = {}
        self._loc_ix: dict[tuple[int, int], int] = {}  # location fingerprints -> row
        self._loc_rows: list[tuple[int, int, bool, tuple[tuple[int, int, int], ...]]] = []
        self._strings: dict[str, int] = {"": 0}
        self._values = np.zeros((0, 0), dtype=np.int64)
        self._label_chunks: list[np.ndarray] = []  # rows (sample, key, str, num, unit)
        self._keys = np.zeros(0, dtype=np.uint64)  # per merged sample
        self._check = np.zeros(0, dtype=np.uint64)  # second label hash per merged sample
        self._starts = np.zeros(1, dtype=np.int64)  # stack offsets of merged samples
        self._stacks = np.zeros(0, dtype=np.int64)
        self._sorted: np.ndarray | None = None
        self._times: list[int] = []
        self._duration = 0
        self._period = 0
        self._comments: dict[str, None] = {}
        self._fallback: Profile | None = None

    def add(self, profile: Profile, keys: SampleKeys | None = None) -> None:
        """Fold ``profile`` in (``keys``: its :func:`sample_keys`, if already made); the
        caller may drop it afterwards."""
        if self._fallback is not None:
            self._fallback = merge_profiles([self._fallback, profile])
            self.count += 1
            return
        if self._first is None:
            self._first = _header_only(profile)
            self._values = np.zeros((0, len(profile.sample_types)), dtype=np.int64)
        elif [(s.type, s.unit) for s in profile.sample_types] != \
                [(s.type, s.unit) for s in self._first.sample_types]:
            merge_profiles([self._first, profile])  # raises the usual ProfileError
        if not self._mappings and profile.mappings:  # the main binary first, like pprof
            self._mapping(profile.main_mapping or profile.mappings[0])
        if not self._fold(profile, keys if keys is not None else sample_keys(profile)):
            # A hash collision: redo this fold exactly (merge_profiles compares contents).
            self._fallback = merge_profiles([self.result(), profile])
        self.count += 1
        if profile.time_nanos:
            self._times.append(profile.time_nanos)
        self._duration += profile.duration_nanos
        self._period = max(self._period, profile.period)
        self._comments.update(dict.fromkeys(profile.comments))

    def _mapping(self, m: Mapping) -> int:
        key = _mapping_key(m)
        found = self._mapping_ix.get(key)
        if found is None:
            found = self._mapping_ix[key] = len(self._mappings)
            self._mappings.append(Mapping(found + 1, m.memory_start, m.memory_limit,
                                          m.file_offset, m.filename, m.build_id,
                                          m.has_functions, m.has_filenames,
                                          m.has_line_numbers, m.has_inline_frames))
        return found

    def _locations(self, p: Profile, sk: SampleKeys) -> np.ndarray:
        """Merged index of each of ``p``'s locations, found by fingerprint; a location
        seen for the first time is added (keyed like merge_profiles: ASLR-free offset)."""
        loc_map = np.empty(p.num_locations, dtype=np.int64)
        fp_ix = self._loc_ix
        fps = list(zip(sk.loc_a.tolist(), sk.loc_b.tolist(), strict=True))
        missing = []
        for i, fp in enumerate(fps):
            found = fp_ix.get(fp)
            if found is None:
                missing.append(i)
            else:
                loc_map[i] = found
        if not missing:
            return loc_map
        m_new = [self._mapping(m) for m in p.mappings]
        fn_ix = self._fn_ix
        f_new = [fn_ix.setdefault(k, len(fn_ix)) for k in zip(
            p.function_names, p.function_system_names, p.function_filenames,
            p.function_start_lines.tolist(), strict=True)]
        l_off = p.location_line_offsets.tolist()
        lf, ln, lc = p.line_functions.tolist(), p.line_numbers.tolist(), p.line_columns.tolist()
        mappings, addresses = p.location_mappings.tolist(), p.location_addresses.tolist()
        folded = p.location_folded.tolist()
        for i in missing:
            found = fp_ix.setdefault(fps[i], len(self._loc_rows))
            if found == len(self._loc_rows):
                mi = mappings[i]
                lines = tuple((f_new[lf[j]], ln[j], lc[j]) for j in range(l_off[i], l_off[i + 1]))
                self._loc_rows.append((m_new[mi] if mi >= 0 else -1, addresses[i],
                                       bool(folded[i]), lines))
            loc_map[i] = found
        return loc_map

    def _fold(self, p: Profile, sk: SampleKeys) -> bool:
        """Sum ``p``'s samples into the merge by key; per sample, not per frame (only the
        stacks of samples new to the merge are copied). False on a key collision."""
        for m in p.mappings:
            self._mapping(m)
        loc_map = self._locations(p, sk)
        lengths = np.diff(p.sample_offsets)
        src_starts = p.sample_offsets[:-1]
        values = p.values
        if sk.keep is not None:
            lengths, src_starts, values = lengths[sk.keep], src_starts[sk.keep], values[sk.keep]
        values = values.astype(np.int64, copy=False)
        keys, check = sk.keys, sk.check
        n = lengths.size
        # Group equal keys (one sort), then find each distinct key in the merge so far.
        order = sk.order
        sorted_new = keys[order]
        is_start = np.ones(n, dtype=bool)
        is_start[1:] = sorted_new[1:] != sorted_new[:-1]
        groups = np.empty(n, dtype=np.int64)
        groups[order] = np.cumsum(is_start) - 1
        firsts = order[is_start]  # first (lowest) row of each group, by key
        if self._sorted is None:
            self._sorted = np.argsort(self._keys, kind="stable")
        sorted_keys = self._keys[self._sorted]
        unique = sorted_new[is_start]
        if sorted_keys.size:
            pos = np.minimum(np.searchsorted(sorted_keys, unique), sorted_keys.size - 1)
            target = np.where(sorted_keys[pos] == unique, self._sorted[pos], -1)
        else:
            target = np.full(unique.size, -1, dtype=np.int64)
        # Equal keys must have equal second hashes and lengths, or it is a collision.
        if not np.array_equal(check, check[firsts[groups]]) or \
                not np.array_equal(lengths, lengths[firsts[groups]]):
            return False
        hit = np.flatnonzero(target >= 0)
        if hit.size and not (
                np.array_equal(self._check[target[hit]], check[firsts[hit]])
                and np.array_equal(np.diff(self._starts)[target[hit]], lengths[firsts[hit]])):
            return False
        fresh = np.flatnonzero(target < 0)
        fresh = fresh[np.argsort(firsts[fresh], kind="stable")]  # in order of appearance
        base = self._keys.size
        target[fresh] = base + np.arange(fresh.size)
        sample_target = target[groups]
        if fresh.size:
            grown = np.zeros((base + fresh.size, values.shape[1] if values.ndim == 2 else 0),
                             dtype=np.int64)
            grown[:base] = self._values
            self._values = grown
        if groups.size and int(groups.max()) + 1 == n:  # no duplicates within the profile
            self._values[sample_target] += values
        else:
            np.add.at(self._values, sample_target, values)
        if fresh.size:
            rows = firsts[fresh]
            take_len = lengths[rows]
            take = np.repeat(src_starts[rows] - np.concatenate(([0], np.cumsum(take_len)[:-1])),
                             take_len) + np.arange(int(take_len.sum()))
            self._stacks = np.concatenate([self._stacks, loc_map[p.sample_locations[take]]])
            self._starts = np.concatenate([self._starts,
                                           self._starts[-1] + np.cumsum(take_len)])
            self._keys = np.concatenate([self._keys, keys[rows]])
            self._check = np.concatenate([self._check, check[rows]])
            if p.label_samples.size:
                keep = sk.keep if sk.keep is not None else np.ones(p.num_samples, dtype=bool)
                labels = self._labels(p, keep)
                is_first = np.zeros(n, dtype=bool)
                is_first[rows] = True
                lab = labels[is_first[labels[:, 0]]].copy()
                lab[:, 0] = sample_target[lab[:, 0]]
                self._label_chunks.append(lab)
            self._sorted = None
        return True

    def _labels(self, p: Profile, keep: np.ndarray) -> np.ndarray:
        """Label rows (kept sample, key, string, number, unit) in merged string ids."""
        p.decode_labels()
        if not p.label_samples.size:
            return np.zeros((0, 5), dtype=np.int64)
        strings = self._strings
        s_ix = np.array([strings.setdefault(x, len(strings)) for x in p.strings], dtype=np.int64)
        s_new = np.cumsum(keep) - 1
        lab_keep = keep[p.label_samples]
        return np.column_stack([s_new[p.label_samples[lab_keep]],
                                s_ix[p.label_keys[lab_keep]], s_ix[p.label_strs[lab_keep]],
                                p.label_nums[lab_keep].astype(np.int64),
                                s_ix[p.label_units[lab_keep]]])

    def result(self) -> Profile:
        """The merged profile so far (a new Profile; the Merger stays usable)."""
        if self._fallback is not None:
            return self._fallback
        if self._first is None:
            raise ProfileError("There is no profile to merge.")
        first = self._first
        fn_keys = list(self._fn_ix)
        rows = self._loc_rows
        line_counts = np.array([len(r[3]) for r in rows], dtype=np.int64)
        all_lines = [line for r in rows for line in r[3]]
        lines = np.array(all_lines, dtype=np.int64).reshape(-1, 3)
        labels = (np.concatenate(self._label_chunks) if self._label_chunks
                  else np.zeros((0, 5), dtype=np.int64))
        if labels.size:
            labels = labels[np.lexsort((labels[:, 4], labels[:, 3], labels[:, 2], labels[:, 1],
                                        labels[:, 0]))]
        strings = list(self._strings)
        out_strings = [""]
        remap = np.zeros(len(strings), dtype=np.int64)
        if labels.size:
            for i in np.unique(labels[:, [1, 2, 4]]).tolist():
                if strings[i]:
                    remap[i] = len(out_strings)
                    out_strings.append(strings[i])
        compact = remap[labels[:, [1, 2, 4]]] if labels.size else \
            np.zeros((0, 3), dtype=np.int64)
        return Profile(
            sample_types=list(first.sample_types),
            default_sample_type=first.default_sample_type,
            **function_columns(fn_keys),
            location_ids=np.arange(1, len(rows) + 1, dtype=np.uint64),
            location_mappings=np.array([r[0] for r in rows], dtype=np.int32),
            location_addresses=np.array([r[1] for r in rows], dtype=np.uint64),
            location_folded=np.array([r[2] for r in rows], dtype=bool),
            location_line_offsets=np.concatenate(([0], np.cumsum(line_counts))),
            line_functions=lines[:, 0].astype(np.int32),
            line_numbers=lines[:, 1].copy(),
            line_columns=lines[:, 2].copy(),
            sample_offsets=self._starts.copy(),
            sample_locations=self._stacks.astype(np.int32),
            values=self._values.copy(),
            label_samples=labels[:, 0].astype(np.int64),
            label_keys=compact[:, 0].astype(np.int32),
            label_strs=compact[:, 1].astype(np.int32),
            label_nums=labels[:, 3].astype(np.int64),
            label_units=compact[:, 2].astype(np.int32),
            strings=out_strings,
            mappings=list(self._mappings),
            time_nanos=min(self._times) if self._times else 0,
            duration_nanos=self._duration,
            period_type=first.period_type,
            period=self._period,
            comments=list(self._comments),
            drop_frames=first.drop_frames,
            keep_frames=first.keep_frames,
            doc_url=first.doc_url,
        )


def _header_only(p: Profile) -> Profile:
    """The first profile's header fields (not its big arrays: those may be dropped)."""
    return Profile(sample_types=list(p.sample_types), default_sample_type=p.default_sample_type,
                   period_type=p.period_type, drop_frames=p.drop_frames,
                   keep_frames=p.keep_frames, doc_url=p.doc_url)


def fold_profiles(profiles: Iterable[Profile]) -> Profile:
    """Merge an iterable of profiles while holding only one of them at a time."""
    merger = Merger()
    for p in profiles:
        merger.add(p)
    return merger.result()
