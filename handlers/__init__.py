"""The /heap command grammar and dispatcher.

Every surface (Slack slash command, @mention in a thread, button, console,
CLI) turns what the user typed into an :class:`Invocation` and calls
:func:`run`, which tokenises the text, routes the command word to its module
(imported lazily, so one broken module cannot take the others down), checks the
service's allow lists before any capture, and always returns a
:class:`bot.reply.Reply`: user mistakes become a short message, bugs become
"internal error, id X" with the traceback only in the log.
"""

from __future__ import annotations

import importlib
import logging
import re
import secrets
import shlex
import time
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

# NB: importing handlers.list binds the name `list` in this module's namespace to that
# submodule, so the builtin `list` must not be called here: use [*iterable] instead.
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from bot.errors import (
    AccessDeniedError,
    HeapbotError,
    StoreUnavailableError,
    UnknownServiceError,
    UsageError,
)
from bot.reply import Reply

log = logging.getLogger("heapbot.handlers")

MAX_TEXT_CHARS = 1000
MAX_ARG_CHARS = 200
MAX_ARGS = 24

# command word → module under handlers/ (imported when first used)
COMMANDS: dict[str, str] = {
    "top": "top",
    "diff": "diff",
    "goroutines": "goroutines",
    "stats": "stats",
    "history": "history",
    "peek": "peek",
    "list": "list",
    "deploy": "deploy",
    "services": "services",
    "capture": "capture",
    "leaks": "leaks",
    "watch": "watch",
    "unwatch": "watch",  # handlers/watch.py serves all three watch commands
    "watches": "watch",
    "help": "help",
}
ALIASES: dict[str, str] = {
    "goroutine": "goroutines",
    "gr": "goroutines",
    "memstats": "stats",
    "mem": "stats",
    "leak": "leaks",
    "service": "services",
    "ls": "services",
    "hist": "history",
    "?": "help",
}
# commands whose first argument is a SERVICE (access control and thread context apply)
SERVICE_COMMANDS = frozenset(
    {"top", "diff", "goroutines", "stats", "history", "peek", "list", "deploy", "capture",
     "leaks", "watch", "unwatch"}
)
# commands that fetch from the service's pprof endpoints before answering
CAPTURING_COMMANDS = frozenset(
    {"top", "diff", "goroutines", "stats", "capture", "leaks", "peek", "list"}
)

# One line per command, shown by `/heap help` and as the hint of usage errors.
USAGES: dict[str, str] = {
    "top": "/heap top SERVICE [N] [--cum] [--type inuse_space|inuse_objects|alloc_space|"
           "alloc_objects] [--focus RE] [--download]",
    "diff": "/heap diff SERVICE [since previous|deploy|1h|SNAPSHOT_ID]",
    "goroutines": "/heap goroutines SERVICE [N]",
    "stats": "/heap stats SERVICE",
    "history": "/heap history SERVICE",
    "peek": "/heap peek SERVICE FUNC_RE",
    "list": "/heap list SERVICE FUNC_RE",
    "deploy": "/heap deploy SERVICE VERSION",
    "services": "/heap services",
    "capture": "/heap capture SERVICE",
    "leaks": "/heap leaks SERVICE [--sample 3x30s]",
    "watch": "/heap watch SERVICE every 15m [in #channel]",
    "unwatch": "/heap unwatch SERVICE",
    "watches": "/heap watches",
    "help": "/heap help [COMMAND]",
}

_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069]")
_SMART_QUOTES = str.maketrans({"“": '"', "”": '"', "„": '"', "‘": "'", "’": "'"})
_LEADING_MENTION = re.compile(r"^\s*<@[A-Z0-9]+(?:\|[^>]*)?>\s*")
_PREFIX = re.compile(r"^\s*/?heap(?:bot)?\b\s*", re.IGNORECASE)

# Invocation sources that are not a chat user's request: no allow-list check.
TRUSTED_SOURCES = frozenset({"console", "cli", "alert", "watch"})

# Slack's special syntax that pings or links: <!channel>, <!here|here>, <@U123>,
# <#C123|general>, <!subteam^S123|@team>, plus bare @channel/@here/@everyone.
_SLACK_SPECIAL = re.compile(r"<([!@#])([^<>|]*)(?:\|([^<>]*))?>")
_BARE_BROADCAST = re.compile(r"@(channel|here|everyone)\b", re.IGNORECASE)
_ZWSP = "\u200b"


