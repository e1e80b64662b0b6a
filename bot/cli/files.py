"""File mode of the CLI: `heapbot top|diff|peek|list --profile FILE`.

Runs the engine on local profile files and prints pprof-like text or JSON. It
imports only the engine (numpy, protobuf): no Redis, Slack or plotting, so it
starts fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from bot.errors import ProfileError, UsageError
from bot.pprof import Profile, parse_profile

if TYPE_CHECKING:
    from bot.analysis.top import TopOptions

TEXT_DEFAULT_ROWS = 10


def _read(path: str) -> Profile:
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise UsageError(f"No such file: {path}.") from None
    except IsADirectoryError:
        raise UsageError(f"{path} is a directory, not a profile file.") from None
    except OSError as exc:
        raise UsageError(f"Cannot read {path}: {exc.strerror}.") from None
    try:
        return parse_profile(data)
    except ProfileError as exc:
        raise ProfileError(f"{path}: {exc.message}", hint=exc.hint) from None


def _node_count(args: argparse.Namespace) -> int | None:
    n = getattr(args, "nodes", None)
    if n is None:
        return TEXT_DEFAULT_ROWS if args.format == "text" else None
    if n < 0:
        raise UsageError("-n must be 0 (every row) or more.")
    return n or None


def _options(args: argparse.Namespace, rows: bool = True) -> TopOptions:
    from bot.analysis.top import TopOptions

    return TopOptions(
        sample_type=getattr(args, "sample_type", None),
        sort="cum" if getattr(args, "cum", False) else "flat",
        node_count=_node_count(args) if rows else None,
        focus=getattr(args, "focus", None),
        ignore=getattr(args, "ignore", None),
        hide=getattr(args, "hide", None),
    )


def _emit(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _emit_json(data: object) -> None:
    _emit(json.dumps(data, indent=2) + "\n")


def top_file(args: argparse.Namespace) -> int:
    """heapbot top --profile FILE."""
    from bot.analysis.top import top

    report = top(_read(args.profile), _options(args))
    _emit_json(report.to_json()) if args.format == "json" else _emit(report.to_text())
    return 0


def diff_file(args: argparse.Namespace) -> int:
    """heapbot diff --base OLD --profile NEW (pprof -diff_base)."""
    from bot.analysis.diff import diff

    report = diff(_read(args.base), _read(args.profile), _options(args))
    _emit_json(report.to_json()) if args.format == "json" else _emit(report.to_text())
    return 0


def _regex(args: argparse.Namespace, command: str) -> str:
    if not args.regex:
        raise UsageError(f"`heapbot {command}` needs a function regex.",
                         hint=f"e.g. `heapbot {command} --profile heap.pb.gz 'main\\.'`.")
    return args.regex


def peek_file(args: argparse.Namespace) -> int:
    """heapbot peek --profile FILE RE: callers and callees of matching functions."""
    from bot.analysis.peek import peek

    report = peek(_read(args.profile), _regex(args, "peek"), _options(args, rows=False))
    _emit_json(report.to_json()) if args.format == "json" else _emit(report.to_text())
    return 0


def list_file(args: argparse.Namespace) -> int:
    """heapbot list --profile FILE RE: values per source line of matching functions."""
    from bot.analysis.listing import list_lines

    report = list_lines(_read(args.profile), _regex(args, "list"), _options(args, rows=False))
    _emit_json(report.to_json()) if args.format == "json" else _emit(report.to_text())
    return 0
