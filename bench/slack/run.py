"""Slack transport latency: ack time and command → posted reply, against a live 3-instance demo.

Everything is real: the demo Go service (3 instances), redis-server, the bot's
aiohttp server with Bolt, and the Slack stand-in receiving chat.postMessage.
N signed ``/heap top demo`` commands are sent (a few at a time, each from its
own channel so the per-channel post limiter does not serialise them), and it
prints p50/p95/p99 of

- ack: the HTTP round trip of the slash command (what Slack's 3 s limit measures);
- reply: from sending the command to the stand-in receiving chat.postMessage.

Anchors measured in the same run, on the same machine: the round trip of a
bare aiohttp handler (for ack) and ``handlers.run`` called directly with the
same command (for reply), printed as ratios. Targets: ack p99 < 300 ms,
reply p95 < 1 s.

    .venv/bin/python bench/slack/run.py [--commands 50] [--concurrency 5]
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web
from pydantic import SecretStr

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import handlers  # noqa: E402
from bench._common import latency_line, percentile  # noqa: E402
from bot.serve import build_web_app  # noqa: E402
from bot.settings import Settings  # noqa: E402
from bot.slack.server import SLACK_STATE  # noqa: E402
from tests.support.demo import build_demo, start_demo  # noqa: E402
from tests.support.redis import RedisServer  # noqa: E402
from tests.support.registry import write_registry  # noqa: E402
from tests.support.slack_standin import (  # noqa: E402
    RunningWebApp,
    SignedSender,
    SlackStandIn,
)

SECRET = "bench-signing-secret"
ACK_TARGET_P99 = 0.300
REPLY_TARGET_P95 = 1.0


async def bare_aiohttp_round_trips(count: int) -> list[float]:
    """Anchor for ack: POST to an aiohttp handler that answers at once."""

    async def ok(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"text": "ok"})

    app = web.Application()
    app.router.add_post("/", ok)
    running = await RunningWebApp(app).start()
    times = []
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(count):
                started = time.perf_counter()
                async with session.post(running.url + "/", data=b"x=1") as resp:
                    await resp.read()
                times.append(time.perf_counter() - started)
    finally:
        await running.stop()
    return times


async def direct_handler_runs(runtime: object, count: int, command: str) -> list[float]:
    """Anchor for reply: the same command through handlers.run, no Slack at all."""
    times = []
    for _ in range(count):
        started = time.perf_counter()
        reply = await handlers.run(runtime, handlers.Invocation(command, source="console"))
        assert not reply.error, reply.sections
        times.append(time.perf_counter() - started)
    return times


async def bench(commands: int, concurrency: int, command: str, cooldown: float) -> int:
    from bot.runtime import Runtime

    tmp = Path(tempfile.mkdtemp(prefix="heapbot-bench-slack-"))
    redis = RedisServer(tmp)
    redis.start()
    binary = build_demo("dev")
    demos = [start_demo(binary, "all") for _ in range(3)]
    standin = await SlackStandIn().start()
    registry = write_registry(tmp / "heapbot.yaml", {"demo": [d.url for d in demos]},
                              cooldown_seconds=cooldown)
    settings = Settings(SLACK_BOT_TOKEN=SecretStr("xoxb-bench"),
                        SLACK_SIGNING_SECRET=SecretStr(SECRET), SLACK_API_URL=standin.api_url,
                        REDIS_URL=redis.url, HEAPBOT_CONFIG=str(registry),
                        HEAPBOT_DATA_DIR=str(tmp / "data"))
    runtime = Runtime.create(settings)
    if inspect.isawaitable(runtime):
        runtime = await runtime
    bot = await RunningWebApp(build_web_app(runtime, settings, start_worker=False)).start()
    try:
        while not bot.app[SLACK_STATE].ready:
            await asyncio.sleep(0.02)
        sender = SignedSender(bot.events_url, SECRET, standin)
        await direct_handler_runs(runtime, 2, command)  # warm up: first capture, imports
        acks: list[float] = []
        replies: list[float] = []
        gate = asyncio.Semaphore(concurrency)

        async def one(index: int) -> None:
            channel = f"CBENCH{index:04d}"
            async with gate:
                started = time.perf_counter()
                resp = await sender.slash_command(command, channel_id=channel)
                assert resp.status == 200, resp.text
                acks.append(resp.elapsed)
                await standin.wait_for(lambda: standin.posts(channel), timeout=60)
                replies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(commands)))
        wall = time.perf_counter() - started
        bare = await bare_aiohttp_round_trips(commands)
        direct = await direct_handler_runs(runtime, min(commands, 20), command)
    finally:
        await bot.stop()
        await standin.stop()
        closing = runtime.close()
        if inspect.isawaitable(closing):
            await closing
        for demo in demos:
            demo.stop()
        redis.stop()

    print(f"heapbot Slack transport: {commands} × `/heap {command}`, 3 demo instances, "
          f"concurrency {concurrency}, cooldown {cooldown:g} s, {wall:.1f} s wall")
    print(latency_line("ack (slash command HTTP)", acks))
    print(latency_line("reply (command → post)", replies))
    print(latency_line("anchor: bare aiohttp POST", bare))
    print(latency_line("anchor: handlers.run direct", direct))
    ack_ratio = percentile(acks, 99) / max(percentile(bare, 99), 1e-6)
    reply_ratio = percentile(replies, 95) / max(percentile(direct, 95), 1e-6)
    print(f"ratio ack p99 / bare aiohttp p99        = {ack_ratio:6.1f}x")
    print(f"ratio reply p95 / handlers.run p95      = {reply_ratio:6.2f}x")
    ok_ack = percentile(acks, 99) < ACK_TARGET_P99
    ok_reply = percentile(replies, 95) < REPLY_TARGET_P95
    print(f"target ack p99 < {ACK_TARGET_P99 * 1000:.0f} ms: {'met' if ok_ack else 'MISSED'}; "
          f"reply p95 < {REPLY_TARGET_P95:.0f} s: {'met' if ok_reply else 'MISSED'}")
    print(f"mean reply {statistics.mean(replies) * 1000:.1f} ms")
    return 0 if ok_ack and ok_reply else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commands", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=5)
    parser.add_argument("--command", default="top demo", help="the /heap command to send")
    parser.add_argument("--cooldown", type=float, default=0.0,
                        help="the service's capture cooldown; 0 = every command captures anew")
    args = parser.parse_args()
    return asyncio.run(bench(args.commands, args.concurrency, args.command, args.cooldown))


if __name__ == "__main__":
    sys.exit(main())
