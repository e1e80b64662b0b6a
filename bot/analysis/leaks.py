"""Leak detection over stored snapshot summaries: which sites grow, and which only look like it.

A pure function, :func:`analyze`, reads the :class:`~bot.analysis.summary.SnapshotSummary`
list of one service (oldest first) and answers with a :class:`LeakReport`:

- the window is "since the last deploy" (explicit markers or a build-id change),
  optionally bounded by ``window`` seconds, never fewer than the last 3 captures;
- process restarts inside the window (counters such as TotalAlloc or NumGC going
  back) split it into segments; growth is measured inside segments only, so a
  restart reads neither as "no growth" nor as a leak;
- per function (heap flat in-use bytes and objects) and per goroutine stack
  signature, a robust slope (Theil–Sen, over pairs inside one segment), the share
  of steps that increase, the share of the window's growth, and a plateau test
  (growth that stopped: a cache filling up is bounded, not a suspect);
- suspects are ranked by evidence (steady increase, no single jump, share of the
  growth), not by size alone, and carry hints for patterns seen in real hunts.

``heap_sites(profile)`` adds what summaries lack: the allocation site's
file:line and the nearest caller in the service's own code.
"""

from __future__ import annotations

import functools
import itertools
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from bot.analysis.goroutines import BLOCKED_STATES, Frame, is_own_code, is_runtime
from bot.analysis.summary import FunctionValue, ProfileSummary, SnapshotSummary

MIN_CAPTURES = 3
MAX_CAPTURES = 60  # the newest ones; Theil–Sen is O(n²) per series

# A series is "steady growth" when most non-flat steps go up ...
MIN_UP_SHARE = 0.75
# ... no single step carries most of the growth ...
MAX_JUMP_SHARE = 0.6
# ... and the growth matters next to the whole heap (or is large in itself).
MIN_HEAP_GROWTH_SHARE = 0.01  # of the mean in-use heap over the window
MIN_HEAP_GROWTH_BYTES = 256 * 1024
MIN_GOROUTINE_GROWTH = 5
# Plateau: the recent rate fell below this fraction of the earlier rate.
PLATEAU_RATIO = 0.15

LEAK_LIKELY = "leak likely"
GROWTH_BOUNDED = "growth bounded"
NO_GROWTH = "no growth"
NOT_ENOUGH_DATA = "not enough data"


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

    def to_json(self) -> dict[str, Any]:
        return {
            "function": self.function, "kind": self.kind,
            "growth_per_hour": round(self.growth_per_hour, 3), "unit": self.unit,
            "captures": self.captures, "share": round(self.share, 4),
            "evidence": list(self.evidence), "site": self.site, "own_caller": self.own_caller,
            "hint": self.hint, "state": self.state, "score": round(self.score, 4),
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

    def to_json(self) -> dict[str, Any]:
        return {"function": self.function, "kind": self.kind, "reason": self.reason,
                "growth_per_hour": round(self.growth_per_hour, 3), "unit": self.unit,
                "bounded": self.bounded}


@dataclass(slots=True)
class LeakReport:
    verdict: str
    suspects: list[Suspect] = field(default_factory=list)
    not_suspects: list[NotSuspect] = field(default_factory=list)
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
            "next_steps": list(self.next_steps), "needed_captures": self.needed_captures,
            "captures": self.captures, "window_start": self.window_start,
            "window_end": self.window_end, "restarts": self.restarts, "deploy": self.deploy,
            "signals": list(self.signals),
        }


# ---------------------------------------------------------------- series statistics

@dataclass(slots=True)
class Trend:
    """How one series moved over the window (values per capture, segments split)."""

    slope_per_hour: float
    ups: int
    downs: int
    steps: int
    net_growth: float  # sum of within-segment changes
    largest_step: float
    present: int  # captures in which the series is > 0
    first: float
    last: float
    plateau: bool = False
    early_rate: float = 0.0
    recent_rate: float = 0.0
    segments: int = 1
    current_run_captures: int = 0  # captures in the latest segment
    current_run_rate: float = 0.0  # Theil–Sen slope per hour inside the latest segment

    @property
    def stopped_after_restart(self) -> bool:
        """Grew in an earlier run but is flat over ≥3 captures of the current one."""
        return (self.segments > 1 and self.current_run_captures >= MIN_CAPTURES
                and self.current_run_rate <= 0.1 * max(self.slope_per_hour, 0.0))

    @property
    def up_share(self) -> float:
        moving = self.ups + self.downs
        return self.ups / moving if moving else 0.0

    @property
    def jump_share(self) -> float:
        return self.largest_step / self.net_growth if self.net_growth > 0 else 1.0


