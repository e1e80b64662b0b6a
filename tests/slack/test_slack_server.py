"""The bot's HTTP and Socket Mode surfaces over real sockets, against the Slack stand-in.

These exercise the transport with commands that need no capture (help, a typo);
tests/slack/test_slack_flow.py runs captures of the live demo service through it.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator

import pytest
from pydantic import SecretStr

from bot.serve import build_web_app
from bot.settings import Settings
from bot.slack.server import SLACK_STATE
from tests.support.slack_standin import (
    RunningWebApp,
    SignedSender,
    SlackStandIn,
    wait_until_serving,
)

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"


def slack_settings(standin: SlackStandIn, **extra: str) -> Settings:
    return Settings(SLACK_BOT_TOKEN=SecretStr("xoxb-test-token"),
                    SLACK_SIGNING_SECRET=SecretStr(SECRET), SLACK_API_URL=standin.api_url,
                    **extra)


async def _until_ready(bot: RunningWebApp, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not bot.app[SLACK_STATE].ready:
        assert time.monotonic() < deadline, "bot never finished its Slack startup"
        import asyncio

        await asyncio.sleep(0.02)


@pytest.fixture
async def bot(slack_standin: SlackStandIn) -> AsyncIterator[RunningWebApp]:
    running = await RunningWebApp(build_web_app(None, slack_settings(slack_standin))).start()
    try:
        await _until_ready(running)
        slack_standin.reset()  # drop the startup auth.test
        yield running
    finally:
        await running.stop()


@pytest.fixture
def sender(bot: RunningWebApp, slack_standin: SlackStandIn) -> SignedSender:
    return SignedSender(bot.events_url, SECRET, slack_standin)


async def test_healthz_answers(bot):
    import aiohttp

    async with aiohttp.ClientSession() as session, session.get(bot.url + "/healthz") as resp:
        assert resp.status == 200


async def test_url_verification_echoes_the_challenge(sender):
    resp = await sender.url_verification("3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P")
    assert resp.status == 200
    assert "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P" in resp.text


async def test_bad_signature_is_refused_before_any_work(sender, slack_standin):
    body = sender.slash_command_body("help")
    resp = await sender.send(body, "application/x-www-form-urlencoded",
                             signature="v0=" + "0" * 64)
    assert resp.status == 401
    await _quiet(slack_standin)


async def test_signature_with_another_secret_is_refused(bot, slack_standin):
    other = SignedSender(bot.events_url, "not-the-signing-secret", slack_standin)
    resp = await other.slash_command("top demo")
    assert resp.status == 401
    await _quiet(slack_standin)


async def test_stale_timestamp_is_refused(sender, slack_standin):
    body = sender.slash_command_body("help")
    resp = await sender.send(body, "application/x-www-form-urlencoded",
                             timestamp=int(time.time()) - 6 * 60)
    assert resp.status == 401
    await _quiet(slack_standin)


async def test_replayed_request_is_refused(sender, slack_standin):
    first = await sender.slash_command("help")
    assert first.status == 200
    await slack_standin.wait_for(slack_standin.responses)
    again = await sender.send_raw(first.body, first.request_headers)
    assert again.status == 401
    await _quiet(slack_standin, seconds=0.5)
    assert len(slack_standin.responses()) == 1


async def _quiet(standin: SlackStandIn, seconds: float = 0.3) -> None:
    """Nothing beyond what was already recorded reaches Slack for a while."""
    import asyncio

    count = len(standin.requests)
    await asyncio.sleep(seconds)
    assert [r.method for r in standin.requests[count:]] == []
    if count == 0:
        assert standin.requests == []


async def test_slash_command_is_acked_in_the_response_then_answered(sender, slack_standin):
    def observed(metric_name: str, **labels: str) -> float:
        from prometheus_client import REGISTRY

        return REGISTRY.get_sample_value(metric_name, labels) or 0.0

    acks_before = observed("heapbot_ack_seconds_count")
    replies_before = observed("heapbot_reply_seconds_count", command="help")
    resp = await sender.slash_command("help", channel_id="C0HELP")
    assert resp.status == 200
    assert resp.elapsed < 1.0
    assert "heapbot can do" in json.loads(resp.text)["text"]
    [answer] = await slack_standin.wait_for(slack_standin.responses)
    assert answer["response_type"] == "ephemeral"
    assert "/heap top SERVICE" in answer["text"]
    assert observed("heapbot_ack_seconds_count") == acks_before + 1
    for _ in range(100):  # the reply is timed once its post returned
        if observed("heapbot_reply_seconds_count", command="help") > replies_before:
            break
        await asyncio.sleep(0.02)
    assert observed("heapbot_reply_seconds_count", command="help") == replies_before + 1


async def test_a_typo_gets_one_clear_private_message(sender, slack_standin):
    resp = await sender.slash_command("tpo demo")
    assert resp.status == 200
    [answer] = await slack_standin.wait_for(slack_standin.responses)
    assert "no command `tpo`" in answer["text"] and "/heap top" in answer["text"]
    assert "Traceback" not in answer["text"]
    assert slack_standin.posts() == []


async def test_mention_in_a_thread_answers_in_that_thread(sender, slack_standin):
    resp = await sender.app_mention("help top", channel_id="C0T", thread_ts="1700000000.000042")
    assert resp.status == 200
    [answer] = await slack_standin.wait_for(slack_standin.ephemerals)
    assert (answer["channel"], answer["thread_ts"]) == ("C0T", "1700000000.000042")
    assert answer["user"] == "U0ALICE" and "/heap top SERVICE" in answer["text"]


async def test_button_runs_its_command(sender, slack_standin):
    resp = await sender.block_action(value="help diff", message_ts="1700000000.000007",
                                     action_id="heap_action_0")
    assert resp.status == 200
    [answer] = await slack_standin.wait_for(slack_standin.responses)
    assert "/heap diff SERVICE" in answer["text"]


async def test_socket_mode_acks_over_the_socket_and_replies(slack_standin):
    settings = slack_settings(slack_standin, SLACK_APP_TOKEN="xapp-1-test")
    running = await RunningWebApp(build_web_app(None, settings)).start()
    try:
        await slack_standin.wait_socket()
        await _until_ready(running)
        assert running.app[SLACK_STATE].socket_mode
        response_url = slack_standin.response_url()
        payload = {"token": "legacy", "team_id": "T0HEAPBOT", "channel_id": "C0SOCK",
                   "user_id": "U0ALICE", "command": "/heap", "text": "help",
                   "response_url": response_url, "api_app_id": "AHEAPBOT",
                   "trigger_id": secrets.token_hex(8)}
        envelope_id = await slack_standin.send_envelope("slash_commands", payload)
        ack = await slack_standin.wait_ack(envelope_id)
        assert "heapbot can do" in ack["payload"]["text"]
        [answer] = await slack_standin.wait_for(slack_standin.responses)
        assert "/heap top SERVICE" in answer["text"]
        assert any(r.method == "apps.connections.open" and
                   r.headers.get("Authorization") == "Bearer xapp-1-test"
                   for r in slack_standin.requests)
    finally:
        await running.stop()


async def test_heapbot_serve_answers_slack_and_stops_cleanly(slack_standin, redis_url, tmp_path,
                                                             demo_service):
    """`heapbot serve` as a real process: HTTP mode on HEAPBOT_PORT; SIGTERM lets the
    command in flight post its reply, then exits with 0."""
    import asyncio
    import os
    import signal
    import subprocess
    import sys

    from tests.support.redis import free_port

    port = free_port()
    registry = tmp_path / "heapbot.yaml"
    registry.write_text("services:\n  demo:\n    targets: [\"" + demo_service.url + "\"]\n")
    env = {**os.environ, "SLACK_BOT_TOKEN": "xoxb-serve-test", "SLACK_SIGNING_SECRET": SECRET,
           "SLACK_API_URL": slack_standin.api_url, "HEAPBOT_HOST": "127.0.0.1",
           "HEAPBOT_PORT": str(port), "REDIS_URL": redis_url, "HEAPBOT_CONFIG": str(registry),
           "HEAPBOT_DATA_DIR": str(tmp_path / "data"), "HEAPBOT_LOG_FORMAT": "text"}
    env.pop("SLACK_APP_TOKEN", None)
    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "bot", "serve"], env=env,
                                   stdout=log, stderr=log)
    try:
        url = f"http://127.0.0.1:{port}"
        await wait_until_serving(url, process, log_path, attempts=300)
        sender = SignedSender(url + "/slack/events", SECRET, slack_standin)
        resp = await sender.slash_command("help deploy")
        assert resp.status == 200 and "heapbot can do" in resp.text
        [answer] = await slack_standin.wait_for(slack_standin.responses)
        assert "/heap deploy SERVICE VERSION" in answer["text"]
        resp = await sender.slash_command("capture demo", channel_id="C0DRAIN")
        assert resp.status == 200 and "capturing demo" in resp.text
        process.send_signal(signal.SIGTERM)  # while the capture is (likely) still running
        assert await asyncio.to_thread(process.wait, 30) == 0
        [post] = slack_standin.posts("C0DRAIN")
        assert "Captured demo" in post["text"]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(5)
    log_text = log_path.read_text()
    assert "xoxb-serve-test" not in log_text and SECRET not in log_text
    assert "Traceback" not in log_text
    assert "`token` will be unused" not in log_text  # Bolt's start-up noise (issue 15.9)
    assert f"registry {registry}: 1 service(s)" in log_text  # which file it serves from


def test_heapbot_serve_on_a_taken_port_says_so(slack_standin, redis_url, tmp_path):
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**os.environ, "SLACK_BOT_TOKEN": "xoxb-serve-test",
               "SLACK_SIGNING_SECRET": SECRET, "SLACK_API_URL": slack_standin.api_url,
               "HEAPBOT_HOST": "127.0.0.1", "HEAPBOT_PORT": str(port), "REDIS_URL": redis_url,
               "HEAPBOT_CONFIG": str(tmp_path / "none.yaml"), "HEAPBOT_LOG_FORMAT": "text"}
        env.pop("SLACK_APP_TOKEN", None)
        done = subprocess.run([sys.executable, "-m", "bot", "serve"], env=env,
                              capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr
    assert "Traceback" not in done.stderr


def test_heapbot_serve_without_a_bot_token_says_what_to_set(tmp_path):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("SLACK_")}
    env["HEAPBOT_DATA_DIR"] = str(tmp_path)
    done = subprocess.run([sys.executable, "-m", "bot", "serve"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "SLACK_BOT_TOKEN is not set" in done.stderr and "Traceback" not in done.stderr


async def test_listener_functions_run_without_bolt(slack_standin):
    """The listeners are plain functions: given an ack and a payload they do the whole job."""
    import asyncio

    from bot.slack.client import build_web_client
    from bot.slack.deps import build_deps
    from bot.slack.listeners.actions import on_button
    from bot.slack.listeners.commands import on_heap_command
    from bot.slack.threads import ThreadMemory

    deps = build_deps(None, build_web_client(slack_settings(slack_standin)), ThreadMemory(None))
    acked: list[dict] = []

    async def ack(**kwargs: str) -> None:
        acked.append(kwargs)

    url = slack_standin.response_url()
    await on_heap_command(deps, ack, {"text": "help stats", "channel_id": "C1", "user_id": "U1",
                                      "response_url": url})
    assert acked == [{"text": "Here is what heapbot can do…", "response_type": "ephemeral"}]
    await on_button(deps, ack, {"channel": {"id": "C1"}, "user": {"id": "U1"},
                                "message": {"ts": "1.000001"}, "container": {},
                                "response_url": url}, {"value": "help top"})
    assert acked[1] == {}
    await asyncio.wait_for(deps.runner.drain(), 30)
    texts = [r["text"] for r in slack_standin.responses()]
    assert len(texts) == 2
    assert any("/heap stats SERVICE" in t for t in texts)
    assert any("/heap top SERVICE" in t for t in texts)
