"""What one instance says about its GC cycle in one capture (stored with every snapshot).

The leak verdict reads heap series per instance and keeps one point per GC
cycle: a Go heap profile is as of the last completed GC, so a capture taken
before the next GC repeats the previous one. :func:`heap_digest` identifies a
profile by its sample values (not its bytes: the write time differs every time).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from bot.analysis import graph
from bot.analysis.goroutines import BLOCKED_STATES, GoroutineReport, parse_goroutines
from bot.analysis.summary import GoroutineGroupSummary, InstanceObservation
from bot.errors import ProfileError
from bot.pprof.model import Profile
from bot.units import format_clock

TOP_FUNCTIONS = 40  # per instance: enough for attribution, small to store


def heap_digest(profile: Profile) -> str:
    """Digest of a heap profile's sample values, in an order-independent way."""
    values = np.asarray(profile.values, dtype=np.int64)
    if values.size:
        # Go lists buckets allocated since the last GC with all-zero values: not data.
        values = values[(values != 0).any(axis=1)]
    if values.size:
        values = values[np.lexsort(values.T[::-1])]
    return hashlib.blake2b(values.tobytes(), digest_size=12).hexdigest()


@dataclass(frozen=True, slots=True)
class HeapFacts:
    """What leak analysis keeps of one instance's heap profile (the profile itself is
    folded into the capture's merge and dropped)."""

    digest: str
    inuse_total: int
    inuse: dict[str, int]
    sample_period: int = 0  # bytes per heap sample (runtime.MemProfileRate); 0 unknown


def heap_facts(profile: Profile) -> HeapFacts:
    """Digest, leading in-use functions and sampling period of one instance's heap profile.

    The period is kept because the in-use values are estimates scaled up from samples
    taken every ``period`` bytes: how much a function's value may move by chance
    depends on it (Go's default is 512 KiB per sample).
    """
    total, inuse = instance_inuse(profile)
    period = profile.period if profile.period > 0 and (
        profile.period_type is None or profile.period_type.unit == "bytes") else 0
    return HeapFacts(heap_digest(profile), total, inuse, period)


def instance_inuse(profile: Profile, k: int = TOP_FUNCTIONS) -> tuple[int, dict[str, int]]:
    """(total in-use bytes, the k largest functions by flat in-use bytes) of one profile."""
    types = [st.type for st in profile.sample_types]
    if "inuse_space" not in types:
        return 0, {}
    index = types.index("inuse_space")
    column = np.asarray(profile.values[:, index], dtype=np.int64)
    nodes = graph.node_index(profile)
    flat = graph.flat_only(graph.frames(profile), column)
    top = np.argsort(-flat, kind="stable")[:k]
    return int(np.abs(column).sum()), {nodes.names[i]: int(flat[i]) for i in top if flat[i] > 0}


def observe(target: str, heap: HeapFacts | None, memstats: Mapping[str, int] | None,
            goroutines: GoroutineReport | None,
            leaked: list[GoroutineGroupSummary] | None) -> InstanceObservation:
    """One instance's observation: GC cycle, heap digest, leading functions, parked groups."""
    ms = memstats or {}
    last_gc = ms.get("LastGC")
    obs = InstanceObservation(
        target=target, num_gc=ms.get("NumGC"),
        last_gc=last_gc / 1e9 if last_gc else None, heap_alloc=ms.get("HeapAlloc"),
        next_gc=ms.get("NextGC"), heap_inuse=ms.get("HeapInuse"),
        total_alloc=ms.get("TotalAlloc"))
    if heap is not None:
        obs.digest, obs.inuse_total, obs.inuse = heap.digest, heap.inuse_total, dict(heap.inuse)
        obs.sample_period = heap.sample_period or None
    if goroutines is not None:
        for g in goroutines.summaries():
            if g.state in BLOCKED_STATES:
                obs.goroutines[g.signature] = obs.goroutines.get(g.signature, 0) + g.count
    if leaked is not None:
        obs.leaked = merge_groups(leaked)
    return obs


def merge_groups(groups: list[GoroutineGroupSummary]) -> list[GoroutineGroupSummary]:
    """One group per stack signature, counts summed, largest first."""
    out: dict[str, GoroutineGroupSummary] = {}
    for g in groups:
        seen = out.get(g.signature)
        out[g.signature] = g if seen is None else GoroutineGroupSummary(
            g.signature, seen.count + g.count, g.state, g.wait_function, g.wait_location,
            g.top_function, g.creator)
    return sorted(out.values(), key=lambda g: (-g.count, g.signature))


def leaked_groups(blob: bytes | bytearray) -> list[GoroutineGroupSummary] | None:
    """The groups of a /debug/pprof/goroutineleak profile: [] when it proves none leaked,
    None when it cannot be read (then nothing is claimed either way)."""
    try:
        return parse_goroutines(blob).summaries()
    except ProfileError as exc:
        return [] if "no samples" in exc.message else None


def unchanged_note(previous: list[InstanceObservation], current: list[InstanceObservation],
                   service: str) -> str:
    """Plain words when this capture's heap profile repeats the previous capture's.

    Same digest on an instance = no GC completed between the two captures there,
    so the heap profile is the same observation (a Go heap profile is as of the
    last GC). "" when anything changed or nothing can be compared.
    """
    before = {o.target: o for o in previous if o.digest}
    same = [o for o in current if o.digest and o.target in before
            and before[o.target].digest == o.digest]
    if not same:
        return ""
    last = max((o.last_gc for o in same if o.last_gc), default=None)
    since = f" since {format_clock(last)}" if last else ""
    cycles = sorted({o.num_gc for o in same if o.num_gc is not None})
    numgc = f" (NumGC {cycles[0]})" if len(cycles) == 1 else ""
    where = ("" if len(same) == len(current) == 1 else
             f" on {len(same)} of {len(current)} instances" if len(same) < len(current)
             else f" on all {len(same)} instances")
    return (f"heap profile unchanged since the previous capture{where}: no GC ran{since}"
            f"{numgc}, so it shows the heap as of that GC; `/heap capture {service} --gc` "
            "takes a fresh one")
