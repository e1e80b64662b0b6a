"""Bounded storage (issue 13 item 4): one merged heap per snapshot, raw files only for the newest.

Real Redis, real HTTP instances serving real Go heap profiles (the fixtures).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

import handlers
from bot.analysis.top import TopOptions, top
from bot.pprof import merge_profiles, parse_profile
from bot.runtime import Runtime
from bot.settings import Settings
from bot.store import MERGED, StoredSnapshot
from tests.capture.test_capture import HttpServer

FIXTURES = Path(__file__).parents[1] / "fixtures"
HEAPS = ["heap_1.pb.gz", "heap_2.pb.gz", "heap_other.pb.gz"]


def serving(heap: str) -> HttpServer:
    async def handler(request: web.Request) -> web.Response:
        if request.query.get("debug") == "1":
            return web.Response(text=(FIXTURES / "heap_debug1.txt").read_text(),
                                content_type="text/plain")
        name = "goroutine.pb.gz" if request.path.endswith("/goroutine") else heap
        return web.Response(body=(FIXTURES / name).read_bytes())

    return HttpServer(handler)


@pytest.fixture
async def fleet(redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                ) -> AsyncIterator[Runtime]:
    """A runtime over services `fleet` (3 instances, 3 different heaps) and `one`, `three`
    (1 and 3 instances of the same heap); the newest 2 snapshots keep raw files."""
    monkeypatch.setenv("HEAPBOT_RAW_CAPTURES", "2")
    servers = [await serving(h).start() for h in HEAPS]
    same = [await serving(HEAPS[1]).start() for _ in range(3)]
    registry = tmp_path / "heapbot.yaml"
    entry = "    cooldown_seconds: 0\n"
    registry.write_text(
        "services:\n"
        f"  fleet:\n    targets: [{', '.join(repr(s.url) for s in servers)}]\n{entry}"
        f"  one:\n    targets: [{same[0].url!r}]\n{entry}"
        f"  three:\n    targets: [{', '.join(repr(s.url) for s in same)}]\n{entry}")
    settings = Settings(REDIS_URL=redis_url, HEAPBOT_CONFIG=str(registry),
                        HEAPBOT_DATA_DIR=str(tmp_path / "data"))
    runtime = await Runtime.create(settings)
    try:
        yield runtime
    finally:
        await runtime.close()
        for s in [*servers, *same]:
            await s.stop()


async def fields(runtime: Runtime, snap: StoredSnapshot) -> set[str]:
    key = f"heapbot:{{{snap.service}}}:snap:{snap.id}"
    return {f.decode() for f in await runtime.store.redis.hkeys(key)}


async def snapshot_bytes(runtime: Runtime, snap: StoredSnapshot) -> int:
    key = f"heapbot:{{{snap.service}}}:snap:{snap.id}"
    return int(await runtime.store.redis.memory_usage(key, samples=0))


async def test_snapshots_past_the_newest_keep_only_the_merged_heap(fleet: Runtime) -> None:
    snaps = [(await fleet.capture("fleet", trigger="test", requested_by="U1")).snapshot
             for _ in range(3)]
    oldest, newest = await fields(fleet, snaps[0]), await fields(fleet, snaps[2])
    assert "merged:heap" in oldest and "merged:heap" in newest
    assert not any(f.endswith((":heap", ":goroutine")) for f in oldest if f.startswith("raw:"))
    assert {f"raw:{i}:heap" for i in range(3)} <= newest
    assert {f"raw:{i}:heap" for i in range(3)} <= await fields(fleet, snaps[1])
    # the aged snapshot still answers with pprof's merge of the three instances
    expected = merge_profiles([parse_profile((FIXTURES / h).read_bytes()) for h in HEAPS])
    loaded = await fleet.load_profile(snaps[0])
    for sample_type in ("inuse_space", "alloc_objects"):
        want, got = (top(p, TopOptions(sample_type, node_count=0)) for p in (expected, loaded))
        assert got.total == want.total
        assert [(r.function, r.flat, r.cum) for r in got.rows] == \
            [(r.function, r.flat, r.cum) for r in want.rows]
    assert await snapshot_bytes(fleet, snaps[0]) < await snapshot_bytes(fleet, snaps[2])


async def test_snapshots_stored_before_merged_profiles_stay_readable(fleet: Runtime) -> None:
    """An old-style snapshot (raw files only) is neither trimmed nor unreadable."""
    first = (await fleet.capture("fleet", trigger="test", requested_by="U1")).snapshot
    key = f"heapbot:{{fleet}}:snap:{first.id}"
    await fleet.store.redis.hdel(key, "merged:heap")  # as saved by an older heapbot
    for _ in range(3):
        await fleet.capture("fleet", trigger="test", requested_by="U1")
    assert {f"raw:{i}:heap" for i in range(3)} <= await fields(fleet, first)
    assert (await fleet.load_profile(first)).totals() == merge_profiles(
        [parse_profile((FIXTURES / h).read_bytes()) for h in HEAPS]).totals()


async def test_redis_bytes_per_capture_do_not_grow_with_instances(
        fleet: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    fleet.store.keep_raw = 0  # what every capture becomes once older than the newest few
    one = (await fleet.capture("one", trigger="test", requested_by="U1")).snapshot
    three = (await fleet.capture("three", trigger="test", requested_by="U1")).snapshot
    b1, b3 = await snapshot_bytes(fleet, one), await snapshot_bytes(fleet, three)
    assert b3 <= 1.3 * b1, (b1, b3)
    assert [i for i, _ in await fleet.store.raw_profiles("three", three.id)] == [MERGED]


async def test_per_instance_download_says_when_only_the_merged_profile_is_kept(
        fleet: Runtime) -> None:
    fleet.store.keep_raw = 0
    reply = await handlers.run(fleet, handlers.Invocation("top fleet --per-instance",
                                                          user_id="U1"))
    assert not reply.error, reply.sections
    [attachment] = reply.attachments
    assert attachment.filename.endswith("-merged-heap.pb.gz")
    assert "no longer kept" in attachment.title
    assert any("Only the merged profile of this capture is stored" in s for s in reply.sections)
    merged = parse_profile(attachment.content)
    expected = merge_profiles([parse_profile((FIXTURES / h).read_bytes()) for h in HEAPS])
    assert merged.totals() == expected.totals()
