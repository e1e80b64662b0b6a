"""The /heap slash command: ack at once with a short ephemeral text, work afterwards."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt.async_app import AsyncApp

import handlers
from bot.render.blocks import neutralize_mentions
from bot.slack.deps import SlackDeps
from bot.slack.text import plain_text
from bot.slack.work import ReplyTarget

log = logging.getLogger(__name__)

HEAP_COMMAND = re.compile(r"^/heap")  # /heap, and /heap-staging style per-env names
BUSY_TEXT = "heapbot is busy with many commands right now; please try again in a minute."

Ack = Callable[..., Awaitable[Any]]


def ack_text_for(deps: SlackDeps, text: str, channel_id: str = "") -> str:
    """handlers.ack_text made inert for Slack, never failing: the ack must go out whatever
    the text is."""
    try:
        return neutralize_mentions(handlers.ack_text(deps.runtime, text, channel_id=channel_id))
    except Exception:
        log.exception("ack_text failed")
        return "Working on it…"


async def refusal_before_ack(deps: SlackDeps, text: str, target: ReplyTarget) -> str | None:
    """The refusal ``run`` would answer with, if the checks finish within the budget.

    None when they pass, take longer than ``deps.preflight_seconds`` (Redis or Slack's
    user-group lookup slow: ack as usual, ``run`` checks again), or fail unexpectedly
    (``run`` answers that with an error id).
    """
    if deps.runtime is None or deps.preflight_seconds <= 0:
        return None
    try:
        async with asyncio.timeout(deps.preflight_seconds):
            return await deps.runner.refusal(text, target)
    except TimeoutError:
        log.info("checks before the ack took over %.1fs; acking as usual",
                 deps.preflight_seconds)
    except Exception:
        log.exception("checks before the ack failed; the command runs and answers it")
    return None


async def on_heap_command(deps: SlackDeps, ack: Ack, command: dict[str, Any]) -> None:
    """Ack with what heapbot is about to do, then run the command in the background.

    A command that would be refused (unknown service, no access, bad option, a `since`
    base that is not stored) is answered by the ack alone: no "capturing demo…" first,
    no job, nothing posted later.
    """
    started = time.monotonic()
    text = plain_text(str(command.get("text") or ""))
    if not deps.runner.has_room():
        await ack(text=BUSY_TEXT, response_type="ephemeral")
        return
    target = ReplyTarget(channel=str(command.get("channel_id") or ""),
                         user_id=str(command.get("user_id") or ""),
                         response_url=command.get("response_url"))
    refused = await refusal_before_ack(deps, text, target)
    if refused is not None:
        await ack(text=neutralize_mentions(refused), response_type="ephemeral")
        return
    await ack(text=ack_text_for(deps, text, target.channel), response_type="ephemeral")
    deps.runner.submit(text, target, source="slack", started=started)


def register(app: AsyncApp, deps: SlackDeps) -> None:
    @app.command(HEAP_COMMAND)
    async def heap_command(ack: Ack, command: dict[str, Any]) -> None:
        await on_heap_command(deps, ack, command)
