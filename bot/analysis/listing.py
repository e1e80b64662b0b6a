"""``list``: flat and cum per source line of the functions matching a regex (pprof -list).

heapbot has no source code, so instead of annotated source it shows file:line
and the values, which is what points at the allocating line. Values are those
of pprof's line-granularity graph: a line counts once per sample, flat goes to
the innermost line of each stack.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bot.analysis import graph
from bot.analysis.top import TopOptions, report_total
from bot.errors import UsageError
from bot.pprof.model import Profile, sample_type_index
from bot.units import format_value, percentage

SourceRows = Callable[["ListFunction"], Sequence[tuple[int, int, int, str]] | None]


@dataclass(slots=True)
class ListLine:
    line: int
    flat: int
    cum: int


@dataclass(slots=True)
class ListFunction:
    """One function in one source file; flat/cum are pprof's ROUTINE header sums."""

    function: str
    file: str
    flat: int
    cum: int
    lines: list[ListLine] = field(default_factory=list)


@dataclass(slots=True)
class ListReport:
    sample_type: str
    unit: str
    total: int
    regex: str
    functions: list[ListFunction]

    def to_json(self) -> dict[str, Any]:
        return {"sample_type": self.sample_type, "unit": self.unit, "total": self.total,
                "regex": self.regex,
                "functions": [{"function": f.function, "file": f.file, "flat": f.flat,
                               "cum": f.cum,
                               "lines": [{"line": x.line, "flat": x.flat, "cum": x.cum}
                                         for x in f.lines]} for f in self.functions]}

    def to_text(self, source_rows: SourceRows | None = None) -> str:
        """``go tool pprof -list``'s text. ``source_rows(f)`` gives a function's rows as
        (flat, cum, line, source text) when its source was found (None: the file name
        stands in for each line's text, as pprof prints without sources)."""
        def fmt(v: int) -> str:
            return format_value(v, self.unit) if v else "."

        out = [f"Type: {self.sample_type}", f"Total: {format_value(self.total, self.unit)}"]
        for f in self.functions:
            out.append(f"ROUTINE ======================== {f.function} in {f.file}")
            out.append(f"{format_value(f.flat, self.unit):>10s} "
                       f"{format_value(f.cum, self.unit):>10s} (flat, cum) "
                       f"{percentage(f.cum, self.total)} of Total")
            rows = source_rows(f) if source_rows is not None else None
            if rows is None:
                rows = [(x.flat, x.cum, x.line, f.file) for x in f.lines]
            out.extend(f"{fmt(flat):>10s} {fmt(cum):>10s} {line:6d}:{text}"
                       for flat, cum, line, text in rows)
        return "\n".join(out) + "\n"


def list_lines(profile: Profile, regex: str, options: TopOptions | None = None) -> ListReport:
    """Per-line values of every function whose name matches ``regex``."""
    options = options or TopOptions()
    rx = graph.compile_regex(regex, "list")
    if rx is None:
        raise UsageError("list needs a function regex.", hint="e.g. `list 'main\\.handle'`.")
    index = sample_type_index(profile, options.sample_type)
    st = profile.sample_types[index]
    nodes = graph.node_index(profile, lines=True)
    fr = graph.frames(profile, options.filters(), lines=True)
    flat, cum = graph.flat_cum(fr, profile.values[:, index])
    grouped: dict[tuple[str, str], list[ListLine]] = {}
    matched_any = False
    present = np.flatnonzero((flat != 0) | (cum != 0))
    hits = rx.match_all([nodes.keys[i][0] for i in present.tolist()])
    for i in present[hits].tolist():
        name, file, line = nodes.keys[i]
        if not name:
            continue
        matched_any = True
        if not file:
            continue
        grouped.setdefault((name, file), []).append(ListLine(line, int(flat[i]), int(cum[i])))
    if not matched_any:
        raise UsageError(f"No function matches `{regex}` in this profile.",
                         hint="Check the spelling, or run `top` to see the function names.")
    functions = []
    for (name, file), lines in sorted(grouped.items()):
        lines.sort(key=lambda x: x.line)
        functions.append(ListFunction(name, file, sum(x.flat for x in lines),
                                      sum(x.cum for x in lines), lines))
    return ListReport(st.type, st.unit, report_total(profile, index), regex, functions)
