"""Who may see and use a restricted service: allow lists on every path (issue 17).

The whole bot runs behind its HTTP endpoint on a real Redis and answers the Slack
stand-in (tests/support/slack_standin.py), which records what the bot posts and can
answer Slack API calls with garbage.
"""

from __future__ import annotations

import asyncio
import json
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
    """Send one slash command and return the text of the one answer it gets: the ack
    itself when the checks before it refused the command (an ack announcing work ends
    with "…"), else the first text sent back later."""
    before = len(_texts(standin))
    ack = await bot.sender.slash_command(text, **kwargs)
    try:
        acked = str(json.loads(ack.text).get("text", ""))
    except ValueError:
        acked = ack.text
    if acked and not acked.endswith("…"):
        return acked
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


# Watches posting into a channel outside the allow list (issue 17, item 4) --------------------

async def test_watch_into_a_channel_outside_the_allow_list_is_refused(
        slack_standin, redis_url, tmp_path):
    from bot.watchlist import WatchStore

    slack_standin.usergroups = {SRE: ["U0SRE"]}
    async with running_slack_bot(slack_standin, redis_url, REGISTRY, tmp_path) as bot:
        watches = WatchStore(bot.runtime.store.redis)
        # From an allowed channel, into another channel: refused, nothing stored.
        denied = await _answer(bot, slack_standin, "watch vault every 1m in <#C0GENERAL|general>",
                               channel_id=ALLOWED, user_id="U0ALICE")
        assert "`vault` posts only into its allowed channels" in denied
        assert "will not post it into" in denied and "C0GENERAL" in denied
        assert await watches.get("vault") is None
        # A user-group member asking from elsewhere: that channel is not allowed either.
        denied_here = await _answer(bot, slack_standin, "watch vault every 1m",
                                    channel_id=ELSEWHERE, user_id="U0SRE")
        assert "`vault` posts only into its allowed channels" in denied_here
        assert await watches.get("vault") is None
        # Into its allowed channel it is set up.
        ok = await _answer(bot, slack_standin, f"watch vault every 1m in <#{ALLOWED}|ops>",
                           channel_id=ELSEWHERE, user_id="U0SRE")
        assert "Watching vault every 1m" in ok
        stored = await watches.get("vault")
        assert stored is not None and stored.channel == ALLOWED
        # An open service may post anywhere.
        assert "Watching open every 1m" in await _answer(
            bot, slack_standin, "watch open every 1m in <#C0GENERAL|general>",
            channel_id=ELSEWHERE, user_id="U0ALICE")
        await watches.remove("vault")
        await watches.remove("open")


async def test_watch_tick_posts_nothing_into_a_channel_no_longer_allowed(
        slack_standin, redis_url, tmp_path, demo_service, monkeypatch):
    """A watch stored before the check (or before the registry changed) is refused at its
    tick: no capture, no post; an open service's watch in the same channel still pages."""
    from pydantic import SecretStr

    from bot.alerts.watches import list_ticks
    from bot.alerts.worker import start_worker, stop_worker
    from bot.jobs import QueueSettings
    from bot.runtime import Runtime
    from bot.settings import Settings
    from bot.slack.client import build_web_client
    from bot.watchlist import Watch, WatchStore

    registry = tmp_path / "heapbot.yaml"
    registry.write_text(
        "services:\n"
        f"  vault:\n    targets: [\"{demo_service.url}\"]\n    cooldown_seconds: 0\n"
        f"    allow_channels: [{ALLOWED}]\n"
        f"  open:\n    targets: [\"{demo_service.url}\"]\n    cooldown_seconds: 0\n")
    monkeypatch.setenv("HEAPBOT_WATCH_MIN_INTERVAL_SECONDS", "1")
    settings = Settings(config_path=registry, redis_url=redis_url,
                        slack_bot_token=SecretStr("xoxb-test"),
                        slack_api_url=slack_standin.api_url)
    rt = await Runtime.create(settings)
    watches = WatchStore(rt.store.redis)
    # goroutine threshold 1: every tick of a watch that runs opens a thread.
    await watches.put(Watch("vault", 1, "C0GENERAL", goroutine_threshold=1))
    await watches.put(Watch("open", 1, "C0GENERAL", goroutine_threshold=1))
    config = QueueSettings(claim_idle_seconds=5, watch_min_interval_seconds=1,
                           watch_poll_seconds=0.1, consumer_name="solo")
    worker = start_worker(rt, settings, build_web_client(settings), config=config)
    try:
        await slack_standin.wait_for(lambda: slack_standin.posts("C0GENERAL"), timeout=60)
        for _ in range(100):  # several ticks of both watches
            if len(await list_ticks(rt.store.redis, "open")) >= 3:
                break
            await asyncio.sleep(0.1)
        assert len(await list_ticks(rt.store.redis, "open")) >= 3
        shown = " ".join(str(p) for p in slack_standin.posts("C0GENERAL"))
        assert "open" in shown
        assert "vault" not in shown
        assert await list_ticks(rt.store.redis, "vault") == []
        assert await rt.store.latest("vault") is None  # not even captured
    finally:
        await watches.remove("vault")
        await watches.remove("open")
        await stop_worker(worker)
        await rt.close()


