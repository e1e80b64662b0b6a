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
class InstanceObservation:
    """One instance's view in one capture: which GC cycle its heap profile is from.

    A Go heap profile is as of the last completed GC, so two captures between the
    same two GCs return the same profile: ``digest`` (of the profile's sample
    values) tells them apart, ``num_gc``/``last_gc`` say which cycle it was.
    ``inuse`` holds the leading functions' flat in-use bytes of this instance,
    ``goroutines`` the counts of its parked goroutine groups, ``leaked`` the groups
    its ``/debug/pprof/goroutineleak`` proved leaked (None: not fetched).
    """

    target: str
    num_gc: int | None = None
    last_gc: float | None = None  # unix seconds of the last completed GC
    heap_alloc: int | None = None
    next_gc: int | None = None
    heap_inuse: int | None = None
    total_alloc: int | None = None
    digest: str = ""
    inuse_total: int = 0
    inuse: dict[str, int] = field(default_factory=dict)
    goroutines: dict[str, int] = field(default_factory=dict)
    leaked: list[GoroutineGroupSummary] | None = None
    sample_period: int | None = None  # bytes per heap sample (MemProfileRate); None unknown

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InstanceObservation:
        leaked = data.get("leaked")
        return cls(
            target=data["target"], num_gc=data.get("num_gc"), last_gc=data.get("last_gc"),
            heap_alloc=data.get("heap_alloc"), next_gc=data.get("next_gc"),
            heap_inuse=data.get("heap_inuse"), total_alloc=data.get("total_alloc"),
            digest=data.get("digest", ""), inuse_total=int(data.get("inuse_total", 0)),
            inuse={k: int(v) for k, v in data.get("inuse", {}).items()},
            goroutines={k: int(v) for k, v in data.get("goroutines", {}).items()},
            leaked=None if leaked is None else [GoroutineGroupSummary.from_dict(g)
                                                for g in leaked],
            sample_period=data.get("sample_period"))


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
    trigger: str = "user"  # user | watch | alert | schedule | sample
    observations: list[InstanceObservation] = field(default_factory=list)  # per instance
    fresh: bool = False  # the heap was asked for with ?gc=1

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
            observations=[InstanceObservation.from_dict(o)
                          for o in data.get("observations", [])],
            fresh=bool(data.get("fresh", False)),
        )
