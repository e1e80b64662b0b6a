"""Webhook routes over real HTTP against a real Redis: validate, authenticate, enqueue.

These tests stop at the queue (what the routes promise); tests/alerts/test_paged.py
follows the jobs through the worker into Slack threads.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from aiohttp import web

from bot.alerts.webhooks import register_routes
from bot.jobs import JobQueue
from bot.registry import load_registry
from bot.store import SnapshotStore
from tests.support.alerts import (
    AM_TOKEN,
    BEARER,
    HOOK_TOKEN,
    RegistryAndStore,
    alertmanager_payload,
    pagerduty_payload,
    pd_signature,
    post,
    queued,
    settings_for,
)


async def test_alertmanager_firing_is_queued_fast(hooks: tuple[str, aioredis.Redis]) -> None:
    url, redis = hooks
    status, body, elapsed = await post(f"{url}/hooks/alertmanager",
                                       json.dumps(alertmanager_payload()), BEARER)
    assert status == 202, body
    assert elapsed < 1.0
    assert body["queued"][0]["service"] == "payments"  # job=payments-api is an alias
    jobs = await queued(redis)
    assert len(jobs) == 1
    job = jobs[0]
    assert (job["kind"], job["service"], job["status"], job["title"]) == (
        "alert", "payments", "firing", "HeapGrowing")
    assert job["summary"] == "go_memstats_heap_inuse_bytes grew 40% in 1h"
    started = datetime(2026, 11, 21, 21, 58, 3, 123456, tzinfo=UTC).timestamp()
    assert job["starts_at"] == pytest.approx(started, abs=1e-3)  # nanoseconds cut to micro


async def test_duplicate_delivery_enqueues_once(hooks: tuple[str, aioredis.Redis]) -> None:
    url, redis = hooks
    payload = json.dumps(alertmanager_payload())
    first = await post(f"{url}/hooks/alertmanager", payload, BEARER)
    again = await post(f"{url}/hooks/alertmanager", payload, BEARER)
    resolved = await post(f"{url}/hooks/alertmanager",
                          json.dumps(alertmanager_payload("resolved")), BEARER)
    assert first[1]["queued"][0]["duplicate"] is False
    assert again[0] == 202 and again[1]["queued"][0]["duplicate"] is True
    assert resolved[1]["queued"][0]["status"] == "resolved"
    assert [j["status"] for j in await queued(redis)] == ["firing", "resolved"]
    # Both notifications of the group share one incident key: the resolve finds the thread.
    keys = {j["incident_key"] for j in await queued(redis)}
    assert len(keys) == 1


async def test_unknown_service_is_2xx_with_tried_labels(hooks: tuple[str, aioredis.Redis]
                                                        ) -> None:
    url, redis = hooks
    status, body, _ = await post(f"{url}/hooks/alertmanager",
                                 json.dumps(alertmanager_payload(job="billing")), BEARER)
    assert status == 200
    assert body["ok"] is False and body["status"] == 422
    assert "job=billing" in body["tried"]
    assert await queued(redis) == []


@pytest.mark.parametrize("headers", [
    {},
    {"Authorization": "Bearer wrong"},
    {"Authorization": "Basic " + base64.b64encode(b"am:wrong").decode()},
])
async def test_alertmanager_auth_refused(hooks: tuple[str, aioredis.Redis],
                                         headers: dict[str, str]) -> None:
    url, redis = hooks
    status, body, _ = await post(f"{url}/hooks/alertmanager",
                                 json.dumps(alertmanager_payload()), headers)
    assert status == 401
    assert "HEAPBOT_ALERTMANAGER_TOKEN" in body["error"]
    assert AM_TOKEN not in json.dumps(body)
    assert await queued(redis) == []


async def test_alertmanager_basic_auth_accepted(hooks: tuple[str, aioredis.Redis]) -> None:
    url, _redis = hooks
    basic = {"Authorization": "Basic " + base64.b64encode(f"am:{AM_TOKEN}".encode()).decode()}
    status, _body, _ = await post(f"{url}/hooks/alertmanager",
                                  json.dumps(alertmanager_payload()), basic)
    assert status == 202


@pytest.mark.parametrize(("body", "status", "words"), [
    ("{not json", 400, "not valid JSON"),
    ("", 400, "empty"),
    (json.dumps({"alerts": "nope"}), 400, "alerts"),
    (json.dumps({"x": "a" * 70_000}), 413, "larger than"),
])
async def test_bad_bodies_get_one_clear_message(hooks: tuple[str, aioredis.Redis], body: str,
                                                status: int, words: str) -> None:
    url, redis = hooks
    got, answer, _ = await post(f"{url}/hooks/alertmanager", body, BEARER)
    assert got == status
    assert words in answer["error"]
    assert "Traceback" not in answer["error"]
    assert await queued(redis) == []


async def test_pagerduty_signed_event_is_queued(hooks: tuple[str, aioredis.Redis]) -> None:
    url, redis = hooks
    body = json.dumps(pagerduty_payload()).encode()
    # During a secret rotation PagerDuty sends several signatures; any may match.
    header = pd_signature(body, "old-secret") + "," + pd_signature(body)
    status, answer, elapsed = await post(f"{url}/hooks/pagerduty", body,
                                         {"X-PagerDuty-Signature": header})
    assert status == 202, answer
    assert elapsed < 1.0
    (job,) = await queued(redis)
    assert (job["service"], job["status"], job["source"]) == ("payments", "firing", "pagerduty")
    # The same event delivered again is dropped.
    await post(f"{url}/hooks/pagerduty", body, {"X-PagerDuty-Signature": header})
    assert len(await queued(redis)) == 1


@pytest.mark.parametrize("header", ["", "v1=deadbeef", "v0=abc", "garbage"])
async def test_pagerduty_bad_signature_is_401_and_nothing_queued(
        hooks: tuple[str, aioredis.Redis], header: str) -> None:
    url, redis = hooks
    body = json.dumps(pagerduty_payload()).encode()
    status, answer, _ = await post(f"{url}/hooks/pagerduty", body,
                                   {"X-PagerDuty-Signature": header} if header else {})
    assert status == 401
    assert "X-PagerDuty-Signature" in answer["error"]
    assert await queued(redis) == []


async def test_pagerduty_signature_is_over_the_raw_body(hooks: tuple[str, aioredis.Redis]
                                                        ) -> None:
    url, redis = hooks
    body = json.dumps(pagerduty_payload()).encode()
    tampered = body.replace(b"Payments heap", b"Billing heap")
    status, _answer, _ = await post(f"{url}/hooks/pagerduty", tampered,
                                    {"X-PagerDuty-Signature": pd_signature(body)})
    assert status == 401
    assert await queued(redis) == []


async def test_pagerduty_other_events_are_acknowledged_and_ignored(
        hooks: tuple[str, aioredis.Redis]) -> None:
    url, redis = hooks
    body = json.dumps(pagerduty_payload("incident.acknowledged")).encode()
    status, answer, _ = await post(f"{url}/hooks/pagerduty", body,
                                   {"X-PagerDuty-Signature": pd_signature(body)})
    assert status == 200 and answer["ignored"] == "incident.acknowledged"
    assert await queued(redis) == []


async def test_deploy_and_capture_hooks(hooks: tuple[str, aioredis.Redis]) -> None:
    url, redis = hooks
    auth = {"Authorization": f"Bearer {HOOK_TOKEN}"}
    status, answer, _ = await post(f"{url}/hooks/deploy",
                                   json.dumps({"service": "pay", "version": "v1.4.2"}), auth)
    assert status == 202 and answer["service"] == "payments"
    status, answer, _ = await post(f"{url}/hooks/capture",
                                   json.dumps({"service": "payments", "reason": "canary"}), auth)
    assert status == 202
    jobs = await queued(redis)
    assert [(j["kind"], j["service"]) for j in jobs] == [("deploy", "payments"),
                                                         ("capture", "payments")]
    assert jobs[0]["version"] == "v1.4.2" and jobs[1]["reason"] == "canary"

    status, answer, _ = await post(f"{url}/hooks/deploy",
                                   json.dumps({"service": "paymnts", "version": "v2"}), auth)
    assert status == 422 and "payments" in answer["error"]  # did-you-mean
    status, answer, _ = await post(f"{url}/hooks/deploy",
                                   json.dumps({"service": "payments", "version": "v2"}),
                                   {"Authorization": "Bearer nope"})
    assert status == 401
    status, answer, _ = await post(f"{url}/hooks/deploy", json.dumps({"version": "v2"}), auth)
    assert status == 400 and "service" in answer["error"]
    assert len(await queued(redis)) == 2


async def test_hooks_without_configured_secrets_refuse(tmp_path: Path, redis_url: str) -> None:
    settings = settings_for(tmp_path)
    store = SnapshotStore.from_url(redis_url)
    app = web.Application()
    register_routes(app, RegistryAndStore(load_registry(settings.config_path), store), settings,
                    queue=JobQueue(store.redis))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
    try:
        body = json.dumps(pagerduty_payload()).encode()
        status, answer, _ = await post(f"{url}/hooks/pagerduty", body,
                                       {"X-PagerDuty-Signature": pd_signature(body)})
        # 403 like the other hooks that are off: PagerDuty retries a 5xx for good.
        assert status == 403 and "PAGERDUTY_WEBHOOK_SECRET" in answer["error"]
        assert "/hooks/pagerduty is off" in answer["error"]
        status, answer, _ = await post(f"{url}/hooks/deploy",
                                       json.dumps({"service": "payments", "version": "1"}))
        assert status == 403 and "HEAPBOT_WEBHOOK_TOKEN" in answer["error"]
        # Alertmanager too is off until HEAPBOT_ALERTMANAGER_TOKEN is set (issue 17 item 3).
        status, answer, _ = await post(f"{url}/hooks/alertmanager",
                                       json.dumps(alertmanager_payload()))
        assert status == 403 and "HEAPBOT_ALERTMANAGER_TOKEN" in answer["error"]
        assert "HEAPBOT_ALERTMANAGER_OPEN" in answer["error"]
    finally:
        await runner.cleanup()
        await store.close()
