"""Secrets never reach the JSON log output of a real `heapbot serve` process, nor Redis.

The bot runs as an operator runs it (``python -m bot serve``, JSON logs at
DEBUG) with a Slack bot token, a signing secret, webhook secrets and a pprof
endpoint that needs an Authorization header from the environment. The test
drives commands, a capture, bad signatures and webhook deliveries with right
and wrong secrets, stops the bot with SIGTERM, then checks every log line is
JSON and no secret appears in the logs, in what Slack received, or in Redis.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
from aiohttp import web

from tests.support.redis import all_keys, async_client, free_port
from tests.support.slack_standin import (
    RunningWebApp,
    SignedSender,
    SlackStandIn,
    wait_until_serving,
)

FIXTURES = Path(__file__).parents[1] / "fixtures"
REPO = Path(__file__).resolve().parents[2]
BOT_TOKEN = "xoxb-logs-test-0123456789-abcdef"
SIGNING_SECRET = "signing-secret-logs-9f8e7d6c"
PPROF_AUTH = "Bearer pprof-credential-4b3a2910"
WEBHOOK_TOKEN = "deploy-hook-token-77aa66bb"
AM_TOKEN = "alertmanager-token-55cc44dd"
PD_SECRET = "pagerduty-secret-33ee22ff"
SECRETS = (BOT_TOKEN, SIGNING_SECRET, PPROF_AUTH, PPROF_AUTH.split()[1], WEBHOOK_TOKEN,
           AM_TOKEN, PD_SECRET)
AUTH_SEEN = web.AppKey("auth_seen", list)


async def _guarded_pprof(request: web.Request) -> web.StreamResponse:
    request.app[AUTH_SEEN].append(request.headers.get("Authorization", ""))
    if request.headers.get("Authorization") != PPROF_AUTH:
        return web.Response(status=401, text="unauthorized")
    kind = request.match_info["kind"]
    name = "goroutine.pb.gz" if kind == "goroutine" else (
        "heap_debug1.txt" if request.query.get("debug") == "1" else "heap_1.pb.gz")
    return web.Response(body=(FIXTURES / name).read_bytes())


def _unpacked(value: bytes) -> bytes:
    """Raw profiles are stored gzip-packed (one tag byte first): scan their contents too."""
    for body in (value, value[1:]):
        if body[:2] == b"\x1f\x8b":
            try:
                return gzip.decompress(body)
            except (OSError, EOFError):
                pass
    return value


async def _redis_values(url: str) -> list[bytes]:
    client = async_client(url)
    out: list[bytes] = []
    try:
        for key in await all_keys(client):
            kind = (await client.type(key)).decode()
            if kind == "hash":
                out += [_unpacked(v) for v in (await client.hgetall(key)).values()]
            elif kind == "zset":
                out += [m for m, _ in await client.zrange(key, 0, -1, withscores=True)]
            elif kind == "string":
                out.append(await client.get(key) or b"")
            elif kind == "stream":
                for _, fields in await client.xrange(key):
                    out += list(fields.values())
            elif kind == "list":
                out += await client.lrange(key, 0, -1)
            out.append(key)
    finally:
        await client.aclose()
    return out


async def test_no_secret_in_json_logs_slack_traffic_or_redis(
        slack_standin: SlackStandIn, redis_url: str, tmp_path: Path) -> None:
    seen: list[str] = []
    pprof_app = web.Application()
    pprof_app[AUTH_SEEN] = seen
    pprof_app.router.add_get("/debug/pprof/{kind}", _guarded_pprof)
    pprof = await RunningWebApp(pprof_app).start()

    port = free_port()
    registry = tmp_path / "heapbot.yaml"
    registry.write_text(f"services:\n  secured:\n    targets: [\"{pprof.url}\"]\n"
                        "    auth_header_env: SECURED_PPROF_AUTH\n    cooldown_seconds: 0\n")
    env = {**os.environ, "SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_SIGNING_SECRET": SIGNING_SECRET,
           "SLACK_API_URL": slack_standin.api_url, "HEAPBOT_HOST": "127.0.0.1",
           "HEAPBOT_PORT": str(port), "REDIS_URL": redis_url, "HEAPBOT_CONFIG": str(registry),
           "HEAPBOT_DATA_DIR": str(tmp_path / "data"), "HEAPBOT_LOG_FORMAT": "json",
           "HEAPBOT_LOG_LEVEL": "DEBUG", "SECURED_PPROF_AUTH": PPROF_AUTH,
           "HEAPBOT_WEBHOOK_TOKEN": WEBHOOK_TOKEN, "HEAPBOT_ALERTMANAGER_TOKEN": AM_TOKEN,
           "PAGERDUTY_WEBHOOK_SECRET": PD_SECRET}
    env.pop("SLACK_APP_TOKEN", None)
    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "bot", "serve"], env=env, cwd=REPO,
                                   stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    answers: list[str] = []
    try:
        await wait_until_serving(url, process, log_path)
        async with aiohttp.ClientSession() as session:
            sender = SignedSender(url + "/slack/events", SIGNING_SECRET, slack_standin)
            for text in ("help", "top secured", "capture secured", "services"):
                resp = await sender.slash_command(text, channel_id="C0LOGS")
                assert resp.status == 200, resp.text
                answers.append(resp.text)
            bad = await sender.send(sender.slash_command_body("help"),
                                    "application/x-www-form-urlencoded",
                                    signature="v0=" + "2" * 64)
            answers.append(bad.text)
            hooks = [
                ("/hooks/deploy", {"Authorization": f"Bearer {WEBHOOK_TOKEN}"},
                 b'{"service": "secured", "version": "v9"}'),
                ("/hooks/deploy", {"Authorization": "Bearer not-the-token"}, b"{}"),
                ("/hooks/alertmanager", {"Authorization": f"Bearer {AM_TOKEN}"}, b"{nope"),
            ]
            pd_body = b'{"event": {"event_type": "incident.acknowledged"}}'
            pd_sig = "v1=" + hmac.new(PD_SECRET.encode(), pd_body, hashlib.sha256).hexdigest()
            hooks.append(("/hooks/pagerduty", {"X-PagerDuty-Signature": pd_sig}, pd_body))
            for path, headers, body in hooks:
                async with session.post(url + path, data=body, headers={
                        "Content-Type": "application/json", **headers}) as resp:
                    answers.append(await resp.text())
        await slack_standin.wait_for(lambda: len(slack_standin.posts("C0LOGS")) >= 2,
                                     timeout=60)
        process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(process.wait, 30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(5)
        await pprof.stop()

    assert PPROF_AUTH in seen  # the credential really was used
    lines = [ln for ln in log_path.read_text().splitlines() if ln.strip()]
    assert lines
    for line in lines:
        json.loads(line)  # JSON log output, one object per line
        assert not any(s in line for s in SECRETS), line
    for answer in answers:
        assert not any(s in answer for s in SECRETS), answer
    for request in slack_standin.requests:  # the token belongs in the Authorization header only
        sent = json.dumps(request.body) + request.raw.decode("utf-8", "replace")
        assert not any(s in sent for s in SECRETS), request.method
    values = await _redis_values(redis_url)
    assert any(b"secured" in v for v in values)  # the capture was stored
    for value in values:
        assert not any(s.encode() in value for s in SECRETS)
