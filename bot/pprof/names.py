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
    return any(c in name for c in "<>[]") or "::" in name


def pprof_name(name: str, system_name: str) -> str:
    """The name pprof prints for a function with this name and system name."""
    if name and system_name != name:
        return name  # already demangled: pprof keeps it
    if system_name.startswith(_MANGLED) or not _looks_demangled(system_name):
        return system_name
    return _remove_matching(_remove_matching(system_name, "(", ")"), "<", ">")


def pprof_names(names: list[str], system_names: list[str]) -> list[str]:
    """:func:`pprof_name` over a profile's function table (most names pass untouched)."""
    return [pprof_name(n, s) if not n or n == s else n
            for n, s in zip(names, system_names, strict=True)]
