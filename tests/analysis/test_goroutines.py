"""Goroutine dumps: proto, ?debug=1 and ?debug=2 from real Go processes.

A tiny Go program (built here with the local toolchain) parks known numbers of
goroutines on known lines — chan send, chan receive, select, mutex, sleep,
accept — and writes the three dump shapes at one instant. The expected counts,
states and file:line come from that program's source, so each assertion can fail.
The demo fixtures in tests/fixtures are checked against their own metadata.
"""

from __future__ import annotations

import gzip
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bot.analysis.goroutines import is_own_code, is_stdlib, parse_goroutines
from bot.errors import ProfileError
from bot.gotool import find_go, go_env

FIXTURES = Path(__file__).parents[1] / "fixtures"
ROOT = Path(__file__).resolve().parents[2]

PROGRAM = """package main

import (
	"net"
	"os"
	"runtime/pprof"
	"sync"
	"time"
)

func parkSend(ch chan int) {
	ch <- 1 // MARK:send
}

func parkRecv(ch chan int) {
	<-ch // MARK:recv
}

func parkSelect(a, b chan int) {
	select { // MARK:select
	case <-a:
	case <-b:
	}
}

func parkLock(mu *sync.Mutex) {
	mu.Lock() // MARK:mutex
}

func parkSleep() {
	time.Sleep(time.Hour) // MARK:sleep
}

func parkAccept(l net.Listener) {
	l.Accept() // MARK:accept
}

func main() {
	send := make(chan int)
	for i := 0; i < 7; i++ {
		go parkSend(send)
	}
	recv := make(chan int)
	for i := 0; i < 3; i++ {
		go parkRecv(recv)
	}
	for i := 0; i < 2; i++ {
		go parkSelect(make(chan int), make(chan int))
	}
	var mu sync.Mutex
	mu.Lock()
	for i := 0; i < 4; i++ {
		go parkLock(&mu)
	}
	go parkSleep()
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	go parkAccept(l)
	time.Sleep(500 * time.Millisecond)
	out := os.Args[1]
	for _, d := range []int{0, 1, 2} {
		f, _ := os.Create(out + "/debug" + string(rune('0'+d)))
		pprof.Lookup("goroutine").WriteTo(f, d)
		f.Close()
	}
}
"""

EXPECTED = {  # function → (count, state in proto and ?debug=2, MARK)
    "main.parkSend": (7, "chan send", "send"),
    "main.parkRecv": (3, "chan receive", "recv"),
    "main.parkSelect": (2, "select", "select"),
    "main.parkLock": (4, "mutex", "mutex"),
    "main.parkSleep": (1, "sleep", "sleep"),
    "main.parkAccept": (1, "IO wait", "accept"),
}


