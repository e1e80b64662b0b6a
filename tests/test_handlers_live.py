"""/heap handlers against real parts: the demo Go service over HTTP, a real Redis.

Expected numbers are never written down: each test recomputes them from the
stored raw bytes with the engine (the same code `go tool pprof` is checked
against) and compares them with what the user would see in the reply.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.analysis.goroutines import parse_goroutines
from bot.analysis.memstats import merge_memstats, parse_memstats
from bot.render.blocks import fallback_text, reply_to_blocks
from bot.runtime import Runtime
from bot.settings import Settings
from handlers import Invocation, run

pytestmark = pytest.mark.slow


def registry_yaml(cluster: list, single) -> str:
    targets = ", ".join(f'"{d.url}"' for d in cluster)
    return f"""
services:
  demo:
    targets: [{targets}]
    aliases: [dm]
    cooldown_seconds: 0
  single:
    targets: ["{single.url}"]
    cooldown_seconds: 0
  locked:
    targets: ["{single.url}"]
    cooldown_seconds: 0
    allow_channels: [C0ALLOWED]
"""


@pytest.fixture
async def runtime(tmp_path: Path, redis_url: str, demo_cluster, demo_service
                  ) -> AsyncIterator[Runtime]:
    config = tmp_path / "heapbot.yaml"
    config.write_text(registry_yaml(demo_cluster, demo_service))
    settings = Settings(config_path=config, redis_url=redis_url, data_dir=tmp_path / "data")
    rt = await Runtime.create(settings)
    try:
        yield rt
    finally:
        await rt.close()


def slack(text: str, channel: str = "C0ALLOWED") -> Invocation:
    return Invocation(text=text, user_id="U0TEST", channel_id=channel, source="slack")


def column(reply, name: str) -> list[str]:
    index = [c.name for c in reply.table.columns].index(name)
    return [row[index] for row in reply.table.rows]


async def test_goroutines_groups_match_the_stored_dumps(runtime: Runtime) -> None:
    reply = await run(runtime, slack("goroutines demo 50"))
    assert not reply.error, reply.sections
    assert reply.service == "demo"
    assert "3/3 instances" in reply.context[0]

    blobs = await runtime.store.raw_profiles("demo", reply.snapshot_id, "goroutine")
    assert len(blobs) == 3
    reports = [parse_goroutines(blob) for _, blob in blobs]
    total = sum(r.total for r in reports)
    assert reply.data["total"] == total
    assert f"{total:,} goroutines" in reply.title

    waits = column(reply, "waits in")
    states = column(reply, "state")
    counts = [int(c.replace(",", "")) for c in column(reply, "goroutines")]
    assert counts == sorted(counts, reverse=True)
    blocked = waits.index("main.blockedSendResult")
    assert states[blocked] == "chan send"
    expected = sum(g.count for r in reports for g in r.groups
                   if g.wait_function == "main.blockedSendResult")
    assert counts[blocked] == expected
    assert "main.tickerPollUntilDone" in waits

    blocks = reply_to_blocks(reply)
    table = next(b for b in blocks if b["type"] == "table")
    assert any(cell["text"] == "main.blockedSendResult" for row in table["rows"] for cell in row)
    assert "main.blockedSendResult" in fallback_text(reply)


async def test_stats_show_memstats_and_the_change(runtime: Runtime) -> None:
    from bot.analysis.units import format_value

    first = await run(runtime, slack("stats demo"))
    second = await run(runtime, slack("memstats dm"))
    assert not first.error and not second.error, (first.sections, second.sections)

    def merged(snapshot_id: str) -> dict[str, int]:
        return merged_by_id[snapshot_id]

    merged_by_id = {}
    for reply in (first, second):
        texts = await runtime.store.raw_profiles("demo", reply.snapshot_id, "memstats")
        merged_by_id[reply.snapshot_id] = merge_memstats(
            [parse_memstats(t) for _, t in texts]).fields

    fields = column(second, "field")
    now = dict(zip(fields, column(second, "now"), strict=True))
    before_column = next(c.name for c in second.table.columns if c.name.startswith("at "))
    before = dict(zip(fields, column(second, before_column), strict=True))
    latest, earlier = merged(second.snapshot_id), merged(first.snapshot_id)
    for name in ("HeapInuse", "HeapAlloc", "HeapIdle", "HeapReleased", "Sys", "NextGC"):
        assert now[name] == format_value(latest[name], "bytes"), name
        assert before[name] == format_value(earlier[name], "bytes"), name
    assert now["NumGC"] == f"{latest['NumGC']:,}"
    assert "goroutines" in fields
    assert "HeapInuse" in second.summary
    assert second.data["memstats"]["HeapInuse"] == latest["HeapInuse"]
    assert second.data["previous"]["HeapInuse"] == earlier["HeapInuse"]


async def test_access_refused_means_no_capture(runtime: Runtime) -> None:
    refused = await run(runtime, slack("stats locked", channel="C0ELSEWHERE"))
    assert refused.error and refused.ephemeral
    assert await runtime.store.count("locked") == 0
    allowed = await run(runtime, slack("stats locked", channel="C0ALLOWED"))
    assert not allowed.error
    assert await runtime.store.count("locked") == 1


async def test_unknown_service_and_bad_since(runtime: Runtime) -> None:
    unknown = await run(runtime, slack("goroutines dmeo"))
    assert unknown.error and "Did you mean `demo`" in unknown.sections[0]
    assert await runtime.store.count("demo") == 0
