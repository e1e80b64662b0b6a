"""The leak report's vocabulary: thresholds, verdicts and the dataclasses every part shares."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

MIN_CAPTURES = 3
MAX_CAPTURES = 60  # the newest ones; Theil–Sen is O(n²) per series

# Growth that matters next to the whole heap (or is large in itself); the rules that
# tell steady growth from the rest are in classify.py.
MIN_HEAP_GROWTH_SHARE = 0.01  # of the mean in-use heap over the window
MIN_HEAP_GROWTH_BYTES = 256 * 1024
MIN_GOROUTINE_GROWTH = 5

LEAK_LIKELY = "leak likely"
GROWTH_BOUNDED = "growth bounded"
NO_GROWTH = "no growth"
NOT_ENOUGH_DATA = "not enough data"
UNDECIDED = "undecided"


class DeployMarker(Protocol):
    """A deploy as stored by bot.store (only these two fields are read)."""

    taken_at: float
    version: str


@dataclass(frozen=True, slots=True)
class Deploy:
    """A minimal deploy marker for callers without a store (tests, the CLI)."""

    taken_at: float
    version: str = ""


@dataclass(frozen=True, slots=True)
class HeapSite:
    """Where a function allocates, and who in the service's own code calls it."""

    location: str  # file:line of the allocating line ("" when unknown)
    own_caller: str  # nearest own-code frame (the function itself if it is own code)
    own_caller_location: str = ""


@dataclass(slots=True)
class Suspect:
    function: str
    kind: str  # "heap" | "goroutines"
    growth_per_hour: float
    unit: str  # "bytes" | "goroutines"
    captures: int
    share: float  # of the window's growth of that kind (0–1)
    evidence: list[str] = field(default_factory=list)
    site: str = ""  # file:line
    own_caller: str = ""
    hint: str = ""
    state: str = ""  # goroutines: where they wait
    score: float = 0.0
    net_growth: float = 0.0  # over the window, inside restart segments
    growth_text: str = ""  # "+48MB in 4m" or "+12MB/h (10–14MB/h)": what the table shows
    instances: list[str] = field(default_factory=list)  # where it leaks (all when empty)
    attribution: str = ""  # "leaks on 10.0.3.7:6060 only; the other 2 are flat"
    proven: bool = False  # goroutines the runtime's goroutine-leak GC proved unreachable

    def to_json(self) -> dict[str, Any]:
        return {
            "function": self.function, "kind": self.kind,
            "growth_per_hour": round(self.growth_per_hour, 3), "unit": self.unit,
            "captures": self.captures, "share": round(self.share, 4),
            "evidence": list(self.evidence), "site": self.site, "own_caller": self.own_caller,
            "hint": self.hint, "state": self.state, "score": round(self.score, 4),
            "growth": self.growth_text, "net_growth": round(self.net_growth, 3),
            "instances": list(self.instances), "attribution": self.attribution,
            "proven": self.proven,
        }


@dataclass(slots=True)
class NotSuspect:
    """Something that grew but is explained: bounded, a single jump, IO wait..."""

    function: str
    kind: str
    reason: str
    growth_per_hour: float = 0.0
    unit: str = "bytes"
    bounded: bool = False
    net_growth: float = 0.0  # as Suspect.net_growth: what a sampled series was cleared from

    def to_json(self) -> dict[str, Any]:
        return {"function": self.function, "kind": self.kind, "reason": self.reason,
                "growth_per_hour": round(self.growth_per_hour, 3), "unit": self.unit,
                "bounded": self.bounded, "net_growth": round(self.net_growth, 3)}


@dataclass(slots=True)
class Undecided:
    """Something that grew where the captures cannot decide yet, and what would."""

    function: str
    kind: str
    reason: str  # what was seen and what more captures over how long would decide
    growth: str = ""  # "+3MB in 2m"
    needed_captures: int = 0
    needed_seconds: float = 0.0
    net_growth: float = 0.0  # bytes or goroutines, as Suspect.net_growth
    sampling_limited: bool = False  # the heap sampling, not the shape, holds it back

    def to_json(self) -> dict[str, Any]:
        return {"function": self.function, "kind": self.kind, "reason": self.reason,
                "growth": self.growth, "needed_captures": self.needed_captures,
                "needed_seconds": round(self.needed_seconds, 1),
                "net_growth": self.net_growth, "sampling_limited": self.sampling_limited}


@dataclass(slots=True)
class LeakReport:
    verdict: str
    suspects: list[Suspect] = field(default_factory=list)
    not_suspects: list[NotSuspect] = field(default_factory=list)
    undecided: list[Undecided] = field(default_factory=list)
    next_steps: list[str] = field(default_factory=list)
    needed_captures: int = 0
    captures: int = 0  # captures analysed
    window_start: float | None = None
    window_end: float | None = None
    restarts: int = 0
    deploy: str = ""  # version of the deploy the window starts at
    signals: list[str] = field(default_factory=list)  # MemStats and whole-heap observations
    summary: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict, "summary": self.summary,
            "suspects": [s.to_json() for s in self.suspects],
            "not_suspects": [n.to_json() for n in self.not_suspects],
            "undecided": [u.to_json() for u in self.undecided],
            "next_steps": list(self.next_steps), "needed_captures": self.needed_captures,
            "captures": self.captures, "window_start": self.window_start,
            "window_end": self.window_end, "restarts": self.restarts, "deploy": self.deploy,
            "signals": list(self.signals),
        }


