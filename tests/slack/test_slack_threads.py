"""Threads through Slack with the live demo: a capture starts a thread, follow-ups land in it.

Uses /heap capture and goroutines, which need no top/diff engine; test_slack_flow.py
covers /heap top, Diff and Download.
"""

from __future__ import annotations

import json
import time

import pytest

from bot.slack.threads import thread_key
from tests.slack.test_slack_flow import CHANNEL, buttons
from tests.support.slack_standin import LiveSlackBot

pytestmark = pytest.mark.slow


async def test_capture_starts_a_thread_that_follow_ups_reply_in(live_slack_bot: LiveSlackBot):
    standin = live_slack_bot.standin
    resp = await live_slack_bot.sender.slash_command("capture demo", channel_id=CHANNEL)
    assert resp.status == 200 and "capturing demo" in resp.text
    [post] = await standin.wait_for(lambda: standin.posts(CHANNEL), timeout=60)
    assert post.get("thread_ts") is None and "demo" in post["text"]
    first_ts = standin.post_ts(CHANNEL)[0]
    assert await live_slack_bot.redis_value(thread_key(CHANNEL, first_ts)) == b"demo"

    # The Goroutines button on the capture message answers in its thread.
    goroutines = buttons(post["blocks"])["Goroutines"]
    resp = await live_slack_bot.sender.block_action(value=goroutines["value"], message_ts=first_ts,
                                              channel_id=CHANNEL,
                                              action_id=goroutines["action_id"])
    assert resp.status == 200
    [button_reply] = await standin.wait_for(lambda: standin.posts(CHANNEL)[1:], timeout=60)
    assert button_reply["thread_ts"] == first_ts
    count = live_bot_goroutine_count(button_reply["text"])

    # @heapbot goroutines in the thread names no service; the thread says which.
    resp = await live_slack_bot.sender.app_mention("goroutines", channel_id=CHANNEL,
                                             thread_ts=first_ts)
    assert resp.status == 200
    [mention_reply] = await standin.wait_for(lambda: standin.posts(CHANNEL)[2:], timeout=60)
    assert mention_reply["thread_ts"] == first_ts
    assert "demo" in mention_reply["text"]
    assert live_bot_goroutine_count(mention_reply["text"]) > 0 and count > 0


async def test_mention_outside_any_known_thread_asks_for_the_service(live_slack_bot: LiveSlackBot):
    standin = live_slack_bot.standin
    await live_slack_bot.sender.app_mention("goroutines", channel_id=CHANNEL,
                                      thread_ts="1600000000.000001")
    [answer] = await standin.wait_for(standin.ephemerals, timeout=30)
    assert answer["thread_ts"] == "1600000000.000001"
    assert "needs a SERVICE" in answer["text"]
    assert standin.posts() == []


def live_bot_goroutine_count(text: str) -> int:
    """The N of "demo: N goroutines" in a goroutines reply."""
    import re

    match = re.search(r"([\d,]+) goroutines", text)
    assert match, text
    return int(match.group(1).replace(",", ""))


async def test_allow_listed_user_group_opens_a_service_outside_its_channels(
        slack_standin, redis_url, demo_service, tmp_path):
    from tests.support.slack_standin import running_slack_bot

    registry = ("services:\n  demo:\n    targets: [\"" + demo_service.url + "\"]\n"
                "    allow_channels: [C0OPS]\n    allow_usergroups: [S0SRE]\n")
    slack_standin.usergroups = {"S0SRE": ["U0SRE", "U0BOB"]}
    async with running_slack_bot(slack_standin, redis_url, registry, tmp_path) as bot:
        resp = await bot.sender.slash_command("history demo", channel_id="C0RANDOM",
                                              user_id="U0EVE")
        denied = json.loads(resp.text)  # refused before the ack: the ack is the answer
        assert "`demo` may only be profiled from" in denied["text"]
        assert denied["response_type"] == "ephemeral"

        await bot.sender.slash_command("history demo", channel_id="C0RANDOM", user_id="U0SRE")
        # The group member gets the answer, privately: everyone in #C0RANDOM would read a
        # post, and demo's data goes into no channel outside allow_channels (issue 17).
        [allowed] = await slack_standin.wait_for(slack_standin.responses, timeout=30)
        assert "captures of demo" in allowed["text"]
        assert allowed["response_type"] == "ephemeral"
        assert slack_standin.posts("C0RANDOM") == []
        lookups = slack_standin.calls("usergroups.users.list")
        assert [r.body["usergroup"] for r in lookups] == ["S0SRE"]  # cached for the 2nd user


