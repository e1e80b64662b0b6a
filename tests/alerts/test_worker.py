"""The worker loop on a real Redis: acks what succeeds, retries and dead-letters what cannot."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.alerts.worker import start_worker, stop_worker
from bot.jobs import JobQueue, QueueSettings
from bot.settings import Settings


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens once the socket is closed


@pytest.fixture
async def runtime(tmp_path: Path, redis_url: str) -> AsyncIterator[Any]:
    from bot.runtime import Runtime

    config = tmp_path / "heapbot.yaml"
    config.write_text("services:\n  gone:\n"
                      f"    targets: [\"http://127.0.0.1:{closed_port()}\"]\n"
                      "    timeout_seconds: 2\n")
    rt = await Runtime.create(Settings(config_path=config, redis_url=redis_url))
    try:
        yield rt
    finally:
        await rt.close()


async def wait_until(predicate: Any, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(0.1)
    raise AssertionError("condition not met in time")


async def test_failing_job_is_retried_then_dead_lettered(runtime: Any) -> None:
    config = QueueSettings(claim_idle_seconds=0.3, max_deliveries=2, consumer_name="w1")
    queue = config.queue(runtime.store.redis)
    worker = start_worker(runtime, None, None, config=config)
    try:
        job_id = await queue.enqueue("capture", {"service": "gone", "reason": "ci"})
        unknown_id = await queue.enqueue("no-such-kind", {})

        async def both_dead() -> bool:
            return len(await queue.dead_jobs()) == 2

        await wait_until(both_dead)
        dead = {d["job_id"]: d for d in await queue.dead_jobs()}
        # The capture failed on both deliveries; its reason is the user-facing message.
        assert "No instance of `gone` answered" in dead[job_id]["reason"]
        assert "connection refused" in dead[job_id]["reason"]
        assert "no handler for job kind 'no-such-kind'" in dead[unknown_id]["reason"]
        assert await queue.depth() == 0
    finally:
        await stop_worker(worker)


async def test_deploy_job_records_a_marker(runtime: Any, tmp_path: Path) -> None:
    config = QueueSettings(claim_idle_seconds=5, consumer_name="w1")
    queue: JobQueue = config.queue(runtime.store.redis)
    worker = start_worker(runtime, None, None, config=config)
    try:
        await queue.enqueue("deploy", {"service": "gone", "version": "v9.9.9", "by": "ci"})

        async def marked() -> bool:
            return bool(await runtime.store.deploys("gone"))

        await wait_until(marked)
        (marker,) = await runtime.store.deploys("gone")
        assert (marker.version, marker.by) == ("v9.9.9", "ci")
        await wait_until(lambda: _zero(queue))
    finally:
        await stop_worker(worker)


async def _zero(queue: JobQueue) -> bool:
    return await queue.depth() == 0


async def test_cancel_stops_consumer_and_scheduler(runtime: Any) -> None:
    config = QueueSettings(claim_idle_seconds=0.3, consumer_name="w-stop")
    queue = config.queue(runtime.store.redis)
    worker = start_worker(runtime, None, None, config=config)
    await asyncio.sleep(0.5)
    worker.cancel()
    done, _ = await asyncio.wait({worker}, timeout=25)
    assert worker in done
    # Nothing in this process reads the queue any more: a new job stays waiting.
    await queue.enqueue("deploy", {"service": "gone", "version": "v1"})
    await asyncio.sleep(1.0)
    assert await queue.depth() == 1
    assert await runtime.store.deploys("gone") == []
    tasks = {t.get_name() for t in asyncio.all_tasks()}
    assert not tasks & {"job-consumer", "watch-scheduler", "job-heartbeat"}


async def test_stop_worker_leaves_nothing_running(runtime: Any) -> None:
    """What the per-test guard relies on: a running worker is listed, a stopped one is not."""
    from bot.alerts.lifecycle import live_tasks

    config = QueueSettings(claim_idle_seconds=0.3, consumer_name="w-listed")
    worker = start_worker(runtime, None, None, config=config)
    try:
        await wait_until(lambda: _listed({"worker w-listed", "job consumer w-listed",
                                          "watch scheduler w-listed"}))
    finally:
        stopped = await stop_worker(worker, timeout=25)
    assert stopped and worker.done()
    assert not [what for what in live_tasks().values() if "w-listed" in what]


async def _listed(expected: set[str]) -> bool:
    from bot.alerts.lifecycle import live_tasks

    return expected <= set(live_tasks().values())


async def test_worker_recreates_its_group_after_redis_lost_it(runtime: Any) -> None:
    """A FLUSHDB (or a Redis restarted without its data) drops the consumer group; the
    worker makes it again and runs a job that a producer with a stale cache XADDs."""
    redis = runtime.store.redis
    config = QueueSettings(claim_idle_seconds=5, consumer_name="w-regroup")
    queue = config.queue(redis)  # creates the group once and remembers it did
    worker = start_worker(runtime, None, None, config=config)
    try:
        await queue.enqueue("deploy", {"service": "gone", "version": "v1", "by": "ci"})
        await wait_until(lambda: _versions(runtime, ["v1"]))
        await redis.flushdb()
        # this queue object still thinks the group exists: it only XADDs
        assert await queue.enqueue("deploy", {"service": "gone", "version": "v2", "by": "ci"})
        await wait_until(lambda: _versions(runtime, ["v2"]))
        await wait_until(lambda: _zero(queue))
    finally:
        await stop_worker(worker)


async def _versions(runtime: Any, expected: list[str]) -> bool:
    return [m.version for m in await runtime.store.deploys("gone")] == expected


def test_guard_finds_a_worker_process_left_running(tmp_path: Path) -> None:
    """The per-test guard sees a `python -m bot.alerts.worker` child that is still running."""
    import os
    import subprocess
    import sys

    from tests.support.redis import bot_child_processes

    env = {**os.environ, "REDIS_URL": f"redis://127.0.0.1:{closed_port()}/0",
           "HEAPBOT_CONFIG": str(tmp_path / "none.yaml"), "HEAPBOT_DATA_DIR": str(tmp_path)}
    process = subprocess.Popen([sys.executable, "-m", "bot.alerts.worker"], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert "bot.alerts.worker" in bot_child_processes().get(process.pid, "")
    finally:
        process.kill()
        process.wait(10)
    assert process.pid not in bot_child_processes()


async def test_a_replica_claims_no_more_stale_jobs_than_it_can_start(runtime: Any) -> None:
    """Jobs left by a dead replica are taken over by two live ones. A replica that claimed
    more than its free slots left the extra job waiting without a heartbeat: the other
    replica took it over after claim_idle_seconds, and both ran it."""
    from bot.alerts.worker import WorkContext, Worker

    config = QueueSettings(claim_idle_seconds=1, concurrency=2)
    queue = config.queue(runtime.store.redis)
    gate = asyncio.Event()
    runs: list[tuple[str, str]] = []

    def handler(consumer: str) -> Any:
        async def run(ctx: Any, job: Any) -> str:
            runs.append((consumer, job.payload["name"]))
            if job.payload["name"] != "quick":
                await gate.wait()
            return "done"
        return run

    names = ["hold-1", "quick", "hold-2", "hold-3"]
    for name in names:
        await queue.enqueue("test", {"name": name})
    assert len(await queue.read("dead-replica", count=4, block_ms=100)) == 4
    await asyncio.sleep(1.2)  # idle past claim_idle_seconds: stale

    def start(name: str, stop: asyncio.Event) -> asyncio.Task[None]:
        ctx = WorkContext(runtime=runtime, settings=None, config=config,
                          queue=config.queue(runtime.store.redis), slack=None, consumer=name)
        return asyncio.create_task(Worker(ctx, {"test": handler(name)}, stop=stop).run())

    async def pending_for(consumer: str) -> int:
        rows = await runtime.store.redis.xpending_range(queue.stream, queue.group, "-", "+",
                                                        10, consumername=consumer)
        return len(rows)

    stop = asyncio.Event()
    workers = [start("replica-a", stop)]
    try:
        # A takes hold-1 and quick, then (quick done) one more: hold-2 fills its slots.
        await wait_until(lambda: _ran(runs, "hold-2"))
        workers.append(start("replica-b", stop))
        await asyncio.sleep(2.5)  # longer than claim_idle_seconds: B claims what is stale
        gate.set()

        async def all_done() -> bool:
            return await queue.depth() == 0

        await wait_until(all_done)
        await asyncio.sleep(0.5)  # a second run of a job would have started by now
        assert sorted(name for _, name in runs) == sorted(names), runs  # each ran once
        assert await pending_for("replica-a") == await pending_for("replica-b") == 0
    finally:
        gate.set()
        stop.set()
        for task in workers:
            await stop_worker(task)


async def _ran(runs: list[tuple[str, str]], name: str) -> bool:
    return any(job == name for _, job in runs)
