"""bytes → Profile: inflate, parse with upb, decode the big tables with numpy, validate.

upb (protobuf's C backend) parses the top-level message into a ``ProfileFrame``
whose samples, locations and functions stay raw bytes; ``bot.pprof.wire``
decodes those columns in a few vectorized passes. Every reference is checked
(string indexes, location→function, sample→location, location→mapping), so
analysis code can index arrays without further checks.
"""

from __future__ import annotations

import re
from functools import partial
from typing import NoReturn, TypedDict

import numpy as np
from google.protobuf.message import DecodeError

from bot.errors import ProfileError
from bot.pprof import profile_pb2
from bot.pprof.limits import DEFAULT_LIMITS, Limits, inflate
from bot.pprof.model import Mapping, Profile, SampleType
from bot.pprof.names import pprof_names
from bot.pprof.wire import (
    IntType,
    Messages,
    WireError,
    as_int64,
    decode_fields,
    decode_layout,
    layout_repeated_varints,
    layout_sub_messages,
    ranges,
    scalar,
    scalars,
    sub_messages,
)

# The first line of a ?debug=2 dump (runtime.Stack format): "goroutine 1 [running]:"
_GOROUTINE_DUMP = re.compile(rb"goroutine \d+ \[[^\]\n]*\]:")
_HINT_FETCH = "Fetch /debug/pprof/heap (or /debug/pprof/goroutine) without ?debug=1."


def _fail(message: str, hint: str | None = None) -> NoReturn:
    raise ProfileError(message, hint=hint)


def _sniff_not_profile(raw: bytes | bytearray) -> None:
    """Name the common wrong inputs before trying protobuf (HTML, JSON, text dumps)."""
    head = raw[:512].lstrip()
    low = head.lower()
    if low.startswith((b"<!doctype", b"<html", b"<?xml", b"<")):
        _fail("This is an HTML page, not a pprof profile (a login page or an error page?).",
              "Check the URL points at the service's /debug/pprof/ endpoint.")
    if head[:1] in (b"{", b"["):
        _fail("This is JSON, not a pprof profile.",
              "Check the URL points at the service's /debug/pprof/ endpoint.")
    if low.startswith((b"goroutine profile:", b"goroutineleak profile:")) \
            or _GOROUTINE_DUMP.match(head):
        debug = "?debug=2" if _GOROUTINE_DUMP.match(head) else "?debug=1"
        name = "goroutineleak" if low.startswith(b"goroutineleak") else "goroutine"
        _fail(f"This is a {name} dump ({debug}), not a binary pprof profile.",
              f"`heapbot goroutines --profile FILE` reads it; or fetch /debug/pprof/{name} "
              f"without {debug} for the binary profile.")
    if low.startswith((b"heap profile:", b"--- ")):
        _fail("This is the text form of a profile (?debug=1), not the binary protobuf.",
              _HINT_FETCH)


