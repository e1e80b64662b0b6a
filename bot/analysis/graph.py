"""pprof's call graph at function granularity, computed on whole columns.

This mirrors google/pprof's internal/graph ``newGraph`` for ``-top``:
- a node is a function name (inlined frames — several lines in one location —
  are separate nodes; a location without lines is a node for its binary);
- flat goes to the innermost frame of each sample; cum counts a node once per
  sample even when it recurses;
- focus/ignore/hide follow pprof's ``FilterSamplesByName`` (a location matches
  when any of its lines' function name or file name, or its binary, matches).

The expensive part, turning samples of locations into samples of nodes and
finding repeated nodes within a sample, is done once per filter set and cached
on the profile; each sample type then costs a couple of ``bincount`` calls.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import re2

from bot.errors import UsageError
from bot.pprof.model import Profile
from bot.pprof.wire import ranges

_EXACT_FLOAT = float(1 << 52)


@dataclass(frozen=True, slots=True)
class Filters:
    """pprof's -focus, -ignore and -hide regular expressions (None: off)."""

    focus: str | None = None
    ignore: str | None = None
    hide: str | None = None


# User regexes are RE2, pprof's own dialect (Go's regexp): matching is linear in the
# text, so no pattern can backtrack for ever. Still, a pattern is matched against
# every function, file and binary name of a profile; the budget turns a pathological
# (huge) input into a clear answer instead of a long wait.
MAX_PATTERN_CHARS = 1000
MATCH_BUDGET_S = 5.0
_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # the user gets the error; nothing on stderr
_RE2_OPTIONS.max_mem = 8 << 20  # RE2's default program budget, stated


class Regex:
    """A compiled user regex (RE2) that remembers the text the user typed."""

    __slots__ = ("_rx", "option", "pattern")

    def __init__(self, pattern: str, option: str, rx: object) -> None:
        self.pattern = pattern
        self.option = option
        self._rx = rx

    def search(self, text: str) -> bool:
        """Does the pattern match anywhere in ``text`` (Go's MatchString)?"""
        return self._rx.search(text) is not None  # type: ignore[attr-defined]

    def match_all(self, texts: Sequence[str], budget_s: float = MATCH_BUDGET_S) -> np.ndarray:
        """One bool per text; a UsageError when matching outlives ``budget_s``.

        RE2 releases the GIL while it matches, and this loop yields it between
        names, so a caller running it in a worker thread keeps the event loop live.
        """
        out = np.zeros(len(texts), dtype=bool)
        search = self._rx.search  # type: ignore[attr-defined]
        deadline = time.monotonic() + budget_s
        for i, text in enumerate(texts):
            if search(text) is not None:
                out[i] = True
            if i & 1023 == 1023 and time.monotonic() > deadline:
                raise UsageError(
                    f"Matching `{_shown(self.pattern)}`"
                    f"{' (' + self.option + ')' if self.option else ''} took more than "
                    f"{budget_s:g} s on this profile's {len(texts)} names; heapbot stopped it.",
                    hint="Use a shorter, more specific pattern, e.g. `--focus 'json\\.'`.")
        return out


def _shown(pattern: str) -> str:
    text = pattern.replace("`", "'")
    return text if len(text) <= 80 else text[:79] + "…"


def compile_regex(pattern: str | None, option: str,
                  what: str = "regular expression") -> Regex | None:
    """Compile a user regex as RE2 (pprof's dialect), or explain why it is not one."""
    if not pattern:
        return None
    hint = "RE2 has no look-arounds or back-references; e.g. `--focus 'json\\.'`."
    if len(pattern) > MAX_PATTERN_CHARS:
        raise UsageError(f"The {what}{' for ' + option if option else ''} is {len(pattern)} "
                         f"characters long; heapbot takes "
                         f"at most {MAX_PATTERN_CHARS}.", hint=hint)
    try:
        rx = re2.compile(pattern, _RE2_OPTIONS)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else "RE2 cannot compile it"
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise UsageError(f"`{_shown(pattern)}` is not a valid {what}"
                         f"{' for ' + option if option else ''} (RE2 syntax, as in go tool "
                         f"pprof): {reason}.", hint=hint) from None
    return Regex(pattern, option, rx)


@dataclass(slots=True)
class NodeIndex:
    """Function-granularity nodes of a profile: one per distinct pprof NodeInfo."""

    names: list[str]  # printable names (what -top prints)
    line_nodes: np.ndarray  # int32, node of each line
    empty_location_nodes: np.ndarray  # int32, node of each location without lines (-1 else)
    name_rank: np.ndarray  # int64, rank of each node's printable name (then its key)
    keys: list[tuple[str, str, int]]  # (function name, file or binary, line) of each node


