"""The decoded profile: pprof's data model as columns (numpy arrays), not objects.

Tables are indexed by position, not by id: ``sample_locations`` holds location
*indexes*, ``line_functions`` function indexes, ``location_mappings`` mapping
indexes (-1: none). Variable-length lists use offsets (CSR): the locations of
sample i are ``sample_locations[sample_offsets[i]:sample_offsets[i+1]]``, leaf
first, exactly as in the proto; the lines of location j are
``line_*[location_line_offsets[j]:location_line_offsets[j+1]]``, innermost
(inlined) first. Analysis works on whole columns at once, which is what makes
heapbot fast on profiles with hundreds of thousands of stacks.

Index columns are narrow to keep big profiles small: ``sample_locations`` (one
entry per frame, the biggest column) is int16 when a parsed profile has fewer
than 32,768 locations and int32 otherwise. Index with it freely; widen it
(``astype(np.int64)``) before arithmetic on the indexes themselves.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from bot.errors import UsageError
from bot.logs import target_names

# A label as stored: (key, string value, number, number unit); sorted per sample.
Label = tuple[str, str, int, str]

_LIB_RX = re.compile(r"([.]so$|[.]so[._][0-9]+)")


@dataclass(frozen=True, slots=True)
class SampleType:
    """One column of sample values, e.g. ("inuse_space", "bytes")."""

    type: str
    unit: str


@dataclass(frozen=True, slots=True)
class Mapping:
    """A binary or library mapped into the profiled process."""

    id: int
    memory_start: int = 0
    memory_limit: int = 0
    file_offset: int = 0
    filename: str = ""
    build_id: str = ""
    has_functions: bool = False
    has_filenames: bool = False
    has_line_numbers: bool = False
    has_inline_frames: bool = False


def _empty(dtype: type) -> np.ndarray:
    return np.zeros(0, dtype=dtype)


def _zero_offsets() -> np.ndarray:
    return np.zeros(1, dtype=np.int64)


@dataclass(slots=True, eq=False)
class Profile:
    """A pprof profile. Build it with ``bot.pprof.parse_profile`` or ``merge_profiles``."""

    sample_types: list[SampleType]
    default_sample_type: str = ""
    # functions
    function_ids: np.ndarray = field(default_factory=lambda: _empty(np.uint64))
    function_names: list[str] = field(default_factory=list)
    function_system_names: list[str] = field(default_factory=list)
    function_filenames: list[str] = field(default_factory=list)
    function_start_lines: np.ndarray = field(default_factory=lambda: _empty(np.int64))
    # locations
    location_ids: np.ndarray = field(default_factory=lambda: _empty(np.uint64))
    location_mappings: np.ndarray = field(default_factory=lambda: _empty(np.int32))
    location_addresses: np.ndarray = field(default_factory=lambda: _empty(np.uint64))
    location_folded: np.ndarray = field(default_factory=lambda: _empty(np.bool_))
    location_line_offsets: np.ndarray = field(default_factory=_zero_offsets)
    line_functions: np.ndarray = field(default_factory=lambda: _empty(np.int32))
    line_numbers: np.ndarray = field(default_factory=lambda: _empty(np.int64))
    line_columns: np.ndarray = field(default_factory=lambda: _empty(np.int64))
    # samples
    sample_offsets: np.ndarray = field(default_factory=_zero_offsets)
    sample_locations: np.ndarray = field(default_factory=lambda: _empty(np.int32))  # or int16
    values: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.int64))
    # sample labels, one row per label; strings index ``strings``
    label_samples: np.ndarray = field(default_factory=lambda: _empty(np.int64))
    label_keys: np.ndarray = field(default_factory=lambda: _empty(np.int32))
    label_strs: np.ndarray = field(default_factory=lambda: _empty(np.int32))
    label_nums: np.ndarray = field(default_factory=lambda: _empty(np.int64))
    label_units: np.ndarray = field(default_factory=lambda: _empty(np.int32))
    strings: list[str] = field(default_factory=lambda: [""])
    # labels not decoded yet (top never needs them): a function that decodes them
    pending_labels: Callable[[], dict[str, np.ndarray]] | None = field(default=None, repr=False)
    # everything else
    mappings: list[Mapping] = field(default_factory=list)
    time_nanos: int = 0
    duration_nanos: int = 0
    period_type: SampleType | None = None
    period: int = 0
    comments: list[str] = field(default_factory=list)
    drop_frames: str = ""
    keep_frames: str = ""
    doc_url: str = ""
    # derived data cached by bot.analysis (never part of the profile's content)
    cache: dict = field(default_factory=dict, repr=False)

    @property
    def num_samples(self) -> int:
        return int(self.sample_offsets.size - 1)

    @property
    def num_locations(self) -> int:
        return int(self.location_ids.size)

    def nonzero_samples(self) -> NDArray[np.bool_]:
        """Which samples have a non-zero value (pprof drops the all-zero ones)."""
        keep = np.zeros(self.num_samples, dtype=np.bool_)
        if self.values.size:
            self.values.any(axis=1, out=keep)  # (out=: an array, never a scalar)
        return keep

    def decode_labels(self) -> None:
        """Decode the label columns now if parsing left them for later."""
        if self.pending_labels is not None:
            columns = self.pending_labels()
            self.pending_labels = None
            for name, column in columns.items():
                setattr(self, name, column)

    def sample_label_keys(self) -> list[tuple[Label, ...]]:
        """Each sample's labels as a sorted tuple (what pprof's merge compares)."""
        self.decode_labels()
        out: list[list[Label]] = [[] for _ in range(self.num_samples)]
        strs = self.strings
        for s, k, v, n, u in zip(self.label_samples.tolist(), self.label_keys.tolist(),
                                 self.label_strs.tolist(), self.label_nums.tolist(),
                                 self.label_units.tolist(), strict=True):
            out[s].append((strs[k], strs[v], n, strs[u]))
        return [tuple(sorted(x)) for x in out]

    @property
    def main_mapping(self) -> Mapping | None:
        """The main binary, found like pprof does: the first mapping that is no library."""
        for m in self.mappings:
            name = m.filename.replace("(deleted)", "").strip()
            if not name or _LIB_RX.search(name) or name.startswith("["):
                continue
            return m
        return self.mappings[0] if self.mappings else None

    @property
    def main_build_id(self) -> str:
        m = self.main_mapping
        return m.build_id if m else ""

    def totals(self) -> dict[str, int]:
        """Sum of each sample type's values (signed), by sample type name."""
        sums = self.values.sum(axis=0) if self.values.size else [0] * len(self.sample_types)
        return {st.type: int(v) for st, v in zip(self.sample_types, sums, strict=True)}

    def __repr__(self) -> str:
        types = ", ".join(f"{s.type}/{s.unit}" for s in self.sample_types)
        return (f"Profile({types}; {self.num_samples} samples, {self.num_locations} locations, "
                f"{len(self.function_names)} functions)")


def sample_type_index(profile: Profile, name: str | None) -> int:
    """Index of the sample type called ``name``; None means pprof's default.

    The default is the profile's ``default_sample_type`` when it names one of its
    types, else the last type (what ``go tool pprof`` shows without -sample_index).
    """
    names = [st.type for st in profile.sample_types]
    if name is None or name == "":
        if profile.default_sample_type in names:
            return names.index(profile.default_sample_type)
        return len(names) - 1
    if name in names:
        return names.index(name)
    if name.isdigit() and int(name) < len(names):
        return int(name)
    raise UsageError(
        f"This profile has no sample type `{name}`.",
        hint=f"Its types are: {target_names(names, quote='`')}.",
    )
