"""Paged threads end to end: webhook over HTTP → Redis queue → worker → Slack stand-in.

Real parts only: the demo Go service profiled over HTTP, a real redis-server,
the Runtime, the handlers, and the Slack stand-in recording what Slack would
receive (the summary, the thread's replies, the uploaded files' bytes).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from pydantic import SecretStr

from bot.alerts.incidents import INCIDENT_PREFIX
from bot.alerts.webhooks import register_routes
from bot.alerts.worker import start_worker, stop_worker
from bot.jobs import QueueSettings
from bot.settings import Settings
from tests.support.alerts import (
    CHANNEL,
    alertmanager_payload,
    pagerduty_payload,
    pd_signature,
    text_of,
    thread,
    top_level,
    write_demo_registry,
)

PD_SECRET = "pd-signing-secret"


@dataclass
class Bot:
    url: str
    runtime: Any
    standin: Any




@pytest.fixture
async def bot(tmp_path: Path, redis_url: str, demo_service: Any,
              slack_standin: Any) -> AsyncIterator[Bot]:
    """Webhook routes plus one worker, against the demo service and the Slack stand-in."""
    from bot.runtime import Runtime
    from bot.slack.client import build_web_client

    settings = Settings(config_path=write_demo_registry(tmp_path, [demo_service.url]),
                        redis_url=redis_url, slack_bot_token=SecretStr("xoxb-test"),
                        slack_api_url=slack_standin.api_url,
                        pagerduty_secret=SecretStr(PD_SECRET),
                        alertmanager_open=True)  # the explicit opt-in to an open hook
    runtime = await Runtime.create(settings)
    config = QueueSettings(claim_idle_seconds=5, consumer_name="replica-test")
    app = web.Application()
    register_routes(app, runtime, settings, config=config)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    worker = start_worker(runtime, settings, build_web_client(settings), config=config)
    try:
        yield Bot(f"http://127.0.0.1:{port}", runtime, slack_standin)
    finally:
        await stop_worker(worker)
        await runner.cleanup()
        await runtime.close()


@pytest.fixture
async def served(tmp_path: Path, redis_url: str, demo_service: Any,
                 slack_standin: Any) -> AsyncIterator[Bot]:
    """The whole `heapbot serve` app (Slack transport, webhooks, worker) on a free port."""
    from bot.runtime import Runtime
    from bot.serve import build_web_app

    settings = Settings(config_path=write_demo_registry(tmp_path, [demo_service.url]),
                        redis_url=redis_url, slack_bot_token=SecretStr("xoxb-test"),
                        slack_signing_secret=SecretStr("signing-secret"),
                        slack_api_url=slack_standin.api_url,
                        pagerduty_secret=SecretStr(PD_SECRET),
                        alertmanager_open=True)  # the explicit opt-in to an open hook
    runtime = await Runtime.create(settings)
    runner = web.AppRunner(build_web_app(runtime, settings, socket_mode=False))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield Bot(f"http://127.0.0.1:{port}", runtime, slack_standin)
    finally:
        await runner.cleanup()
        await runtime.close()


async def send(url: str, payload: dict[str, Any] | bytes,
               headers: dict[str, str] | None = None) -> dict[str, Any]:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    async with aiohttp.ClientSession() as session, session.post(
        url, data=body, headers={"Content-Type": "application/json", **(headers or {})}
    ) as resp:
        assert resp.status in (200, 202), await resp.text()
        return await resp.json()


def parse_bytes(cell: str) -> float:
    """A pprof-formatted byte value ("1024.25kB", "3.50MB", "0") back to bytes."""
    units = {"B": 1, "kB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}
    match = re.fullmatch(r"(-?[\d.]+)([kMGT]?B)?", cell.strip())
    assert match, cell
    return float(match.group(1)) * units[match.group(2) or "B"]




def firing_now(job: str = "demo", **kwargs: Any) -> dict[str, Any]:
    payload = alertmanager_payload(job=job, **kwargs)
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    for alert in payload["alerts"]:
        alert["startsAt"] = now
    return payload


async def summary_ts(standin: Any) -> str:
    """The summary message's ts: the thread_ts its replies carry."""
    replies = [p for p in standin.posts(CHANNEL) if p.get("thread_ts")]
    assert replies, "no thread replies"
    return replies[0]["thread_ts"]


