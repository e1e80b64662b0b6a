"""Vectorized protobuf wire decoding of many small messages at once.

A heap profile holds hundreds of thousands of Sample messages made only of
varints. Asking upb for them one by one costs a Python call per sample and per
frame, so instead upb hands us each message as raw bytes (see ProfileFrame in
profile.proto) and this module decodes all of them together with numpy: one
pass per field *position* (a message has a handful of fields), not per message.
Malformed input raises :class:`WireError`; the caller turns it into a
``ProfileError`` with context.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

_U64 = np.uint64
_MAX_VARINT = 10


class WireError(ValueError):
    """The bytes are not valid protobuf wire format."""


@dataclass(slots=True)
class Messages:
    """Many messages laid end to end in one buffer: message i is buf[starts[i]:ends[i]]."""

    buf: np.ndarray  # uint8
    starts: np.ndarray  # int64
    ends: np.ndarray  # int64

    @classmethod
    def from_parts(cls, parts: Sequence[bytes]) -> Messages:
        lens = np.fromiter(map(len, parts), dtype=np.int64, count=len(parts))
        ends = np.cumsum(lens)
        starts = ends - lens
        buf = np.frombuffer(b"".join(parts), dtype=np.uint8)
        return cls(buf, starts, ends)

    def __len__(self) -> int:
        return int(self.starts.size)


@dataclass(slots=True)
class Fields:
    """Every field of every message (``select`` orders them by message, then position).

    For varint fields ``value`` holds the value; for length-delimited fields
    ``start``/``end`` delimit the payload in the buffer.
    """

    msg: np.ndarray  # int64, which message
    number: np.ndarray  # int64, field number
    wire: np.ndarray  # int64, wire type
    pos: np.ndarray  # int64, where the field's tag starts (orders repeated fields)
    start: np.ndarray  # int64, payload start (after tag and length)
    end: np.ndarray  # int64, payload end
    value: np.ndarray  # uint64, varint value (0 for other wire types)

    def select(self, number: int, wire: int | None = None) -> np.ndarray:
        mask = self.number == number
        if wire is not None:
            mask &= self.wire == wire
        sel = np.flatnonzero(mask)
        msg = self.msg[sel]
        if msg.size > 1 and np.any(msg[1:] < msg[:-1]):
            sel = sel[np.lexsort((self.pos[sel], msg))]
        return sel


def varints_at(buf: np.ndarray, pos: np.ndarray,
               limit: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Decode one varint at each position; return (values, position after each)."""
    n = pos.size
    values = np.zeros(n, dtype=_U64)
    nxt = pos.copy()
    todo = np.arange(n)
    for k in range(_MAX_VARINT):
        if todo.size == 0:
            return values, nxt
        p = pos[todo] + k
        if np.any(p >= limit[todo]):
            raise WireError("truncated varint")
        byte = buf[p]
        values[todo] |= (byte & 0x7F).astype(_U64) << _U64(7 * k)
        done = byte < 0x80
        nxt[todo[done]] = p[done] + 1
        todo = todo[~done]
    if todo.size:
        raise WireError("varint longer than 10 bytes")
    return values, nxt


def decode_fields(msgs: Messages) -> Fields:
    """Split every message into its fields (tag, payload bounds, varint values)."""
    buf, ends = msgs.buf, msgs.ends
    cur = msgs.starts.copy()
    active = np.flatnonzero(cur < ends)
    out: list[tuple[np.ndarray, ...]] = []
    while active.size:
        p = cur[active]
        lim = ends[active]
        tag, after_tag = varints_at(buf, p, lim)
        wire = (tag & _U64(7)).astype(np.int64)
        number = (tag >> _U64(3)).astype(np.int64)
        if np.any(number == 0):
            raise WireError("field number 0")
        start = after_tag.copy()
        end = after_tag.copy()
        value = np.zeros(active.size, dtype=_U64)

        is_varint = np.flatnonzero(wire == 0)
        if is_varint.size:
            v, nxt = varints_at(buf, after_tag[is_varint], lim[is_varint])
            value[is_varint] = v
            end[is_varint] = nxt
        is_len = np.flatnonzero(wire == 2)
        if is_len.size:
            length, nxt = varints_at(buf, after_tag[is_len], lim[is_len])
            if np.any(length > _U64(1 << 40)):
                raise WireError("impossible length")
            start[is_len] = nxt
            end[is_len] = nxt + length.astype(np.int64)
        is_64 = np.flatnonzero(wire == 1)
        end[is_64] += 8
        is_32 = np.flatnonzero(wire == 5)
        end[is_32] += 4
        if np.any((wire == 3) | (wire == 4) | (wire > 5)):
            raise WireError("unsupported wire type (groups or garbage)")
        if np.any(end > lim):
            raise WireError("field runs past the end of its message")
        out.append((active, number, wire, p, start, end, value))
        cur[active] = end
        active = active[end < lim]
    if not out:
        empty = np.zeros(0, dtype=np.int64)
        return Fields(empty, empty, empty, empty, empty, empty, np.zeros(0, dtype=_U64))
    # Iteration-major order: the k-th field of every message, then the (k+1)-th.
    return Fields(*(np.concatenate(c) for c in zip(*out, strict=True)))


