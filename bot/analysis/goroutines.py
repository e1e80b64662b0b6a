"""Goroutine dumps → groups of goroutines that wait at the same place.

Go serves the goroutine profile in three shapes and heapbot reads them all:

- ``/debug/pprof/goroutine`` — a profile.proto (gzip or raw) whose samples
  are stacks with a count; the stacks include the runtime frames
  (``runtime.gopark``, ``runtime.chansend1`` ...), so the wait state is
  inferred from them;
- ``?debug=1`` — the legacy text: ``N @ 0x.. 0x..`` then ``#\\t0x.. func+0x.. file:line``;
  Go hides the leading runtime frames there, so the state is often unknown;
- ``?debug=2`` — one block per goroutine: ``goroutine 7 [chan send, 5 minutes]:``
  with the frames and ``created by`` (the state is Go's own word).

Every shape ends as a :class:`GoroutineReport`: the total and the stacks
grouped by a signature (function names, runtime prefix dropped, so the same
stack gets the same signature whatever the shape), sorted by count.
"""

from __future__ import annotations

import gzip
import re
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bot.analysis.summary import GoroutineGroupSummary
from bot.errors import ProfileError
from bot.logs import target_names

# Top-level packages of the Go standard library (first element of the import path).
_STDLIB_WORDS = (
    "archive bufio builtin bytes cmp compress container context crypto database debug embed "
    "encoding errors expvar flag fmt go hash html image index internal io iter log maps math "
    "mime net os path plugin reflect regexp runtime slices sort strconv strings structs sync "
    "syscall testing text time unicode unique unsafe weak vendor"
)
STDLIB_ROOTS = frozenset(_STDLIB_WORDS.split())

# States in which a goroutine cannot make progress on its own: growth of such
# a group is a goroutine leak (Uber's LeakProf looks at exactly these).
BLOCKED_STATES = frozenset({
    "chan send", "chan receive", "chan send (nil chan)", "chan receive (nil chan)",
    "select", "select (no cases)", "mutex", "sync.Mutex.Lock", "sync.RWMutex.Lock",
    "sync.RWMutex.RLock", "semacquire", "sync.WaitGroup.Wait", "sync.Cond.Wait",
})

_MAX_INPUT = 256 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Frame:
    """One stack frame: function, source file and line."""

    function: str
    file: str = ""
    line: int = 0

    @property
    def location(self) -> str:
        if not self.file:
            return ""
        return f"{self.file}:{self.line}" if self.line else self.file


@dataclass(slots=True)
class GoroutineGroup:
    """Goroutines with one stack signature, and where they wait."""

    count: int
    frames: list[Frame]  # innermost first
    state: str
    wait_frame: Frame | None
    creator: str = ""
    creator_location: str = ""
    wait_minutes: int | None = None  # the longest wait Go reported (debug=2 only)
    # goroutines Go's GC proved leaked ("[chan send (leaked)]", debug=2 only: Go marks
    # them when /debug/pprof/goroutineleak runs its leak-detecting GC)
    leaked: int = 0
    # goroutines per state: one stack can be parked in one goroutine and runnable in the
    # next (just woken); ``state`` is the most common of them
    states: dict[str, int] = field(default_factory=dict)

    def add_state(self, state: str, count: int) -> None:
        """Count ``count`` more goroutines in ``state``; ``state`` stays the most common."""
        self.states[state] = self.states.get(state, 0) + count
        self.state = max(self.states, key=self.states.__getitem__)

    @property
    def signature(self) -> str:
        return stack_signature(self.frames)

    @property
    def wait_function(self) -> str:
        return self.wait_frame.function if self.wait_frame else ""

    @property
    def wait_location(self) -> str:
        return self.wait_frame.location if self.wait_frame else ""

    @property
    def top_function(self) -> str:
        return self.frames[0].function if self.frames else ""

    @property
    def blocked(self) -> bool:
        return self.state in BLOCKED_STATES

    def states_or_state(self) -> dict[str, int]:
        """Goroutines per state (a group built without :meth:`add_state`: all in ``state``)."""
        return dict(self.states) or {self.state: self.count}

    def summary(self) -> GoroutineGroupSummary:
        return GoroutineGroupSummary(
            signature=self.signature, count=self.count, state=self.state,
            wait_function=self.wait_function, wait_location=self.wait_location,
            top_function=self.top_function, creator=self.creator,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "count": self.count, "state": self.state, "wait_function": self.wait_function,
            "wait_location": self.wait_location, "creator": self.creator,
            "signature": self.signature, "wait_minutes": self.wait_minutes,
            "leaked": self.leaked, "states": self.states_or_state(),
            "frames": [{"function": f.function, "location": f.location} for f in self.frames],
        }


