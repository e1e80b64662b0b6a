"""/heap leaks against the real demo Go service: every leaking scenario is a suspect,
no harmless one is, and the filling cache is named as bounded.

The demo runs all seven scenarios (deploy/demo/README.md); heapbot captures it
over HTTP into a real Redis a dozen times, a few seconds apart, then the
handler judges the stored history. Expected verdicts come from the scenario
table, not from a previous run.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import pytest

from bot.runtime import Runtime
from bot.settings import Settings
from handlers import Invocation, run
from tests.support.demo import start_demo

pytestmark = pytest.mark.slow

LEAKING = {"leakmap", "slice", "blocked", "ticker"}
HARMLESS = {"cache", "churn", "pool"}
CAPTURES = 12
MAX_CAPTURES = 40
INTERVAL_S = 2.5


def scenario_of(names: Iterable[str]) -> str | None:
    """The demo scenario a suspect belongs to: its functions are named main.<scenario>…"""
    for name in names:
        for scenario in LEAKING | HARMLESS:
            if name.startswith(f"main.{scenario}"):
                return scenario
    return None


@pytest.fixture
async def leaky_runtime(tmp_path: Path, redis_url: str, demo_binary: Path
                        ) -> AsyncIterator[Runtime]:
    # rate 1: the cache (20k entries, 1,000 puts/s) fills in ~20 s, then plateaus inside
    # the ~35 s of captures; a fine MemProfileRate keeps sampled heap values smooth.
    demo = start_demo(demo_binary, scenarios="all", rate=1.0, memprofilerate=512,
                      env={"DEMO_MAX_ITEMS": "1000000", "DEMO_MAX_GOROUTINES": "100000"})
    config = tmp_path / "heapbot.yaml"
    config.write_text(f"""
services:
  demo:
    targets: ["{demo.url}"]
    cooldown_seconds: 0
""")
    rt = await Runtime.create(Settings(config_path=config, redis_url=redis_url,
                                       data_dir=tmp_path / "data"))
    rt.demo = demo  # type: ignore[attr-defined]  # the test reads the demo's /stats
    try:
        yield rt
    finally:
        await rt.close()
        demo.stop()


async def test_leaks_names_every_leaking_scenario_and_no_harmless_one(
        leaky_runtime: Runtime) -> None:
    early = await run(leaky_runtime, Invocation(text="/heap leaks demo"))
    assert early.data is not None and early.data["verdict"] == "not enough data"
    assert early.data["needed_captures"] == 3
    assert any("--sample" in a.command for a in early.actions)

    # Capture every INTERVAL_S until the cache is full, then long enough after it for the
    # plateau to be the last third of the window (the demo's /stats says when it is full;
    # on a busy machine the demo's tickers run late, so time alone is not enough).
    demo = leaky_runtime.demo  # type: ignore[attr-defined]
    taken = filling = after_full = 0
    while taken < MAX_CAPTURES:
        if taken:
            await asyncio.sleep(INTERVAL_S)
        stats = await asyncio.to_thread(demo.stats)
        await leaky_runtime.capture("demo", trigger="user", force=True)
        taken += 1
        if stats["cache_entries"] < stats["cache_capacity"]:
            filling += 1
        else:
            after_full += 1
        if taken >= CAPTURES and after_full >= filling // 2 + 3:
            break

    reply = await run(leaky_runtime, Invocation(text="/heap leaks demo"))
    assert not reply.error, reply.sections
    data = reply.data
    assert data is not None
    assert data["verdict"] == "leak likely"
    assert data["captures"] == taken

    found: dict[str, list[dict]] = {}
    for suspect in data["suspects"]:
        scenario = scenario_of([suspect["function"], suspect["own_caller"]])
        found.setdefault(scenario or "?", []).append(suspect)
    assert set(found) >= LEAKING, f"missed: {LEAKING - set(found)}; got {sorted(found)}"
    assert not (HARMLESS & set(found)), f"harmless flagged: {HARMLESS & set(found)}"

    # Goroutine leaks name where they wait, like LeakProf: function and file:line.
    blocked = [s for s in found["blocked"] if s["kind"] == "goroutines"]
    assert blocked and blocked[0]["function"] == "main.blockedSendResult"
    assert blocked[0]["state"] == "chan send" and ".go:" in blocked[0]["site"]
    ticker = [s for s in found["ticker"] if s["kind"] == "goroutines"]
    assert ticker and ticker[0]["state"] == "select"

    # The cache filled up and stopped: bounded, not a suspect.
    bounded = [n for n in data["not_suspects"] if n["bounded"]]
    assert "cache" in {scenario_of([n["function"]]) for n in bounded}

    # What users see: the table lists the suspects with their growth; ~30 s of captures
    # is too short for a per-hour rate, so it is the observed change and its window.
    assert reply.table is not None
    shown = [row[0] for row in reply.table.rows]
    assert shown == [s["function"] for s in data["suspects"]]
    growth = [row[2] for row in reply.table.rows]
    assert all(re.fullmatch(r"\+\S+ (goroutines )?in (\d+m)?\d+s", g) for g in growth), growth
    assert "/h" not in reply.summary
    assert any(a.command.startswith("list demo ") for a in reply.actions)


async def test_sample_takes_the_captures_then_decides(leaky_runtime: Runtime) -> None:
    reply = await run(leaky_runtime, Invocation(text="/heap leaks demo --sample 4x2s",
                                                user_id="U0TEST"))
    assert not reply.error, reply.sections
    history = await leaky_runtime.history("demo", limit=10)
    assert len(history) == 4
    assert reply.data["captures"] == 4
    assert reply.data["verdict"] in ("leak likely", "growth bounded")
    assert "took 4 new captures" in " ".join(reply.context)
    # 4 captures 2 s apart are enough to see the goroutine leaks of the demo
    waits = {s["function"] for s in reply.data["suspects"] if s["kind"] == "goroutines"}
    assert "main.blockedSendResult" in waits
