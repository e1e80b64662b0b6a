"""`/heap deploy SERVICE VERSION`: record a deploy marker.

`diff since deploy` and the leak analysis use markers to split history into
"before" and "after"; heapbot also records one when the build id changes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bot.reply import Action, Reply
from bot.units import format_clock
from handlers._common import Args, parse_args

if TYPE_CHECKING:
    from bot.runtime import Runtime
    from handlers.invocation import Invocation

USAGE = "/heap deploy SERVICE VERSION"


def check(argv: list[str]) -> Args:
    """Validate the arguments, syntax only (no I/O): shared by handle() and the instant ack."""
    return parse_args(argv, USAGE, min_positionals=2, max_positionals=2)


async def handle(runtime: Runtime, argv: list[str], inv: Invocation) -> Reply:
    """Store the marker now and say what it enables."""
    args = check(argv)
    service, version = args.positionals
    marker = await runtime.add_deploy(service, version, by=inv.user_id)
    by = f" by {marker.by}" if marker.by else ""
    return Reply(
        title=f"Recorded deploy {version} of {service}",
        context=[f"{service} · {format_clock(marker.taken_at)}{by}"],
        summary="`diff since deploy` and `leaks` now treat this as the start of the new build.",
        actions=[Action("Capture now", f"capture {service}", "primary"),
                 Action("History", f"history {service}")],
        service=service,
        data={"service": service, "version": marker.version, "by": marker.by,
              "at": marker.taken_at, "source": marker.source},
    )
