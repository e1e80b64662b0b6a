"""Redis down at start, down in the middle of a capture, restarted: nothing lost.

The Redis here is the test-owned redis-server (tests/support/redis.py), really
stopped and restarted on its port with its append-only file; the profiled
service is a real HTTP server serving recorded profiles of the demo. A replica
killed in the middle of a job is covered by
tests/alerts/test_replicas.py::test_job_of_a_killed_replica_is_finished_by_another.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp import web

from bot.alerts.context import WorkContext
from bot.alerts.worker import Worker, run_deploy, stop_worker
from bot.capture import Capturer
from bot.jobs import QueueSettings
from bot.registry import Registry, ServiceConfig
from bot.runtime import Runtime
from bot.settings import Settings
from bot.store import SnapshotStore
from handlers import Invocation, run
from tests.support.redis import RedisServer, free_port

FIXTURES = Path(__file__).parents[1] / "fixtures"
HEAP = (FIXTURES / "heap_1.pb.gz").read_bytes()
GOROUTINE = (FIXTURES / "goroutine.pb.gz").read_bytes()
HEAP_DEBUG1 = (FIXTURES / "heap_debug1.txt").read_bytes()
UNREACHABLE = "cannot be reached"
DELAY = web.AppKey("delay", list)


async def _pprof(request: web.Request) -> web.StreamResponse:
    delay = request.app[DELAY]
    if delay and delay[0]:
        await asyncio.sleep(delay[0])
    kind = request.match_info["kind"]
    body = GOROUTINE if kind == "goroutine" else (
        HEAP_DEBUG1 if request.query.get("debug") == "1" else HEAP)
    return web.Response(body=body, content_type="application/octet-stream")


@pytest.fixture
async def pprof_service() -> AsyncIterator[tuple[str, list[float]]]:
    """A pprof endpoint serving the demo's recorded profiles; ``delay[0]`` slows it down."""
    delay: list[float] = [0.0]
    app = web.Application()
    app[DELAY] = delay
    app.router.add_get("/debug/pprof/{kind}", _pprof)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}", delay
    finally:
        await runner.cleanup()


def _runtime(url: str, target: str) -> Runtime:
    service = ServiceConfig(name="payments", targets=(target,), cooldown_seconds=0,
                            timeout_seconds=10)
    store = SnapshotStore.from_url(url)
    return Runtime(registry=Registry(services={"payments": service}), store=store,
                   capturer=Capturer(retries=0))


@pytest.fixture
async def runtimes() -> AsyncIterator[Callable[[str, str], Runtime]]:
    made: list[Runtime] = []

    def make(url: str, target: str) -> Runtime:
        made.append(_runtime(url, target))
        return made[-1]

    yield make
    for runtime in made:
        await runtime.close()


def _shown(reply: Any) -> str:
    return " ".join([reply.title, reply.summary, *reply.context, *reply.sections])


async def _ask(runtime: Runtime, text: str) -> Any:
    return await run(runtime, Invocation(text=text, user_id="U1", channel_id="C1",
                                         source="slack"))


async def test_redis_down_at_start_history_commands_say_so_others_answer(
        runtimes, pprof_service) -> None:
    target, _ = pprof_service
    runtime = runtimes(f"redis://127.0.0.1:{free_port()}/0", target)

    help_reply = await _ask(runtime, "help")
    assert not help_reply.error and "/heap top SERVICE" in _shown(help_reply)
    services = await _ask(runtime, "services")
    assert not services.error
    assert services.table is not None
    assert [(row[0], row[-1]) for row in services.table.rows] == [("payments", "unknown")]
    assert "Last captures unknown: heapbot's history store" in _shown(services)
    assert UNREACHABLE in _shown(services)

    for command in ("history payments", "diff payments since deploy", "watches"):
        reply = await _ask(runtime, command)
        assert reply.error, command
        assert UNREACHABLE in _shown(reply), (command, _shown(reply))
        assert "Traceback" not in _shown(reply) and "internal error" not in _shown(reply)


async def test_top_still_answers_from_a_live_capture_when_redis_is_down(
        runtimes, pprof_service) -> None:
    target, _ = pprof_service
    runtime = runtimes(f"redis://127.0.0.1:{free_port()}/0", target)
    reply = await _ask(runtime, "top payments 5")
    assert not reply.error, _shown(reply)
    assert reply.table is not None and len(reply.table.rows) == 5
    functions = " ".join(cell for row in reply.table.rows for cell in row)
    assert "main." in functions or "runtime." in functions


