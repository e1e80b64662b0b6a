"""Flame graph layout as data: the rectangles of an icicle graph, no drawing.

A flame graph is the call tree of a profile (every distinct path from the root
toward the allocation site, with the summed value of the samples on that path)
drawn as nested rectangles: a frame's width is its cum on that path, its
children sit under it, left to right by width. The layout here is computed on
the same node stacks as ``top`` (``bot.analysis.graph.frames``, so
``--focus/--ignore/--hide/--type`` and inlined frames act exactly as they do on
the table and in ``go tool pprof``), with numpy over whole levels of the tree,
not per frame in Python, so a 300,000-stack profile lays out in well under a
second.

Frames narrower than ``min_fraction`` of the whole width are folded into one
"…" frame per parent that says how much it holds; nothing below a folded or
too-deep frame is laid out, which bounds both time and the number of
rectangles whatever the profile.

A diff layout (``flame_diff``) builds one tree over the union of both profiles'
stacks (functions matched by name, file and line, as pprof's -diff_base does).
Each frame knows its value in both; its width is the newer value, or, with
``width="max"`` (the default), the larger of the two for every distinct stack,
so paths that vanished still show. Its colour goes red for growth and blue for
shrinkage, the intensity proportional to the change in flat.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from bot.analysis import graph
from bot.analysis.diff import check_comparable, merged_total
from bot.analysis.top import TopOptions, filter_labels, report_total
from bot.errors import UsageError
from bot.pprof.model import Profile, sample_type_index

ROOT = "root"  # the top frame: the whole (filtered) profile, like pprof's flame view
FOLDED = "…"  # frames too narrow to see, folded together under one parent
MIN_FRACTION = 1.5 / 1380  # narrower than 1.5 px on the default PNG (1380 px of frames): folded
MAX_DEPTH = 80  # rows below the root; deeper frames are cut (the share is reported)

# pprof's graph.ShortenFunctionName and report.packageName (internal/graph/graph.go,
# internal/report/package.go); Go's \w is ASCII-only, hence re.ASCII.
_JAVA = re.compile(r"^(?:[a-z]\w*\.)*([A-Z][\w$]*\.(?:<init>|[a-z][\w$]*(?:\$\d+)?))(?:\(|$)",
                   re.ASCII)
_GO = re.compile(r"^(?:[\w\-.]+/)+([^.]+\..+)", re.ASCII)
_GO_VERSION = re.compile(r"^(.*?)/v(?:[2-9]|[1-9][0-9]+)([./].*)$", re.ASCII)
_CPP = re.compile(r"^(?:[_a-zA-Z]\w*::)+(_*[A-Z]\w*::~?[_a-zA-Z]\w*(?:<.*>)?)", re.ASCII)
_CPP_ANON = re.compile(r"^\(anonymous namespace\)::", re.ASCII)
_PACKAGE = re.compile(r"^((.*/)?[\w\d_]+)(\.|::)([^/]*)$", re.ASCII)


def shorten_function_name(name: str) -> str:
    """pprof's ShortenFunctionName: ``github.com/a/b/v2/c.(*T).M`` → ``c.(*T).M``."""
    name = _CPP_ANON.sub("", name)
    name = _GO_VERSION.sub(r"\1\2", name)
    for rx in (_GO, _JAVA, _CPP):
        m = rx.search(name)
        if m:
            return "".join(g or "" for g in m.groups())
    return name


def package_name(name: str) -> str:
    """pprof's packageName: ``net/http.(*conn).serve`` → ``net/http`` ("" if none)."""
    m = _PACKAGE.match(name)
    return m.group(1) if m else ""


# Soft, distinct fills (black text stays readable on every one); packages get
# them in order of their share of the graph, so the biggest packages differ most.
PACKAGE_PALETTE = (
    "#f5a66d", "#8ecae6", "#b5e48c", "#f7d06b", "#d3a4f4", "#f49ac2", "#9ee6d6",
    "#e9c46a", "#a9c5f5", "#f4b183", "#c7e59b", "#e7b8e8", "#f6e39c", "#9fd8ef",
)
NEUTRAL = "#e8e8e8"  # root, folded frames, frames without a package; unchanged in a diff
GROWTH = (214, 39, 40)  # red: grew since the base
SHRINK = (31, 99, 205)  # blue: shrank


