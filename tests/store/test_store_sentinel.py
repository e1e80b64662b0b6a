"""REDIS_URL=redis+sentinel://…: the store finds the master through a real Sentinel."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from bot.store import SnapshotStore
from tests.store.test_store import snapshot
from tests.support.redis import RedisServer, free_port, redis_server_binary


@pytest.fixture
def sentinel_port(redis_server: Any, tmp_path: Path) -> Iterator[int]:
    if not isinstance(redis_server, RedisServer):
        pytest.skip("REDIS_URL is set: the Sentinel test needs the test-owned redis-server")
    port = free_port()
    config = tmp_path / "sentinel.conf"
    config.write_text(f"port {port}\nbind 127.0.0.1\ndir {tmp_path}\n"
                      f"sentinel monitor heapbotmaster 127.0.0.1 {redis_server.port} 1\n")
    with open(tmp_path / "sentinel.log", "wb") as log:
        process = subprocess.Popen([redis_server_binary(), str(config), "--sentinel"],
                                   stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                client = redis.Redis(port=port, socket_timeout=1)
                master = client.sentinel_get_master_addr_by_name("heapbotmaster")
                client.close()
                if master:
                    break
            except redis.ConnectionError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("redis sentinel did not start")
            time.sleep(0.05)
        yield port
    finally:
        process.terminate()
        process.wait(10)


async def test_sentinel_url_reaches_the_master(sentinel_port: int, redis_url: str) -> None:
    store = SnapshotStore.from_url(f"redis+sentinel://127.0.0.1:{sentinel_port}/heapbotmaster/0")
    direct = SnapshotStore.from_url(redis_url)
    try:
        snap = snapshot(time.time())
        await store.save(snap, {(0, "heap"): b"\x1f\x8bsentinel"})
        assert [s.id for s in await direct.list("payments")] == [snap.id]
        assert await store.raw_profile("payments", snap.id, 0) == b"\x1f\x8bsentinel"
        assert "heapbotmaster" in store.location
    finally:
        await store.close()
        await direct.close()
