"""Service mode of the CLI, and the console: /heap commands without Slack.

``heapbot top payments``, ``heapbot ask "/heap top payments"`` and the
``heapbot console`` prompt all go through :func:`handlers.run`, exactly like
Slack, and print the Reply with the terminal renderer (or ``reply.data`` as
JSON with ``--format json``). Files a reply carries (a chart, a raw profile)
are written under ``HEAPBOT_DATA_DIR/files`` and their paths printed.
Exit status: 0 for an answer, 2 for an error reply.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import re
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.text import Text

if TYPE_CHECKING:
    from bot.reply import Reply
    from bot.runtime import Runtime

EXIT_OK, EXIT_ERROR = 0, 2
PROMPT = "heap> "
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


# ------------------------------------------------------------------ Runtime lifecycle

def log_path() -> Path:
    """Where the CLI and the console write heapbot's log (tracebacks stay off the screen)."""
    from bot.settings import get_settings

    return Path(get_settings().data_dir) / "heapbot.log"


def configure_cli_logging() -> None:
    """Log to HEAPBOT_DATA_DIR/heapbot.log (redacted), so the terminal shows only replies."""
    import logging

    from bot.settings import get_settings

    path = log_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        stream = open(path, "a", encoding="utf-8")  # noqa: SIM115 - lives as long as the process
    except OSError:
        logging.getLogger().addHandler(logging.NullHandler())
        return
    from bot.logs import configure_logging

    configure_logging(get_settings(), stream=stream)


async def open_runtime() -> Runtime:
    """The Runtime for this process (registry, store, capturer) from the environment."""
    from bot import workpool
    from bot.cli import startup_done
    from bot.runtime import Runtime
    from bot.settings import get_settings

    configure_cli_logging()
    workpool.one_shot()
    runtime = await Runtime.create(get_settings())
    startup_done()
    return runtime


async def close_runtime(runtime: Runtime) -> None:
    """Close the Runtime's connections (and the embedded Redis it started)."""
    await runtime.close()


# ------------------------------------------------------------------ argparse → /heap text

def _report_options(args: argparse.Namespace, *, json_default_all: bool = True) -> list[str]:
    argv: list[str] = []
    nodes = getattr(args, "nodes", None)
    if nodes is None and json_default_all and getattr(args, "format", "text") == "json":
        nodes = 0  # JSON carries every row unless -n says otherwise
    if nodes is not None:
        argv += ["-n", str(nodes)]
    if getattr(args, "cum", False):
        argv.append("--cum")
    for option, attr in (("--type", "sample_type"), ("--focus", "focus"),
                         ("--ignore", "ignore"), ("--hide", "hide")):
        value = getattr(args, attr, None)
        if value:
            argv += [option, value]
    return argv


def command_argv(args: argparse.Namespace) -> list[str]:
    """The handler's words: the parsed CLI options, then the words the CLI does not know.

    ``heapbot top payments -n 5 --snapshot ID --download`` → ["top", "payments", "-n", "5",
    "--snapshot", "ID", "--download"]: the slash command's grammar decides the rest.
    """
    extra = list(getattr(args, "extra", None) or [])
    if args.command == "diff" and extra[:1] == ["since"]:  # `heapbot diff demo since 1h`
        if len(extra) < 2:  # as /heap diff says it, not a silent `since previous`
            from bot.errors import UsageError

            raise UsageError("`since` needs a reference.",
                             hint="Usage: `heapbot diff SERVICE since previous|deploy|1h|ID`")
        args.since, extra = extra[1], extra[2:]
    return _known_argv(args) + extra


