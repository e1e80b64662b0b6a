"""Issue 17's holes in the alert wing and the HTTP server, each reproduced over real sockets.

Empty secrets, the open Alertmanager hook, alert threads outside allow lists, bursts of
new incidents, half-open connections, 8,000-alert bodies, undecodable Slack requests,
5,000-digit numbers, replayed PagerDuty events and /metrics. Real Redis, the demo Go
service, the Slack stand-in, and `heapbot serve` as a child process where the event loop
under test must be the bot's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import os
import resource
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from aiohttp import web
from pydantic import SecretStr

from bot.alerts.payloads import AlertJob
from bot.alerts.webhooks import register_routes
from bot.alerts.worker import start_worker, stop_worker
from bot.errors import ConfigError
from bot.httpserver import _AcceptErrorFilter
from bot.jobs import JobQueue, QueueSettings
from bot.registry import load_registry
from bot.serve import build_web_app
from bot.settings import Settings
from bot.slack.server import check_slack_settings
from bot.store import SnapshotStore
from tests.support.alerts import (
    AM_TOKEN,
    BEARER,
    HOOK_TOKEN,
    PD_SECRET,
    RegistryAndStore,
    alertmanager_payload,
    pagerduty_payload,
    pd_signature,
    queued,
    write_payments_registry,
)
from tests.support.redis import free_port
from tests.support.slack_standin import RunningWebApp, wait_until_serving

ROOT = Path(__file__).resolve().parents[2]
SIGNING_SECRET = "alerts-security-signing-secret"
SECRET_ENV = ("SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "SLACK_APP_TOKEN",
              "HEAPBOT_WEBHOOK_TOKEN", "HEAPBOT_ALERTMANAGER_TOKEN", "PAGERDUTY_WEBHOOK_SECRET",
              "HEAPBOT_METRICS_TOKEN")


async def _post(url: str, body: bytes, headers: dict[str, str] | None = None
                ) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as session, session.post(
            url, data=body, headers={"Content-Type": "application/json", **(headers or {})}
    ) as resp:
        text = await resp.text()
        return resp.status, json.loads(text) if text.startswith("{") else {"text": text}


@contextlib.asynccontextmanager
async def _webhook_app(settings: Settings, redis_url: str,
                       config: QueueSettings | None = None) -> AsyncIterator[str]:
    """The webhook routes on a free port with a real registry and store; yields the URL."""
    store = SnapshotStore.from_url(redis_url)
    app = web.Application()
    register_routes(app, RegistryAndStore(load_registry(settings.config_path), store), settings,
                    config=config, queue=JobQueue(store.redis))
    running = await RunningWebApp(app).start()
    try:
        yield running.url
    finally:
        await running.stop()
        await store.close()


# -- item 2: empty secrets ---------------------------------------------------------------


@pytest.mark.parametrize("blank", ["", "   "], ids=["empty", "whitespace"])
async def test_empty_or_blank_secrets_mean_unset(tmp_path: Path, redis_url: str, blank: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """docker-compose passes ``${VAR:-}``: "" must not become a secret anyone can send."""
    for name in SECRET_ENV:
        monkeypatch.setenv(name, blank)
    monkeypatch.setenv("HEAPBOT_CONFIG", str(write_payments_registry(tmp_path)))
    settings = Settings()
    assert all(getattr(settings, field) is None for field in (
        "slack_bot_token", "slack_signing_secret", "slack_app_token", "webhook_token",
        "alertmanager_token", "pagerduty_secret", "metrics_token"))
    with pytest.raises(ConfigError) as missing:
        check_slack_settings(settings)
    assert "SLACK_BOT_TOKEN" in missing.value.user_message()

    deploy = json.dumps({"service": "payments", "version": "v1"}).encode()
    async with _webhook_app(settings, redis_url) as url:
        # Before: 202 for each of these, with an empty bearer, "Basic :" and HMAC("", body).
        status, answer = await _post(f"{url}/hooks/deploy", deploy,
                                     {"Authorization": "Bearer"})
        assert status == 403 and "HEAPBOT_WEBHOOK_TOKEN" in answer["error"]
        status, answer = await _post(f"{url}/hooks/capture", b'{"service": "payments"}',
                                     {"Authorization": "Basic Og=="})
        assert status == 403
        body = json.dumps(pagerduty_payload()).encode()
        status, answer = await _post(f"{url}/hooks/pagerduty", body,
                                     {"X-PagerDuty-Signature": pd_signature(body, "")})
        assert status == 403 and "PAGERDUTY_WEBHOOK_SECRET" in answer["error"]
        status, answer = await _post(f"{url}/hooks/alertmanager",
                                     json.dumps(alertmanager_payload()).encode(),
                                     {"Authorization": "Bearer "})
        assert status == 403 and "HEAPBOT_ALERTMANAGER_TOKEN" in answer["error"]


# -- item 3: the Alertmanager hook, allow lists, bursts -------------------------------------


async def test_alertmanager_hook_is_off_until_a_token_or_the_open_opt_in(
        tmp_path: Path, redis_url: str, caplog: pytest.LogCaptureFixture) -> None:
    body = json.dumps(alertmanager_payload()).encode()
    closed = Settings(config_path=write_payments_registry(tmp_path))
    async with _webhook_app(closed, redis_url) as url:
        status, answer = await _post(f"{url}/hooks/alertmanager", body)
        assert status == 403, answer  # was 202: anyone reaching the port could page
        assert "HEAPBOT_ALERTMANAGER_TOKEN" in answer["error"]
        assert "HEAPBOT_ALERTMANAGER_OPEN" in answer["error"]

    caplog.set_level(logging.WARNING, logger="bot.alerts.webhooks")
    opened = Settings(config_path=write_payments_registry(tmp_path), alertmanager_open=True)
    async with _webhook_app(opened, redis_url) as url:
        assert any("HEAPBOT_ALERTMANAGER_OPEN is set" in r.getMessage() for r in caplog.records)
        status, answer = await _post(f"{url}/hooks/alertmanager", body)
        assert status == 202, answer


RESTRICTED_REGISTRY = """\
services:
  vault:
    targets: ["{target}"]
    allow_channels: [C0OPS]
  ledger:
    targets: ["{target}"]
    channel: C0LEDGER
    allow_channels: [C0LEDGER]
  demo:
    targets: ["{target}"]
    channel: C0DEMO