@dataclass(slots=True)
class GoroutineReport:
    """All goroutines of one dump (or of several instances merged)."""

    total: int
    groups: list[GoroutineGroup] = field(default_factory=list)
    source: str = "proto"  # proto | debug=1 | debug=2

    def summaries(self) -> list[GoroutineGroupSummary]:
        return [g.summary() for g in self.groups]

    @property
    def leaked(self) -> int:
        """Goroutines Go marked leaked (debug=2 dumps taken after a goroutineleak GC)."""
        return sum(g.leaked for g in self.groups)

    def by_state(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for g in self.groups:
            for state, n in g.states_or_state().items():
                counts[state] = counts.get(state, 0) + n
        return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))

    def to_json(self) -> dict[str, Any]:
        return {"total": self.total, "source": self.source, "by_state": self.by_state(),
                "leaked": self.leaked, "groups": [g.to_json() for g in self.groups]}


def merge_reports(reports: Sequence[GoroutineReport]) -> GoroutineReport | None:
    """One report over several instances: groups with the same stack signature summed
    (the longest wait kept), largest first; None when there is no report."""
    if not reports:
        return None
    if len(reports) == 1:
        return reports[0]
    merged: dict[str, GoroutineGroup] = {}
    for report in reports:
        for group in report.groups:
            seen = merged.get(group.signature)
            if seen is None:
                merged[group.signature] = GoroutineGroup(
                    count=group.count, frames=list(group.frames), state=group.state,
                    wait_frame=group.wait_frame, creator=group.creator,
                    creator_location=group.creator_location, wait_minutes=group.wait_minutes,
                    leaked=group.leaked, states=dict(group.states_or_state()))
            else:
                seen.count += group.count
                seen.leaked += group.leaked
                for state, n in group.states_or_state().items():
                    seen.add_state(state, n)
                if group.wait_minutes is not None:
                    seen.wait_minutes = max(seen.wait_minutes or 0, group.wait_minutes)
    groups = sorted(merged.values(), key=lambda g: (-g.count, g.signature))
    return GoroutineReport(total=sum(r.total for r in reports), groups=groups,
                           source=reports[0].source)


# ---------------------------------------------------------------- package helpers

def package_path(function: str) -> str:
    """Import path of a Go function name: ``github.com/a/b.(*T).M`` → ``github.com/a/b``."""
    slash = function.rfind("/")
    dot = function.find(".", slash + 1)
    return function[:dot] if dot >= 0 else function


def is_runtime(function: str) -> bool:
    """Frames of the Go runtime itself (hidden by Go in ?debug=1 dumps)."""
    return function.startswith(("runtime.", "internal/runtime/")) or function == "runtime"


def is_stdlib(function: str) -> bool:
    """True for the standard library, false for ``main.``, module paths and unknown roots."""
    pkg = package_path(function)
    if pkg in ("main", "command-line-arguments") or not pkg:
        return False
    root = pkg.split("/", 1)[0]
    return "." not in root and root in STDLIB_ROOTS


def is_own_code(function: str) -> bool:
    """Code of the service or its dependencies: not runtime, not standard library."""
    return bool(function) and not is_stdlib(function) and not is_runtime(function)


def go_print_name(function: str) -> str:
    """A function name as Go's tracebacks and ?debug=1 print it: type arguments as ``[...]``.

    The proto names instantiations by their shape (``net/http_test.run[go.shape.*uint8]``,
    after pprof's demangling ``hmac.New[go.shape.interface { Size int; … }]``); ?debug=1
    and ?debug=2 write ``run[...]``.
    """
    if "[" not in function:
        return function
    out: list[str] = []
    depth = 0
    for ch in function:
        if ch == "[":
            if depth == 0:
                out.append("[...]")
            depth += 1
        elif ch == "]" and depth:
            depth -= 1
        elif depth == 0:
            out.append(ch)
    return "".join(out)


