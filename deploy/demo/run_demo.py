"""`make demo`: heapbot's main job end to end, on embedded defaults, without Slack.

Builds and starts the demo Go service (two instances of one service, every
scenario), writes a registry naming them, and answers /heap commands in the
terminal through the same handlers Slack uses: capture, top, goroutines, a
diff against the first capture some seconds later, and a leak hunt over three
more captures. Snapshots go to the embedded
redis-server under HEAPBOT_DATA_DIR (kept between runs). ``--console`` leaves
you at a ``heap>`` prompt with the demo still running.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))

from tests.support.demo import DemoProcess, build_demo, start_demo  # noqa: E402

SERVICE = "demo"


def write_registry(instances: list[DemoProcess], folder: Path) -> Path:
    """A heapbot.yaml with one service whose targets are the running instances."""
    targets = ", ".join(f'"{demo.url}"' for demo in instances)
    path = folder / "heapbot.yaml"
    path.write_text(
        "# written by deploy/demo/run_demo.py\n"
        "services:\n"
        f"  {SERVICE}:\n"
        f"    targets: [{targets}]\n"
        "    aliases: [payments]\n"
        "    timeout_seconds: 10\n"
        "    cooldown_seconds: 0\n",
        encoding="utf-8",
    )
    return path


async def answer(commands: list[str], pause: float) -> int:
    """Run each /heap command through handlers.run and print the reply; sleep at "pause"."""
    from rich.console import Console

    import handlers
    from bot.logs import configure_logging
    from bot.render.terminal import print_reply
    from bot.runtime import Runtime
    from bot.settings import Settings

    settings = Settings()
    # The terminal shows replies only; the log (redacted) goes to a file.
    log_file = Path(settings.data_dir) / "heapbot.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "a", encoding="utf-8") as stream:
        configure_logging(settings, stream=stream)
        return await _answer_all(commands, pause, Console(), await Runtime.create(settings),
                                 print_reply, handlers)


async def _answer_all(commands: list[str], pause: float, console: Any, runtime: Any,
                      print_reply: Any, handlers: Any) -> int:
    from bot.logs import request_context

    status = 0
    try:
        for text in commands:
            if text == "pause":
                console.print(f"[dim]… letting the leaks grow for {pause:g} s[/dim]")
                await asyncio.sleep(pause)
                continue
            console.rule(f"/heap {text}")
            with request_context():  # one id on every log line of this command
                reply = await handlers.run(runtime,
                                           handlers.Invocation(text=text, source="console"))
            print_reply(reply, console)
            status = status or (2 if reply.error else 0)
    finally:
        await runtime.close()
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=2, help="demo instances (default 2)")
    parser.add_argument("--rate", type=float, default=10.0, help="scenario rate multiplier")
    parser.add_argument("--pause", type=float, default=8.0,
                        help="seconds between the two captures (default 8)")
    parser.add_argument("--console", action="store_true",
                        help="then open the heap> prompt (demo keeps running)")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="heapbot-demo-run-"))
    print("building the demo Go service…", flush=True)
    binary = build_demo("demo-1")
    instances: list[DemoProcess] = []
    try:
        for _ in range(args.instances):
            instances.append(start_demo(binary, "all", rate=args.rate))
        print("demo instances: " + ", ".join(d.url for d in instances), flush=True)
        os.environ["HEAPBOT_CONFIG"] = str(write_registry(instances, work))
        os.environ.setdefault("HEAPBOT_LOG_FORMAT", "text")
        time.sleep(2)  # let the scenarios allocate something first
        commands = [f"capture {SERVICE}", f"top {SERVICE}", f"goroutines {SERVICE}", "pause",
                    f"diff {SERVICE}", f"leaks {SERVICE} --sample 3x3s"]
        status = asyncio.run(answer(commands, args.pause))
        if args.console:
            from bot.cli import main as heapbot_main

            print(f"\nTry: top {SERVICE} --cum, diff {SERVICE} since 1m, leaks {SERVICE}, "
                  "help. Ctrl-D quits.")
            status = heapbot_main(["console"])
        return status
    finally:
        for demo in instances:
            demo.stop()


if __name__ == "__main__":
    sys.exit(main())
