"""``@heapbot …`` mentions: in a thread, the command acts on the thread's service."""

from __future__ import annotations

import time
from typing import Any

from slack_bolt.async_app import AsyncApp

from bot.slack.deps import SlackDeps
from bot.slack.text import plain_text
from bot.slack.work import ReplyTarget


async def on_mention(deps: SlackDeps, event: dict[str, Any], body: dict[str, Any]) -> None:
    """Run the mentioned command and reply in the thread (starting one on the mention)."""
    started = time.monotonic()
    event_id = str(body.get("event_id") or "")
    if event_id and not await deps.seen_events.first_time(event_id):
        return  # Slack redelivered an event already being handled
    if not deps.runner.has_room():
        return
    thread_ts = event.get("thread_ts") or event.get("ts")
    target = ReplyTarget(channel=str(event.get("channel") or ""),
                         user_id=str(event.get("user") or ""), thread_ts=thread_ts)
    deps.runner.submit(plain_text(str(event.get("text") or "")), target, source="mention",
                       started=started)


def register(app: AsyncApp, deps: SlackDeps) -> None:
    @app.event("app_mention")
    async def heap_mention(event: dict[str, Any], body: dict[str, Any]) -> None:
        await on_mention(deps, event, body)