_TRACEBACK_SHOWS = frozenset({"runtime.gopanic", "runtime.runFinalizers", "runtime.runCleanups"})


def hidden_by_traceback(function: str) -> bool:
    """True for the frames a ?debug=2 dump leaves out anywhere in a stack (runtime's
    showfuncinfo): unexported ``runtime.`` functions (``runtime.main`` under main.main),
    and names without a dot; exported ones (``runtime.Gosched``) are shown."""
    if "." not in function:
        return True
    if not function.startswith("runtime.") or function in _TRACEBACK_SHOWS:
        return False
    name = function.removeprefix("runtime.")
    receiver, _, method = name.rpartition(".")
    receiver = receiver.removeprefix("(*").removesuffix(")")
    return not (method[:1].isupper() and (not receiver or receiver[:1].isupper()))


def stack_signature(frames: Sequence[Frame]) -> str:
    """Function names joined outermost→innermost: one stack, one signature in every shape.

    ?debug=1 hides the leading runtime frames, ?debug=2 every unexported runtime frame
    (runtime.main too) and the proto hides none; names are compared as Go prints them
    (type arguments as ``[...]``). So the leading runtime frames and the frames
    :func:`hidden_by_traceback` are dropped here.
    """
    names = [go_print_name(f.function) for f in frames if f.function != "runtime.goexit"]
    start = 0
    while start < len(names) - 1 and is_runtime(names[start]):
        start += 1
    kept = [n for n in names[start:] if not hidden_by_traceback(n)] or names[start:]
    return ";".join(reversed(kept))


# ---------------------------------------------------------------- state inference

_STATE_BY_FUNCTION: tuple[tuple[str, str], ...] = (
    ("runtime.chansend", "chan send"),
    ("runtime.chanrecv", "chan receive"),
    ("runtime.selectgo", "select"),
    ("runtime.block", "select (no cases)"),
    ("sync.runtime_SemacquireMutex", "mutex"),
    ("internal/sync.runtime_SemacquireMutex", "mutex"),
    ("sync.runtime_SemacquireRWMutex", "mutex"),
    ("sync.runtime_SemacquireRWMutexR", "mutex"),
    ("sync.runtime_SemacquireWaitGroup", "sync.WaitGroup.Wait"),
    ("sync.runtime_notifyListWait", "sync.Cond.Wait"),
    ("sync.runtime_Semacquire", "semacquire"),
    ("internal/poll.runtime_pollWait", "IO wait"),
    ("runtime.netpollblock", "IO wait"),
    ("time.Sleep", "sleep"),
    ("runtime.timeSleep", "sleep"),
    ("syscall.Syscall", "syscall"),
    ("syscall.Syscall6", "syscall"),
    ("syscall.RawSyscall", "syscall"),
    ("internal/runtime/syscall.Syscall6", "syscall"),
    ("runtime.notetsleepg", "syscall"),
)



# Checked after the table above finds nothing in the innermost frames: the runtime's own
# semaphore (a goroutine parked in GC assist waits in gcMarkDone's semacquire, which Go
# calls "semacquire"; sync's waits name themselves further out and are found first).
_STATE_FALLBACK: tuple[tuple[str, str], ...] = (
    ("runtime.semacquire1", "semacquire"),
    ("runtime.semacquire", "semacquire"),
)


def _match(name: str, table: tuple[tuple[str, str], ...]) -> str | None:
    for prefix, state in table:
        if name == prefix or (name.startswith(prefix) and not name[len(prefix):][:1].isalpha()):
            if state == "chan send" and "nil" in name:
                return "chan send (nil chan)"
            return state
    return None


