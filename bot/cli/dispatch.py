"""Route each CLI subcommand to file mode (local files) or service mode (handlers)."""

from __future__ import annotations

import argparse
import importlib

from bot.cli import startup_done
from bot.errors import UsageError


def _call(spec: str, args: argparse.Namespace) -> int:
    module_name, _, func_name = spec.partition(":")
    module = importlib.import_module(module_name)
    if module_name != "bot.cli.chat":  # service mode ends start-up when its Runtime is open
        startup_done()
    return getattr(module, func_name)(args)


def _service_or_file(args: argparse.Namespace, file_spec: str, command: str,
                     file_flag: str = "profile") -> int:
    if getattr(args, file_flag, None):
        return _call(file_spec, args)
    if not getattr(args, "service", None):
        raise UsageError(f"`heapbot {command}` needs a SERVICE or --{file_flag} FILE.",
                         hint=f"See `heapbot {command} --help`.")
    return _call("bot.cli.chat:run_service_command", args)


def top(args: argparse.Namespace) -> int:
    return _service_or_file(args, "bot.cli.files:top_file", "top")


def diff(args: argparse.Namespace) -> int:
    if args.base or args.profile:
        if not (args.base and args.profile):
            raise UsageError("`heapbot diff` on files needs both --base OLD and --profile NEW.")
        return _call("bot.cli.files:diff_file", args)
    return _service_or_file(args, "bot.cli.files:diff_file", "diff")


def peek(args: argparse.Namespace) -> int:
    if args.profile and args.regex is None:  # `heapbot peek --profile F RE`
        args.regex, args.service = args.service, None
    return _service_or_file(args, "bot.cli.files:peek_file", "peek")


def list_(args: argparse.Namespace) -> int:
    if args.profile and args.regex is None:
        args.regex, args.service = args.service, None
    return _service_or_file(args, "bot.cli.files:list_file", "list")


def goroutines(args: argparse.Namespace) -> int:
    return _service_or_file(args, "bot.cli.inspect:goroutines_file", "goroutines")


def memstats(args: argparse.Namespace) -> int:
    return _service_or_file(args, "bot.cli.inspect:memstats_file", "memstats", file_flag="file")


def _service(args: argparse.Namespace) -> int:
    return _call("bot.cli.chat:run_service_command", args)


leaks = capture = history = stats = deploy = services = _service


def ask(args: argparse.Namespace) -> int:
    return _call("bot.cli.chat:ask", args)


def console(args: argparse.Namespace) -> int:
    return _call("bot.cli.chat:console", args)


def serve(args: argparse.Namespace) -> int:
    return _call("bot.serve:serve_cli", args)
