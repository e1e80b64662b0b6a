"""`/heap watch`, `/heap unwatch` and `/heap watches`.

``/heap watch SERVICE every 15m [in #channel] [--goroutines N]`` stores a watch
that every replica's scheduler runs (bot/alerts/watches.py); the thread it opens when
the verdict turns goes to the given channel, else the one the command came
from, else the service's registry channel.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import TYPE_CHECKING

from bot.errors import UnknownServiceError, UsageError
from bot.jobs import QueueSettings
from bot.reply import Action, Column, Reply, Table
from bot.units import format_duration, parse_duration
from bot.watchlist import Watch, channel_allowed, parse_channel
from handlers.access import may_use
from handlers.services import hidden_note

if TYPE_CHECKING:
    from bot.runtime import Runtime
    from handlers.invocation import Invocation

USAGE = "/heap watch SERVICE every 15m [in #channel] [--goroutines N]"
USAGES = {
    "watch": USAGE,
    "unwatch": "/heap unwatch SERVICE",
    "watches": "/heap watches",
}


def _usage(command: str, message: str) -> UsageError:
    return UsageError(message, hint=f"Usage: `{USAGES[command]}`")


def parse_watch(argv: list[str], min_interval: float) -> tuple[str, float, str, int | None]:
    """(service, interval seconds, channel or "", goroutine threshold or None)."""
    if not argv:
        raise _usage("watch", "`/heap watch` needs a SERVICE.")
    service, rest = argv[0], list(argv[1:])
    interval: float | None = None
    channel = ""
    threshold: int | None = None
    while rest:
        word = rest.pop(0)
        lowered = word.lower()
        if lowered == "every" and rest:
            interval = parse_duration(rest.pop(0))
        elif lowered == "in" and rest:
            channel = parse_channel(rest.pop(0))
        elif lowered.startswith("--goroutines"):
            value = word.partition("=")[2] or (rest.pop(0) if rest else "")
            if not value.isdigit() or int(value) < 1:
                raise _usage("watch", "`--goroutines` needs a whole number, e.g. 5000.")
            threshold = int(value)
        else:
            raise _usage("watch", f"Unexpected `{word[:40].replace('`', '')}`.")
    if interval is None:
        raise _usage("watch", "Say how often, e.g. `every 15m`.")
    if interval < min_interval:
        raise UsageError(
            f"Every {format_duration(interval)} is too often: the shortest interval is "
            f"{format_duration(min_interval)}.",
            hint="Captures pause the service's allocator briefly; pick a longer interval.")
    return service, interval, channel, threshold


def check_watch(argv: list[str]) -> tuple[str, float, str, int | None]:
    """Validate the arguments, syntax only (no I/O): shared by handle_watch() and the ack,
    so "every 1s is too often" is said instead of "Setting up a watch…"."""
    return parse_watch(argv, QueueSettings().watch_min_interval_seconds)


def _post_channel(runtime: Runtime, service: str, channel: str, inv: Invocation) -> str:
    """Where the watch posts: as typed, else the asking channel, the registry's, the alerts'.

    Everyone in the channel reads the watch's posts: it must be one of the service's
    allowed channels (checked again at every tick, bot/alerts/watches.py).
    """
    configured = runtime.registry.resolve(service).channel
    channel = channel or inv.channel_id or configured or QueueSettings().alert_channel
    if not channel:
        raise _usage("watch", "Say where to post, e.g. `in #payments-oncall` (picked from "
                             "Slack's list) or `in C0123ABCD` (the channel's id).")
    runtime.registry.resolve(service).check_post_channel(channel)
    return channel


async def precheck_watch(runtime: Runtime, argv: list[str], inv: Invocation) -> None:
    """A watch with nowhere it may post is refused before the console's ack."""
    service, _, channel, _ = check_watch(argv)
    _post_channel(runtime, service, channel, inv)


async def handle_watch(runtime: Runtime, argv: list[str], inv: Invocation) -> Reply:
    config = QueueSettings()
    service, interval, channel, threshold = check_watch(argv)
    channel = _post_channel(runtime, service, channel, inv)
    watch = Watch(service=service, interval_seconds=interval, channel=channel,
                  created_by=inv.user_id, created_at=time.time(),
                  goroutine_threshold=threshold)
    previous = await runtime.put_watch(watch)
    shown = "this channel" if channel == inv.channel_id else f"`{channel}`"
    limit = threshold or config.watch_goroutine_threshold
    return Reply(
        title=f"Watching {service} every {format_duration(interval)}",
        summary=(f"Replaced the earlier watch (every "
                 f"{format_duration(previous.interval_seconds)})." if previous else
                 "heapbot captures it on that schedule and keeps the history."),
        sections=[f"A thread opens in {shown} when the leak verdict turns to \"leak likely\" "
                  f"or goroutines reach {limit:,}; once per turn, not every capture."],
        actions=[Action("Stop watching", f"unwatch {service}", style="danger"),
                 Action("Watches", "watches")],
        service=service, data={"watch": asdict(watch)},
    )


async def handle_unwatch(runtime: Runtime, argv: list[str], inv: Invocation) -> Reply:
    if len(argv) != 1:
        raise _usage("unwatch", "`/heap unwatch` takes one SERVICE.")
    service = argv[0]
    removed = await runtime.remove_watch(service)
    if not removed:
        return Reply(title=f"{service} was not watched", ephemeral=True, service=service,
                     sections=["`/heap watches` lists the watches."])
    return Reply(title=f"Stopped watching {service}", service=service,
                 summary="No more scheduled captures; its history stays.")


async def handle_watches(runtime: Runtime, argv: list[str], inv: Invocation) -> Reply:
    if argv:
        raise _usage("watches", "`/heap watches` takes no arguments.")
    everything = await runtime.watches()
    # Watches on services the asker may not use (their channels too) are not listed.
    watches = [w for w in everything if _visible(runtime, w, inv)]
    hidden = hidden_note(len(everything) - len(watches), "watch")
    if not watches:
        return Reply(title="No watches", sections=[f"Add one with `{USAGE}`.",
                                                   *([hidden] if hidden else [])],
                     data={"watches": []})
    rows = [[w.service, format_duration(w.interval_seconds),
             w.channel if channel_allowed(runtime.registry, w) else
             f"{w.channel} (paused: not an allowed channel)",
             f"{w.goroutine_threshold:,}" if w.goroutine_threshold else "default"]
            for w in watches]
    return Reply(
        title=f"{len(watches)} watch{'es' if len(watches) != 1 else ''}",
        table=Table([Column("service", "left"), Column("every", "left"),
                     Column("channel", "left"), Column("goroutine limit")], rows),
        sections=[hidden] if hidden else [],
        data={"watches": [{"service": w.service, "interval_seconds": w.interval_seconds,
                           "channel": w.channel} for w in watches]},
    )


def _visible(runtime: Runtime, watch: Watch, inv: Invocation) -> bool:
    """Whether the asker may use the watched service (a removed service's watch is shown)."""
    try:
        service = runtime.registry.resolve(watch.service)
    except UnknownServiceError:
        return True
    return may_use(service, inv)


handle = handle_watch