def _known_argv(args: argparse.Namespace) -> list[str]:
    """The handler's words for the options the CLI parser knows."""
    command = args.command
    service: str | None = getattr(args, "service", None)
    svc = [service] if service else []  # absent only where argparse allows it
    flame = ["--flame"] if getattr(args, "flame", None) is not None else []
    if command == "top":
        return ["top", *svc, *_report_options(args), *flame]
    if command == "diff":
        return ["diff", *svc, "since", args.since or "previous", *_report_options(args),
                *flame]
    if command in ("peek", "list"):
        if not args.regex:
            from bot.errors import UsageError

            raise UsageError(f"`heapbot {command} SERVICE FUNC_RE` needs a FUNC_RE.")
        return [command, *svc, args.regex, *_report_options(args, json_default_all=False)]
    if command == "goroutines":
        argv = ["goroutines", *svc]
        nodes = args.nodes if args.nodes is not None else (0 if args.format == "json" else None)
        return argv + (["-n", str(nodes)] if nodes is not None else [])
    if command == "memstats":
        return ["stats", *svc]
    if command == "leaks":
        return ["leaks", *svc] + (["--sample", args.sample] if args.sample else [])
    if command == "capture":
        return ["capture", *svc] + (["--force"] if args.force else [])
    if command == "history":
        return ["history", *svc, "-n", str(args.limit)]
    if command == "deploy":
        return ["deploy", *svc, args.version]
    if command == "services":
        return ["services"]
    return [command, *svc]


# ------------------------------------------------------------------ running and printing

def _who() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user name in a container is fine
        return "cli"


async def run_text(runtime: Runtime | None, text: str, source: str = "cli") -> Reply:
    """One /heap command through the same dispatcher Slack uses (``None``: help only)."""
    import handlers

    return await handlers.run(runtime, handlers.Invocation(text=text, user_id=_who(),
                                                           source=source))


def files_dir() -> Path:
    from bot.settings import get_settings

    return Path(get_settings().data_dir) / "files"


def save_attachments(reply: Any, folder: Path | None = None) -> dict[str, Path]:
    """Write the reply's files (chart PNG, raw profile) and say where."""
    saved: dict[str, Path] = {}
    if not reply.attachments:
        return saved
    folder = folder or files_dir()
    folder.mkdir(parents=True, exist_ok=True)
    for attachment in reply.attachments:
        name = _SAFE_NAME.sub("_", attachment.filename).strip("._") or "attachment"
        path = folder / name
        path.write_bytes(attachment.content)
        saved[attachment.filename] = path
    return saved


def print_result(reply: Any, output_format: str = "text", console: Console | None = None) -> int:
    """Print a Reply (text or JSON); return the process exit status."""
    from bot.render.terminal import output_console, print_reply

    if output_format == "json":
        if reply.error:
            message = " ".join(reply.sections) or reply.title
            print(f"heapbot: {message}", file=sys.stderr)
            return EXIT_ERROR
        saved = save_attachments(reply)
        data = dict(reply.data or {})
        if saved:
            data["files"] = {name: str(path) for name, path in saved.items()}
        print(json.dumps(data, indent=2, default=str))
        return EXIT_OK
    console = console or output_console()
    saved = save_attachments(reply)
    print_reply(reply, console, saved)
    if reply.error and any("internal error" in s for s in reply.sections):
        console.print(Text(f"log: {log_path()}", style="dim"))
    return EXIT_ERROR if reply.error else EXIT_OK


def _reads_no_store(text: str) -> bool:
    """`heapbot help`: answered from the command table alone (no Redis, registry, network).

    So a first `heapbot help` takes no embedded redis-server start (~1 s) and leaves no
    server running in a data dir the user never chose.
    """
    import handlers
    from bot.errors import HeapbotError

    try:
        command = handlers.commands.canonical(handlers.parse(text).command)
    except HeapbotError:
        return False
    return command in handlers.commands.NO_RUNTIME_COMMANDS


async def _run_once(text: str, output_format: str, source: str,
                    flame_out: str | None = None) -> int:
    if _reads_no_store(text):  # its handler takes no Runtime (NO_RUNTIME_COMMANDS)
        return print_result(await run_text(None, text, source=source), output_format)
    runtime = await open_runtime()
    try:
        reply = await run_text(runtime, text, source=source)
    finally:
        await close_runtime(runtime)
    if flame_out:
        save_flame(reply, flame_out)
    return print_result(reply, output_format)


def save_flame(reply: Any, out: str) -> None:
    """`--flame OUT.png`: the reply's flame graph goes to OUT.png and OUT.svg, as in file mode."""
    from bot.cli.files import write_flame

    png = next((a for a in reply.attachments if a.filename.endswith("-flame.png")), None)
    svg = next((a for a in reply.attachments if a.filename.endswith("-flame.svg")), None)
    if png is None or svg is None:
        return  # an error reply, or nothing to draw: the reply says why
    paths = write_flame(out, png.content, svg.content.decode())
    reply.attachments = [a for a in reply.attachments if a is not png and a is not svg]
    print(f"heapbot: flame graph written to {paths[0]} and {paths[1]}", file=sys.stderr)