@pytest.fixture(scope="module")
def dumps(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    work = tmp_path_factory.mktemp("parked")
    (work / "go.mod").write_text("module example.com/parked\n\ngo 1.24\n")
    source = work / "main.go"
    source.write_text(PROGRAM)
    subprocess.run([find_go(), "build", "-o", "parked", "."], cwd=work, env=go_env(),
                   check=True, timeout=240, capture_output=True)
    out = work / "out"
    out.mkdir()
    subprocess.run([str(work / "parked"), str(out)], check=True, timeout=60)
    lines = {m.group(1): i for i, line in enumerate(PROGRAM.splitlines(), start=1)
             if (m := re.search(r"// MARK:(\w+)", line))}
    return {"dir": out, "source": str(source), "lines": lines}


@pytest.mark.parametrize("shape", ["debug0", "debug1", "debug2"])
def test_every_shape_finds_the_parked_goroutines_where_they_wait(dumps: dict, shape: str
                                                                 ) -> None:
    report = parse_goroutines((dumps["dir"] / shape).read_bytes())
    assert report.source == {"debug0": "proto", "debug1": "debug=1", "debug2": "debug=2"}[shape]
    assert report.total == sum(g.count for g in report.groups)
    by_function = {g.wait_function: g for g in report.groups}
    for function, (count, state, mark) in EXPECTED.items():
        group = by_function[function]
        assert group.count == count, function
        assert group.wait_location == f"{dumps['source']}:{dumps['lines'][mark]}"
        if shape != "debug1" or state in ("mutex", "sleep", "IO wait"):
            # ?debug=1 hides the runtime frames that tell chan send from select
            assert group.state == state, (function, group.state)
        else:
            assert group.state == "waiting"
    # the parked groups come first, largest first
    counts = [g.count for g in report.groups]
    assert counts == sorted(counts, reverse=True)
    assert report.groups[0].wait_function == "main.parkSend"


def test_signatures_are_the_same_in_every_shape(dumps: dict) -> None:
    shapes = [parse_goroutines((dumps["dir"] / s).read_bytes()) for s in
              ("debug0", "debug1", "debug2")]
    wanted = set(EXPECTED)
    signatures = [{g.signature for g in r.groups if g.wait_function in wanted} for r in shapes]
    assert signatures[0] == signatures[1] == signatures[2]
    assert len(signatures[0]) == len(EXPECTED)


def test_debug2_keeps_created_by_and_summaries_carry_the_wait_site(dumps: dict) -> None:
    report = parse_goroutines((dumps["dir"] / "debug2").read_bytes())
    send = next(g for g in report.groups if g.wait_function == "main.parkSend")
    assert send.creator == "main.main"
    assert send.creator_location.startswith(dumps["source"] + ":")
    summary = next(s for s in report.summaries() if s.wait_function == "main.parkSend")
    assert (summary.count, summary.state) == (7, "chan send")
    assert summary.wait_location == send.wait_location
    assert summary.top_function == send.top_function


def test_gzipped_text_and_raw_proto_parse_like_the_originals(dumps: dict) -> None:
    text = (dumps["dir"] / "debug1").read_bytes()
    assert parse_goroutines(gzip.compress(text)).to_json() == parse_goroutines(text).to_json()
    proto = (dumps["dir"] / "debug0").read_bytes()
    raw = gzip.decompress(proto)
    assert parse_goroutines(raw).to_json() == parse_goroutines(proto).to_json()


def test_demo_fixtures_match_their_capture_metadata() -> None:
    meta = json.loads((FIXTURES / "fixtures.json").read_text())
    for name in ("goroutine.pb.gz", "goroutine_debug1.txt", "goroutine_debug2.txt"):
        data = (FIXTURES / name).read_bytes()
        report = parse_goroutines(data)
        blocked = next(g for g in report.groups if g.wait_function == "main.blockedSendResult")
        ticker = next(g for g in report.groups if g.wait_function == "main.tickerPollUntilDone")
        stats = meta[name]["stats"]
        assert blocked.count == stats["blocked_goroutines"]
        assert ticker.count == stats["ticker_goroutines"]
        if name != "goroutine_debug1.txt":
            assert (blocked.state, ticker.state) == ("chan send", "select")
        if name == "goroutine_debug2.txt":
            headers = re.findall(rb"^goroutine \d+ .*\[", data, flags=re.M)
            assert report.total == len(headers)
            assert blocked.creator == "main.blockedStartWorker"


@pytest.mark.parametrize(("data", "words"), [
    (b"", "empty"),
    (b"<html><body>404 page not found</body></html>", "HTML page"),
    (b'{"error": "nope"}', "not a goroutine"),
    (gzip.compress(b"x" * 100)[:-8], "truncated"),
    (b"\x1f\x8b\x08\x00garbage", "gzip"),
])
def test_bad_input_is_one_clear_profile_error(data: bytes, words: str) -> None:
    with pytest.raises(ProfileError) as err:
        parse_goroutines(data)
    assert words in err.value.user_message()


def test_a_heap_profile_is_refused_with_what_to_fetch() -> None:
    with pytest.raises(ProfileError) as err:
        parse_goroutines((FIXTURES / "heap_1.pb.gz").read_bytes())
    assert "inuse_space" in err.value.message and "/debug/pprof/goroutine" in err.value.hint


def test_own_code_is_main_and_module_paths_not_stdlib() -> None:
    assert is_own_code("main.handler") and is_own_code("main.(*T).M")
    assert is_own_code("github.com/gorilla/context.Set")
    assert is_own_code("payments/internal/store.(*Cache).Put")  # dot-free module path
    assert not is_own_code("runtime.mallocgc") and not is_own_code("net/http.(*conn).serve")
    assert not is_own_code("internal/poll.runtime_pollWait")
    assert is_stdlib("encoding/gob.(*Decoder).decodeMap") and not is_stdlib("main.main")


def test_cli_prints_the_groups_and_json(dumps: dict) -> None:
    path = str(dumps["dir"] / "debug0")
    out = subprocess.run([sys.executable, "-m", "bot", "goroutines", "--profile", path, "-n",
                          "3"], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    total = parse_goroutines((dumps["dir"] / "debug0").read_bytes()).total
    assert lines[0].startswith(f"{total} goroutines")
    table = lines[lines.index(next(x for x in lines if x.startswith("count"))) + 1:]
    assert len(table) == 3
    assert table[0].split()[:3] == ["7", f"{7 / total * 100:.1f}%", "chan"]
    assert "main.parkSend" in table[0]

    out = subprocess.run([sys.executable, "-m", "bot", "goroutines", "--profile", path,
                          "--format", "json"], capture_output=True, text=True, timeout=60,
                         cwd=ROOT)
    data = json.loads(out.stdout)
    assert data["total"] == total
    assert {g["wait_function"]: g["count"] for g in data["groups"]}["main.parkLock"] == 4


def test_cli_bad_file_is_one_line_and_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "page.html"
    bad.write_text("<html>login</html>")
    out = subprocess.run([sys.executable, "-m", "bot", "goroutines", "--profile", str(bad)],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "HTML page" in out.stderr
    assert "Traceback" not in out.stderr
