"""Hostile regexes against ``heapbot serve``: /healthz while `(.|.)*Z` runs (issue 17 item 1).

The bot runs as its own process (bench/load/bot_process.py, with its event-loop lag
monitor) on a real redis-server, profiling the demo Go service, answering Slack on
the stand-in; commands arrive as correctly signed slash commands. Rounds alternate:

- anchor: five ordinary commands (`top demo`, `top demo --focus main`, `top demo -n 30`,
  `peek demo main`, `list demo main`);
- hostile: the same five with `(.|.)*Z` as --focus, --ignore, --hide and FUNC_RE.

/healthz is polled every 20 ms on a fresh connection through each round. It prints, per
round, /healthz max and p99, and the hostile rounds' worst /healthz as a ratio of the
anchor rounds' worst (same bot, same run, same box). Under Python ``re`` a single hostile
command pinned a core and /healthz timed out. A warm-up round runs first: each
command's module is imported on its first use.

    .venv/bin/python bench/regex/run.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from bench._common import BotProcess, healthz_seconds, lag_line, percentile  # noqa: E402
from tests.support.demo import build_demo, start_demo  # noqa: E402
from tests.support.redis import RedisServer  # noqa: E402
from tests.support.registry import write_registry  # noqa: E402
from tests.support.slack_standin import SignedSender, SlackStandIn  # noqa: E402

SECRET = "regex-bench-signing-secret"
HOSTILE = "(.|.)*Z"
ANCHOR = ["top demo", "top demo --focus main", "top demo -n 30", "peek demo main",
          "list demo main"]
ATTACK = [f"top demo --focus '{HOSTILE}'", f"top demo --ignore '{HOSTILE}'",
          f"top demo --hide '{HOSTILE}'", f"peek demo '{HOSTILE}'", f"list demo '{HOSTILE}'"]


async def round_of(sender: SignedSender, standin: SlackStandIn, url: str,
                   commands: list[str]) -> tuple[list[float], float]:
    """Send ``commands`` at once; poll /healthz until all are answered. (latencies, seconds)."""
    standin.reset()
    started = time.perf_counter()
    for text in commands:
        await sender.slash_command(text, channel_id="C0DEMO")

    def answered() -> int:
        return len(standin.calls("chat.postMessage")) + len(standin.calls("response_url"))

    latencies: list[float] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:
        deadline = time.monotonic() + 120
        while answered() < len(commands) and time.monotonic() < deadline:
            latencies.append(await healthz_seconds(url, session=s))
            await asyncio.sleep(0.02)
    if answered() < len(commands):
        raise SystemExit(f"only {answered()} of {len(commands)} commands answered in 120 s")
    text = json.dumps([r.body for r in standin.requests])
    if "internal error" in text:
        raise SystemExit("a command answered with an internal error")
    return latencies, time.perf_counter() - started


def line(name: str, latencies: list[float], seconds: float) -> str:
    return (f"{name:<8} answered in {seconds:5.1f} s; /healthz n={len(latencies):3d} "
            f"max {max(latencies) * 1000:6.1f} ms, "
            f"p99 {percentile(latencies, 99) * 1000:6.1f} ms")


async def bench(rounds: int) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="heapbot-bench-regex-"))
    redis = RedisServer(tmp)
    redis.start()
    standin = await SlackStandIn().start()
    demo = start_demo(build_demo())
    registry = write_registry(tmp / "heapbot.yaml", {"demo": [demo.url]}, cooldown_seconds=0)
    bot = BotProcess(tmp, registry=registry, redis_url=redis.url, slack_api_url=standin.api_url,
                     signing_secret=SECRET, env={"HEAPBOT_LOG_FORMAT": "text"})
    url = bot.url
    sender = SignedSender(bot.events_url, SECRET, standin)
    worst = {"anchor": 0.0, "hostile": 0.0}
    try:
        await bot.wait_healthy()
        print(line("warm-up", *await round_of(sender, standin, url, ANCHOR + ATTACK)))
        bot.mark()  # the lag monitor counts from here
        for _ in range(rounds):
            for name, commands in (("anchor", ANCHOR), ("hostile", ATTACK)):
                latencies, seconds = await round_of(sender, standin, url, commands)
                worst[name] = max(worst[name], *latencies)
                print(line(name, latencies, seconds))
    finally:
        bot.stop()
        await standin.stop()
        demo.stop()
        redis.stop()
    print(f"worst /healthz: anchor {worst['anchor'] * 1000:.1f} ms, hostile "
          f"{worst['hostile'] * 1000:.1f} ms = {worst['hostile'] / worst['anchor']:.2f}x anchor")
    stats = bot.stats()
    if stats:
        print(lag_line(stats, "over the rounds"))
    print(f"(load average {os.getloadavg()[0]:.1f}; bot log: {bot.log_path})")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    return asyncio.run(bench(parser.parse_args().rounds))


if __name__ == "__main__":
    sys.exit(main())
