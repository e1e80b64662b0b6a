"""`--sample` must not hold command slots, and is capped (issue 17, item 5).

Real Redis for the caps (bot/sampling.py); the whole bot (HTTP endpoint, job
worker, demo Go service, Slack stand-in) for the slots and the posted verdict.
"""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from bot.sampling import (
    GRACE_SECONDS,
    Sampling,
    SamplingRefusedError,
    SamplingSettings,
    finish,
    start,
    take_due,
)

NOW = 1_800_000_000.0


@pytest.fixture
async def redis(redis_url: str):
    client = aioredis.Redis.from_url(redis_url)
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
    caps = SamplingSettings(max_per_user=2, max_active=3, max_seconds=900)

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
    await start(redis, plan("a", "U2"), SamplingSettings(max_per_user=2, max_active=3),
                now=NOW + 20)


async def test_a_lapsed_sampling_frees_its_caps(redis) -> None:
    """A replica that died mid-sampling does not lock the service or the user for good."""
    caps = SamplingSettings(max_per_user=1, max_active=5)
    await start(redis, Sampling("a", 2, 60, "U1"), caps, now=NOW)
    with pytest.raises(SamplingRefusedError):
        await start(redis, Sampling("b", 2, 60, "U1"), caps, now=NOW + 60)
    later = NOW + 60 + GRACE_SECONDS + 1
    await start(redis, Sampling("a", 2, 60, "U1"), caps, now=later)
