"""Small, JSON-friendly summaries stored with every snapshot.

History, trends and leak detection read these instead of re-parsing old
profiles, so they hold exactly what those need: totals per sample type, the
leading functions (flat and cum) per sample type, goroutine groups by stack
signature, and the MemStats numbers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class FunctionValue:
    """One function's flat and cum value for one sample type."""

    function: str
    flat: int
    cum: int


@dataclass(slots=True)
class ProfileSummary:
    """Totals and the leading functions of a heap profile, per sample type.

    ``functions[sample_type]`` holds the union of the top-K functions by flat
    and by cum (K = 100 by default), so a function that matters in either view
    is tracked across snapshots. ``sample_types`` maps name to unit.
    """

    sample_types: dict[str, str] = field(default_factory=dict)
    default_sample_type: str = ""
    totals: dict[str, int] = field(default_factory=dict)
    functions: dict[str, list[FunctionValue]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProfileSummary:
        return cls(
            sample_types=dict(data.get("sample_types", {})),
            default_sample_type=data.get("default_sample_type", ""),
            totals={k: int(v) for k, v in data.get("totals", {}).items()},
            functions={
                k: [FunctionValue(**fv) for fv in v] for k, v in data.get("functions", {}).items()
            },
        )


@dataclass(frozen=True, slots=True)
class GoroutineGroupSummary:
    """Goroutines that share one stack signature, and where they wait."""

    signature: str  # stable id of the stack: function names joined, no addresses/lines
    count: int
    state: str  # "chan send", "chan receive", "select", "semacquire", "IO wait", "running", ...
    wait_function: str  # the first frame outside the runtime, where the goroutine blocks
    wait_location: str  # file:line of that frame
    top_function: str  # the innermost frame (usually runtime.gopark)
    creator: str  # "created by" function, "" if unknown

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GoroutineGroupSummary:
        return cls(**data)


@dataclass(slots=True)
class SnapshotSummary:
    """Everything trend analysis needs from one stored snapshot."""

    snapshot_id: str
    service: str
    taken_at: float  # unix seconds
    build_id: str  # build id of the main binary ("" if the profile carries none)
    instances: int  # instances that answered
    heap: ProfileSummary
    goroutine_total: int
    goroutine_groups: list[GoroutineGroupSummary]
    memstats: dict[str, int]  # merged (summed) MemStats fields, Go's names
    trigger: str = "user"  # user | watch | alert | schedule

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SnapshotSummary:
        return cls(
            snapshot_id=data["snapshot_id"],
            service=data["service"],
            taken_at=float(data["taken_at"]),
            build_id=data.get("build_id", ""),
            instances=int(data.get("instances", 0)),
            heap=ProfileSummary.from_dict(data.get("heap", {})),
            goroutine_total=int(data.get("goroutine_total", 0)),
            goroutine_groups=[
                GoroutineGroupSummary.from_dict(g) for g in data.get("goroutine_groups", [])
            ],
            memstats={k: int(v) for k, v in data.get("memstats", {}).items()},
            trigger=data.get("trigger", "user"),
        )
