"""Size limits and bounded gzip inflation.

A profile comes from a service over HTTP, so it is untrusted: a gzip bomb must be
refused without holding it in memory. Ordinary profiles inflate in one pass; one
that passes 64 MiB is first measured without keeping its bytes, so a bomb costs
at most one chunk of memory and is refused as soon as it passes the cap.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from bot.errors import ProfileError

MiB = 1 << 20
_GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 8 * MiB
_HOLD = 64 * MiB  # inflate in one pass up to this; beyond it, count first


@dataclass(frozen=True, slots=True)
class Limits:
    """Largest profile heapbot accepts, compressed and inflated."""

    max_compressed: int = 64 * MiB
    max_decompressed: int = 512 * MiB


DEFAULT_LIMITS = Limits()


def _mib(n: int) -> str:
    return f"{n / MiB:.0f} MiB" if n >= MiB else f"{n} bytes"


def is_gzip(data: bytes | bytearray) -> bool:
    return data[:2] == _GZIP_MAGIC


def inflate(data: bytes | bytearray, limits: Limits = DEFAULT_LIMITS) -> bytes | bytearray:
    """Return the raw protobuf bytes of ``data`` (gzip, multi-member gzip, or raw: then
    ``data`` itself)."""
    if len(data) > limits.max_compressed:
        raise ProfileError(
            f"The profile is {_mib(len(data))}, more than the {_mib(limits.max_compressed)} "
            "heapbot accepts.",
            hint="Capture a smaller profile or raise the limit (Limits.max_compressed).",
        )
    if not is_gzip(data):
        if len(data) > limits.max_decompressed:
            raise ProfileError(
                f"The profile is {_mib(len(data))}, more than the "
                f"{_mib(limits.max_decompressed)} heapbot accepts.",
                hint="Raise Limits.max_decompressed if this is expected.",
            )
        return data
    try:
        return _inflate(data, limits, hold=min(_HOLD, limits.max_decompressed))
    except _TooBigToHold:
        pass
    # Larger than we hold on a first try: count without keeping (memory stays at one
    # chunk, so a bomb costs time, not memory), then inflate for real if within the cap.
    _inflate(data, limits, hold=None)
    return _inflate(data, limits, hold=limits.max_decompressed)


class _TooBigToHold(Exception):
    """Inflated output passed what the first pass keeps in memory."""


def _inflate(data: bytes | bytearray, limits: Limits, hold: int | None) -> bytes:
    """Inflate every gzip member; keep at most ``hold`` bytes (None: count only)."""
    out: list[bytes] = []
    size = 0
    rest = data
    while rest:
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        chunk_in = rest
        while True:
            try:
                piece = inflater.decompress(chunk_in, _CHUNK)
            except zlib.error as exc:
                raise ProfileError(
                    f"The profile starts like gzip but is not valid gzip ({exc}).",
                    hint="The download was probably corrupted; capture it again.",
                ) from None
            size += len(piece)
            if size > limits.max_decompressed:
                raise ProfileError(
                    f"The profile inflates to more than {_mib(limits.max_decompressed)}; "
                    "heapbot refused it (a gzip bomb or a huge profile).",
                    hint="Raise Limits.max_decompressed if this profile is genuine.",
                )
            if hold is not None:
                if size > hold:
                    raise _TooBigToHold
                out.append(piece)
            if inflater.eof:
                break
            chunk_in = inflater.unconsumed_tail
            if not chunk_in and not piece:
                raise ProfileError(
                    "The gzip data of the profile is truncated (it ends before the gzip "
                    "trailer).",
                    hint="The download was cut short; capture the profile again.",
                )
        rest = inflater.unused_data
        if rest and not is_gzip(rest):
            break  # trailing garbage after the last member: ignore, like Go's gzip reader
    return b"".join(out)
