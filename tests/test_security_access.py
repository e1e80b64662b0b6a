"""Who may see and use a restricted service: allow lists on every path (issue 17).

The whole bot runs behind its HTTP endpoint on a real Redis and answers the Slack
stand-in (tests/support/slack_standin.py), which records what the bot posts and can
answer Slack API calls with garbage.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support.slack_standin import SlackStandIn, running_slack_bot

SRE = "S0SRE"
ALLOWED = "C0OPS"
ELSEWHERE = "C0RANDOM"
# Two services: `vault` is open only to #ops and the SRE user group, `open` to everyone.
# Nothing here captures, so the targets need not answer.
REGISTRY = (
    "services:\n"
    "  vault:\n    targets: [\"http://127.0.0.1:9\"]\n"
    f"    allow_channels: [{ALLOWED}]\n    allow_usergroups: [{SRE}]\n"
    "  open:\n    targets: [\"http://127.0.0.1:9\"]\n"
)


def _texts(standin: SlackStandIn) -> list[str]:
    """Every text the bot sent back, in order: posts, ephemerals and response_url answers."""
    return [str(r.body.get("text", "")) for r in standin.requests if r.ok and r.method in
            ("chat.postMessage", "chat.postEphemeral", "response_url")]


async def _answer(bot: Any, standin: SlackStandIn, text: str, **kwargs: Any) -> str:
    """Send one slash command and return the text of the one answer it gets."""
    before = len(_texts(standin))
    await bot.sender.slash_command(text, **kwargs)
    texts = await standin.wait_for(lambda: _texts(standin)[before:] or None, timeout=30)
    return texts[0]


# A failed user-group lookup (issue 17, item 8) ---------------------------------------------

GARBAGE = [
    pytest.param("application/json", "<html><body>502 Bad Gateway</body></html>", 200,
                 id="html-as-json"),
    pytest.param("text/plain", "upstream connect error or disconnect/reset", 200,
                 id="text-plain"),
    pytest.param("application/json", '{"ok": tru', 502, id="truncated-json-502"),
]


@pytest.mark.parametrize(("content_type", "body", "status"), GARBAGE)
async def test_failed_usergroup_lookup_refuses_only_the_restricted_service(
        slack_standin, redis_url, tmp_path, content_type, body, status):
    slack_standin.usergroups = {SRE: ["U0SRE"]}
    slack_standin.fail("usergroups.users.list", status=status, times=100, body=body,
                       content_type=content_type)
    async with running_slack_bot(slack_standin, redis_url, REGISTRY, tmp_path) as bot:
        # Commands that touch no restricted service answer as usual.
        help_text = await _answer(bot, slack_standin, "help", channel_id=ELSEWHERE,
                                  user_id="U0SRE")
        assert "internal error" not in help_text
        assert "/heap top" in help_text
        history = await _answer(bot, slack_standin, "history open", channel_id=ELSEWHERE,
                                user_id="U0SRE")
        assert "No stored captures of open yet" in history

        # The restricted one is refused, saying why, to the asker only.
        denied = await _answer(bot, slack_standin, "history vault", channel_id=ELSEWHERE,
                               user_id="U0SRE")
        assert "could not check whether you are in the user group" in denied
        assert "`vault`" in denied and "Try again in a minute" in denied
        assert not slack_standin.posts(ELSEWHERE) or all(
            "vault" not in p["text"] for p in slack_standin.posts(ELSEWHERE))

        # From its allowed channel it still works: the lookup is not needed there.
        allowed = await _answer(bot, slack_standin, "history vault", channel_id=ALLOWED,
                                user_id="U0SRE")
        assert "No stored captures of vault yet" in allowed

        # The failure is cached: four commands, one lookup.
        lookups = [r for r in slack_standin.requests if r.method == "usergroups.users.list"]
        assert len(lookups) == 1


async def test_usergroup_lookup_recovers_after_the_failure_is_forgotten(slack_standin):
    """A failed lookup is retried after ``failure_ttl``; then membership counts again."""
    import asyncio

    from pydantic import SecretStr

    from bot.registry import parse_registry
    from bot.settings import Settings
    from bot.slack.client import build_web_client
    from bot.slack.usergroups import Membership, UserGroups

    class RegistryOnly:
        registry = parse_registry({"services": {"vault": {
            "targets": ["http://127.0.0.1:9"], "allow_usergroups": [SRE]}}},
            Path("heapbot.yaml"))

    client = build_web_client(Settings(SLACK_BOT_TOKEN=SecretStr("xoxb-test-token"),
                                       SLACK_API_URL=slack_standin.api_url))
    slack_standin.usergroups = {SRE: ["U0SRE"]}
    slack_standin.fail("usergroups.users.list", status=200, body="<html>oops</html>",
                       content_type="application/json")
    groups = UserGroups(client, ttl=300.0, failure_ttl=0.2)
    # Concurrent commands share one lookup.
    first = await asyncio.gather(*(groups.membership(RegistryOnly(), "U0SRE") for _ in range(5)))
    assert first == [Membership(groups=(), unknown=(SRE,))] * 5
    await asyncio.sleep(0.25)
    assert await groups.membership(RegistryOnly(), "U0SRE") == Membership(groups=(SRE,))
    lookups = [r for r in slack_standin.requests if r.method == "usergroups.users.list"]
    assert len(lookups) == 2
