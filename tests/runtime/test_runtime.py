"""The Runtime over real parts: demo Go instances over HTTP, a real Redis, real handlers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from bot.capture import Capturer
from bot.errors import NotFoundError, UsageError
from bot.registry import Registry, parse_registry
from bot.runtime import Runtime
from bot.store import SnapshotStore
from tests.capture.test_capture import HttpServer


def registry_of(targets: list[str], **options: Any) -> Registry:
    entry = {"targets": targets, "cooldown_seconds": 0, "aliases": ["dm"], **options}
    return parse_registry({"services": {"demo": entry}}, Path("heapbot.yaml"))


def make_runtime(redis_url: str, registry: Registry) -> Runtime:
    return Runtime(registry=registry, store=SnapshotStore.from_url(redis_url),
                   capturer=Capturer(backoff_seconds=0.05))


@pytest.fixture
async def runtimes(redis_url: str) -> AsyncIterator[Callable[[Registry], Runtime]]:
    made: list[Runtime] = []

    def build(registry: Registry) -> Runtime:
        runtime = make_runtime(redis_url, registry)
        made.append(runtime)
        return runtime

    yield build
    for runtime in made:
        await runtime.close()


class CountingProxy:
    """A real HTTP proxy in front of a demo instance; counts what heapbot fetched."""

    def __init__(self, upstream: str, delay: float = 0.0) -> None:
        self.upstream = upstream
        self.delay = delay
        self.server = HttpServer(self._forward)
        self.client = httpx.AsyncClient(timeout=30)

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(self.delay)
        answer = await self.client.get(self.upstream + request.path_qs)
        return web.Response(status=answer.status_code, body=answer.content)

    @property
    def heap_fetches(self) -> int:
        return self.server.hits["/debug/pprof/heap"]

    async def start(self) -> CountingProxy:
        await self.server.start()
        return self

    async def stop(self) -> None:
        await self.server.stop()
        await self.client.aclose()


@pytest.fixture
async def proxies(demo_cluster: list[Any]
                  ) -> AsyncIterator[Callable[..., Awaitable[list[CountingProxy]]]]:
    started: list[CountingProxy] = []

    async def start(delay: float = 0.0) -> list[CountingProxy]:
        for demo in demo_cluster:
            started.append(await CountingProxy(demo.url, delay).start())
        return started[-len(demo_cluster):]

    yield start
    for proxy in started:
        await proxy.stop()


async def test_capture_stores_every_instance(runtimes: Any, demo_cluster: list[Any]) -> None:
    runtime = runtimes(registry_of([d.url for d in demo_cluster]))
    captured = await runtime.capture("DM", requested_by="U1")
    snap = captured.snapshot
    assert captured.stored and not captured.reused
    assert [i.target for i in snap.instances] == [d.url for d in demo_cluster]
    assert all(i.ok and i.kinds == ["heap", "goroutine", "memstats"] for i in snap.instances)
    # merged numbers are the sums of what each instance reported
    per_instance = snap.memstats_per_instance
    assert snap.memstats["HeapInuse"] == sum(m["HeapInuse"] for m in per_instance.values())
    assert captured.goroutines is not None
    assert snap.goroutine_total == sum(i.goroutines or 0 for i in snap.instances) > 0
    assert snap.summary is not None and snap.summary.goroutine_total == snap.goroutine_total
    assert any(g.wait_function == "main.blockedSendResult" for g in snap.summary.goroutine_groups)
    history = await runtime.history("demo")
    assert [s.id for s in history] == [snap.id] and history[0].requested_by == "U1"
    for index, demo in enumerate(demo_cluster):
        raw = await runtime.store.raw_profile("demo", snap.id, index, "memstats")
        assert b"# runtime.MemStats" in raw and demo.url == snap.instances[index].target


async def test_cooldown_reuses_the_latest_capture(runtimes: Any, demo_service: Any) -> None:
    runtime = runtimes(registry_of([demo_service.url], cooldown_seconds=60))
    first = await runtime.capture("demo")
    again = await runtime.capture("demo")
    assert again.reused and again.snapshot.id == first.snapshot.id
    assert 0 <= again.age_seconds < 60
    assert again.goroutines is not None and again.goroutines.total == first.goroutines.total
    forced = await runtime.capture("demo", force=True)
    assert not forced.reused and forced.snapshot.id != first.snapshot.id


async def test_twenty_concurrent_requests_fetch_each_instance_once(runtimes: Any,
                                                                   proxies: Any) -> None:
    fronts = await proxies(delay=0.2)
    runtime = runtimes(registry_of([p.server.url for p in fronts]))
    results = await asyncio.gather(*(runtime.capture("demo", requested_by=f"U{i}")
                                     for i in range(20)))
    assert {r.snapshot.id for r in results} == {results[0].snapshot.id}
    assert [p.heap_fetches for p in fronts] == [1, 1, 1]
    assert await runtime.store.count("demo") == 1


async def test_replicas_share_one_capture_through_the_redis_lock(runtimes: Any,
                                                                 proxies: Any) -> None:
    fronts = await proxies(delay=0.3)
    registry = registry_of([p.server.url for p in fronts])
    replicas = [runtimes(registry) for _ in range(3)]  # separate connections and capturers
    results = await asyncio.gather(*(replicas[i % 3].capture("demo") for i in range(12)))
    assert len({r.snapshot.id for r in results}) == 1
    assert [p.heap_fetches for p in fronts] == [1, 1, 1]
    assert sum(r.shared for r in results) == 11


async def test_resolve_since(runtimes: Any, demo_service: Any) -> None:
    runtime = runtimes(registry_of([demo_service.url]))
    with pytest.raises(NotFoundError):
        await runtime.resolve_since("demo", "previous")
    first = (await runtime.capture("demo")).snapshot
    await runtime.add_deploy("demo", "v2", by="U1")
    second = (await runtime.capture("demo")).snapshot
    third = (await runtime.capture("demo")).snapshot
    assert (await runtime.resolve_since("demo", "previous", third)).id == second.id
    assert (await runtime.resolve_since("demo", "previous", second)).id == first.id
    assert (await runtime.resolve_since("demo", "deploy", third)).id == second.id
    assert (await runtime.resolve_since("demo", first.id, third)).id == first.id
    assert (await runtime.resolve_since("demo", "0s", third)).id == second.id
    with pytest.raises(NotFoundError) as err:
        await runtime.resolve_since("demo", "2d", third)
    assert "oldest stored capture" in err.value.user_message()
    with pytest.raises(UsageError):
        await runtime.resolve_since("demo", "yesterday-ish", third)
    summaries = await runtime.summaries("demo")
    assert [s.snapshot_id for s in summaries] == [first.id, second.id, third.id]


async def test_history_survives_redis_restart_between_captures(
        runtimes: Any, redis_server: Any, demo_service: Any) -> None:
    runtime = runtimes(registry_of([demo_service.url]))
    first = await runtime.capture("demo")
    redis_server.stop()
    down = await runtime.capture("demo")  # Redis is down: the capture still answers
    assert not down.stored and down.store_error and "cannot be reached" in down.store_error
    redis_server.start()
    second = await runtime.capture("demo")
    assert second.stored
    assert [s.id for s in await runtime.history("demo")] == [second.snapshot.id,
                                                            first.snapshot.id]


@pytest.mark.skipif(
    not hasattr(__import__("bot.pprof", fromlist=["parse_profile"]), "parse_profile"),
    reason="build ids come from bot.pprof.parse_profile (engine not landed yet)")
async def test_rebuilt_binary_is_detected_as_a_deploy(runtimes: Any, demo_service: Any) -> None:
    from tests.support.demo import build_demo, start_demo

    other = start_demo(build_demo("v2-heapbot-test"), "leakmap")
    proxy = await CountingProxy(demo_service.url).start()
    try:
        runtime = runtimes(registry_of([proxy.server.url]))
        before = await runtime.capture("demo")
        proxy.upstream = other.url  # the same target now serves the rebuilt binary
        after = await runtime.capture("demo")
        assert before.snapshot.build_id and after.snapshot.build_id
        assert before.snapshot.build_id != after.snapshot.build_id
        assert [m.build_id for m in after.deploys_detected] == [after.snapshot.build_id]
        deploys = await runtime.deploys("demo")
        assert deploys[-1].previous_build_id == before.snapshot.build_id
        assert (await runtime.resolve_since("demo", "deploy")).id == after.snapshot.id
    finally:
        await proxy.stop()
        other.stop()


async def test_embedded_redis_keeps_history_across_restarts(tmp_path: Path,
                                                            demo_service: Any) -> None:
    from bot.settings import Settings

    config = tmp_path / "heapbot.yaml"
    config.write_text(f"services:\n  demo:\n    targets: [\"{demo_service.url}\"]\n")
    settings = Settings(config_path=config, data_dir=tmp_path / "data", redis_url=None)
    runtime = await Runtime.create(settings)
    assert runtime.embedded is not None and runtime.embedded.started_here
    first = await runtime.capture("demo")
    await runtime.close()  # heapbot exits: the server stays up for the next process
    assert runtime.embedded.answering()
    assert runtime.embedded.stop() is True  # `heapbot store stop`: stopped cleanly
    assert not runtime.embedded.answering()

    runtime = await Runtime.create(settings)  # heapbot restarts: a new server, same data
    second = await runtime.capture("demo", force=True)
    reuser = await Runtime.create(settings)  # a second heapbot process reuses the server
    try:
        assert reuser.embedded is not None and not reuser.embedded.started_here
        assert [s.id for s in await reuser.history("demo")] == [second.snapshot.id,
                                                               first.snapshot.id]
    finally:
        await reuser.close()
    # the embedded server alone restarts (forced: this heapbot still uses it)
    await asyncio.to_thread(lambda: runtime.embedded.stop(force=True))
    await runtime.close()
    runtime = await Runtime.create(settings)
    try:
        assert [s.id for s in await runtime.history("demo")] == [second.snapshot.id,
                                                                first.snapshot.id]
    finally:
        await runtime.close()


async def test_no_registry_file_still_starts(tmp_path: Path, redis_url: str) -> None:
    from bot.settings import Settings

    settings = Settings(config_path=tmp_path / "absent.yaml", data_dir=tmp_path,
                        redis_url=redis_url)
    runtime = await Runtime.create(settings)
    try:
        assert len(runtime.registry) == 0
        assert await runtime.store.ping() >= 0
    finally:
        await runtime.close()



async def test_joiners_survive_the_leader_being_cancelled(runtimes: Any, proxies: Any) -> None:
    fronts = await proxies(delay=0.5)
    runtime = runtimes(registry_of([p.server.url for p in fronts]))
    leader = asyncio.create_task(runtime.capture("demo"))
    await asyncio.sleep(0.05)
    joiners = [asyncio.create_task(runtime.capture("demo")) for _ in range(5)]
    await asyncio.sleep(0.05)
    leader.cancel()
    results = await asyncio.gather(*joiners)
    assert leader.cancelled()
    assert len({r.snapshot.id for r in results}) == 1
    assert all(r.snapshot.answered == 3 for r in results)


async def test_a_failed_capture_fails_every_waiting_request(runtimes: Any) -> None:
    from bot.errors import CaptureError
    from tests.support.redis import free_port

    runtime = runtimes(registry_of([f"http://127.0.0.1:{free_port()}"]))
    outcomes = await asyncio.gather(*(runtime.capture("demo") for _ in range(5)),
                                    return_exceptions=True)
    assert all(isinstance(o, CaptureError) for o in outcomes)
    assert await runtime.store.count("demo") == 0


async def test_stored_summary_agrees_with_the_engine_on_stored_bytes(
        runtimes: Any, demo_cluster: list[Any]) -> None:
    from bot.analysis.top import TopOptions, top

    runtime = runtimes(registry_of([d.url for d in demo_cluster]))
    captured = await runtime.capture("demo")
    reloaded = await runtime.load_profile(captured.snapshot)  # merged from stored raw bytes
    summary = (await runtime.summaries("demo"))[-1]
    for sample_type in ("inuse_space", "inuse_objects", "alloc_space"):
        fresh = top(captured.heap, TopOptions(sample_type=sample_type))
        stored = top(reloaded, TopOptions(sample_type=sample_type))
        assert fresh.total == stored.total == summary.heap.totals[sample_type]
        assert [r.function for r in fresh.rows[:10]] == [r.function for r in stored.rows[:10]]
        flat = {f.function: f.flat for f in summary.heap.functions[sample_type]}
        for row in stored.rows[:10]:
            assert flat[row.function] == row.flat  # top-10 by flat is in the top-100
    assert summary.build_id == captured.snapshot.build_id != ""
