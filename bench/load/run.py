"""Load: 100 concurrent signed /heap commands over 10 live demo services, bot in its own process.

Everything is real: 10 demo Go services (one instance each), redis-server, the
bot as a separate ``heapbot serve`` process (bench/load/bot_process.py, which
also runs an event-loop lag monitor), and the Slack stand-in receiving replies.
All commands are sent at once (each from its own channel and with its own
response_url, so every answer can be matched to its command). Printed:

- every command answered? (and how many answers were errors, by kind)
- ack: HTTP round trip of each slash command (target p99 300 ms, must be < 3 s);
- answer: command sent → reply received by the stand-in;
- loop lag inside the bot during the load (must never exceed 100 ms);
- peak RSS of the bot process (sampled, and ru_maxrss at exit).

Anchor measured in the same run: 100 concurrent ``GET /healthz`` against the
same bot process (the cheapest request it serves); ack p99 is printed as a
ratio of it.

    .venv/bin/python bench/load/run.py [--commands 100] [--services 10]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from bench._common import (  # noqa: E402
    BotProcess,
    TreeRssSampler,
    latency_line,
    percentile,
)
from tests.support.demo import build_demo, start_demo  # noqa: E402
from tests.support.redis import RedisServer  # noqa: E402
from tests.support.registry import write_registry  # noqa: E402
from tests.support.slack_standin import SignedSender, SlackStandIn  # noqa: E402

SECRET = "load-bench-signing-secret"
ACK_TARGET_P99 = 0.300
ACK_LIMIT = 3.0
LAG_LIMIT = 0.100
MIX = [("top {svc}", 6), ("goroutines {svc}", 2), ("stats {svc}", 1), ("help", 0.5),
       ("services", 0.5)]


def commands_for(count: int, services: int) -> list[str]:
    """``count`` commands in MIX proportions, spread round-robin over the services."""
    total = sum(weight for _, weight in MIX)
    out: list[str] = []
    for template, weight in MIX:
        out += [template] * round(count * weight / total)
    out = (out + ["top {svc}"] * count)[:count]
    return [t.format(svc=f"svc{i % services:02d}") for i, t in enumerate(out)]


async def healthz_anchor(url: str, count: int) -> list[float]:
    """``count`` concurrent GET /healthz: the cheapest round trip of the same process."""
    async with aiohttp.ClientSession() as session:
        async def one() -> float:
            started = time.perf_counter()
            async with session.get(url + "/healthz") as resp:
                await resp.read()
            return time.perf_counter() - started

        return list(await asyncio.gather(*(one() for _ in range(count))))


async def bench(count: int, services: int, rate: float, timeout: float,
                asyncio_debug: bool = False, cold: bool = False, profile: bool = False,
                py_spy: str = "") -> int:
    tmp = Path(tempfile.mkdtemp(prefix="heapbot-bench-load-"))
    redis = RedisServer(tmp)
    redis.start()
    binary = build_demo("dev")
    demos = [start_demo(binary, "all", rate=rate) for _ in range(services)]
    standin = await SlackStandIn().start()
    registry = write_registry(tmp / "heapbot.yaml",
                              {f"svc{i:02d}": [d.url] for i, d in enumerate(demos)},
                              cooldown_seconds=0)
    env = {"HEAPBOT_LOG_LEVEL": "WARNING"}
    if asyncio_debug:  # asyncio then logs every callback that holds the loop > 100 ms
        env["PYTHONASYNCIODEBUG"] = "1"
    if profile:
        env["HEAPBOT_BENCH_PROFILE"] = "1"
    bot = BotProcess(tmp, registry=registry, redis_url=redis.url,
                     slack_api_url=standin.api_url, signing_secret=SECRET, env=env)
    url = bot.url
    outcome = 1
    try:
        await bot.wait_healthy()
        sender = SignedSender(bot.events_url, SECRET, standin)
        # Warm up: one command of every kind first. handlers/ imports a command's module
        # on its first use, on the event loop (100-200 ms each here); the figures below
        # are for a bot that has served each command once. --cold skips this.
        warmups = [] if cold else [t.format(svc="svc00") for t, _ in MIX]
        for warm in warmups:
            await sender.slash_command(warm, channel_id="CWARM")
        await standin.wait_for(lambda: len(standin.requests) >= len(warmups), timeout=60)
        await asyncio.sleep(1)
        standin.reset()
        sampler = TreeRssSampler(bot.pid).start()  # the bot and its decode workers
        bot.mark()  # the lag monitor starts counting now
        spy = None
        if py_spy:  # sample the bot's threads through the ack burst (collapsed stacks)
            spy = subprocess.Popen(["py-spy", "record", "--pid", str(bot.pid), "--rate", "1000",
                                    "--duration", "2", "--format", "raw", "--gil",
                                    "--output", py_spy], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
            await asyncio.sleep(0.5)  # py-spy attaches
        await asyncio.sleep(0.1)

        texts = commands_for(count, services)
        acks: list[float] = []
        answers: dict[int, float] = {}
        statuses: Counter[int] = Counter()
        urls = [standin.response_url() for _ in texts]
        paths = {u.split("/", 3)[3]: i for i, u in enumerate(urls)}
        sent_at: dict[int, float] = {}

        def channel(i: int) -> str:
            return f"CLOAD{i:04d}"

        def answered() -> bool:
            now = time.perf_counter()
            for r in standin.requests:
                if not r.ok:
                    continue
                index = None
                if r.method == "response_url":
                    index = paths.get(r.path.lstrip("/"))
                elif r.method in ("chat.postMessage", "chat.postEphemeral"):
                    ch = str(r.body.get("channel", ""))
                    if ch.startswith("CLOAD"):
                        index = int(ch[5:])
                if index is not None and index not in answers:
                    answers[index] = now - sent_at[index]
            return len(answers) >= len(texts)

        async def one(i: int, text: str) -> None:
            sent_at[i] = time.perf_counter()
            resp = await sender.slash_command(text, channel_id=channel(i), response_url=urls[i])
            statuses[resp.status] += 1
            acks.append(resp.elapsed)

        started = time.perf_counter()
        await asyncio.gather(*(one(i, t) for i, t in enumerate(texts)))
        bot.process.send_signal(signal.SIGUSR2)  # every ack is in: the ack window's profile
        with contextlib.suppress(TimeoutError):
            await standin.wait_for(answered, timeout=timeout)
        wall = time.perf_counter() - started
        anchor = await healthz_anchor(url, count)
        if spy is not None:
            spy.wait(30)
        sampler.stop()

        kinds = Counter()
        for r in standin.requests:
            if r.method in ("response_url", "chat.postMessage", "chat.postEphemeral") and r.ok:
                text = json.dumps(r.body)
                if "internal error" in text:
                    kinds["internal error"] += 1
                elif "could not do that" in text:
                    kinds["user-facing error"] += 1
        bot.stop(60)
        stats: dict[str, Any] = bot.stats()

        print(f"heapbot load: {len(texts)} concurrent signed /heap commands over {services} live "
              f"demo services ({dict(Counter(t.split()[0] for t in texts))}); {wall:.1f} s wall")
        print(f"answered: {len(answers)}/{len(texts)}; HTTP statuses {dict(statuses)}; "
              f"error answers {dict(kinds) or 'none'}")
        print(latency_line("ack (slash command HTTP)", acks))
        print(latency_line("answer (command -> reply)", list(answers.values())))
        print(latency_line("anchor: GET /healthz x N", anchor))
        ratio = percentile(acks, 99) / max(percentile(anchor, 99), 1e-6)
        print(f"ratio ack p99 / healthz p99 = {ratio:.1f}x")
        if stats:
            print(f"bot loop lag during load: max {stats['lag_max'] * 1000:.1f} ms, p99 "
                  f"{stats['lag_p99'] * 1000:.1f} ms, {stats['lag_over_100ms']} ticks over "
                  f"100 ms of {stats['ticks']}")
            print(f"  of which the loop's own thread was busy (CPU): max "
                  f"{stats['busy_max'] * 1000:.1f} ms, {stats['busy_over_100ms']} ticks over "
                  f"100 ms (the rest is the OS not scheduling the process: "
                  f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")
            for number, stack in enumerate(stats.get("stalls", [])[:3], 1):
                print(f"  stall {number}: where the loop thread was after 80 ms without a "
                      f"tick:\n" + "\n".join("      " + ln for ln in stack.splitlines()[-8:]))
            if stats.get("ack_profile"):
                print("where the loop thread's CPU went until the last ack (cProfile, tottime):")
                print(stats["ack_profile"])
            if stats.get("profile"):
                print("where the loop thread's CPU went during the load (cProfile, tottime):")
                print(stats["profile"])
            print(f"bot peak RSS: {max(sampler.peak, stats['peak_rss']) / 2**20:.0f} MiB "
                  f"(bot + decode workers, sampled during load {sampler.peak / 2**20:.0f} MiB)")
        ack_p99 = percentile(acks, 99)
        checks = {
            "every command answered": len(answers) == len(texts),
            "no internal errors": not kinds.get("internal error"),
            f"ack p99 < {ACK_LIMIT:g} s": ack_p99 < ACK_LIMIT,
            f"loop never blocked by heapbot > {LAG_LIMIT * 1000:.0f} ms": bool(stats)
            and stats["busy_max"] <= LAG_LIMIT,
        }
        for name, ok in checks.items():
            print(f"  {'ok  ' if ok else 'FAIL'} {name}")
        print(f"target ack p99 < {ACK_TARGET_P99 * 1000:.0f} ms: "
              f"{'met' if ack_p99 < ACK_TARGET_P99 else 'missed'} ({ack_p99 * 1000:.0f} ms)")
        outcome = 0 if all(checks.values()) else 1
    finally:
        bot.stop()
        await standin.stop()
        for demo in demos:
            demo.stop()
        redis.stop()
    print(f"(bot log: {bot.log_path})")
    return outcome


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commands", type=int, default=100)
    parser.add_argument("--services", type=int, default=10)
    parser.add_argument("--rate", type=float, default=2.0,
                        help="demo allocation rate (gentle on shared CPUs)")
    parser.add_argument("--timeout", type=float, default=240.0,
                        help="seconds to wait for every answer")
    parser.add_argument("--asyncio-debug", action="store_true",
                        help="run the bot with PYTHONASYNCIODEBUG=1: its log names each "
                        "callback that blocked the loop for more than 100 ms (slower)")
    parser.add_argument("--cold", action="store_true",
                        help="no warm-up: the load meets first-use imports")
    parser.add_argument("--profile", action="store_true",
                        help="cProfile the bot's loop thread during the load and print the top")
    parser.add_argument("--py-spy", metavar="PATH", default="",
                        help="py-spy record (pip install py-spy) the bot for 2 s from the "
                        "start of the load, only samples holding the GIL, collapsed stacks "
                        "to PATH")
    args = parser.parse_args()
    return asyncio.run(bench(args.commands, args.services, args.rate, args.timeout,
                             args.asyncio_debug, args.cold, args.profile, args.py_spy))


if __name__ == "__main__":
    sys.exit(main())
