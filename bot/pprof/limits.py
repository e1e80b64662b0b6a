"""Size limits and bounded gzip inflation.

A profile comes from a service over HTTP, so it is untrusted: a gzip bomb must be
refused after inflating at most the cap, never all of it.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from bot.errors import ProfileError

MiB = 1 << 20
_GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 8 * MiB


@dataclass(frozen=True, slots=True)
class Limits:
    """Largest profile heapbot accepts, compressed and inflated."""

    max_compressed: int = 64 * MiB
    max_decompressed: int = 512 * MiB


DEFAULT_LIMITS = Limits()


def _mib(n: int) -> str:
    return f"{n / MiB:.0f} MiB" if n >= MiB else f"{n} bytes"


def is_gzip(data: bytes) -> bool:
    return data[:2] == _GZIP_MAGIC


def inflate(data: bytes, limits: Limits = DEFAULT_LIMITS) -> bytes:
    """Return the raw protobuf bytes of ``data`` (gzip, multi-member gzip, or raw)."""
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
