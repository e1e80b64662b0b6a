"""`make demo`: heapbot's main job end to end, on embedded defaults, without Slack.

Builds and starts the demo Go service (two instances of one service, every
scenario), writes a registry naming them, and answers /heap commands in the
terminal through the same handlers Slack uses: capture, top, goroutines, a
diff against the first capture some seconds later, and a leak hunt over three
more captures.

Everything stays in ``.heapbot-demo/`` (gitignored) and keeps running after the
script ends: the instances (logs ``demo-N.log``), the registry ``heapbot.yaml``
and the embedded redis-server's data under ``data/``. ``heapbot`` run in the
repository (its root or any directory below it) finds that registry and data dir
without any variable (:func:`bot.settings.find_registry`), so the README's next
commands work as written.
``--console`` goes straight to the ``heap>`` prompt (starting the demo if it is
not running); ``--stop`` (``make demo-stop``) stops the instances and the
embedded redis-server and removes the registry (captures stay in ``data/``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))

from bot.settings import DEMO_DIR, find_registry  # noqa: E402
from tests.support.demo import DemoProcess, build_demo, start_demo  # noqa: E402

SERVICE = "demo"
VERSION = "demo-1"  # the version the demo binary is built with, and its deploy marker
STATE_FILE = "instances.json"  # pids, ports and the binary of the running instances


# ------------------------------------------------------------------ the demo's folder

def write_registry(urls: list[str], folder: Path) -> Path:
    """A heapbot.yaml with one service whose targets are the running instances."""
    targets = ", ".join(f'"{url}"' for url in urls)
    path = folder / "heapbot.yaml"
    path.write_text(
        "# written by deploy/demo/run_demo.py; `make demo-stop` removes it\n"
        "services:\n"
        f"  {SERVICE}:\n"
        f"    targets: [{targets}]\n"
        "    aliases: [payments]\n"
        "    timeout_seconds: 10\n"
        "    cooldown_seconds: 0\n"
        "    source:  # `list` shows the demo's source lines from this checkout\n"
        f"      dir: {json.dumps(str(REPO_ROOT))}\n",
        encoding="utf-8",
    )
    return path


def _read_state(folder: Path) -> dict[str, Any]:
    try:
        return json.loads((folder / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _is_our_demo(pid: int, binary: str) -> bool:
    """The pid still runs the demo binary (not a pid reused by something else)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
    except OSError:
        try:
            os.kill(pid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return sys.platform != "linux"  # no /proc: trust the recorded pid
    return cmdline == binary


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/healthz", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def running_urls(folder: Path) -> list[str]:
    """URLs of the instances a previous run left running (all of them answer), else []."""
    state = _read_state(folder)
    instances = state.get("instances", [])
    if instances and all(_is_our_demo(i["pid"], state.get("binary", "")) and _answers(i["url"])
                         for i in instances):
        return [i["url"] for i in instances]
    return []


def stop_instances(folder: Path) -> int:
    """SIGTERM the instances recorded in the folder (then SIGKILL); how many were running."""
    state = _read_state(folder)
    stopped = 0
    for instance in state.get("instances", []):
        pid = instance["pid"]
        if not _is_our_demo(pid, state.get("binary", "")):
            continue
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
            stopped += 1
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and _is_our_demo(pid, state.get("binary", "")):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)  # reap it if it was our own child
            time.sleep(0.05)
        if _is_our_demo(pid, state.get("binary", "")):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    (folder / STATE_FILE).unlink(missing_ok=True)
    return stopped


def start_instances(folder: Path, count: int, rate: float) -> list[str]:
    """Build the demo and start ``count`` detached instances; record them; return their URLs."""
    stop_instances(folder)  # a previous run's instances: replaced, not doubled
    print("building the demo Go service…", flush=True)
    binary = build_demo(VERSION)
    instances: list[DemoProcess] = []
    try:
        for n in range(1, count + 1):
            instances.append(start_demo(binary, "all", rate=rate,
                                        detach_log=folder / f"demo-{n}.log"))
    except BaseException:
        for demo in instances:
            demo.stop()
        raise
    state = {"binary": str(binary),
             "instances": [{"pid": d.pid, "url": d.url} for d in instances]}
    (folder / STATE_FILE).write_text(json.dumps(state, indent=1), encoding="utf-8")
    return [d.url for d in instances]


def use_folder(folder: Path) -> None:
    """Point this process's heapbot at the demo's registry and data dir."""
    os.environ["HEAPBOT_CONFIG"] = str(folder / "heapbot.yaml")
    os.environ["HEAPBOT_DATA_DIR"] = str(folder / "data")
    os.environ.setdefault("HEAPBOT_LOG_FORMAT", "text")
    from bot.settings import get_settings

    get_settings.cache_clear()


def stop(folder: Path) -> int:
    """`make demo-stop`: the instances, then the embedded redis-server; data is kept."""
    stopped = stop_instances(folder)
    from bot.errors import HeapbotError
    from bot.redis_server import EmbeddedRedis

    (folder / "heapbot.yaml").unlink(missing_ok=True)
    try:
        redis_stopped = EmbeddedRedis(folder / "data").stop()
    except HeapbotError as exc:  # a console still open on the demo's data
        print(f"stopped {stopped} demo instance{'s' if stopped != 1 else ''}; "
              f"{exc.user_message()}")
        return 2
    print(f"stopped {stopped} demo instance{'s' if stopped != 1 else ''}"
          f"{' and the embedded redis-server' if redis_stopped else ''}; "
          f"captures stay in {folder / 'data'}")
    return 0


