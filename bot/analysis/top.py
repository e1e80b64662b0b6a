"""``top``: pprof's -top table (flat, flat%, sum%, cum, cum%), with the same numbers.

Semantics follow ``go tool pprof -top -nodefraction=0 -edgefraction=0``: the total
is the sum of absolute sample values before any filter (pprof computes it before
focus), rows are functions sorted like pprof's FlatNameOrder / CumNameOrder, and
focus/ignore/hide act on samples and frames as in pprof.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from bot.analysis import graph
from bot.errors import UsageError
from bot.pprof.model import Profile, sample_type_index
from bot.units import output_unit, percentage, scaled_label


@dataclass(frozen=True, slots=True)
class TopOptions:
    """What to show: sample type (None: the profile's default), order, rows, filters."""

    sample_type: str | None = None
    sort: Literal["flat", "cum"] = "flat"
    node_count: int | None = None  # None or 0: every row
    focus: str | None = None
    ignore: str | None = None
    hide: str | None = None

    def filters(self) -> graph.Filters:
        return graph.Filters(self.focus or None, self.ignore or None, self.hide or None)

    def check(self) -> None:
        if self.sort not in ("flat", "cum"):
            raise UsageError(f"Unknown sort order `{self.sort}`.", hint="Use `flat` or `cum`.")
        if self.node_count is not None and self.node_count < 0:
            raise UsageError("The number of rows cannot be negative.",
                             hint="Use -n 0 for every row.")


@dataclass(slots=True)
class TopRow:
    """One function. Values are raw integers in the profile's unit; percentages are
    of the report's total (signed; pprof prints their absolute value)."""

    function: str
    flat: int
    cum: int
    flat_pct: float
    sum_pct: float
    cum_pct: float
    status: str = ""  # diff only: "new" (absent from the base) or "gone" (absent now)
    inline: str = ""  # "inline" or "partial-inline" when calls into it were inlined


@dataclass(slots=True)
class TopReport:
    """A top table. For a diff, ``total`` is the later profile's total, ``base_total``
    the base's, and percentages are relative to ``base_total`` like pprof -diff_base."""

    sample_type: str
    unit: str
    total: int
    rows: list[TopRow]
    base_total: int | None = None
    node_total: int = 0  # functions with a non-zero value, before -n cut the list
    sort: str = "flat"
    filters: list[str] = field(default_factory=list)  # "focus=RE" etc., as pprof shows them
    denominator: int | None = None  # set by diff when it differs from base_total

    @property
    def percent_total(self) -> int:
        """The denominator of every percentage (pprof's report total)."""
        if self.denominator is not None:
            return self.denominator
        return self.base_total if self.base_total is not None else self.total

    @property
    def shown_flat(self) -> int:
        return sum(r.flat for r in self.rows)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"sample_type": self.sample_type, "unit": self.unit,
                                "total": self.total}
        if self.base_total is not None:
            data["base_total"] = self.base_total
        data["rows"] = [
            {"function": r.function, "flat": r.flat, "cum": r.cum, "flat_pct": r.flat_pct,
             "sum_pct": r.sum_pct, "cum_pct": r.cum_pct,
             **({"status": r.status} if self.base_total is not None else {})}
            for r in self.rows
        ]
        return data

    def format(self, value: int) -> str:
        """A value in this table's unit (pprof picks one unit for the whole table)."""
        unit = self.display_unit()
        return scaled_label(value, self.unit, unit)

    def display_unit(self) -> str:
        vals = [r.flat if r.flat else r.cum for r in self.rows]
        return output_unit(vals, self.percent_total, self.unit)

    def header_lines(self) -> list[str]:
        """pprof's "Showing nodes accounting for …" and "Showing top N nodes out of M"."""
        total, shown = self.percent_total, self.shown_flat
        lines = [f"Showing nodes accounting for {self.format(shown)}, "
                 f"{percentage(shown, total).strip()} of {self.format(total)} total"]
        if total and 0 < len(self.rows) < self.node_total:
            lines.append(f"Showing top {len(self.rows)} nodes out of {self.node_total}")
        return lines

    def to_text(self) -> str:
        """pprof-like text: header lines, then the table."""
        unit = self.display_unit()

        def fmt(v: int) -> str:
            return scaled_label(v, self.unit, unit)

        total = self.percent_total
        lines = [f"Type: {self.sample_type}"]
        if self.filters:
            lines.append("Active filters:")
            lines.extend(f"   {f[:80]}…" if len(f) > 80 else f"   {f}" for f in self.filters)
        lines.extend(self.header_lines())
        lines.append(f"{'flat':>10s} {'flat':>5s}% {'sum':>5s}% {'cum':>10s} {'cum':>5s}%")
        running = 0
        for r in self.rows:
            running += r.flat
            mark = f" ({r.inline})" if r.inline else ""
            mark += f" ({r.status})" if r.status else ""
            lines.append(f"{fmt(r.flat):>10s} {percentage(r.flat, total)} "
                         f"{percentage(running, total)} {fmt(r.cum):>10s} "
                         f"{percentage(r.cum, total)}  {r.function}{mark}")
        return "\n".join(lines) + "\n"


def report_total(profile: Profile, index: int) -> int:
    """pprof's computeTotal: the sum of absolute sample values (every sample)."""
    return int(np.abs(profile.values[:, index]).sum())


def node_values(profile: Profile, index: int,
                filters: graph.Filters) -> tuple[graph.NodeIndex, np.ndarray, np.ndarray]:
    """Flat and cum of every function node for one sample type."""
    nodes = graph.node_index(profile)
    fr = graph.frames(profile, filters)
    flat, cum = graph.flat_cum(fr, profile.values[:, index])
    return nodes, flat, cum


def filter_labels(options: TopOptions) -> list[str]:
    return [f"{k}={v}" for k, v in (("focus", options.focus), ("ignore", options.ignore),
                                    ("hide", options.hide)) if v]


def build_rows(names: list[str], order: np.ndarray, flat: np.ndarray, cum: np.ndarray,
               total: int) -> list[TopRow]:
    """Rows with pprof's percentages (sum% is the running flat sum)."""
    rows: list[TopRow] = []
    running = 0
    scale = 100.0 / total if total else 0.0
    for i, f, c in zip(order.tolist(), flat[order].tolist(), cum[order].tolist(), strict=True):
        running += f
        rows.append(TopRow(names[i], f, c, round(f * scale, 4), round(running * scale, 4),
                           round(c * scale, 4)))
    return rows


def top(profile: Profile, options: TopOptions | None = None) -> TopReport:
    """The -top table of ``profile``."""
    options = options or TopOptions()
    options.check()
    index = sample_type_index(profile, options.sample_type)
    st = profile.sample_types[index]
    total = report_total(profile, index)
    nodes, flat, cum = node_values(profile, index, options.filters())
    present = np.flatnonzero((flat != 0) | (cum != 0))
    order = graph.sort_nodes(present, flat, cum, nodes.name_rank, options.sort == "cum")
    if options.node_count:
        order = order[:options.node_count]
    rows = build_rows(nodes.names, order, flat, cum, total)
    fr = graph.frames(profile, options.filters())
    callers = graph.incoming_edges(fr, profile.values[:, index], order,
                                   graph.kept_nodes(fr.num_nodes, order, present.size))
    for row, node in zip(rows, order.tolist(), strict=True):
        row.inline = graph.inline_label(callers.get(node))
    return TopReport(
        sample_type=st.type, unit=st.unit, total=total,
        rows=rows,
        node_total=int(present.size), sort=options.sort, filters=filter_labels(options),
    )
