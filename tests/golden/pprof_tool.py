"""Run `go tool pprof` and parse its -top output, so tests compare heapbot with pprof itself.

The golden cases (which fixture, which pprof flags, which heapbot options) are
listed here once and used both by ``regenerate.py`` and by the tests.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from bot.gotool import find_go, go_env

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
GOLDEN = Path(__file__).resolve().parent
EXACT_FLAGS = ["-nodefraction=0", "-edgefraction=0"]
HEAP_TYPES = ["alloc_objects", "alloc_space", "inuse_objects", "inuse_space"]


def go_or_none() -> str | None:
    try:
        return find_go()
    except FileNotFoundError:
        return None


def run_pprof(args: list[str], cwd: Path | None = None, timeout: float = 300) -> str:
    """stdout of `go tool pprof ARGS` (the local toolchain, no downloads)."""
    proc = subprocess.run([find_go(), "tool", "pprof", *args], capture_output=True, text=True,
                          env=go_env(), cwd=cwd, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"go tool pprof {' '.join(args)} failed: {proc.stderr[-2000:]}")
    return proc.stdout


@dataclass
class PprofTop:
    """What `pprof -top -unit=B` printed: total, shown total and rows (name, flat, cum)."""

    total: int
    shown: int
    rows: list[tuple[str, int, int]] = field(default_factory=list)
    node_total: int | None = None


_SHOWING = re.compile(
    r"Showing nodes accounting for (-?[\d.]+)(?:B|ns)?, .* of (-?[\d.]+)(?:B|ns)? total")
_TOPN = re.compile(r"Showing top (\d+) nodes out of (\d+)")
_ROW = re.compile(
    r"^\s*(-?\d+)(?:B|ns)?\s+\S+%\s+\S+%\s+(-?\d+)(?:B|ns)?\s+\S+%\s+(.+?)\s*$")


def parse_top(text: str) -> PprofTop:
    """Parse -top output printed with -unit=B (every value an integer)."""
    m = _SHOWING.search(text)
    if not m:
        raise ValueError(f"no 'Showing nodes' line in pprof output:\n{text[:500]}")
    result = PprofTop(total=int(m.group(2)), shown=int(m.group(1)))
    n = _TOPN.search(text)
    if n:
        result.node_total = int(n.group(2))
    lines = text.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.strip().startswith("flat"))
    for line in lines[start + 1:]:
        r = _ROW.match(line)
        if not r:
            raise ValueError(f"unparsed pprof row: {line!r}")
        name = re.sub(r" \((partial-)?inline\)$", "", r.group(3))
        result.rows.append((name, int(r.group(1)), int(r.group(2))))
    return result


@dataclass(frozen=True)
class Case:
    """One golden comparison: a fixture, pprof flags, and the matching heapbot options."""

    fixture: str
    sample_type: str | None = None
    cum: bool = False
    focus: str | None = None
    ignore: str | None = None
    hide: str | None = None
    base: str | None = None  # diff: the base fixture
    nodes: int | None = None

    @property
    def name(self) -> str:
        parts = [self.fixture.removesuffix(".pb.gz")]
        if self.base:
            parts.append("diff_base=" + self.base.removesuffix(".pb.gz"))
        if self.sample_type:
            parts.append("sample_index=" + self.sample_type)
        if self.cum:
            parts.append("cum")
        for key in ("focus", "ignore", "hide"):
            value = getattr(self, key)
            if value:
                parts.append(f"{key}=" + re.sub(r"[^A-Za-z0-9_]+", "_", value).strip("_"))
        if self.nodes:
            parts.append(f"nodecount={self.nodes}")
        return ".".join(parts)

    def pprof_args(self, fixtures: Path = FIXTURES, exact: bool = True) -> list[str]:
        # -unit=B (or ns for CPU time) prints every value as an exact integer.
        unit = ["-unit=ns" if self.sample_type == "cpu" else "-unit=B"] if exact else []
        args = ["-top", *unit, *EXACT_FLAGS]
        if self.sample_type:
            args.append(f"-sample_index={self.sample_type}")
        if self.cum:
            args.append("-cum")
        for key in ("focus", "ignore", "hide"):
            value = getattr(self, key)
            if value:
                args.append(f"-{key}={value}")
        if self.nodes:
            args.append(f"-nodecount={self.nodes}")
        if self.base:
            args.append(f"-diff_base={fixtures / self.base}")
        args.append(str(fixtures / self.fixture))
        return args

    def golden_path(self) -> Path:
        return GOLDEN / f"{self.name}.txt"


def _cases() -> list[Case]:
    cases: list[Case] = []
    for fixture in ("heap_1.pb.gz", "heap_2.pb.gz", "heap_other.pb.gz", "allocs.pb.gz"):
        for st in HEAP_TYPES:
            for cum in (False, True):
                cases.append(Case(fixture, st, cum))
    cases.append(Case("goroutine.pb.gz"))
    cases.append(Case("goroutine.pb.gz", cum=True))
    cases.append(Case("cpu.pb.gz", "cpu"))
    cases.append(Case("cpu.pb.gz", "samples", cum=True))
    cases.append(Case("heap_other.pb.gz"))  # the profile's default type
    cases.append(Case("heap_2.pb.gz", nodes=7))
    cases.append(Case("heap_2.pb.gz", "inuse_space", focus="leakmap"))
    cases.append(Case("heap_2.pb.gz", "alloc_space", cum=True, focus=r"main\.", ignore="fmt"))
    cases.append(Case("heap_2.pb.gz", "inuse_space", hide=r"runtime\.|fmt\."))
    cases.append(Case("heap_other.pb.gz", "alloc_objects", ignore="cache"))
    cases.append(Case("heap_other.pb.gz", "inuse_space", cum=True, hide="Tick", focus="main"))
    cases.append(Case("goroutine.pb.gz", focus="gopark", hide=r"^runtime\."))
    for st in HEAP_TYPES:
        cases.append(Case("heap_2.pb.gz", st, base="heap_1.pb.gz"))
    cases.append(Case("heap_2.pb.gz", "inuse_space", cum=True, base="heap_1.pb.gz"))
    cases.append(Case("heap_other.pb.gz", "alloc_space", base="heap_1.pb.gz"))
    cases.append(Case("heap_1.pb.gz", "inuse_objects", base="heap_2.pb.gz", focus="leakmap"))
    return cases


CASES = _cases()

# The held-out set: profiles of real Go programs nobody here wrote (the compiler, stdlib
# benchmarks; tests/fixtures/regenerate.py --real-go). Not tuned against: a mismatch is a bug.
REAL_GO = ["go_compile_types.pb.gz", "go_compile_types_256k.pb.gz", "go_json_decode.pb.gz",
           "go_json_encode.pb.gz", "go_regexp.pb.gz"]


def _real_go_cases() -> list[Case]:
    json_v2 = r"encoding/json/v2\.make"
    cases = [Case("go_json_encode.pb.gz", st, base="go_json_decode.pb.gz") for st in HEAP_TYPES]
    cases += [
        Case("go_json_decode.pb.gz", "alloc_space", cum=True, base="go_json_encode.pb.gz"),
        Case("go_compile_types.pb.gz", "inuse_space", base="go_compile_types_256k.pb.gz"),
        Case("go_compile_types.pb.gz", "alloc_objects", cum=True,
             base="go_compile_types_256k.pb.gz", focus=r"ssa\.regalloc"),
        Case("go_compile_types.pb.gz", "alloc_space", focus=r"noder\.\(\*reader\)\.(expr|stmt1)$"),
        Case("go_compile_types.pb.gz", "alloc_space", cum=True,
             ignore=r"^cmd/compile/internal/ssa\.",
             hide=r"^runtime\.|^cmd/compile/internal/types2\."),
        Case("go_compile_types.pb.gz", "inuse_objects", hide=r"^cmd/compile/internal/(ir|noder)\."),
        Case("go_compile_types.pb.gz", "alloc_space", cum=True, nodes=25),
        Case("go_compile_types_256k.pb.gz", "inuse_space", nodes=40),
        Case("go_json_decode.pb.gz", "alloc_space", focus=json_v2, ignore=r"zstd|io\.ReadAll"),
        Case("go_json_decode.pb.gz", "alloc_objects", cum=True, hide=r"^(reflect|runtime)\.",
             focus=r"json"),
        Case("go_regexp.pb.gz", "alloc_space", focus=r"regexp/syntax\.\(\*(parser|compiler)\)",
             hide=r"\.Benchmark"),
        Case("go_regexp.pb.gz", "alloc_objects", cum=True, nodes=12, ignore=r"Literal"),
    ]
    return cases


REAL_GO_CASES = _real_go_cases()
