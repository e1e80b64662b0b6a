"""The demo Go service: it builds, serves pprof, and each scenario shows where it allocates.

Profiles are read with the real ``go tool pprof`` so these tests check the demo
itself, independently of heapbot's own decoder.
"""

from __future__ import annotations

import gzip
import json
import re
import subprocess
import time
import urllib.error
from pathlib import Path

import pytest

from bot.gotool import find_go, go_env
from tests.support.demo import DemoProcess, build_demo, start_demo

FIXTURES = Path(__file__).parents[1] / "fixtures"


def pprof(*args: str | Path) -> str:
    """Output of ``go tool pprof ARGS`` (fails the test on a non-zero exit)."""
    result = subprocess.run([find_go(), "tool", "pprof", *map(str, args)], env=go_env(),
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


def top_functions(profile: Path, sample_index: str | None = None) -> dict[str, str]:
    """Function name → flat column of ``go tool pprof -top`` (every node)."""
    args: list[str | Path] = ["-top", "-nodecount=1000", "-nodefraction=0"]
    if sample_index:
        args.append(f"-sample_index={sample_index}")
    rows: dict[str, str] = {}
    for line in pprof(*args, profile).splitlines():
        fields = line.split()
        if len(fields) >= 6 and fields[1].endswith("%") and fields[4].endswith("%"):
            rows[" ".join(fields[5:])] = fields[0]
    return rows


def main_build_id(profile: Path) -> str:
    """The build id of the first mapping, as ``go tool pprof -raw`` prints it."""
    raw = pprof("-raw", profile)
    mappings = raw.split("Mappings", 1)[1].strip().splitlines()
    # "1: 0x400000/0x74b000/0x0 /path/to/demo 4f11f828... [FN]"
    return mappings[0].split()[3]


def fetch_to(demo: DemoProcess, path: str, target: Path) -> Path:
    target.write_bytes(demo.get(path))
    return target


@pytest.fixture(scope="module")
def fine_grained_demo(demo_binary: Path):
    """A demo sampling every 4 kB, so even small scenarios show in a few seconds."""
    demo = start_demo(demo_binary, "all", rate=10, memprofilerate=4096)
    time.sleep(3)
    yield demo
    demo.stop()


def test_version_flag_prints_the_linked_version(tmp_path: Path) -> None:
    binary = build_demo("v9.8.7-test")
    out = subprocess.run([str(binary), "-version"], capture_output=True, text=True,
                         timeout=10, check=True)
    assert out.stdout.strip() == "v9.8.7-test"


def test_healthz_reports_version_and_scenarios(demo_service: DemoProcess) -> None:
    health = json.loads(demo_service.get("/healthz"))
    assert health["status"] == "ok"
    assert health["version"] == "dev"
    assert set(health["scenarios"]) == {"leakmap", "blocked", "cache", "churn", "slice",
                                        "ticker", "pool"}


def test_pprof_endpoints_serve_gzipped_profiles(demo_service: DemoProcess) -> None:
    for path in ("/debug/pprof/heap", "/debug/pprof/allocs", "/debug/pprof/goroutine"):
        body = demo_service.get(path)
        assert body[:2] == b"\x1f\x8b", path  # gzip magic
        assert len(gzip.decompress(body)) > 100, path
    text = demo_service.get("/debug/pprof/heap?debug=1").decode()
    assert text.startswith("heap profile:")
    assert "# runtime.MemStats" in text
    goroutines = demo_service.get("/debug/pprof/goroutine?debug=1").decode()
    assert re.match(r"goroutine profile: total \d+", goroutines)


@pytest.mark.slow
def test_heap_scenarios_show_their_allocating_functions(fine_grained_demo: DemoProcess,
                                                        tmp_path: Path) -> None:
    profile = fetch_to(fine_grained_demo, "/debug/pprof/heap", tmp_path / "heap.pb.gz")
    inuse = top_functions(profile)
    for function in ("main.leakmapLoadUser", "main.leakmapNewRequest", "main.cacheBuildEntry",
                     "main.sliceNewPayload"):
        assert function in inuse, f"{function} missing from inuse_space top: {sorted(inuse)}"
    alloc = top_functions(profile, "alloc_space")
    assert "main.churnRenderReport" in alloc
    assert "main.poolNewBuffer" in alloc or "main.poolEncodeBatch" in alloc


@pytest.mark.slow
def test_goroutine_scenarios_park_in_their_functions(fine_grained_demo: DemoProcess,
                                                     tmp_path: Path) -> None:
    profile = fetch_to(fine_grained_demo, "/debug/pprof/goroutine", tmp_path / "g.pb.gz")
    rows = top_functions(profile)
    # Parked goroutines have runtime.gopark as their leaf; the scenario frames are cum.
    traces = pprof("-traces", profile)
    assert "main.blockedSendResult" in traces
    assert "main.tickerPollUntilDone" in traces
    assert "runtime.gopark" in rows
    dump = fine_grained_demo.get("/debug/pprof/goroutine?debug=2").decode()
    assert re.search(r"goroutine \d+ \[chan send.*\]:\nmain\.blockedSendResult", dump)
    assert re.search(r"goroutine \d+ \[select.*\]:\nmain\.tickerPollUntilDone", dump)


@pytest.mark.slow
def test_leaks_grow_and_the_cache_plateaus(demo_binary: Path) -> None:
    # rate 4: the cache takes 4,000 entries/s, so it fills in about 5 s.
    demo = start_demo(demo_binary, "leakmap,cache,blocked", rate=4)
    try:
        time.sleep(1)
        early = demo.stats()
        assert 0 < early["cache_entries"] < early["cache_capacity"]
        deadline = time.monotonic() + 20
        while demo.stats()["cache_entries"] < demo.stats()["cache_capacity"]:
            assert time.monotonic() < deadline, "cache never filled"
            time.sleep(0.5)
        later = demo.stats()
        time.sleep(1)
        latest = demo.stats()
    finally:
        demo.stop()
    assert later["leakmap_entries"] > early["leakmap_entries"] > 0
    assert latest["leakmap_entries"] > later["leakmap_entries"]
    assert latest["blocked_goroutines"] > early["blocked_goroutines"] > 0
    assert latest["cache_entries"] == later["cache_entries"] == latest["cache_capacity"]
    assert latest["slice_events"] == 0  # not selected


def test_scenario_selection_runs_only_the_named_ones(demo_binary: Path, tmp_path: Path) -> None:
    demo = start_demo(demo_binary, "churn", rate=10, memprofilerate=4096)
    try:
        time.sleep(1.5)
        profile = fetch_to(demo, "/debug/pprof/heap", tmp_path / "heap.pb.gz")
        stats = demo.stats()
    finally:
        demo.stop()
    alloc = top_functions(profile, "alloc_space")
    assert "main.churnRenderReport" in alloc
    assert not [f for f in alloc if f.startswith(("main.leakmap", "main.cache", "main.slice"))]
    assert stats["leakmap_entries"] == stats["cache_entries"] == 0


def test_unknown_scenario_is_refused_with_the_known_names(demo_binary: Path) -> None:
    out = subprocess.run([str(demo_binary), "-addr", "127.0.0.1:0", "-scenarios", "leakmapp"],
                         capture_output=True, text=True, timeout=10, check=False)
    assert out.returncode != 0
    assert 'unknown scenario "leakmapp"' in out.stderr
    assert "leakmap" in out.stderr.split("known:", 1)[1]


def test_build_id_in_heap_profile_changes_with_version(tmp_path: Path) -> None:
    build_ids = {}
    for version in ("v1.0.0-test", "v1.0.1-test"):
        demo = start_demo(build_demo(version), "cache", rate=1)
        try:
            profile = fetch_to(demo, "/debug/pprof/heap", tmp_path / f"{version}.pb.gz")
        finally:
            demo.stop()
        build_ids[version] = main_build_id(profile)
    assert all(re.fullmatch(r"[0-9a-f]{40}", b) for b in build_ids.values()), build_ids
    assert build_ids["v1.0.0-test"] != build_ids["v1.0.1-test"]


def test_killed_instance_stops_answering(demo_binary: Path) -> None:
    demo = start_demo(demo_binary, "pool", rate=1)
    assert demo.get("/healthz")
    demo.kill()
    assert not demo.alive()
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        demo.get("/healthz", timeout=2)


def test_fixtures_are_real_profiles_of_the_expected_kinds() -> None:
    manifest = json.loads((FIXTURES / "fixtures.json").read_text())
    assert pprof("-raw", FIXTURES / "cpu.pb.gz").splitlines()[1].startswith("Period:")
    assert "samples/count cpu/nanoseconds" in pprof("-raw", FIXTURES / "cpu.pb.gz")
    for name in ("heap_1.pb.gz", "heap_2.pb.gz", "heap_other.pb.gz", "allocs.pb.gz"):
        assert "main.cacheBuildEntry" in top_functions(FIXTURES / name, "alloc_space"), name
    assert main_build_id(FIXTURES / "heap_1.pb.gz") == main_build_id(FIXTURES / "heap_2.pb.gz")
    assert main_build_id(FIXTURES / "heap_1.pb.gz") != main_build_id(
        FIXTURES / "heap_other.pb.gz")
    assert manifest["heap_1.pb.gz"]["version"] == manifest["heap_2.pb.gz"]["version"]
    assert (manifest["heap_2.pb.gz"]["stats"]["leakmap_entries"]
            > manifest["heap_1.pb.gz"]["stats"]["leakmap_entries"])
    assert "main.blockedSendResult" in pprof("-traces", FIXTURES / "goroutine.pb.gz")
    assert "# runtime.MemStats" in (FIXTURES / "heap_debug1.txt").read_text()
    assert (FIXTURES / "goroutine_debug1.txt").read_text().startswith("goroutine profile: total")
    assert "[chan send" in (FIXTURES / "goroutine_debug2.txt").read_text()
    total = sum(p.stat().st_size for p in FIXTURES.iterdir() if p.is_file())
    assert total < 1024 * 1024


def test_gen_profile_writes_one_distinct_stack_per_allocation(tmp_path: Path) -> None:
    """bench/gen_profile at a small size: every requested stack is in the heap profile."""
    stacks = 2500
    out = tmp_path / "big.pb.gz"
    subprocess.run([find_go(), "run", ".", "-o", str(out), "-stacks", str(stacks)],
                   cwd=Path(__file__).parents[2] / "bench" / "gen_profile", env=go_env(),
                   check=True, timeout=300, capture_output=True)
    samples = pprof("-raw", out).split("Samples:", 1)[1].split("Locations", 1)[0]
    stacks_seen = {line.split(":", 1)[1].strip() for line in samples.splitlines()
                   if re.match(r"^\s*(\d+\s+){3}\d+:", line)}
    assert len(stacks_seen) >= stacks
    # Paths differ by the digit functions they pass through.
    assert "main.digit9" in pprof("-traces", out)


def test_a_killed_test_run_leaves_no_demo_log_in_the_temp_dir(demo_binary: Path,
                                                              tmp_path: Path) -> None:
    """A pytest run killed by a timeout never reaches its atexit: nothing may be left behind.

    Named temp logs piled up as hundreds of empty heapbot-demo-*.log files in /tmp.
    """
    import os
    import sys

    temp = tmp_path / "tmp"
    temp.mkdir()
    code = ("import os, signal; from pathlib import Path; "
            "from tests.support.demo import start_demo; "
            f"demo = start_demo(Path({str(demo_binary)!r})); print(demo.pid, flush=True); "
            "os.kill(os.getpid(), signal.SIGKILL)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "TMPDIR": str(temp)},
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == -9, done.stderr
    pid = int(done.stdout.split()[0])
    for _ in range(100):  # the demo dies with its parent (PR_SET_PDEATHSIG)
        if not Path(f"/proc/{pid}").exists():
            break
        time.sleep(0.05)
    assert list(temp.iterdir()) == []
