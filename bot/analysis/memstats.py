"""runtime.MemStats as Go prints it at the end of ``/debug/pprof/heap?debug=1``.

The block looks like::

    # runtime.MemStats
    # Alloc = 5853336
    # Stack = 360448 / 360448
    # PauseNs = [91741 78991 0 ...]
    # GCCPUFraction = 0.0009421065170342195
    # DebugGC = false

``Stack``, ``MSpan`` and ``MCache`` are "in use / sys" pairs and become
``StackInuse``/``StackSys`` etc. (Go's field names). Integer fields land in
``MemStats.fields``, the ones leak detection and ``/heap stats`` read.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bot.errors import ProfileError

_PAIRS = {"Stack": ("StackInuse", "StackSys"), "MSpan": ("MSpanInuse", "MSpanSys"),
          "MCache": ("MCacheInuse", "MCacheSys")}

# Fields that are a point-in-time value of one process: summing them over
# instances is right for sizes and counts, wrong for times (LastGC is kept as
# the latest, not summed).
_TIMESTAMP_FIELDS = frozenset({"LastGC"})

# Printed order of the fields engineers read first.
DISPLAY_ORDER = (
    "HeapAlloc", "HeapInuse", "HeapIdle", "HeapReleased", "HeapSys", "HeapObjects", "Sys",
    "NextGC", "NumGC", "NumForcedGC", "Alloc", "TotalAlloc", "Mallocs", "Frees", "Lookups",
    "StackInuse", "StackSys", "MSpanInuse", "MSpanSys", "MCacheInuse", "MCacheSys",
    "BuckHashSys", "GCSys", "OtherSys", "LastGC", "MaxRSS",
)

_BYTE_FIELDS = frozenset({
    "Alloc", "TotalAlloc", "Sys", "HeapAlloc", "HeapSys", "HeapIdle", "HeapInuse",
    "HeapReleased", "StackInuse", "StackSys", "MSpanInuse", "MSpanSys", "MCacheInuse",
    "MCacheSys", "BuckHashSys", "GCSys", "OtherSys", "NextGC", "MaxRSS",
})


@dataclass(slots=True)
class MemStats:
    """One process's (or several processes' summed) runtime.MemStats."""

    fields: dict[str, int] = field(default_factory=dict)
    pause_ns: list[int] = field(default_factory=list)
    pause_end: list[int] = field(default_factory=list)
    gc_cpu_fraction: float = 0.0
    debug_gc: bool = False
    instances: int = 1

    def __getitem__(self, name: str) -> int:
        return self.fields[name]

    def get(self, name: str, default: int = 0) -> int:
        return self.fields.get(name, default)

    @property
    def held_free(self) -> int:
        """Bytes the runtime holds but that hold no object (HeapIdle − HeapReleased)."""
        return max(0, self.get("HeapIdle") - self.get("HeapReleased"))

    def to_json(self) -> dict[str, Any]:
        return {"fields": dict(self.fields), "gc_cpu_fraction": self.gc_cpu_fraction,
                "debug_gc": self.debug_gc, "instances": self.instances,
                "pause_ns": list(self.pause_ns), "pause_end": list(self.pause_end)}


def is_byte_field(name: str) -> bool:
    """Fields measured in bytes (the rest are counts or times)."""
    return name in _BYTE_FIELDS


def parse_memstats(text: str | bytes) -> MemStats:
    """Read the ``# runtime.MemStats`` block of a ``heap?debug=1`` response."""
    if isinstance(text, bytes):
        if text[:2] == b"\x1f\x8b":
            raise ProfileError(
                "This is a gzip profile.proto; MemStats live in the text form of the heap profile.",
                hint="Fetch /debug/pprof/heap?debug=1 and pass that file.",
            )
        text = text.decode("utf-8", "replace")
    start = text.find("# runtime.MemStats")
    if start < 0:
        raise ProfileError(
            "No `# runtime.MemStats` block in this text.",
            hint="Is it the output of /debug/pprof/heap?debug=1? Fetch that URL and pass it.",
        )
    stats = MemStats()
    for line in text[start:].splitlines()[1:]:
        if not line.startswith("# "):
            break
        name, sep, value = line[2:].partition(" = ")
        if not sep:
            continue
        name, value = name.strip(), value.strip()
        try:
            _store(stats, name, value)
        except ValueError as exc:
            raise ProfileError(f"MemStats field {name} has an unreadable value {value[:40]!r}.",
                               hint="Fetch /debug/pprof/heap?debug=1 again.") from exc
    if not stats.fields:
        raise ProfileError("The `# runtime.MemStats` block is empty.",
                           hint="Fetch /debug/pprof/heap?debug=1 again; it was cut off.")
    return stats


def _store(stats: MemStats, name: str, value: str) -> None:
    if name in _PAIRS:
        inuse, _, sys_ = value.partition("/")
        stats.fields[_PAIRS[name][0]] = int(inuse)
        stats.fields[_PAIRS[name][1]] = int(sys_)
    elif name == "PauseNs":
        stats.pause_ns = _int_list(value)
    elif name == "PauseEnd":
        stats.pause_end = _int_list(value)
    elif name == "GCCPUFraction":
        stats.gc_cpu_fraction = float(value)
    elif name == "DebugGC":
        stats.debug_gc = value == "true"
    elif re.fullmatch(r"-?\d+", value) or name in DISPLAY_ORDER:
        stats.fields[name] = int(value)  # a known integer field that is not one: ValueError
    # Fields added by future Go versions with other shapes are skipped.


def _int_list(value: str) -> list[int]:
    return [int(v) for v in value.strip("[]").split()]


def merge_memstats(stats: Sequence[MemStats]) -> MemStats:
    """Sum over instances (a service's total); LastGC is the latest, GC CPU the mean."""
    if not stats:
        raise ProfileError("No MemStats to merge: no instance returned heap?debug=1.")
    merged = MemStats(instances=sum(s.instances for s in stats))
    for s in stats:
        for name, value in s.fields.items():
            if name in _TIMESTAMP_FIELDS:
                merged.fields[name] = max(merged.fields.get(name, 0), value)
            else:
                merged.fields[name] = merged.fields.get(name, 0) + value
    merged.gc_cpu_fraction = sum(s.gc_cpu_fraction * s.instances for s in stats) / max(
        1, merged.instances)
    merged.debug_gc = any(s.debug_gc for s in stats)
    # Pause lists of different processes do not add up; keep the most recent pauses.
    merged.pause_end = sorted((e for s in stats for e in s.pause_end if e), reverse=True)[:256]
    ends = {e: p for s in stats for p, e in zip(s.pause_ns, s.pause_end, strict=False) if e}
    merged.pause_ns = [ends[e] for e in merged.pause_end]
    return merged
