"""heapbot's goroutine analysis on the held-out set: goroutine dumps of real Go programs nobody
here wrote, in all three shapes Go serves (tests/fixtures/regenerate.py --real-go).

- GoKer (reproductions of goroutine leaks found in CockroachDB, etcd, gRPC, Kubernetes,
  Moby, Istio, Hugo, Knative and Syncthing): proto, ?debug=1 and ?debug=2 of ONE moment
  (the debug=1 text before and after the others was the same), plus the goroutineleak
  profile. So the shapes must agree exactly: counts per stack, states, totals.
- net/http's parallel client/server benchmark during its HTTPS run, and over HTTP/2: busy
  processes, so their three shapes are of nearby moments; each is checked against what its
  own text says.

Each expectation is read from the dump's own text with plain regexes here, never from the
code under test.
"""

from __future__ import annotations

import functools
import gzip
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from bot.analysis.goroutines import GoroutineReport, parse_goroutines
from bot.analysis.leaks.observe import leaked_groups
from tests.golden.pprof_tool import FIXTURES

SHAPES = ("goroutine.pb.gz", "goroutine_debug1.txt.gz", "goroutine_debug2.txt.gz")
# Our own snapshotting goroutine: in debug=2 it is in writeGoroutineStacks, in the others in
# writeRuntimeProfile (one goroutine whose stack differs by the shape being written).
HARNESS = "heapbotSnapshot"
ROOT = Path(__file__).resolve().parents[2]


@functools.cache
def report(name: str) -> GoroutineReport:
    return parse_goroutines((FIXTURES / name).read_bytes())


def text(name: str) -> str:
    return gzip.decompress((FIXTURES / name).read_bytes()).decode()


def counts(r: GoroutineReport, harness: bool = True) -> dict[str, int]:
    return {g.signature: g.count for g in r.groups if harness or HARNESS not in g.signature}


def test_goker_proto_and_debug1_are_the_same_stacks() -> None:
    proto, debug1 = (report(f"go_goker_{s}") for s in SHAPES[:2])
    assert proto.total == debug1.total == 5801
    assert counts(proto) == counts(debug1)
    assert len(proto.groups) == 94


def test_goker_debug2_is_the_same_stacks_and_states_as_the_proto() -> None:
    """Same moment, so every stack has one count and one state in both shapes: ?debug=2
    hides runtime.main under main.main and names instantiations `f[...]` where the proto
    keeps them; Go's words `sync.RWMutex.Lock (leaked)` are the proto's `mutex`."""
    proto, debug2 = report("go_goker_goroutine.pb.gz"), report("go_goker_goroutine_debug2.txt.gz")
    assert debug2.total == proto.total == 5801
    assert counts(debug2, harness=False) == counts(proto, harness=False)
    states = {g.signature: g.state for g in proto.groups}
    assert {g.signature: g.state for g in debug2.groups if HARNESS not in g.signature} == {
        sig: st for sig, st in states.items() if HARNESS not in sig}
    assert proto.by_state() == debug2.by_state() == {
        "mutex": 2717, "chan send": 1351, "sync.WaitGroup.Wait": 931, "chan receive": 740,
        "select": 60, "running": 1, "sync.Cond.Wait": 1}
    # main (here our snapshot code): runtime.main;main.main;… in the proto, main.main;… in
    # ?debug=2; one signature up to the shape-writing frame where the two really differ
    mains = [g.signature for r in (proto, debug2) for g in r.groups if HARNESS in g.signature]
    assert [m.rsplit(";", 1)[0] for m in mains] == [
        "main.main;main.heapbotSnapshotAll;main.heapbotShots;main.heapbotSnapshot;"
        "runtime/pprof.(*Profile).WriteTo;runtime/pprof.writeGoroutine"] * 2


def headers(dump: str) -> list[tuple[str, str]]:
    """(goroutine id, Go's state word) of each `goroutine N [state]:` header."""
    return re.findall(r"^goroutine (\d+) \[([^\]]*)\]:$", dump, flags=re.M)


@pytest.mark.parametrize("fixture", ["go_goker", "go_http", "go_http2"])
def test_debug2_report_is_what_the_dump_says(fixture: str) -> None:
    dump = text(f"{fixture}_goroutine_debug2.txt.gz")
    r = report(f"{fixture}_goroutine_debug2.txt.gz")
    heads = headers(dump)
    assert r.total == len(heads) == sum(g.count for g in r.groups) > 400
    words = Counter(re.sub(r" \((leaked|scan|durable)\)", "", w.split(",")[0]) for _, w in heads)
    for lock in ("sync.Mutex.Lock", "sync.RWMutex.Lock", "sync.RWMutex.RLock"):
        if lock in words:
            words["mutex"] += words.pop(lock)
    # one stack can be IO wait in one goroutine and runnable in the next (107 here): each
    # goroutine counts in its own state
    assert r.by_state() == dict(words)
    assert r.leaked == sum("(leaked)" in w for _, w in heads)
    # "in goroutine N" is missing when the runtime started it (time.AfterFunc's time.goFunc)
    creators = Counter(re.findall(r"^created by (\S+)(?: in goroutine \d+)?$", dump, flags=re.M))
    by_creator = Counter()
    for g in r.groups:
        if g.creator_location:  # "created by" was in the dump (main has no creator)
            by_creator[g.creator] += g.count
    assert by_creator == creators
    assert all(g.wait_minutes is None for g in r.groups)  # nothing waited a minute


