"""Messages that say which job step posted them, so a step is found again, not posted twice.

Slack's chat.postMessage has no idempotency key. A job posting a step of a paged thread
attaches message metadata (``event_type`` ``heapbot_step``, ``event_payload`` job id and
step); when such a post may have reached Slack without its job learning the ts (the replica
crashed or froze past its lease mid-post, the answer was lost), the job's next holder looks
for the mark in the thread (conversations.replies) or, for a thread's first message, in the
channel (conversations.history) before posting again. Both need the ``channels:history``
(``groups:history`` for private channels) scope; without it a lookup logs why and finds
nothing, and the step is posted at least once, as before.
"""

from __future__ import annotations

import logging
from typing import Any

from slack_sdk.errors import SlackApiError, SlackRequestError
from slack_sdk.web.async_client import AsyncWebClient

from bot.slack.publish import SlackPublishError

log = logging.getLogger(__name__)

EVENT_TYPE = "heapbot_step"
# Answers that mean "this app may not read here": the lookup cannot help, posting still can.
UNREADABLE = {"missing_scope", "not_in_channel", "channel_not_found", "not_allowed_token_type"}
MAX_PAGES = 5


def step_mark(job_id: str, step: str) -> dict[str, Any]:
    """The metadata a step's message carries (chat.postMessage ``metadata``)."""
    return {"event_type": EVENT_TYPE, "event_payload": {"job": job_id, "step": step}}


def _carries(message: dict[str, Any], mark: dict[str, Any]) -> bool:
    metadata = message.get("metadata") or {}
    return (metadata.get("event_type") == mark["event_type"]
            and metadata.get("event_payload") == mark["event_payload"])


def ts_key(ts: str) -> tuple[int, int]:
    """A Slack ts ("1700000000.000123") as a sortable pair."""
    seconds, _, micros = ts.partition(".")
    return int(seconds or 0), int(micros or 0)


async def _messages(client: AsyncWebClient, channel: str, what: str, *,
                    thread_ts: str | None = None, oldest: float = 0.0
                    ) -> list[dict[str, Any]] | None:
    """The thread's messages (or, without ``thread_ts``, the channel's since ``oldest``),
    metadata included; None when the app may not read the channel (logged, naming ``what``
    was looked for); other Slack failures raise SlackPublishError (retry later)."""
    messages: list[dict[str, Any]] = []
    cursor: str | None = None
    method = "conversations.replies" if thread_ts else "conversations.history"
    for _ in range(MAX_PAGES):
        try:
            if thread_ts:
                resp = await client.conversations_replies(
                    channel=channel, ts=thread_ts, include_all_metadata=True, limit=200,
                    cursor=cursor)
            else:
                resp = await client.conversations_history(
                    channel=channel, oldest=f"{max(0.0, oldest):.6f}",
                    include_all_metadata=True, limit=200, cursor=cursor)
        except SlackApiError as exc:
            error = str(exc.response.get("error") or exc.response.status_code)
            if error in UNREADABLE:
                log.warning("cannot look for %s in %s (%s: %s); posting it (add the "
                            "channels:history scope so a retried step is not posted twice)",
                            what, channel, method, error)
                return None
            raise SlackPublishError(method, error) from exc
        except SlackRequestError as exc:
            raise SlackPublishError(method, "request_failed") from exc
        messages += list(resp.get("messages") or [])
        cursor = (resp.get("response_metadata") or {}).get("next_cursor") or None
        if not resp.get("has_more") or not cursor:
            break
    return messages


async def find_marked(client: AsyncWebClient, channel: str, mark: dict[str, Any], *,
                      thread_ts: str | None = None, oldest: float = 0.0) -> list[str]:
    """The ts of every message carrying ``mark``, oldest first: in the thread ``thread_ts``,
    or without one among the channel's messages since ``oldest``. [] when the app may not
    read the channel (logged); other Slack failures raise SlackPublishError (retry later)."""
    messages = await _messages(client, channel, f"an earlier post of {mark['event_payload']}",
                               thread_ts=thread_ts, oldest=oldest)
    return sorted((str(m["ts"]) for m in messages or [] if _carries(m, mark)), key=ts_key)


async def thread_file_names(client: AsyncWebClient, channel: str, thread_ts: str
                            ) -> set[str] | None:
    """Names of the files shared in a thread (None when the app may not read it): a step
    whose message is there but whose files may not be uploads only the missing ones."""
    messages = await _messages(client, channel, "the files of a thread", thread_ts=thread_ts)
    if messages is None:
        return None
    return {str(f.get("name", "")) for m in messages for f in m.get("files") or []}
