"""The ack of a bad /heap command through Slack: the real Bolt app over HTTP, the live demo.

``/heap top demo --bogus`` used to be acked "capturing demo (1 instance)…" and only
then refused. Now the ack Slack shows at once already names the problem and the
usage, the later answer says the same, and nothing is captured for it.
"""

from __future__ import annotations

import json

import pytest

from handlers import usage_of
from tests.support.slack_standin import LiveSlackBot

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
    # The answer that follows (ephemeral, to the asker) says the same thing.
    answers = await standin.wait_for(lambda: standin.responses() + standin.ephemerals(),
                                     timeout=30)
    assert any("Unknown option `--bogus`" in shown_text(a) for a in answers)
    assert standin.posts(CHANNEL) == [] and standin.files() == []
    assert await live_slack_bot.runtime.store.count("demo") == 0

    # A valid command is still acked with what is about to happen.
    resp = await live_slack_bot.sender.slash_command("top demo 3", channel_id=CHANNEL)
    assert "capturing demo (1 instance)…" in ack_of(resp.text)
    await standin.wait_for(lambda: standin.posts(CHANNEL), timeout=60)
    assert await live_slack_bot.runtime.store.count("demo") == 1
