"""Abuse of the public port: /healthz while hostile clients and alert floods hit the bot.

The bot runs as its own ``heapbot serve`` process (bench/load/bot_process.py, with its
event-loop lag monitor) under the pod's fd limit (ulimit -n 1024), on a real
redis-server, answering Slack on the stand-in. Three phases:

1. anchor: 50 ``GET /healthz`` one after the other on the idle bot (same run, same box);
2. 10 parallel Alertmanager notifications of 8,000 alerts with 3 unknown labels each
   (issue 17 item 7: a 6.3 s /healthz stall and 4.6 MB of log before);
3. 1,100 connections that each send half a request head and stop (item 6: EMFILE,
   /healthz timing out and 354,962 log lines before).

For phases 2 and 3 it prints /healthz latency (max, and as a ratio of the anchor's max),
the bot's loop lag and how much the log grew.

    .venv/bin/python bench/alerts/run.py [--alerts 8000] [--bodies 10] [--connections 1100]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import socket
import sys
import tempfile
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from bench._common import BotProcess, healthz_seconds, lag_line  # noqa: E402
from tests.support.redis import RedisServer  # noqa: E402
from tests.support.registry import write_registry  # noqa: E402
from tests.support.slack_standin import SlackStandIn  # noqa: E402

TOKEN = "alerts-bench-token"
FD_LIMIT = 1024


def alert_body(count: int) -> bytes:
    alerts = [{"status": "firing", "labels": {"alertname": "X", "service": f"svc-{i}",
                                              "app": f"app-{i}", "job": f"job-{i}"}}
              for i in range(count)]
    return json.dumps({"version": "4", "status": "firing", "alerts": alerts}).encode()


async def poll_while(url: str, work: asyncio.Future[object]) -> list[float]:
    latencies = []
    while not work.done():
        latencies.append(await healthz_seconds(url))
        await asyncio.sleep(0.02)
    return latencies


async def flood(url: str, bodies: int, alerts: int) -> list[float]:
    body = alert_body(alerts)

    def one() -> int:  # threads: this process's loop stays free to time /healthz
        request = urllib.request.Request(url + "/hooks/alertmanager", data=body, method="POST",
                                         headers={"Authorization": f"Bearer {TOKEN}",
                                                  "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=120) as resp:
            return resp.status

    work = asyncio.gather(*(asyncio.to_thread(one) for _ in range(bodies)))
    latencies = await poll_while(url, work)
    await work
    return latencies


async def half_open(url: str, port: int, count: int) -> list[float]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(soft, count + 512), hard), hard))
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                sock.connect(("127.0.0.1", port))
            socks.append(sock)
        await asyncio.sleep(0.3)
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        await asyncio.sleep(1.0)
        return [await healthz_seconds(url) for _ in range(20)]
    finally:
        for sock in socks:
            sock.close()


def report(name: str, latencies: list[float], anchor: float, log_growth: int) -> None:
    worst = max(latencies or [0.0])
    print(f"{name:<44} /healthz max {worst * 1000:8.1f} ms = {worst / anchor:6.1f}x anchor "
          f"(n={len(latencies)}); log +{log_growth:,} bytes")


async def bench(alerts: int, bodies: int, connections: int) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="heapbot-bench-alerts-"))
    redis = RedisServer(tmp)
    redis.start()
    standin = await SlackStandIn().start()
    registry = write_registry(tmp / "heapbot.yaml", {"payments": ["http://127.0.0.1:9"]})

    def limit_fds() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))

    bot = BotProcess(tmp, registry=registry, redis_url=redis.url, slack_api_url=standin.api_url,
                     signing_secret="alerts-bench-secret", preexec_fn=limit_fds,
                     env={"HEAPBOT_ALERTMANAGER_TOKEN": TOKEN, "HEAPBOT_LOG_FORMAT": "text",
                          "HEAPBOT_HTTP_HEADER_TIMEOUT_SECONDS": "60"})
    url = bot.url
    try:
        await bot.wait_healthy()
        anchor_values = [await healthz_seconds(url) for _ in range(50)]
        anchor = max(anchor_values)
        print(f"{'anchor: 50 GET /healthz, idle bot':<44} /healthz max {anchor * 1000:8.1f} ms "
              f"(p50 {sorted(anchor_values)[25] * 1000:.1f} ms)")
        bot.mark()  # the bot's lag monitor counts from here
        size = bot.log_size()
        report(f"{bodies} x {alerts:,}-alert Alertmanager bodies", await flood(url, bodies, alerts),
               anchor, bot.log_size() - size)
        size = bot.log_size()
        report(f"{connections:,} half-open connections, ulimit {FD_LIMIT}",
               await half_open(url, bot.port, connections), anchor, bot.log_size() - size)
    finally:
        bot.stop()
        await standin.stop()
        redis.stop()
    stats = bot.stats()
    if stats:
        print(lag_line(stats, "over both phases"))
        if os.environ.get("HEAPBOT_BENCH_STALLS"):
            print("\n".join(stats["stalls"][:3]))
    print(f"(bot log: {bot.log_path})")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alerts", type=int, default=8000)
    parser.add_argument("--bodies", type=int, default=10)
    parser.add_argument("--connections", type=int, default=1100)
    args = parser.parse_args()
    return asyncio.run(bench(args.alerts, args.bodies, args.connections))


if __name__ == "__main__":
    sys.exit(main())
