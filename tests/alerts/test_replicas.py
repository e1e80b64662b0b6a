"""Several heapbot replicas (separate worker processes) against one Redis.

Each replica is `python -m bot.alerts.worker`, its own process with its own Redis
connections and consumer name, talking to the demo Go service and to the
Slack stand-in over real HTTP.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from bot.alerts.watches import list_ticks
from bot.jobs import DEAD_LETTER, GROUP, STREAM, JobQueue
from bot.settings import Settings
from tests.support.alerts import CHANNEL, text_of, thread, top_level, write_demo_registry

ROOT = Path(__file__).resolve().parents[2]
CLAIM_IDLE_SECONDS = 2


class Replicas:
    """Worker processes started by a test; every one is stopped at the end."""

    def __init__(self, tmp_path: Path, env: dict[str, str]) -> None:
        self.tmp_path = tmp_path
        self.env = env
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str) -> subprocess.Popen[bytes]:
        env = {**os.environ, **self.env, "HEAPBOT_WORKER_NAME": name}
        log = open(self.tmp_path / f"{name}.log", "wb")  # noqa: SIM115 - closed below
        process = subprocess.Popen([sys.executable, "-m", "bot.alerts.worker"], cwd=ROOT, env=env,
                                   stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.processes[name] = process
        return process

    def log(self, name: str) -> str:
        return (self.tmp_path / f"{name}.log").read_text(errors="replace")

    def stop_all(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)


@pytest.fixture
def replicas(tmp_path: Path, redis_url: str, demo_service: Any,
             slack_standin: Any) -> Iterator[Replicas]:
    config = write_demo_registry(tmp_path, [demo_service.url])
    config.write_text(config.read_text().replace("cooldown_seconds: 120", "cooldown_seconds: 0"))
    env = {
        "HEAPBOT_CONFIG": str(config), "REDIS_URL": redis_url,
        "SLACK_BOT_TOKEN": "xoxb-test", "SLACK_API_URL": slack_standin.api_url,
        "HEAPBOT_JOB_CLAIM_IDLE_SECONDS": str(CLAIM_IDLE_SECONDS),
        "HEAPBOT_WATCH_MIN_INTERVAL_SECONDS": "1", "HEAPBOT_WATCH_POLL_SECONDS": "0.1",
        "HEAPBOT_LOG_LEVEL": "INFO",
    }
    group = Replicas(tmp_path, env)
    try:
        yield group
    finally:
        group.stop_all()


@pytest.fixture
async def runtime(replicas: Replicas, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Any]:
    """The test's own Runtime on the same registry and Redis (to issue commands and check)."""
    from bot.runtime import Runtime

    monkeypatch.setenv("HEAPBOT_WATCH_MIN_INTERVAL_SECONDS", "1")
    settings = Settings(config_path=Path(replicas.env["HEAPBOT_CONFIG"]),
                        redis_url=replicas.env["REDIS_URL"],
                        slack_bot_token=SecretStr("xoxb-test"),
                        slack_api_url=replicas.env["SLACK_API_URL"])
    rt = await Runtime.create(settings)
    try:
        yield rt
    finally:
        await rt.close()


