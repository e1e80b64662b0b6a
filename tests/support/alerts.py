"""Shared fixtures and helpers of the alert wing's tests (webhooks, paged threads, watches).

The ``hooks`` fixture runs the webhook routes on a free port with a real registry and a
real store; the payload builders produce what Alertmanager 0.27 and PagerDuty v3 send;
the thread helpers read what the Slack stand-in recorded.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from aiohttp import web
from pydantic import SecretStr

from bot.alerts.webhooks import register_routes
from bot.jobs import STREAM, QueueSettings
from bot.registry import Registry, load_registry
from bot.settings import Settings
from bot.store import SnapshotStore

CHANNEL = "C0DEMO"  # the demo service's channel in write_demo_registry

AM_TOKEN = "am-secret-token"
PD_SECRET = "pd-signing-secret"
HOOK_TOKEN = "deploy-hook-token"


@dataclass
class RegistryAndStore:
    """The two Runtime parts the routes read (a real registry file and a real store)."""

    registry: Registry
    store: SnapshotStore

    @property
    def redis(self) -> Any:
        """The Runtime's one Redis client (the store's)."""
        return self.store.redis


def write_payments_registry(tmp_path: Path, target: str = "http://127.0.0.1:9") -> Path:
    path = tmp_path / "heapbot.yaml"
    path.write_text(
        "services:\n"
        "  payments:\n"
        f"    targets: [\"{target}\"]\n"
        "    channel: C0PAY\n"
        "    aliases: [pay, payments-api]\n"
    )
    return path


def settings_for(tmp_path: Path, **secrets: str) -> Settings:
    values: dict[str, Any] = {"config_path": write_payments_registry(tmp_path)}
    for name, value in secrets.items():
        values[name] = SecretStr(value)
    return Settings(**values)


@pytest.fixture
async def hooks(tmp_path: Path, redis_url: str) -> AsyncIterator[tuple[str, aioredis.Redis]]:
    """A running aiohttp app with the webhook routes; yields (base URL, redis)."""
    settings = settings_for(tmp_path, alertmanager_token=AM_TOKEN, pagerduty_secret=PD_SECRET,
                            webhook_token=HOOK_TOKEN)
    store = SnapshotStore.from_url(redis_url)
    runtime = RegistryAndStore(load_registry(settings.config_path), store)
    app = web.Application()
    register_routes(app, runtime, settings, config=QueueSettings(max_body_bytes=64 * 1024))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}", store.redis
    finally:
        await runner.cleanup()
        await store.close()


def alertmanager_payload(status: str = "firing", job: str = "payments-api",
                         group_key: str = '{}:{alertname="HeapGrowing"}') -> dict[str, Any]:
    """What Alertmanager 0.27 sends (webhook version 4), with its real field names."""
    return {
        "receiver": "heapbot",
        "status": status,
        "alerts": [{
            "status": status,
            "labels": {"alertname": "HeapGrowing", "job": job, "instance": "10.0.0.5:6060",
                       "severity": "page"},
            "annotations": {"summary": "go_memstats_heap_inuse_bytes grew 40% in 1h"},
            "startsAt": "2026-11-21T21:58:03.123456789Z",
            "endsAt": "0001-01-01T00:00:00Z" if status == "firing" else "2026-11-21T22:30:00Z",
            "generatorURL": "http://prometheus:9090/graph?g0.expr=...",
            "fingerprint": "c4b7f8e2a1d0c9b3",
        }],
        "groupLabels": {"alertname": "HeapGrowing"},
        "commonLabels": {"alertname": "HeapGrowing", "severity": "page"},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "version": "4",
        "groupKey": group_key,
        "truncatedAlerts": 0,
        "unknownFutureField": {"x": 1},
    }


def pagerduty_payload(event_type: str = "incident.triggered",
                      service_summary: str = "Payments",
                      occurred_at: str | None = None) -> dict[str, Any]:
    """A PagerDuty webhooks v3 event, shaped like PagerDuty's documented example.

    ``occurred_at`` defaults to now: heapbot refuses events older than its dedupe window.
    """
    if occurred_at is None:
        occurred_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    return {"event": {
        "id": "01DEN4HPBQAAAG05V5QQYBRZMF",
        "event_type": event_type,
        "resource_type": "incident",
        "occurred_at": occurred_at,
        "agent": {"id": "PLH1HKV", "type": "user_reference"},
        "client": None,
        "data": {
            "id": "PGR0VU2", "type": "incident", "number": 2,
            "html_url": "https://acme.pagerduty.com/incidents/PGR0VU2",
            "title": "Payments heap above 2 GB", "status": "triggered",
            "created_at": "2026-11-21T21:59:00Z", "urgency": "high",
            "service": {"id": "PF9KMXH", "summary": service_summary, "type": "service_reference",
                        "html_url": "https://acme.pagerduty.com/services/PF9KMXH"},
        },
    }}


def pd_signature(body: bytes, secret: str = PD_SECRET) -> str:
    return "v1=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


async def post(url: str, body: bytes | str, headers: dict[str, str] | None = None
               ) -> tuple[int, dict[str, Any], float]:
    started = time.monotonic()
    async with aiohttp.ClientSession() as session, session.post(
        url, data=body, headers={"Content-Type": "application/json", **(headers or {})}
    ) as resp:
        text = await resp.text()
        return resp.status, json.loads(text), time.monotonic() - started


async def queued(redis: aioredis.Redis) -> list[dict[str, Any]]:
    entries = await redis.xrange(STREAM)
    return [{"kind": f[b"kind"].decode(), **json.loads(f[b"payload"])} for _, f in entries]


BEARER = {"Authorization": f"Bearer {AM_TOKEN}"}


def write_demo_registry(tmp_path: Path, targets: list[str]) -> Path:
    path = tmp_path / "heapbot.yaml"
    path.write_text(
        "services:\n"
        "  demo:\n"
        f"    targets: {json.dumps(targets)}\n"
        f"    channel: {CHANNEL}\n"
        "    aliases: [demo-api]\n"
        "    cooldown_seconds: 120\n"
    )
    return path


def text_of(post: dict[str, Any]) -> str:
    """Everything a user reads in one message: fallback text and every block."""
    return json.dumps({"text": post.get("text", ""), "blocks": post.get("blocks", [])},
                      ensure_ascii=False)


def top_level(standin: Any) -> list[dict[str, Any]]:
    return [p for p in standin.posts(CHANNEL) if not p.get("thread_ts")]


def thread(standin: Any, ts: str) -> list[dict[str, Any]]:
    return [p for p in standin.posts(CHANNEL) if p.get("thread_ts") == ts]
