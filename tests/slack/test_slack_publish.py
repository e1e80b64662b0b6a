"""bot.slack.publish and the per-channel limiter against the Slack stand-in over real HTTP."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest
from pydantic import SecretStr

from bot.metrics import SLACK_API_ERRORS
from bot.reply import Action, Attachment, Column, Reply, Table
from bot.settings import Settings
from bot.slack.client import build_web_client
from bot.slack.publish import SlackPublishError, post_reply
from bot.slack.ratelimit import ChannelRateLimiter
from tests.support.slack_standin import SlackStandIn


def _client(standin: SlackStandIn):
    settings = Settings(SLACK_BOT_TOKEN=SecretStr("xoxb-test-token"),
                        SLACK_API_URL=standin.api_url.rstrip("/"))
    return build_web_client(settings)


def _reply(**kwargs) -> Reply:
    table = Table(columns=[Column("flat"), Column("function", "left")],
                  rows=[["41.20MB", "main.leakyCache"], ["512kB", "bytes.growSlice"]])
    return Reply(title="heap top demo", table=table, service="demo",
                 actions=[Action("Diff vs previous", "diff demo")], **kwargs)


def _metric(method: str, error: str) -> float:
    return SLACK_API_ERRORS.labels(method, error)._value.get()


async def test_reply_posts_blocks_and_uploads_files_into_its_thread(slack_standin):
    content = bytes(range(256)) * 40
    reply = _reply(attachments=[Attachment("demo-heap.pb.gz", content, "demo heap profile")])
    ts = await post_reply(_client(slack_standin), "C1", reply)

    posts = slack_standin.posts("C1")
    assert len(posts) == 1 and posts[0].get("thread_ts") is None
    post_text = repr(posts[0]["blocks"]) + posts[0]["text"]
    assert "main.leakyCache" in post_text and "41.20MB" in post_text
    assert [r.method for r in slack_standin.requests] == [
        "chat.postMessage", "files.getUploadURLExternal", "upload", "files.completeUploadExternal"]
    [uploaded] = slack_standin.files()
    assert uploaded.content == content
    assert (uploaded.channel_id, uploaded.thread_ts) == ("C1", ts)
    assert uploaded.filename == "demo-heap.pb.gz" and uploaded.title == "demo heap profile"


async def test_reply_in_a_thread_stays_in_that_thread(slack_standin):
    reply = _reply(attachments=[Attachment("chart.png", b"\x89PNG....", "chart", "chart")])
    ts = await post_reply(_client(slack_standin), "C1", reply, thread_ts="1700000000.000001")
    assert slack_standin.posts("C1")[0]["thread_ts"] == "1700000000.000001"
    assert slack_standin.files()[0].thread_ts == "1700000000.000001"
    assert ts != "1700000000.000001"


async def test_rate_limited_post_is_retried_after_retry_after(slack_standin):
    before = _metric("chat.postMessage", "429")
    slack_standin.fail("chat.postMessage", status=429, retry_after=1)
    started = time.monotonic()
    ts = await post_reply(_client(slack_standin), "C1", _reply())
    assert time.monotonic() - started >= 1.0  # waited Retry-After
    assert ts and len(slack_standin.posts("C1")) == 1
    assert [r.status for r in slack_standin.requests] == [429, 200]
    assert _metric("chat.postMessage", "429") == before + 1


async def test_server_error_is_retried(slack_standin):
    slack_standin.fail("chat.postMessage", status=500, times=1)
    assert await post_reply(_client(slack_standin), "C1", _reply())
    assert [r.status for r in slack_standin.requests] == [500, 200]


async def test_ephemeral_reply_goes_to_the_response_url_only(slack_standin):
    url = slack_standin.response_url()
    failure = Reply.failure("heapbot knows no service called `paymnets`.")
    assert await post_reply(_client(slack_standin), "C1", failure, response_url=url) == ""
    [sent] = slack_standin.responses()
    assert sent["response_type"] == "ephemeral" and "paymnets" in sent["text"]
    assert slack_standin.posts() == []


async def test_ephemeral_reply_without_response_url_uses_post_ephemeral(slack_standin):
    failure = Reply.failure("no such thread")
    await post_reply(_client(slack_standin), "C1", failure, user_id="U1", thread_ts="1.000001")
    [sent] = slack_standin.ephemerals()
    assert (sent["channel"], sent["user"], sent["thread_ts"]) == ("C1", "U1", "1.000001")


async def test_not_in_channel_reaches_the_asker_privately(slack_standin):
    slack_standin.fail("chat.postMessage", status=200, error="not_in_channel")
    url = slack_standin.response_url()
    assert await post_reply(_client(slack_standin), "C9", _reply(), response_url=url) == ""
    [sent] = slack_standin.responses()
    assert "/invite @heapbot" in sent["text"] and "main.leakyCache" in repr(sent)


async def test_other_slack_errors_become_one_clear_message(slack_standin):
    before = _metric("chat.postMessage", "invalid_blocks")
    slack_standin.fail("chat.postMessage", status=200, error="invalid_blocks")
    with pytest.raises(SlackPublishError) as err:
        await post_reply(_client(slack_standin), "C1", _reply())
    assert "chat.postMessage" in err.value.user_message()
    assert "invalid_blocks" in err.value.user_message()
    assert _metric("chat.postMessage", "invalid_blocks") == before + 1


async def test_limiter_spaces_posts_per_channel_not_across_channels():
    limiter = ChannelRateLimiter(interval=0.2)
    started = time.monotonic()
    waited = await asyncio.gather(*(limiter.wait("C1") for _ in range(4)),
                                  limiter.wait("C2"))
    assert sorted(waited[:4]) == pytest.approx([0, 0.2, 0.4, 0.6], abs=0.05)
    assert waited[4] == 0
    assert time.monotonic() - started == pytest.approx(0.6, abs=0.15)


async def test_burst_of_posts_to_one_channel_is_spaced(slack_standin):
    client = _client(slack_standin)
    limiter = ChannelRateLimiter(interval=0.25)
    await asyncio.gather(*(post_reply(client, "C1", _reply(), limiter=limiter) for _ in range(3)))
    times = [r.at for r in slack_standin.calls("chat.postMessage")]
    assert len(times) == 3
    assert all(b - a >= 0.2 for a, b in itertools.pairwise(times))


async def test_refused_upload_keeps_the_posted_reply_and_says_so_in_its_thread(slack_standin):
    slack_standin.fail("files.completeUploadExternal", status=200, error="not_allowed_token_type")
    reply = _reply(attachments=[Attachment("demo-heap.pb.gz", b"\x1f\x8b" + b"x" * 64, "heap")])
    ts = await post_reply(_client(slack_standin), "C1", reply)
    posts = slack_standin.posts("C1")
    assert ts and posts[0].get("thread_ts") is None and "main.leakyCache" in repr(posts[0])
    [note] = [p for p in posts if p.get("thread_ts") == ts]
    assert "could not attach demo-heap.pb.gz" in note["text"]
    assert "not_allowed_token_type" in note["text"] and "Traceback" not in note["text"]
    assert slack_standin.files() == []