def run_service_command(args: argparse.Namespace) -> int:
    """`heapbot top payments -n 5 --format json` and the other service-mode commands."""
    text = shlex.join(command_argv(args))
    flame_out = getattr(args, "flame", None) or None  # bare `--flame`: saved like any file
    if flame_out:
        from bot.cli.files import flame_paths

        flame_paths(flame_out)  # a bad path fails before the capture
    return asyncio.run(_run_once(text, getattr(args, "format", "text"), "cli", flame_out))


def ask(args: argparse.Namespace) -> int:
    """`heapbot ask "/heap top payments"`: one command, printed like the console."""
    return asyncio.run(_run_once(args.text, getattr(args, "format", "text"), "cli"))


# ------------------------------------------------------------------ console

def _setup_readline() -> Path | None:
    """Line editing and a history file in the data dir, when readline is available."""
    try:
        import readline
    except ImportError:
        return None
    import handlers

    history = files_dir().parent / "console_history"
    try:
        history.parent.mkdir(parents=True, exist_ok=True)
        if history.exists():
            readline.read_history_file(history)
    except OSError:
        return None
    words = sorted({*handlers.COMMANDS, "exit", "quit"})

    def complete(text: str, state: int) -> str | None:
        buffer = readline.get_line_buffer().lstrip()
        if buffer.startswith("/heap "):
            buffer = buffer[6:]
        if " " in buffer:
            return None
        matches = [w + " " for w in words if w.startswith(text)]
        return matches[state] if state < len(matches) else None

    readline.set_completer(complete)
    readline.parse_and_bind("tab: complete")
    readline.set_history_length(1000)
    return history


def _save_history(path: Path | None) -> None:
    if path is None:
        return
    try:
        import readline

        readline.write_history_file(path)
    except OSError:
        pass


def _will_answer(runner: asyncio.Runner, runtime: Runtime, line: str) -> bool:
    """Whether ``line`` passes every check run makes before working (:func:`handlers.preflight`).

    A refused command (unknown service, bad option, a `since` base or snapshot that is
    not stored, Redis down) prints no ack: the reply alone says what is wrong, once.
    """
    import handlers
    from bot.errors import HeapbotError

    inv = handlers.Invocation(text=line, user_id=_who(), source="console")
    try:
        runner.run(handlers.preflight(runtime, inv))
    except HeapbotError:
        return False
    except Exception:  # a bug or a bad record: run() answers it with an error id, and
        return True    # the console goes on (the same error here would end the session)
    return True


def console(args: argparse.Namespace) -> int:
    """`heapbot console`: a prompt for /heap commands (exit, quit or Ctrl-D to leave)."""
    import handlers
    from bot.render.terminal import output_console

    out = output_console()
    history = _setup_readline() if sys.stdin.isatty() else None
    out.print(Text("heapbot console: type /heap commands (e.g. `/heap top demo`), "
                   "`help`, or `exit`.", style="dim"))
    with asyncio.Runner() as runner:
        runtime = runner.run(open_runtime())
        if runtime.registry.found:  # which services these are (e.g. the one `make demo` left)
            out.print(Text(f"registry: {runtime.registry.path} ({len(runtime.registry)} "
                           f"service{'s' if len(runtime.registry) != 1 else ''})", style="dim"))
        try:
            while True:
                try:
                    line = input(PROMPT if sys.stdin.isatty() else "")
                except EOFError:
                    break
                except KeyboardInterrupt:
                    out.print()
                    continue
                line = line.strip()
                if not line:
                    continue
                if line.lower() in ("exit", "quit", "/exit", "/quit", ":q"):
                    break
                try:
                    if _will_answer(runner, runtime, line):  # else the reply says what is wrong
                        out.print(Text(handlers.ack_text(runtime, line), style="dim italic"))
                    reply = runner.run(run_text(runtime, line, source="console"))
                except KeyboardInterrupt:
                    out.print(Text("interrupted", style="red"))
                    continue
                print_result(reply, "text", out)
                out.print()
        finally:
            runner.run(close_runtime(runtime))
            _save_history(history)
    return EXIT_OK