# What the ack, /heap services and /heap watches disclose (issue 17, item 13) ----------------

async def test_restricted_services_are_not_disclosed_outside_their_allow_lists(
        slack_standin, redis_url, tmp_path):
    from bot.watchlist import Watch, WatchStore

    registry = REGISTRY.replace("  open:\n", "    channel: C0VAULTALERTS\n  open:\n")
    async with running_slack_bot(slack_standin, redis_url, registry, tmp_path) as bot:
        watches = WatchStore(bot.runtime.store.redis)
        await watches.put(Watch("vault", 60, ALLOWED))
        await watches.put(Watch("open", 60, "C0GENERAL"))
        try:
            # The ack of a restricted service outside its channels names no instance count.
            ack = await bot.sender.slash_command("top vault", channel_id=ELSEWHERE,
                                                 user_id="U0EVE")
            assert "instance" not in ack.text
            ack_ops = await bot.sender.slash_command("top vault", channel_id=ALLOWED,
                                                     user_id="U0EVE")
            assert "(1 instance)" in ack_ops.text
            # The first was refused by its ack alone; the second answers later.
            await slack_standin.wait_for(lambda: len(_texts(slack_standin)) >= 1, timeout=60)

            services = await _answer(bot, slack_standin, "services", channel_id=ELSEWHERE,
                                     user_id="U0EVE")
            assert "open" in services
            assert "vault" not in services and "C0VAULTALERTS" not in services
            assert "1 more service is restricted to other channels or user groups" in services
            services_ops = await _answer(bot, slack_standin, "services", channel_id=ALLOWED,
                                         user_id="U0EVE")
            assert "vault" in services_ops and "C0VAULTALERTS" in services_ops
            assert "more service" not in services_ops

            listed = await _answer(bot, slack_standin, "watches", channel_id=ELSEWHERE,
                                   user_id="U0EVE")
            assert "open" in listed and "C0GENERAL" in listed
            assert "vault" not in listed and ALLOWED not in listed
            assert "1 more watch is restricted" in listed
            listed_ops = await _answer(bot, slack_standin, "watches", channel_id=ALLOWED,
                                       user_id="U0EVE")
            assert "vault" in listed_ops and "open" in listed_ops

            # A near miss suggests only services the asker may use, in the ack and the answer.
            ack = await bot.sender.slash_command("top vaul", channel_id=ELSEWHERE,
                                                 user_id="U0EVE")
            assert "no service called `vaul`" in ack.text and "vault`" not in ack.text
            missed = await _answer(bot, slack_standin, "history vaul", channel_id=ELSEWHERE,
                                   user_id="U0EVE")
            assert "no service called `vaul`" in missed and "vault`" not in missed
            ack_ops = await bot.sender.slash_command("top vaul", channel_id=ALLOWED,
                                                     user_id="U0EVE")
            assert "Did you mean `vault`?" in ack_ops.text
        finally:
            await watches.remove("vault")
            await watches.remove("open")
