"""The embedded redis-server: unix socket by default, TCP with a password for long paths."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from bot.redis_server import EmbeddedRedis


@pytest.mark.parametrize("long_path", [False, True])
def test_embedded_server_is_private_reused_and_keeps_data(tmp_path: Path,
                                                          long_path: bool) -> None:
    data_dir = tmp_path / ("d" * 110 if long_path else "data")
    first = EmbeddedRedis(data_dir)
    url = first.ensure()
    try:
        assert first.started_here and first.uses_socket is not long_path
        client = redis.Redis.from_url(url)
        client.set("heapbot:probe", "kept")
        client.close()
        if long_path:  # TCP on 127.0.0.1: other local users need the password
            with pytest.raises(redis.AuthenticationError):
                redis.Redis(port=int(first.port_path.read_text())).ping()
        else:
            assert (first.socket_path.stat().st_mode & 0o777) == 0o700
        second = EmbeddedRedis(data_dir)
        assert second.ensure() == url and not second.started_here
    finally:
        first.stop()
    assert not first.answering()
    third = EmbeddedRedis(data_dir)
    third.ensure()
    try:
        client = redis.Redis.from_url(third.url)
        assert client.get("heapbot:probe") == b"kept"
        client.close()
    finally:
        third.stop()