def infer_state(frames: Sequence[Frame], runtime_shown: bool = False) -> str:
    """Wait state from the innermost frames (proto and ?debug=1 carry no state word).

    ``runtime_shown``: the stack keeps its runtime frames (the proto). A parked goroutine
    then always has them on top (runtime.gopark), so a stack with none was running or
    about to run: "runnable", as Go's ?debug=2 says; an empty one (runtime.goexit alone)
    is a goroutine not started yet, "runnable" too. ?debug=1 hides the runtime frames, so
    there the same stacks can only read "waiting" and "unknown".
    """
    if not frames:
        return "runnable" if runtime_shown else "unknown"
    for table in (_STATE_BY_FUNCTION, _STATE_FALLBACK):
        for frame in frames[:8]:
            state = _match(frame.function, table)
            if state:
                return state
    top = frames[0].function
    if top.startswith("runtime/pprof.") or top == "runtime.goroutineProfileWithLabels":
        return "running"
    if any(f.function.startswith("runtime/pprof.") for f in frames[:6]):
        return "running"
    if top in ("runtime.gopark", "runtime.goparkunlock"):
        return "waiting"
    if is_runtime(top) or runtime_shown:
        return "runnable"
    return "waiting"


_STATE_MARKS = (" (leaked)", " (scan)", " (durable)")


def _normalise_state(word: str) -> tuple[str, bool]:
    """Go's ?debug=2 state word without the wait time and its marks, and whether it says
    "(leaked)"; Go ≥ 1.24's lock words → "mutex" (what the proto's frames say)."""
    state = word.split(",")[0].strip()
    leaked = " (leaked)" in state
    for mark in _STATE_MARKS:
        state = state.replace(mark, "")
    if state in ("sync.Mutex.Lock", "sync.RWMutex.Lock", "sync.RWMutex.RLock"):
        return "mutex", leaked
    return state, leaked


_MACHINERY_PREFIXES = ("runtime.", "internal/", "sync.", "sync/atomic.", "time.Sleep",
                       "syscall.", "runtime/pprof.")


def wait_frame(frames: Sequence[Frame]) -> Frame | None:
    """Where the goroutine waits, in terms its authors recognise.

    The first frame of the service's own code (not runtime, not standard
    library); if the whole stack is standard library (an HTTP server's
    connection goroutine), the first frame that is not runtime/sync plumbing.
    """
    real = [f for f in frames if f.function and f.function != "runtime.goexit"]
    for f in real:
        if is_own_code(f.function):
            return f
    for f in real:
        if not f.function.startswith(_MACHINERY_PREFIXES):
            return f
    return real[0] if real else None


# ---------------------------------------------------------------- parsing

def parse_goroutines(data: bytes | bytearray | str) -> GoroutineReport:
    """Parse a goroutine dump: proto (gzip or raw), ``?debug=1`` or ``?debug=2`` text."""
    if isinstance(data, str):
        data = data.encode()
    if not data:
        raise ProfileError("The goroutine dump is empty.",
                           hint="Fetch /debug/pprof/goroutine (proto) or ?debug=1 / ?debug=2.")
    if data[:2] == b"\x1f\x8b":
        data = _gunzip(data)
    head = data.lstrip()[:64]
    if head.startswith((b"goroutine profile: total", b"goroutineleak profile: total")):
        return _parse_debug1(data.decode("utf-8", "replace"))
    if head.startswith(b"goroutine ") and re.match(rb"goroutine \d+ (gp=\S+ m=\S+ (mp=\S+ )?)?\[",
                                                   head):
        return _parse_debug2(data.decode("utf-8", "replace"))
    if head and all(32 <= b < 127 or b in b"\t\r\n" for b in head):
        kind = "an HTML page" if head.startswith(b"<") else "text"
        raise ProfileError(
            f"This is {kind}, not a goroutine profile or dump.",
            hint="Fetch /debug/pprof/goroutine (proto), ?debug=1 or ?debug=2 from the service.",
        )
    return _report_from_proto(data)


def _gunzip(data: bytes | bytearray) -> bytes:
    try:
        out = zlib.decompressobj(16 + zlib.MAX_WBITS)
        result = out.decompress(data, _MAX_INPUT)
        if out.unconsumed_tail:
            raise ProfileError("The goroutine profile inflates past 256 MiB; refusing it.")
        if not out.eof:
            raise ProfileError("The goroutine profile is truncated (gzip stream ends early).",
                               hint="Fetch it again; the transfer was probably cut off.")
        return result
    except (zlib.error, gzip.BadGzipFile) as exc:
        raise ProfileError(f"The goroutine profile is not valid gzip ({exc}).",
                           hint="Fetch /debug/pprof/goroutine again.") from exc