def parse_profile(data: bytes | bytearray | memoryview, limits: Limits | None = None
                  ) -> Profile:
    """Decode a pprof profile (gzip or raw protobuf); raise ProfileError when unusable.

    A bytearray (a capture's download) is read where it is, not copied.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        _fail("A profile must be bytes.")
    if isinstance(data, memoryview):
        data = bytes(data)
    if not data:
        _fail("The profile is empty (0 bytes).", "Capture it again.")
    raw = inflate(data, limits or DEFAULT_LIMITS)
    if not raw:
        _fail("The profile is empty once inflated.", "Capture it again.")
    _sniff_not_profile(raw)
    box = [profile_pb2.ProfileFrame()]
    frame = box[0]
    try:
        frame.ParseFromString(raw)
    except (DecodeError, RuntimeError, ValueError):
        _fail("These bytes are not a pprof profile (they do not decode as profile.proto).",
              "Give heapbot the output of /debug/pprof/heap or a .pb.gz file.")
    del raw, data, frame  # upb holds its own copy; _build frees it once read (peak memory)
    try:
        return _build(box)
    except WireError as exc:
        _fail(f"The profile is malformed ({exc}).", "Capture it again.")


def _strings(frame: profile_pb2.ProfileFrame) -> list[str]:
    table = [s.decode("utf-8", "replace") for s in frame.string_table]
    if not table:
        _fail("The profile has no string table, so it is not a pprof profile.")
    if table[0] != "":
        _fail("The profile's string table does not start with the empty string.")
    return table


class _Strings:
    """String-table lookups that fail with a clear message when out of range."""

    def __init__(self, table: list[str]) -> None:
        self.table = table

    def one(self, index: int, what: str) -> str:
        if 0 <= index < len(self.table):
            return self.table[index]
        _fail(f"The profile's {what} points outside its string table "
              f"(index {index} of {len(self.table)}).", "The profile is corrupt.")

    def many(self, indexes: np.ndarray, what: str) -> list[str]:
        idx = as_int64(indexes.astype(np.uint64)) if indexes.dtype == np.uint64 else indexes
        if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= len(self.table)):
            _fail(f"The profile's {what} points outside its string table.",
                  "The profile is corrupt.")
        table = self.table
        return [table[i] for i in idx.tolist()]


class _Ids:
    """Where each id of one table (functions, locations, mappings) sits, checked once
    (ids non-zero and unique), so references resolve with one array lookup."""

    def __init__(self, ids: np.ndarray, what: str, dtype: IntType = np.int32) -> None:
        self.what = what
        self.size = int(ids.size)
        self.dtype = dtype  # of the positions resolve returns
        if ids.size and not ids.all():
            _fail(f"The profile has a {what} with the reserved id 0.", "The profile is corrupt.")
        self.lut: np.ndarray | None = None  # id -> table position (-1: none), small ids
        if ids.size and int(ids.max()) <= 4 * ids.size + 4096:
            lut = np.full(int(ids.max()) + 1, -1, dtype=dtype)
            where = np.arange(ids.size, dtype=dtype)
            lut[ids.view(np.int64)] = where
            if not np.array_equal(lut[ids.view(np.int64)], where):  # a later twin won
                self._duplicate()
            self.lut = lut
            return
        self.order = np.argsort(ids, kind="stable")
        self.sorted_ids = ids[self.order]
        if self.sorted_ids.size > 1 and np.any(self.sorted_ids[1:] == self.sorted_ids[:-1]):
            self._duplicate()

    def _duplicate(self) -> NoReturn:
        _fail(f"The profile has two {self.what}s with the same id.", "The profile is corrupt.")

    def _missing(self, ref: int) -> NoReturn:
        _fail(f"The profile refers to {self.what} {ref}, which does not exist.",
              "The profile is corrupt.")

    def resolve(self, refs: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Table positions of id references (any unsigned dtype), written to ``out``
        when given; fail on unknown ids."""
        if refs.size == 0:
            return np.zeros(0, dtype=self.dtype) if out is None else out
        if self.size == 0:
            self._missing(int(refs[0]))
        lut = self.lut
        if lut is not None:
            if int(refs.max()) < lut.size:
                # (in range: checked above; "clip" skips numpy's own check)
                pos = np.take(lut, refs.view(np.int64) if refs.dtype == np.uint64 else refs,
                              out=out, mode="clip")
                if int(pos.min()) >= 0:
                    return pos
            big = refs >= lut.size
            bad = big | (lut[np.where(big, 0, refs).astype(np.int64)] < 0)
            self._missing(int(refs[np.flatnonzero(bad)[0]]))
        at = np.searchsorted(self.sorted_ids, refs.astype(np.uint64, copy=False))
        at_c = np.minimum(at, self.sorted_ids.size - 1)
        bad = self.sorted_ids[at_c] != refs
        if np.any(bad):
            self._missing(int(refs[np.flatnonzero(bad)[0]]))
        if out is None:
            return self.order[at_c].astype(self.dtype)
        out[...] = self.order[at_c]
        return out


class _Header(TypedDict):
    """The profile's scalar fields, read before the frame is freed (see ``_build``)."""

    default_sample_type: str
    time_nanos: int
    duration_nanos: int
    period_type: SampleType | None
    period: int
    comments: list[str]
    drop_frames: str
    keep_frames: str
    doc_url: str


