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
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.support.demo import build_demo, start_demo  # noqa: E402
from tests.support.redis import RedisServer, free_port  # noqa: E402
from tests.support.slack_standin import SignedSender, SlackStandIn  # noqa: E402

SECRET = "regex-bench-signing-secret"
HOSTILE = "(.|.)*Z"
ANCHOR = ["top demo", "top demo --focus main", "top demo -n 30", "peek demo main",
          "list demo main"]
ATTACK = [f"top demo --focus '{HOSTILE}'", f"top demo --ignore '{HOSTILE}'",
          f"top demo --hide '{HOSTILE}'", f"peek demo '{HOSTILE}'", f"list demo '{HOSTILE}'"]


async def healthz(session: aiohttp.ClientSession, url: str, timeout: float = 10.0) -> float:
    started = time.perf_counter()
    try:
        async with session.get(url + "/healthz", timeout=aiohttp.ClientTimeout(total=timeout)
                               ) as resp:
            await resp.read()
    except (TimeoutError, aiohttp.ClientError):
        return timeout
    return time.perf_counter() - started


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
            latencies.append(await healthz(s, url))
            await asyncio.sleep(0.02)
    if answered() < len(commands):
        raise SystemExit(f"only {answered()} of {len(commands)} commands answered in 120 s")
    text = json.dumps([r.body for r in standin.requests])
    if "internal error" in text:
        raise SystemExit("a command answered with an internal error")
    return latencies, time.perf_counter() - started


def line(name: str, latencies: list[float], seconds: float) -> str:
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return (f"{name:<8} answered in {seconds:5.1f} s; /healthz n={len(ordered):3d} "
            f"max {ordered[-1] * 1000:6.1f} ms, p99 {p99 * 1000:6.1f} ms")


async def bench(rounds: int) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="heapbot-bench-regex-"))
    redis = RedisServer(tmp)
    redis.start()
    standin = await SlackStandIn().start()
    demo = start_demo(build_demo())
    registry = tmp / "heapbot.yaml"
    registry.write_text(f"services:\n  demo:\n    targets: [\"{demo.url}\"]\n"
                        "    cooldown_seconds: 0\n")
    port = free_port()
    env = {**os.environ, "SLACK_BOT_TOKEN": "xoxb-regex-bench", "SLACK_SIGNING_SECRET": SECRET,
           "SLACK_API_URL": standin.api_url, "REDIS_URL": redis.url,
           "HEAPBOT_CONFIG": str(registry), "HEAPBOT_DATA_DIR": str(tmp / "data"),
           "HEAPBOT_HOST": "127.0.0.1", "HEAPBOT_PORT": str(port), "HEAPBOT_LOG_FORMAT": "text"}
    env.pop("SLACK_APP_TOKEN", None)
    log_path, stats_path = tmp / "bot.log", tmp / "bot-stats.json"
    with open(log_path, "wb") as log:
        bot = subprocess.Popen([sys.executable, str(REPO / "bench/load/bot_process.py"),
                                str(stats_path)], env=env, stdout=log, stderr=log, cwd=REPO)
    url = f"http://127.0.0.1:{port}"
    sender = SignedSender(url + "/slack/events", SECRET, standin)
    worst = {"anchor": 0.0, "hostile": 0.0}
    try:
        async with aiohttp.ClientSession() as s:
            deadline = time.monotonic() + 60
            while await healthz(s, url, 1.0) >= 1.0:
                if bot.poll() is not None or time.monotonic() > deadline:
                    print(log_path.read_text()[-3000:])
                    return 1
        print(line("warm-up", *await round_of(sender, standin, url, ANCHOR + ATTACK)))
        bot.send_signal(signal.SIGUSR1)  # the lag monitor counts from here
        for _ in range(rounds):
            for name, commands in (("anchor", ANCHOR), ("hostile", ATTACK)):
                latencies, seconds = await round_of(sender, standin, url, commands)
                worst[name] = max(worst[name], *latencies)
                print(line(name, latencies, seconds))
    finally:
        bot.send_signal(signal.SIGTERM)
        try:
            bot.wait(30)
        except subprocess.TimeoutExpired:
            bot.kill()
        await standin.stop()
        demo.stop()
        redis.stop()
    print(f"worst /healthz: anchor {worst['anchor'] * 1000:.1f} ms, hostile "
          f"{worst['hostile'] * 1000:.1f} ms = {worst['hostile'] / worst['anchor']:.2f}x anchor")
    if stats_path.exists():
        stats = json.loads(stats_path.read_text())
        print(f"bot loop lag over the rounds: max {stats['lag_max'] * 1000:.1f} ms, p99 "
              f"{stats['lag_p99'] * 1000:.1f} ms; of it heapbot's own CPU: max "
              f"{stats['busy_max'] * 1000:.1f} ms")
    print(f"(load average {os.getloadavg()[0]:.1f}; bot log: {log_path})")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    return asyncio.run(bench(parser.parse_args().rounds))


if __name__ == "__main__":
    sys.exit(main())