@dataclass(slots=True)
class Invocation:
    """One /heap request as it arrived, independent of the surface it came from.

    ``thread_service`` is the service a Slack thread is about, so that
    ``@heapbot diff`` inside that thread needs no SERVICE argument.
    ``source`` is one of console, cli, slack, button, mention, watch, alert.
    """

    text: str
    user_id: str = ""
    channel_id: str = ""
    user_groups: Sequence[str] = ()
    thread_service: str | None = None
    source: str = "console"
    # allow-listed groups whose membership Slack could not tell (a failed lookup):
    # a service restricted to them is refused with a message saying so.
    unknown_groups: Sequence[str] = ()


@dataclass(slots=True)
class ParsedCommand:
    """A command word and its arguments after tokenising and cleaning."""

    command: str
    argv: list[str] = field(default_factory=list)


def clean_text(text: str) -> str:
    """Drop control and bidi characters, turn Slack's smart quotes into plain ones."""
    text = text.replace("\t", " ").replace("\r", " ").replace("\n", " ")
    text = unicodedata.normalize("NFC", text).translate(_SMART_QUOTES)
    return _CONTROL_CHARS.sub("", text).strip()


def neutralize_mentions(text: str) -> str:
    """Make user-supplied text unable to ping or link when shown in Slack.

    ``<!channel>`` becomes ``@\u200bchannel``, ``<@U123>`` becomes ``@\u200bU123``,
    ``<#C123|ops>`` becomes ``#\u200bops``; bare ``@here`` gets a zero-width space.
    """

    def _replace(match: re.Match[str]) -> str:
        sigil, ref, label = match.group(1), match.group(2), match.group(3)
        if sigil == "#":
            return "#" + _ZWSP + (label or ref)
        shown = (label or ref).lstrip("@")
        if sigil == "!" and shown.startswith("subteam^"):
            shown = shown.split("^", 1)[1]
        return "@" + _ZWSP + shown

    text = _SLACK_SPECIAL.sub(_replace, text)
    return _BARE_BROADCAST.sub(lambda m: "@" + _ZWSP + m.group(1), text)


def parse(text: str) -> ParsedCommand:
    """Tokenise a /heap command line; raise UsageError on what cannot be parsed."""
    if len(text) > MAX_TEXT_CHARS * 4:
        raise UsageError(f"That command is too long ({len(text)} characters).",
                         hint=f"Keep it under {MAX_TEXT_CHARS} characters.")
    text = clean_text(text)
    text = _LEADING_MENTION.sub("", text)
    text = _PREFIX.sub("", text, count=1)
    if len(text) > MAX_TEXT_CHARS:
        raise UsageError(f"That command is too long ({len(text)} characters).",
                         hint=f"Keep it under {MAX_TEXT_CHARS} characters.")
    try:
        tokens = _split(text)
    except ValueError as exc:  # "No closing quotation", "No escaped character"
        raise UsageError(f"Could not read that command: {str(exc).lower()}.",
                         hint="Close every quote, or leave quotes out.") from None
    if len(tokens) > MAX_ARGS:
        raise UsageError(f"That command has {len(tokens)} words; heapbot reads at most {MAX_ARGS}.")
    for token in tokens:
        if len(token) > MAX_ARG_CHARS:
            raise UsageError(f"An argument is {len(token)} characters long; the limit is "
                             f"{MAX_ARG_CHARS}.")
    if not tokens:
        return ParsedCommand("help", [])
    word = tokens[0].lower()
    word = ALIASES.get(word, word)
    if word not in COMMANDS:
        raise UsageError(f"heapbot has no command `{_short(tokens[0])}`.",
                         hint=_did_you_mean_command(word))
    return ParsedCommand(word, tokens[1:])


def _split(text: str) -> list[str]:
    """shlex with quotes but no backslash escapes: regexes like ``main\\.Put`` stay intact."""
    lexer = shlex.shlex(text, posix=True)
    lexer.whitespace_split = True
    lexer.escape = ""
    lexer.commenters = ""
    return [*lexer]


