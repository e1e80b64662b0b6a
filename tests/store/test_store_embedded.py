"""The embedded redis-server: unix socket by default, TCP with a password for long paths.

One long-lived server per data dir, shared by concurrent heapbot processes: no process
stops it under another (issue 15 item 12). The processes here are real `python -m bot`
CLI runs on one data dir.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from bot.redis_server import EmbeddedRedis, EmbeddedRedisInUseError

REPO = Path(__file__).resolve().parents[2]


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
        second.release()
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


def _cli(data_dir: Path, *args: str, wait: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HEAPBOT_DATA_DIR": str(data_dir),
           "HEAPBOT_CONFIG": str(data_dir.parent / "heapbot.yaml")}
    env.pop("REDIS_URL", None)
    return subprocess.run([sys.executable, "-m", "bot", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def test_the_server_outlives_a_cli_call_and_the_next_call_reuses_it(tmp_path: Path) -> None:
    (tmp_path / "heapbot.yaml").write_text('services:\n  demo:\n    targets: ["http://127.0.0.1:9"]\n')
    data_dir = tmp_path / "data"
    first = _cli(data_dir, "history", "demo")
    assert first.returncode == 0, first.stderr
    embedded = EmbeddedRedis(data_dir)
    assert embedded.answering()  # still up after the process that started it exited
    pid = embedded.pid()
    second = _cli(data_dir, "store", "status")
    assert second.returncode == 0, second.stderr
    assert f"(pid {pid})" in second.stdout and "not in use" in second.stdout, second.stdout
    stopped = _cli(data_dir, "store", "stop")
    assert stopped.returncode == 0 and "stopped" in stopped.stdout, stopped.stderr
    assert not embedded.answering()


def test_no_process_stops_the_server_another_is_using(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    holder = subprocess.Popen(  # another heapbot process using the server, e.g. a console
        [sys.executable, "-c", "import sys, time; from bot.redis_server import EmbeddedRedis; "
         "server = EmbeddedRedis(sys.argv[1]); server.ensure(); print('up', flush=True); "
         "time.sleep(60)",
         str(data_dir)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "up"
        embedded = EmbeddedRedis(data_dir)
        with pytest.raises(EmbeddedRedisInUseError, match="in use by another heapbot process"):
            embedded.stop()
        refused = _cli(data_dir, "store", "stop")
        assert refused.returncode == 2 and "in use" in refused.stderr, refused.stderr
        assert embedded.answering()
    finally:
        holder.kill()
        holder.wait()
    deadline = time.monotonic() + 5  # the kernel drops a dead process's lock at once
    while EmbeddedRedis(data_dir).in_use() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert EmbeddedRedis(data_dir).stop() is True


def test_concurrent_cli_calls_share_one_server(tmp_path: Path) -> None:
    (tmp_path / "heapbot.yaml").write_text('services:\n  demo:\n    targets: ["http://127.0.0.1:9"]\n')
    data_dir = tmp_path / "data"
    env = {**os.environ, "HEAPBOT_DATA_DIR": str(data_dir),
           "HEAPBOT_CONFIG": str(tmp_path / "heapbot.yaml")}
    env.pop("REDIS_URL", None)
    calls = [subprocess.Popen([sys.executable, "-m", "bot", "history", "demo"], cwd=REPO,
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(6)]
    results = [(c.wait(timeout=120), c.communicate()) for c in calls]
    for code, (_out, err) in results:
        assert code == 0, err
        assert "cannot be reached" not in err
    servers = [line for line in (data_dir / "redis.log").read_text().splitlines()
               if "Server initialized" in line]
    assert len(servers) == 1, servers  # started once, never stopped and restarted
    assert EmbeddedRedis(data_dir).stop() is True