# count, frames (innermost first), Go's state word or None (infer it), creator, its
# file:line, the wait in minutes, and how many Go marked leaked
_Stack = tuple[int, list[Frame], str | None, str, str, int | None, int]


def _group(stacks: Iterable[_Stack],
           source: str) -> GoroutineReport:
    """Merge stacks with one signature; most goroutines first."""
    groups: dict[str, GoroutineGroup] = {}
    total = 0
    for count, frames, state, creator, creator_loc, minutes, leaked in stacks:
        total += count
        sig = stack_signature(frames)
        if state is None:
            state = infer_state(frames, runtime_shown=source == "proto")
        g = groups.get(sig)
        if g is None:
            groups[sig] = GoroutineGroup(count=count, frames=frames, state=state,
                                         wait_frame=wait_frame(frames), creator=creator,
                                         creator_location=creator_loc, wait_minutes=minutes,
                                         leaked=leaked, states={state: count})
            continue
        g.count += count
        g.leaked += leaked
        g.add_state(state, count)
        if minutes is not None:
            g.wait_minutes = max(g.wait_minutes or 0, minutes)
    ordered = sorted(groups.values(), key=lambda g: (-g.count, g.wait_function, g.signature))
    return GoroutineReport(total=total, groups=ordered, source=source)


_DEBUG1_FRAME = re.compile(r"^#\s+0x[0-9a-f]+\s+(\S+?)\+0x[0-9a-f]+\s+(.*?):(\d+)\s*$")
_DEBUG1_BARE = re.compile(r"^#\s+0x[0-9a-f]+\s*$")


def _parse_debug1(text: str) -> GoroutineReport:
    lines = text.splitlines()
    m = re.match(r"goroutine(?:leak)? profile: total (\d+)", lines[0].strip())
    declared = int(m.group(1)) if m else None
    stacks: list[_Stack] = []
    count: int | None = None
    frames: list[Frame] = []

    def flush() -> None:
        if count is not None:
            bottom = _bottom_function(frames)
            stacks.append((count, list(frames), None, bottom, "", None, 0))

    for raw in lines[1:]:
        line = raw.rstrip()
        head = re.match(r"^(\d+) @( 0x[0-9a-f]+)*\s*$", line)
        if head:
            flush()
            count, frames = int(head.group(1)), []
            continue
        fm = _DEBUG1_FRAME.match(line)
        if fm and count is not None:
            frames.append(Frame(fm.group(1), fm.group(2).strip(), int(fm.group(3))))
        elif _DEBUG1_BARE.match(line) and count is not None:
            frames.append(Frame("?"))
    flush()
    if not stacks and declared:
        raise ProfileError("The ?debug=1 goroutine dump has a total but no stacks.",
                           hint="The text was probably cut off; fetch it again.")
    report = _group(stacks, "debug=1")
    if declared is not None:
        report.total = declared
    return report


_DEBUG2_HEADER = re.compile(r"^goroutine (\d+)(?: gp=\S+ m=\S+(?: mp=\S+)?)? \[([^\]]*)\]:\s*$")
_DEBUG2_CALL = re.compile(r"^(\S.*?)(?:\([^()]*\))?\s*$")
_DEBUG2_FILE = re.compile(r"^\t(.*?):(\d+)(?: \+0x[0-9a-f]+)?\s*$")
_CREATED_BY = re.compile(r"^created by (\S+)(?: in goroutine \d+)?\s*$")