@dataclass(slots=True)
class FlameRect:
    """One rectangle as a person sees it.

    ``x`` and ``width`` are in the layout's width units (``FlameLayout.width``
    is the whole graph). ``cum``/``flat`` are this path's value in the (newer)
    profile: every sample through this frame on this path, and those ending
    here. ``fn_flat``/``fn_cum`` are the function's totals over all paths, the
    numbers of ``go tool pprof -top`` (for a diff: newer minus base). For a
    folded frame, ``folded`` counts the frames it stands for.
    """

    function: str
    short: str
    depth: int
    x: int
    width: int
    cum: int
    flat: int
    color: str
    color_key: str  # package name; for a diff the signed change that set the colour
    fn_flat: int
    fn_cum: int
    folded: int = 0
    base_cum: int = 0
    base_flat: int = 0
    parent: int = -1  # index of the parent rectangle in ``FlameLayout.rects`` (-1: the root)

    @property
    def delta_flat(self) -> int:
        return self.flat - self.base_flat

    @property
    def delta_cum(self) -> int:
        return self.cum - self.base_cum


@dataclass(slots=True)
class FlameLayout:
    """Every rectangle of a flame graph, plus what its title and notes need."""

    sample_type: str
    unit: str
    total: int  # the report total (as in top; the newer profile's for a diff)
    width: int  # the root frame's width, in value units: the x axis runs 0..width
    rects: list[FlameRect]
    filters: list[str] = field(default_factory=list)
    base_total: int | None = None  # set for a diff
    diff_width: str = ""  # "max" or "new" for a diff
    time_nanos: int = 0
    base_time_nanos: int = 0
    max_depth: int = MAX_DEPTH
    cut_value: int = 0  # value of samples deeper than max_depth (not laid out below it)
    folded_value: int = 0  # total width of the folded "…" frames
    folded_frames: int = 0  # how many frames they stand for
    packages: list[tuple[str, str]] = field(default_factory=list)  # (package, colour), big first
    max_abs_delta: int = 0  # diff: the |change in flat| that gets the full colour

    @property
    def is_diff(self) -> bool:
        return self.base_total is not None

    @property
    def depth(self) -> int:
        """Rows, the root's included."""
        return 1 + max((r.depth for r in self.rects), default=0)

    @property
    def percent_total(self) -> int:
        """The denominator of percentages: the total, or for a diff the base's (like pprof)."""
        if self.base_total is not None:
            return self.base_total if self.base_total > 0 else self.base_total + self.total
        return self.total


@dataclass(slots=True)
class _Tree:
    """The call tree, level by level (level 0 = children of the root).

    Per level: the parent's position in the previous level (-1: the root), the
    function node, and value columns (cum and flat on this path, one pair per
    profile). ``expanded[i]`` says the node's children were computed.
    """

    parent: list[np.ndarray] = field(default_factory=list)
    node: list[np.ndarray] = field(default_factory=list)
    cum: list[np.ndarray] = field(default_factory=list)  # shape (n, k)
    flat: list[np.ndarray] = field(default_factory=list)
    expanded: list[np.ndarray] = field(default_factory=list)
    cut: np.ndarray | None = None  # per column, value of samples cut at max_depth