def node_index(profile: Profile, lines: bool = False) -> NodeIndex:
    """Assign nodes once per profile (cached): per function, or per source line."""
    profile = pruned(profile)
    cache_key = ("nodes", lines)
    cached = profile.cache.get(cache_key)
    if cached is not None:
        return cached
    keys: dict[tuple[str, str, int], int] = {}
    names: list[str] = []

    def node(key: tuple[str, str, int]) -> int:
        found = keys.get(key)
        if found is None:
            found = keys[key] = len(names)
            name, objfile, lineno = key
            if name and lines:
                names.append(f"{name} {objfile}:{lineno}" if lineno else
                             (f"{name} {objfile}" if objfile else name))
            elif name:
                names.append(name)
            elif objfile:
                names.append("[" + objfile.rsplit("/", 1)[-1] + "]")
            else:
                names.append("<unknown>")
        return found

    map_files = [m.filename for m in profile.mappings]
    loc_map = profile.location_mappings
    offsets = profile.location_line_offsets
    nlines = np.diff(offsets)
    # Named functions: one node per name whatever the location.
    if lines:
        fnames, ffiles = profile.function_names, profile.function_filenames
        line_nodes = np.array(
            [node((fnames[f], ffiles[f], ln)) if fnames[f] else -1
             for f, ln in zip(profile.line_functions.tolist(), profile.line_numbers.tolist(),
                              strict=True)], dtype=np.int32)
    else:
        fn_nodes = np.array([node((name, "", 0)) if name else -1
                             for name in profile.function_names], dtype=np.int32)
        line_nodes = fn_nodes[profile.line_functions] if profile.line_functions.size else \
            np.zeros(0, dtype=np.int32)
    # Nameless functions take their binary's name and their start line.
    nameless = np.flatnonzero(line_nodes < 0)
    if nameless.size:
        line_loc = np.repeat(np.arange(nlines.size), nlines)
        for li in nameless.tolist():
            loc = int(line_loc[li])
            mi = int(loc_map[loc])
            fn = int(profile.line_functions[li])
            line_nodes[li] = node(("", map_files[mi] if mi >= 0 else "",
                                   int(profile.function_start_lines[fn])))
    empty_location_nodes = np.full(nlines.size, -1, dtype=np.int32)
    for loc in np.flatnonzero(nlines == 0).tolist():
        mi = int(loc_map[loc])
        empty_location_nodes[loc] = node(("", map_files[mi] if mi >= 0 else "", 0))
    key_text = [""] * len(names)
    for key, i in keys.items():
        key_text[i] = repr(key)
    order = sorted(range(len(names)), key=lambda i: (names[i], key_text[i]))
    rank = np.empty(len(names), dtype=np.int64)
    rank[order] = np.arange(len(names))
    key_list: list[tuple[str, str, int]] = [("", "", 0)] * len(names)
    for key, i in keys.items():
        key_list[i] = key
    result = NodeIndex(names, line_nodes, empty_location_nodes, rank, key_list)
    profile.cache[cache_key] = result
    return result


_RESERVED = ("(anonymous namespace)", "operator()")
_BRACKET = re.compile("|".join(re.escape(n) for n in (*_RESERVED, "(")))


def _simplify(name: str) -> str:
    """pprof's simplifyFunc: drop a leading '.' and an argument list."""
    name = name.removeprefix(".")
    for m in _BRACKET.finditer(name):
        if m.group(0) not in _RESERVED:
            return name[:m.start()]
    return name


