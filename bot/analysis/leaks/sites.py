"""Where a function allocates and who in the service's own code calls it (from a profile)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bot.analysis.goroutines import Frame, engine_stacks, is_own_code
from bot.analysis.leaks.model import HeapSite
from bot.analysis.summarize import summarize_heap
from bot.analysis.summary import ProfileSummary
from bot.pprof import merge_profiles, parse_profile


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
        caller = next((f for f in frames if is_own_code(f.function)), None)
        key = (leaf.location, caller.function if caller else "",
               caller.location if caller else "")
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

    Used when a stored snapshot's summary has no heap part, so leak detection
    still sees the functions; the engine's ``summarize_heap`` over the merge.
    """
    profiles = [parse_profile(b) for b in blobs]
    profile = profiles[0] if len(profiles) == 1 else merge_profiles(profiles)
    return summarize_heap(profile, k)


def _profile_stacks(profile: Any, sample_type: str) -> list[tuple[float, list[Frame]]]:
    if isinstance(profile, bytes | bytearray):
        return _stacks_from_bytes(bytes(profile), sample_type)
    return _stacks_from_engine(profile, sample_type)


def _stacks_from_bytes(data: bytes, sample_type: str) -> list[tuple[float, list[Frame]]]:
    return _stacks_from_engine(parse_profile(data), sample_type)


def _stacks_from_engine(profile: Any, sample_type: str) -> list[tuple[float, list[Frame]]]:
    """Stacks of the engine's columnar Profile (bot.pprof.model), innermost frame first."""
    types = [st.type for st in profile.sample_types]
    index = types.index(sample_type) if sample_type in types else len(types) - 1
    return [(float(values[index]), frames) for values, frames in engine_stacks(profile)]

