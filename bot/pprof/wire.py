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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

_U64 = np.uint64
_MAX_VARINT = 10

# The integer column types decoding writes (np.uint64, np.int32, np.int16, ...).
IntType = type[np.integer[Any]]


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
    """Decode one varint at each position; return (values, position after each).

    The first byte is read for all positions at once without index bookkeeping
    (most varints here are tags and short lengths: one byte); only the longer
    ones go round the loop.
    """
    if pos.size == 0:
        return np.zeros(0, dtype=_U64), pos.copy()
    if np.any(pos >= limit):
        raise WireError("truncated varint")
    byte = buf[pos]
    values = (byte & 0x7F).astype(_U64)
    nxt = pos + 1
    todo = np.flatnonzero(byte >= 0x80)
    for k in range(1, _MAX_VARINT):
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
    out = list(_field_passes(msgs))
    if not out:
        empty = np.zeros(0, dtype=np.int64)
        return Fields(empty, empty, empty, empty, empty, empty, np.zeros(0, dtype=_U64))
    # Iteration-major order: the k-th field of every message, then the (k+1)-th.
    return Fields(*(np.concatenate(c) for c in zip(*out, strict=True)))


def _field_passes(msgs: Messages) -> Iterator[tuple[np.ndarray, ...]]:
    """The k-th field of every message that has one, for k = 0, 1, ...: (message,
    number, wire type, tag position, payload start, payload end, varint value)."""
    buf, ends = msgs.buf, msgs.ends
    cur = msgs.starts.copy()
    active = np.flatnonzero(cur < ends)
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
        yield active, number, wire, p, start, end, value
        cur[active] = end
        active = active[end < lim]


_SCALAR_BLOCK = 1 << 14  # messages per block in ``scalars``: bounds its temporaries


