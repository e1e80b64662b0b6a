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


def flame_paths(out: str) -> tuple[Path, Path]:
    """The PNG and SVG that ``--flame OUT`` writes: OUT.png and OUT.svg side by side."""
    path = Path(out)
    suffix = path.suffix.lower()
    if suffix in (".png", ".svg"):
        path = path.with_suffix("")
    elif suffix:
        raise UsageError(f"--flame writes a PNG and an SVG, not `{path.name}`.",
                         hint="Give a path ending in .png or .svg, e.g. `--flame heap.png`.")
    return path.parent / (path.name + ".png"), path.parent / (path.name + ".svg")


def flame_out(args: argparse.Namespace, suffix: str) -> str | None:
    """Where file mode's ``--flame [OUT.png]`` writes, or None without ``--flame``.

    Without OUT it is the profile's own name in the current directory, as `go tool
    pprof -png` writes profile001.png there: ``heap.pb.gz`` → heap-flame.png/.svg.
    """
    given = getattr(args, "flame", None)
    if given is None:
        return None
    if given:
        return str(given)
    name = Path(args.profile).name
    for ending in (".pb.gz", ".gz", ".pb", ".pprof"):
        if name.endswith(ending) and len(name) > len(ending):
            name = name[: -len(ending)]
            break
    return f"{name}-{suffix}.png"


def write_flame(out: str, png: bytes, svg: str) -> tuple[Path, Path]:
    """Write the flame graph pair, or say why it could not be written."""
    png_path, svg_path = flame_paths(out)
    try:
        png_path.write_bytes(png)
        svg_path.write_text(svg, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"Cannot write the flame graph to {png_path}: {exc.strerror}.",
                         hint="Pick a folder that exists and that you can write to.") from None
    return png_path, svg_path


def _flame_note(paths: tuple[Path, Path]) -> None:
    # stderr: stdout stays the table (or valid JSON) for pipes.
    print(f"heapbot: flame graph written to {paths[0]} and {paths[1]}", file=sys.stderr)


def top_file(args: argparse.Namespace) -> int:
    """heapbot top --profile FILE [--flame OUT.png]."""
    from bot.analysis.top import top

    profile = _read(args.profile)
    out = flame_out(args, "flame")
    if out:
        flame_paths(out)  # a bad path fails before any work
    report = top(profile, _options(args))
    _emit_json(report.to_json()) if args.format == "json" else _emit(report.to_text())
    if out:
        from bot.analysis.flame import flame
        from bot.render.flame import flame_png, flame_svg

        layout = flame(profile, _options(args, rows=False))
        subject = Path(args.profile).name
        _flame_note(write_flame(out, flame_png(layout, subject), flame_svg(layout, subject)))
    return 0


def diff_file(args: argparse.Namespace) -> int:
    """heapbot diff --base OLD --profile NEW [--flame OUT.png] (pprof -diff_base)."""
    from bot.analysis.diff import diff

    base, new = _read(args.base), _read(args.profile)
    out = flame_out(args, "diff-flame")
    if out:
        flame_paths(out)
    report = diff(base, new, _options(args))
    _emit_json(report.to_json()) if args.format == "json" else _emit(report.to_text())
    if out:
        from bot.analysis.flame import flame_diff
        from bot.render.flame import flame_png, flame_svg

        layout = flame_diff(base, new, _options(args, rows=False))
        subject = f"{Path(args.base).name} → {Path(args.profile).name}"
        _flame_note(write_flame(out, flame_png(layout, subject), flame_svg(layout, subject)))
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

    profile = _read(args.profile)
    report = list_lines(profile, _regex(args, "list"), _options(args, rows=False))
    if args.format == "json":
        _emit_json(report.to_json())
        return 0
    import asyncio

    from bot.source import (
        SourceConfig,
        find_sources,
        find_sources_here,
        listing_text,
        start_lines,
    )

    files = [f.file for f in report.functions]
    config = SourceConfig(dir=args.source_dir, trim_prefix=tuple(args.trim_prefix or ()))
    sources = asyncio.run(find_sources(config, files) if config.configured
                          else find_sources_here(files))  # as pprof: the recorded paths
    _emit(listing_text(report, sources,
                       start_lines(profile.function_names, profile.function_start_lines)))
    if (note := sources.note()):
        print(note, file=sys.stderr)  # stdout stays pprof's text
    return 0
