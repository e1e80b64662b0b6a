"""History chart: heap in use and goroutines over stored captures, deploys marked.

Drawn with matplotlib's object API on the Agg canvas (no pyplot, no global
state), so it is safe to call from a worker thread; matplotlib is imported
only when a chart is drawn, keeping CLI start-up fast.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from bot.analysis.summary import SnapshotSummary

WIDTH_INCHES, HEIGHT_INCHES, DPI = 10.0, 6.0, 100  # → 1000 × 600 px
MB = 1024 * 1024


def _deploy_time_and_label(marker: Any) -> tuple[float, str] | None:
    """Read a deploy marker whatever its shape: dataclass, dict or (time, version) tuple."""
    if isinstance(marker, tuple | list) and len(marker) >= 2:
        return float(marker[0]), str(marker[1])
    if isinstance(marker, dict):
        at = marker.get("at", marker.get("taken_at", marker.get("time")))
        version = marker.get("version", "")
    else:
        at = next((getattr(marker, name) for name in ("at", "taken_at", "time")
                   if getattr(marker, name, None) is not None), None)
        version = getattr(marker, "version", "")
    if at is None:
        return None
    return float(at), str(version or "")


def _heap_inuse_bytes(summary: SnapshotSummary) -> float | None:
    """MemStats HeapInuse when captured, else the heap profile's inuse_space total."""
    if summary.memstats.get("HeapInuse"):
        return float(summary.memstats["HeapInuse"])
    total = summary.heap.totals.get("inuse_space")
    return float(total) if total is not None else None


def history_png(summaries: Sequence[SnapshotSummary], deploys: Sequence[Any] = (),
                title: str = "") -> bytes:
    """A 1000×600 PNG: heap in use (MB) above, goroutines below, deploys as dashed lines."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.dates as mdates
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    points = sorted(summaries, key=lambda s: s.taken_at)
    service = title or (points[0].service if points else "")
    fig = Figure(figsize=(WIDTH_INCHES, HEIGHT_INCHES), dpi=DPI)
    FigureCanvasAgg(fig)
    heap_ax, gor_ax = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 2]})

    times = [datetime.fromtimestamp(s.taken_at, tz=UTC) for s in points]
    heap = [_heap_inuse_bytes(s) for s in points]
    heap_times = [t for t, v in zip(times, heap, strict=True) if v is not None]
    heap_mb = [v / MB for v in heap if v is not None]
    profile_mb = [(t, s.heap.totals["inuse_space"] / MB) for t, s in zip(times, points, strict=True)
                  if "inuse_space" in s.heap.totals]
    goroutines = [s.goroutine_total for s in points]

    has_memstats = any(s.memstats.get("HeapInuse") for s in points)
    heap_ax.plot(heap_times, heap_mb, marker="o", markersize=3, color="#1f77b4",
                 label="heap in use (MemStats HeapInuse)" if has_memstats
                 else "heap in use (inuse_space, heap profile)")
    if profile_mb and has_memstats:
        heap_ax.plot([t for t, _ in profile_mb], [v for _, v in profile_mb], linestyle=":",
                     color="#7f7f7f", label="inuse_space (heap profile)")
    heap_ax.set_ylabel("MB")
    heap_ax.set_ylim(bottom=0)
    heap_ax.grid(True, alpha=0.3)
    gor_ax.plot(times, goroutines, marker="o", markersize=3, color="#d62728", label="goroutines")
    gor_ax.set_ylabel("goroutines")
    gor_ax.set_ylim(bottom=0)
    gor_ax.grid(True, alpha=0.3)

    first = points[0].taken_at if points else None
    last = points[-1].taken_at if points else None
    for marker in deploys:
        parsed = _deploy_time_and_label(marker)
        if parsed is None:
            continue
        at, version = parsed
        if first is not None and last is not None and not (first - 3600 <= at <= last + 3600):
            continue  # a deploy far outside the captures would squash the plot
        when = datetime.fromtimestamp(at, tz=UTC)
        for ax in (heap_ax, gor_ax):
            ax.axvline(when, color="#2ca02c", linestyle="--", linewidth=1.2)
        heap_ax.annotate(f"deploy {version}".strip(), xy=(when, 1.0),
                         xycoords=("data", "axes fraction"), xytext=(3, -12),
                         textcoords="offset points", fontsize=8, color="#2ca02c",
                         bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none",
                               "pad": 1})

    heap_ax.legend(loc="upper left", fontsize=8)
    gor_ax.legend(loc="upper left", fontsize=8)
    locator = mdates.AutoDateLocator()
    gor_ax.xaxis.set_major_locator(locator)
    gor_ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz=UTC))
    gor_ax.set_xlabel("time (UTC)")
    if not points:
        heap_ax.text(0.5, 0.5, "no captures stored yet", transform=heap_ax.transAxes,
                     ha="center", va="center", color="#7f7f7f")
    fig.suptitle(f"{service}: heap in use and goroutines" if service else
                 "heap in use and goroutines", fontsize=12)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()
