"""The ack of a bad /heap command through Slack: the real Bolt app over HTTP, the live demo.

``/heap top demo --bogus`` used to be acked "capturing demo (1 instance)…" and only
then refused; ``/heap diff demo since 1h`` (no capture that old) still was, since the
check reads Redis. Now every check ``run`` makes before working (handlers.preflight)
runs before the ack, within HEAPBOT_SLACK_PREFLIGHT_SECONDS: a refused command is
answered by its ack alone, nothing runs and nothing is posted later. When the checks
take longer (Slack's user-group lookup or Redis slow) the ack is the usual one and
the command answers later.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from handlers import usage_of
from tests.support.slack_standin import LiveSlackBot, SlackStandIn, running_slack_bot

pytestmark = pytest.mark.slow

CHANNEL = "C0PAYMENTS"


def ack_of(text: str) -> str:
    """The ack's text from the HTTP response body Bolt sent back to Slack."""
    try:
        return str(json.loads(text).get("text", ""))
    except ValueError:
        return text


def shown_text(message: dict) -> str:
    return message.get("text", "") + json.dumps(message.get("blocks", []))


async def test_a_bad_option_is_named_in_the_ack_and_nothing_is_captured(
        live_slack_bot: LiveSlackBot) -> None:
    standin = live_slack_bot.standin
    resp = await live_slack_bot.sender.slash_command("top demo --bogus", channel_id=CHANNEL)
    ack = ack_of(resp.text)
    assert resp.status == 200
    assert "Unknown option `--bogus`" in ack and usage_of("top") in ack
    assert "capturing" not in ack

    # A valid command is still acked with what is about to happen.
    resp = await live_slack_bot.sender.slash_command("top demo 3", channel_id=CHANNEL)
    assert "capturing demo (1 instance)…" in ack_of(resp.text)
    await standin.wait_for(lambda: standin.posts(CHANNEL), timeout=60)
    assert await live_slack_bot.runtime.store.count("demo") == 1
    # The refusal was the ack alone: nothing about it followed (the answer to the bad
    # option, which needs no capture, would have come before the capture's post).
    later = standin.responses() + standin.ephemerals() + standin.posts(CHANNEL)
    assert not any("--bogus" in shown_text(a) for a in later), later


async def test_a_since_base_that_is_not_stored_is_refused_in_the_ack(
        live_slack_bot: LiveSlackBot) -> None:
    """The check reads Redis: the ack waits for it (within the budget) and is the refusal."""
    standin = live_slack_bot.standin
    resp = await live_slack_bot.sender.slash_command("diff demo since 1h", channel_id=CHANNEL)
    ack = ack_of(resp.text)
    assert resp.status == 200
    assert "`demo` has no capture from 1h ago or earlier." in ack, ack
    assert "capturing" not in ack

    # A later command's answer lands; the refused one started nothing and posted nothing.
    resp = await live_slack_bot.sender.slash_command("top demo 3", channel_id=CHANNEL)
    assert "capturing demo (1 instance)…" in ack_of(resp.text)
    await standin.wait_for(lambda: standin.posts(CHANNEL), timeout=60)
    later = standin.responses() + standin.ephemerals() + standin.posts(CHANNEL)
    assert not any("no capture from 1h" in shown_text(a) for a in later), later
    assert await live_slack_bot.runtime.store.count("demo") == 1  # top's capture only


async def test_checks_slower_than_the_budget_ack_as_usual_and_answer_later(
        slack_standin: SlackStandIn, redis_url: str, tmp_path: Path) -> None:
    """Slack's user-group lookup is rate-limited (Retry-After 8 s): the ack does not wait
    for it. The asker is no member, so waiting would have made the ack the refusal."""
    registry = ("services:\n  vault:\n    targets: [\"http://127.0.0.1:9\"]\n"
                "    allow_channels: [C0OPS]\n    allow_usergroups: [S0SRE]\n")
    slack_standin.usergroups = {"S0SRE": ["U0SRE"]}
    slack_standin.fail("usergroups.users.list", status=429, retry_after=8, times=1)
    async with running_slack_bot(slack_standin, redis_url, registry, tmp_path) as bot:
        resp = await bot.sender.slash_command("history vault", channel_id=CHANNEL,
                                              user_id="U0ALICE")
        ack = ack_of(resp.text)
        assert "Reading the stored history of vault…" in ack, ack
        assert "may not" not in ack and "allowed" not in ack
        # The command ran after the ack and refused the asker, privately.
        answers = await slack_standin.wait_for(
            lambda: [a for a in slack_standin.responses() + slack_standin.ephemerals()
                     if "vault" in shown_text(a)] or None, timeout=30)
        assert slack_standin.posts(CHANNEL) == []
        assert "Reading the stored history" not in shown_text(answers[0])
