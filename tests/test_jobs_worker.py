"""The worker loop on a real Redis: acks what succeeds, retries and dead-letters what cannot."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.jobs import JobQueue, QueueSettings
from bot.settings import Settings
from bot.worker import start_worker


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
        worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await worker


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
        worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await worker


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
