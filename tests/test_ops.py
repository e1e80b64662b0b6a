"""Ops routes over real HTTP (/healthz, /readyz on a real Redis, /metrics) and log redaction."""

from __future__ import annotations

import io
import json
import logging
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client.parser import text_string_to_metric_families

from bot import metrics
from bot.logs import (
    REDACTED,
    configure_logging,
    redact,
    request_context,
    request_id_var,
)
from bot.ops import register_routes
from bot.runtime import Runtime
from bot.settings import Settings


def closed_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def settings_for(tmp_path: Path, **env: str) -> Settings:
    (tmp_path / "heapbot.yaml").write_text(
        "services:\n  demo:\n    targets: [\"http://127.0.0.1:6060\"]\n")
    return Settings(HEAPBOT_CONFIG=tmp_path / "heapbot.yaml", HEAPBOT_DATA_DIR=tmp_path / "data",
                    **env)


async def serve(app: web.Application) -> TestServer:
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    return server


@pytest.fixture
async def runtime(redis_url: str, tmp_path: Path) -> AsyncIterator[Runtime]:
    runtime = await Runtime.create(settings_for(tmp_path, REDIS_URL=redis_url))
    yield runtime
    await runtime.close()


@pytest.fixture
async def ops_url(runtime: Runtime) -> AsyncIterator[str]:
    app = web.Application()
    register_routes(app, runtime)
    server = await serve(app)
    yield str(server.make_url("")).rstrip("/")
    await server.close()


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    """configure_logging into a buffer; the root logger is put back afterwards."""
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    stream = io.StringIO()
    yield stream
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in saved_handlers:
        root.addHandler(handler)
    root.setLevel(saved_level)


async def test_healthz_answers_while_the_process_lives(ops_url: str) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{ops_url}/healthz")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"
    assert response.headers["X-Request-Id"]


async def test_readyz_is_ready_when_redis_answers(ops_url: str) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{ops_url}/readyz")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "ready"
    assert body["checks"]["redis"]["ok"] is True
    assert body["checks"]["redis"]["ping_ms"] >= 0


async def test_readyz_is_503_with_a_reason_when_redis_is_unreachable(tmp_path: Path) -> None:
    url = f"redis://:hunter2-password@127.0.0.1:{closed_port()}/0"
    runtime = await Runtime.create(settings_for(tmp_path, REDIS_URL=url))
    app = web.Application()
    register_routes(app, runtime)
    server = await serve(app)
    try:
        async with httpx.AsyncClient() as client:
            response = await client.get(str(server.make_url("/readyz")))
    finally:
        await server.close()
        await runtime.close()
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "not ready"
    assert "cannot be reached" in body["reason"]
    assert "hunter2-password" not in response.text


async def test_readyz_follows_redis_going_down_and_coming_back(redis_server: Any,
                                                               ops_url: str) -> None:
    if not getattr(redis_server, "restartable", False):
        pytest.skip("needs the test-owned redis-server")
    async with httpx.AsyncClient(timeout=10) as client:
        assert (await client.get(f"{ops_url}/readyz")).status_code == 200
        redis_server.stop()
        try:
            down = await client.get(f"{ops_url}/readyz")
        finally:
            redis_server.start()
        back = await client.get(f"{ops_url}/readyz")
    assert down.status_code == 503
    assert "Redis" in down.json()["reason"]
    assert back.status_code == 200


async def test_readyz_reports_slack_not_connected(runtime: Runtime) -> None:
    connected = False
    app = web.Application()
    register_routes(app, runtime, lambda: connected)
    server = await serve(app)
    try:
        async with httpx.AsyncClient() as client:
            before = await client.get(str(server.make_url("/readyz")))
            connected = True
            after = await client.get(str(server.make_url("/readyz")))
    finally:
        await server.close()
    assert before.status_code == 503
    assert "SLACK_BOT_TOKEN" in before.json()["reason"]
    assert before.json()["checks"]["redis"]["ok"] is True
    assert after.status_code == 200
    assert after.json()["checks"]["slack"] == {"ok": True}


async def test_metrics_serves_heapbot_counters_in_prometheus_format(ops_url: str) -> None:
    def current(text: str) -> float:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if (sample.name == "heapbot_commands_total"
                        and sample.labels == {"command": "ops-test", "outcome": "ok"}):
                    return sample.value
        return 0.0

    async with httpx.AsyncClient() as client:
        before = await client.get(f"{ops_url}/metrics")
        metrics.COMMANDS.labels("ops-test", "ok").inc(3)
        after = await client.get(f"{ops_url}/metrics")
    assert after.status_code == 200
    assert after.headers["Content-Type"].startswith("text/plain; version=")
    assert current(after.text) == current(before.text) + 3
    assert "# TYPE heapbot_capture_seconds histogram" in after.text
    async with httpx.AsyncClient() as client:
        openmetrics = await client.get(f"{ops_url}/metrics",
                                       headers={"Accept": "application/openmetrics-text"})
    assert openmetrics.headers["Content-Type"].startswith("application/openmetrics-text")
    assert openmetrics.text.rstrip().endswith("# EOF")


