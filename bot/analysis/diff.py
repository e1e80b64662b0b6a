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
from bot.pprof.model import Profile, sample_type_index


def _values_by_name(profile: Profile, index: int,
                    filters: graph.Filters) -> dict[str, tuple[int, int]]:
    nodes = graph.node_index(profile)
    fr = graph.frames(profile, filters)
    flat, cum = graph.flat_cum(fr, profile.values[:, index])
    out: dict[str, tuple[int, int]] = {}
    for i in np.flatnonzero((flat != 0) | (cum != 0)).tolist():
        f, c = out.get(nodes.names[i], (0, 0))
        out[nodes.names[i]] = (f + int(flat[i]), c + int(cum[i]))
    return out


def _callers_by_name(profile: Profile, index: int, filters: graph.Filters,
                     names: set[str]) -> dict[str, dict[str, bool]]:
    """Callers of the named functions, and whether each call edge is inlined."""
    nodes = graph.node_index(profile)
    selected = np.array([i for i, n in enumerate(nodes.names) if n in names], dtype=np.int64)
    fr = graph.frames(profile, filters)
    out: dict[str, dict[str, bool]] = {}
    for callee, callers in graph.incoming_edges(fr, profile.values[:, index], selected).items():
        mine = out.setdefault(nodes.names[callee], {})
        for caller, inline in callers.items():
            name = nodes.names[caller]
            mine[name] = mine.get(name, True) and inline
    return out


def check_comparable(base: Profile, new: Profile) -> None:
    """pprof merges only profiles with the same sample types."""
    bt = [(s.type, s.unit) for s in base.sample_types]
    nt = [(s.type, s.unit) for s in new.sample_types]
    if bt != nt:
        raise ProfileError(
            "These two profiles cannot be compared: they hold different sample types ("
            + ", ".join(t for t, _ in bt) + " vs " + ", ".join(t for t, _ in nt) + ").",
            hint="Compare two heap profiles, or two goroutine profiles.")


def diff(base: Profile, new: Profile, options: TopOptions | None = None) -> TopReport:
    """The top table of (new − base), like ``go tool pprof -diff_base=base new``."""
    options = options or TopOptions()
    options.check()
    check_comparable(base, new)
    index = sample_type_index(new, options.sample_type)
    st = new.sample_types[index]
    base_total = report_total(base, index)
    total = report_total(new, index)
    percent_total = base_total if base_total > 0 else base_total + total
    filters = options.filters()
    before = _values_by_name(base, index, filters)
    after = _values_by_name(new, index, filters)
    names = sorted(set(before) | set(after))
    flat = np.array([after.get(n, (0, 0))[0] - before.get(n, (0, 0))[0] for n in names],
                    dtype=np.int64)
    cum = np.array([after.get(n, (0, 0))[1] - before.get(n, (0, 0))[1] for n in names],
                   dtype=np.int64)
    present = np.flatnonzero((flat != 0) | (cum != 0))
    rank = np.arange(len(names), dtype=np.int64)  # names are sorted already
    order = graph.sort_nodes(present, flat, cum, rank, options.sort == "cum")
    node_total = int(present.size)
    if options.node_count:
        order = order[:options.node_count]
    rows = build_rows(names, order, flat, cum, percent_total)
    shown = {r.function for r in rows}
    old = _callers_by_name(base, index, filters, shown)
    now = _callers_by_name(new, index, filters, shown)
    for row in rows:
        edges = dict(old.get(row.function, {}))
        for caller, inline in now.get(row.function, {}).items():
            edges[caller] = edges.get(caller, True) and inline
        row.inline = graph.inline_label(edges)
        if row.function not in before:
            row.status = "new"
        elif row.function not in after:
            row.status = "gone"
    # With an all-zero base pprof divides by every sample of both profiles.
    return TopReport(sample_type=st.type, unit=st.unit, total=total, rows=rows,
                     base_total=base_total, node_total=node_total, sort=options.sort,
                     filters=filter_labels(options), denominator=percent_total)
