"""Flame graphs drawn: a PNG for Slack and an SVG whose frames carry tooltips.

Both are drawn from one ``FlameLayout`` (``bot.analysis.flame``) with the same
pixel geometry, an icicle like pprof's flame view (the root on top, callees
below). The PNG uses matplotlib's object API on the Agg canvas in pixel
coordinates (dpi 72, so a point is a pixel; no pyplot, no global state: safe in
a worker process, where ``draw_flame`` runs it); matplotlib is imported only when a PNG is drawn.
The SVG is written directly: every frame is a ``<g>`` with a ``<title>`` (full
name, flat and cum on this path and for the function as ``go tool pprof -top``
counts it) and ``data-*`` attributes with the exact integers.

Labels use a monospaced font so their fit is known without measuring: a frame
shows "name value (share)" when that fits, else the name, else a cut name
ending in "…", else nothing.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING
from xml.sax.saxutils import escape, quoteattr

from bot.analysis.flame import FOLDED, GROWTH, ROOT, SHRINK, FlameLayout, FlameRect
from bot.units import format_value

if TYPE_CHECKING:
    from matplotlib.axes import Axes

WIDTH_PX = 1400  # Slack's viewer shows it about 1:1 on a laptop screen; ≤ 2000 px
MARGIN = 10
ROW_PX = 18
FONT_PX = 12
CHAR_PX = FONT_PX * 1233 / 2048  # DejaVu Sans Mono advance width
HEADER_PX = 62
FOOTER_PX = 40
TITLE_PX = 18
SUB_PX = 13
MONO = "DejaVu Sans Mono"
SANS = "DejaVu Sans"


@dataclass(frozen=True, slots=True)
class Box:
    """A frame in pixels, with the text a person reads on it and in its tooltip."""

    rect: FlameRect
    x: float
    y: float
    w: float
    h: float
    label: str
    tooltip: str
    text_color: str


@dataclass(frozen=True, slots=True)
class Picture:
    """Everything both renderers draw: size, header lines, boxes, legend."""

    width: int
    height: int
    title: str
    subtitle: str
    boxes: list[Box]
    legend: list[tuple[str, str]]  # (colour, text)
    note: str


def _value(layout: FlameLayout, v: int, signed: bool = False) -> str:
    text = format_value(v, layout.unit)
    return f"+{text}" if signed and v > 0 else text


def _pct(layout: FlameLayout, v: int, signed: bool = False) -> str:
    total = layout.percent_total
    if not total:
        return "–"
    p = 100.0 * v / total
    return f"{p:+.2f}%" if signed else f"{p:.2f}%"


def _when(nanos: int | float | None) -> str:
    if not nanos:
        return ""
    return datetime.fromtimestamp(float(nanos) / 1e9, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _tooltip(layout: FlameLayout, r: FlameRect) -> str:
    v = lambda x, s=False: _value(layout, x, s)  # noqa: E731
    p = lambda x, s=False: _pct(layout, x, s)  # noqa: E731
    if r.function == ROOT:
        if layout.is_diff:
            return (f"root: every stack of both profiles\nnow {v(r.cum)}, base {v(r.base_cum)} "
                    f"(change {v(r.delta_cum, True)}, {p(r.delta_cum, True)})")
        return f"root: {v(r.cum)} ({p(r.cum)} of the {v(layout.total)} total)"
    if r.folded:
        head = (f"{FOLDED} {r.folded} frame{'s' if r.folded != 1 else ''} too narrow to draw, "
                "folded")
        if layout.is_diff:
            return (f"{head}\nnow {v(r.cum)}, base {v(r.base_cum)} "
                    f"(change {v(r.delta_cum, True)}, {p(r.delta_cum, True)})")
        return f"{head}\n{v(r.cum)} ({p(r.cum)})"
    if layout.is_diff:
        return (f"{r.function}\nthis path: cum now {v(r.cum)}, base {v(r.base_cum)} "
                f"(change {v(r.delta_cum, True)}, {p(r.delta_cum, True)}); "
                f"flat now {v(r.flat)}, base {v(r.base_flat)} "
                f"(change {v(r.delta_flat, True)})\n"
                f"function, all paths (pprof -diff_base -top): flat {v(r.fn_flat, True)}, "
                f"cum {v(r.fn_cum, True)}")
    return (f"{r.function}\nthis path: cum {v(r.cum)} ({p(r.cum)}), flat {v(r.flat)}\n"
            f"function, all paths (pprof -top): flat {v(r.fn_flat)} ({p(r.fn_flat)}), "
            f"cum {v(r.fn_cum)} ({p(r.fn_cum)})")


def _fit(options: list[str], width_px: float) -> str:
    room = int((width_px - 6) // CHAR_PX)
    if room < 3:
        return ""
    for text in options:
        if len(text) <= room:
            return text
    return options[-1][:room - 1] + "…"


def _label(layout: FlameLayout, r: FlameRect, width_px: float) -> str:
    if r.function == ROOT:
        if layout.is_diff:
            return _fit([f"root  now {_value(layout, r.cum)}, base {_value(layout, r.base_cum)}"
                         f" ({_value(layout, r.delta_cum, True)})", "root"], width_px)
        return _fit([f"root  {_value(layout, r.cum)} ({_pct(layout, r.cum)})", "root"], width_px)
    if r.folded:
        share = _value(layout, r.delta_cum, True) if layout.is_diff else _pct(layout, r.cum)
        return _fit([f"{FOLDED} {r.folded} folded, {share}", f"{FOLDED} {share}", FOLDED],
                    width_px)
    short = r.short
    tail = short[short.rfind(".", 0, short.find("(") if "(" in short else len(short)) + 1:]
    if tail == short or not tail:
        tail = ""
    if layout.is_diff:
        if not r.delta_cum:  # unchanged: the name says enough
            return _fit([t for t in (short, tail) if t], width_px)
        value = _value(layout, r.delta_cum, True)
        options = [f"{short} {value}", short, f"{tail} {value}" if tail else "", tail]
    else:
        value = _value(layout, r.cum)
        options = [f"{short} {value} ({_pct(layout, r.cum)})", f"{short} {value}", short,
                   f"{tail} {value}" if tail else "", tail]
    return _fit([t for t in options if t], width_px)


def _text_color(fill: str) -> str:
    red, green, blue = (int(fill[i:i + 2], 16) for i in (1, 3, 5))
    luminance = 0.2126 * red + 0.7152 * green + 0.0722 * blue
    return "#ffffff" if luminance < 140 else "#111111"


def _hex(rgb: tuple[int, int, int]) -> str:
    return "#" + "".join(f"{c:02x}" for c in rgb)


def picture(layout: FlameLayout, subject: str = "", captured_at: float | None = None,
            base_captured_at: float | None = None, width_px: int = WIDTH_PX) -> Picture:
    """Lay the frames out in pixels and write every label, tooltip and header line.

    ``captured_at``/``base_captured_at`` are Unix seconds; they default to the
    profiles' own time.
    """
    plot_w = width_px - 2 * MARGIN
    scale = plot_w / layout.width if layout.width else 0.0
    top = HEADER_PX
    boxes: list[Box] = []
    for r in layout.rects:
        w = r.width * scale
        if w < 0.5 and r.function != ROOT:
            continue
        box_x = MARGIN + r.x * scale
        box_y = top + r.depth * ROW_PX
        boxes.append(Box(r, box_x, box_y, w, ROW_PX - 1, _label(layout, r, w),
                         _tooltip(layout, r), _text_color(r.color)))
    height = top + layout.depth * ROW_PX + FOOTER_PX
    when = _when(captured_at * 1e9 if captured_at else layout.time_nanos)
    kind = "diff flame graph" if layout.is_diff else "flame graph"
    title = f"{subject}: {layout.sample_type} {kind}" if subject else \
        f"{layout.sample_type} {kind}"
    parts: list[str] = []
    if layout.is_diff:
        base_when = _when(base_captured_at * 1e9 if base_captured_at else layout.base_time_nanos)
        change = layout.total - (layout.base_total or 0)
        parts.append(f"now {_value(layout, layout.total)}" + (f" ({when})" if when else ""))
        parts.append(f"base {_value(layout, layout.base_total or 0)}"
                     + (f" ({base_when})" if base_when else ""))
        parts.append(f"change {_value(layout, change, True)}")
    else:
        parts.append(f"total {_value(layout, layout.total)}")
        if when:
            parts.append(f"captured {when}")
    parts.extend(layout.filters)
    subtitle = " · ".join(parts)
    notes: list[str] = []
    if layout.folded_frames:
        notes.append(f"{layout.folded_frames} frames too narrow to draw folded into "
                     f"“{FOLDED}” ({_share(layout, layout.folded_value)} of the width)")
    if layout.cut_value:
        notes.append(f"stacks cut below {layout.max_depth} frames "
                     f"({_value(layout, layout.cut_value)} lies deeper)")
    if layout.is_diff:
        notes.append("labels: change in cum; width: " + (
            "the larger of base and now per stack" if layout.diff_width == "max" else "now"))
    legend: list[tuple[str, str]] = []
    if layout.is_diff:
        full = _value(layout, layout.max_abs_delta)
        legend = [(_hex(GROWTH), f"flat grew (full colour: +{full})"),
                  (_hex(SHRINK), f"flat shrank (full colour: -{full})"),
                  ("#e8e8e8", "flat unchanged")]
    else:
        legend = [(color, pkg) for pkg, color in layout.packages[:8]]
    return Picture(width_px, height, title, subtitle, boxes, legend, "; ".join(notes))


def _share(layout: FlameLayout, v: int) -> str:
    return f"{100.0 * v / layout.width:.1f}%" if layout.width else "0%"


def flame_png(layout: FlameLayout, subject: str = "", captured_at: float | None = None,
              base_captured_at: float | None = None) -> bytes:
    """The flame graph as a PNG, ``WIDTH_PX`` wide and as tall as the graph is deep."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.collections import PolyCollection
    from matplotlib.figure import Figure

    pic = picture(layout, subject, captured_at, base_captured_at)
    fig = Figure(figsize=(pic.width / 72, pic.height / 72), dpi=72, facecolor="white")
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, pic.width)
    ax.set_ylim(pic.height, 0)
    ax.set_axis_off()
    if pic.boxes:
        xs = np.array([b.x for b in pic.boxes])
        ys = np.array([b.y for b in pic.boxes])
        ws = np.array([b.w - 1 if b.w >= 2 else b.w for b in pic.boxes])  # a 1 px gap
        hs = np.array([b.h for b in pic.boxes])
        verts = np.stack([np.stack([xs, ys], 1), np.stack([xs + ws, ys], 1),
                          np.stack([xs + ws, ys + hs], 1), np.stack([xs, ys + hs], 1)], axis=1)
        ax.add_collection(PolyCollection(list(verts), facecolors=[b.rect.color for b in pic.boxes],
                                         edgecolors="none", antialiased=False))
    for b in pic.boxes:
        if b.label:
            ax.text(b.x + 3, b.y + b.h / 2, b.label, fontsize=FONT_PX, family=MONO,
                    color=b.text_color, va="center_baseline", ha="left")
    ax.text(MARGIN, 8, pic.title, fontsize=TITLE_PX, family=SANS, weight="bold", va="top")
    ax.text(MARGIN, 34, pic.subtitle, fontsize=SUB_PX, family=SANS, color="#333333", va="top")
    _png_footer(ax, pic)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=72)
    return buffer.getvalue()