# ------------------------------------------------------------------ the scripted run

async def answer(commands: list[str], pause: float) -> int:
    """Run each /heap command through handlers.run and print the reply; sleep at "pause"."""
    import handlers
    from bot.logs import configure_logging
    from bot.render.terminal import output_console, print_reply
    from bot.runtime import Runtime
    from bot.settings import get_settings

    settings = get_settings()
    # The terminal shows replies only; the log (redacted) goes to a file.
    log_file = Path(settings.data_dir) / "heapbot.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "a", encoding="utf-8") as stream:
        configure_logging(settings, stream=stream)
        return await _answer_all(commands, pause, output_console(),
                                 await Runtime.create(settings), print_reply, handlers)


async def _answer_all(commands: list[str], pause: float, console: Any, runtime: Any,
                      print_reply: Any, handlers: Any) -> int:
    from rich.text import Text

    from bot.logs import request_context

    status = 0
    try:
        for text in commands:
            if text == "pause":
                console.print(Text(f"… letting the leaks grow for {pause:g} s", style="dim"))
                await asyncio.sleep(pause)
                continue
            console.print()
            console.print(Text(f"── /heap {text} ", style="bold"))
            with request_context():  # one id on every log line of this command
                reply = await handlers.run(runtime,
                                           handlers.Invocation(text=text, source="console"))
            print_reply(reply, console)
            status = status or (2 if reply.error else 0)
    finally:
        await runtime.close()
    return status


def next_steps(folder: Path) -> str:
    """What to type next, as it works from where the user stands."""
    here = find_registry().found == folder / "heapbot.yaml"  # as heapbot finds it from here
    prefix = "" if here else (f"HEAPBOT_CONFIG={folder / 'heapbot.yaml'} "
                              f"HEAPBOT_DATA_DIR={folder / 'data'} ")
    heapbot = os.path.relpath(Path(sys.executable).parent / "heapbot")
    lines = [(f"{prefix}{heapbot} ask \"/heap top {SERVICE}\"", ""),
             (f"{prefix}{heapbot} console",
              f"heap> prompt: diff {SERVICE}, leaks {SERVICE}, history {SERVICE}, help"),
             (f"{prefix}{heapbot} help", "every /heap command; each also runs as "
              f"`heapbot top {SERVICE} …`"),
             ("make demo-stop", "stop the instances and the embedded Redis")]
    width = max(len(command) for command, note in lines if note)
    shown = "".join(f"  {command:<{width}}  # {note}\n" if note else f"  {command}\n"
                    for command, note in lines)
    return f"\nThe demo keeps running (registry, logs and data in {folder}). Next:\n{shown}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=2, help="demo instances (default 2)")
    parser.add_argument("--rate", type=float, default=10.0, help="scenario rate multiplier")
    parser.add_argument("--pause", type=float, default=8.0,
                        help="seconds between the two captures (default 8)")
    parser.add_argument("--console", action="store_true",
                        help="no scripted run: straight to the heap> prompt")
    parser.add_argument("--stop", action="store_true",
                        help="stop the demo instances and the embedded redis-server")
    parser.add_argument("--dir", type=Path, default=REPO_ROOT / DEMO_DIR,
                        help=f"where the demo lives (default ./{DEMO_DIR})")
    args = parser.parse_args(argv)
    folder = args.dir.resolve()
    if args.stop:
        return stop(folder)
    folder.mkdir(parents=True, exist_ok=True)

    if args.console:
        urls = running_urls(folder) or start_instances(folder, args.instances, args.rate)
        write_registry(urls, folder)
        use_folder(folder)
        from bot.cli import main as heapbot_main

        print(f"demo instances: {', '.join(urls)}. Try: top {SERVICE}, goroutines {SERVICE}, "
              f"diff {SERVICE}, leaks {SERVICE} --sample 3x5s, help. Ctrl-D quits; "
              "`make demo-stop` stops the demo.", flush=True)
        return heapbot_main(["console"])

    urls = start_instances(folder, args.instances, args.rate)
    try:
        print("demo instances: " + ", ".join(urls), flush=True)
        write_registry(urls, folder)
        use_folder(folder)
        time.sleep(2)  # let the scenarios allocate something first
        # The instances just started, as after a deploy: the marker makes `diff since deploy`
        # work, and the leak report of a second `make demo` reads this run only (not the
        # previous run's captures, across the restart).
        commands = [f"deploy {SERVICE} {VERSION}", f"capture {SERVICE}", f"top {SERVICE}",
                    f"goroutines {SERVICE}", "pause", f"diff {SERVICE}",
                    f"leaks {SERVICE} --sample 3x3s"]
        status = asyncio.run(answer(commands, args.pause))
    except BaseException:
        stop(folder)  # a run that failed leaves nothing behind
        raise
    print(next_steps(folder), flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