@functools.lru_cache(maxsize=128)
def _pairs(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs i < j of n points (cached: every series of a window has the same n)."""
    return np.triu_indices(n, k=1)


def theil_sen(segments: Sequence[tuple[np.ndarray, np.ndarray]]) -> float:
    """Median of pairwise slopes, pairs taken inside one segment only (per second)."""
    slopes: list[np.ndarray] = []
    for t, v in segments:
        if len(t) < 2:
            continue
        i, j = _pairs(len(t))
        dt = t[j] - t[i]
        ok = dt > 0
        if ok.any():
            slopes.append((v[j][ok] - v[i][ok]) / dt[ok])
    if not slopes:
        return 0.0
    return float(np.median(np.concatenate(slopes)))


def trend(times: np.ndarray, values: np.ndarray, segment_ids: np.ndarray,
          min_growth: float = 0.0) -> Trend:
    """Trend of one series; ``segment_ids`` numbers the restart segments.

    ``min_growth`` is the growth below which a rise does not count for the
    plateau test (noise on a flat series is not "growth that stopped").
    """
    segments = [(times[segment_ids == s], values[segment_ids == s])
                for s in np.unique(segment_ids)]
    same = segment_ids[1:] == segment_ids[:-1]
    deltas = np.diff(values)[same]
    ups = int((deltas > 0).sum())
    downs = int((deltas < 0).sum())
    net = float(deltas.sum()) if len(deltas) else 0.0
    result = Trend(
        slope_per_hour=theil_sen(segments) * 3600.0, ups=ups, downs=downs, steps=len(deltas),
        net_growth=net, largest_step=float(deltas.max()) if len(deltas) else 0.0,
        present=int((values > 0).sum()), first=float(values[0]), last=float(values[-1]),
    )
    result.segments = len(segments)
    last_t, last_v = segments[-1]
    result.current_run_captures = len(last_t)
    result.current_run_rate = theil_sen([(last_t, last_v)]) * 3600.0
    _plateau(result, segments, min_growth)
    return result


def _plateau(result: Trend, segments: Sequence[tuple[np.ndarray, np.ndarray]],
             min_growth: float) -> None:
    """Did growth stop? Compare the last third of the longest recent segment with before."""
    t, v = max(reversed(segments), key=lambda s: len(s[0]))  # longest, latest on ties
    if len(t) < 5:
        return
    cut = len(t) - max(2, (len(t) - 1) // 3) - 1
    early_t, early_v = t[: cut + 1], v[: cut + 1]
    recent_t, recent_v = t[cut:], v[cut:]
    early_span = early_t[-1] - early_t[0]
    recent_span = recent_t[-1] - recent_t[0]
    if early_span <= 0 or recent_span <= 0:
        return
    result.early_rate = theil_sen([(early_t, early_v)]) * 3600.0
    result.recent_rate = theil_sen([(recent_t, recent_v)]) * 3600.0
    early_growth = float(early_v[-1] - early_v[0])
    early_deltas = np.diff(early_v)
    early_up = (early_deltas > 0).sum() / max(1, (early_deltas != 0).sum())
    recent_growth = float(recent_v.max() - recent_v[0])
    result.plateau = bool(
        result.early_rate > 0 and early_growth > max(0.0, min_growth) and early_up >= 0.6
        and (early_deltas > 0).sum() >= 2
        and result.recent_rate <= PLATEAU_RATIO * result.early_rate
        and recent_growth <= 0.25 * early_growth
    )


# ---------------------------------------------------------------- window and restarts

_MONOTONIC_MEMSTATS = ("TotalAlloc", "Mallocs", "Frees", "NumGC")
_MONOTONIC_TOTALS = ("alloc_space", "alloc_objects")


def _restarted(prev: SnapshotSummary, cur: SnapshotSummary) -> bool:
    """A process restart between two captures: counters that only grow went back."""
    if prev.instances and cur.instances and prev.instances != cur.instances:
        return True
    for name in _MONOTONIC_MEMSTATS:
        a, b = prev.memstats.get(name), cur.memstats.get(name)
        if a is not None and b is not None and b < a:
            return True
    for name in _MONOTONIC_TOTALS:
        a, b = prev.heap.totals.get(name), cur.heap.totals.get(name)
        if a is not None and b is not None and b < a:
            return True
    return False


@dataclass(slots=True)
class _Window:
    captures: list[SnapshotSummary]
    segment_ids: np.ndarray
    deploy: str = ""
    deploy_at: float | None = None
    since_deploy: int = 0


def _select_window(summaries: Sequence[SnapshotSummary], deploys: Sequence[DeployMarker],
                   now: float, window: float | None) -> _Window:
    ordered = sorted((s for s in summaries if s.taken_at <= now), key=lambda s: s.taken_at)
    start_at: float | None = None
    version = ""
    for d in deploys:
        if d.taken_at <= now and (start_at is None or d.taken_at > start_at):
            start_at, version = d.taken_at, getattr(d, "version", "")
    # A new build id is a deploy even when nobody recorded one.
    for prev, cur in itertools.pairwise(ordered):
        if prev.build_id and cur.build_id and prev.build_id != cur.build_id and (
                start_at is None or cur.taken_at > start_at):
            start_at, version = cur.taken_at, f"build {cur.build_id[:12]}"
    since = [s for s in ordered if start_at is None or s.taken_at >= start_at]
    chosen = since
    if window is not None:
        recent = [s for s in since if s.taken_at >= now - window]
        chosen = recent if len(recent) >= MIN_CAPTURES else since[-MIN_CAPTURES:]
    chosen = chosen[-MAX_CAPTURES:]
    ids = [0]
    for prev, cur in itertools.pairwise(chosen):
        ids.append(ids[-1] + (1 if _restarted(prev, cur) else 0))
    return _Window(captures=chosen, segment_ids=np.array(ids[: len(chosen)], dtype=np.int64),
                   deploy=version, deploy_at=start_at, since_deploy=len(since))


# ---------------------------------------------------------------- hints

_MAP_SITES = ("runtime.mapassign", "runtime.makemap", "internal/runtime/maps.",
              "runtime.growWork", "runtime.hashGrow", "runtime.evacuate")
_TIMER_SITES = ("time.After", "time.NewTimer", "time.NewTicker", "time.newTimer",
                "runtime.newTimer", "time.Tick", "runtime.(*timer)", "time.AfterFunc")
_REFLECT_POOL = ("reflect.MakeSlice", "reflect.Value.Call", "reflect.Value.call",
                 "reflect.unsafe_NewArray", "reflect.New", "reflect.MakeMap")
_REFLECT_MAP = ("reflect.mapassign", "encoding/gob.", "reflect.Value.SetMapIndex")
_CACHE_WORDS = ("cache", "session", "store", "registry", "memo")


def heap_hint(function: str, own_caller: str, *, bounded: bool = False) -> str:
    """A known leak pattern whose fingerprint matches this allocation site."""
    names = f"{function} {own_caller}"
    lowered = names.lower()
    if "gorilla/context" in names or ("context" in lowered and "request" in lowered
                                      and "map" in lowered):
        return ("A global map keyed by *http.Request (gorilla/context without "
                "context.ClearHandler): entries are never deleted. Wrap handlers in "
                "context.ClearHandler, or keep request values in r.Context().")
    if function.startswith(_REFLECT_MAP) or ("gob" in lowered and "map" in lowered):
        return ("gob/reflect map decoding (reflect.mapassign) into a long-lived map keeps "
                "every key it ever decoded: decode into a fresh map, or delete old keys.")
    if function.startswith(_REFLECT_POOL):
        return ("Values made with reflect (reflect.MakeSlice / reflect.Value.Call) kept in a "
                "pool that only grows, like the router pool of 800 in the tango story: bound "
                "the pool or let the values go.")
    if function.startswith(_TIMER_SITES):
        return ("time.After / time.NewTicker per request or per loop iteration: each timer "
                "lives until it fires or is stopped. Reuse one time.NewTimer with Reset, and "
                "Stop every ticker.")
    if function.startswith("runtime.growslice") and own_caller:
        return (f"append in {own_caller} grows a slice that is never truncated (a package-level "
                "slice or a field that only grows): cap it, flush it, or copy the tail.")
    if function.startswith(_MAP_SITES):
        return ("A map that only gains keys: entries are added (per request or per key) and "
                "never deleted. If it is keyed by *http.Request (gorilla/context without "
                "ClearHandler), delete the entry when the request ends or use r.Context().")
    if bounded:
        return ("Bounded: it grew and then stopped, like a cache filling up to its size. "
                "Check its capacity against the memory you can give it.")
    if any(w in lowered for w in _CACHE_WORDS):
        return ("A per-key cache or session store without eviction grows with the number of "
                "distinct keys: bound it (LRU, TTL) or store values instead of pointers.")
    return ""


_GOROUTINE_HINTS = {
    "chan send": ("Senders park forever when nobody receives (the caller gave up): give the "
                  "channel a buffer of 1, or select on ctx.Done() next to the send."),
    "chan receive": ("Receivers wait for a value or a close() that never comes: close the "
                     "channel when the producer ends, or select on ctx.Done()."),
    "select": ("Each waits in select on channels nobody closes or sends to (a per-request "
               "poller or ticker): add a ctx.Done() case, and Stop tickers."),
    "select (no cases)": "`select {}` blocks forever: was it meant to run once per process?",
    "mutex": ("Goroutines queue on a lock that stays held (a deadlock or a slow critical "
              "section): `?debug=2` shows who holds it."),
    "semacquire": ("Goroutines wait on a semaphore (WaitGroup, Cond or a lock) that is never "
                   "released."),
}


# ---------------------------------------------------------------- the analysis

def analyze(
    summaries: Sequence[SnapshotSummary],
    deploys: Sequence[DeployMarker] = (),
    now: float | None = None,
    window: float | None = None,
    *,
    sites: Mapping[str, HeapSite] | None = None,
    service: str = "",
) -> LeakReport:
    """Decide whether a service leaks, from its stored summaries (oldest first or not).

    ``window`` bounds the analysis to the last ``window`` seconds (never fewer than
    3 captures); by default it spans everything since the last deploy. ``sites``
    (from :func:`heap_sites` on the latest profile) adds file:line and own-code callers.
    """
    if now is None:
        now = max((s.taken_at for s in summaries), default=time.time())
    service = service or next((s.service for s in summaries), "")
    win = _select_window(summaries, deploys, now, window)
    caps = win.captures
    report = LeakReport(verdict=NOT_ENOUGH_DATA, captures=len(caps), deploy=win.deploy,
                        window_start=caps[0].taken_at if caps else None,
                        window_end=caps[-1].taken_at if caps else None,
                        restarts=int(win.segment_ids[-1]) if len(caps) else 0)
    steps = int((win.segment_ids[1:] == win.segment_ids[:-1]).sum()) if len(caps) > 1 else 0
    if len(caps) < MIN_CAPTURES or steps < MIN_CAPTURES - 1:
        report.needed_captures = max(MIN_CAPTURES - len(caps), MIN_CAPTURES - 1 - steps, 1)
        _explain_not_enough(report, win, service)
        return report

    times = np.array([s.taken_at for s in caps], dtype=np.float64)
    sites = dict(sites or {})
    heap_suspects, heap_not, heap_growth = _heap(caps, times, win.segment_ids, sites)
    g_suspects, g_not = _goroutines(caps, times, win.segment_ids)
    _relate_goroutines_to_memory(caps, times, win.segment_ids, g_suspects, heap_suspects, heap_not)
    report.signals = _memstats_signals(caps, times, win.segment_ids, heap_growth)
    if report.restarts:
        report.signals.insert(0, f"{report.restarts} process restart(s) in the window: growth is "
                                 "measured inside each run, not across the restart.")
    suspects = sorted(heap_suspects + g_suspects, key=lambda s: (-s.score, s.function))
    report.suspects = suspects
    report.not_suspects = sorted(heap_not + g_not, key=lambda n: (not n.bounded, n.function))
    if suspects:
        report.verdict = LEAK_LIKELY
    elif any(n.bounded for n in report.not_suspects):
        report.verdict = GROWTH_BOUNDED
    else:
        report.verdict = NO_GROWTH
    _explain(report, service)
    return report


def _explain_not_enough(report: LeakReport, win: _Window, service: str) -> None:
    have = len(win.captures)
    since = f" since the deploy of {win.deploy}" if win.deploy else ""
    report.summary = (f"Only {have} usable capture(s){since}; leak detection needs at least "
                      f"{MIN_CAPTURES} in one run of the process "
                      f"({report.needed_captures} more).")
    svc = service or "SERVICE"
    report.next_steps = [
        f"/heap leaks {svc} --sample 3x30s takes the captures now and decides.",
        f"/heap capture {svc} a few times, minutes apart, then /heap leaks {svc}.",
    ]


def _explain(report: LeakReport, service: str) -> None:
    svc = service or "SERVICE"
    span = (report.window_end or 0) - (report.window_start or 0)
    window = f"{report.captures} captures over {format_duration(span)}"
    if report.deploy:
        window += f" since {report.deploy}"
    if report.verdict == LEAK_LIKELY:
        top = report.suspects[0]
        report.summary = (f"{top.function} grows {_rate(top.growth_per_hour, top.unit)} "
                          f"steadily ({window}).")
        for s in [s for s in report.suspects if s.kind == "heap"][:2]:
            report.next_steps.append(f"/heap list {svc} {_regex(s.own_caller or s.function)}"
                                     " shows the lines that allocate.")
        waits = [s.site or s.function for s in report.suspects if s.kind == "goroutines"]
        if waits:
            report.next_steps.append(f"/heap goroutines {svc} shows the stacks waiting at "
                                     f"{', '.join(waits[:3])}.")
        report.next_steps.append(f"/heap diff {svc} since deploy compares with the start.")
    elif report.verdict == GROWTH_BOUNDED:
        bounded = [n.function for n in report.not_suspects if n.bounded]
        report.summary = (f"Memory grew but levelled off ({', '.join(bounded[:3])}): bounded, "
                          f"not a leak ({window}).")
        report.next_steps.append(f"/heap leaks {svc} again later confirms it stays flat.")
    else:
        report.summary = f"Nothing grows steadily ({window})."
        report.next_steps.append(f"/heap diff {svc} since deploy shows what changed anyway.")
    report.next_steps.append(f"/heap capture {svc} adds a capture; more captures, surer verdict.")


def _regex(function: str) -> str:
    """A FUNC_RE for /heap list that matches this function literally enough."""
    return function.replace("(", "\\(").replace(")", "\\)").replace("*", "\\*").replace(
        ".", "\\.")


def _series(caps: Sequence[SnapshotSummary], sample_type: str, *, cum: bool = False
            ) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    n = len(caps)
    for i, s in enumerate(caps):
        for fv in s.heap.functions.get(sample_type, ()):
            arr = out.get(fv.function)
            if arr is None:
                arr = out[fv.function] = np.zeros(n, dtype=np.float64)
            arr[i] = fv.cum if cum else fv.flat
    return out


def _heap_sample_types(caps: Sequence[SnapshotSummary]) -> tuple[str, str | None]:
    last = caps[-1].heap
    if "inuse_space" in last.functions or "inuse_space" in last.totals:
        return "inuse_space", "inuse_objects" if "inuse_objects" in last.functions else None
    return (last.default_sample_type or next(iter(last.functions), "inuse_space")), None


def _heap(caps: Sequence[SnapshotSummary], times: np.ndarray, seg: np.ndarray,
          sites: dict[str, HeapSite]) -> tuple[list[Suspect], list[NotSuspect], float]:
    space_type, objects_type = _heap_sample_types(caps)
    space = _series(caps, space_type)
    objects = _series(caps, objects_type) if objects_type else {}
    totals = np.array([s.heap.totals.get(space_type, 0) for s in caps], dtype=np.float64)
    mean_heap = float(totals.mean()) if len(totals) else 0.0
    span_h = max((times[-1] - times[0]) / 3600.0, 1e-9)
    floor = max(MIN_HEAP_GROWTH_BYTES, MIN_HEAP_GROWTH_SHARE * mean_heap)

    same = seg[1:] == seg[:-1]
    # Only series that rose at all get the full (pairwise) treatment.
    rising = {fn: v for fn, v in space.items()
              if float(np.diff(v)[same].sum()) > 0 and float(v.max() - v.min()) >= floor}
    trends = {fn: trend(times, v, seg, floor) for fn, v in rising.items()}
    cum_growth = {fn: float(np.diff(v)[seg[1:] == seg[:-1]].sum())
                  for fn, v in _series(caps, space_type, cum=True).items() if is_own_code(fn)}
    positive = sum(max(0.0, t.net_growth) for t in trends.values()) or 1.0
    total_trend = trend(times, totals, seg)
    suspects: list[Suspect] = []
    not_suspects: list[NotSuspect] = []
    for fn, t in trends.items():
        grew = max(t.net_growth, t.slope_per_hour * span_h)
        if t.net_growth <= 0 or grew < floor:
            continue
        site = sites.get(fn) or _guess_site(fn, t, cum_growth)
        obj = trend(times, objects[fn], seg) if fn in objects else None
        if t.plateau:
            not_suspects.append(NotSuspect(
                fn, "heap", f"bounded, looks like a cache filling up: grew "
                f"{_rate(t.early_rate, 'bytes')} then {_rate(t.recent_rate, 'bytes')} over the "
                "last captures", t.early_rate, "bytes", bounded=True))
            continue
        if t.stopped_after_restart:
            not_suspects.append(NotSuspect(
                fn, "heap", f"grew before the restart, flat over the {t.current_run_captures} "
                "captures of the current run: watch it, not a leak now", t.slope_per_hour))
            continue
        steady = t.up_share >= MIN_UP_SHARE and t.ups >= 2 and t.jump_share <= MAX_JUMP_SHARE
        if not steady or t.slope_per_hour <= 0:
            if t.ups <= 1 or t.jump_share > MAX_JUMP_SHARE:
                reason = (f"one jump of {_size(t.largest_step)}, flat otherwise: a one-off load "
                          "(warm-up, a batch), not steady growth")
            else:
                reason = (f"goes up and down ({t.ups} rises, {t.downs} falls): noise or load, "
                          "not a leak")
            not_suspects.append(NotSuspect(fn, "heap", reason, t.slope_per_hour, "bytes"))
            continue
        share = max(0.0, t.net_growth) / positive
        evidence = [
            f"in-use {_size(t.first)} → {_size(t.last)} ({_rate(t.slope_per_hour, 'bytes')}, "
            "Theil–Sen)",
            f"rose in {t.ups} of {t.ups + t.downs} changing steps; largest step "
            f"{t.jump_share:.0%} of the growth",
            f"{share:.0%} of the heap growth in the window"
            + (f"; the whole heap grew {_size(max(0.0, total_trend.net_growth))}"
               if total_trend.net_growth > 0 else ""),
        ]
        if obj is not None and obj.net_growth > 0:
            evidence.append(f"objects {int(obj.first):,} → {int(obj.last):,} "
                            f"(rose in {obj.ups} of {obj.ups + obj.downs} steps)")
        score = (t.up_share ** 2) * (1.0 - 0.5 * t.jump_share) * (0.4 + 0.6 * min(1.0, share * 2))
        own = site.own_caller if site else ""
        suspects.append(Suspect(
            function=fn, kind="heap", growth_per_hour=t.slope_per_hour, unit="bytes",
            captures=t.present, share=share, evidence=evidence,
            site=site.location if site else "", own_caller=own if own != fn else "",
            hint=heap_hint(fn, own), score=score, net_growth=t.net_growth))
    return suspects, not_suspects, total_trend.slope_per_hour


def _guess_site(fn: str, t: Trend, cum_growth: Mapping[str, float]) -> HeapSite | None:
    """Own-code caller without stack data: the own function whose cum growth covers this
    site's growth most tightly (the nearest caller has the smallest such cum)."""
    if is_own_code(fn):
        return HeapSite(location="", own_caller=fn)
    covering = [(g, name) for name, g in cum_growth.items()
                if 0.8 * t.net_growth <= g <= 3.0 * t.net_growth]
    if not covering:
        return None
    return HeapSite(location="", own_caller=min(covering)[1])


def _goroutines(caps: Sequence[SnapshotSummary], times: np.ndarray, seg: np.ndarray
                ) -> tuple[list[Suspect], list[NotSuspect]]:
    n = len(caps)
    counts: dict[str, np.ndarray] = {}
    info: dict[str, Any] = {}
    for i, s in enumerate(caps):
        for g in s.goroutine_groups:
            arr = counts.get(g.signature)
            if arr is None:
                arr = counts[g.signature] = np.zeros(n, dtype=np.float64)
            arr[i] += g.count
            info[g.signature] = g  # the latest capture's view of the group
    trends = {sig: trend(times, v, seg, MIN_GOROUTINE_GROWTH) for sig, v in counts.items()}
    positive = sum(max(0.0, t.net_growth) for t in trends.values()) or 1.0
    suspects: list[Suspect] = []
    not_suspects: list[NotSuspect] = []
    for sig, t in trends.items():
        g = info[sig]
        name = g.wait_function or g.top_function or sig
        if t.net_growth < MIN_GOROUTINE_GROWTH:
            continue
        if t.plateau:
            not_suspects.append(NotSuspect(
                name, "goroutines", f"bounded: rose to {int(t.last)} and stopped (a pool "
                "reaching its size)", t.early_rate, "goroutines", bounded=True))
            continue
        if t.stopped_after_restart:
            not_suspects.append(NotSuspect(
                name, "goroutines", "grew before the restart, flat in the current run",
                t.slope_per_hour, "goroutines"))
            continue
        steady = t.up_share >= MIN_UP_SHARE and t.ups >= 2 and t.jump_share <= MAX_JUMP_SHARE
        if not steady:
            not_suspects.append(NotSuspect(
                name, "goroutines", f"count goes up and down ({t.ups} rises, {t.downs} falls)",
                t.slope_per_hour, "goroutines"))
            continue
        if g.state not in BLOCKED_STATES:
            why = {"IO wait": "waiting on network IO: follows open connections (compare with "
                              "the connection count); a leak only if connections are never "
                              "closed",
                   "sleep": "sleeping goroutines wake up on their own",
                   "running": "running goroutines make progress",
                   "runnable": "runnable goroutines make progress"}.get(
                g.state, f"state {g.state!r} is not a blocking wait")
            not_suspects.append(NotSuspect(name, "goroutines", f"grows, but {why}",
                                           t.slope_per_hour, "goroutines"))
            continue
        share = t.net_growth / positive
        evidence = [
            f"{int(t.first):,} → {int(t.last):,} goroutines "
            f"({_rate(t.slope_per_hour, 'goroutines')}), rose in {t.ups} of "
            f"{t.ups + t.downs} changing steps",
            f"all blocked in {g.state} at {g.wait_location or name}",
        ]
        if g.creator and g.creator != name:
            evidence.append(f"started by {g.creator}")
        score = (t.up_share ** 2) * (1.0 - 0.5 * t.jump_share) * (0.4 + 0.6 * min(1.0, share * 2))
        suspects.append(Suspect(
            function=name, kind="goroutines", growth_per_hour=t.slope_per_hour,
            unit="goroutines", captures=t.present, share=share, evidence=evidence,
            site=g.wait_location,
            own_caller=g.creator if is_own_code(g.creator) and g.creator != name else "",
            hint=_GOROUTINE_HINTS.get(g.state, ""), state=g.state, score=score))
    return suspects, not_suspects


_GOROUTINE_CREATION = ("runtime.malg", "runtime.newproc1", "runtime.newproc",
                       "runtime.allgadd")


def _relate_goroutines_to_memory(caps: Sequence[SnapshotSummary], times: np.ndarray,
                                 seg: np.ndarray, g_suspects: list[Suspect],
                                 heap_suspects: list[Suspect],
                                 heap_not: list[NotSuspect]) -> None:
    """Leaked goroutines hold stacks (StackInuse) and g structs (runtime.malg)."""
    if not g_suspects:
        return
    last = caps[-1]
    stack = last.memstats.get("StackInuse")
    per_goroutine = stack / last.goroutine_total if stack and last.goroutine_total else 0
    if stack:
        series = np.array([c.memstats.get("StackInuse", 0) for c in caps], dtype=np.float64)
        st = trend(times, series, seg)
        for s in g_suspects:
            held = s.growth_per_hour * per_goroutine
            s.evidence.append(
                f"stacks: StackInuse {_size(st.first)} → {_size(st.last)}; about "
                f"{_size(per_goroutine)} per goroutine, so this group adds ~{_rate(held, 'bytes')}")
    # Growth of the runtime's goroutine bookkeeping (cum of newproc1/malg/allgadd).
    creation = _series(caps, _heap_sample_types(caps)[0], cum=True)
    creation_growth = max((float(np.diff(creation[fn])[seg[1:] == seg[:-1]].sum())
                           for fn in _GOROUTINE_CREATION if fn in creation), default=0.0)
    for h in list(heap_suspects):
        runtime_only = is_runtime(h.function) and not h.own_caller
        made_by_goroutine_creation = runtime_only and creation_growth >= 0.5 * h.net_growth
        if h.function.startswith(_GOROUTINE_CREATION) or made_by_goroutine_creation:
            heap_suspects.remove(h)
            heap_not.append(NotSuspect(
                h.function, "heap", "goroutine descriptors (g structs) of the leaking "
                f"goroutines ({g_suspects[0].function}): follows the goroutine leak",
                h.growth_per_hour, "bytes"))
            rate = _rate(h.growth_per_hour, "bytes")
            g_suspects[0].evidence.append(f"heap: {h.function} grows {rate} with them")


def _memstats_signals(caps: Sequence[SnapshotSummary], times: np.ndarray, seg: np.ndarray,
                      heap_slope: float) -> list[str]:
    """MemStats observations that separate held-but-free memory from live growth."""
    names = ("HeapInuse", "HeapIdle", "HeapReleased", "NextGC", "NumGC", "Sys")
    if not all(c.memstats for c in caps):
        return []
    series = {n: np.array([c.memstats.get(n, 0) for c in caps], dtype=np.float64) for n in names}
    tr = {n: trend(times, v, seg) for n, v in series.items()}
    out: list[str] = []
    inuse, idle, released = tr["HeapInuse"], tr["HeapIdle"], tr["HeapReleased"]
    held_free = series["HeapIdle"] - series["HeapReleased"]
    if inuse.slope_per_hour > 0 and inuse.up_share >= MIN_UP_SHARE:
        out.append(f"HeapInuse {_size(inuse.first)} → {_size(inuse.last)} "
                   f"({_rate(inuse.slope_per_hour, 'bytes')}): live spans keep growing.")
    elif tr["Sys"].net_growth > 0 and idle.net_growth > 0:
        out.append(f"HeapInuse is flat while HeapIdle grew {_size(idle.net_growth)}: memory "
                   "freed by the GC and held by the runtime (free-but-held, not a leak); it "
                   "goes back to the OS as HeapReleased grows.")
    if held_free[-1] > 0 and series["HeapInuse"][-1] > 0:
        out.append(f"{_size(held_free[-1])} is free but not yet returned to the OS "
                   f"(HeapIdle − HeapReleased); HeapReleased {_size(released.last)}.")
    nextgc = tr["NextGC"]
    if nextgc.net_growth > 0 and nextgc.up_share >= MIN_UP_SHARE and nextgc.ups >= 2:
        out.append(f"NextGC rose {_size(nextgc.first)} → {_size(nextgc.last)}: the heap live "
                   "after each GC grows (NextGC ≈ live heap × (1 + GOGC/100)).")
    numgc = tr["NumGC"]
    if numgc.steps and numgc.slope_per_hour > 0:
        out.append(f"{numgc.slope_per_hour:,.0f} GCs per hour.")
    return out


# ---------------------------------------------------------------- own-code callers

def heap_sites(profile: Any, sample_type: str = "inuse_space") -> dict[str, HeapSite]:
    """Per allocating (flat) function: its busiest file:line and nearest own-code caller.

    Accepts the engine's Profile or raw profile bytes. Summaries keep only
    function names; this is what the leak report needs on top, computed from
    the latest profile (the store can keep its result with the summary).
    """
    stacks = _profile_stacks(profile, sample_type)
    weights: dict[str, dict[tuple[str, str, str], float]] = {}
    for value, frames in stacks:
        if not frames or value <= 0:
            continue
        leaf = frames[0]
        own = next((f for f in frames if is_own_code(f.function)), None)
        key = (leaf.location, own.function if own else "", own.location if own else "")
        per = weights.setdefault(leaf.function, {})
        per[key] = per.get(key, 0.0) + value
    out: dict[str, HeapSite] = {}
    for fn, per in weights.items():
        (location, own, own_loc), _ = max(per.items(), key=lambda kv: kv[1])
        out[fn] = HeapSite(location=location, own_caller=own, own_caller_location=own_loc)
    return out


def own_code_callers(profile: Any, sample_type: str = "inuse_space") -> dict[str, str]:
    """Per allocating function, the nearest caller in the service's own code."""
    return {fn: s.own_caller for fn, s in heap_sites(profile, sample_type).items()
            if s.own_caller}


def summarize_heap_bytes(blobs: Sequence[bytes], k: int = 100) -> ProfileSummary:
    """A ProfileSummary (flat/cum per function, totals) straight from raw heap profiles.

    Used when a stored snapshot's summary has no heap part (it was stored while
    the engine's summarizer was missing), so leak detection still sees the
    functions. Prefers the engine's ``summarize_heap`` over the merged profile.
    """
    from bot.pprof import merge_profiles, parse_profile

    profiles = [parse_profile(b) for b in blobs]
    profile = profiles[0] if len(profiles) == 1 else merge_profiles(profiles)
    from bot.analysis.summarize import summarize_heap

    return summarize_heap(profile, k)


def _summarize(profile: Any, k: int) -> ProfileSummary:
    from bot.analysis.goroutines import engine_stacks

    types = [st.type for st in profile.sample_types]
    summary = ProfileSummary(sample_types={st.type: st.unit for st in profile.sample_types})
    flat: dict[str, dict[str, int]] = {t: {} for t in types}
    cum: dict[str, dict[str, int]] = {t: {} for t in types}
    for values, frames in engine_stacks(profile):
        if not frames:
            continue
        seen = {f.function for f in frames}
        leaf = frames[0].function
        for t, value in zip(types, values, strict=False):
            summary.totals[t] = summary.totals.get(t, 0) + abs(value)
            flat[t][leaf] = flat[t].get(leaf, 0) + value
            for fn in seen:
                cum[t][fn] = cum[t].get(fn, 0) + value
    for t in types:
        keep = set(sorted(flat[t], key=lambda f: -flat[t][f])[:k])
        keep |= set(sorted(cum[t], key=lambda f: -cum[t][f])[:k])
        summary.functions[t] = [FunctionValue(f, flat[t].get(f, 0), cum[t].get(f, 0))
                                for f in sorted(keep)]
    summary.default_sample_type = profile.default_sample_type or (types[-1] if types else "")
    return summary


def _profile_stacks(profile: Any, sample_type: str) -> list[tuple[float, list[Frame]]]:
    if isinstance(profile, bytes | bytearray):
        return _stacks_from_bytes(bytes(profile), sample_type)
    return _stacks_from_engine(profile, sample_type)


def _stacks_from_bytes(data: bytes, sample_type: str) -> list[tuple[float, list[Frame]]]:
    from bot.pprof import parse_profile

    return _stacks_from_engine(parse_profile(data), sample_type)


def _stacks_from_engine(profile: Any, sample_type: str) -> list[tuple[float, list[Frame]]]:
    """Stacks of the engine's columnar Profile (bot.pprof.model), innermost frame first."""
    from bot.analysis.goroutines import engine_stacks

    types = [st.type for st in profile.sample_types]
    index = types.index(sample_type) if sample_type in types else len(types) - 1
    return [(float(values[index]), frames) for values, frames in engine_stacks(profile)]


# ---------------------------------------------------------------- formatting

def _size(value: float) -> str:
    """pprof-style bytes: 512B, 41.20kB, 3.50MB."""
    v = abs(value)
    sign = "-" if value < 0 else ""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if v >= scale:
            return f"{sign}{v / scale:.2f}{unit}"
    return f"{sign}{v:.0f}B"


def _rate(per_hour: float, unit: str) -> str:
    if unit == "bytes":
        return f"{'+' if per_hour >= 0 else ''}{_size(per_hour)}/h"
    return f"{per_hour:+,.0f} {unit}/h" if abs(per_hour) >= 10 else f"{per_hour:+,.1f} {unit}/h"


def format_rate(per_hour: float, unit: str) -> str:
    """Growth per hour as users read it: "+18.20MB/h", "+1,200 goroutines/h"."""
    return _rate(per_hour, unit)


def format_duration(seconds: float) -> str:
    """"45s", "12m", "3.5h", "2.1d": a span of time in one short unit."""
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"
