"""File mode of `heapbot goroutines --profile FILE` and `heapbot memstats --file FILE`.

Reads a saved goroutine dump (proto, ?debug=1 or ?debug=2) or a saved
``heap?debug=1`` response and prints an aligned table or JSON. Nothing here
touches Redis, Slack or the network.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from bot.errors import UsageError

DEFAULT_ROWS = 10


def _read(path: str, flag: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise UsageError(f"No file at {path}.", hint=f"Pass an existing file to {flag}.") from None
    except IsADirectoryError:
        raise UsageError(f"{path} is a directory.", hint=f"Pass a file to {flag}.") from None
    except PermissionError:
        raise UsageError(f"Cannot read {path} (permission denied).") from None


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: set[int]) -> str:
    """Plain aligned text columns (the last column is not padded)."""
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        out = []
        for i, cell in enumerate(cells):
            if i == len(cells) - 1:
                out.append(cell)
            elif i in right:
                out.append(cell.rjust(widths[i]))
            else:
                out.append(cell.ljust(widths[i]))
        return "  ".join(out).rstrip()

    return "\n".join([line(headers), *(line(r) for r in rows)])


def goroutines_file(args: argparse.Namespace) -> int:
    """`heapbot goroutines --profile FILE [-n N] [--format text|json]`."""
    from bot.analysis.goroutines import creator_heading, parse_goroutines

    report = parse_goroutines(_read(args.profile, "--profile"))
    nodes = getattr(args, "nodes", None)
    if nodes is not None and nodes < 0:
        raise UsageError("-n must be 0 (every group) or more.")
    if args.format == "json":
        data = report.to_json()
        if nodes:
            data["groups"] = data["groups"][:nodes]
        json.dump(data, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    limit = DEFAULT_ROWS if nodes is None else (nodes or len(report.groups))
    shown = report.groups[:limit]
    print(f"{report.total:,} goroutines in {len(report.groups):,} groups (source: "
          f"{report.source})")
    states = ", ".join(f"{n:,} {s}" for s, n in report.by_state().items())
    if states:
        print(f"By state: {states}")
    if report.leaked:  # a ?debug=2 dump taken after Go's leak-detecting GC marked them
        print(f"Leaked: {report.leaked:,} goroutines Go's GC proved leaked "
              "(nothing left can ever wake them)")
    print(f"Showing {len(shown)} of {len(report.groups)} groups\n")
    rows = [[f"{g.count:,}", f"{g.count / report.total * 100:.1f}%" if report.total else "",
             g.state + (" (leaked)" if g.leaked == g.count else
                        f" ({g.leaked:,} leaked)" if g.leaked else ""),
             g.wait_function or "?", g.wait_location, g.creator] for g in shown]
    print(_table(["count", "share", "state", "waits in", "at", creator_heading(report.source)],
                 rows, {0, 1}))
    return 0


def _human(name: str, value: int) -> str:
    from bot.analysis.memstats import is_byte_field

    if name == "LastGC" and value:
        from datetime import UTC, datetime

        return datetime.fromtimestamp(value / 1e9, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    if not is_byte_field(name):
        return f"{value:,}"
    size = float(value)
    for unit, scale in (("GB", 1 << 30), ("MB", 1 << 20), ("kB", 1 << 10)):
        if size >= scale:
            return f"{size / scale:.2f}{unit}"
    return f"{value}B"


def memstats_file(args: argparse.Namespace) -> int:
    """`heapbot memstats --file FILE [--format text|json]`."""
    from bot.analysis.memstats import DISPLAY_ORDER, parse_memstats

    stats = parse_memstats(_read(args.file, "--file"))
    if args.format == "json":
        json.dump(stats.to_json(), sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    names = [n for n in DISPLAY_ORDER if n in stats.fields]
    names += sorted(n for n in stats.fields if n not in DISPLAY_ORDER)
    rows = [[n, f"{stats.fields[n]:,}", _human(n, stats.fields[n])] for n in names]
    rows.append(["GCCPUFraction", f"{stats.gc_cpu_fraction:.6f}", ""])
    print(_table(["field", "value", ""], rows, {1}))
    recent = [p for p in stats.pause_ns if p][:5]
    if recent:
        print(f"\nPauseNs (first recorded): {' '.join(f'{p:,}' for p in recent)}")
    print(f"\nFree but held by the runtime (HeapIdle − HeapReleased): "
          f"{_human('HeapIdle', stats.held_free)}")
    return 0