def _png_footer(ax: Axes, pic: Picture) -> None:
    from matplotlib.patches import Rectangle

    y = pic.height - FOOTER_PX + 12
    x = float(MARGIN)
    for color, text in pic.legend:
        ax.add_patch(Rectangle((x, y), 14, 14, facecolor=color, edgecolor="#999999",
                               linewidth=0.5))
        ax.text(x + 19, y + 7, text, fontsize=SUB_PX, family=SANS, va="center")
        x += 19 + len(text) * SUB_PX * 0.56 + 16
    if pic.note:
        ax.text(pic.width - MARGIN, y + 7, pic.note, fontsize=SUB_PX - 1, family=SANS,
                color="#555555", va="center", ha="right")


def flame_svg(layout: FlameLayout, subject: str = "", captured_at: float | None = None,
              base_captured_at: float | None = None) -> str:
    """The same picture as an SVG; hovering a frame shows its tooltip in a browser."""
    pic = picture(layout, subject, captured_at, base_captured_at)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{pic.width}" height="{pic.height}" '
        f'viewBox="0 0 {pic.width} {pic.height}">',
        "<style>text{font-family:'DejaVu Sans Mono',Menlo,Consolas,monospace;"
        f"font-size:{FONT_PX}px;dominant-baseline:central;pointer-events:none}}"
        ".h{font-family:'DejaVu Sans',Helvetica,Arial,sans-serif}"
        "g.f rect{stroke:#fff;stroke-width:1}g.f:hover rect{stroke:#000}</style>",
        f'<rect width="{pic.width}" height="{pic.height}" fill="#ffffff"/>',
        f'<text class="h" x="{MARGIN}" y="20" font-size="{TITLE_PX}" font-weight="bold">'
        f"{escape(pic.title)}</text>",
        f'<text class="h" x="{MARGIN}" y="44" font-size="{SUB_PX}" fill="#333333">'
        f"{escape(pic.subtitle)}</text>",
    ]
    for b in pic.boxes:
        r = b.rect
        attrs = (f'data-function={quoteattr(r.function)} data-depth="{r.depth}" '
                 f'data-cum="{r.cum}" data-flat="{r.flat}" data-fn-flat="{r.fn_flat}" '
                 f'data-fn-cum="{r.fn_cum}"')
        if layout.is_diff:
            attrs += f' data-base-cum="{r.base_cum}" data-base-flat="{r.base_flat}"'
        if r.folded:
            attrs += f' data-folded="{r.folded}"'
        out.append(f'<g class="f" {attrs}><title>{escape(b.tooltip)}</title>'
                   f'<rect x="{b.x:.2f}" y="{b.y:.0f}" width="{b.w:.2f}" height="{b.h:.0f}" '
                   f'fill="{r.color}"/>'
                   + (f'<text x="{b.x + 3:.2f}" y="{b.y + b.h / 2:.1f}" fill="{b.text_color}">'
                      f"{escape(b.label)}</text>" if b.label else "")
                   + "</g>")
    y = pic.height - FOOTER_PX + 12
    x = float(MARGIN)
    for color, text in pic.legend:
        out.append(f'<rect x="{x:.1f}" y="{y}" width="14" height="14" fill="{color}" '
                   'stroke="#999999" stroke-width="0.5"/>'
                   f'<text class="h" x="{x + 19:.1f}" y="{y + 7}" font-size="{SUB_PX}">'
                   f"{escape(text)}</text>")
        x += 19 + len(text) * SUB_PX * 0.56 + 16
    if pic.note:
        out.append(f'<text class="h" x="{pic.width - MARGIN}" y="{y + 7}" '
                   f'font-size="{SUB_PX - 1}" fill="#555555" text-anchor="end">'
                   f"{escape(pic.note)}</text>")
    out.append("</svg>")
    return "\n".join(out) + "\n"


def flame_files(layout: FlameLayout, subject: str = "", captured_at: float | None = None,
                base_captured_at: float | None = None) -> tuple[bytes, str]:
    """The PNG and the SVG of one flame graph (what the drawing process runs)."""
    return (flame_png(layout, subject, captured_at, base_captured_at),
            flame_svg(layout, subject, captured_at, base_captured_at))


async def draw_flame(layout: FlameLayout, subject: str = "", captured_at: float | None = None,
                     base_captured_at: float | None = None) -> tuple[bytes, str]:
    """``flame_files`` in the worker process pool (bot.workpool), off the event loop.

    Only the layout (a few thousand rectangles) crosses to the worker, never a profile;
    matplotlib's pure-Python drawing then never holds the bot's GIL. It takes one of
    the bounded heavy-work slots, like a profile decode.
    """
    from bot.workpool import heavy_slot, run_cpu

    async with heavy_slot():
        return await run_cpu(flame_files, layout, subject, captured_at, base_captured_at)
