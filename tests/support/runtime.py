"""Runtimes on the tests' real Redis, each on a registry written for its test.

The watch tests, the one-verdict test and the live flame graph and GC tests each wrote
a heapbot.yaml, created a Runtime on it and closed it afterwards, and the watch tests
started the real alert worker the same way twice; this module does it once for all.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from bot.alerts.context import WorkContext
from bot.alerts.worker import start_worker, stop_worker
from bot.jobs import JobQueue, QueueSettings
from bot.runtime import Runtime
from bot.settings import Settings
from bot.slack.client import build_web_client
from tests.support.demo import start_demo
from tests.support.registry import write_registry

UNREACHABLE = "http://127.0.0.1:9"  # discard port: nothing answers (stored-history tests)


def service_registry(tmp_path: Path, name: str, targets: Sequence[str],
                     **keys: object) -> Path:
    """tmp_path/heapbot.yaml with one service ``name``: its targets and other registry keys."""
    return write_registry(tmp_path / "heapbot.yaml", {name: targets}, **keys)


@asynccontextmanager
async def runtime_on(registry: Path, redis_url: str) -> AsyncIterator[Runtime]:
    """A Runtime on ``registry`` and the given Redis, its data dir beside the registry."""
    rt = await Runtime.create(Settings(config_path=registry, redis_url=redis_url,
                                       data_dir=registry.parent / "data"))
    try:
        yield rt
    finally:
        await rt.close()


async def demo_runtime(tmp_path: Path, redis_url: str, demo_binary: Path, scenarios: str,
                       rate: float, ready: dict[str, int] | None = None,
                       env: dict[str, str] | None = None) -> AsyncIterator[Runtime]:
    """A Runtime on one real demo instance running ``scenarios`` (the live leak tests).

    The demo keeps Go's default MemProfileRate (512 KiB per sample), as a real service does;
    ``env`` is added to its environment (GOGC=off: no GC runs unless a capture asks).
    """
    demo = start_demo(demo_binary, scenarios=scenarios, rate=rate, ready=ready, env=env)
    try:
        async with runtime_on(service_registry(tmp_path, "demo", [demo.url],
                                               cooldown_seconds=0), redis_url) as rt:
            yield rt
    finally:
        demo.stop()


@dataclass
class WatchWorker:
    """A Runtime with this replica's real alert worker running beside it."""

    runtime: Runtime
    worker: asyncio.Task[None]

    async def stop(self) -> None:
        await stop_worker(self.worker)
        await self.runtime.close()


async def start_watch_worker(registry: Path, redis_url: str, slack_api_url: str
                             ) -> WatchWorker:
    """The worker polls watches every 0.1 s (1 s intervals allowed) and posts to the Slack
    stand-in at ``slack_api_url``; the caller also sets HEAPBOT_WATCH_MIN_INTERVAL_SECONDS=1
    for the `watch` command, and calls ``stop()``."""
    settings = Settings(config_path=registry, redis_url=redis_url,
                        slack_bot_token=SecretStr("xoxb-test"), slack_api_url=slack_api_url)
    rt = await Runtime.create(settings)
    config = QueueSettings(claim_idle_seconds=5, watch_min_interval_seconds=1,
                           watch_poll_seconds=0.1, consumer_name="solo")
    return WatchWorker(rt, start_worker(rt, settings, build_web_client(settings), config=config))


def work_context(*, runtime: Runtime | None = None, queue: JobQueue | None = None,
                 consumer: str = "heapbot") -> WorkContext:
    """What the worker hands a job or the watch scheduler, with no settings and no Slack:
    a scheduler needs only the queue, a watch's verdict only the Runtime."""
    return WorkContext(runtime=runtime, settings=None, config=QueueSettings(),  # type: ignore[arg-type]
                       queue=queue, slack=None, consumer=consumer)  # type: ignore[arg-type]
