"""`list` shows source lines, as `go tool pprof -list` does (issue 15.5).

File mode against the real ``go tool pprof -list`` on a profile of the running
demo; service mode through the handlers with a registry ``source:`` block (a
local checkout, or a URL template served by a real HTTP server); and the limits:
only the configured host, no redirects, a size cap, no path outside the checkout.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from bot.errors import ConfigError
from bot.gotool import find_go, go_env
from bot.registry import SourceConfig, load_registry
from bot.runtime import Runtime
from bot.settings import Settings
from bot.source import find_sources, source_url
from handlers import Invocation, run
from tests.demo.test_demo import pprof
from tests.support.demo import DemoProcess
from tests.support.slack_standin import RunningWebApp

REPO_ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = REPO_ROOT / "deploy" / "demo" / "scenarios.go"
SOURCE_LINE = "return &sessionUser{ID: seq"  # scenarios.go, in main.leakmapLoadUser


def heapbot(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bot", *args], capture_output=True, text=True,
                          timeout=120, cwd=REPO_ROOT, env=dict(os.environ))


def _from_total(text: str) -> str:
    return text[text.index("Total:"):]


@pytest.mark.slow
def test_file_mode_list_with_source_dir_equals_go_tool_pprof_list(
        demo_service: DemoProcess, tmp_path: Path) -> None:
    profile = tmp_path / "heap.pb.gz"
    regex = r"main\.leakmap(LoadUser|Tick)"
    deadline = time.monotonic() + 30
    while True:  # a fresh demo may not have a sampled allocation there yet
        profile.write_bytes(demo_service.get("/debug/pprof/heap?gc=1"))
        found = subprocess.run([find_go(), "tool", "pprof", "-list", regex, str(profile)],
                               env=go_env(), capture_output=True, text=True, timeout=120)
        if (found.returncode == 0 and SOURCE_LINE in found.stdout
                and "leakmapTick" in found.stdout) or time.monotonic() > deadline:
            break
        time.sleep(1)
    expected = pprof("-list", regex, profile)  # pprof reads the files at their build paths
    assert SOURCE_LINE in expected
    done = heapbot("list", "--profile", str(profile), regex, "--source-dir", str(REPO_ROOT))
    assert done.returncode == 0, done.stderr
    assert _from_total(done.stdout) == _from_total(expected)
    assert done.stderr == ""
    # without --source-dir, the files at the paths the build recorded, as pprof reads them
    here = heapbot("list", "--profile", str(profile), regex)
    assert here.returncode == 0, here.stderr
    assert _from_total(here.stdout) == _from_total(expected) and here.stderr == ""


def moved_profile(fixture: Path, out: Path) -> Path:
    """``fixture`` with its source paths moved to a build machine that is not this one."""
    import gzip

    from bot.pprof import profile_pb2

    profile = profile_pb2.Profile()
    profile.ParseFromString(gzip.decompress(fixture.read_bytes()))
    for i, text in enumerate(profile.string_table):
        if text.endswith(".go") and text.startswith("/"):
            at = text.find("/deploy/demo/")
            profile.string_table[i] = "/nonexistent/ci" + (text[at:] if at >= 0 else text)
    out.write_bytes(gzip.compress(profile.SerializeToString()))
    return out


def test_file_mode_without_source_says_how_to_get_it(tmp_path: Path) -> None:
    fixture = moved_profile(REPO_ROOT / "tests" / "fixtures" / "heap_2.pb.gz",
                            tmp_path / "heap.pb.gz")
    done = heapbot("list", "--profile", str(fixture), r"main\.leakmapLoadUser")
    assert done.returncode == 0, done.stderr
    assert "80:" in done.stdout and SOURCE_LINE not in done.stdout
    assert "Source lines are not shown: give --source-dir DIR" in done.stderr
    # the fixture was built elsewhere: its paths are mapped onto this checkout by suffix
    shown = heapbot("list", "--profile", str(fixture), r"main\.leakmapLoadUser",
                    "--source-dir", str(REPO_ROOT))
    assert SOURCE_LINE in shown.stdout and shown.stderr == ""


async def test_trim_prefix_maps_a_trimpath_build_and_nothing_escapes_the_dir(
        tmp_path: Path) -> None:
    config = SourceConfig(dir=str(REPO_ROOT / "deploy" / "demo"),
                          trim_prefix=("heapbot.dev/demo/",))
    found = await find_sources(config, ["heapbot.dev/demo/scenarios.go",
                                        "heapbot.dev/demo/../../../etc/passwd",
                                        "/etc/passwd"])
    assert any(SOURCE_LINE in line for line in found.texts["heapbot.dev/demo/scenarios.go"])
    assert set(found.texts) == {"heapbot.dev/demo/scenarios.go"}
    big = tmp_path / "big.go"
    big.write_text("x" * 5000)
    capped = await find_sources(SourceConfig(dir=str(tmp_path), max_bytes=1024), ["/b/big.go"])
    assert capped.texts == {} and "big.go is larger than 1kB" in capped.note("svc")


@pytest.fixture
async def source_server() -> AsyncIterator[tuple[str, list[str]]]:
    """Serves scenarios.go under /v1.2.3/deploy/demo/; records every path asked for."""
    seen: list[str] = []

    async def serve(request: web.Request) -> web.StreamResponse:
        seen.append(request.path)
        if request.path == "/v1.2.3/deploy/demo/scenarios.go":
            return web.Response(body=SCENARIOS.read_bytes())
        if request.path.endswith("/huge.go"):
            return web.Response(body=b"/" * (2 * 1024 * 1024))
        if request.path.endswith("/moved.go"):
            raise web.HTTPFound("http://127.0.0.2:1/elsewhere.go")
        return web.Response(status=404)

    app = web.Application()
    app.router.add_get("/{tail:.*}", serve)
    running = RunningWebApp(app)
    await running.start()
    try:
        yield running.url, seen
    finally:
        await running.stop()


async def test_url_template_fetches_from_the_configured_host_only(
        source_server: tuple[str, list[str]]) -> None:
    base, seen = source_server
    prefix = str(REPO_ROOT) + "/"
    config = SourceConfig(url=base + "/{version}/{path}", trim_prefix=(prefix,))
    files = [str(SCENARIOS), prefix + "deploy/demo/huge.go", prefix + "deploy/demo/moved.go",
             "/somewhere/else.go"]
    found = await find_sources(config, files, version="v1.2.3")
    assert any(SOURCE_LINE in line for line in found.texts[str(SCENARIOS)])
    assert set(found.texts) == {str(SCENARIOS)}
    note = found.note("demo")
    assert "huge.go is larger than 1MB" in note and "HTTP 302 for moved.go" in note
    assert "else.go: its path does not start with a trim_prefix" in note
    assert "/elsewhere.go" not in seen  # the redirect was not followed
    # without a recorded deploy, {version} is unknown: said plainly, nothing fetched
    seen.clear()
    unknown = await find_sources(config, files)
    assert unknown.texts == {} and seen == [] and "/heap deploy" in unknown.note("demo")
    # a path cannot move the request to another host
    assert source_url(SourceConfig(url="http://h.example/{path}"), "@evil.example/x.go",
                      version=None, build_id=None) == "http://h.example/%40evil.example/x.go"


def test_registry_checks_the_source_block(tmp_path: Path) -> None:
    path = tmp_path / "heapbot.yaml"
    path.write_text('services:\n  p:\n    targets: ["http://a:1"]\n    source:\n'
                    '      url: "https://{version}.example.com/{path}"\n')
    with pytest.raises(ConfigError) as err:
        load_registry(path)
    assert "services.p.source.url: the host must be written out" in err.value.user_message()
    path.write_text('services:\n  p:\n    targets: ["http://a:1"]\n    source:\n'
                    '      url: "https://raw.example.com/org/repo/{commit}/{path}"\n')
    with pytest.raises(ConfigError) as err:
        load_registry(path)
    assert "unknown placeholder {commit}" in err.value.user_message()


@pytest.mark.slow
async def test_list_reply_shows_source_lines_or_how_to_configure_them(
        tmp_path: Path, redis_url: str, demo_service: DemoProcess) -> None:
    config = tmp_path / "heapbot.yaml"
    config.write_text(f'services:\n  demo:\n    targets: ["{demo_service.url}"]\n'
                      f"    cooldown_seconds: 0\n    source:\n      dir: {REPO_ROOT}\n"
                      f'  bare:\n    targets: ["{demo_service.url}"]\n    cooldown_seconds: 0\n')
    runtime = await Runtime.create(Settings(config_path=config, redis_url=redis_url,
                                            data_dir=tmp_path / "data"))
    try:
        shown = await run(runtime, Invocation(text=r"list demo main\.leakmapLoadUser$",
                                              source="console"))
        bare = await run(runtime, Invocation(text=r"list bare main\.leakmapLoadUser$",
                                             source="console"))
    finally:
        await runtime.close()
    assert not shown.error and shown.table is not None
    labels = [row[0] for row in shown.table.rows]
    assert any(label.strip().startswith("80  " + SOURCE_LINE) for label in labels), labels
    assert not any("not shown" in s for s in shown.sections)
    assert not bare.error and bare.table is not None
    assert "    line 80" in [row[0] for row in bare.table.rows]
    assert any("no source is configured for `bare`" in s for s in bare.sections)
