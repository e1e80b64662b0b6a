"""Hostile Slack input through the running bot (aiohttp + Bolt) over real HTTP.

Signed requests come from tests/support/slack_standin.SignedSender; whatever the
bot sends back to Slack is recorded by the stand-in and scanned here. Bad
signatures, stale timestamps and replays are in tests/slack/test_slack_server.py
(the transport's owner); this file adds what a signed but hostile user can do:
ping everyone through echoed arguments, smuggle control characters, send huge
arguments, and profile a service from a channel outside its allow list.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from pydantic import SecretStr

from bot.runtime import Runtime
from bot.serve import build_web_app
from bot.settings import Settings
from bot.slack.server import SLACK_STATE
from tests.support.slack_standin import RunningWebApp, SignedSender, SlackStandIn

SIGNING_SECRET = "c0ffee-signing-secret-for-security-tests"
BOT_TOKEN = "xoxb-security-test-token-123456"
ALLOWED_CHANNEL = "C0PAY"
FIXTURES = Path(__file__).parents[1] / "fixtures"
HITS = web.AppKey("hits", list)

# Slack renders these as pings or links; none may appear in what the bot posts.
PINGS = re.compile(r"<!(channel|here|everyone|subteam\^)|<@U|<#C|(?<![\w\u200b])@(channel|here)\b")
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\u202a-\u202e\u2066-\u2069]")


@dataclass(slots=True)
class SecureBot:
    sender: SignedSender
    standin: SlackStandIn
    hits: list[str]  # paths the profiled service was asked for
    runtime: Any


async def _pprof(request: web.Request) -> web.StreamResponse:
    request.app[HITS].append(request.path_qs)
    kind = request.match_info["kind"]
    name = "goroutine.pb.gz" if kind == "goroutine" else (
        "heap_debug1.txt" if request.query.get("debug") == "1" else "heap_1.pb.gz")
    return web.Response(body=(FIXTURES / name).read_bytes())


@pytest.fixture
async def secure_bot(slack_standin: SlackStandIn, redis_url: str, tmp_path: Path
                     ) -> AsyncIterator[SecureBot]:
    hits: list[str] = []
    service_app = web.Application()
    service_app[HITS] = hits
    service_app.router.add_get("/debug/pprof/{kind}", _pprof)
    service = await RunningWebApp(service_app).start()
    registry = tmp_path / "heapbot.yaml"
    registry.write_text(
        "services:\n"
        f"  payments:\n    targets: [\"{service.url}\"]\n    cooldown_seconds: 0\n"
        f"    allow_channels: [\"{ALLOWED_CHANNEL}\"]\n"
        f"  open:\n    targets: [\"{service.url}\"]\n    cooldown_seconds: 0\n")
    settings = Settings(SLACK_BOT_TOKEN=SecretStr(BOT_TOKEN),
                        SLACK_SIGNING_SECRET=SecretStr(SIGNING_SECRET),
                        SLACK_API_URL=slack_standin.api_url, REDIS_URL=redis_url,
                        HEAPBOT_CONFIG=str(registry), HEAPBOT_DATA_DIR=str(tmp_path / "data"))
    runtime = await Runtime.create(settings)
    bot = await RunningWebApp(build_web_app(runtime, settings, start_worker=False)).start()
    try:
        deadline = time.monotonic() + 10
        while not bot.app[SLACK_STATE].ready and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        slack_standin.reset()
        yield SecureBot(SignedSender(bot.events_url, SIGNING_SECRET, slack_standin),
                        slack_standin, hits, runtime)
    finally:
        await bot.stop()
        await runtime.close()
        await service.stop()


def everything_sent(standin: SlackStandIn) -> str:
    """Every text Slack received from the bot (posts, ephemerals, responses, updates)."""
    return "\n".join(json.dumps(r.body, ensure_ascii=False) for r in standin.requests)


def visible_text(body: dict[str, Any]) -> str:
    """The strings of a message Slack would render (text and every block text)."""
    out: list[str] = [str(body.get("text", ""))]

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("text", "alt_text", "title") and isinstance(value, str):
                    out.append(value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(body.get("blocks", []))
    return "\n".join(out)


def _refusal_in(ack: Any) -> list[dict[str, Any]]:
    """The ack as an answer when it is one: a command refused by the checks before the
    ack is answered by the ack alone (bot/slack/listeners/commands.py); an ack that
    announces work ("capturing demo…", "Working on it…") ends with an ellipsis."""
    try:
        body = json.loads(ack.text)
    except ValueError:
        body = {"text": ack.text}
    return [] if str(body.get("text", "")).endswith("…") else [body]


async def _answers(bot: SecureBot, count: int = 1, timeout: float = 20,
                   acks: Sequence[Any] = ()) -> list[dict[str, Any]]:
    """What the asker was answered: refusals given as the ack, then what was sent later."""
    refusals = [body for ack in acks for body in _refusal_in(ack)]

    def got() -> list[dict[str, Any]]:
        bodies = refusals + bot.standin.responses() + bot.standin.posts() \
            + bot.standin.ephemerals()
        return bodies if len(bodies) >= count else []

    return await bot.standin.wait_for(got, timeout)


INJECTIONS = [
    "<!channel>",
    "top <!channel>",
    "top <!here|here> 5",
    "top <@U0BOSS>",
    "history <!subteam^S0ONCALL|@oncall>",
    "top open --focus <!everyone>",
    "top open --focus @channel",
    "peek <#C0GENERAL|general> main",
    "help <!here>",
]


@pytest.mark.parametrize("text", INJECTIONS)
async def test_arguments_cannot_ping_anyone(secure_bot: SecureBot, text: str) -> None:
    resp = await secure_bot.sender.slash_command(text, channel_id=ALLOWED_CHANNEL)
    assert resp.status == 200
    ack = json.loads(resp.text)["text"] if resp.text.startswith("{") else resp.text
    assert not PINGS.search(ack), ack
    answers = await _answers(secure_bot, acks=[resp])
    for body in answers:
        shown = visible_text(body)
        assert not PINGS.search(shown), shown
        assert "Traceback" not in shown and "internal error" not in shown


CONTROL_INPUTS = [
    "top pay\x00ments",
    "top \u202epayments\u202c",
    "top payments\x1b[31m",
    "history pay\u200bments",
    "top payments \x07\x08 5",
]


@pytest.mark.parametrize("text", CONTROL_INPUTS, ids=[repr(t) for t in CONTROL_INPUTS])
async def test_control_characters_never_reach_slack(secure_bot: SecureBot, text: str) -> None:
    resp = await secure_bot.sender.slash_command(text, channel_id=ALLOWED_CHANNEL)
    assert resp.status == 200
    answers = await _answers(secure_bot, acks=[resp])
    for body in answers:
        shown = visible_text(body)
        assert not CONTROL.search(shown), repr(shown)
        assert "internal error" not in shown


@pytest.mark.parametrize("size", [300, 5_000, 200_000])
async def test_very_long_arguments_get_one_short_answer(secure_bot: SecureBot, size: int) -> None:
    resp = await secure_bot.sender.slash_command("top open --focus " + "a" * size,
                                                 channel_id=ALLOWED_CHANNEL)
    assert resp.status == 200 and resp.elapsed < 3
    [answer] = await _answers(secure_bot, acks=[resp])
    shown = visible_text(answer)
    assert ("long" in shown.lower() and "limit" in shown.lower()) or "characters" in shown
    assert len(shown) < 2000
    assert secure_bot.hits == []  # nothing was fetched for a refused command


async def test_service_outside_its_allow_list_is_refused_before_any_fetch(
        secure_bot: SecureBot) -> None:
    resp = await secure_bot.sender.slash_command("top payments", channel_id="C0RANDOM")
    assert resp.status == 200
    [answer] = await _answers(secure_bot, acks=[resp])
    shown = visible_text(answer)
    assert "payments" in shown and "may only be profiled from" in shown
    assert answer.get("response_type", "ephemeral") == "ephemeral"
    assert secure_bot.standin.posts() == []
    assert secure_bot.hits == []
    for text in ("history payments", "diff payments since deploy", "leaks payments"):
        secure_bot.standin.reset()
        resp = await secure_bot.sender.slash_command(text, channel_id="C0RANDOM")
        [answer] = await _answers(secure_bot, acks=[resp])
        assert "may only be profiled from" in visible_text(answer), text
    assert secure_bot.hits == []


async def test_mention_in_an_unlisted_channel_is_refused_too(secure_bot: SecureBot) -> None:
    await secure_bot.sender.app_mention("top payments", channel_id="C0RANDOM")
    answers = await _answers(secure_bot)
    assert any("may only be profiled from" in visible_text(b) for b in answers)
    assert secure_bot.standin.posts() == [] and secure_bot.hits == []


async def test_tokens_and_secrets_stay_out_of_logs_and_replies(
        secure_bot: SecureBot, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    helped = await secure_bot.sender.slash_command("help", channel_id=ALLOWED_CHANNEL)
    typo = await secure_bot.sender.slash_command("tpo", channel_id=ALLOWED_CHANNEL)
    bad = await secure_bot.sender.send(secure_bot.sender.slash_command_body("help"),
                                       "application/x-www-form-urlencoded",
                                       signature="v0=" + "1" * 64)
    assert bad.status == 401
    await _answers(secure_bot, count=2, acks=[helped, typo])
    secrets_ = (BOT_TOKEN, SIGNING_SECRET)
    for record in caplog.records:
        text = record.getMessage() + repr(record.args) + repr(record.__dict__)
        assert not any(s in text for s in secrets_), record.getMessage()
    sent = "\n".join(visible_text(r.body) for r in secure_bot.standin.requests)
    assert not any(s in sent for s in secrets_)
    assert not any(s in ack.text for s in secrets_ for ack in (helped, typo, bad))
