"""``summarize_heap`` / ``summarize_snapshot``: the small per-snapshot summary that history
and leak detection read.

Totals per sample type and, per sample type, the union of the top-k functions by
flat and by cum, with pprof-exact values (the same numbers ``top`` shows).
"""

from __future__ import annotations

from collections.abc import Mapping

from bot.analysis import graph
from bot.analysis.goroutines import GoroutineReport
from bot.analysis.summary import FunctionValue, ProfileSummary, SnapshotSummary
from bot.analysis.top import report_total
from bot.pprof.model import Profile, sample_type_index


def summarize_heap(profile: Profile, k: int = 100) -> ProfileSummary:
    """Totals and leading functions of every sample type of ``profile``."""
    nodes = graph.node_index(profile)
    fr = graph.frames(profile)  # shared by every sample type: computed once
    default = profile.sample_types[sample_type_index(profile, None)].type
    summary = ProfileSummary(
        sample_types={st.type: st.unit for st in profile.sample_types},
        default_sample_type=default,
    )
    for index, st in enumerate(profile.sample_types):
        flat, cum = graph.flat_cum(fr, profile.values[:, index])
        present = (flat != 0) | (cum != 0)
        candidates = present.nonzero()[0]
        by_flat = graph.sort_nodes(candidates, flat, cum, nodes.name_rank, by_cum=False)[:k]
        by_cum = graph.sort_nodes(candidates, flat, cum, nodes.name_rank, by_cum=True)[:k]
        chosen = list(dict.fromkeys(by_flat.tolist() + by_cum.tolist()))
        summary.totals[st.type] = report_total(profile, index)
        summary.functions[st.type] = [
            FunctionValue(nodes.names[i], int(flat[i]), int(cum[i])) for i in chosen
        ]
    return summary


def summarize_snapshot(*, snapshot_id: str, service: str, taken_at: float, build_id: str,
                       instances: int, heap: Profile | None, goroutines: GoroutineReport | None,
                       memstats: Mapping[str, int] | None = None,
                       trigger: str = "user") -> SnapshotSummary:
    """The summary stored with a snapshot: the merged heap's, the merged goroutines'
    (``bot.analysis.goroutines.merge_reports``) and the summed MemStats."""
    return SnapshotSummary(
        snapshot_id=snapshot_id, service=service, taken_at=taken_at, build_id=build_id,
        instances=instances,
        heap=summarize_heap(heap) if heap is not None else ProfileSummary(),
        goroutine_total=goroutines.total if goroutines is not None else 0,
        goroutine_groups=goroutines.summaries() if goroutines is not None else [],
        memstats=dict(memstats or {}), trigger=trigger,
    )