@pytest.mark.parametrize("fixture", ["go_goker", "go_http", "go_http2"])
def test_debug1_report_is_what_the_dump_says(fixture: str) -> None:
    dump = text(f"{fixture}_goroutine_debug1.txt.gz")
    r = report(f"{fixture}_goroutine_debug1.txt.gz")
    total = int(re.match(r"goroutine profile: total (\d+)\n", dump).group(1))
    entries = [int(n) for n in re.findall(r"^(\d+) @", dump, flags=re.M)]
    assert r.total == total == sum(entries) == sum(g.count for g in r.groups)
    assert len(r.groups) <= len(entries)


def test_goker_debug2_marks_exactly_the_goroutines_the_leak_profile_holds() -> None:
    """Go's leak-detecting GC marked them in the dump; the goroutineleak profile (proto and
    ?debug=1) of the same moment holds the same goroutines, stack for stack."""
    debug2 = report("go_goker_goroutine_debug2.txt.gz")
    leak, leak1 = report("go_goker_goroutineleak.pb.gz"), report(
        "go_goker_goroutineleak_debug1.txt.gz")
    marked = {g.signature: g.leaked for g in debug2.groups if g.leaked}
    assert debug2.leaked == leak.total == leak1.total == 5798
    assert counts(leak) == counts(leak1) == marked
    assert debug2.total - debug2.leaked == 3


def test_goroutineleak_debug1_text_is_read_like_the_goroutine_one() -> None:
    """`goroutineleak profile: total N` was refused as "text, not a goroutine profile"."""
    dump = text("go_goker_goroutineleak_debug1.txt.gz")
    assert dump.startswith("goroutineleak profile: total 5798\n")
    r = report("go_goker_goroutineleak_debug1.txt.gz")
    assert r.source == "debug=1" and r.total == 5798


def test_leaked_groups_of_the_real_leak_profile_name_the_leaking_code() -> None:
    """What /heap leaks reads from /debug/pprof/goroutineleak: the proven leaks, by stack,
    waiting in the projects' own functions (not in sync or the runtime)."""
    groups = leaked_groups((FIXTURES / "go_goker_goroutineleak.pb.gz").read_bytes())
    assert groups is not None and sum(g.count for g in groups) == 5798
    assert len(groups) == 93
    projects = Counter(re.search(r"_?([a-z]+)\d+", g.wait_function.lower()).group(1)
                       for g in groups if re.search(r"[a-z]\d+", g.wait_function.lower()))
    assert {"cockroach", "etcd", "grpc", "kubernetes", "moby"} <= set(projects)
    assert all(g.wait_function.startswith("main.") for g in groups)
    assert {g.state for g in groups} == {"mutex", "chan send", "sync.WaitGroup.Wait",
                                         "chan receive", "select", "sync.Cond.Wait"}


def test_http_proto_states_are_gos_words() -> None:
    """272 goroutines parked in GC assist (runtime.semacquire in gcMarkDone) read "waiting";
    Go calls that "semacquire". The empty stack (runtime.goexit alone: a goroutine not
    started yet) read "unknown"; Go says "runnable".
    One of them shares its stack above the runtime with 311 goroutines in chan receive
    (persistConn.addTLS): each counts in its own state, the group is "chan receive"."""
    r = report("go_http_goroutine.pb.gz")
    states = r.by_state()
    assert states == {"IO wait": 1009, "select": 506, "chan receive": 314, "semacquire": 272,
                      "runnable": 2, "running": 1, "sync.WaitGroup.Wait": 1}
    assert [g.count for g in r.groups if not g.frames] == [1]
    tls = next(g for g in r.groups if g.signature.endswith("(*persistConn).addTLS"))
    assert (tls.count, tls.state, tls.states) == (
        312, "chan receive", {"chan receive": 311, "semacquire": 1})