def _short(text: str, limit: int = 40) -> str:
    text = text.replace("`", "'")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _did_you_mean_command(word: str) -> str:
    import difflib

    close = difflib.get_close_matches(word, [*COMMANDS, *ALIASES], n=2, cutoff=0.6)
    close = [*dict.fromkeys(ALIASES.get(c, c) for c in close)]
    if close:
        return "Did you mean " + " or ".join(f"`/heap {c}`" for c in close) + "? " \
               "`/heap help` lists every command."
    return "`/heap help` lists every command."


def _load(command: str) -> ModuleType:
    """Import the module that serves ``command``; a missing or broken one → HeapbotError."""
    module_name = "handlers." + COMMANDS[command]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (exc.name == module_name or module_name.startswith(exc.name + ".")):
            raise HeapbotError(f"`/heap {command}` is not available in this heapbot build.",
                               hint="`/heap help` lists the commands that are.") from None
        log.exception("handler module %s failed to import", module_name)
        raise HeapbotError(f"`/heap {command}` is unavailable right now (it failed to load).",
                           hint="The other commands still work; the error is in the log.") from None
    except Exception:
        log.exception("handler module %s failed to import", module_name)
        raise HeapbotError(f"`/heap {command}` is unavailable right now (it failed to load).",
                           hint="The other commands still work; the error is in the log.") from None
    if not hasattr(module, "handle") and not hasattr(module, f"handle_{command}"):
        raise HeapbotError(f"`/heap {command}` is not available in this heapbot build.")
    return module


def _handler_of(module: ModuleType, command: str) -> Any:
    """``handle_<command>`` when a module serves several commands, else ``handle``."""
    return getattr(module, f"handle_{command}", None) or module.handle


def usage_of(command: str, *, load: bool = False) -> str:
    """The usage line of a command: its module's own when loaded (or ``load``), else ours."""
    import sys

    module_name = "handlers." + COMMANDS.get(command, "help")
    module = sys.modules.get(module_name)
    if module is None and load and command in COMMANDS:
        try:
            module = importlib.import_module(module_name)
        except Exception:  # a broken module is reported when it is run, not in help
            module = None
    if module is not None:
        own = getattr(module, "USAGES", {}).get(command) or (
            getattr(module, "USAGE", None) if COMMANDS[command] == command else None)
        if isinstance(own, str) and own.startswith("/heap"):
            return own
    return USAGES.get(command, "/heap help")


def _needs_thread_service(runtime: Any, argv: list[str], inv: Invocation) -> bool:
    """Whether ``argv`` lacks a SERVICE that the thread can supply.

    A first word that is a near miss of a known service (``paymnts``) is taken as
    a misspelt service, so the user gets did-you-mean instead of a confusing
    error about the word in another position.
    """
    if not inv.thread_service:
        return False
    if not argv or argv[0].startswith("-"):
        return True
    registry = getattr(runtime, "registry", None)
    if registry is None:
        return False
    try:
        registry.resolve(argv[0])
    except UnknownServiceError as err:
        return not err.suggestions
    return False


def check_access(service: Any, inv: Invocation) -> None:
    """Refuse a request from a channel or user outside the service's allow lists.

    Console and CLI requests come from whoever holds the registry and the store,
    and alert/watch runs are heapbot's own (set up by the operator), so only
    requests typed or clicked by a chat user are checked.
    """
    if inv.source in TRUSTED_SOURCES:
        return
    try:
        _check_lists(service, inv)
    except AccessDeniedError:
        unread = sorted(set(inv.unknown_groups or ()) &
                        set(getattr(service, "allow_usergroups", None) or ()))
        if not unread:
            raise
        groups = "user group" + ("s " if len(unread) > 1 else " ")
        raise AccessDeniedError(
            f"heapbot could not check whether you are in the {groups}"
            f"{', '.join(f'<!subteam^{g}>' for g in unread)} that may use "
            f"`{getattr(service, 'name', 'this service')}`: Slack did not answer the "
            "membership lookup.",
            hint="Try again in a minute, or ask in one of the service's allowed channels.",
        ) from None


def may_use(service: Any, inv: Invocation) -> bool:
    """Whether :func:`check_access` lets ``inv`` use ``service`` (for lists that hide)."""
    try:
        check_access(service, inv)
    except AccessDeniedError:
        return False
    return True


