"""Issue 17 re-checked against `heapbot serve` itself: the red-team pass over real sockets.

The bot runs as its own process (its own event loop, so /healthz is timed where the
work happens), talking to the Slack stand-in, the demo Go service and a hostile
target of this file. Each test replays an attack of the original review through a
path the per-item tests do not: the assembled server, buttons, threads and
sampling verdicts for a restricted service asked from a channel outside its
allow list.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.redis import free_port
from tests.support.slack_standin import SignedSender, SlackStandIn, wait_until_serving

ROOT = Path(__file__).resolve().parents[2]
SIGNING_SECRET = "redteam-signing-secret"
OPS, GENERAL, SRE = "C0OPS", "C0GENERAL", "S0SRE"
HOSTILE = "(.|.)*Z"


@dataclass(slots=True)
class Bot:
    url: str
    sender: SignedSender
    standin: SlackStandIn
    log_path: Path
    process: subprocess.Popen[bytes]


@contextlib.asynccontextmanager
async def serve(tmp_path: Path, redis_url: str, standin: SlackStandIn, registry: str,
                **env: str) -> AsyncIterator[Bot]:
    """`heapbot serve` as a child on 127.0.0.1 with ``registry`` as its heapbot.yaml."""
    port = free_port()
    config = tmp_path / "heapbot.yaml"
    config.write_text(registry)
    full_env = {**os.environ, "SLACK_BOT_TOKEN": "xoxb-redteam", "SLACK_SIGNING_SECRET":
                SIGNING_SECRET, "SLACK_API_URL": standin.api_url, "HEAPBOT_HOST": "127.0.0.1",
                "HEAPBOT_PORT": str(port), "REDIS_URL": redis_url,
                "HEAPBOT_CONFIG": str(config), "HEAPBOT_DATA_DIR": str(tmp_path / "data"),
                "HEAPBOT_LOG_FORMAT": "text", **env}
    full_env.pop("SLACK_APP_TOKEN", None)
    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "bot", "serve"], env=full_env,
                                   cwd=ROOT, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        await wait_until_serving(url, process, log_path)
        standin.reset()
        yield Bot(url, SignedSender(url + "/slack/events", SIGNING_SECRET, standin), standin,
                  log_path, process)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(process.wait, 20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


def posted_in(standin: SlackStandIn, channel: str) -> list[str]:
    """What everyone in ``channel`` can read: messages posted and files shared there."""
    import json

    public = [json.dumps(r.body) for r in standin.requests
              if r.method in ("chat.postMessage", "chat.update")
              and str(r.body.get("channel") or "") == channel]
    return public + [f.filename for f in standin.files() if f.channel_id == channel]


def private_to(standin: SlackStandIn) -> str:
    """What only the asker sees (response_url answers and chat.postEphemeral)."""
    import json

    return "\n".join(json.dumps(r.body) for r in standin.requests
                     if r.method in ("response_url", "chat.postEphemeral"))


RESTRICTED = (
    "services:\n"
    "  vault:\n    targets: [\"{url}\"]\n    cooldown_seconds: 0\n"
    f"    allow_channels: [{OPS}]\n    allow_usergroups: [{SRE}]\n")


async def test_restricted_service_asked_by_a_group_member_elsewhere_answers_privately(
        tmp_path: Path, redis_url: str, slack_standin: SlackStandIn, demo_service: Any) -> None:
    """A user group lets its members *ask* from any channel, but everyone in the channel
    reads a post: vault's table, flame graph, button answers and sampling verdict asked
    in #general reach the asker alone, and nothing of vault lands in #general."""
    slack_standin.usergroups = {SRE: ["U0SRE"]}
    async with serve(tmp_path, redis_url, slack_standin,
                     RESTRICTED.format(url=demo_service.url)) as bot:
        # Control: in its allowed channel the answer is posted for everyone, with files.
        await bot.sender.slash_command("top vault --flame", channel_id=OPS, user_id="U0ALICE")
        await slack_standin.wait_for(lambda: len(
            [f for f in slack_standin.files() if f.channel_id == OPS]) == 2, timeout=60)
        assert any("vault: top" in p for p in posted_in(slack_standin, OPS))
        snapshot = bot_snapshot_id(posted_in(slack_standin, OPS))
        slack_standin.reset()

        # Before: each of these posted vault's table, flame graph files or leak verdict
        # into #general, for everyone in it to read.
        await bot.sender.slash_command("top vault", channel_id=GENERAL, user_id="U0SRE")
        await bot.sender.slash_command("top vault --flame", channel_id=GENERAL,
                                       user_id="U0SRE")
        await bot.sender.block_action(value=f"top vault --snapshot {snapshot} --flame",
                                      message_ts="1700000000.000100", channel_id=GENERAL,
                                      user_id="U0SRE")
        await bot.sender.app_mention("top vault", channel_id=GENERAL, user_id="U0SRE")
        await bot.sender.slash_command("leaks vault --sample 2x1s", channel_id=GENERAL,
                                       user_id="U0SRE")
        # Someone outside the group and the channel: refused, as before.
        await bot.sender.block_action(value=f"top vault --snapshot {snapshot} --flame",
                                      message_ts="1700000000.000200", channel_id=GENERAL,
                                      user_id="U0ALICE")
        await slack_standin.wait_for(
            lambda: private_to(slack_standin).count("vault: top") >= 4
            and "will not post it into #C0GENERAL" in private_to(slack_standin)
            and "may only be profiled from" in private_to(slack_standin), timeout=60)
        await asyncio.sleep(8)  # a sampling verdict would be due by now
        assert posted_in(slack_standin, GENERAL) == []
        shown = private_to(slack_standin)
        assert "posted only in its allowed channels (#C0OPS)" in shown  # the flame graphs
        assert "Traceback" not in bot.log_path.read_text()


def bot_snapshot_id(posts: list[str]) -> str:
    """The snapshot id named in a posted top reply."""
    import re

    for post in posts:
        if (found := re.search(r"snapshot (\d{8}-\d{6}-[0-9a-f]{4})", post)):
            return found.group(1)
    raise AssertionError(f"no snapshot id in {posts}")
