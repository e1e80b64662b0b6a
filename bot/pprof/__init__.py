"""pprof profiles: decode profile.proto (gzip or raw) into a columnar Profile, merge.

Public API (see docs/DESIGN.md): ``parse_profile``, ``Limits``, ``merge_profiles``,
``Profile``, ``SampleType``, ``sample_type_index``.
"""

from __future__ import annotations

from collections.abc import Sequence

from bot.pprof.decode import parse_profile
from bot.pprof.limits import Limits
from bot.pprof.model import Mapping, Profile, SampleType, sample_type_index

__all__ = ["Limits", "Mapping", "Profile", "SampleType", "merge_profiles", "parse_profile",
           "sample_type_index"]


def merge_profiles(profiles: Sequence[Profile]) -> Profile:
    """pprof's merge: identical stacks and labels summed; tables deduplicated by content."""
    from bot.pprof.merge import merge_profiles as _merge

    return _merge(profiles)
