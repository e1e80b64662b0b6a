"""Helpers the /heap handlers share: argument parsing, formatting, standard actions.

Argument parsing is a small hand-written parser instead of argparse, because
argparse prints to stderr and exits on bad input; here every mistake becomes a
:class:`bot.errors.UsageError` whose hint is the command's usage line.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from bot.errors import UsageError
from bot.reply import Action, Column, Reply, Table
from bot.units import format_clock, format_duration
from handlers.grammar import shorten

if TYPE_CHECKING:
    from bot.analysis.top import TopReport
    from bot.runtime import Captured
    from bot.store import StoredSnapshot

HEAP_SAMPLE_TYPES = ("inuse_space", "inuse_objects", "alloc_space", "alloc_objects")
DEFAULT_ROWS = 10
EVERY_ROW = 1_000_000_000  # `-n 0`: no cut


@dataclass(slots=True)
class Args:
    """Positional arguments and options of one command.

    ``options`` holds the valued options by key (their text, normalised by the
    command's ``check``), ``flags`` the keys of the flags given, ``count`` the
    row count a command's ``check`` read (N, ``-n N``, ``--limit N``).
    """

    positionals: list[str] = field(default_factory=list)
    options: dict[str, str] = field(default_factory=dict)
    flags: set[str] = field(default_factory=set)
    count: int = DEFAULT_ROWS

    def get(self, name: str) -> str | None:
        """A valued option's text, or None when it was not given."""
        return self.options.get(name)

    def flag(self, name: str) -> bool:
        """Whether a flag was given."""
        return name in self.flags

    def set(self, name: str, value: str | None) -> None:
        """Replace an option's text with its normalised form (None: as if not given)."""
        if value is None:
            self.options.pop(name, None)
        else:
            self.options[name] = value


def usage_error(message: str, usage: str) -> UsageError:
    """A UsageError whose hint is the usage line."""
    return UsageError(message, hint=f"Usage: `{usage}`")


def parse_args(argv: Sequence[str], usage: str, *, flags: Mapping[str, str] = {},
               valued: Mapping[str, str] = {}, min_positionals: int = 0,
               max_positionals: int = 1) -> Args:
    """Split argv into positionals and options.

    ``flags`` maps an option spelling (``--cum``) to its key; ``valued`` does the
    same for options that take a value (``--type T`` or ``--type=T``).
    """
    args = Args()
    tokens = list(argv)
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token.startswith("-") and len(token) > 1 and not _is_number(token):
            name, eq, inline = token.partition("=")
            if name in flags and not eq:
                args.flags.add(flags[name])
            elif name in valued:
                if eq:
                    value = inline
                elif i + 1 < len(tokens):
                    i += 1
                    value = tokens[i]
                else:
                    raise usage_error(f"`{name}` needs a value.", usage)
                args.options[valued[name]] = value
            else:
                raise usage_error(f"Unknown option `{shorten(name)}`."
                                  + did_you_mean_option(name, [*flags, *valued]), usage)
        else:
            args.positionals.append(token)
        i += 1
    if len(args.positionals) < min_positionals:
        raise usage_error("Some arguments are missing.", usage)
    if len(args.positionals) > max_positionals:
        extra = " ".join(shorten(p) for p in args.positionals[max_positionals:])
        raise usage_error(f"Unexpected argument `{extra}`.", usage)
    return args


# difflib's ratio, of the names without their dashes, a typo must reach to be suggested:
# `--fcous` → `--focus` (0.8), `--cmu` → `--cum` (0.67); `--bogus` vs `--focus` (0.6) is no typo.
OPTION_CUTOFF = 0.65


def closest_option(word: str, known: Iterable[str]) -> str | None:
    """The long option ``word`` most likely meant (`--fcous` → `--focus`), or None.

    The one rule for the slash grammar and the CLI's own options (bot.cli), so the same
    typo gets the same fix on every surface: the name is compared without its dashes
    and any ``=value``, against the long options only.
    """
    import difflib

    if not word.startswith("-"):
        return None
    names = {k[2:]: k for k in known if k.startswith("--")}
    name = word.split("=", 1)[0].lstrip("-")
    close = difflib.get_close_matches(name, list(names), n=1, cutoff=OPTION_CUTOFF)
    return names[close[0]] if close else None


def did_you_mean_option(word: str, known: Iterable[str]) -> str:
    """" Did you mean `--focus`?" for `--fcous`, or "" when nothing is close enough."""
    close = closest_option(word, known)
    return f" Did you mean `{close}`?" if close else ""


def parse_service(argv: Sequence[str], usage: str) -> Args:
    """``SERVICE [--force]``: the whole grammar of a command that only captures a service."""
    return parse_args(argv, usage, flags={"--force": "force"}, min_positionals=1,
                      max_positionals=1)


def _is_number(token: str) -> bool:
    return bool(re.fullmatch(r"-?\d+", token))


def parse_count(text: str | None, usage: str, *, default: int = DEFAULT_ROWS,
                what: str = "N") -> int:
    """A row count; 0 means every row (renderers still cut what a message can hold)."""
    if text is None:
        return default
    if not re.fullmatch(r"\d{1,6}", text):
        raise usage_error(f"{what} must be a whole number of rows, not `{shorten(text)}`.", usage)
    value = int(text)
    return EVERY_ROW if value == 0 else value


def check_regex(text: str | None, usage: str, what: str = "regular expression") -> str | None:
    """Validate a user regex as RE2, the dialect the engine (and go tool pprof) matches with."""
    if text is None:
        return None
    from bot.analysis.graph import compile_regex  # numpy and re2: only when a regex is given

    try:
        compile_regex(text, "", what)
    except UsageError as exc:
        raise usage_error(exc.message, usage) from None
    return text


def check_sample_type(text: str | None, usage: str) -> str | None:
    """Accept the four heap sample types (the engine re-checks against the profile)."""
    if text is None:
        return None
    name = text.strip().lower()
    if name in ("goroutine", "goroutines"):
        raise UsageError("Goroutines are not a heap sample type.",
                         hint="`/heap goroutines SERVICE` shows the goroutine groups.")
    if name not in HEAP_SAMPLE_TYPES:
        raise usage_error(f"`{shorten(text)}` is not a heap sample type; use one of "
                          + ", ".join(HEAP_SAMPLE_TYPES) + ".", usage)
    return name


def short_path(path: str | None) -> str:
    """"…/go/src/net/fd_posix.go:68" → "net/fd_posix.go:68": package directory and file."""
    if not path:
        return ""
    return "/".join(path.replace("\\", "/").split("/")[-2:])


def short_build_id(build_id: str | None) -> str:
    """The first 12 characters of a GNU/Go build id: enough to tell builds apart."""
    return (build_id or "")[:12]


TOP_COLUMNS = ("flat", "flat%", "sum%", "cum", "cum%")


def top_table(report: TopReport, *, caption: str = "", with_status: bool = False) -> Table:
    """pprof's top table (function, flat, flat%, sum%, cum, cum%) from a TopReport.

    Cells are formatted exactly as ``go tool pprof -top`` prints them: one unit
    for the whole table, percentages of the report total, sum% the running flat.
    """
    from bot.units import percentage

    total = report.percent_total
    columns = [Column("function", "left"), *(Column(name) for name in TOP_COLUMNS)]
    if with_status:
        columns.append(Column("", "left"))
    rows = []
    running = 0
    for row in report.rows:
        running += row.flat
        cells = [
            row.function,
            report.format(row.flat),
            percentage(row.flat, total).strip(),
            percentage(running, total).strip(),
            report.format(row.cum),
            percentage(row.cum, total).strip(),
        ]
        if with_status:
            cells.append(getattr(row, "status", "") or "")
        rows.append(cells)
    return Table(columns=columns, rows=rows, caption=caption)


def standard_actions(service: str, snapshot_id: str | None = None,
                     *, skip: Iterable[str] = (), stored: bool = True) -> list[Action]:
    """The follow-ups offered under every capture: diff, goroutines, leaks, again, download.

    Only the ones that can work: a capture Redis did not keep (``stored=False``) has
    nothing to download, and diff and leaks need stored captures.
    """
    skipped = set(skip)
    if not stored:
        skipped |= {"Diff vs previous", "Leaks", "Download profile"}
    actions = [
        Action("Diff vs previous", f"diff {service} since previous", "primary"),
        Action("Goroutines", f"goroutines {service}"),
        Action("Leaks", f"leaks {service}"),
        Action("Capture again", f"capture {service}"),
    ]
    if snapshot_id:
        actions.append(Action("Download profile", f"top {service} --snapshot {snapshot_id} "
                                                  "--download"))
    return [a for a in actions if a.label not in skipped]


def plural(count: int, word: str) -> str:
    """"1 instance", "3 instances"."""
    return f"{count:,} {word}{'' if count == 1 else 's'}"


def instances_text(snapshot: StoredSnapshot) -> str:
    """"3/3 instances" (answered / asked)."""
    if not snapshot.instances:
        return ""
    return f"{snapshot.answered}/{len(snapshot.instances)} instances"


def failed_instances_text(snapshot: StoredSnapshot) -> str:
    """One line naming the instances that did not answer and why."""
    failed = [i for i in snapshot.instances if not i.ok]
    if not failed:
        return ""
    parts = [f"{i.target}: {i.error or 'failed'}" for i in failed[:5]]
    more = f" and {len(failed) - 5} more" if len(failed) > 5 else ""
    return f"{plural(len(failed), 'instance')} did not answer: " + "; ".join(parts) + more + "."


def not_stored_text(captured: Captured) -> str:
    """The line under a capture Redis did not keep (empty when it was stored)."""
    if captured.stored:
        return ""
    return (f"Not stored: {captured.store_error} The numbers here are right, but history, "
            "diff and leaks will not see this capture.")


def no_profile_reply(service: str, snapshot: StoredSnapshot,
                     what: str = "a usable heap profile") -> Reply:
    """The failure when a capture holds nothing of the kind a command needs."""
    return Reply.failure(
        f"No instance of `{service}` returned {what}. "
        + (failed_instances_text(snapshot) or "Is net/http/pprof imported?"),
        service=service)


def context_lines(capture: Captured, *extra: str, shows_heap: bool = True) -> list[str]:
    """service · 3/3 instances · captured 14:02:11 UTC · build 4f3a2b1c9d0e · extra…

    ``shows_heap=False`` (goroutines, MemStats): the note that the heap profile is the
    previous GC's again is left out, since the reply shows nothing from that profile.
    """
    snapshot = capture.snapshot
    parts = [capture.service]
    if (answered := instances_text(snapshot)):
        parts.append(answered)
    parts.append(f"captured {format_clock(capture.taken_at)}")
    if (build := short_build_id(snapshot.build_id)):
        parts.append(f"build {build}")
    parts.extend(e for e in extra if e)
    lines = [" · ".join(parts)]
    if capture.reused:
        lines.append(f"reused the capture from {format_duration(capture.age_seconds)} ago "
                     f"(cooldown); `/heap capture {capture.service} --force` takes a new one")
    if not capture.stored:
        lines.append("not stored: " + (capture.store_error or "the snapshot store is unavailable")
                     + " (history and diffs will not include this capture)")
    elif capture.snapshot_id:
        lines.append(f"snapshot {capture.snapshot_id}")
    if capture.heap_note and shows_heap:
        lines.append(capture.heap_note)
    for marker in capture.deploys_detected:
        lines.append(f"new build noticed: deploy {marker.version or '?'} "
                     "recorded")
    return lines


def capture_reply(capture: Captured, *, title: str, summary: str, table: Table | None,
                  actions: list[Action], context: Sequence[str] = (),
                  sections: Sequence[str] = (),
                  data: Mapping[str, object] | None = None, shows_heap: bool = True) -> Reply:
    """The Reply of a command answered from one capture, with the tail they all share.

    Context lines about the capture (:func:`context_lines`), the instances that did
    not answer before any other section, the service and snapshot on the Reply
    (threads and buttons follow them), and both in its data.
    """
    failed = failed_instances_text(capture.snapshot)
    return Reply(
        title=title, context=context_lines(capture, *context, shows_heap=shows_heap),
        summary=summary, table=table,
        sections=[*([failed] if failed else []), *(s for s in sections if s)],
        actions=actions, service=capture.service, snapshot_id=capture.snapshot_id or None,
        data={**(data or {}), "service": capture.service, "snapshot_id": capture.snapshot_id},
    )
