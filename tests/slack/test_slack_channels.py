"""What Slack sends for a channel in `/heap watch … in #channel`, through the real Bolt app.

With ``should_escape: true`` (both manifests) Slack sends a channel picked from its
list as ``<#C0PAY|payments-oncall>``; with it off, or for a channel Slack does not
know, the plain ``#payments-oncall`` arrives. allow_channels and watches hold ids,
and heapbot cannot look names up (no ``channels:read``), so a plain name gets one
clear message and nothing is stored; it used to be stored as ``#payments-oncall``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.support.slack_standin import SlackStandIn, running_slack_bot

DEPLOY = Path(__file__).parents[2] / "deploy"
REGISTRY = "services:\n  payments:\n    targets: [\"http://127.0.0.1:9\"]\n"


def _ack(body: str) -> str:
    try:
        return str(json.loads(body).get("text", ""))
    except ValueError:
        return body


@pytest.mark.parametrize("name", ["slack-app-manifest.yml", "slack-app-manifest-http.yml"])
def test_manifests_ask_slack_for_channel_and_user_ids(name: str) -> None:
    manifest = yaml.safe_load((DEPLOY / name).read_text())
    (heap,) = [c for c in manifest["features"]["slash_commands"] if c["command"] == "/heap"]
    assert heap["should_escape"] is True


async def test_a_plain_channel_name_is_refused_and_a_linked_one_stored_by_id(
        slack_standin: SlackStandIn, redis_url: str, tmp_path: Path) -> None:
    from bot.watchlist import WatchStore

    async with running_slack_bot(slack_standin, redis_url, REGISTRY, tmp_path) as bot:
        watches = WatchStore(bot.runtime.store.redis)
        # should_escape false (or a channel Slack does not know): the name as typed.
        resp = await bot.sender.slash_command("watch payments every 15m in #payments-oncall",
                                              channel_id="C0HEAP")
        ack = _ack(resp.text)
        assert resp.status == 200
        assert "heapbot cannot tell which channel `#payments-oncall` is" in ack, ack
        assert "C0123ABCD" in ack and "Setting up a watch" not in ack
        assert await watches.get("payments") is None

        # should_escape true: Slack links the channel; the watch holds its id.
        resp = await bot.sender.slash_command(
            "watch payments every 15m in <#C0PAY123|payments-oncall>", channel_id="C0HEAP")
        assert "Setting up a watch on payments" in _ack(resp.text)
        answers = await slack_standin.wait_for(
            lambda: [a for a in slack_standin.posts("C0HEAP") + slack_standin.ephemerals()
                     + slack_standin.responses()
                     if "Watching payments every 15m" in json.dumps(a)] or None, timeout=30)
        assert "C0PAY123" in json.dumps(answers[0])
        watch = await watches.get("payments")
        assert watch is not None and watch.channel == "C0PAY123"
        await watches.remove("payments")
