"""`--flame` and the "Flame graph" button: the flame graph files a top or diff reply carries.

The layout is computed in a thread (numpy on the merged profile, whose node
stacks the table just computed are reused); the PNG and SVG are drawn in the
worker process pool (``bot.workpool.run_cpu`` in a heavy-work slot), so neither
runs on the event loop.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from bot.logs import target_name
from bot.reply import Attachment

if TYPE_CHECKING:
    from bot.analysis.top import TopOptions
    from bot.pprof import Profile


async def flame_attachments(profile: Profile, options: TopOptions, *, service: str,
                            snapshot_id: str, captured_at: float | None,
                            base: Profile | None = None, base_id: str = "",
                            base_captured_at: float | None = None) -> list[Attachment]:
    """The PNG (shown in the thread) and the SVG (hover tooltips, for download)."""
    from bot.analysis.flame import flame, flame_diff
    from bot.render.flame import draw_flame

    if base is None:
        layout = await asyncio.to_thread(flame, profile, options)
        stem = f"{service}-{snapshot_id or 'unsaved'}-flame"
        what = f"flame graph of {service} ({target_name(layout.sample_type)})"
    else:
        layout = await asyncio.to_thread(flame_diff, base, profile, options)
        stem = f"{service}-{base_id or 'base'}-{snapshot_id or 'unsaved'}-diff-flame"
        what = (f"diff flame graph of {service} ({target_name(layout.sample_type)}), "
                "red grew, blue shrank")
    png, svg = await draw_flame(layout, service, captured_at, base_captured_at)
    return [Attachment(f"{stem}.png", png, what, kind="chart"),
            Attachment(f"{stem}.svg", svg.encode(), what + "; open in a browser and hover a "
                       "frame for its values", kind="chart")]


def flame_option_words(options: TopOptions) -> str:
    """The ``--type/--focus/--ignore/--hide`` words of a button that redraws this view."""
    import shlex

    words = []
    for flag, value in (("--type", options.sample_type), ("--focus", options.focus),
                        ("--ignore", options.ignore), ("--hide", options.hide)):
        if value:
            words += [flag, shlex.quote(value)]
    return " ".join(words)