@pytest.mark.slow
async def test_alertmanager_alert_opens_one_paged_thread(bot: Bot) -> None:
    standin = bot.standin
    baseline = await bot.runtime.capture("demo", trigger="user", force=True)
    await asyncio.sleep(1.1)  # the alert starts after the baseline capture
    payload = firing_now(job="demo-api")
    answer = await send(f"{bot.url}/hooks/alertmanager", payload)
    assert answer["queued"][0]["service"] == "demo"

    def files_in_thread() -> list[Any] | None:
        replies = [p for p in standin.posts(CHANNEL) if p.get("thread_ts")]
        if not replies:
            return None
        ts = replies[0]["thread_ts"]
        files = [f for f in standin.files() if f.thread_ts == ts]
        return files if any(f.filename.endswith(".pb.gz") for f in files) else None

    files = await standin.wait_for(files_in_thread, timeout=90)
    ts = await summary_ts(standin)

    (summary,) = top_level(standin)
    shown = text_of(summary)
    assert "HeapGrowing" in shown and "demo" in shown
    assert "heap in use" in shown and "goroutines" in shown
    assert "Since the last capture before it started" in shown
    assert baseline.snapshot.id in shown
    # Its buttons can work: no deploy is recorded, so the diff is against the baseline
    # (a "Diff since deploy" button answered "No deploy of demo is recorded").
    buttons = [e["value"] for b in summary.get("blocks", []) if b["type"] == "actions"
               for e in b["elements"]]
    assert "No deploy recorded" in shown
    assert buttons == ["leaks demo", f"diff demo since {baseline.snapshot.id}"], buttons

    replies = thread(standin, ts)
    texts = [text_of(r) for r in replies]
    # top table, diff vs baseline, goroutine groups, chart and profile: all in the thread.
    assert any("flat" in t and "cum" in t for t in texts), texts
    assert any(baseline.snapshot.id in t for t in texts[1:]), "no diff against the baseline"
    assert any("goroutine" in t.lower() for t in texts[2:])
    chart = [f for f in files if f.filename.endswith("-history.png")]
    profile = [f for f in files if f.filename.endswith(".pb.gz")]
    assert chart and chart[0].content.startswith(b"\x89PNG\r\n\x1a\n")
    # The diff against the baseline comes with its diff flame graph (PNG, and SVG tooltips).
    flames = sorted(f.filename for f in files if "-diff-flame." in f.filename)
    assert [n.rsplit(".", 1)[1] for n in flames] == ["png", "svg"]
    assert flames[0].startswith(f"demo-{baseline.snapshot.id}-")
    assert profile
    from bot.pprof import parse_profile

    parsed = parse_profile(profile[0].content)
    assert any(st.type == "inuse_space" for st in parsed.sample_types)
    # The file is the merged profile of what the demo answered, as stored with the snapshot:
    # its top table equals the one rebuilt from the stored raw bytes.
    from bot.analysis.top import TopOptions as _Options
    from bot.analysis.top import top as _top

    incident = await _incident(bot)
    snapshot = await bot.runtime.store.get("demo", incident["first_snapshot"])
    stored = await bot.runtime.load_profile(snapshot)
    assert len(profile) == 1
    assert (_top(parsed, _Options()).to_json()["rows"]
            == _top(stored, _Options()).to_json()["rows"])
    assert incident["ts"] == ts and incident["status"] == "open"

    # The thread's top table shows the alert capture's numbers, as the engine (= pprof) has them.
    from bot.analysis.top import TopOptions, top

    captured = await bot.runtime.store.get("demo", incident["first_snapshot"])
    report = top(await bot.runtime.load_profile(captured), TopOptions())
    table_post = next(r for r in replies if any(b.get("type") == "table"
                                                for b in r.get("blocks", [])))
    table = next(b for b in table_post["blocks"] if b["type"] == "table")
    shown_flat = {row[0]["text"]: parse_bytes(row[1]["text"]) for row in table["rows"][1:]}
    for row in report.rows[:5]:
        assert shown_flat[row.function] == pytest.approx(row.flat, rel=0.001, abs=6), row

    # Alertmanager delivers the same notification again: nothing new is posted.
    before = len(standin.posts(CHANNEL))
    again = await send(f"{bot.url}/hooks/alertmanager", payload)
    assert again["queued"][0]["duplicate"] is True
    await asyncio.sleep(1.5)
    assert len(standin.posts(CHANNEL)) == before

    # A re-fire (another alert joins the group) replies in the same thread.
    refire = json.loads(json.dumps(payload))
    extra = json.loads(json.dumps(refire["alerts"][0]))
    extra["fingerprint"] = "0a1b2c3d4e5f6a7b"
    extra["labels"]["instance"] = "10.0.0.6:6060"
    refire["alerts"].append(extra)
    await send(f"{bot.url}/hooks/alertmanager", refire)
    await standin.wait_for(lambda: any("Still firing" in text_of(p)
                                       for p in thread(standin, ts)), timeout=60)

    # The resolve closes the thread with the diff over the incident.
    await send(f"{bot.url}/hooks/alertmanager", alertmanager_payload("resolved", job="demo"))
    await standin.wait_for(lambda: any("Resolved" in text_of(p) for p in thread(standin, ts)),
                           timeout=60)
    assert len(top_level(standin)) == 1  # one thread for the whole incident
    deadline = time.monotonic() + 30
    while (await _incident(bot))["status"] != "resolved" and time.monotonic() < deadline:
        await asyncio.sleep(0.1)  # the diff over the incident is posted, then it is closed
    assert (await _incident(bot))["status"] == "resolved"
    closing = [text_of(p) for p in thread(standin, ts)]
    assert any(incident["first_snapshot"] in t for t in closing[-2:]), "no diff over the incident"


