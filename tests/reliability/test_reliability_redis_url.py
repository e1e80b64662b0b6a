"""A malformed REDIS_URL is one clear line naming the variable and the forms, exit status 2.

Runs the real CLI (``python -m bot``) as an operator would: a command that needs the
store (`history`) and `heapbot serve`, which must refuse before it listens.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot.errors import ConfigError
from bot.redisconn import CLUSTER, SENTINEL, SINGLE, parse_redis_url

REPO = Path(__file__).resolve().parents[2]

MALFORMED = [
    ("no-scheme", "localhost:6379", "no scheme"),
    ("port-not-a-number", "redis://127.0.0.1:notaport/0", "`notaport` is not a number"),
    ("unknown-scheme", "http://127.0.0.1:6379/0", "not a scheme heapbot knows"),
    ("db-not-a-number", "redis://127.0.0.1:6379/zero", "`zero` is not a number"),
    ("sentinel-no-master", "redis+sentinel://127.0.0.1:26379", "names no Sentinel master"),
    ("cluster-bad-port", "redis+cluster://127.0.0.1:7000,127.0.0.1:x",
     "port `x` of `127.0.0.1` is not a number"),
    ("password-kept-secret", "redis://:hunter2@127.0.0.1:notaport/0", "is not a number"),
]
FORMS = ("redis://", "rediss://", "unix://", "redis+sentinel://", "redis+cluster://",
         "rediss+cluster://")


def _run(args: list[str], url: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "REDIS_URL": url, "HEAPBOT_DATA_DIR": str(tmp_path / "data"),
           "HEAPBOT_CONFIG": str(tmp_path / "none.yaml"), "SLACK_BOT_TOKEN": "xoxb-test",
           "SLACK_SIGNING_SECRET": "s3cret", "HEAPBOT_PORT": "9", "SLACK_API_URL":
           "http://127.0.0.1:9/api/"}
    env.pop("SLACK_APP_TOKEN", None)
    return subprocess.run([sys.executable, "-m", "bot", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize(("case", "url", "reason"), MALFORMED, ids=[m[0] for m in MALFORMED])
@pytest.mark.parametrize("command", [["history", "demo"], ["serve"]], ids=["history", "serve"])
def test_malformed_redis_url_is_one_line_and_exit_2(tmp_path: Path, case: str, url: str,
                                                    reason: str, command: list[str]) -> None:
    done = _run(command, url, tmp_path)
    err = done.stderr.strip()
    assert done.returncode == 2, (case, done.returncode, err)
    assert "Traceback" not in err, err
    assert len(err.splitlines()) == 1, err
    assert err.startswith("heapbot: REDIS_URL `"), err
    assert reason in err, err
    for form in FORMS:
        assert form in err, (form, err)
    assert "hunter2" not in err + done.stdout  # the password is never echoed


def test_every_accepted_form_parses_to_its_topology() -> None:
    assert parse_redis_url("redis://:pw@h:6380/3").db == 3
    assert parse_redis_url("unix:///run/redis.sock?db=0").topology == SINGLE
    sentinel = parse_redis_url("redis+sentinel://:pw@a:26379,b/mymaster/2")
    assert (sentinel.topology, sentinel.hosts, sentinel.master, sentinel.db) == (
        SENTINEL, (("a", 26379), ("b", 26379)), "mymaster", 2)
    cluster = parse_redis_url("rediss+cluster://:pw@10.0.0.1:7000,[::1]:7001")
    assert (cluster.topology, cluster.hosts, cluster.tls, cluster.password) == (
        CLUSTER, (("10.0.0.1", 7000), ("::1", 7001)), True, "pw")
    assert "pw" not in cluster.location
    with pytest.raises(ConfigError, match="only database 0"):
        parse_redis_url("redis+cluster://a:7000/1")
