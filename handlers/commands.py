"""The command table: which words exist, which module serves each, how each is used.

Command modules are imported when first used (:func:`load`), so one broken module
cannot take the others down: its command answers "unavailable" and the error
goes to the log.
"""

from __future__ import annotations

import difflib
import importlib
import logging
from collections.abc import Awaitable, Callable
from types import ModuleType
from typing import TYPE_CHECKING

from bot.errors import HeapbotError

if TYPE_CHECKING:
    from bot.reply import Reply
    from bot.runtime import Runtime
    from handlers.invocation import Invocation

    Handler = Callable[[Runtime, list[str], Invocation], Awaitable[Reply]]
    Precheck = Callable[[Runtime, list[str], Invocation], Awaitable[object]]
    # A command answered from the command table alone: its handler takes `Runtime | None`,
    # so mypy refuses a dereference of the Runtime it may not get.
    OfflineHandler = Callable[[Runtime | None, list[str], Invocation], Awaitable[Reply]]

log = logging.getLogger("heapbot.handlers")

# command word → module under handlers/ (imported when first used)
COMMANDS: dict[str, str] = {
    "top": "top",
    "diff": "diff",
    "goroutines": "goroutines",
    "stats": "stats",
    "history": "history",
    "peek": "peek",
    "list": "listing",
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
# Answered with no Runtime (no Redis, no registry, no network): `heapbot help` starts no
# embedded redis-server. Their handlers are typed `runtime: Runtime | None`.
NO_RUNTIME_COMMANDS = frozenset({"help"})

CAPTURING_COMMANDS = frozenset(
    {"top", "diff", "goroutines", "stats", "capture", "leaks", "peek", "list"}
)

def canonical(word: str) -> str:
    """The command a word names (aliases resolved, case folded); may not exist."""
    word = word.lower()
    return ALIASES.get(word, word)


def did_you_mean(word: str) -> str:
    """A hint naming the commands closest to a misspelt ``word``."""
    close = difflib.get_close_matches(word, [*COMMANDS, *ALIASES], n=2, cutoff=0.6)
    close = [*dict.fromkeys(ALIASES.get(c, c) for c in close)]
    if close:
        return "Did you mean " + " or ".join(f"`/heap {c}`" for c in close) + "? " \
               "`/heap help` lists every command."
    return "`/heap help` lists every command."


def load(command: str) -> ModuleType:
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


def handler_of(module: ModuleType, command: str) -> Handler:
    """``handle_<command>`` when a module serves several commands, else ``handle``."""
    handler: Handler = getattr(module, f"handle_{command}", None) or module.handle
    return handler


def offline_handler_of(module: ModuleType, command: str) -> OfflineHandler:
    """The handler of a NO_RUNTIME command: called with ``None`` for the Runtime."""
    if command not in NO_RUNTIME_COMMANDS:
        raise HeapbotError(f"`/heap {command}` needs heapbot's registry and store, and this "
                           "surface ran it without them.",
                           hint="Run it in `heapbot console` or with `heapbot ask`.")
    handler: OfflineHandler = getattr(module, f"handle_{command}", None) or module.handle
    return handler


def _serves_one(command: str) -> bool:
    """Whether ``command``'s module serves no other command (so its plain names are its)."""
    return [*COMMANDS.values()].count(COMMANDS[command]) == 1


def checker_of(module: ModuleType, command: str) -> Callable[[list[str]], object] | None:
    """The module's syntax check for ``command`` (``check_<command>``, else ``check``)."""
    check = getattr(module, f"check_{command}", None) or (
        getattr(module, "check", None) if _serves_one(command) else None)
    return check if callable(check) else None


def prechecker_of(module: ModuleType, command: str) -> Precheck | None:
    """The module's refusals that need the store (``precheck_<command>``, else ``precheck``).

    Run by :func:`handlers.preflight` before a surface acks, and by the handler itself
    before it works: a `since` base or a `--snapshot` that is not stored, a watch with no
    channel to post in.
    """
    precheck = getattr(module, f"precheck_{command}", None) or (
        getattr(module, "precheck", None) if _serves_one(command) else None)
    return precheck if callable(precheck) else None


def usage_of(command: str) -> str:
    """The usage line of a command: its module's ``USAGES[command]`` or ``USAGE`` (the one
    place each is written; shown by `/heap help` and as the hint of usage errors)."""
    if command not in COMMANDS:
        return "/heap help"
    try:
        module = importlib.import_module("handlers." + COMMANDS[command])
    except Exception:  # a broken module is reported when it is run, not in a hint
        return f"/heap {command}"
    own = getattr(module, "USAGES", {}).get(command) or (
        getattr(module, "USAGE", None) if _serves_one(command) else None)
    return own if isinstance(own, str) and own.startswith("/heap") else f"/heap {command}"