"""


@contextlib.asynccontextmanager
async def _alert_worker(tmp_path: Path, redis_url: str, demo_service: Any, standin: Any,
                        **config: Any) -> AsyncIterator[tuple[Any, JobQueue]]:
    """A Runtime and one job worker posting to the Slack stand-in; yields (runtime, queue)."""
    from bot.runtime import Runtime
    from bot.slack.client import build_web_client

    path = tmp_path / "heapbot.yaml"
    path.write_text(RESTRICTED_REGISTRY.format(target=demo_service.url))
    settings = Settings(config_path=path, redis_url=redis_url,
                        slack_bot_token=SecretStr("xoxb-test"), slack_api_url=standin.api_url)
    runtime = await Runtime.create(settings)
    queue_config = QueueSettings(claim_idle_seconds=10, consumer_name="alerts-security",
                                 **config)
    worker = start_worker(runtime, settings, build_web_client(settings), config=queue_config)
    try:
        yield runtime, queue_config.queue(runtime.store.redis)
    finally:
        await stop_worker(worker)
        await runtime.close()


def _alert(service: str, key: str, title: str = "HeapGrowing") -> AlertJob:
    return AlertJob(source="alertmanager", service=service, status="firing", incident_key=key,
                    title=title, summary=f"{title} on {service}")


async def _until_done(queue: JobQueue, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while await queue.depth() > 0:
        assert time.monotonic() < deadline, "alert jobs did not finish in time"
        await asyncio.sleep(0.2)


@pytest.mark.slow
async def test_alert_for_a_restricted_service_posts_only_into_an_allowed_channel(
        tmp_path: Path, redis_url: str, demo_service: Any, slack_standin: Any,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="bot.alerts.paged")
    async with _alert_worker(tmp_path, redis_url, demo_service, slack_standin,
                             alert_channel="C0GENERAL") as (runtime, queue):
        await _alert("vault", "am:vault").enqueue(queue)
        await _alert("ledger", "am:ledger").enqueue(queue)
        await _until_done(queue)
        # Before: vault's summary, top table, goroutines, chart and .pb.gz went to #general.
        assert slack_standin.posts("C0GENERAL") == []
        assert any("alert for vault not posted" in r.getMessage()
                   and "allow_channels (C0OPS)" in r.getMessage() for r in caplog.records)
        assert (await runtime.history("vault", 5)) != []  # captured anyway, kept in history
        ledger = [p for p in slack_standin.posts("C0LEDGER") if not p.get("thread_ts")]
        assert len(ledger) == 1 and "ledger" in ledger[0]["text"]


@pytest.mark.slow
async def test_a_burst_of_new_alert_groups_opens_at_most_three_threads(
        tmp_path: Path, redis_url: str, demo_service: Any, slack_standin: Any) -> None:
    async with _alert_worker(tmp_path, redis_url, demo_service, slack_standin,
                             alert_max_new_incidents=3) as (_runtime, queue):
        for n in range(20):  # 20 distinct groupKeys: before, 20 threads and ~120 posts
            await _alert("demo", f"am:burst-{n}", title=f"Burst{n}").enqueue(queue)
        await _until_done(queue, timeout=240)
    posts = slack_standin.posts("C0DEMO")
    top = {ts: p for p, ts in zip(posts, slack_standin.post_ts("C0DEMO"), strict=True)
           if not p.get("thread_ts")}
    assert len(top) == 3, [p["text"][:80] for p in top.values()]
    folded = [p for p in posts if p.get("thread_ts") and "Also firing" in p["text"]]
    assert len(folded) == 17
    assert {p["thread_ts"] for p in folded} <= set(top)
    assert "at most 3 new threads per service every 10 minutes" in json.dumps(folded[0])


# -- items 6, 7, 13: `heapbot serve` as a child process -------------------------------------


class Served:
    """A `heapbot serve` child: its URL(s), log and process."""

    def __init__(self, process: subprocess.Popen[bytes], url: str, log_path: Path,
                 internal_url: str = "") -> None:
        self.process = process
        self.url = url
        self.internal_url = internal_url
        self.log_path = log_path


@contextlib.asynccontextmanager
async def _heapbot_serve(tmp_path: Path, redis_url: str, standin: Any,
                         nofile: int | None = None, **env: str) -> AsyncIterator[Served]:
    port = free_port()
    registry = tmp_path / "heapbot.yaml"
    registry.write_text("services:\n  payments:\n    targets: [\"http://127.0.0.1:9\"]\n")
    full_env = {**os.environ, "SLACK_BOT_TOKEN": "xoxb-serve", "SLACK_SIGNING_SECRET":
                SIGNING_SECRET, "SLACK_API_URL": standin.api_url, "HEAPBOT_HOST": "127.0.0.1",
                "HEAPBOT_PORT": str(port), "REDIS_URL": redis_url,
                "HEAPBOT_CONFIG": str(registry), "HEAPBOT_DATA_DIR": str(tmp_path / "data"),
                "HEAPBOT_LOG_FORMAT": "text", "HEAPBOT_ALERTMANAGER_TOKEN": AM_TOKEN,
                "HEAPBOT_WEBHOOK_TOKEN": HOOK_TOKEN, **env}
    full_env.pop("SLACK_APP_TOKEN", None)

    def limit_fds() -> None:  # the pod's ulimit, as in the attack review
        if nofile is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "bot", "serve"], env=full_env,
                                   cwd=ROOT, stdout=log, stderr=log, preexec_fn=limit_fds)
    internal = env.get("HEAPBOT_INTERNAL_PORT", "")
    served = Served(process, f"http://127.0.0.1:{port}", log_path,
                    f"http://127.0.0.1:{internal}" if internal else "")
    try:
        await wait_until_serving(served.url, process, log_path)
        yield served
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(process.wait, 20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


async def _healthz_seconds(url: str, timeout: float = 5.0) -> float:
    """Seconds until /healthz answered 200 on a fresh connection (``timeout`` if never)."""
    started = time.perf_counter()
    try:
        async with aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=timeout)) as session, \
                session.get(url + "/healthz") as resp:
            assert resp.status == 200
    except (TimeoutError, aiohttp.ClientError):
        return timeout
    return time.perf_counter() - started


def _raise_fd_limit(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))


@contextlib.asynccontextmanager
async def _half_open(port: int, count: int) -> AsyncIterator[list[socket.socket]]:
    """``count`` connections that each send half a request head and then nothing.

    Sends are retried until each connection is established (a busy server's accept
    backlog makes some connects take a SYN retry), for at most 30 s.
    """
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                sock.connect(("127.0.0.1", port))
            socks.append(sock)
        waiting = list(socks)
        deadline = time.monotonic() + 30
        while waiting and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            for sock in list(waiting):
                with contextlib.suppress(OSError):
                    sock.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
                    waiting.remove(sock)
        yield socks
    finally:
        for sock in socks:
            sock.close()


@pytest.mark.slow
async def test_healthz_answers_under_1100_half_open_connections(
        tmp_path: Path, redis_url: str, slack_standin: Any) -> None:
    _raise_fd_limit(4096)
    async with _heapbot_serve(tmp_path, redis_url, slack_standin, nofile=1024,
                              HEAPBOT_HTTP_HEADER_TIMEOUT_SECONDS="60") as served:
        port = int(served.url.rsplit(":", 1)[1])
        async with _half_open(port, 1100):
            deadline = time.monotonic() + 30  # until the server has reached its limit
            while "HTTP connection limit" not in served.log_path.read_text():
                assert time.monotonic() < deadline, served.log_path.read_text()[-2000:]
                await asyncio.sleep(0.2)
            await asyncio.sleep(1.0)  # and the accept burst is over: steady state
            # Before: EMFILE at ~1,000 descriptors; /healthz and /slack/events timed out.
            latencies = [await _healthz_seconds(served.url) for _ in range(5)]
            assert max(latencies) < 3.0, latencies  # before: never answered (5 s timeout)
            print(f"\n/healthz under 1,100 half-open connections (fd limit 1024): "
                  f"max {max(latencies) * 1000:.0f} ms of 5")
            async with aiohttp.ClientSession() as session, session.post(
                    served.url + "/slack/events", data=b"x",
                    headers={"X-Slack-Request-Timestamp": "1"}) as resp:
                assert resp.status == 401
        log_text = served.log_path.read_text()
    assert "HTTP connection limit" in log_text
    assert log_text.count("accepting a connection failed") <= 10
    assert "Traceback" not in log_text


async def test_slow_headers_and_slow_bodies_are_cut_off(tmp_path: Path, redis_url: str,
                                                         slack_standin: Any) -> None:
    async with _heapbot_serve(tmp_path, redis_url, slack_standin,
                              HEAPBOT_HTTP_HEADER_TIMEOUT_SECONDS="1",
                              HEAPBOT_HTTP_BODY_TIMEOUT_SECONDS="1") as served:
        port = int(served.url.rsplit(":", 1)[1])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
        started = time.monotonic()
        assert await asyncio.wait_for(reader.read(), 10) == b""  # closed: was held 150 s+
        assert time.monotonic() - started < 5
        writer.close()

        for path, auth in (("/hooks/deploy", f"Bearer {HOOK_TOKEN}"), ("/slack/events", "")):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n"
                         f"Content-Type: application/json\r\nAuthorization: {auth}\r\n"
                         f"X-Slack-Request-Timestamp: {int(time.time())}\r\n\r\n{{".encode())
            started = time.monotonic()
            answer = await asyncio.wait_for(reader.read(200), 10)  # was held 150 s+
            assert answer.startswith(b"HTTP/1.1 408"), (path, answer[:200])
            assert time.monotonic() - started < 5
            writer.close()


def test_accept_errors_are_logged_at_most_once_per_interval(
        caplog: pytest.LogCaptureFixture) -> None:
    """The EMFILE retry logged 354,962 ERROR lines in 74 s; now one line per 10 s, counted."""
    caplog.set_level(logging.ERROR)
    loop = asyncio.new_event_loop()
    try:
        handler = _AcceptErrorFilter(interval=10)
        for _ in range(10_000):
            handler(loop, {"message": "socket.accept() out of system resource",
                           "exception": OSError(24, "Too many open files")})
        handler.last -= 10  # the interval has passed
        handler(loop, {"message": "socket.accept() out of system resource",
                       "exception": OSError(24, "Too many open files")})
    finally:
        loop.close()
    lines = [r.getMessage() for r in caplog.records if "accepting a connection" in r.getMessage()]
    assert len(lines) == 2 and "9999 more since the last report" in lines[1]


def _big_alertmanager_body(n: int) -> bytes:
    alerts = [{"status": "firing", "labels": {"alertname": "X", "service": f"svc-{i}",
                                              "app": f"app-{i}", "job": f"job-{i}"}}
              for i in range(n)]
    return json.dumps({"version": "4", "status": "firing", "alerts": alerts}).encode()


@pytest.mark.slow
async def test_ten_8000_alert_bodies_keep_healthz_fast(tmp_path: Path, redis_url: str,
                                                       slack_standin: Any) -> None:
    body = _big_alertmanager_body(8000)
    assert len(body) < 1024 * 1024
    async with _heapbot_serve(tmp_path, redis_url, slack_standin) as served:
        size_before = served.log_path.stat().st_size

        def one() -> dict[str, Any]:  # plain threads: the test's own loop stays free to poll
            request = urllib.request.Request(
                served.url + "/hooks/alertmanager", data=body, method="POST",
                headers={**BEARER, "Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=60) as resp:
                assert resp.status == 200
                return json.loads(resp.read())

        async def flood() -> list[dict[str, Any]]:
            return await asyncio.gather(*(asyncio.to_thread(one) for _ in range(10)))

        task = asyncio.create_task(flood())
        latencies = []
        while not task.done():
            latencies.append(await _healthz_seconds(served.url))
            await asyncio.sleep(0.02)
        answers = await task
        grown = served.log_path.stat().st_size - size_before
    # Before: /healthz stalled 6.3 s and the log grew 4.6 MB (every tried value logged).
    # Bounded loosely: CI shares 2 cores with other jobs; the stall this guards against
    # was 6.3 s on an idle machine (each unknown value ran difflib on the event loop).
    assert max(latencies) < 2.5, (max(latencies), len(latencies))
    assert grown < 20_000, grown
    assert answers[0]["alerts_not_looked_at"] == 7800
    assert len(answers[0]["tried"]) <= 20
    print(f"\n10 x 8,000-alert bodies: /healthz max {max(latencies) * 1000:.0f} ms over "
          f"{len(latencies)} polls; log grew {grown} bytes")


async def test_internal_port_serves_hooks_and_metrics_apart_from_slack(
        tmp_path: Path, redis_url: str, slack_standin: Any) -> None:
    internal = free_port()
    async with _heapbot_serve(tmp_path, redis_url, slack_standin,
                              HEAPBOT_INTERNAL_PORT=str(internal),
                              HEAPBOT_METRICS_TOKEN="metrics-token") as served:
        deploy = json.dumps({"service": "payments", "version": "v9"}).encode()
        auth = {"Authorization": f"Bearer {HOOK_TOKEN}"}
        status, _ = await _post(served.url + "/hooks/deploy", deploy, auth)
        assert status == 404  # the public port no longer takes webhooks
        status, answer = await _post(served.internal_url + "/hooks/deploy", deploy, auth)
        assert status == 202, answer
        async with aiohttp.ClientSession() as session:
            async with session.get(served.url + "/metrics") as resp:
                assert resp.status == 404
            async with session.get(served.internal_url + "/metrics") as resp:
                assert resp.status == 401
            async with session.get(served.internal_url + "/metrics",
                                   headers={"Authorization": "Bearer metrics-token"}) as resp:
                assert resp.status == 200 and "heapbot_" in await resp.text()
            async with session.get(served.url + "/healthz") as resp:
                assert resp.status == 200


async def test_metrics_need_the_token_when_one_is_set(slack_standin: Any) -> None:
    settings = Settings(slack_bot_token=SecretStr("xoxb-test"),
                        slack_signing_secret=SecretStr(SIGNING_SECRET),
                        slack_api_url=slack_standin.api_url,
                        metrics_token=SecretStr("scrape-me"))
    running = await RunningWebApp(build_web_app(None, settings)).start()
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(running.url + "/metrics") as resp:
                assert resp.status == 401  # was 200 for anyone on the public port
                assert "HEAPBOT_METRICS_TOKEN" in await resp.text()
            async with session.get(running.url + "/metrics",
                                   headers={"Authorization": "Bearer scrape-me"}) as resp:
                assert resp.status == 200
    finally:
        await running.stop()


# -- item 10: /slack/events before signature verification -----------------------------------


async def test_undecodable_slack_requests_answer_4xx_without_a_traceback(
        slack_standin: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    settings = Settings(slack_bot_token=SecretStr("xoxb-test"),
                        slack_signing_secret=SecretStr(SIGNING_SECRET),
                        slack_api_url=slack_standin.api_url)
    running = await RunningWebApp(build_web_app(None, settings)).start()
    now = str(int(time.time()))
    cases = [
        (b"command=/heap&text=\xff\xfe", {"X-Slack-Request-Timestamp": now,
                                           "Content-Type": "application/x-www-form-urlencoded"}),
        (b"command=/heap&text=help", {"X-Slack-Request-Timestamp": now,
                                      "Content-Type": "application/x-www-form-urlencoded; "
                                                      "charset=x-bogus"}),
        (b"command=/heap&text=help", {"X-Slack-Request-Timestamp": "abc",
                                      "X-Slack-Signature": "v0=00",
                                      "Content-Type": "application/x-www-form-urlencoded"}),
    ]
    try:
        async with aiohttp.ClientSession() as session:
            for body, headers in cases:  # before: 500 and a logged traceback for each
                async with session.post(running.events_url, data=body,
                                        headers=headers) as resp:
                    assert resp.status in (400, 401), (headers, resp.status)
    finally:
        await running.stop()
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert slack_standin.calls("chat.postMessage") == []


# -- item 11 and 13: huge numbers, replayed PagerDuty events -------------------------------


HUGE = b'{"service": "payments", "version": ' + b"9" * 5000 + b"}"


@pytest.mark.parametrize("hook", ["alertmanager", "pagerduty", "deploy", "capture"])
async def test_a_5000_digit_number_to_any_hook_is_a_400(
        hooks: tuple[str, aioredis.Redis], hook: str) -> None:
    url, redis = hooks
    headers = {"alertmanager": BEARER, "deploy": {"Authorization": f"Bearer {HOOK_TOKEN}"},
               "capture": {"Authorization": f"Bearer {HOOK_TOKEN}"},
               "pagerduty": {"X-PagerDuty-Signature": pd_signature(HUGE)}}[hook]
    status, answer = await _post(f"{url}/hooks/{hook}", HUGE, headers)
    assert status == 400, answer  # was 500: Python's int-string limit raised ValueError
    assert "number too long" in answer["error"]
    assert await queued(redis) == []


async def test_pagerduty_event_older_than_the_dedupe_window_is_refused(
        hooks: tuple[str, aioredis.Redis]) -> None:
    url, redis = hooks
    stale = (datetime.now(UTC) - timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    body = json.dumps(pagerduty_payload(occurred_at=stale)).encode()
    headers = {"X-PagerDuty-Signature": pd_signature(body)}
    status, answer = await _post(f"{url}/hooks/pagerduty", body, headers)
    # Before: a captured signed event replayed after the 1-hour dedupe window paged again.
    assert status == 400 and "replay is refused" in answer["error"], answer
    undated = json.loads(body)
    del undated["event"]["occurred_at"]
    body = json.dumps(undated).encode()
    sig = "v1=" + hmac.new(PD_SECRET.encode(), body, hashlib.sha256).hexdigest()
    status, answer = await _post(f"{url}/hooks/pagerduty", body, {"X-PagerDuty-Signature": sig})
    assert status == 400 and "occurred_at" in answer["error"]
    assert await queued(redis) == []


async def test_large_bodies_parsed_in_a_worker_process_answer_like_small_ones(
        tmp_path: Path, redis_url: str) -> None:
    """Bodies over 64 KiB are parsed off the event loop; the answers do not change."""
    settings = Settings(config_path=write_payments_registry(tmp_path),
                        alertmanager_token=SecretStr(AM_TOKEN))
    big = _big_alertmanager_body(2000)
    assert len(big) > 64 * 1024
    async with _webhook_app(settings, redis_url) as url:
        status, answer = await _post(f"{url}/hooks/alertmanager", big[:-5], BEARER)
        assert status == 400 and "not valid JSON" in answer["error"]
        deep = b"[" * 40_000 + b"]" * 40_000
        status, answer = await _post(f"{url}/hooks/alertmanager", deep, BEARER)
        assert status == 400 and "nests too deeply" in answer["error"]
        status, answer = await _post(f"{url}/hooks/alertmanager", big, BEARER)
        assert status == 200 and answer["alerts_not_looked_at"] == 1800
