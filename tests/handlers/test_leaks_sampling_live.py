"""/heap leaks against the real demo at Go's default heap sampling rate (512 KiB).

Every real Go service samples its heap once per 512 KiB allocated (the demo in the
other live tests samples every 512 B). A capture stores the profile's period with
each instance's observation; a leak that has grown by fewer than 9 samples is
answered "undecided" with the sampling named, never as a suspect or as cleared.
One that reached 9 samples in the test's few seconds is judged by its shape like any
other (a suspect, or undecided for a reason the reply gives).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.runtime import Runtime
from handlers import Invocation, run
from tests.support.runtime import demo_runtime

LEAKMAP = ("main.leakmapLoadUser", "main.leakmapNewRequest", "main.leakmapSetContext")


@pytest.fixture
async def default_rate(tmp_path: Path, redis_url: str, demo_binary: Path
                       ) -> AsyncIterator[Runtime]:
    # No -memprofilerate: the demo keeps Go's runtime.MemProfileRate. leakmap at rate 30
    # keeps about 1.5 samples a second alive over its three functions: a few in seconds.
    async for rt in demo_runtime(tmp_path, redis_url, demo_binary, "leakmap", 30.0):
        yield rt


async def test_a_young_leak_at_the_default_rate_is_undecided_naming_the_sampling(
        default_rate: Runtime) -> None:
    for _ in range(5):  # leak sampling's trigger: a fresh heap each time
        captured = await default_rate.capture("demo", trigger="sample", force=True)
        await asyncio.sleep(1.0)
    assert captured.snapshot.summary.observations[0].sample_period == 524288

    reply = await run(default_rate, Invocation("leaks demo"))
    data = reply.data
    assert data is not None
    suspects = {s["function"]: s["net_growth"] for s in data["suspects"]}
    cleared = {n["function"] for n in data["not_suspects"]}
    undecided = {u["function"]: u for u in data["undecided"]}
    assert not cleared & set(LEAKMAP), data  # a few samples never read as "not a leak"
    named = [fn for fn in LEAKMAP if fn in undecided or fn in suspects]
    assert named, data  # 5 captures over ~5 s: a few samples, at least one function
    nine_samples = 9 * 524288 * 0.99
    for fn in named:
        if fn in suspects:  # decided only from 9 samples (4.5MB) of growth up
            assert suspects[fn] >= nine_samples, data
        elif undecided[fn]["net_growth"] < nine_samples:  # the sampling holds it back
            assert undecided[fn]["sampling_limited"], data
            assert "sampled every 512kB (runtime.MemProfileRate)" in undecided[fn]["reason"]
            assert "4.50MB (9 samples) would tell" in undecided[fn]["reason"]
        else:  # 9 samples reached in ~5 s: the shape rules may still hold it back
            assert "would decide" in undecided[fn]["reason"], data
    if any(u["sampling_limited"] for fn, u in undecided.items() if fn in named):
        assert "sampled every 512kB" in "\n".join(reply.sections)  # what the user reads