async def test_socket_mode_command_is_acked_on_the_socket_and_posted(
        slack_standin, redis_url, demo_service, tmp_path):
    from tests.support.slack_standin import running_slack_bot

    registry = "services:\n  demo:\n    targets: [\"" + demo_service.url + "\"]\n"
    async with running_slack_bot(slack_standin, redis_url, registry, tmp_path,
                                 socket_mode=True):
        await slack_standin.wait_socket()
        payload = {"token": "legacy", "team_id": "T0HEAPBOT", "channel_id": CHANNEL,
                   "user_id": "U0ALICE", "command": "/heap", "text": "capture demo",
                   "response_url": slack_standin.response_url(), "api_app_id": "AHEAPBOT",
                   "trigger_id": "1.2.3"}
        envelope_id = await slack_standin.send_envelope("slash_commands", payload)
        ack = await slack_standin.wait_ack(envelope_id)
        assert "capturing demo" in ack["payload"]["text"]
        [post] = await slack_standin.wait_for(lambda: slack_standin.posts(CHANNEL), timeout=60)
        assert "Captured demo" in post["text"]

        # An app_mention envelope in that thread answers in the thread.
        first_ts = slack_standin.post_ts(CHANNEL)[0]
        event = {"type": "app_mention", "user": "U0ALICE", "text": "<@UHEAPBOT> goroutines",
                 "ts": "1700000001.000100", "channel": CHANNEL, "thread_ts": first_ts,
                 "event_ts": "1700000001.000100"}
        body = {"token": "legacy", "team_id": "T0HEAPBOT", "api_app_id": "AHEAPBOT",
                "event": event, "type": "event_callback", "event_id": "Ev0SOCKET1",
                "event_time": 1700000001,
                "authorizations": [{"team_id": "T0HEAPBOT", "user_id": "UHEAPBOT",
                                    "is_bot": True}]}
        await slack_standin.wait_ack(await slack_standin.send_envelope("events_api", body))
        [reply] = await slack_standin.wait_for(lambda: slack_standin.posts(CHANNEL)[1:],
                                               timeout=60)
        assert reply["thread_ts"] == first_ts and "demo" in reply["text"]


async def test_redelivered_event_is_answered_once(live_slack_bot: LiveSlackBot):
    """Slack retries an event it thinks was missed (new signature, same event_id)."""
    import asyncio

    standin, sender = live_slack_bot.standin, live_slack_bot.sender
    event = {"type": "app_mention", "user": "U0ALICE", "text": "<@UHEAPBOT> services",
             "ts": "1700000002.000100", "channel": CHANNEL, "event_ts": "1700000002.000100"}
    body = sender.event_body(event)
    first = await sender.send(body, "application/json")
    retry = await sender.send(body, "application/json", timestamp=int(time.time()) + 1,
                              extra_headers={"X-Slack-Retry-Num": "1",
                                             "X-Slack-Retry-Reason": "http_timeout"})
    assert first.status == retry.status == 200
    await standin.wait_for(lambda: standin.posts(CHANNEL), timeout=30)
    await asyncio.sleep(1.5)
    assert len(standin.posts(CHANNEL)) == 1


async def test_replicas_share_replay_and_redelivery_memory(slack_standin, redis_url, tmp_path):
    """A replay, or Slack's retry of an event, can reach another replica: Redis remembers."""
    import asyncio

    from tests.support.slack_standin import running_slack_bot

    registry = "services:\n  payments:\n    targets: [\"http://127.0.0.1:9\"]\n"
    async with running_slack_bot(slack_standin, redis_url, registry, tmp_path) as one, \
            running_slack_bot(slack_standin, redis_url, registry, tmp_path) as two:
        first = await one.sender.slash_command("help", channel_id=CHANNEL)
        assert first.status == 200
        replayed = await two.sender.send_raw(first.body, first.request_headers)
        assert replayed.status == 401

        event = {"type": "app_mention", "user": "U0ALICE", "text": "<@UHEAPBOT> services",
                 "ts": "1700000003.000100", "channel": CHANNEL,
                 "event_ts": "1700000003.000100"}
        body = one.sender.event_body(event)
        assert (await one.sender.send(body, "application/json")).status == 200
        retry = await two.sender.send(body, "application/json", timestamp=int(time.time()) + 1,
                                      extra_headers={"X-Slack-Retry-Num": "1"})
        assert retry.status == 200
        await slack_standin.wait_for(lambda: slack_standin.posts(CHANNEL), timeout=30)
        await asyncio.sleep(1.5)
        assert len(slack_standin.posts(CHANNEL)) == 1


async def test_a_failed_group_lookup_is_retried_soon_not_cached_for_the_full_ttl(
        slack_standin) -> None:
    import asyncio
    from pathlib import Path

    from pydantic import SecretStr

    from bot.registry import parse_registry
    from bot.settings import Settings
    from bot.slack.client import build_web_client
    from bot.slack.usergroups import UserGroups

    class RegistryOnly:
        registry = parse_registry({"services": {"pay": {
            "targets": ["http://127.0.0.1:1"], "allow_usergroups": ["S0SRE"]}}},
            Path("heapbot.yaml"))

    client = build_web_client(Settings(SLACK_BOT_TOKEN=SecretStr("xoxb-test-token"),
                                       SLACK_API_URL=slack_standin.api_url.rstrip("/")))
    slack_standin.usergroups = {"S0SRE": ["U0SRE"]}
    slack_standin.fail("usergroups.users.list", status=200, error="ratelimited")
    groups = UserGroups(client, ttl=300.0, failure_ttl=0.2)
    assert await groups.groups_of(RegistryOnly(), "U0SRE") == ()  # refused: never wider
    assert await groups.groups_of(RegistryOnly(), "U0SRE") == ()  # still inside failure_ttl
    await asyncio.sleep(0.25)
    assert await groups.groups_of(RegistryOnly(), "U0SRE") == ("S0SRE",)
    assert len(slack_standin.calls("usergroups.users.list")) == 1  # one good lookup, cached
    assert await groups.groups_of(RegistryOnly(), "U0SRE") == ("S0SRE",)
    assert len(slack_standin.calls("usergroups.users.list")) == 1