def _parse_debug2(text: str) -> GoroutineReport:
    stacks: list[_Stack] = []
    for block in re.split(r"\n\s*\n", text.strip()):
        lines = block.splitlines()
        if not lines:
            continue
        head = _DEBUG2_HEADER.match(lines[0])
        if not head:
            continue
        words = [w.strip() for w in head.group(2).split(",")]
        state, leaked = _normalise_state(words[0])
        minutes = None
        for w in words[1:]:
            mm = re.match(r"(\d+) minutes?", w)
            if mm:
                minutes = int(mm.group(1))
        frames: list[Frame] = []
        creator = creator_loc = ""
        i = 1
        while i < len(lines):
            line = lines[i]
            created = _CREATED_BY.match(line)
            if created:
                creator = created.group(1)
                if i + 1 < len(lines):
                    fm = _DEBUG2_FILE.match(lines[i + 1])
                    if fm:
                        creator_loc = f"{fm.group(1)}:{fm.group(2)}"
                break
            if line.startswith("...") or not line.strip():
                i += 1
                continue
            call = _DEBUG2_CALL.match(line)
            file, lineno = "", 0
            if i + 1 < len(lines):
                fm = _DEBUG2_FILE.match(lines[i + 1])
                if fm:
                    file, lineno = fm.group(1), int(fm.group(2))
                    i += 1
            if call:
                frames.append(Frame(call.group(1), file, lineno))
            i += 1
        if not creator:
            creator = _bottom_function(frames)
        stacks.append((1, frames, state, creator, creator_loc, minutes, int(leaked)))
    if not stacks:
        raise ProfileError("The ?debug=2 goroutine dump holds no goroutine.",
                           hint="Fetch /debug/pprof/goroutine?debug=2 again.")
    return _group(stacks, "debug=2")


def creator_heading(source: str) -> str:
    """What a group's ``creator`` really is, as a column heading.

    Only ``?debug=2`` dumps name the goroutine that ran the ``go`` statement; the
    proto and ``?debug=1`` shapes do not, so there ``creator`` is the function the
    goroutine started in (its outermost frame), and calling it "created by" would
    blame the leaking function for spawning itself.
    """
    return "created by" if source == "debug=2" else "started in"


def _bottom_function(frames: Sequence[Frame]) -> str:
    """The goroutine's start function: the outermost frame that is not runtime.goexit."""
    for f in reversed(frames):
        if f.function not in ("runtime.goexit", "?"):
            return f.function
    return ""


# ---------------------------------------------------------------- proto

def _report_from_proto(data: bytes | bytearray) -> GoroutineReport:
    stacks = _proto_stacks(data)
    return _group(((count, frames, None, _bottom_function(frames), "", None, 0)
                   for count, frames in stacks), "proto")


def _proto_stacks(data: bytes | bytearray) -> list[tuple[int, list[Frame]]]:
    """Count and frames (innermost first) of each sample of a goroutine profile.proto."""
    from bot.pprof import parse_profile  # the engine: limits, clear ProfileErrors

    profile = parse_profile(data)
    types = [st.type for st in profile.sample_types]
    if "goroutine" not in types and len(types) != 1:
        raise ProfileError(
            f"This profile holds {target_names(types) or 'no sample types'}, not goroutines.",
            hint="Fetch /debug/pprof/goroutine for goroutines; heap profiles go to `top`.",
        )
    index = types.index("goroutine") if "goroutine" in types else 0
    return [(int(values[index]), [Frame(go_print_name(f.function), f.file, f.line) for f in frames])
            for values, frames in engine_stacks(profile)]


def engine_stacks(profile: Any) -> list[tuple[list[int], list[Frame]]]:
    """(values, frames innermost first) per sample of a bot.pprof Profile (columnar)."""
    names = profile.function_names
    files = profile.function_filenames
    loc_off = profile.location_line_offsets.tolist()
    line_fn = profile.line_functions.tolist()
    line_no = profile.line_numbers.tolist()
    loc_frames: list[list[Frame]] = []
    for loc in range(len(loc_off) - 1):
        frames = [Frame(names[line_fn[j]], files[line_fn[j]], int(line_no[j]))
                  for j in range(loc_off[loc], loc_off[loc + 1])]
        loc_frames.append(frames or [Frame("?")])
    offsets = profile.sample_offsets.tolist()
    locations = profile.sample_locations.tolist()
    values = profile.values.tolist()
    out: list[tuple[list[int], list[Frame]]] = []
    for i in range(len(offsets) - 1):
        frames = [f for loc in locations[offsets[i]:offsets[i + 1]] for f in loc_frames[loc]]
        out.append((values[i], frames))
    return out