async def test_request_log_line_has_request_id_and_no_secrets(log_stream: io.StringIO,
                                                              runtime: Runtime) -> None:
    settings = Settings(SLACK_BOT_TOKEN="xoxb-1111-2222-abcdefSECRET",
                        HEAPBOT_WEBHOOK_TOKEN="hook-secret-4242", HEAPBOT_LOG_FORMAT="json")
    configure_logging(settings, stream=log_stream)
    careless = logging.getLogger("heapbot.test.careless")

    async def echo(request: web.Request) -> web.Response:
        # A careless handler that logs everything it received.
        careless.info("incoming %s %s headers=%s", request.method, request.path_qs,
                      dict(request.headers), extra={"service": "payments"})
        return web.Response(text="ok")

    app = web.Application()
    register_routes(app, runtime)
    app.router.add_get("/echo", echo)
    server = await serve(app)
    try:
        async with httpx.AsyncClient() as client:
            response = await client.get(
                str(server.make_url("/echo?token=hook-secret-4242")),
                headers={"Authorization": "Bearer xoxp-9999-8888-userSECRET",
                         "X-Slack-Token": "xoxb-1111-2222-abcdefSECRET",
                         "X-Request-Id": "req-42"},
            )
    finally:
        await server.close()
    assert response.headers["X-Request-Id"] == "req-42"
    lines = [json.loads(line) for line in log_stream.getvalue().splitlines()
             if "heapbot.test.careless" in line]
    assert len(lines) == 1
    line = lines[0]
    assert line["request_id"] == "req-42"
    assert line["logger"] == "heapbot.test.careless"
    assert line["level"] == "INFO"
    assert line["service"] == "payments"
    assert line["time"].endswith("Z")
    raw = log_stream.getvalue()
    for secret in ("userSECRET", "abcdefSECRET", "hook-secret-4242"):
        assert secret not in raw
    assert REDACTED in line["message"]
    assert "GET /echo?token=" in line["message"]


def test_text_format_carries_request_id_and_redacts(log_stream: io.StringIO) -> None:
    configure_logging(Settings(HEAPBOT_LOG_FORMAT="text"), stream=log_stream)
    log = logging.getLogger("heapbot.test.text")
    with request_context("job-7"):
        log.warning("socket mode url wss://x?ticket=1 with app token xapp-1-A0-123-abc")
        try:
            raise RuntimeError("redis://:pw-in-url@redis:6379/0 refused")
        except RuntimeError:
            log.exception("connect failed")
    assert request_id_var.get() == ""
    out = log_stream.getvalue()
    assert "[job-7]" in out
    assert "xapp-1-A0-123-abc" not in out
    assert "pw-in-url" not in out  # also inside the traceback
    assert "WARNING heapbot.test.text" in out


@pytest.mark.parametrize(("text", "leaked"), [
    ("token xoxb-123-456-abcDEF", "abcDEF"),
    ("refresh xoxe.xoxp-1-Mi0yLTE", "Mi0yLTE"),
    ("refresh xoxe-1-My0xLTI2", "My0xLTI2"),
    ("app xapp-1-A01-234-cafe", "cafe"),
    ("{'Authorization': 'Basic dXNlcjpwYXNz'}", "dXNlcjpwYXNz"),
    ("authorization=opaque-value-1", "opaque-value-1"),
    ("curl -H 'authorization: Bearer eyJhbGciOi.abc.def'", "eyJhbGciOi"),
    ("fetching https://admin:s3cr3t@10.0.0.5:6060/debug/pprof/heap", "s3cr3t"),
])
def test_redact_removes_credentials(text: str, leaked: str) -> None:
    out = redact(text)
    assert leaked not in out
    assert REDACTED in out


@pytest.mark.parametrize("text", [
    "captured payments: 3 instances, inuse 41.20MB, main.leakmapLoadUser",
    "the endpoint needs auth: send it as a bearer token.",
    "Basic authentication and Bearer schemes are both accepted",
])
def test_redact_keeps_ordinary_text(text: str) -> None:
    assert redact(text) == text


@pytest.mark.parametrize(("text", "leaked"), [
    ("Authorization header was Bearer pprof-credential-4b3a2910", "4b3a2910"),
    ("retrying with basic dXNlcjpwYXNz", "dXNlcjpwYXNz"),
    ("bearer abcdefghijklmnopqrstuvwxyz", "abcdefghijklmnopqrstuvwxyz"),
])
def test_redact_still_removes_credentials_after_a_scheme_word(text: str, leaked: str) -> None:
    assert leaked not in redact(text) and REDACTED in redact(text)