def _check_lists(service: Any, inv: Invocation) -> None:
    """The service's channel and user-group allow lists against ``inv``."""
    registry_check = getattr(service, "check_access", None)
    if callable(registry_check):  # bot.registry.ServiceConfig knows its own lists
        registry_check(inv.channel_id, tuple(inv.user_groups or ()))
        return
    allow_channels = [*(getattr(service, "allow_channels", None) or [])]
    allow_groups = [*(getattr(service, "allow_usergroups", None) or [])]
    if not allow_channels and not allow_groups:
        return
    if inv.channel_id and inv.channel_id in allow_channels:
        return
    if set(inv.user_groups or ()) & set(allow_groups):
        return
    name = getattr(service, "name", "this service")
    raise AccessDeniedError(
        f"`{name}` can be profiled only from its allowed channels or user groups.",
        hint="Ask in the service's own channel, or ask its owners to add this one to "
             "allow_channels in heapbot.yaml.",
    )


def _require_service(command: str, argv: list[str]) -> None:
    """A SERVICE command must start with a service name, not an option or nothing."""
    if not argv or argv[0].startswith("-"):
        raise UsageError(f"`/heap {command}` needs a SERVICE.",
                         hint=f"Usage: `{usage_of(command)}`")


def _resolve_and_authorize(runtime: Any, command: str, argv: list[str],
                           inv: Invocation) -> list[str]:
    """Fill the thread's service, resolve aliases, enforce allow lists (before any capture)."""
    if command not in SERVICE_COMMANDS:
        return argv
    if _needs_thread_service(runtime, argv, inv):
        argv = [str(inv.thread_service), *argv]
    _require_service(command, argv)
    registry = getattr(runtime, "registry", None)
    if registry is None:
        return argv
    service = registry.resolve(argv[0])  # UnknownServiceError carries did-you-mean
    check_access(service, inv)
    return [getattr(service, "name", argv[0]), *argv[1:]]


def check_arguments(runtime: Any, command: str, argv: list[str]) -> list[str]:
    """Validate a command's arguments without I/O; raise the UsageError ``run`` would give.

    The same checks as the handler, in the same order: a SERVICE is given and the
    in-memory registry knows it, then the command module's own ``check(argv)``
    (options, counts, regexes, sample types, references). Access lists and
    anything needing Redis or the network are left to ``run``.
    Returns argv with the service's canonical name.
    """
    if command in SERVICE_COMMANDS:
        _require_service(command, argv)
        registry = getattr(runtime, "registry", None)
        if registry is not None:
            argv = [getattr(registry.resolve(argv[0]), "name", argv[0]), *argv[1:]]
    try:
        module = _load(command)
    except HeapbotError:  # a broken module is reported by run(), not by the ack
        return argv
    check = getattr(module, f"check_{command}", None) or (
        getattr(module, "check", None) if COMMANDS[command] == command else None)
    if callable(check):
        check(argv)
    return argv


def _usage_hint(err: HeapbotError, command: str) -> HeapbotError:
    """A usage error without its own hint gets the command's usage line."""
    if isinstance(err, UsageError) and err.hint is None and command in COMMANDS:
        err.hint = f"Usage: `{usage_of(command)}`"
    return err


def _internal_error_reply(command: str, service: str | None) -> Reply:
    error_id = secrets.token_hex(4)
    log.exception("internal error %s in /heap %s", error_id, command)
    return Reply.failure(
        f"heapbot hit an internal error (id {error_id}) running `/heap {command}`. "
        "It is in heapbot's log under that id; please try again or report it.",
        service=service,
    )


