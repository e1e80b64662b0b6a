"""`--sample` must not hold command slots, and is capped (issue 17, item 5).

Real Redis for the caps (bot/sampling.py); the whole bot (HTTP endpoint, job
worker, demo Go service, Slack stand-in) for the slots and the posted verdict.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from bot.jobs import QueueSettings
from bot.sampling import (
    GRACE_SECONDS,
    Sampling,
    SamplingRefusedError,
    finish,
    start,
    take_due,
)
from tests.support.redis import async_client

NOW = 1_800_000_000.0


@pytest.fixture
async def redis(redis_url: str):
    client = async_client(redis_url)
    keys = [k async for k in client.scan_iter("heapbot:{sampling}:*")]
    if keys:
        await client.delete(*keys)
    try:
        yield client
    finally:
        keys = [k async for k in client.scan_iter("heapbot:{sampling}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


async def test_sampling_caps_per_user_per_service_and_overall(redis) -> None:
    caps = QueueSettings(sample_max_per_user=2, sample_max_active=3, sample_max_seconds=900)

    def plan(service: str, user: str) -> Sampling:
        return Sampling(service=service, count=3, interval_seconds=30, user_id=user,
                        channel="C0HEAP")

    first = await start(redis, plan("a", "U1"), caps, now=NOW)
    await start(redis, plan("b", "U1"), caps, now=NOW)
    # A third for the same person: refused, saying when the first ends.
    with pytest.raises(SamplingRefusedError) as err:
        await start(redis, plan("c", "U1"), caps, now=NOW + 10)
    assert "You already have 2 samplings running" in err.value.user_message()
    assert "about 50s" in err.value.user_message()
    # The same service for someone else: one sampling per service at a time.
    with pytest.raises(SamplingRefusedError) as err:
        await start(redis, plan("a", "U2"), caps, now=NOW + 10)
    assert "`a` is already being sampled, done in about 50s" in err.value.user_message()
    await start(redis, plan("c", "U2"), caps, now=NOW)
    # heapbot-wide cap.
    with pytest.raises(SamplingRefusedError) as err:
        await start(redis, plan("d", "U3"), caps, now=NOW)
    assert "already running 3 samplings" in err.value.user_message()
    # Too long a span.
    with pytest.raises(SamplingRefusedError) as err:
        await start(redis, Sampling("e", 10, 600, "U4"), caps, now=NOW)
    assert "at most 15m" in err.value.user_message()

    # Every sampling's first capture is due now, and each id goes to one caller only.
    active = {m.decode() for m in await redis.zrange("heapbot:{sampling}:active", 0, -1)}
    assert first.id in active and len(active) == 3
    assert set(await take_due(redis, NOW)) == active
    assert await take_due(redis, NOW) == []

    # Finishing releases the caps at once.
    await finish(redis, first)
    await start(redis, plan("a", "U2"), QueueSettings(sample_max_per_user=2, sample_max_active=3),
                now=NOW + 20)


async def test_a_lapsed_sampling_frees_its_caps(redis) -> None:
    """A replica that died mid-sampling does not lock the service or the user for good."""
    caps = QueueSettings(sample_max_per_user=1, sample_max_active=5)
    await start(redis, Sampling("a", 2, 60, "U1"), caps, now=NOW)
    with pytest.raises(SamplingRefusedError):
        await start(redis, Sampling("b", 2, 60, "U1"), caps, now=NOW + 60)
    later = NOW + 60 + GRACE_SECONDS + 1
    await start(redis, Sampling("a", 2, 60, "U1"), caps, now=later)


def _texts(standin: Any) -> list[tuple[str, dict[str, Any]]]:
    """(method, body) of everything the bot sent back, in order."""
    return [(r.method, r.body) for r in standin.requests if r.ok and r.method in
            ("chat.postMessage", "chat.postEphemeral", "response_url")]


async def test_samplings_hold_no_command_slot_and_post_their_verdict(
        slack_standin, redis_url, tmp_path, demo_service) -> None:
    """Eight 15-minute samplings used to take all 8 command slots: nobody got an answer."""
    from pydantic import SecretStr

    from bot.alerts.worker import start_worker, stop_worker
    from bot.settings import Settings
    from bot.slack.client import build_web_client
    from tests.support.slack_standin import running_slack_bot

    services = [f"s{i}" for i in range(8)]
    registry = "services:\n" + "".join(
        f"  {name}:\n    targets: [\"{demo_service.url}\"]\n    cooldown_seconds: 0\n"
        for name in [*services, "demo"])
    async with running_slack_bot(slack_standin, redis_url, registry, tmp_path) as bot:
        settings = Settings(SLACK_BOT_TOKEN=SecretStr("xoxb-test-token"),
                            SLACK_API_URL=slack_standin.api_url, REDIS_URL=redis_url)
        config = QueueSettings(claim_idle_seconds=5, watch_poll_seconds=0.1,
                               consumer_name="sampler")
        worker = start_worker(bot.runtime, settings, build_web_client(settings), config=config)
        try:
            for i, name in enumerate(services):
                await bot.sender.slash_command(f"leaks {name} --sample 2x900s",
                                               channel_id=f"C0S{i}", user_id=f"U0S{i}")
            await asyncio.sleep(1.5)  # the eight are running (or, before, holding the slots)

            # Someone else still gets answers at once: help and a top table.
            await bot.sender.slash_command("help", channel_id="C0OTHER", user_id="U0OTHER")
            await bot.sender.slash_command("top demo", channel_id="C0OTHER", user_id="U0OTHER")
            await slack_standin.wait_for(lambda: slack_standin.posts("C0OTHER") and [
                b for m, b in _texts(slack_standin) if "/heap top" in str(b.get("text"))],
                timeout=30)
            top = slack_standin.posts("C0OTHER")[0]["text"]
            assert "main." in top and "flat%" in top
            replies = [b for m, b in _texts(slack_standin) if "Sampling s" in str(b.get("text"))]
            assert len(replies) == 8
            assert all("2 captures 900s apart" in r["text"] for r in replies)

            # A second sampling of a service being sampled is refused, saying when it ends.
            await bot.sender.slash_command("leaks s0 --sample 2x60s", channel_id="C0OTHER",
                                           user_id="U0OTHER")
            refused = await slack_standin.wait_for(lambda: [
                b for m, b in _texts(slack_standin)
                if "already being sampled" in str(b.get("text"))] or None, timeout=30)
            assert "`s0` is already being sampled, done in about 15m" in refused[0]["text"]

            # A short sampling posts its verdict in the thread of its reply.
            await bot.sender.slash_command("leaks demo --sample 2x1s", channel_id="C0LEAK",
                                           user_id="U0BOB")
            verdict = await slack_standin.wait_for(lambda: [
                p for p in slack_standin.posts("C0LEAK") if p.get("thread_ts")] or None,
                timeout=60)
            first_ts = slack_standin.post_ts("C0LEAK")[0]
            assert "Sampling demo: 2 captures 1s apart" in slack_standin.posts("C0LEAK")[0]["text"]
            assert verdict[0]["thread_ts"] == first_ts
            assert "demo:" in verdict[0]["text"]
            assert "took 2 new captures" in json.dumps(verdict[0])
        finally:
            await stop_worker(worker)
            keys = [k async for k in bot.runtime.store.redis.scan_iter("heapbot:{sampling}:*")]
            if keys:
                await bot.runtime.store.redis.delete(*keys)
