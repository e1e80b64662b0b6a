"""Load: 5 fleet captures at once (40 instances x 64k stacks each) while Slack keeps asking.

Everything real: the bot as its own ``heapbot serve`` process (bench/load/bot_process.py),
redis-server, the Slack stand-in, and 40 instances on 127.0.0.1 serving the 64k-stack
heap profile of bench/gen_profile (the server of bench/fanout). Five services, each over
the 40 instances, get `/heap top SERVICE` at the same moment (five separate captures:
200 profiles to fetch, decode and fold). While they run, a `/heap help` is sent every
100 ms; its ack time is measured, and so is `GET /healthz` (the anchor: the cheapest
request of the same process, same moment). Printed: ack p50/p99 vs the anchor, every
capture's answer time, and the peak of the bot's summed RSS (the bot plus its decode
worker processes, sampled every 50 ms).

Targets (issue 13): Slack ack p99 under 300 ms while 5 fleet captures run; memory
within the budget stated in the README.

    .venv/bin/python bench/fleetload/run.py [--instances 40] [--captures 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench" / "gen_profile"))

from bench._common import BotProcess, ProfileServer, TreeRssSampler, percentile  # noqa: E402
from tests.support.redis import RedisServer  # noqa: E402
from tests.support.registry import write_registry  # noqa: E402
from tests.support.slack_standin import SignedSender, SlackStandIn  # noqa: E402

SECRET = "fleet-load-signing-secret"


async def bench(instances: int, captures: int, stacks: int) -> int:
    from gen_profile import big_heap_profile

    profile = big_heap_profile(stacks=stacks)
    tmp = Path(tempfile.mkdtemp(prefix="heapbot-fleetload-"))
    server = ProfileServer(profile, count=instances).__enter__()
    redis = RedisServer(tmp)
    redis.start()
    standin = await SlackStandIn().start()
    registry = write_registry(tmp / "heapbot.yaml",
                              {f"fleet{i}": server.urls for i in range(captures)},
                              cooldown_seconds=0, concurrency=40, timeout_seconds=300)
    bot = BotProcess(tmp, registry=registry, redis_url=redis.url,
                     slack_api_url=standin.api_url, signing_secret=SECRET,
                     env={"HEAPBOT_LOG_LEVEL": "WARNING"})
    try:
        async with aiohttp.ClientSession() as session:
            await bot.wait_healthy()
            url = bot.url
            sender = SignedSender(url + "/slack/events", SECRET, standin)
            await sender.slash_command("help", channel_id="CWARM")  # import handlers once
            await asyncio.sleep(1)
            standin.reset()
            stop = asyncio.Event()

            acks: list[float] = []
            anchor: list[float] = []

            async def probe() -> None:
                n = 0
                while not stop.is_set():
                    resp = await sender.slash_command("help", channel_id=f"CPROBE{n:04d}")
                    acks.append(resp.elapsed)
                    started = time.perf_counter()
                    async with session.get(url + "/healthz") as r:
                        await r.read()
                    anchor.append(time.perf_counter() - started)
                    n += 1
                    await asyncio.sleep(0.1)

            urls = [standin.response_url() for _ in range(captures)]
            paths = {u.split("/", 3)[3]: i for i, u in enumerate(urls)}
            done: dict[int, float] = {}
            sampler, prober = TreeRssSampler(bot.pid).start(), asyncio.create_task(probe())
            started = time.perf_counter()
            await asyncio.gather(*(sender.slash_command(f"top fleet{i}", channel_id=f"CFLEET{i}",
                                                        response_url=urls[i])
                                   for i in range(captures)))

            def finished() -> bool:
                for r in standin.requests:
                    index = None
                    if r.method == "response_url":
                        index = paths.get(r.path.lstrip("/"))
                    elif r.method == "chat.postMessage":  # the table goes into the channel
                        channel = str(r.body.get("channel", ""))
                        if channel.startswith("CFLEET"):
                            index = int(channel[6:])
                    if index is not None and index not in done:
                        done[index] = time.perf_counter() - started
                return len(done) >= captures

            await standin.wait_for(finished, timeout=1800)
            stop.set()
            peak = sampler.stop()
            await prober
        errors = [r for r in standin.requests
                  if r.method in ("response_url", "chat.postMessage", "chat.postEphemeral")
                  and ("internal error" in str(r.body) or "could not" in str(r.body))]
        print(f"{captures} fleet captures of {instances} instances x {stacks} stacks "
              f"({profile.stat().st_size / 1e3:.0f} kB each); {os.cpu_count()} CPUs, "
              f"load average {os.getloadavg()[0]:.1f}")
        print(f"answers: {len(done)}/{captures} in "
              + ", ".join(f"{t:.1f}s" for t in sorted(done.values()))
              + f"; error answers: {len(errors)}")
        print(f"ack of /heap help during the captures: p50 {percentile(acks, 50) * 1e3:.0f} ms, "
              f"p99 {percentile(acks, 99) * 1e3:.0f} ms, max {max(acks) * 1e3:.0f} ms "
              f"(n={len(acks)}; target p99 < 300 ms)")
        print(f"anchor GET /healthz: p50 {percentile(anchor, 50) * 1e3:.0f} ms, "
              f"p99 {percentile(anchor, 99) * 1e3:.0f} ms; ack p99 / healthz p99 = "
              f"{percentile(acks, 99) / max(percentile(anchor, 99), 1e-6):.1f}x")
        print(f"bot peak RSS (bot + decode workers): {peak / 2**20:.0f} MiB")
        return 0 if len(done) == captures and not errors else 1
    finally:
        bot.stop()
        await standin.stop()
        redis.stop()
        server.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instances", type=int, default=40)
    parser.add_argument("--captures", type=int, default=5)
    parser.add_argument("--stacks", type=int, default=65_536)
    args = parser.parse_args()
    return asyncio.run(bench(args.instances, args.captures, args.stacks))


if __name__ == "__main__":
    sys.exit(main())
