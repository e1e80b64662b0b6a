"""The store boundary and the retry policy, against a real Redis port with nothing on it."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY, generate_latest

from bot.errors import StoreUnavailableError
from bot.redisconn import connect, retrying, store_errors
from tests.support.redis import free_port


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_a_dead_redis_is_retried_then_one_store_error_counted_by_kind() -> None:
    client = connect(f"redis://127.0.0.1:{free_port()}/0").client
    retries = _sample("heapbot_redis_retries_total", kind="connection")
    errors = _sample("heapbot_redis_errors_total", operation="probe the store",
                     kind="connection")
    try:
        with pytest.raises(StoreUnavailableError, match="cannot be reached"):
            async with store_errors("probe the store", "127.0.0.1"):
                await retrying("probe the store", client.ping, attempts=3, base=0.01)
    finally:
        await client.aclose()
    # the client's own retries (2) for each of our 3 attempts, and our 2 retries
    assert _sample("heapbot_redis_retries_total", kind="connection") - retries >= 2
    assert _sample("heapbot_redis_errors_total", operation="probe the store",
                   kind="connection") - errors == 1
    exposed = generate_latest(REGISTRY).decode()
    assert 'heapbot_redis_errors_total{kind="connection",operation="probe the store"}' in exposed
    assert 'heapbot_redis_retries_total{kind="connection"}' in exposed