async def run(runtime: Any, inv: Invocation) -> Reply:
    """Run one /heap command; never raises HeapbotError (it becomes a failure Reply)."""
    from bot.metrics import COMMANDS as COMMAND_COUNTER

    started = time.monotonic()
    command = "?"
    service: str | None = inv.thread_service
    try:
        parsed = parse(inv.text)
        command = parsed.command
        argv = _resolve_and_authorize(runtime, command, parsed.argv, inv)
        if command in SERVICE_COMMANDS and argv:
            service = argv[0]
        module = _load(command)
        reply = await _handler_of(module, command)(runtime, argv, inv)
        if not isinstance(reply, Reply):
            raise TypeError(f"handler {command} returned {type(reply).__name__}, not Reply")
        outcome = "error" if reply.error else "ok"
    except UsageError as err:
        reply = Reply.failure(_usage_hint(err, command).user_message(), service=service)
        outcome = "usage"
    except AccessDeniedError as err:
        reply = Reply.failure(err.user_message(), service=service)
        outcome = "denied"
    except HeapbotError as err:
        reply = Reply.failure(err.user_message(), service=service)
        outcome = "error"
    except (RedisConnectionError, RedisTimeoutError):  # a module that talks to Redis itself
        reply = Reply.failure(StoreUnavailableError(
            "heapbot's history store (Redis) cannot be reached.",
            hint="Commands that need stored captures or watches will work again once Redis "
                 "is back.").user_message(), service=service)
        outcome = "error"
    except Exception:
        reply = _internal_error_reply(command, service)
        outcome = "internal"
    if reply.service is None and service:
        reply.service = service
    COMMAND_COUNTER.labels(command if command in COMMANDS else "unknown", outcome).inc()
    log.info("command %s outcome %s in %.3fs", command, outcome, time.monotonic() - started)
    return sanitize_reply(reply)


def sanitize_reply(reply: Reply) -> Reply:
    """Neutralise pings and links in every text a Reply shows (not in button commands)."""
    reply.title = neutralize_mentions(reply.title)
    reply.context = [neutralize_mentions(c) for c in reply.context]
    reply.summary = neutralize_mentions(reply.summary)
    reply.sections = [neutralize_mentions(s) for s in reply.sections]
    if reply.table is not None:
        reply.table.rows = [[neutralize_mentions(c) for c in row] for row in reply.table.rows]
        reply.table.caption = neutralize_mentions(reply.table.caption)
        for column in reply.table.columns:
            column.name = neutralize_mentions(column.name)
    for action in reply.actions:
        action.label = neutralize_mentions(action.label)
    return reply


def ack_text(runtime: Any, text: str, channel_id: str | None = None) -> str:
    """The instant ephemeral acknowledgement: no I/O beyond the in-memory registry.

    Invalid arguments are named here already, with the usage line (the same
    validation code as the handler: :func:`check_arguments`), so nobody reads
    "capturing…" before being told the command was wrong. A chat ack
    (``channel_id`` given) shows a restricted service's instance count only in one
    of its allowed channels: user groups are not known yet, and the count is the
    service's, not the asker's.
    """
    command = "?"
    try:
        parsed = parse(text)
        command = parsed.command
        argv = check_arguments(runtime, command, parsed.argv)
    except HeapbotError as err:
        return neutralize_mentions(_usage_hint(err, command).user_message())
    if command not in SERVICE_COMMANDS:
        return {"help": "Here is what heapbot can do…",
                "services": "Listing the services heapbot knows…",
                "watches": "Listing the watches…"}.get(command, "Working on it…")
    name, instances = argv[0], 0
    registry = getattr(runtime, "registry", None)
    if registry is not None:
        service = registry.resolve(argv[0])  # check_arguments resolved it already
        instances = len(getattr(service, "targets", []) or [])
        if channel_id is not None and not may_use(
                service, Invocation(text, channel_id=channel_id, source="slack")):
            instances = 0
    name = _short(neutralize_mentions(name))
    if "--snapshot" in argv or any(a.startswith("--snapshot=") for a in argv):
        return f"Loading a stored snapshot of {name}…"  # no capture: no instances to count
    if command in CAPTURING_COMMANDS:
        verb = {"diff": "capturing {name} to compare", "leaks": "checking {name} for leaks",
                "stats": "reading MemStats of {name}"}.get(command, "capturing {name}")
        counted = f" ({instances} instance{'s' if instances != 1 else ''})" if instances else ""
        return verb.format(name=name) + counted + "…"
    return {"history": f"Reading the stored history of {name}…",
            "deploy": f"Recording a deploy of {name}…",
            "watch": f"Setting up a watch on {name}…",
            "unwatch": f"Removing the watch on {name}…"}.get(command, "Working on it…")


__all__ = [
    "ALIASES",
    "COMMANDS",
    "USAGES",
    "Invocation",
    "ParsedCommand",
    "ack_text",
    "check_access",
    "check_arguments",
    "clean_text",
    "may_use",
    "neutralize_mentions",
    "parse",
    "run",
    "sanitize_reply",
    "usage_of",
]
