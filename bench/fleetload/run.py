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
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import psutil

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench" / "gen_profile"))
sys.path.insert(0, str(REPO / "bench" / "fanout"))

from run import _SERVER  # noqa: E402  (bench/fanout/run.py)

from tests.support.redis import RedisServer, free_port  # noqa: E402
from tests.support.slack_standin import SignedSender, SlackStandIn  # noqa: E402

SECRET = "fleet-load-signing-secret"
FIXTURES = REPO / "tests" / "fixtures"


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values) or [0.0]
    index = min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def tree_rss(pid: int) -> int:
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total


async def bench(instances: int, captures: int, stacks: int) -> int:
    from gen_profile import big_heap_profile

    profile = big_heap_profile(stacks=stacks)
    tmp = Path(tempfile.mkdtemp(prefix="heapbot-fleetload-"))
    server = subprocess.Popen(
        [sys.executable, "-c", _SERVER, str(profile), str(FIXTURES / "goroutine.pb.gz"),
         str(FIXTURES / "heap_debug1.txt"), str(instances)], stdout=subprocess.PIPE, text=True)
    ports = [int(p) for p in server.stdout.readline().split()]  # type: ignore[union-attr]
    redis = RedisServer(tmp)
    redis.start()
    standin = await SlackStandIn().start()
    targets = ", ".join(f'"http://127.0.0.1:{p}"' for p in ports)
    registry = tmp / "heapbot.yaml"
    registry.write_text("services:\n" + "".join(
        f"  fleet{i}:\n    targets: [{targets}]\n    cooldown_seconds: 0\n"
        f"    concurrency: 40\n    timeout_seconds: 300\n" for i in range(captures)))
    port = free_port()
    env = {**os.environ, "SLACK_BOT_TOKEN": "xoxb-fleet-bench", "SLACK_SIGNING_SECRET": SECRET,
           "SLACK_API_URL": standin.api_url, "REDIS_URL": redis.url,
           "HEAPBOT_CONFIG": str(registry), "HEAPBOT_DATA_DIR": str(tmp / "data"),
           "HEAPBOT_HOST": "127.0.0.1", "HEAPBOT_PORT": str(port),
           "HEAPBOT_LOG_LEVEL": "WARNING"}
    env.pop("SLACK_APP_TOKEN", None)
    log = open(tmp / "bot.log", "wb")  # noqa: SIM115 - closed below
    bot = subprocess.Popen([sys.executable, str(REPO / "bench/load/bot_process.py"),
                            str(tmp / "stats.json")], env=env, stdout=log, stderr=log,
                           cwd=REPO)
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            deadline = time.monotonic() + 60
            while True:
                try:
                    async with session.get(url + "/healthz") as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                if time.monotonic() > deadline or bot.poll() is not None:
                    raise SystemExit("the bot did not start: " + str(tmp / "bot.log"))
                await asyncio.sleep(0.1)
            sender = SignedSender(url + "/slack/events", SECRET, standin)
            await sender.slash_command("help", channel_id="CWARM")  # import handlers once
            await asyncio.sleep(1)
            standin.reset()
            peak = 0
            stop = asyncio.Event()

            async def sample() -> None:
                nonlocal peak
                while not stop.is_set():
                    peak = max(peak, tree_rss(bot.pid))
                    await asyncio.sleep(0.05)

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
            sampler, prober = asyncio.create_task(sample()), asyncio.create_task(probe())
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
            await asyncio.gather(sampler, prober)
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
        bot.send_signal(signal.SIGTERM)
        try:
            bot.wait(30)
        except subprocess.TimeoutExpired:
            bot.kill()
        log.close()
        await standin.stop()
        redis.stop()
        server.kill()
        server.wait()


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
