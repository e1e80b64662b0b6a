"""The ``--sample NxD`` path of `/heap leaks` for chat users: schedule, do not wait.

In the console and the CLI one person waits at a terminal, so the captures are
taken right there. From chat the sampling is reserved in Redis
(:mod:`bot.sampling`, which caps it per user, per service and heapbot-wide)
and its captures run as jobs on the worker; the reply says so at once, and the
verdict is posted into that reply's thread when the last capture is done. The
command's slot is free again within milliseconds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bot import sampling
from bot.reply import Action, Reply
from bot.units import format_about

if TYPE_CHECKING:
    from bot.runtime import Runtime
    from handlers.invocation import Invocation

# Surfaces where someone waits for the answer in front of a terminal: sample inline.
INLINE_SOURCES = frozenset({"console", "cli"})


async def schedule(runtime: Runtime, service: str, count: int, interval: float,
                   inv: Invocation) -> Reply:
    """Reserve and schedule a sampling of ``service``; the Reply says when the verdict comes.

    The verdict is posted later into the asking channel for everyone there, so a
    restricted service samples only from one of its ``allow_channels``.
    """
    runtime.registry.resolve(service).check_post_channel(inv.channel_id)
    plan = sampling.Sampling(service=service, count=count, interval_seconds=interval,
                             user_id=inv.user_id, channel=inv.channel_id)
    plan = await runtime.start_sampling(plan)
    every = f"{interval:g}s apart"
    return Reply(
        title=f"Sampling {service}: {count} captures {every}",
        summary=(f"The first capture starts now; the leak verdict is posted in this thread in "
                 f"about {format_about(plan.span_seconds + 5)}."),
        sections=["Other commands keep answering meanwhile: the captures run as scheduled "
                  "jobs, not in this command."],
        actions=[Action("Leaks now", f"leaks {service}")],
        service=service,
        data={"sampling_id": plan.id, "service": service, "count": count,
              "interval_seconds": interval},
    )