async def _incident(bot: Bot) -> dict[str, str]:
    redis = bot.runtime.store.redis
    keys = [k async for k in redis.scan_iter(match=INCIDENT_PREFIX + "*")]
    keys = [k for k in keys if not k.endswith(b":lock")]
    assert len(keys) == 1, keys
    return {k.decode(): v.decode() for k, v in (await redis.hgetall(keys[0])).items()}


@pytest.mark.slow
async def test_pagerduty_incident_opens_a_thread_and_resolves(served: Bot) -> None:
    """Through the whole server: the Slack transport mounts the routes and runs the worker."""
    bot = served
    standin = bot.standin
    body = json.dumps(pagerduty_payload(service_summary="Demo API")).encode()
    await send(f"{bot.url}/hooks/pagerduty", body, {"X-PagerDuty-Signature": pd_signature(body)})
    await standin.wait_for(lambda: len([f for f in standin.files()]) >= 2, timeout=90)
    (summary,) = top_level(standin)
    assert "Payments heap above 2 GB" in text_of(summary)
    ts = await summary_ts(standin)
    # No capture before the incident: the thread says so instead of inventing a diff.
    assert "No capture before it started" in text_of(summary)

    resolved = pagerduty_payload("incident.resolved", service_summary="Demo API")
    resolved["event"]["id"] = "01DEN4HPBQAAAG05V5QQYBRZZZ"
    body = json.dumps(resolved).encode()
    await send(f"{bot.url}/hooks/pagerduty", body, {"X-PagerDuty-Signature": pd_signature(body)})
    await standin.wait_for(lambda: any("Resolved" in text_of(p) for p in thread(standin, ts)),
                           timeout=60)
    assert len(top_level(standin)) == 1


def test_the_summary_offers_a_diff_that_can_work() -> None:
    """Since the deploy when one is recorded, else since the baseline, else since previous."""
    from types import SimpleNamespace

    from bot.alerts.paged import _diff_action
    from bot.store import DeployMarker

    marker = DeployMarker(taken_at=time.time() - 60, version="v2")
    assert _diff_action("demo", marker, None).command == "diff demo since deploy"
    assert _diff_action("demo", None, SimpleNamespace(id="20261129-230501-ab12")).command \
        == "diff demo since 20261129-230501-ab12"
    assert _diff_action("demo", None, None).command == "diff demo since previous"