def scalars(msgs: Messages, numbers: Sequence[int]) -> dict[int, np.ndarray]:
    """``scalar(decode_fields(msgs), k, n)`` for each k of ``numbers`` (singular
    varint fields, last occurrence wins, default 0), without the field table: each
    pass writes the fields it read straight into their columns (labels: 4 columns
    instead of 7 per field, no sort), a block of messages at a time."""
    n = len(msgs)
    cols = {k: np.zeros(n, dtype=_U64) for k in numbers}
    for lo in range(0, n, _SCALAR_BLOCK):
        hi = min(lo + _SCALAR_BLOCK, n)
        block = Messages(msgs.buf, msgs.starts[lo:hi], msgs.ends[lo:hi])
        for active, number, wire, _p, _start, _end, value in _field_passes(block):
            varint = wire == 0
            for k, col in cols.items():
                sel = np.flatnonzero(varint & (number == k))
                if sel.size:
                    col[lo + active[sel]] = value[sel]
    return cols


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
    over all messages; messages in another layout go through ``decode_fields``.

    Only the messages still being read are kept in the working arrays (they shrink
    as messages end), so no pass touches all ``n`` messages per field.
    """
    buf, ends = msgs.buf, msgs.ends
    n = len(msgs)
    ok = np.ones(n, dtype=bool)
    index = np.int32 if max(n, buf.size) < (1 << 31) else np.int64  # halves the tables
    live = np.flatnonzero(msgs.starts < ends).astype(index)  # messages with fields to read
    p = msgs.starts[live].astype(index)
    lim = ends[live].astype(index)
    found: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]] = []
    for tag in tags:
        if live.size == 0:
            break
        match = buf[p] == tag
        if not match.all():
            ok[live[~match]] = False
            live, p, lim = live[match], p[match], lim[match]
        length, after = varints_at(buf, p + 1, lim)
        fits = length <= (lim - after).astype(_U64)  # unsigned: a huge length never wraps
        if not fits.all():
            ok[live[~fits]] = False
            live, lim, after, length = live[fits], lim[fits], after[fits], length[fits]
        end = after + length.astype(index)
        found.append((tag >> 3, live, after, end))
        more = end < lim
        live, p, lim = live[more], end[more], lim[more]
    ok[live] = False  # fields beyond the expected ones: the general decoder reads them
    regions = {}
    while found:  # one field at a time, so the unfiltered and filtered copies never pile up
        number, at, start, end = found.pop(0)
        keep = ok[at]
        regions[number] = (at, start, end) if keep.all() else (at[keep], start[keep], end[keep])
        del at, start, end, keep
    bad = np.flatnonzero(~ok)
    slow = decode_fields(Messages(buf, msgs.starts[bad], ends[bad]))
    slow.msg = bad[slow.msg]
    return LayoutFields(regions, slow)


def layout_repeated_varints(fields: LayoutFields, buf: np.ndarray, number: int, n: int,
                            convert: Callable[..., np.ndarray] | None = None,
                            dtype: IntType = _U64) -> tuple[np.ndarray, np.ndarray]:
    """``repeated_varints`` for a LayoutFields (it takes the field's regions: once per field)."""
    empty = np.zeros(0, dtype=np.int64)
    fmsg, fstart, fend = fields.regions.pop(number, (empty, empty, empty))
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
    """``sub_messages`` for a LayoutFields (owner order is not guaranteed; it takes the
    field's regions: once per field)."""
    empty = np.zeros(0, dtype=np.int64)
    fmsg, fstart, fend = fields.regions.pop(number, (empty, empty, empty))
    s, e, m = sub_messages(fields.slow, number)
    return np.concatenate([fstart, s]), np.concatenate([fend, e]), np.concatenate([fmsg, m])


_CHUNK_BYTES = 1 << 19


def packed_varints(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray,
                   convert: Callable[..., np.ndarray] | None = None,
                   dtype: IntType = _U64) -> tuple[np.ndarray, np.ndarray]:
    """Decode every varint inside the given regions, region after region.

    Returns (values, number of values in each region). Works in chunks of about
    512 KiB of input into one preallocated array, so temporaries stay small;
    ``convert`` maps each chunk's values (an unsigned array: uint8 when every
    varint of the chunk is one byte, else uint64) to the stored ``dtype`` (e.g.
    ids to int32 indexes); called as ``convert(values, out=...)`` it writes into
    the output array directly.
    """
    return _packed(buf, starts, ends, convert, dtype, None, None)


def _packed(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray,
            convert: Callable[..., np.ndarray] | None, dtype: IntType,
            ins_at: np.ndarray | None, ins_values: np.ndarray | None,
            ) -> tuple[np.ndarray, np.ndarray]:
    """``packed_varints``, plus extra values put before region ``ins_at[i]`` (sorted;
    ``starts.size``: after the last region) while the output is written, so
    unpacked values join the packed ones without copying the whole array again."""
    lens = ends - starts
    counts = np.zeros(starts.size, dtype=np.int64)
    nins = 0 if ins_at is None else int(ins_at.size)
    total = int(lens.sum())
    if total + nins == 0:
        return np.zeros(0, dtype=dtype), counts
    nz = lens > 0
    if np.any(buf[ends[nz] - 1] >= 0x80):
        raise WireError("truncated varint in packed field")
    # At most one value per byte (plus the extra ones): pages never written cost no
    # memory, and the array is fitted to the first chunk's bytes per value, then
    # shrunk to size at the end, both in place (realloc), never copied.
    out = np.empty(total + nins, dtype=dtype)
    cum = np.cumsum(lens)
    bounds = [0, starts.size]
    if total > _CHUNK_BYTES:
        cuts = np.searchsorted(cum, np.arange(_CHUNK_BYTES, total, _CHUNK_BYTES))
        bounds = sorted({0, starts.size, *np.minimum(cuts + 1, starts.size).tolist()})
    filled = done = 0
    for lo, hi in itertools.pairwise(bounds):
        values, per_region = _packed_chunk(buf, starts[lo:hi], lens[lo:hi])
        upto = done
        if ins_at is not None:
            upto = int(np.searchsorted(ins_at, hi)) if hi < starts.size else nins
        written = False
        if convert is not None:
            if upto == done and filled + values.size <= out.size:  # convert in place
                values = convert(values, out=out[filled:filled + values.size])
                written = True
            else:
                values = convert(values)
        if ins_at is not None and ins_values is not None and upto > done:
            # the extra values that go inside (or right after) this chunk
            values = values.astype(dtype, copy=False)
            before = np.zeros(hi - lo + 1, dtype=np.int64)
            np.cumsum(per_region, out=before[1:])
            values = np.insert(values, before[ins_at[done:upto] - lo], ins_values[done:upto])
            done = upto
        rest = total - (int(cum[hi - 1]) if hi else 0)  # bytes still to decode
        if filled + values.size > out.size:  # the estimate was short: room for the worst
            out.resize(filled + values.size + rest + nins - done, refcheck=False)
        if not written:
            out[filled:filled + values.size] = values
        filled += values.size
        del values  # (may be a view of out, which the resizes below move)
        counts[lo:hi] = per_region
        if lo == 0 and rest:
            per_byte = int(per_region.sum()) / max(total - rest, 1)
            guess = filled + nins - done + int(rest * per_byte * 1.125) + 1024
            if guess < out.size:
                out.resize(guess, refcheck=False)
    if filled < out.size:
        out.resize(filled, refcheck=False)
    return out, counts


def _packed_chunk(buf: np.ndarray, starts: np.ndarray,
                  lens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Values of the varints in some regions (uint8 when all are one byte), and how
    many each region holds. Temporaries are int32 and bool: a few bytes per input
    byte."""
    b = _gather(buf, starts, lens)
    if b.size == 0 or int(b.max()) < 0x80:  # every varint is one byte: small ids
        return b, lens
    last = b < 0x80  # the last byte of each varint (regions end with one: checked)
    ends = np.flatnonzero(last)
    if ends.size < (1 << 31):
        ends = ends.astype(np.int32)
    firsts = np.empty_like(ends)
    firsts[0] = 0
    np.add(ends[:-1], 1, out=firsts[1:])
    values = (b[firsts] & 0x7F).astype(_U64)
    active = np.flatnonzero(ends > firsts)
    k = 1
    while active.size:
        if k >= _MAX_VARINT:
            raise WireError("varint longer than 10 bytes")
        at = firsts[active] + k
        values[active] |= (b[at] & 0x7F).astype(_U64) << _U64(7 * k)
        active = active[ends[active] > at]
        k += 1
    counted = np.zeros(b.size + 1, dtype=np.int32 if b.size < (1 << 31) else np.int64)
    np.cumsum(last, out=counted[1:])
    bounds = np.cumsum(lens)
    per_region = (counted[bounds] - counted[bounds - lens]).astype(np.int64)
    return values, per_region


def _gather(buf: np.ndarray, starts: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """The bytes of the regions, concatenated. Regions in buffer order that cover
    most of their span (location ids in Go's samples) are cut out of it with one
    run-length mask, cheaper than building an index per byte."""
    if starts.size == 0:
        return buf[:0]
    ends = starts + lens
    if starts.size > 1:
        gaps = starts[1:] - ends[:-1]
        if int(gaps.min()) < 0 or int(ends[-1] - starts[0]) > 2 * int(lens.sum()):
            return buf[ranges(starts, lens)]  # out of order, or sparse: index every byte
        runs = np.empty(2 * starts.size - 1, dtype=np.int64)
        runs[0::2] = lens
        runs[1::2] = gaps
        keep = np.zeros(runs.size, dtype=bool)
        keep[0::2] = True
        return buf[int(starts[0]):int(ends[-1])][np.repeat(keep, runs)]
    return buf[int(starts[0]):int(ends[0])].copy()


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


def repeated_varints(fields: Fields, buf: np.ndarray, number: int, n: int,
                     convert: Callable[..., np.ndarray] | None = None,
                     dtype: IntType = _U64) -> tuple[np.ndarray, np.ndarray]:
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
              convert: Callable[..., np.ndarray] | None,
              dtype: IntType) -> tuple[np.ndarray, np.ndarray]:
    if smsg.size == 0:
        pv, per_region = _packed(buf, pstart, pend, convert, dtype, None, None)
        return pv, _per_message(pmsg, per_region, n)
    sv = (convert(svalue) if convert is not None else svalue).astype(dtype, copy=False)
    single_counts = np.bincount(smsg, minlength=n)
    if np.any(single_counts[pmsg] > 0):
        # Both encodings inside one message (legal, never seen from Go): order by position.
        pv, per_region = _packed(buf, pstart, pend, convert, dtype, None, None)
        owner = np.concatenate([np.repeat(pmsg, per_region), smsg])
        pos = np.concatenate([np.repeat(pstart, per_region), spos])
        order = np.lexsort((pos, owner))
        return np.concatenate([pv, sv])[order], _per_message(pmsg, per_region, n) + single_counts
    # Go writes short lists unpacked: those messages' values go between the others'
    # regions (before the first region of a later message) as the output is written.
    pv, per_region = _packed(buf, pstart, pend, convert, dtype,
                             np.searchsorted(pmsg, smsg), sv)
    return pv, _per_message(pmsg, per_region, n) + single_counts


def _per_message(msg: np.ndarray, per_region: np.ndarray, n: int) -> np.ndarray:
    """Values per message, from values per region (a message may have several regions)."""
    if msg.size > 1 and np.all(msg[1:] > msg[:-1]):  # one region per message: no sums
        counts = np.zeros(n, dtype=np.int64)
        counts[msg] = per_region
        return counts
    return np.bincount(msg, weights=per_region, minlength=n).astype(np.int64)


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
