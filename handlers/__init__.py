"""The /heap dispatcher: text in, :class:`bot.reply.Reply` out, on every surface.

Every surface (Slack slash command, @mention in a thread, button, console,
CLI, alerts) turns what the user typed into an :class:`Invocation` of plain
text and calls :func:`run`, which parses it (``handlers.grammar``), finds the
command's module (``handlers.commands``), fills in and checks the service
(``handlers.access``) before any capture, runs the command, and always returns
a Reply: user mistakes become a short message, bugs become "internal error,
id X" with the traceback only in the log. Nothing here knows Slack's markup.
"""

from __future__ import annotations

import logging
import secrets
import sys
import time
from typing import TYPE_CHECKING

from bot.errors import AccessDeniedError, HeapbotError, UsageError
from bot.reply import Reply
from handlers import commands
from handlers.access import (
    check_access,
    keep_private,
    may_use,
    require_service,
    resolve_and_authorize,
    resolve_for,
)
from handlers.commands import ALIASES, COMMANDS, usage_of
from handlers.grammar import ParsedCommand, clean_text, parse, shorten
from handlers.invocation import Invocation

if TYPE_CHECKING:
    from bot.runtime import Runtime

log = logging.getLogger("heapbot.handlers")


def check_arguments(runtime: Runtime, command: str, argv: list[str],
                    inv: Invocation | None = None) -> list[str]:
    """Validate a command's arguments without I/O; raise the UsageError ``run`` would give.

    The same checks as the handler, in the same order: a SERVICE is given and the
    in-memory registry knows it, then the command module's own ``check(argv)``
    (options, counts, regexes, sample types, references). Access lists and
    anything needing Redis or the network are left to ``run``.
    Returns argv with the service's canonical name; with ``inv``, a did-you-mean
    names only services ``inv`` may use.
    """
    if command in commands.SERVICE_COMMANDS:
        require_service(command, argv)
        argv = [resolve_for(runtime.registry, argv[0], inv).name, *argv[1:]]
    try:
        module = commands.load(command)
    except HeapbotError:  # a broken module is reported by run(), not by the ack
        return argv
    check = commands.checker_of(module, command)
    if check is not None:
        check(argv)
    return argv


async def preflight(runtime: Runtime, inv: Invocation) -> None:
    """Raise the refusal :func:`run` would answer ``inv`` with before doing any work.

    For a surface that can wait for Redis before its ack (the console): a command that
    will be refused prints no "capturing demo…" first. The same checks as ``run``, in
    its order: grammar, service and access (:func:`resolve_and_authorize`), the
    module's ``check(argv)``, then its ``precheck(runtime, argv, inv)`` (a `since` base
    or a `--snapshot` that is not stored, a watch with nowhere to post; a StoreError
    when Redis is down). Slack runs it through :func:`refusal` under a time budget
    (its ack must come within 3 s) and falls back to :func:`ack_text`.
    """
    parsed = parse(inv.text)
    command, argv = parsed.command, parsed.argv
    if command in commands.SERVICE_COMMANDS:
        argv = resolve_and_authorize(runtime.registry, command, argv, inv)
    module = commands.load(command)
    check = commands.checker_of(module, command)
    if check is not None:
        check(argv)
    precheck = commands.prechecker_of(module, command)
    if precheck is not None:
        await precheck(runtime, argv, inv)


async def refusal(runtime: Runtime, inv: Invocation) -> str | None:
    """The message :func:`run` would refuse ``inv`` with (:func:`preflight`), or None.

    For a surface that answers a refused command in its ack (Slack): the same text,
    usage line included, that ``run`` would reply; counted like ``run`` counts it.
    Unexpected errors propagate: ``run`` answers those with an error id.
    """
    command = "?"
    try:
        command = parse(inv.text).command
        await preflight(runtime, inv)
    except HeapbotError as err:
        outcome, message = _refused(err, command)
    else:
        return None
    _count(command, outcome)
    log.info("command %s outcome %s before the ack", command, outcome)
    return message


