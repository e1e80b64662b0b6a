"""`/heap help [COMMAND]`: what heapbot can do, or one command's usage and meaning."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bot.errors import UsageError
from bot.reply import Column, Reply, Table
from bot.units import DURATION_HELP
from handlers._common import parse_args
from handlers.commands import COMMANDS, canonical, did_you_mean, usage_of

if TYPE_CHECKING:
    from bot.runtime import Runtime
    from handlers.invocation import Invocation

USAGE = "/heap help [COMMAND]"
# commands that take a duration (since 1h, --sample 3x30s, every 15m): their help says how
TAKES_DURATION = frozenset({"diff", "leaks", "watch"})

DESCRIPTIONS: dict[str, str] = {
    "top": "Capture every instance now and show pprof's top table (same numbers as "
           "`go tool pprof -top`). N rows, --cum to sort by cumulative, --type for "
           "inuse/alloc space or objects, --focus RE to keep matching stacks, --ignore RE "
           "to drop them, --hide RE to hide frames. --snapshot ID shows a stored capture "
           "(ids from `/heap history`) instead of capturing; with it, --download attaches "
           "its merged profile (--per-instance: each instance's own file). --flame adds a "
           "flame graph, --force skips the cooldown, --gc asks for a fresh heap.",
    "diff": "Capture now and compare with an earlier capture: the previous one, the last "
            "deploy, one from 1h/30m/2d ago, or a snapshot id. Growth shows as +. N, "
            "--cum, --type, --focus, --ignore and --hide work as in top; --flame draws a "
            "diff flame graph.",
    "goroutines": "Goroutine count and groups by stack, with where each group waits "
                  "(chan send, select, mutex, IO wait).",
    "stats": "runtime.MemStats (HeapAlloc, HeapInuse, HeapIdle, HeapReleased, Sys, NextGC, "
             "NumGC) and goroutines, with the change since the previous capture.",
    "history": "Stored captures of a service with heap, goroutines and deploys, and a chart.",
    "peek": "Callers and callees of the functions matching FUNC_RE, with values (pprof -peek).",
    "list": "Per-line values of the functions matching FUNC_RE (pprof -list, file:line).",
    "deploy": "Record a deploy marker, so `diff since deploy` and leak analysis know about it.",
    "services": "The services heapbot knows, their instances and last capture.",
    "capture": "Capture heap, goroutines and MemStats of every instance and store them.",
    "leaks": "Name suspected leak sites from stored captures; --sample 3x30s takes captures "
             "first.",
    "watch": "Capture on a schedule and post when a leak looks likely.",
    "unwatch": "Stop watching a service.",
    "watches": "The watches that are set up.",
    "help": "This help, or one command's usage.",
}


async def handle(runtime: Runtime | None, argv: list[str], inv: Invocation) -> Reply:
    """List every command, or explain one: from the command table alone (NO_RUNTIME_COMMANDS),
    so `heapbot help` runs with ``runtime`` None and starts no store."""
    args = parse_args(argv, USAGE, max_positionals=1)
    if args.positionals:
        word = canonical(args.positionals[0].lstrip("/"))
        if word not in COMMANDS:
            raise UsageError(f"There is no command `{word[:40]}` to explain.",
                             hint=did_you_mean(word))
        usage = usage_of(word)
        return Reply(
            title=f"/heap {word}",
            summary=f"`{usage}`",
            sections=[DESCRIPTIONS.get(word, ""),
                      *([DURATION_HELP] if word in TAKES_DURATION else [])],
            ephemeral=True,
            data={"command": word, "usage": usage},
        )
    usages = {c: usage_of(c) for c in COMMANDS}
    rows = [[usages[c], DESCRIPTIONS.get(c, "").split(". ")[0].rstrip(".")]
            for c in COMMANDS if c != "help"]
    return Reply(
        title="heapbot: Go heap and goroutine profiling",
        summary="Start with `/heap top SERVICE`; follow the buttons under each answer. "
                "`/heap help COMMAND` explains one command.",
        table=Table(columns=[Column("command", "left"), Column("what it does", "left")],
                    rows=rows),
        sections=[DURATION_HELP],
        ephemeral=True,
        data={"commands": usages},
    )