def _build(box: list[profile_pb2.ProfileFrame]) -> Profile:
    frame = box.pop()
    strings = _Strings(_strings(frame))
    sample_types = [SampleType(strings.one(st.type, "sample type"),
                               strings.one(st.unit, "sample unit")) for st in frame.sample_type]
    if not sample_types:
        _fail("The profile has no sample types, so there is nothing to show.",
              "Is this really a heap or goroutine profile?")
    ntypes = len(sample_types)

    # Mappings (few): upb objects are fine.
    mappings = [
        Mapping(m.id, m.memory_start, m.memory_limit, m.file_offset,
                strings.one(m.filename, "mapping file name"),
                strings.one(m.build_id, "mapping build id"),
                m.has_functions, m.has_filenames, m.has_line_numbers, m.has_inline_frames)
        for m in frame.mapping
    ]
    map_index = _Ids(np.array([m.id for m in mappings], dtype=np.uint64), "mapping")

    # Functions.
    fmsgs = Messages.from_parts(list(frame.function))
    ff = decode_fields(fmsgs)
    nf = len(fmsgs)
    function_ids = scalar(ff, 1, nf)
    fn_index = _Ids(function_ids, "function")
    function_system_names = strings.many(scalar(ff, 3, nf), "function system name")
    # as pprof prints them: its symbolizer's default demangling (bot/pprof/names.py)
    function_names = pprof_names(strings.many(scalar(ff, 2, nf), "function name"),
                                 function_system_names)
    function_filenames = strings.many(scalar(ff, 4, nf), "function file name")
    function_start_lines = as_int64(scalar(ff, 5, nf))

    # Locations and their lines.
    lmsgs = Messages.from_parts(list(frame.location))
    lf = decode_fields(lmsgs)
    nl = len(lmsgs)
    location_ids = scalar(lf, 1, nl)
    # Sample location indexes are the biggest column (one per frame): int16 when the
    # table is small enough (most profiles), int32 otherwise.
    loc_index = _Ids(location_ids, "location",
                     np.int16 if location_ids.size < (1 << 15) else np.int32)
    mapping_refs = scalar(lf, 2, nl)
    location_mappings = np.full(nl, -1, dtype=np.int32)
    has_map = np.flatnonzero(mapping_refs)
    location_mappings[has_map] = map_index.resolve(mapping_refs[has_map])
    location_addresses = scalar(lf, 3, nl)
    location_folded = scalar(lf, 5, nl) != 0
    ls, le, lowner = sub_messages(lf, 4)
    line_fields = decode_fields(Messages(lmsgs.buf, ls, le))
    nlines = ls.size
    line_fn_ids = scalar(line_fields, 1, nlines)
    if nlines and not line_fn_ids.all():
        _fail("A location of the profile has a line without a function.",
              "The profile is corrupt.")
    line_functions = fn_index.resolve(line_fn_ids)
    line_numbers = as_int64(scalar(line_fields, 2, nlines))
    line_columns = as_int64(scalar(line_fields, 3, nlines))
    location_line_offsets = np.zeros(nl + 1, dtype=np.int64)
    np.cumsum(np.bincount(lowner, minlength=nl), out=location_line_offsets[1:])

    # Samples: the big one.
    period_type = None
    if frame.HasField("period_type"):
        period_type = SampleType(strings.one(frame.period_type.type, "period type"),
                                 strings.one(frame.period_type.unit, "period unit"))
    header: _Header = {
        "default_sample_type": strings.one(frame.default_sample_type, "default sample type"),
        "time_nanos": frame.time_nanos, "duration_nanos": frame.duration_nanos,
        "period_type": period_type, "period": frame.period,
        "comments": [strings.one(c, "comment") for c in frame.comment],
        "drop_frames": strings.one(frame.drop_frames, "drop_frames"),
        "keep_frames": strings.one(frame.keep_frames, "keep_frames"),
        "doc_url": strings.one(frame.doc_url, "doc url"),
    }
    sample_parts = list(frame.sample)
    del frame  # the parsed message is no longer needed: free it before the big join
    smsgs = Messages.from_parts(sample_parts)
    del sample_parts
    ns = len(smsgs)
    if ns == 0:
        _fail("The profile holds no samples, so there is nothing to show.",
              "Capture again once the service has done some work.")
    sf = decode_layout(smsgs, (0x12, 0x0A, 0x1A))  # Go order: values, ids, labels
    buf = smsgs.buf
    del smsgs  # the layout holds what is left to read: the message bounds can go
    raw_values, per_sample = layout_repeated_varints(sf, buf, 2, ns)
    if np.any(per_sample != ntypes):
        bad = int(np.flatnonzero(per_sample != ntypes)[0])
        _fail(f"A sample of the profile has {int(per_sample[bad])} values but the profile "
              f"declares {ntypes} sample types.", "The profile is corrupt.")
    values = as_int64(raw_values).reshape(ns, ntypes)
    del raw_values
    label_regions = layout_sub_messages(sf, 3)
    pending_labels = (partial(_labels, *_compact(buf, label_regions), strings)
                      if label_regions[0].size else None)
    del label_regions
    # Location ids last: the biggest array (one int32 per frame) is made once the
    # other fields' temporaries are gone, and the sample bytes go right after.
    sample_locations, per_sample = layout_repeated_varints(
        sf, buf, 1, ns, dtype=loc_index.dtype, convert=loc_index.resolve)
    del sf, buf
    sample_offsets = np.zeros(ns + 1, dtype=np.int64)
    np.cumsum(per_sample, out=sample_offsets[1:])
    del per_sample

    return Profile(
        sample_types=sample_types,
        function_ids=function_ids,
        function_names=function_names,
        function_system_names=function_system_names,
        function_filenames=function_filenames,
        function_start_lines=function_start_lines,
        location_ids=location_ids,
        location_mappings=location_mappings,
        location_addresses=location_addresses,
        location_folded=location_folded,
        location_line_offsets=location_line_offsets,
        line_functions=line_functions,
        line_numbers=line_numbers,
        line_columns=line_columns,
        sample_offsets=sample_offsets,
        sample_locations=sample_locations,
        values=values,
        strings=strings.table,
        pending_labels=pending_labels,
        mappings=mappings,
        **header,
    )