def test_http2_proto_stacks_not_parked_are_runnable() -> None:
    """In the proto a parked goroutine has runtime.gopark on top. 24 goroutines of the
    HTTP/2 run were just created (their stack is runtime.goexit alone; ?debug=2 calls such
    a one "[runnable]") and one was stopped in http2's CloseStream with no runtime frame on
    top: they read "unknown" and "waiting"; both are runnable."""
    r = report("go_http2_goroutine.pb.gz")
    assert r.by_state() == {"select": 595, "IO wait": 75, "chan receive": 32, "runnable": 25,
                            "running": 1, "sync.WaitGroup.Wait": 1}
    assert [(g.count, g.state) for g in r.groups if not g.frames] == [(24, "runnable")]
    closing = next(g for g in r.groups if g.top_function.endswith(").CloseStream"))
    assert closing.state == "runnable"
    # ?debug=1 hides the runtime frames, so there a stack without them stays "waiting"
    assert "runnable" not in report("go_http2_goroutine_debug1.txt.gz").by_state()


def test_http_instantiations_have_one_name_in_every_shape() -> None:
    """The benchmark's driver goroutines run `net/http_test.run[go.shape.*uint8]` (proto) =
    `run[...]` (?debug=1 and ?debug=2): one signature, one group, in every shape."""
    driver = ("testing.(*B).run1.func1;testing.(*B).runN;"
              "net/http_test.BenchmarkClientServerParallel.func1;net/http_test.run[...];")
    for shape in SHAPES:
        r = report(f"go_http_{shape}")
        mine = [g for g in r.groups if g.signature.startswith(driver)]
        assert [g.count for g in mine] == [1], shape
        assert all("go.shape" not in f.function for g in r.groups for f in g.frames)


def test_http_tls_stacks_are_whole() -> None:
    """Stacks 20+ frames deep keep every frame, in order, and wait where Go says."""
    r = report("go_http_goroutine_debug2.txt.gz")
    dump = text("go_http_goroutine_debug2.txt.gz")
    deepest = max(r.groups, key=lambda g: len(g.frames))
    assert len(deepest.frames) >= 20
    block = next(b for b in dump.split("\n\n")
                 if all(f.function + "(" in b for f in deepest.frames))
    calls = [ln.rsplit("(", 1)[0] for ln in block.splitlines()[1:]
             if not ln.startswith(("\t", "created by"))]
    assert [f.function for f in deepest.frames] == calls


def test_cli_says_which_goroutines_go_proved_leaked() -> None:
    """`heapbot goroutines --profile` on the GoKer ?debug=2 dump: the states as Go wrote
    them, "(leaked)" kept on the rows, and the total Go's GC proved leaked."""
    done = subprocess.run([sys.executable, "-m", "bot", "goroutines", "--profile",
                           str(FIXTURES / "go_goker_goroutine_debug2.txt.gz"), "-n", "3"],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "5,801 goroutines in 94 groups (source: debug=2)"
    assert lines[1].startswith("By state: 2,717 mutex, 1,351 chan send, 931 sync.WaitGroup.Wait")
    assert lines[2].startswith("Leaked: 5,798 goroutines Go's GC proved leaked")
    rows = lines[lines.index(next(x for x in lines if x.startswith("count"))) + 1:]
    assert rows[0].split()[:5] == ["524", "9.0%", "sync.WaitGroup.Wait", "(leaked)",
                                   "main.(*Stopper_cockroach1462).Stop"]
    assert "goker/cockroach1462.go:93" in rows[0] and rows[0].endswith("main.Cockroach1462")


def test_leaks_verdict_names_the_real_leaks_goroutineleak_proved() -> None:
    """/heap leaks over captures whose goroutineleak profile is GoKer's (heap flat): the
    suspects are the projects' leaking functions, proven, with Go's file:line and state,
    largest first (Cockroach1462's Stopper: 524 goroutines in sync.WaitGroup.Wait)."""
    from bot.analysis.leaks import analyze
    from handlers.leaks import build_reply
    from tests.analysis.test_leaks_gc import BACKGROUND, EVEN, observed

    real = leaked_groups((FIXTURES / "go_goker_goroutineleak.pb.gz").read_bytes())
    assert real is not None
    caps = observed(EVEN, [5 * i + 1 for i in range(20)], {"a:6060": BACKGROUND}, leaked={})
    for cap in caps:
        cap.observations[0].leaked = real
    report = analyze(caps)
    assert report.verdict == "leak likely"
    proven = [s for s in report.suspects if s.proven]
    assert len(proven) == len(real) == 93  # one per leaking stack
    top = proven[0]
    assert (top.function, top.state, top.site) == (
        "main.(*Stopper_cockroach1462).Stop", "sync.WaitGroup.Wait",
        "goker/cockroach1462.go:93")
    assert "524 goroutines" in top.evidence[0] and "can ever wake" in top.evidence[0]
    assert "proven leak" in report.summary
    rows = build_reply("goker", report).table.rows
    assert rows[0][:2] == ["main.(*Stopper_cockroach1462).Stop", "goroutines (proven)"]