@dataclass(slots=True)
class LayoutFields:
    """Fields of messages decoded by ``decode_layout``: per field number, the
    length-delimited payloads of the messages in the expected layout (sorted by
    message), plus the general decoding of the messages in any other layout."""

    regions: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]  # number -> (msg, start, end)
    slow: Fields


def decode_layout(msgs: Messages, tags: Sequence[int]) -> LayoutFields:
    """Decode messages that are a run of length-delimited fields in a known order
    (Go writes Sample as values, location ids, labels) with a few array operations
    over all messages; messages in another layout go through ``decode_fields``."""
    buf, ends = msgs.buf, msgs.ends
    n = len(msgs)
    cur = msgs.starts.copy()
    ok = np.ones(n, dtype=bool)
    done = cur >= ends
    found: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]] = []
    for tag in tags:
        live = np.flatnonzero(ok & ~done)
        if live.size == 0:
            break
        p = cur[live]
        match = buf[p] == tag
        ok[live[~match]] = False
        live, p = live[match], p[match]
        length, after = varints_at(buf, p + 1, ends[live])
        end = after + length.astype(np.int64)
        fits = end <= ends[live]
        ok[live[~fits]] = False
        live, after, end = live[fits], after[fits], end[fits]
        found.append((tag >> 3, live, after, end))
        cur[live] = end
        done[live] = end >= ends[live]
    ok &= done
    regions = {}
    for number, live, start, end in found:
        keep = ok[live]
        regions[number] = (live[keep], start[keep], end[keep])
    bad = np.flatnonzero(~ok)
    slow = decode_fields(Messages(buf, msgs.starts[bad], ends[bad]))
    slow.msg = bad[slow.msg]
    return LayoutFields(regions, slow)


def layout_repeated_varints(fields: LayoutFields, buf: np.ndarray, number: int, n: int,
                            convert: Callable[[np.ndarray], np.ndarray] | None = None,
                            dtype: type = _U64) -> tuple[np.ndarray, np.ndarray]:
    """``repeated_varints`` for a LayoutFields."""
    empty = np.zeros(0, dtype=np.int64)
    fmsg, fstart, fend = fields.regions.get(number, (empty, empty, empty))
    slow = fields.slow
    packed = slow.select(number, 2)
    if packed.size:  # merge the few odd messages' regions into message order
        at = np.searchsorted(fmsg, slow.msg[packed])
        fmsg = np.insert(fmsg, at, slow.msg[packed])
        fstart = np.insert(fstart, at, slow.start[packed])
        fend = np.insert(fend, at, slow.end[packed])
    single = slow.select(number, 0)
    return _repeated(buf, fmsg, fstart, fend, slow.msg[single], slow.value[single],
                     slow.pos[single], n, convert, dtype)