def pruned(profile: Profile) -> Profile:
    """The profile after its own drop_frames/keep_frames (pprof's RemoveUninteresting).

    Go's runtime never sets them, so this is usually the profile itself; when set,
    frames from the first matching one toward the leaf are removed, like pprof.
    """
    if not profile.drop_frames:
        return profile
    cached = profile.cache.get("pruned")
    if cached is not None:
        return cached
    try:
        drop = compile_regex("^(" + profile.drop_frames + ")$", "drop_frames")
        keep = compile_regex("^(" + profile.keep_frames + ")$", "keep_frames") \
            if profile.keep_frames else None
    except UsageError:
        return profile  # pprof would refuse the profile; heapbot shows it unpruned
    assert drop is not None
    simple = [_simplify(n) for n in profile.function_names]
    prune = drop.match_all(simple) & np.array([bool(n) for n in profile.function_names], dtype=bool)
    if keep is not None:
        prune &= ~keep.match_all(simple)
    prune_fn = prune.tolist()
    l_off = profile.location_line_offsets.tolist()
    lf = profile.line_functions.tolist()
    prune_loc = np.zeros(profile.num_locations, dtype=bool)
    beneath = np.zeros(profile.num_locations, dtype=bool)
    keep_line = np.ones(len(lf), dtype=bool)
    for loc in range(profile.num_locations):
        first, last = l_off[loc], l_off[loc + 1]
        for i in range(last - 1, first - 1, -1):  # from the outermost line inward
            if prune_fn[lf[i]]:
                beneath[loc] = True
                if i == last - 1:
                    prune_loc[loc] = True
                else:
                    keep_line[first:i + 1] = False
                break
    s_off = profile.sample_offsets.tolist()
    locs = profile.sample_locations
    stacks = []
    for smp in range(profile.num_samples):
        stack = locs[s_off[smp]:s_off[smp + 1]]
        found_user = False
        for i in range(stack.size - 1, -1, -1):  # from the root toward the leaf
            loc = int(stack[i])
            if not prune_loc[loc] and not beneath[loc]:
                found_user = True
                continue
            if not found_user:
                continue
            stack = stack[i + 1:] if prune_loc[loc] else stack[i:]
            break
        stacks.append(stack)
    new_counts = np.array([int(keep_line[l_off[j]:l_off[j + 1]].sum())
                           for j in range(profile.num_locations)], dtype=np.int64)
    counts = np.array([st.size for st in stacks], dtype=np.int64)
    result = dataclasses.replace(
        profile,
        location_line_offsets=np.concatenate(([0], np.cumsum(new_counts))),
        line_functions=profile.line_functions[keep_line],
        line_numbers=profile.line_numbers[keep_line],
        line_columns=profile.line_columns[keep_line],
        sample_offsets=np.concatenate(([0], np.cumsum(counts))),
        sample_locations=(np.concatenate(stacks).astype(np.int32) if stacks
                          else profile.sample_locations[:0]),
        drop_frames="", keep_frames="", cache={})
    profile.cache["pruned"] = result
    return result


@dataclass(slots=True)
class LocationStacks:
    """Kept samples as location stacks plus each location's node list (CSR).

    Enough to compute leaves and per-sample node sets without expanding every
    frame into a node: deep recursive stacks never need the long node array.
    """

    frame_locs: np.ndarray  # locations of kept samples, leaf first
    loc_offsets: np.ndarray  # int64, per kept sample
    per_loc: np.ndarray  # int32, nodes of each location (0: hidden)
    loc_node_off: np.ndarray  # int64, CSR offsets into loc_nodes
    loc_nodes: np.ndarray  # int32, nodes of each location, innermost first
    loc_inline: np.ndarray  # bool, that node is inlined into the next one


