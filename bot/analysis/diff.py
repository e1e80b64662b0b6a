"""``diff``: pprof's ``-diff_base``: what changed between an earlier and a later profile.

pprof negates the base, labels it ``pprof::base`` and merges it with the later
profile; the graph of that merge is linear in the samples, so each function's
flat and cum are simply (later − base). Percentages are relative to the base's
total (pprof's computeTotal counts only the base samples when there are any),
rows are sorted by absolute change, and each row says whether the function is
new (absent from the base) or gone (absent from the later profile).
"""

from __future__ import annotations

import numpy as np

from bot.analysis import graph
from bot.analysis.top import TopOptions, TopReport, build_rows, filter_labels, report_total
from bot.errors import ProfileError
from bot.logs import target_names
from bot.pprof.model import Profile, sample_type_index

Key = tuple[str, str, int]  # a function node's identity (see graph.NodeIndex.keys)


def _values_by_key(profile: Profile, index: int, filters: graph.Filters,
                   names: dict[Key, str]) -> dict[Key, tuple[int, int]]:
    """Flat and cum of every function with a value, by node identity."""
    nodes = graph.node_index(profile)
    fr = graph.frames(profile, filters)
    flat, cum = graph.flat_cum(fr, profile.values[:, index])
    out: dict[Key, tuple[int, int]] = {}
    for i in np.flatnonzero((flat != 0) | (cum != 0)).tolist():
        key = nodes.keys[i]
        names[key] = nodes.names[i]
        out[key] = (int(flat[i]), int(cum[i]))
    return out


def _callers_by_key(profile: Profile, index: int, filters: graph.Filters,
                    keys: set[Key], cut: bool) -> dict[Key, dict[Key, bool]]:
    """Callers of the given functions, and whether each call edge is inlined; ``cut``:
    -nodecount dropped other nodes, so only these functions are in pprof's graph."""
    nodes = graph.node_index(profile)
    selected = np.array([i for i, k in enumerate(nodes.keys) if k in keys], dtype=np.int64)
    fr = graph.frames(profile, filters)
    kept = None
    if cut:
        kept = np.zeros(fr.num_nodes, dtype=bool)
        kept[selected] = True
    out: dict[Key, dict[Key, bool]] = {}
    # every edge: the other profile may inline a function this one never does
    edges = graph.incoming_edges(fr, profile.values[:, index], selected, kept, every_edge=True)
    for callee, callers in edges.items():
        mine = out.setdefault(nodes.keys[callee], {})
        for caller, inline in callers.items():
            mine[nodes.keys[caller]] = inline
    return out


def merged_total(profile: Profile, index: int) -> int:
    """pprof's total of a profile it merged (as -diff_base does): samples with the same
    stack and labels are summed before taking absolute values. That only changes
    anything when one sample type mixes signs, which Go heap profiles never do."""
    column = profile.values[:, index]
    if (column >= 0).all() or (column <= 0).all():
        return report_total(profile, index)
    from bot.pprof import merge_profiles

    return report_total(merge_profiles([profile]), index)


def check_comparable(base: Profile, new: Profile) -> None:
    """pprof merges only profiles with the same sample types."""
    bt = [(s.type, s.unit) for s in base.sample_types]
    nt = [(s.type, s.unit) for s in new.sample_types]
    if bt != nt:
        raise ProfileError(
            "These two profiles cannot be compared: they hold different sample types ("
            + target_names(t for t, _ in bt) + " vs " + target_names(t for t, _ in nt) + ").",
            hint="Compare two heap profiles, or two goroutine profiles.")


def diff(base: Profile, new: Profile, options: TopOptions | None = None) -> TopReport:
    """The top table of (new − base), like ``go tool pprof -diff_base=base new``."""
    options = options or TopOptions()
    options.check()
    check_comparable(base, new)
    index = sample_type_index(new, options.sample_type)
    st = new.sample_types[index]
    base_total = merged_total(base, index)
    total = merged_total(new, index)
    percent_total = base_total if base_total > 0 else base_total + total
    filters = options.filters()
    printable: dict[Key, str] = {}
    before = _values_by_key(base, index, filters, printable)
    after = _values_by_key(new, index, filters, printable)
    # pprof merges the two profiles, so a node is a function identity in either.
    keys = sorted(set(before) | set(after), key=lambda k: (printable[k], repr(k)))
    names = [printable[k] for k in keys]
    flat = np.array([after.get(k, (0, 0))[0] - before.get(k, (0, 0))[0] for k in keys],
                    dtype=np.int64)
    cum = np.array([after.get(k, (0, 0))[1] - before.get(k, (0, 0))[1] for k in keys],
                   dtype=np.int64)
    present = np.flatnonzero((flat != 0) | (cum != 0))
    rank = np.arange(len(keys), dtype=np.int64)  # keys are sorted by printed name already
    order = graph.sort_nodes(present, flat, cum, rank, options.sort == "cum")
    node_total = int(present.size)
    if options.node_count:
        order = order[:options.node_count]
    rows = build_rows(names, order, flat, cum, percent_total)
    shown = {keys[i] for i in order.tolist()}
    cut = len(order) < node_total
    old = _callers_by_key(base, index, filters, shown, cut)
    now = _callers_by_key(new, index, filters, shown, cut)
    for row, i in zip(rows, order.tolist(), strict=True):
        key = keys[i]
        edges = dict(old.get(key, {}))
        for caller, inline in now.get(key, {}).items():
            edges[caller] = edges.get(caller, True) and inline
        row.inline = graph.inline_label(edges)
        if key not in before:
            row.status = "new"
        elif key not in after:
            row.status = "gone"
    # With an all-zero base pprof divides by every sample of both profiles.
    return TopReport(sample_type=st.type, unit=st.unit, total=total, rows=rows,
                     base_total=base_total, node_total=node_total, sort=options.sort,
                     filters=filter_labels(options), denominator=percent_total)
