"""``peek``: callers and callees of the functions matching a regex (pprof -peek).

For each matching function: its flat and cum, every caller with the value that
flowed through that call, every callee likewise. Edges count once per sample
(recursion does not double them) and are sorted like pprof's edge lists.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bot.analysis import graph
from bot.analysis.top import TopOptions, report_total
from bot.errors import UsageError
from bot.pprof.model import Profile, sample_type_index
from bot.units import output_unit, percentage, scaled_label


@dataclass(slots=True)
class PeekEdge:
    """A caller (or callee) and the value through that call."""

    function: str
    value: int
    inline: bool = False


@dataclass(slots=True)
class PeekEntry:
    function: str
    flat: int
    cum: int
    callers: list[PeekEdge] = field(default_factory=list)
    callees: list[PeekEdge] = field(default_factory=list)


@dataclass(slots=True)
class PeekReport:
    sample_type: str
    unit: str
    total: int
    regex: str
    entries: list[PeekEntry]
    shown: int = 0  # flat sum of every function after filters (pprof's header)
    display_unit: str = ""  # the unit pprof picks for the whole graph

    def to_json(self) -> dict[str, Any]:
        def edge(e: PeekEdge) -> dict[str, Any]:
            return {"function": e.function, "value": e.value, "inline": e.inline}

        return {"sample_type": self.sample_type, "unit": self.unit, "total": self.total,
                "regex": self.regex,
                "entries": [{"function": x.function, "flat": x.flat, "cum": x.cum,
                             "callers": [edge(e) for e in x.callers],
                             "callees": [edge(e) for e in x.callees]} for x in self.entries]}

    def to_text(self) -> str:
        """pprof's -peek layout: callers above, the function, callees below."""
        unit = self.display_unit or output_unit(
            [x.flat if x.flat else x.cum for x in self.entries], self.total, self.unit)

        def fmt(v: int) -> str:
            return scaled_label(v, self.unit, unit)

        sep = "----------------------------------------------------------+-------------"
        out = [f"Type: {self.sample_type}",
               f"Showing nodes accounting for {fmt(self.shown)}, "
               f"{percentage(self.shown, self.total).strip()} of {fmt(self.total)} total",
               sep, "      flat  flat%   sum%        cum   cum%   calls calls% + context \t \t "]
        running = 0
        for x in self.entries:
            out.append(sep)
            for e in x.callers:
                tail = " (inline)" if e.inline else ""
                out.append(f"{fmt(e.value):>50s} {percentage(e.value, x.cum)} |   "
                           f"{e.function}{tail}")
            running += x.flat
            out.append(f"{fmt(x.flat):>10s} {percentage(x.flat, self.total)} "
                       f"{percentage(running, self.total)} {fmt(x.cum):>10s} "
                       f"{percentage(x.cum, self.total)}                | {x.function}")
            for e in x.callees:
                tail = " (inline)" if e.inline else ""
                out.append(f"{fmt(e.value):>50s} {percentage(e.value, x.cum)} |   "
                           f"{e.function}{tail}")
        if self.entries:
            out.append(sep)
        return "\n".join(out) + "\n"


def _edges(fr: graph.Frames, w: np.ndarray, matched: np.ndarray,
           n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(caller, callee, weight, inline) of edges touching a matched node, once per sample."""
    nodes = fr.nodes
    if nodes.size < 2:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty, empty.astype(bool)
    owner = np.repeat(np.arange(fr.samples.size), np.diff(fr.offsets))
    callee, caller = nodes[:-1].astype(np.int64), nodes[1:].astype(np.int64)
    ok = (owner[:-1] == owner[1:]) & (callee != caller) & (matched[callee] | matched[caller])
    idx = np.flatnonzero(ok)
    sample = owner[idx]
    key = (sample * n + caller[idx]) * n + callee[idx]
    # pprof adds an edge once per sample, at its occurrence nearest the root (it walks
    # from the root and skips pairs it has seen): that one alone says whether it is inline.
    _, from_end = np.unique(key[::-1], return_index=True)
    rootmost = idx.size - 1 - from_end
    inline_root = fr.inline[idx[rootmost]]
    s = sample[rootmost]
    pair = caller[idx][rootmost] * n + callee[idx][rootmost]
    pairs, pinv = np.unique(pair, return_inverse=True)
    weight = graph.weighted_sum(pinv, w[s], pairs.size)
    pinline = np.ones(pairs.size, dtype=bool)
    np.logical_and.at(pinline, pinv, inline_root)
    return pairs // n, pairs % n, weight, pinline


def peek(profile: Profile, regex: str, options: TopOptions | None = None) -> PeekReport:
    """Callers and callees of every function whose name matches ``regex``."""
    options = options or TopOptions()
    rx = graph.compile_regex(regex, "peek")
    if rx is None:
        raise UsageError("peek needs a function regex.", hint="e.g. `peek 'main\\.handle'`.")
    index = sample_type_index(profile, options.sample_type)
    st = profile.sample_types[index]
    total = report_total(profile, index)
    nodes = graph.node_index(profile)
    fr = graph.frames(profile, options.filters())
    values = profile.values[:, index]
    flat, cum = graph.flat_cum(fr, values)
    n = len(nodes.names)
    present = (flat != 0) | (cum != 0)
    matched = rx.match_all(nodes.names) & present
    if not matched.any():
        raise UsageError(f"No function matches `{regex}` in this profile.",
                         hint="Check the spelling, or run `top` to see the function names.")
    callers, callees, weight, inline = _edges(fr, values[fr.samples], matched, n)
    keep = weight != 0
    callers, callees, weight, inline = callers[keep], callees[keep], weight[keep], inline[keep]
    order = graph.sort_nodes(np.flatnonzero(matched), flat, cum, nodes.name_rank,
                             options.sort == "cum")
    names = nodes.names

    def edge_list(sel: np.ndarray, other: np.ndarray, me: int, outgoing: bool) -> list[PeekEdge]:
        edges = [(int(weight[i]), names[int(other[i])], bool(inline[i])) for i in sel.tolist()]
        # pprof's edgeList order: |weight| desc, then source name, then destination name.
        edges.sort(key=lambda e: (-abs(e[0]), names[me] if outgoing else e[1],
                                  e[1] if outgoing else names[me]))
        return [PeekEdge(name, v, il) for v, name, il in edges]

    entries = []
    for i in order.tolist():
        entries.append(PeekEntry(
            names[i], int(flat[i]), int(cum[i]),
            callers=edge_list(np.flatnonzero(callees == i), callers, i, outgoing=False),
            callees=edge_list(np.flatnonzero(callers == i), callees, i, outgoing=True)))
    every = np.flatnonzero(present)
    unit = output_unit([int(flat[i]) if flat[i] else int(cum[i]) for i in every.tolist()],
                       total, st.unit)
    return PeekReport(st.type, st.unit, total, regex, entries, shown=int(flat[every].sum()),
                      display_unit=unit)
