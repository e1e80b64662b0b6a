"""Buttons on heapbot's messages: each button's value is a /heap command, run in the thread."""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt.async_app import AsyncApp

from bot.slack.deps import SlackDeps
from bot.slack.listeners.commands import BUSY_TEXT
from bot.slack.work import ReplyTarget

HEAP_ACTION = re.compile(r"^heap_action")  # bot.render.blocks names buttons heap_action_{i}

Ack = Callable[..., Awaitable[Any]]


def target_of(body: dict[str, Any]) -> ReplyTarget:
    """Reply in the clicked message's thread (its own ts when it starts the thread)."""
    channel = (body.get("channel") or {}).get("id") or \
        (body.get("container") or {}).get("channel_id") or ""
    message = body.get("message") or {}
    container = body.get("container") or {}
    thread_ts = None
    if not container.get("is_ephemeral"):
        thread_ts = message.get("thread_ts") or message.get("ts") or container.get("message_ts")
    return ReplyTarget(channel=str(channel), user_id=str((body.get("user") or {}).get("id", "")),
                       thread_ts=thread_ts, response_url=body.get("response_url"))


async def on_button(deps: SlackDeps, ack: Ack, body: dict[str, Any],
                    action: dict[str, Any]) -> None:
    started = time.monotonic()
    await ack()
    target = target_of(body)
    if not deps.runner.has_room():
        if target.response_url:
            from bot.reply import Reply
            from bot.slack.publish import post_ephemeral

            await post_ephemeral(deps.client, target.channel, Reply.failure(BUSY_TEXT),
                                 response_url=target.response_url)
        return
    deps.runner.submit(str(action.get("value") or ""), target, source="button", started=started)


def register(app: AsyncApp, deps: SlackDeps) -> None:
    @app.action(HEAP_ACTION)
    async def heap_button(ack: Ack, body: dict[str, Any], action: dict[str, Any]) -> None:
        await on_button(deps, ack, body, action)
