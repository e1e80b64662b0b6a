"""The Redis fixture itself: a real server, clean per test, restartable with data kept."""

from __future__ import annotations

import redis.asyncio as aioredis

from tests.support.redis import all_keys, async_client


async def test_redis_client_starts_clean(redis_client: aioredis.Redis) -> None:
    assert await all_keys(redis_client) == []
    await redis_client.set("heapbot:probe", "1")
    assert await redis_client.get("heapbot:probe") == b"1"


async def test_data_survives_server_restart(redis_server, redis_url: str) -> None:
    client = async_client(redis_url)
    await client.set("heapbot:kept", "yes")
    await client.aclose()
    redis_server.stop()
    redis_server.start()
    client = async_client(redis_url)
    try:
        assert await client.get("heapbot:kept") == b"yes"
    finally:
        await client.aclose()