def _refused(err: HeapbotError, command: str) -> tuple[str, str]:
    """The outcome counted and the message shown for a refusal: one mapping for
    :func:`run`'s reply and :func:`refusal`'s ack (usage errors carry the usage line)."""
    if isinstance(err, UsageError):
        return "usage", _usage_hint(err, command).user_message()
    if isinstance(err, AccessDeniedError):
        return "denied", err.user_message()
    return "error", err.user_message()


def _count(command: str, outcome: str) -> None:
    metrics = sys.modules.get("bot.metrics")  # loaded where /metrics is served (the
    if metrics is not None:                   # server); a CLI call has nothing to count into
        metrics.COMMANDS.labels(command if command in COMMANDS else "unknown", outcome).inc()


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


async def run(runtime: Runtime | None, inv: Invocation) -> Reply:
    """Run one /heap command; never raises HeapbotError (it becomes a failure Reply).

    ``runtime`` None (`heapbot help` in the CLI: no store started) answers only the
    ``NO_RUNTIME_COMMANDS``, whose handlers are typed to take none; any other command
    is refused with a message, never an AttributeError.
    """
    started = time.monotonic()
    command = "?"
    service: str | None = inv.thread_service
    try:
        parsed = parse(inv.text)
        command = parsed.command
        argv = parsed.argv
        if runtime is None:
            module = commands.load(command)
            reply = await commands.offline_handler_of(module, command)(None, argv, inv)
        else:
            if command in commands.SERVICE_COMMANDS:
                argv = resolve_and_authorize(runtime.registry, command, argv, inv)
                service = argv[0]
            module = commands.load(command)
            reply = await commands.handler_of(module, command)(runtime, argv, inv)
        if not isinstance(reply, Reply):
            raise TypeError(f"handler {command} returned {type(reply).__name__}, not Reply")
        if runtime is not None and command in commands.SERVICE_COMMANDS:
            # outside allow_channels: the asker alone
            reply = keep_private(reply, runtime.registry.resolve(argv[0]), inv)
        outcome = "error" if reply.error else "ok"
    except HeapbotError as err:
        outcome, message = _refused(err, command)
        reply = Reply.failure(message, service=service)
    except Exception:
        reply = _internal_error_reply(command, service)
        outcome = "internal"
    if reply.service is None and service:
        reply.service = service
    _count(command, outcome)
    log.info("command %s outcome %s in %.3fs", command, outcome, time.monotonic() - started)
    return reply


def ack_text(runtime: Runtime, text: str, channel_id: str | None = None) -> str:
    """The instant acknowledgement: no I/O beyond the in-memory registry.

    Invalid arguments are named here already, with the usage line (the same
    validation code as the handler: :func:`check_arguments`), so nobody reads
    "capturing…" before being told the command was wrong. A chat ack
    (``channel_id`` given) shows a restricted service's instance count only in one
    of its allowed channels: user groups are not known yet, and the count is the
    service's, not the asker's.
    """
    command = "?"
    asker = None if channel_id is None else Invocation(text, channel_id=channel_id,
                                                       source="slack")
    try:
        parsed = parse(text)
        command = parsed.command
        argv = check_arguments(runtime, command, parsed.argv, asker)
    except HeapbotError as err:
        return _usage_hint(err, command).user_message()
    if command not in commands.SERVICE_COMMANDS:
        return {"help": "Here is what heapbot can do…",
                "services": "Listing the services heapbot knows…",
                "watches": "Listing the watches…"}.get(command, "Working on it…")
    service = runtime.registry.resolve(argv[0])  # check_arguments resolved it already
    name, instances = shorten(service.name), len(service.targets)
    if asker is not None and not may_use(service, asker):
        instances = 0  # a service this channel may not use: do not disclose its size
    if "--snapshot" in argv or any(a.startswith("--snapshot=") for a in argv):
        return f"Loading a stored snapshot of {name}…"  # no capture: no instances to count
    if command in commands.CAPTURING_COMMANDS:
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
    "Invocation",
    "ParsedCommand",
    "ack_text",
    "check_access",
    "check_arguments",
    "clean_text",
    "may_use",
    "parse",
    "preflight",
    "refusal",
    "run",
    "usage_of",
]
