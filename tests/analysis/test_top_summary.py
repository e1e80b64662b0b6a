"""summarize_heap: the per-snapshot summary holds top's exact numbers for every type."""

from __future__ import annotations

import json
from pathlib import Path

from bot.analysis.summarize import summarize_heap
from bot.analysis.summary import ProfileSummary
from bot.analysis.top import TopOptions, top
from bot.pprof import parse_profile

FIXTURES = Path(__file__).parents[1] / "fixtures"


def test_summary_is_the_union_of_top_k_by_flat_and_by_cum() -> None:
    profile = parse_profile((FIXTURES / "heap_2.pb.gz").read_bytes())
    k = 7
    summary = summarize_heap(profile, k=k)
    assert summary.sample_types == {"alloc_objects": "count", "alloc_space": "bytes",
                                    "inuse_objects": "count", "inuse_space": "bytes"}
    assert summary.default_sample_type == "inuse_space"
    for sample_type in summary.sample_types:
        by_flat = top(profile, TopOptions(sample_type, node_count=k))
        by_cum = top(profile, TopOptions(sample_type, "cum", node_count=k))
        assert summary.totals[sample_type] == by_flat.total
        got = {(f.function, f.flat, f.cum) for f in summary.functions[sample_type]}
        want = {(r.function, r.flat, r.cum) for r in by_flat.rows + by_cum.rows}
        assert got == want
        # flat leaders first, in top's order
        assert [f.function for f in summary.functions[sample_type][:k]] == \
            [r.function for r in by_flat.rows]


def test_summary_round_trips_through_json() -> None:
    profile = parse_profile((FIXTURES / "goroutine.pb.gz").read_bytes())
    summary = summarize_heap(profile)
    assert summary.totals["goroutine"] == int(profile.values[:, 0].sum())
    again = ProfileSummary.from_dict(json.loads(json.dumps(summary.to_dict())))
    assert again == summary
