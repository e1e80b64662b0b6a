"""A fleet capture: decoded in worker processes, folded as each instance arrives.

Six real HTTP instances serve the three fixture heaps twice; the capture's merged
heap must equal `go tool pprof -top` given the same six files.
"""

from __future__ import annotations

import pytest

from bot import workpool
from bot.analysis.top import TopOptions, top
from bot.capture import POOL_FROM_INSTANCES, Capturer
from tests.golden.pprof_tool import go_or_none, parse_top, run_pprof
from tests.pprof.test_pprof_merge import EXACT
from tests.store.test_store_bounded import FIXTURES, HEAPS, serving

pytestmark = pytest.mark.skipif(go_or_none() is None, reason="no Go toolchain")


async def test_fleet_capture_is_decoded_in_workers_and_merged_like_pprof(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEAPBOT_WORKER_PROCESSES", "2")
    files = HEAPS * 2
    assert len(files) >= POOL_FROM_INSTANCES
    servers = [await serving(name).start() for name in files]
    from tests.capture.test_capture import service_of

    capturer = Capturer()
    try:
        result = await capturer.capture(service_of([s.url for s in servers]))
    finally:
        await capturer.aclose()
        for s in servers:
            await s.stop()
    assert workpool._pool is not None  # the decodes went to worker processes
    assert len(result.ok_instances) == 6
    assert all(i.heap_profile is None and i.build_id for i in result.instances)  # dropped
    paths = [str(FIXTURES / f) for f in files]
    for sample_type in ("inuse_space", "alloc_objects"):
        expected = parse_top(run_pprof(["-top", *EXACT, f"-sample_index={sample_type}",
                                        *paths]))
        report = top(result.heap, TopOptions(sample_type))
        assert report.total == expected.total
        assert [(r.function, r.flat, r.cum) for r in report.rows] == expected.rows


def test_a_broken_pool_falls_back_to_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    monkeypatch.setenv("HEAPBOT_WORKER_PROCESSES", "2")
    monkeypatch.setattr(workpool, "_broken_until", 0.0)

    class Broken:
        def submit(self, *args: object, **kwargs: object) -> object:
            raise RuntimeError("cannot start a worker")

    monkeypatch.setattr(workpool, "_get_pool", lambda: Broken())
    data = (FIXTURES / "heap_1.pb.gz").read_bytes()
    profile = asyncio.run(workpool.decode_heap(data, 1 << 20))
    assert profile.num_samples > 0
    assert workpool._broken_until > 0


def test_the_cli_decodes_in_threads_on_two_cpus_and_the_server_in_workers(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HEAPBOT_WORKER_PROCESSES", raising=False)
    monkeypatch.setattr(workpool, "_one_shot", False)
    monkeypatch.setattr(workpool.os, "cpu_count", lambda: 2)
    assert workpool.processes() == 2  # the server: workers keep Slack acks fast
    workpool.one_shot()
    assert workpool.processes() == 0  # one user's command on 2 CPUs: threads
    monkeypatch.setattr(workpool.os, "cpu_count", lambda: 8)
    assert workpool.processes() == 4
    monkeypatch.setattr(workpool.os, "cpu_count", lambda: 2)
    monkeypatch.setenv("HEAPBOT_WORKER_PROCESSES", "2")
    assert workpool.processes() == 2  # the setting wins