async def _count_keys(url: str) -> dict[str, int]:
    client = aioredis.Redis.from_url(url)
    try:
        keys = [k.decode() for k in await client.keys("heapbot:*")]
        snaps = [k for k in keys if ":snap:" in k]
        index = [k for k in keys if k.endswith(":index")]
        members = sum([await client.zcard(k) for k in index]) if index else 0
        complete = 0
        for key in snaps:
            fields = await client.hkeys(key)
            names = {f.decode() for f in fields}
            complete += "meta" in names and any(n.startswith("raw:") for n in names)
        return {"snapshots": len(snaps), "indexed": members, "complete": complete}
    finally:
        await client.aclose()


async def test_redis_lost_mid_capture_stores_nothing_then_recovers(
        runtimes, pprof_service, redis_server, redis_url: str) -> None:
    if not isinstance(redis_server, RedisServer):
        pytest.skip("needs the test-owned redis-server")
    target, delay = pprof_service
    runtime = runtimes(redis_url, target)
    # The capture lock taken before Redis died cannot be released while it is down, and
    # the append-only file brings it back: the next capture waits for its TTL (default
    # timeout*3+30 s = 60 s here). A short TTL keeps this test short; see RELIABILITY.md.
    runtime.lock_timeout = 3
    first = await runtime.capture("payments", requested_by="U1")
    assert first.stored
    assert await _count_keys(redis_url) == {"snapshots": 1, "indexed": 1, "complete": 1}

    delay[0] = 1.5  # the endpoints answer slowly; Redis dies while they are fetched
    task = asyncio.create_task(runtime.capture("payments", requested_by="U1", force=True))
    await asyncio.sleep(0.5)
    await asyncio.to_thread(redis_server.stop)
    try:
        captured = await asyncio.wait_for(task, 60)
    except Exception as exc:  # only a clear, user-facing error is acceptable
        from bot.errors import HeapbotError

        assert isinstance(exc, HeapbotError), repr(exc)
        captured = None
    if captured is not None:
        assert not captured.stored
        assert UNREACHABLE in (captured.store_error or "")
    reply = await _ask(runtime, "history payments")
    assert reply.error and UNREACHABLE in _shown(reply)

    await asyncio.to_thread(redis_server.start)
    delay[0] = 0.0
    # the lost capture left no trace: exactly the first snapshot, whole
    assert await _count_keys(redis_url) == {"snapshots": 1, "indexed": 1, "complete": 1}
    history = await _ask(runtime, "history payments")  # the same client reconnects
    assert not history.error, _shown(history)
    loop = asyncio.get_running_loop()
    started = loop.time()
    again = await runtime.capture("payments", requested_by="U1", force=True)
    assert again.stored
    assert loop.time() - started < 3 + 5  # at most the stale lock's TTL
    assert await _count_keys(redis_url) == {"snapshots": 2, "indexed": 2, "complete": 2}


async def test_queued_job_runs_once_redis_returns(
        runtimes, pprof_service, redis_server, redis_url: str) -> None:
    """A job queued before Redis went away survives (append-only file) and runs after."""
    if not isinstance(redis_server, RedisServer):
        pytest.skip("needs the test-owned redis-server")
    target, _ = pprof_service
    runtime = runtimes(redis_url, target)
    config = QueueSettings(claim_idle_seconds=2, concurrency=2)
    queue = config.queue(runtime.store.redis)
    await queue.enqueue("deploy", {"service": "payments", "version": "v42", "by": "ci"})
    await asyncio.to_thread(redis_server.stop)

    ctx = WorkContext(runtime=runtime, settings=Settings(), config=config, queue=queue,
                      slack=None, consumer="reliability-1")
    stop = asyncio.Event()
    worker = asyncio.create_task(Worker(ctx, {"deploy": run_deploy}, stop=stop).run())
    try:
        await asyncio.sleep(1.5)  # the worker meets a dead Redis first
        assert not worker.done() or worker.exception() is None, (
            f"worker died while Redis was down: {worker.exception()!r}")
        await asyncio.to_thread(redis_server.start)
        for _ in range(150):
            deploys = await runtime.deploys("payments")
            if deploys:
                break
            await asyncio.sleep(0.1)
        assert [d.version for d in deploys] == ["v42"]
    finally:
        stop.set()  # a cancel swallowed inside redis-py's timeout still stops the loop
        await stop_worker(worker)


def test_cli_file_mode_needs_no_redis(tmp_path: Path) -> None:
    """`heapbot top --profile FILE` answers with Redis unreachable (a real CLI process)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
           "HEAPBOT_CONFIG": str(tmp_path / "none.yaml"), "HEAPBOT_DATA_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "bot", "top", "--profile",
                           str(FIXTURES / "heap_1.pb.gz"), "--format", "json", "-n", "5"],
                          cwd=Path(__file__).resolve().parents[2], env=env, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-1500:]
    report = json.loads(done.stdout)
    assert report["sample_type"] and report["total"] > 0
    assert 0 < len(report["rows"]) <= 5 and all(r["function"] for r in report["rows"])