class _Walker:
    """Root-first steps through location stacks, one node at a time, never expanding them.

    A kept sample's frames are its locations (leaf first, ``frame_locs``), each
    standing for one or more nodes (inlined calls, innermost first). A walker
    state is (position of the location, index of the node in it); stepping goes
    outward-in: the node before in the same location, else the next location
    toward the leaf. Locations with no node (hidden) are stepped over.
    """

    def __init__(self, stacks: graph.LocationStacks) -> None:
        self.frame_locs = stacks.frame_locs
        self.per_loc = stacks.per_loc.astype(np.int64)
        self.loc_node_off = stacks.loc_node_off
        self.loc_nodes = stacks.loc_nodes
        self.starts = stacks.loc_offsets[:-1]
        self.hidden = bool((self.per_loc == 0).any())

    def _visible(self, pos: np.ndarray, start: np.ndarray) -> np.ndarray:
        """Move each position toward the leaf past locations without nodes."""
        if not self.hidden:
            return pos
        while True:
            inside = pos >= start
            empty = np.zeros(pos.size, dtype=bool)
            empty[inside] = self.per_loc[self.frame_locs[pos[inside]]] == 0
            if not empty.any():
                return pos
            pos = pos - empty

    def first(self, samples: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, ...]:
        """States at the root of ``samples``: (sample start, position, location, node
        index, ok)."""
        start = self.starts[samples]
        pos = self._visible(ends[samples] - 1, start)
        ok = pos >= start
        loc = np.zeros(pos.size, dtype=np.int64)
        loc[ok] = self.frame_locs[pos[ok]]
        return start, pos, loc, self.per_loc[loc] - 1, ok

    def node(self, loc: np.ndarray, index: np.ndarray) -> np.ndarray:
        return self.loc_nodes[self.loc_node_off[loc] + index].astype(np.int64)

    def step(self, start: np.ndarray, pos: np.ndarray, loc: np.ndarray,
             index: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The next state of each walk (position, location, node index), and whether
        there is one."""
        index = index - 1
        more = np.ones(pos.size, dtype=bool)
        moving = np.flatnonzero(index < 0)
        if moving.size:
            pos = pos.copy()
            loc = loc.copy()
            pos[moving] = self._visible(pos[moving] - 1, start[moving])
            ok = pos[moving] >= start[moving]
            more[moving[~ok]] = False
            moved = moving[ok]
            loc[moved] = self.frame_locs[pos[moved]]
            index[moved] = self.per_loc[loc[moved]] - 1
        return pos, loc, index, more


def _build_tree(walker: _Walker, ends: np.ndarray, weights: np.ndarray, num_nodes: int,
                min_value: float, max_depth: int) -> _Tree:
    """Group root-first node paths level by level; stop under nodes below ``min_value``.

    ``ends[k]`` is one past sample k's last (root-most) location; ``weights`` is
    (samples, k): k value columns (1, or 2 for a diff). A node is expanded only
    while |values| summed over the columns reaches ``min_value``, an upper bound
    of its width, so nothing wide enough to draw is ever missed. Only samples
    under wide enough nodes are followed deeper, so the work is bounded by the
    rectangles drawn, not by the profile's frames.
    """
    tree = _Tree()
    k = weights.shape[1]
    alive = np.flatnonzero(np.any(weights != 0, axis=1))
    start, pos, loc, index, ok = walker.first(alive, ends)
    alive, start, pos, loc, index = alive[ok], start[ok], pos[ok], loc[ok], index[ok]
    w = weights[alive]
    # bincount sums in float64: exact for every subset when the whole is below 2**52.
    exact = float(np.abs(weights).sum(dtype=np.float64)) < float(1 << 52)

    def sums(at: np.ndarray, values: np.ndarray, size: int) -> np.ndarray:
        if exact:
            return np.rint(np.bincount(at, weights=values, minlength=size)).astype(np.int64)
        return graph.weighted_sum(at, values, size)

    parent = np.full(alive.size, -1, dtype=np.int64)
    cut = np.zeros(k, dtype=np.int64)
    level = 0
    while pos.size:
        keys = (parent + 1) * num_nodes + walker.node(loc, index)
        uniq, inv = _group(keys, (int(parent.max(initial=-1)) + 2) * num_nodes)
        pos, loc, index, more = walker.step(start, pos, loc, index)
        last = ~more
        cum = np.stack([sums(inv, w[:, j], uniq.size) for j in range(k)], axis=1)
        flat = np.stack([sums(inv[last], w[last, j], uniq.size) for j in range(k)], axis=1)
        expand = np.abs(cum).sum(axis=1) >= min_value
        if level + 1 >= max_depth:
            cut += w[more & expand[inv]].sum(axis=0)
            expand[:] = False
        tree.parent.append(uniq // num_nodes - 1)
        tree.node.append(uniq % num_nodes)
        tree.cum.append(cum)
        tree.flat.append(flat)
        tree.expanded.append(expand)
        go_on = more & expand[inv]
        start, pos, loc, index = start[go_on], pos[go_on], loc[go_on], index[go_on]
        w = w[go_on]
        parent = inv[go_on]
        level += 1
    tree.cut = cut
    return tree


def _group(keys: np.ndarray, key_range: int) -> tuple[np.ndarray, np.ndarray]:
    """Distinct keys (sorted) and each key's position among them, like np.unique.

    When the keys span a range not much larger than their count, a counting pass
    (bincount and a lookup table) replaces the sort: linear time per level.
    """
    if key_range <= max(4 * keys.size, 1 << 16):
        present = np.flatnonzero(np.bincount(keys, minlength=key_range))
        lookup = np.empty(key_range, dtype=np.int64)
        lookup[present] = np.arange(present.size)
        return present, lookup[keys]
    uniq, inv = np.unique(keys, return_inverse=True)
    return uniq, inv.ravel()


def _widths(tree: _Tree, mode: Literal["cum", "max"]) -> list[np.ndarray]:
    """Width of every tree node: |cum|, or (diff) max of the two flats plus the children's.

    For ``max`` a node whose children were not computed (too narrow or too deep)
    counts max(|cum new|, |cum base|): it is not drawn anyway, and its parent
    stays exactly as wide as its own part plus its children.
    """
    if mode == "cum":
        return [np.abs(c[:, 0]) for c in tree.cum]
    widths: list[np.ndarray] = [np.zeros(0, dtype=np.int64)] * len(tree.cum)
    below = None
    for level in range(len(tree.cum) - 1, -1, -1):
        cum, flat, expanded = tree.cum[level], tree.flat[level], tree.expanded[level]
        own = np.abs(flat).max(axis=1)
        if below is not None:
            own = own + below
        w = np.where(expanded, own, np.abs(cum).max(axis=1))
        widths[level] = w
        if level:
            n_parent = tree.cum[level - 1].shape[0]
            below = graph.weighted_sum(tree.parent[level], w, n_parent)
    return widths


@dataclass(slots=True)
class _Names:
    names: list[str]  # printable name per node
    rank: np.ndarray  # order of names


def _diff_color(delta: int, scale: int) -> str:
    """Red for growth, blue for shrinkage; |delta|/scale of the way from neutral grey."""
    if not scale or not delta:
        return NEUTRAL
    t = min(1.0, abs(delta) / scale)
    target = GROWTH if delta > 0 else SHRINK
    base = (0xE8, 0xE8, 0xE8)
    rgb = (round(b + (c - b) * t) for b, c in zip(base, target, strict=True))
    return "#" + "".join(f"{v:02x}" for v in rgb)


def _layout(tree: _Tree, widths: list[np.ndarray], names: _Names, fn_flat: np.ndarray,
            fn_cum: np.ndarray, root_width: int, min_fraction: float,
            diff: bool) -> tuple[list[FlameRect], int, int, int]:
    """Place visible frames left to right under their parents; fold the narrow ones.

    Returns the rectangles (without colours resolved for packages), the folded
    width, the folded frame count and the largest |change in flat| drawn.
    """
    k = tree.cum[0].shape[1] if tree.cum else 1
    min_w = min_fraction * root_width
    rects: list[dict] = []
    # The root: every kept sample.
    root_cum = [int(sum(int(c[:, j].sum()) for c in tree.cum[:1])) for j in range(k)]
    rects.append({"function": ROOT, "depth": 0, "x": 0, "width": root_width,
                  "cum": root_cum[0], "flat": 0, "base_cum": root_cum[1] if k > 1 else 0,
                  "base_flat": 0, "folded": 0, "fn_flat": 0, "fn_cum": root_cum[0]
                  - (root_cum[1] if k > 1 else 0), "node": -1, "parent": -1})
    parent_x = np.zeros(1, dtype=np.int64)
    parent_rect = np.zeros(1, dtype=np.int64)  # rectangle index of each previous-level node
    parent_visible = np.ones(1, dtype=bool)
    folded_value = folded_frames = 0
    for level, (par, node, width) in enumerate(zip(tree.parent, tree.node, widths, strict=True)):
        pidx = par + 1 if level == 0 else par  # the root is the only parent of level 0
        vis_parent = parent_visible[pidx] & (width > 0)
        wide = vis_parent & (width >= min_w)
        narrow = vis_parent & ~wide
        order = np.lexsort((names.rank[node], -width, pidx))
        order = order[wide[order]]
        n = node.size
        x = np.zeros(n, dtype=np.int64)
        if order.size:
            w_sorted = width[order]
            p_sorted = pidx[order]
            csum = np.cumsum(w_sorted) - w_sorted
            starts = np.flatnonzero(np.r_[True, p_sorted[1:] != p_sorted[:-1]])
            group_first = np.repeat(csum[starts], np.diff(np.r_[starts, order.size]))
            x[order] = parent_x[p_sorted] + csum - group_first
        cum, flat = tree.cum[level], tree.flat[level]
        rect_of = np.full(n, -1, dtype=np.int64)
        for i in order.tolist():
            rect_of[i] = len(rects)
            rects.append({"parent": int(parent_rect[pidx[i]]), "function": names.names[node[i]],
                          "depth": level + 1, "x": int(x[i]),
                          "width": int(width[i]), "cum": int(cum[i, 0]), "flat": int(flat[i, 0]),
                          "base_cum": int(cum[i, 1]) if k > 1 else 0,
                          "base_flat": int(flat[i, 1]) if k > 1 else 0, "folded": 0,
                          "fn_flat": int(fn_flat[node[i]]), "fn_cum": int(fn_cum[node[i]]),
                          "node": int(node[i])})
        if narrow.any():
            n_parent = parent_x.size
            nar = np.flatnonzero(narrow)
            f_width = graph.weighted_sum(pidx[nar], width[nar], n_parent)
            f_count = np.bincount(pidx[nar], minlength=n_parent)
            f_cum = [graph.weighted_sum(pidx[nar], cum[nar, j], n_parent) for j in range(k)]
            f_flat = [graph.weighted_sum(pidx[nar], flat[nar, j], n_parent) for j in range(k)]
            wide_sum = graph.weighted_sum(pidx[wide], width[wide], n_parent)
            for p in np.flatnonzero(f_count).tolist():
                rects.append({"parent": int(parent_rect[p]), "function": FOLDED,
                              "depth": level + 1,
                              "x": int(parent_x[p] + wide_sum[p]), "width": int(f_width[p]),
                              "cum": int(f_cum[0][p]), "flat": int(f_flat[0][p]),
                              "base_cum": int(f_cum[1][p]) if k > 1 else 0,
                              "base_flat": int(f_flat[1][p]) if k > 1 else 0,
                              "folded": int(f_count[p]), "fn_flat": 0, "fn_cum": 0, "node": -1})
                folded_value += int(f_width[p])
                folded_frames += int(f_count[p])
        parent_x = x
        parent_rect = rect_of
        parent_visible = wide
        if not wide.any():
            break
    max_delta = 0
    if diff:
        # A folded frame stands for whole subtrees: its colour is their change in cum.
        for r in rects[1:]:
            change = (r["cum"] - r["base_cum"]) if r["folded"] else (r["flat"] - r["base_flat"])
            max_delta = max(max_delta, abs(change))
    out = [_rect(r, diff, max_delta) for r in rects]
    return out, folded_value, folded_frames, max_delta


def _rect(r: dict, diff: bool, max_delta: int) -> FlameRect:
    name = r["function"]
    if diff:
        change = (r["cum"] - r["base_cum"]) if r["folded"] else (r["flat"] - r["base_flat"])
        color = NEUTRAL if r["depth"] == 0 else _diff_color(change, max_delta)
        key = f"{change:+d}"
    else:
        key = "" if name in (ROOT, FOLDED) else package_name(name)
        color = NEUTRAL
    short = name if name in (ROOT, FOLDED) else shorten_function_name(name)
    return FlameRect(function=name, short=short, depth=r["depth"], x=r["x"], width=r["width"],
                     cum=r["cum"], flat=r["flat"], color=color, color_key=key,
                     fn_flat=r["fn_flat"], fn_cum=r["fn_cum"], folded=r["folded"],
                     base_cum=r["base_cum"], base_flat=r["base_flat"], parent=r["parent"])


def _package_colors(rects: list[FlameRect]) -> tuple[list[FlameRect], list[tuple[str, str]]]:
    """Give each package a palette colour, the biggest (by self width) first."""
    share: dict[str, int] = {}
    for r in rects:
        if r.color_key:
            share[r.color_key] = share.get(r.color_key, 0) + r.width
    ranked = sorted(share, key=lambda p: (-share[p], p))
    colors: dict[str, str] = {}
    for i, pkg in enumerate(ranked):
        if i < len(PACKAGE_PALETTE):
            colors[pkg] = PACKAGE_PALETTE[i]
        else:  # more packages than colours: a stable pick, told apart by tooltips
            colors[pkg] = PACKAGE_PALETTE[zlib.crc32(pkg.encode()) % len(PACKAGE_PALETTE)]
    for r in rects:
        if r.color_key:
            r.color = colors[r.color_key]
    return rects, [(p, colors[p]) for p in ranked]


def _check(min_fraction: float, max_depth: int) -> None:
    if not 0 <= min_fraction < 1:
        raise UsageError("The fold threshold must be a fraction between 0 and 1.")
    if max_depth < 1:
        raise UsageError("A flame graph needs at least one row below the root.")


def flame(profile: Profile, options: TopOptions | None = None, *,
          min_fraction: float = MIN_FRACTION, max_depth: int = MAX_DEPTH) -> FlameLayout:
    """The flame graph layout of ``profile`` (filters and sample type as in ``top``)."""
    options = options or TopOptions()
    options.check()
    _check(min_fraction, max_depth)
    index = sample_type_index(profile, options.sample_type)
    st = profile.sample_types[index]
    filters = options.filters()
    nodes_ix = graph.node_index(profile)
    fr = graph.frames(profile, filters)
    column = profile.values[:, index]
    fn_flat, fn_cum = graph.flat_cum(fr, column)
    values = column[fr.samples].astype(np.int64)
    kept_total = int(np.abs(values).sum())
    stacks = fr.location_stacks
    mixed = bool((values < 0).any())  # a diff written as one profile (pprof -proto -diff_base)
    # With mixed signs a frame's width is the |value| of the samples through it (a second
    # column), so parents still hold their children; otherwise that is just |cum|.
    weights = np.stack([values, np.abs(values)], axis=1) if mixed else values[:, None]
    tree = _build_tree(_Walker(stacks), stacks.loc_offsets[1:], weights, fr.num_nodes,
                       min_fraction * kept_total, max_depth)
    if mixed:
        widths = [c[:, 1].copy() for c in tree.cum]
        tree.cum = [c[:, :1] for c in tree.cum]
        tree.flat = [f[:, :1] for f in tree.flat]
        tree.cut = tree.cut[:1] if tree.cut is not None else None
    else:
        widths = _widths(tree, "cum")
    names = _Names(nodes_ix.names, nodes_ix.name_rank)
    rects, folded_value, folded_frames, _ = _layout(tree, widths, names, fn_flat, fn_cum,
                                                    kept_total, min_fraction, diff=False)
    rects, packages = _package_colors(rects)
    return FlameLayout(sample_type=st.type, unit=st.unit, total=report_total(profile, index),
                       width=kept_total, rects=rects, filters=filter_labels(options),
                       time_nanos=profile.time_nanos, max_depth=max_depth,
                       cut_value=int(tree.cut[0]) if tree.cut is not None else 0,
                       folded_value=folded_value, folded_frames=folded_frames,
                       packages=packages)


def flame_diff(base: Profile, new: Profile, options: TopOptions | None = None, *,
               width: Literal["max", "new"] = "max", min_fraction: float = MIN_FRACTION,
               max_depth: int = MAX_DEPTH) -> FlameLayout:
    """The diff flame graph of (new − base): one tree over both profiles' stacks.

    ``width="max"``: every distinct stack counts the larger of its two values, so
    what vanished keeps its place; ``width="new"``: widths are the newer profile's.
    """
    options = options or TopOptions()
    options.check()
    _check(min_fraction, max_depth)
    if width not in ("max", "new"):
        raise UsageError(f"Unknown diff width `{width}`.", hint="Use `max` or `new`.")
    check_comparable(base, new)
    index = sample_type_index(new, options.sample_type)
    st = new.sample_types[index]
    filters = options.filters()
    # One node space: functions are matched by (name, file or binary, line), as in diff.
    keys: dict[tuple[str, str, int], int] = {}
    printable: list[str] = []
    maps = []
    fronts = []
    fn_flat_parts = []
    for profile in (new, base):
        ix = graph.node_index(profile)
        mapping = np.empty(len(ix.keys), dtype=np.int64)
        for i, key in enumerate(ix.keys):
            found = keys.get(key)
            if found is None:
                found = keys[key] = len(printable)
                printable.append(ix.names[i])
            mapping[i] = found
        maps.append(mapping)
        fr = graph.frames(profile, filters)
        fronts.append(fr)
        fn_flat_parts.append(graph.flat_cum(fr, profile.values[:, index]))
    n_nodes = len(printable)
    fn_flat = np.zeros(n_nodes, dtype=np.int64)
    fn_cum = np.zeros(n_nodes, dtype=np.int64)
    for sign, mapping, (f, c) in zip((1, -1), maps, fn_flat_parts, strict=True):
        np.add.at(fn_flat, mapping, sign * f)
        np.add.at(fn_cum, mapping, sign * c)
    fr_new, fr_base = fronts
    # Both profiles' location stacks as one: base locations numbered after the newer's,
    # every location's nodes in the shared node space.
    sn, sb = fr_new.location_stacks, fr_base.location_stacks
    stacks = graph.LocationStacks(
        frame_locs=np.concatenate([sn.frame_locs.astype(np.int64),
                                   sb.frame_locs.astype(np.int64) + sn.per_loc.size]),
        loc_offsets=np.concatenate([sn.loc_offsets, sb.loc_offsets[1:] + sn.loc_offsets[-1]]),
        per_loc=np.concatenate([sn.per_loc, sb.per_loc]),
        loc_node_off=np.concatenate([sn.loc_node_off[:-1],
                                     sb.loc_node_off + sn.loc_node_off[-1]]),
        loc_nodes=np.concatenate([maps[0][sn.loc_nodes.astype(np.int64)],
                                  maps[1][sb.loc_nodes.astype(np.int64)]]),
        loc_inline=np.concatenate([sn.loc_inline, sb.loc_inline]))
    w_new = new.values[fr_new.samples, index].astype(np.int64)
    w_base = base.values[fr_base.samples, index].astype(np.int64)
    weights = np.zeros((w_new.size + w_base.size, 2), dtype=np.int64)
    weights[:w_new.size, 0] = w_new
    weights[w_new.size:, 1] = w_base
    lower = max(int(np.abs(w_new).sum()), int(np.abs(w_base).sum()))
    tree = _build_tree(_Walker(stacks), stacks.loc_offsets[1:], weights, n_nodes,
                       min_fraction * lower, max_depth)
    widths = _widths(tree, "max") if width == "max" else [np.abs(c[:, 0]) for c in tree.cum]
    root_width = int(widths[0].sum()) if widths else 0
    order = sorted(range(n_nodes), key=lambda i: printable[i])
    rank = np.empty(n_nodes, dtype=np.int64)
    rank[order] = np.arange(n_nodes)
    rects, folded_value, folded_frames, max_delta = _layout(
        tree, widths, _Names(printable, rank), fn_flat, fn_cum, root_width, min_fraction,
        diff=True)
    return FlameLayout(sample_type=st.type, unit=st.unit, total=merged_total(new, index),
                       width=root_width, rects=rects, filters=filter_labels(options),
                       base_total=merged_total(base, index), diff_width=width,
                       time_nanos=new.time_nanos, base_time_nanos=base.time_nanos,
                       max_depth=max_depth,
                       cut_value=int(tree.cut[0]) if tree.cut is not None else 0,
                       folded_value=folded_value, folded_frames=folded_frames,
                       max_abs_delta=max_delta)
