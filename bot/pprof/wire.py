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
from collections.abc import Sequence
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


_CHUNK_BYTES = 1 << 22


def decode_fields_fast(msgs: Messages, tags: Sequence[int]) -> Fields:
    """``decode_fields`` for messages that are a run of length-delimited fields in a
    known order (Go writes Sample as location ids, values, labels): a few array
    operations over all messages instead of one pass per field. Messages in another
    layout go through the general decoder."""
    buf, ends = msgs.buf, msgs.ends
    n = len(msgs)
    cur = msgs.starts.copy()
    ok = np.ones(n, dtype=bool)
    done = cur >= ends
    records: list[tuple[np.ndarray, ...]] = []
    for number, tag in enumerate(tags):
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
        live, p, after, end = live[fits], p[fits], after[fits], end[fits]
        records.append((live, np.full(live.size, tag >> 3, dtype=np.int64),
                        np.full(live.size, 2, dtype=np.int64), p, after, end,
                        np.zeros(live.size, dtype=_U64)))
        cur[live] = end
        done[live] = end >= ends[live]
        del number
    ok &= done
    good = np.flatnonzero(ok)
    cols: list[list[np.ndarray]] = [[] for _ in range(7)]
    keep = np.zeros(n, dtype=bool)
    keep[good] = True
    for rec in records:
        sel = keep[rec[0]]
        for c, arr in zip(cols, rec, strict=True):
            c.append(arr[sel])
    bad = np.flatnonzero(~ok)
    if bad.size:
        slow = decode_fields(Messages(buf, msgs.starts[bad], ends[bad]))
        slow.msg = bad[slow.msg]
        for c, arr in zip(cols, (slow.msg, slow.number, slow.wire, slow.pos, slow.start,
                                 slow.end, slow.value), strict=True):
            c.append(arr)
    if not cols[0]:
        return decode_fields(Messages(buf, msgs.starts[:0], ends[:0]))
    return Fields(*(np.concatenate(c) for c in cols))


def packed_varints(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray, owner: np.ndarray,
                   want_pos: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Decode every varint inside the given regions, region after region.

    Returns (values, owner of each value, buffer position of each value if
    ``want_pos``). Works in chunks of a few MiB so temporaries stay small.
    """
    lens = ends - starts
    keep = lens > 0
    if not keep.all():
        starts, ends, owner, lens = starts[keep], ends[keep], owner[keep], lens[keep]
    if starts.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return np.zeros(0, dtype=_U64), empty, (empty if want_pos else None)
    if np.any(buf[ends - 1] >= 0x80):
        raise WireError("truncated varint in packed field")
    cum = np.cumsum(lens)
    cuts = np.searchsorted(cum, np.arange(_CHUNK_BYTES, int(cum[-1]), _CHUNK_BYTES))
    bounds = sorted({0, starts.size, *np.minimum(cuts + 1, starts.size).tolist()})
    parts = []
    for lo, hi in itertools.pairwise(bounds):
        if hi > lo:
            parts.append(_packed_chunk(buf, starts[lo:hi], lens[lo:hi], owner[lo:hi], want_pos))
    if len(parts) == 1:
        return parts[0]
    values = np.concatenate([x[0] for x in parts])
    owners = np.concatenate([x[1] for x in parts])
    pos = np.concatenate([x[2] for x in parts]) if want_pos else None
    return values, owners, pos


def _packed_chunk(buf: np.ndarray, starts: np.ndarray, lens: np.ndarray, owner: np.ndarray,
                  want_pos: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    idx = ranges(starts, lens)
    b = buf[idx]
    cont = b >= 0x80
    if not cont.any():  # every varint is one byte: the common case for small ids
        return b.astype(_U64), np.repeat(owner, lens), (idx if want_pos else None)
    first = np.ones(idx.size, dtype=bool)
    first[1:] = ~cont[:-1]
    region_first = np.cumsum(lens) - lens  # where each region starts in idx
    first[region_first] = True
    group_start = np.flatnonzero(first)
    values = (b[group_start] & 0x7F).astype(_U64)
    active = np.flatnonzero(cont[group_start])
    k = 1
    while active.size:
        if k >= _MAX_VARINT:
            raise WireError("varint longer than 10 bytes")
        at = group_start[active] + k
        byte = b[at]
        values[active] |= (byte & 0x7F).astype(_U64) << _U64(7 * k)
        active = active[byte >= 0x80]
        k += 1
    counted = np.cumsum(first, dtype=np.int64)
    ends_in_idx = np.cumsum(lens) - 1
    per_region = np.diff(np.concatenate(([0], counted[ends_in_idx])))
    return values, np.repeat(owner, per_region), (idx[group_start] if want_pos else None)


def ranges(starts: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """Concatenation of arange(s, s + n) for every (s, n): numpy without a Python loop."""
    total = int(lens.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    shift = starts - (np.cumsum(lens) - lens)
    return np.repeat(shift, lens) + np.arange(total, dtype=np.int64)


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


def repeated_varints(fields: Fields, buf: np.ndarray, number: int) -> tuple[np.ndarray, np.ndarray]:
    """A repeated varint field, packed or not: (values in order, message of each)."""
    packed = fields.select(number, 2)
    single = fields.select(number, 0)
    pv, pm, ppos = packed_varints(buf, fields.start[packed], fields.end[packed],
                                  fields.msg[packed], want_pos=single.size > 0)
    if single.size == 0:
        return pv, pm
    sv, sm = fields.value[single], fields.msg[single]
    if pv.size == 0:
        return sv, sm
    # Both encodings occur (Go writes short lists unpacked): insert the few single
    # values into the packed sequence, keeping (message, position) order.
    packed_key = pm.astype(np.int64) << 40 | ppos
    single_key = sm.astype(np.int64) << 40 | fields.pos[single]
    if np.any(np.diff(packed_key) < 0) or np.any(np.diff(single_key) < 0):
        order = np.argsort(np.concatenate([packed_key, single_key]), kind="stable")
        return np.concatenate([pv, sv])[order], np.concatenate([pm, sm])[order]
    at = np.searchsorted(packed_key, single_key)
    return np.insert(pv, at, sv), np.insert(pm, at, sm)


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
