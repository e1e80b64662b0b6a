"""Function names as `go tool pprof` shows them.

pprof's symbolizer "demangles" every function whose name equals its system name (Go writes
both the same), with its default mode: no parameters, no template parameters. A Go name is
not mangled, so only pprof's heuristic for "already demangled C++" applies: a name holding
``[``, ``]``, ``<``, ``>`` or ``::`` (and no ``]).``) loses every balanced ``(...)`` and then
``<...>`` group. Go's generic instantiations are such names: the runtime writes
``hkdf.Expand[go.shape.interface { Sum([]uint8) []uint8; Write([]uint8) (int, error) }]``
and pprof prints ``hkdf.Expand[go.shape.interface { Sum []uint8; Write  }]``; tables,
filters and peek use the printed name, so heapbot decodes to it (internal/symbolizer,
demangleSingleFunction and removeMatching in google/pprof).
"""

from __future__ import annotations

import numpy as np

_TOKENS = ("[", "]", "<", ">", "::")  # what makes pprof look twice at a name
_MANGLED = ("_Z", "__Z", "_R")  # C++/Rust symbols: pprof demangles them; heapbot keeps them


def _remove_matching(name: str, start: str, end: str) -> str:
    """Drop every outermost balanced start...end group; unbalanced → the name unchanged."""
    nesting = first = 0
    current = 0
    while True:
        hits = [i for i in (name.find(start, current), name.find(end, current)) if i >= 0]
        if not hits:
            return name
        current = min(hits)
        if name[current] == start:
            nesting += 1
            if nesting == 1:
                first = current
        else:
            nesting -= 1
            if nesting < 0:
                return name
            if nesting == 0:
                name = name[:first] + name[current + 1:]
                current = first - 1
        current += 1


def _looks_demangled(name: str) -> bool:
    """pprof's looksLikeDemangledCPlusPlus (Java's ``.<init>`` and Go's ``(*T[...]).M`` not)."""
    if ".<" in name or "])." in name:
        return False
    return "[" in name or "]" in name or "<" in name or ">" in name or "::" in name


def pprof_name(name: str, system_name: str) -> str:
    """The name pprof prints for a function with this name and system name."""
    if name and system_name != name:
        return name  # already demangled: pprof keeps it
    if system_name.startswith(_MANGLED) or not _looks_demangled(system_name):
        return system_name
    return _remove_matching(_remove_matching(system_name, "(", ")"), "<", ">")


def _find_all(text: str, token: str) -> list[int]:
    """Every position of ``token`` in ``text`` (str.find: C speed, no regex)."""
    out: list[int] = []
    pos = text.find(token)
    while pos >= 0:
        out.append(pos)
        pos = text.find(token, pos + len(token))
    return out


def pprof_names(names: list[str], system_names: list[str]) -> list[str]:
    """:func:`pprof_name` over a profile's function table (most names pass untouched).

    Runs once per decoded profile (40 times in a fleet capture): str.find over the joined
    names finds the few with brackets; only those (and empty names) are looked at.
    """
    if len(names) != len(system_names):
        raise ValueError("names and system names differ in length")
    joined = "\n".join(system_names)
    hits = [pos for token in _TOKENS for pos in _find_all(joined, token)]
    todo: set[int] = set()
    if hits:
        lengths = np.fromiter(map(len, system_names), dtype=np.int64, count=len(system_names))
        starts = np.concatenate(([0], np.cumsum(lengths + 1)[:-1]))
        todo.update(np.searchsorted(starts, hits, side="right").tolist())
        todo = {i - 1 for i in todo}
    if not all(names):
        todo.update(i for i, n in enumerate(names) if not n)
    if not todo:
        return names
    out = list(names)
    for i in todo:
        n, sys_name = names[i], system_names[i]
        if not n or n == sys_name:
            out[i] = pprof_name(n, sys_name)
    return out