def _compact(buf: np.ndarray, regions: tuple[np.ndarray, np.ndarray, np.ndarray],
             ) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], np.ndarray]:
    """Copy the label payloads out of the big sample buffer, so it can be freed."""
    starts, ends, owner = regions
    lens = ends - starts
    small = buf[ranges(starts, lens)]
    new_ends = np.cumsum(lens)
    return (new_ends - lens, new_ends, owner.astype(np.int32)), small


def _labels(regions: tuple[np.ndarray, np.ndarray, np.ndarray], buf: np.ndarray,
            strings: _Strings) -> dict[str, np.ndarray]:
    """Sample labels as columns (Go heap samples each carry a numeric "bytes" label).

    Decoded on first use: top, diff and summaries never need labels.
    """
    starts, ends, owner = regions
    try:
        cols = scalars(Messages(buf, starts, ends), (1, 2, 3, 4))
    except WireError as exc:
        _fail(f"A sample label of the profile is malformed ({exc}).", "The profile is corrupt.")
    n = starts.size
    key, sval, num, unit = (as_int64(cols.pop(k)) for k in (1, 2, 3, 4))
    for col, what in ((key, "label key"), (sval, "label value"), (unit, "label unit")):
        if n and (int(col.min()) < 0 or int(col.max()) >= len(strings.table)):
            _fail(f"The profile's {what} points outside its string table.",
                  "The profile is corrupt.")
    # pprof ignores a label with neither a string nor a number nor a unit.
    keep = (sval != 0) | (num != 0) | (unit != 0)
    num = np.where(sval != 0, 0, num)
    unit = np.where(sval != 0, 0, unit)
    return {"label_samples": owner[keep], "label_keys": key[keep].astype(np.int32),
            "label_strs": sval[keep].astype(np.int32), "label_nums": num[keep],
            "label_units": unit[keep].astype(np.int32)}
