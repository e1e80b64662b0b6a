"""`/heap services`: the services in the registry, their instances and last capture."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from bot.errors import StoreError
from bot.reply import Column, Reply, Table
from bot.units import format_duration
from handlers._common import Args, parse_args
from handlers.access import may_use

if TYPE_CHECKING:
    from bot.runtime import Runtime
    from handlers.invocation import Invocation

USAGE = "/heap services"


def _instances_text(targets: tuple[str, ...]) -> str:
    """"3" for fixed targets, "2 + DNS" when some are resolved at capture time."""
    fixed = sum(1 for t in targets if not t.startswith("dns+"))
    dns = len(targets) - fixed
    if not dns:
        return str(fixed)
    return f"{fixed} + DNS" if fixed else "DNS" if dns == 1 else f"DNS ×{dns}"


def hidden_note(count: int, what: str) -> str:
    """The line saying how many entries were left out (restricted elsewhere), or ""."""
    if not count:
        return ""
    noun = what if count == 1 else ("watches" if what == "watch" else what + "s")
    return (f"{count:,} more {noun} {'is' if count == 1 else 'are'} restricted to other "
            "channels or user groups and not shown here.")


def check(argv: list[str]) -> Args:
    """Validate the arguments, syntax only (no I/O): shared by handle() and the instant ack."""
    return parse_args(argv, USAGE, max_positionals=0)


async def handle(runtime: Runtime, argv: list[str], inv: Invocation) -> Reply:
    """One row per service; the last capture comes from the store when it is reachable."""
    check(argv)
    registry = runtime.registry
    everything = list(registry)
    if not everything:
        return Reply(title="heapbot knows no services yet", sections=[registry.setup_hint()],
                     data={"services": []})
    # A restricted service, its instances and channel are listed only to who may use it.
    services = [s for s in everything if may_use(s, inv)]
    hidden = hidden_note(len(everything) - len(services), "service")
    if not services:
        return Reply(title="No services you can use here", sections=[hidden],
                     data={"services": []})
    now = time.time()
    services.sort(key=lambda s: s.name)
    rows, data, store_problem = [], [], ""
    try:
        latest = await runtime.latest_many([s.name for s in services])
    except StoreError as exc:
        latest, store_problem = {}, exc.user_message()
    for service in services:
        last = latest.get(service.name)
        last_text = "never" if last is None else f"{format_duration(now - last.taken_at)} ago"
        if store_problem:
            last_text = "unknown"
        rows.append([service.name, ", ".join(service.aliases) or "-",
                     _instances_text(service.targets), service.channel or "-", last_text])
        data.append({"name": service.name, "aliases": list(service.aliases),
                     "targets": len(service.targets), "channel": service.channel,
                     "last_capture": last.taken_at if last else None,
                     "last_snapshot": last.id if last else None})
    return Reply(
        title=f"{len(services)} service{'s' if len(services) != 1 else ''} in the registry",
        context=[f"registry {registry.where}"],  # which file: found from cwd upwards
        table=Table(columns=[Column("service", "left"), Column("aliases", "left"),
                             Column("instances"), Column("channel", "left"),
                             Column("last capture")], rows=rows),
        sections=[*([f"Last captures unknown: {store_problem}"] if store_problem else []),
                  *([hidden] if hidden else [])],
        data={"services": data},
    )