@pytest.mark.slow
async def test_each_watch_tick_runs_once_across_three_replicas(
        replicas: Replicas, runtime: Any, slack_standin: Any) -> None:
    import handlers

    for name in ("replica-a", "replica-b", "replica-c"):
        replicas.start(name)
    from bot.slack.text import plain_text

    reply = await handlers.run(runtime, handlers.Invocation(
        plain_text("watch demo every 2s in <#C0DEMO|demo-oncall> --goroutines 20"),
        user_id="U0ALICE",
        channel_id="C0OTHER", source="slack"))
    assert not reply.error, reply.sections
    assert reply.title == "Watching demo every 2s"
    listed = await handlers.run(runtime, handlers.Invocation("watches", source="slack"))
    assert listed.table is not None and listed.table.rows[0][:3] == ["demo", "2s", CHANNEL]

    redis = runtime.store.redis
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(await list_ticks(redis, "demo")) < 5:
        await asyncio.sleep(0.2)
    stopped = await handlers.run(runtime, handlers.Invocation("unwatch demo", source="slack"))
    assert stopped.title == "Stopped watching demo"
    queue = JobQueue(redis)
    while time.monotonic() < deadline and await queue.depth():
        await asyncio.sleep(0.2)
    await asyncio.sleep(0.5)

    ticks = await list_ticks(redis, "demo")
    slots = [slot for slot, _ in ticks]
    assert len(slots) >= 5
    assert len(set(slots)) == len(slots), f"a tick ran twice: {slots}"
    assert slots == list(range(slots[0], slots[0] + len(slots))), f"a tick was skipped: {slots}"
    # Every tick has a stored capture, and no capture for the watch that no tick accounts
    # for. (A tick may join a capture already in flight — a slow previous tick's, or a
    # thread's `top` — through the Runtime's single-flight, in-process or across replicas.)
    tick_snaps = [snap for _, snap in ticks]
    stored = {s.id: s for s in await runtime.store.list("demo", limit=0)}
    assert set(tick_snaps) <= set(stored)
    assert {i for i, s in stored.items() if s.trigger == "watch"} <= set(tick_snaps)
    # All three replicas ran their schedulers the whole time (none crashed or was idle).
    assert all(p.poll() is None for p in replicas.processes.values())
    for name in replicas.processes:
        assert "job worker " + name + " started" in replicas.log(name)
    # The demo leaks on every tick (its blocked workers are proven leaked: watch ticks ask
    # for a fresh heap and /goroutineleak, issue 12), but the thread opened once.
    await slack_standin.wait_for(lambda: top_level(slack_standin), timeout=30)
    (summary,) = top_level(slack_standin)
    assert "Watch: Leak likely" in text_of(summary)
    assert "main.blockedSendResult" in text_of(summary)
    assert await redis.xlen(DEAD_LETTER) == 0


@pytest.mark.slow
async def test_job_of_a_killed_replica_is_finished_by_another(
        replicas: Replicas, runtime: Any, slack_standin: Any) -> None:
    redis = runtime.store.redis
    queue = JobQueue(redis)
    # Slack answers the first post with 429 Retry-After 60: replica A is stuck mid-job,
    # after its capture and before the summary, when it is killed.
    slack_standin.fail("chat.postMessage", status=429, retry_after=60, times=1)
    victim = replicas.start("replica-a")
    job_payload = {  # what /hooks/alertmanager queues for a firing group
        "source": "alertmanager", "service": "demo", "status": "firing",
        "incident_key": "am:test-kill", "title": "HeapGrowing", "severity": "page",
        "summary": "heap grew", "starts_at": time.time(), "alerts": 1, "link": "",
    }
    job_id = await queue.enqueue("alert", job_payload, dedupe_key="kill-test")
    await slack_standin.wait_for(
        lambda: [r for r in slack_standin.requests if r.method == "chat.postMessage"],
        timeout=60)
    pending = await redis.xpending_range(STREAM, GROUP, "-", "+", 10)
    assert [(p["message_id"].decode(), p["consumer"].decode()) for p in pending] == [
        (job_id, "replica-a")]
    # While A is alive its heartbeat keeps the job: B, running, must not steal it.
    replicas.start("replica-b")
    await asyncio.sleep(CLAIM_IDLE_SECONDS * 2.5)
    pending = await redis.xpending_range(STREAM, GROUP, "-", "+", 10)
    assert [p["consumer"].decode() for p in pending] == ["replica-a"]
    assert len(top_level(slack_standin)) == 0

    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=10)
    replicas.start("replica-c")

    def thread_done() -> list[Any] | None:
        tops = top_level(slack_standin)
        if not tops:
            return None
        replies = [p for p in slack_standin.posts(CHANNEL) if p.get("thread_ts")]
        files = [f for f in slack_standin.files()]
        return replies if len(files) >= 2 else None

    await slack_standin.wait_for(thread_done, timeout=90)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and await queue.depth():
        await asyncio.sleep(0.2)
    assert await queue.depth() == 0
    assert len(top_level(slack_standin)) == 1
    ts = next(p for p in slack_standin.posts(CHANNEL) if p.get("thread_ts"))["thread_ts"]
    assert len(thread(slack_standin, ts)) >= 4
    # The capture A took before dying was reused, not repeated.
    alert_snaps = [s for s in await runtime.store.list("demo", limit=0) if s.trigger == "alert"]
    assert len(alert_snaps) == 1
    taken_over = [n for n in ("replica-b", "replica-c") if f"took over job {job_id}"
                  in replicas.log(n)]
    assert len(taken_over) == 1, {n: replicas.log(n)[-2000:] for n in ("replica-b", "replica-c")}
    assert await redis.xlen(DEAD_LETTER) == 0
