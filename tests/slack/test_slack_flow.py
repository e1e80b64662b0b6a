"""/heap through Slack end to end: the live demo Go service, real Redis, the bot's aiohttp
server and Bolt, and the Slack stand-in, all over real HTTP.

The posted table is checked against ``go tool pprof -top`` run on the profile the
bot uploads for the same snapshot, so the expected numbers come from pprof itself.
"""

from __future__ import annotations

import gzip
import json
import re
import subprocess
import tempfile
from typing import Any

import pytest

from bot.gotool import find_go, go_env
from bot.slack.threads import thread_key
from tests.support.slack_standin import LiveSlackBot

pytestmark = pytest.mark.slow

CHANNEL = "C0PAYMENTS"


def table_rows(blocks: list[dict[str, Any]]) -> list[list[str]]:
    """Rows of the native table block (header row dropped), as the cells' text."""
    [table] = [b for b in blocks if b["type"] == "table"]
    return [[cell["text"] for cell in row] for row in table["rows"][1:]]


def buttons(blocks: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {e["text"]["text"]: e for b in blocks if b["type"] == "actions"
            for e in b["elements"]}


UNIT_BYTES = {"B": 1, "kB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}


def pprof_top(profile_gz: bytes, nodecount: int) -> list[list[str]]:
    """[function, flat, flat%, sum%, cum, cum%] rows of ``go tool pprof -top -nodecount=N``."""
    with tempfile.NamedTemporaryFile(suffix=".pb.gz") as f:
        f.write(profile_gz)
        f.flush()
        out = subprocess.run(
            [find_go(), "tool", "pprof", "-top", f"-nodecount={nodecount}", f.name],
            env=go_env(), capture_output=True, text=True, timeout=120, check=True).stdout
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:2] == ["flat", "flat%"])
    rows = []
    for line in lines[start + 1:]:
        parts = line.split(maxsplit=5)
        if len(parts) == 6:
            rows.append([parts[5], *parts[:5]])
    return rows


def in_bytes(text: str) -> float:
    """pprof's "2192.94kB" / "2.14MB" / "512B" as a number of bytes."""
    match = re.fullmatch(r"(-?[\d.]+)([kMGT]?B)?", text)
    assert match, text
    return float(match.group(1)) * UNIT_BYTES[match.group(2) or "B"]


def _needs_engine() -> None:
    """The top/diff engine (bot.analysis.top) lands separately; without it /heap top fails."""
    pytest.importorskip("bot.analysis.top")


async def test_top_is_acked_at_once_then_posted_with_pprof_numbers(live_slack_bot: LiveSlackBot):
    _needs_engine()
    resp = await live_slack_bot.sender.slash_command("top demo", channel_id=CHANNEL)
    assert resp.status == 200 and "capturing demo" in resp.text
    assert resp.elapsed < 2.0  # Slack gives 3 s; the capture runs after the ack
    assert live_slack_bot.standin.posts(CHANNEL) == []  # nothing was posted before the ack
    standin = live_slack_bot.standin
    [post] = await standin.wait_for(lambda: standin.posts(CHANNEL), timeout=60)
    assert post.get("thread_ts") is None
    rows = table_rows(post["blocks"])
    assert len(rows) >= 3
    assert "demo" in post["text"]

    # Download the same snapshot's profile via its button; pprof must agree with the table.
    first_ts = live_slack_bot.standin.post_ts()[0]
    download = buttons(post["blocks"])["Download profile"]
    await live_slack_bot.sender.block_action(value=download["value"], message_ts=first_ts,
                                       channel_id=CHANNEL, action_id=download["action_id"])
    [uploaded] = await live_slack_bot.standin.wait_for(live_slack_bot.standin.files, timeout=60)
    assert (uploaded.channel_id, uploaded.thread_ts) == (CHANNEL, first_ts)
    # ONE file: the service's merged profile, named after the service and the snapshot
    assert re.fullmatch(r"demo-\d{8}-\d{6}-[0-9a-f]+-heap\.pb\.gz", uploaded.filename)
    assert gzip.decompress(uploaded.content)  # a gzip stream, whole
    # The table is pprof's: same functions, order, values, units and percentages.
    # (Whether a name carries pprof's " (inline)" marker is the engine's to test.)
    expected = pprof_top(uploaded.content, nodecount=len(rows))

    def plain(table: list[list[str]]) -> list[list[str]]:
        return [[row[0].removesuffix(" (inline)"), *row[1:]] for row in table]

    assert plain(rows) == plain(expected)
    assert any(in_bytes(row[1]) > 0 for row in rows)


async def test_diff_button_and_mention_reply_in_the_first_messages_thread(
        live_slack_bot: LiveSlackBot):
    _needs_engine()
    standin = live_slack_bot.standin
    await live_slack_bot.sender.slash_command("top demo", channel_id=CHANNEL)
    [post] = await standin.wait_for(lambda: standin.posts(CHANNEL), timeout=60)
    first_ts = standin.post_ts()[0]
    assert await live_slack_bot.redis_value(thread_key(CHANNEL, first_ts)) == b"demo"

    diff = buttons(post["blocks"])["Diff vs previous"]
    resp = await live_slack_bot.sender.block_action(value=diff["value"], message_ts=first_ts,
                                              channel_id=CHANNEL, action_id=diff["action_id"])
    assert resp.status == 200
    posts = await standin.wait_for(lambda: standin.posts(CHANNEL)[1:], timeout=60)
    assert posts[0]["thread_ts"] == first_ts
    assert "demo" in posts[0]["text"]

    # A mention inside the thread names no service: the thread's service is used.
    resp = await live_slack_bot.sender.app_mention("goroutines", channel_id=CHANNEL,
                                             thread_ts=first_ts)
    assert resp.status == 200
    posts = await standin.wait_for(lambda: standin.posts(CHANNEL)[2:], timeout=60)
    reply = posts[0]
    assert reply["thread_ts"] == first_ts
    assert "demo" in reply["text"] and "goroutine" in reply["text"].lower()


async def test_rate_limited_post_is_retried_and_the_reply_arrives(live_slack_bot: LiveSlackBot):
    _needs_engine()
    standin = live_slack_bot.standin
    standin.fail("chat.postMessage", status=429, retry_after=1)
    await live_slack_bot.sender.slash_command("top demo", channel_id=CHANNEL)
    [post] = await standin.wait_for(lambda: standin.posts(CHANNEL), timeout=60)
    assert table_rows(post["blocks"])
    statuses = [r.status for r in standin.requests if r.method == "chat.postMessage"]
    assert statuses == [429, 200]


async def test_unknown_service_gets_a_private_did_you_mean(live_slack_bot: LiveSlackBot):
    resp = await live_slack_bot.sender.slash_command("top dmeo", channel_id=CHANNEL)
    # Refused by the checks before the ack: the ack (private) is the whole answer.
    answer = json.loads(resp.text)
    assert answer["response_type"] == "ephemeral" and "`demo`" in answer["text"]
    assert "capturing" not in answer["text"]
    assert live_slack_bot.standin.posts() == []