class Frames:
    """Samples as sequences of nodes (leaf first), after filters.

    ``samples`` are the kept sample indexes; frames of kept sample k are
    ``nodes[offsets[k]:offsets[k+1]]``; ``inline[i]`` tells that frame i was
    inlined into frame i+1 (same location). A node repeated within one sample
    (recursion) counts once in cum: see ``presence``. ``nodes``, ``inline`` and
    ``offsets`` are expanded from the location stacks only when asked for (peek,
    flame graphs, more than 64 nodes): top on a small graph never builds them.
    """

    __slots__ = ("_expanded", "_presence", "_stacks", "inlined_nodes", "leaf", "num_nodes",
                 "samples")

    def __init__(self, samples: np.ndarray, stacks: LocationStacks, leaf: np.ndarray,
                 num_nodes: int, inlined_nodes: np.ndarray) -> None:
        self.samples = samples
        self.leaf = leaf  # leaf node per kept sample, -1 for an empty stack
        self.num_nodes = num_nodes
        self.inlined_nodes = inlined_nodes  # bool per node: is it ever an inlined call?
        self._stacks = stacks
        self._expanded: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._presence: tuple | None = None

    def _expand(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self._expanded is None:
            st = self._stacks
            self._expanded = _expand(st.frame_locs, st.loc_offsets, st.per_loc,
                                     st.loc_node_off, st.loc_nodes, st.loc_inline)
        return self._expanded

    @property
    def location_stacks(self) -> LocationStacks:
        """The kept samples as location stacks, what ``nodes`` is expanded from (flame
        graphs walk them from the root without expanding every frame)."""
        return self._stacks

    @property
    def nodes(self) -> np.ndarray:
        """Node of every frame of every kept sample."""
        return self._expand()[0]

    @property
    def inline(self) -> np.ndarray:
        """Per frame: inlined into the next frame of its sample."""
        return self._expand()[1]

    @property
    def offsets(self) -> np.ndarray:
        """Frames of kept sample k are ``nodes[offsets[k]:offsets[k+1]]``."""
        return self._expand()[2]

    def presence(self) -> tuple:
        """How to count each node once per sample (computed once, shared by sample types).

        ("bits", masks): with at most 64 nodes, one bit per node per sample, ORed
        from per-location bits (no per-frame node array);
        ("dups", samples, nodes): otherwise, the extra occurrences to subtract.
        """
        if self._presence is None:
            if self.num_nodes <= 64:
                self._presence = ("bits", _location_bits(self._stacks))
            else:
                self._presence = ("dups", *_duplicates(self.nodes, self.offsets,
                                                       np.diff(self.offsets)))
        return self._presence


def _location_matches(profile: Profile,
                      rx: Regex) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per location: does any line's function name/file, or its binary, match?"""
    fn_match = rx.match_all(profile.function_names) | rx.match_all(profile.function_filenames)
    line_match = fn_match[profile.line_functions] if fn_match.size else \
        np.zeros(profile.line_functions.size, dtype=bool)
    offsets = profile.location_line_offsets
    csum = np.concatenate(([0], np.cumsum(line_match, dtype=np.int64)))
    loc_match = (csum[offsets[1:]] - csum[offsets[:-1]]) > 0
    map_match = np.append(rx.match_all([m.filename for m in profile.mappings]), False)
    return loc_match | map_match[profile.location_mappings], line_match, map_match


def _segment_any(flags: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    csum = np.concatenate(([0], np.cumsum(flags, dtype=np.int64)))
    return (csum[offsets[1:]] - csum[offsets[:-1]]) > 0


def frames(profile: Profile, filters: Filters = Filters(), lines: bool = False) -> Frames:
    """Node stacks of every kept sample (cached per filter set and granularity)."""
    profile = pruned(profile)
    key = ("frames", filters, lines)
    cached = profile.cache.get(key)
    if cached is not None:
        return cached
    nodes_ix = node_index(profile, lines)
    focus = compile_regex(filters.focus, "--focus")
    ignore = compile_regex(filters.ignore, "--ignore")
    hide = compile_regex(filters.hide, "--hide")

    sample_locs = profile.sample_locations
    s_off = profile.sample_offsets
    keep = np.ones(profile.num_samples, dtype=bool)
    if focus is not None or ignore is not None or hide is not None:
        # pprof keeps a sample when a location is focused and none is ignored; with
        # any filter on, a sample without locations is dropped too.
        ignored = np.zeros(profile.num_locations, dtype=bool)
        if ignore is not None:
            ignored = _location_matches(profile, ignore)[0]
        focused = ~ignored if focus is None else _location_matches(profile, focus)[0] & ~ignored
        keep = (_segment_any(focused[sample_locs], s_off)
                & ~_segment_any(ignored[sample_locs], s_off))

    # Lines of each location as nodes; hide drops lines (and then empty locations).
    l_off = profile.location_line_offsets
    line_keep = np.ones(profile.line_functions.size, dtype=bool)
    loc_hidden = np.zeros(profile.num_locations, dtype=bool)
    if hide is not None:
        loc_match, line_match, map_match = _location_matches(profile, hide)
        by_map = map_match[profile.location_mappings]
        nlines0 = np.diff(l_off)
        line_keep = ~line_match & ~np.repeat(by_map, nlines0)
        kept_lines = _segment_count(line_keep, l_off)
        loc_hidden = loc_match & (kept_lines == 0)
    # Per location: its node list (innermost first), with a placeholder for no lines.
    nlines = np.diff(l_off)
    line_nodes = nodes_ix.line_nodes
    if hide is not None:
        nk = _segment_count(line_keep, l_off)
        eff_count = np.where(nlines == 0, 1, nk)
        eff_count[loc_hidden] = 0
        kept_line_idx = np.flatnonzero(line_keep)
        kept_loc = np.repeat(np.arange(nlines.size), nk)
    else:
        eff_count = np.where(nlines == 0, 1, nlines)
        kept_line_idx = np.arange(line_nodes.size)
        kept_loc = np.repeat(np.arange(nlines.size), nlines)
    # Build a per-location node table (CSR) honoring placeholders.
    loc_node_off = np.zeros(nlines.size + 1, dtype=np.int64)
    np.cumsum(eff_count, out=loc_node_off[1:])
    loc_nodes = np.empty(int(loc_node_off[-1]), dtype=np.int32)
    loc_inline = np.zeros(loc_nodes.size, dtype=bool)
    # positions for kept lines: location start + rank of the line among kept lines of its loc
    if kept_line_idx.size:
        first_kept = np.concatenate(([0], np.cumsum(np.bincount(kept_loc, minlength=nlines.size))))
        rank_in_loc = np.arange(kept_line_idx.size) - first_kept[kept_loc]
        pos = loc_node_off[kept_loc] + rank_in_loc
        loc_nodes[pos] = line_nodes[kept_line_idx]
        # Every line but the last (outermost) of a location is inlined into the next.
        per_loc = np.diff(first_kept)
        loc_inline[pos] = rank_in_loc < (per_loc[kept_loc] - 1)
    placeholder = np.flatnonzero((nlines == 0) & (eff_count > 0))
    loc_nodes[loc_node_off[placeholder]] = nodes_ix.empty_location_nodes[placeholder]

    if keep.all():
        kept = np.arange(profile.num_samples)
        frame_locs, loc_offsets = sample_locs, s_off
    else:
        kept = np.flatnonzero(keep)
        cnt = np.diff(s_off)[kept]
        frame_locs = sample_locs[ranges(s_off[kept], cnt)]
        loc_offsets = np.concatenate(([0], np.cumsum(cnt)))
    if hide is not None:  # drop hidden locations, then samples left without frames
        visible = ~loc_hidden[frame_locs]
        per_sample = _segment_count(visible, loc_offsets)
        frame_locs = frame_locs[visible]
        nonempty = per_sample > 0
        kept, per_sample = kept[nonempty], per_sample[nonempty]
        loc_offsets = np.concatenate(([0], np.cumsum(per_sample)))
    # Nodes per frame are expanded lazily (Frames.nodes); leaves need only the first
    # node of each sample's first location.
    loc_offsets = np.asarray(loc_offsets, dtype=np.int64)
    stacks = LocationStacks(frame_locs, loc_offsets, eff_count.astype(np.int32), loc_node_off,
                            loc_nodes, loc_inline)
    leaf = np.full(kept.size, -1, dtype=np.int32)
    has = np.diff(loc_offsets) > 0
    if has.any():
        first_loc = frame_locs[loc_offsets[:-1][has]]
        leaf[has] = loc_nodes[loc_node_off[first_loc]]
    inlined_nodes = np.zeros(len(nodes_ix.names), dtype=bool)
    inlined_nodes[loc_nodes[loc_inline]] = True
    result = Frames(kept, stacks, leaf, len(nodes_ix.names), inlined_nodes)
    # Keep the unfiltered stacks and the few latest filter sets: a long-lived profile
    # asked with many different --focus values must not grow without bound.
    filtered = [k for k in profile.cache if k[0] == "frames" and k[1] != Filters()]
    for old in filtered[:-3]:
        del profile.cache[old]
    profile.cache[key] = result
    return result


def _expand(frame_locs: np.ndarray, loc_offsets: np.ndarray, n_per_loc: np.ndarray,
            loc_node_off: np.ndarray, loc_nodes: np.ndarray,
            loc_inline: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Node stacks from location stacks, in blocks of samples to bound temporaries."""
    nsamples = loc_offsets.size - 1
    step = 1 << 16
    blocks = [(lo, min(lo + step, nsamples)) for lo in range(0, nsamples, step)]
    total = sum(int(n_per_loc[frame_locs[int(loc_offsets[lo]):int(loc_offsets[hi])]]
                    .sum(dtype=np.int64)) for lo, hi in blocks)
    small = loc_nodes.size == 0 or int(loc_nodes.max(initial=0)) < (1 << 15)
    nodes = np.empty(total, dtype=np.int16 if small else np.int32)
    inline = np.zeros(total, dtype=bool)
    offsets = np.zeros(nsamples + 1, dtype=np.int64)
    any_inline = bool(loc_inline.any())
    simple = frame_locs.size == 0 or (int(n_per_loc.min(initial=1)) == 1
                                      and int(n_per_loc.max(initial=1)) == 1)
    if frame_locs.size == 0:  # e.g. --hide matched every frame
        offsets[:] = loc_offsets
        return nodes, inline, offsets
    if simple:
        first_node = loc_nodes[loc_node_off[:-1]].astype(nodes.dtype)
        nodes[:] = first_node[frame_locs]
        offsets[:] = loc_offsets
        return nodes, inline, offsets
    filled = 0
    for lo, hi in blocks:
        a, b = int(loc_offsets[lo]), int(loc_offsets[hi])
        fl = frame_locs[a:b]
        npf = n_per_loc[fl]
        pos = ranges(loc_node_off[fl], npf)
        n = pos.size
        nodes[filled:filled + n] = loc_nodes[pos]
        if any_inline:
            inline[filled:filled + n] = loc_inline[pos]
        csum = np.concatenate(([0], np.cumsum(npf, dtype=np.int64)))
        offsets[lo + 1:hi + 1] = filled + csum[loc_offsets[lo + 1:hi + 1] - a]
        filled += n
    return nodes, inline, offsets


def _segment_count(flags: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    csum = np.concatenate(([0], np.cumsum(flags, dtype=np.int64)))
    return csum[offsets[1:]] - csum[offsets[:-1]]


def _duplicates(nodes: np.ndarray, offsets: np.ndarray,
                counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Extra occurrences of a node inside one stack (sample index, node).

    Stacks of equal depth are sorted row-wise as one 2-D array, so the work is
    vectorized per depth instead of per sample.
    """
    out_s: list[np.ndarray] = []
    out_n: list[np.ndarray] = []
    depth_order = np.argsort(counts, kind="stable")
    sorted_counts = counts[depth_order]
    bounds = np.flatnonzero(np.diff(sorted_counts)) + 1
    for group in np.split(depth_order, bounds):
        depth = int(counts[group[0]]) if group.size else 0
        if depth < 2:
            continue
        rows = nodes[ranges(offsets[group], np.full(group.size, depth))].reshape(group.size, depth)
        rows = np.sort(rows, axis=1)
        dup = rows[:, 1:] == rows[:, :-1]
        if dup.any():
            r, c = np.nonzero(dup)
            out_s.append(group[r])
            out_n.append(rows[:, 1:][r, c])
    if not out_s:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty.astype(np.int32)
    return np.concatenate(out_s), np.concatenate(out_n)


def _location_bits(st: LocationStacks) -> np.ndarray:
    """Per kept sample, the 64-bit set of its nodes, ORed from per-location sets."""
    table = np.left_shift(np.uint64(1), np.arange(64, dtype=np.uint64))
    nloc = st.per_loc.size
    loc_bits = np.zeros(nloc, dtype=np.uint64)
    if st.loc_nodes.size:
        owner = np.repeat(np.arange(nloc), np.diff(st.loc_node_off))
        np.bitwise_or.at(loc_bits, owner, table[st.loc_nodes])
    masks = np.zeros(st.loc_offsets.size - 1, dtype=np.uint64)
    counts = np.diff(st.loc_offsets)
    has = np.flatnonzero(counts > 0)
    step = 1 << 13  # samples per chunk: per-frame temporaries of a few MB even 40 deep
    for lo in range(0, has.size, step):
        rows = has[lo:lo + step]
        first, last = int(st.loc_offsets[rows[0]]), int(st.loc_offsets[rows[-1] + 1])
        bits = loc_bits[st.frame_locs[first:last]]
        masks[rows] = np.bitwise_or.reduceat(bits, st.loc_offsets[rows] - first)
    return masks


def weighted_sum(index: np.ndarray, weights: np.ndarray, size: int) -> np.ndarray:
    """Exact integer ``bincount(index, weights)``."""
    if index.size == 0:
        return np.zeros(size, dtype=np.int64)
    if float(np.abs(weights).sum(dtype=np.float64)) < _EXACT_FLOAT:
        return np.rint(np.bincount(index, weights=weights, minlength=size)).astype(np.int64)
    out = np.zeros(size, dtype=np.int64)
    np.add.at(out, index, weights.astype(np.int64))
    return out


def flat_only(fr: Frames, sample_values: np.ndarray) -> np.ndarray:
    """Flat of every node (per sample, not per frame: what flat_cum costs without cum)."""
    return _flat(fr, sample_values[fr.samples])


def _flat(fr: Frames, w: np.ndarray) -> np.ndarray:
    """Flat of every node from ``w``, the value of each kept sample."""
    has_leaf = fr.leaf >= 0
    return weighted_sum(fr.leaf[has_leaf], w[has_leaf], fr.num_nodes)


def flat_cum(fr: Frames, sample_values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flat and cum of every node for one column of sample values (all samples)."""
    w = sample_values[fr.samples]
    flat = _flat(fr, w)
    presence = fr.presence()
    if presence[0] == "bits":
        masks = presence[1]
        cum = np.zeros(fr.num_nodes, dtype=np.int64)
        one = np.uint64(1)
        for node in range(fr.num_nodes):
            cum[node] = int(w[(masks >> np.uint64(node)) & one != 0].sum())
        return flat, cum
    per_frame = np.repeat(w, np.diff(fr.offsets))
    cum = weighted_sum(fr.nodes, per_frame, fr.num_nodes)
    _, dup_samples, dup_nodes = presence
    if dup_samples.size:
        cum -= weighted_sum(dup_nodes, w[dup_samples], fr.num_nodes)
    return flat, cum


def sort_nodes(candidates: np.ndarray, flat: np.ndarray, cum: np.ndarray, name_rank: np.ndarray,
               by_cum: bool) -> np.ndarray:
    """pprof's FlatNameOrder / CumNameOrder: |value| desc, name asc, other |value| desc."""
    f = np.abs(flat[candidates])
    c = np.abs(cum[candidates])
    r = name_rank[candidates]
    order = np.lexsort((-f, r, -c)) if by_cum else np.lexsort((-c, r, -f))
    return candidates[order]


def kept_nodes(num_nodes: int, shown: np.ndarray, present: int) -> np.ndarray | None:
    """pprof's KeptNodes after -nodecount: the shown nodes when some were cut (its
    SelectTopNodes then rebuilds the graph from them), else None (the whole graph)."""
    if shown.size >= present:
        return None
    kept = np.zeros(num_nodes, dtype=bool)
    kept[shown] = True
    return kept


def incoming_edges(fr: Frames, sample_values: np.ndarray, selected: np.ndarray,
                   kept: np.ndarray | None = None,
                   every_edge: bool = False) -> dict[int, dict[int, bool]]:
    """For each selected node: its callers and whether that call edge is inlined.

    An edge is inline only when every sample passing through it went through an
    inlined frame (pprof's AddToEdge). Samples with a zero value add no edge.
    Worked out on location stacks: a call inside one location (inlined lines) is
    inline, a call from one location to the next never is; so deep stacks are
    never expanded into one node per frame.

    ``kept`` (bool per node) is the graph pprof rebuilds after -nodecount (its
    newGraph with KeptNodes): other nodes are skipped, a node's caller is the
    nearest kept frame above it (none: no edge), and the edge is inline when the
    callee is not its location's outermost line, whatever it lands on.

    A node never inlined in this profile is left out (no edge of it is inline), unless
    ``every_edge``: a diff joins the edges of two profiles, where one may inline it.
    """
    want = np.zeros(fr.num_nodes, dtype=bool)
    want[selected] = True
    if not every_edge:
        want &= fr.inlined_nodes  # a node never inlined anywhere has no inline edge
    if not want.any():
        return {}
    st = fr._stacks
    counts = np.diff(st.loc_offsets)
    flag = np.repeat(sample_values[fr.samples] != 0, counts)  # frame of a nonzero sample
    if not flag.any():
        return {}
    nloc = st.per_loc.size
    used = np.bincount(st.frame_locs[flag], minlength=nloc) > 0
    owner = np.repeat(np.arange(nloc), st.per_loc)
    keep_line = (np.ones(st.loc_nodes.size, dtype=bool) if kept is None
                 else kept[st.loc_nodes])
    lines = np.flatnonzero(keep_line)  # the kept lines, location by location
    callee_parts, caller_parts, inline_parts = [], [], []
    frame_parts, line_parts = [], []  # where each edge occurs: frame (-1: per location), line
    # inside a location: a kept line calls from the next kept line of its location
    same = owner[lines[:-1]] == owner[lines[1:]]
    inner = lines[:-1][same]
    outer_of = lines[1:][same]
    pick = used[owner[inner]] & want[st.loc_nodes[inner]]
    callee_parts.append(st.loc_nodes[inner[pick]])
    caller_parts.append(st.loc_nodes[outer_of[pick]])
    inline_parts.append(np.ones(int(pick.sum()), dtype=bool))
    frame_parts.append(np.full(int(pick.sum()), -1, dtype=np.int64))
    line_parts.append(inner[pick].astype(np.int64))
    # from a location's outermost kept line to the innermost kept line of the next
    # location up the stack that has one
    has = np.zeros(nloc, dtype=bool)
    last_line = np.full(nloc, -1, dtype=np.int64)
    first_line = np.full(nloc, -1, dtype=np.int64)
    if lines.size:
        at = owner[lines]
        has[at] = True
        np.maximum.at(last_line, at, lines)
        first_line[has] = last_line[has]
        np.minimum.at(first_line, at, lines)
    wanted_last = np.zeros(nloc, dtype=bool)
    wanted_last[has] = want[st.loc_nodes[last_line[has]]]
    if wanted_last.any() and st.frame_locs.size > 1:
        idx = np.flatnonzero(wanted_last[st.frame_locs] & flag)
        if has.all():
            up = idx + 1
        else:  # the next frame above whose location keeps a line (pprof skips the rest)
            bearing = np.flatnonzero(has[st.frame_locs])
            pos = np.searchsorted(bearing, idx, side="right")
            up = np.where(pos < bearing.size, bearing[np.minimum(pos, bearing.size - 1)], -1)
        sample_end = st.loc_offsets[np.searchsorted(st.loc_offsets, idx, side="right")]
        ok = (up >= 0) & (up < sample_end)
        idx, up = idx[ok], up[ok]
        ok = has[st.frame_locs[up]]
        idx, up = idx[ok], up[ok]
        callee_lines = last_line[st.frame_locs[idx]]
        callee_parts.append(st.loc_nodes[callee_lines])
        caller_parts.append(st.loc_nodes[first_line[st.frame_locs[up]]])
        inline_parts.append(st.loc_inline[callee_lines])
        frame_parts.append(idx.astype(np.int64))
        line_parts.append(callee_lines)
    callee = np.concatenate(callee_parts).astype(np.int64)
    caller = np.concatenate(caller_parts).astype(np.int64)
    inline = np.concatenate(inline_parts)
    keep = callee != caller
    callee, caller, inline = callee[keep], caller[keep], inline[keep]
    out: dict[int, dict[int, bool]] = {}
    if callee.size == 0:
        return out
    key = callee * fr.num_nodes + caller
    uniq, inv = np.unique(key, return_inverse=True)
    all_inline = np.ones(uniq.size, dtype=bool)
    np.logical_and.at(all_inline, inv, inline)
    any_inline = np.zeros(uniq.size, dtype=bool)
    np.logical_or.at(any_inline, inv, inline)
    mixed = all_inline != any_inline
    if mixed.any():  # only there can the occurrence that counts change the answer
        frame_at = np.concatenate(frame_parts)[keep]
        line_at = np.concatenate(line_parts)[keep]
        all_inline[mixed] = _rootmost_inline(st, flag, owner, uniq[mixed], key, inline,
                                             frame_at, line_at)
    for k, il in zip(uniq.tolist(), all_inline.tolist(), strict=True):
        out.setdefault(k // fr.num_nodes, {})[k % fr.num_nodes] = il
    return out


def _rootmost_inline(st: LocationStacks, flag: np.ndarray, owner: np.ndarray,
                     keys: np.ndarray, key: np.ndarray, inline: np.ndarray,
                     frame_at: np.ndarray, line_at: np.ndarray) -> np.ndarray:
    """Inline flag of each edge in ``keys`` as pprof sets it: pprof adds an edge once per
    sample, where it meets it first walking from the root (then skips the pair), so in a
    recursive stack only that occurrence says whether the call is inlined; the edge is
    inline when it is so in every sample. ``frame_at`` -1: an edge inside a location,
    found in each frame of that location."""
    sel = np.flatnonzero(np.isin(key, keys))
    per_frame, per_loc = sel[frame_at[sel] >= 0], sel[frame_at[sel] < 0]
    frames, lines_, keys_, inl = ([frame_at[per_frame]], [line_at[per_frame]],
                                  [key[per_frame]], [inline[per_frame]])
    if per_loc.size:  # one occurrence per frame of the edge's location
        locs = owner[line_at[per_loc]]
        order = np.argsort(locs, kind="stable")
        per_loc, locs = per_loc[order], locs[order]
        count = np.bincount(locs, minlength=st.per_loc.size)
        start = np.cumsum(count) - count
        where = np.flatnonzero(flag & (count[st.frame_locs] > 0))
        c = count[st.frame_locs[where]]
        step = np.arange(int(c.sum())) - np.repeat(np.cumsum(c) - c, c)
        entry = per_loc[np.repeat(start[st.frame_locs[where]], c) + step]
        frames.append(np.repeat(where, c))
        lines_.append(line_at[entry])
        keys_.append(key[entry])
        inl.append(inline[entry])
    j, ln, k, il = (np.concatenate(x) for x in (frames, lines_, keys_, inl))
    sample = np.searchsorted(st.loc_offsets, j, side="right") - 1
    order = np.lexsort((ln, j, k, sample))  # by sample, edge, then rootward position
    s_, k_ = sample[order], k[order]
    last = np.ones(order.size, dtype=bool)
    last[:-1] = (s_[1:] != s_[:-1]) | (k_[1:] != k_[:-1])
    chosen = order[last]
    result = np.ones(keys.size, dtype=bool)
    np.logical_and.at(result, np.searchsorted(keys, k[chosen]), il[chosen])
    return result


_Caller = TypeVar("_Caller")  # a caller's key: a node index (top) or a name key (diff)


def inline_label(callers: Mapping[_Caller, bool] | None) -> str:
    """pprof's "(inline)" / "(partial-inline)" marker of a top row."""
    if not callers:
        return ""
    flags = set(callers.values())
    if flags == {True}:
        return "inline"
    return "partial-inline" if True in flags else ""