def layout_sub_messages(fields: LayoutFields,
                        number: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``sub_messages`` for a LayoutFields (owner order is not guaranteed)."""
    empty = np.zeros(0, dtype=np.int64)
    fmsg, fstart, fend = fields.regions.get(number, (empty, empty, empty))
    s, e, m = sub_messages(fields.slow, number)
    return np.concatenate([fstart, s]), np.concatenate([fend, e]), np.concatenate([fmsg, m])


_CHUNK_BYTES = 1 << 20


def packed_varints(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray,
                   convert: Callable[[np.ndarray], np.ndarray] | None = None,
                   dtype: type = _U64) -> tuple[np.ndarray, np.ndarray]:
    """Decode every varint inside the given regions, region after region.

    Returns (values, number of values in each region). Works in chunks of a few
    MiB into one preallocated array, so temporaries stay small; ``convert`` maps
    each chunk's uint64 values to the stored ``dtype`` (e.g. ids to int32 indexes).
    """
    lens = ends - starts
    counts = np.zeros(starts.size, dtype=np.int64)
    if starts.size == 0 or int(lens.sum()) == 0:
        return np.zeros(0, dtype=_U64), counts
    nz = lens > 0
    if np.any(buf[ends[nz] - 1] >= 0x80):
        raise WireError("truncated varint in packed field")
    out = np.empty(int(lens.sum()), dtype=dtype)  # at most one value per byte
    cum = np.cumsum(lens)
    cuts = np.searchsorted(cum, np.arange(_CHUNK_BYTES, int(cum[-1]), _CHUNK_BYTES))
    bounds = sorted({0, starts.size, *np.minimum(cuts + 1, starts.size).tolist()})
    filled = 0
    for lo, hi in itertools.pairwise(bounds):
        if hi > lo:
            values, per_region = _packed_chunk(buf, starts[lo:hi], lens[lo:hi])
            if convert is not None:
                values = convert(values.astype(_U64, copy=False))
            out[filled:filled + values.size] = values
            filled += values.size
            counts[lo:hi] = per_region
    # Multi-byte varints leave the tail unused: copy so the slack can be freed.
    return (out[:filled].copy() if filled < out.size else out), counts


def _packed_chunk(buf: np.ndarray, starts: np.ndarray,
                  lens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    idx = ranges(starts, lens)
    b = buf[idx]
    del idx
    cont = b >= 0x80
    if not cont.any():  # every varint is one byte: the common case for small ids
        return b, lens
    first = np.ones(b.size, dtype=bool)
    first[1:] = ~cont[:-1]
    region_first = np.cumsum(lens) - lens  # where each region starts
    first[region_first[lens > 0]] = True
    group_start = np.flatnonzero(first)
    values = (b[group_start] & 0x7F).astype(_U64)
    active = np.flatnonzero(cont[group_start])
    k = 1
    while active.size:
        if k >= _MAX_VARINT:
            raise WireError("varint longer than 10 bytes")
        byte = b[group_start[active] + k]
        values[active] |= (byte & 0x7F).astype(_U64) << _U64(7 * k)
        active = active[byte >= 0x80]
        k += 1
    counted = np.concatenate(([0], np.cumsum(first, dtype=np.int64)))
    per_region = counted[np.cumsum(lens)] - counted[region_first]
    return values, per_region


def ranges(starts: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """Concatenation of arange(s, s + n) for every (s, n): numpy without a Python loop."""
    total = int(lens.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    small = total < (1 << 31) and (starts.size == 0 or int(starts.max()) < (1 << 31))
    dtype = np.int32 if small else np.int64
    shift = (starts - (np.cumsum(lens) - lens)).astype(dtype)
    out = np.repeat(shift, lens)
    out += np.arange(total, dtype=dtype)
    return out


def lookup_table(ids: np.ndarray) -> np.ndarray | None:
    """A dense id → position table when ids are small integers (the usual case)."""
    if ids.size == 0:
        return None
    top = int(ids.max())
    if top > 4 * ids.size + 4096:
        return None
    lut = np.full(top + 1, -1, dtype=np.int32)
    lut[ids.astype(np.int64)] = np.arange(ids.size, dtype=np.int32)
    return lut


def repeated_varints(fields: Fields, buf: np.ndarray, number: int, n: int,
                     convert: Callable[[np.ndarray], np.ndarray] | None = None,
                     dtype: type = _U64) -> tuple[np.ndarray, np.ndarray]:
    """A repeated varint field of ``n`` messages, packed or not.

    Returns (values in message order, number of values per message), each value
    passed through ``convert`` (stored as ``dtype``) when given.
    """
    packed = fields.select(number, 2)
    single = fields.select(number, 0)
    return _repeated(buf, fields.msg[packed], fields.start[packed], fields.end[packed],
                     fields.msg[single], fields.value[single], fields.pos[single], n,
                     convert, dtype)


def _repeated(buf: np.ndarray, pmsg: np.ndarray, pstart: np.ndarray, pend: np.ndarray,
              smsg: np.ndarray, svalue: np.ndarray, spos: np.ndarray, n: int,
              convert: Callable[[np.ndarray], np.ndarray] | None,
              dtype: type) -> tuple[np.ndarray, np.ndarray]:
    pv, per_region = packed_varints(buf, pstart, pend, convert, dtype)
    counts = np.bincount(pmsg, weights=per_region, minlength=n).astype(np.int64)
    if smsg.size == 0:
        return pv, counts
    sv = convert(svalue) if convert is not None else svalue
    single_counts = np.bincount(smsg, minlength=n)
    if np.any((single_counts > 0) & (counts > 0)):
        # Both encodings inside one message (legal, never seen from Go): order by position.
        owner = np.concatenate([np.repeat(pmsg, per_region), smsg])
        pos = np.concatenate([np.repeat(pstart, per_region), spos])
        order = np.lexsort((pos, owner))
        return np.concatenate([pv, sv])[order], counts + single_counts
    # Go writes short lists unpacked: put those messages' values between the others.
    before = np.concatenate(([0], np.cumsum(counts)))
    return np.insert(pv, before[smsg], sv), counts + single_counts


def scalar(fields: Fields, number: int, n: int, wire: int = 0) -> np.ndarray:
    """A singular varint field per message (last occurrence wins, default 0)."""
    out = np.zeros(n, dtype=_U64)
    sel = fields.select(number, wire)
    out[fields.msg[sel]] = fields.value[sel]
    return out


def sub_messages(fields: Fields, number: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Length-delimited sub-messages of one field: (starts, ends, owner message)."""
    sel = fields.select(number, 2)
    return fields.start[sel], fields.end[sel], fields.msg[sel]


def as_int64(values: np.ndarray) -> np.ndarray:
    """Reinterpret uint64 varints as two's-complement int64 (proto int64 fields)."""
    return values.view(np.int64)
