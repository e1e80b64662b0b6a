"""Post a :class:`bot.reply.Reply` to Slack: blocks, fallback text, files into the thread.

Visible replies go out with ``chat.postMessage`` (blocks from
``bot.render.blocks``), then their attachments with the files upload v2 flow
(``files.getUploadURLExternal`` → POST the bytes → ``files.completeUploadExternal``)
into the reply's thread. Ephemeral replies (errors, help) go to the asker only,
through the command's ``response_url`` or ``chat.postEphemeral``.
"""

from __future__ import annotations

import logging

from slack_sdk.errors import SlackApiError, SlackRequestError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from bot.errors import HeapbotError
from bot.metrics import SLACK_API_ERRORS
from bot.reply import Reply
from bot.slack.client import api_method
from bot.slack.ratelimit import ChannelRateLimiter

log = logging.getLogger(__name__)

# Errors meaning "the bot cannot post here", answered through response_url instead.
NOT_A_MEMBER = {"not_in_channel", "channel_not_found", "is_archived"}


class SlackPublishError(HeapbotError):
    """Slack refused a post or an upload (the Slack error code is in the message)."""

    def __init__(self, method: str, error: str) -> None:
        self.method = method
        self.error = error
        super().__init__(f"Slack refused {method}: {error}.",
                         hint="Check the app's scopes and that @heapbot is in the channel.")


def render(reply: Reply) -> tuple[list[dict], str]:
    """Block Kit blocks and the notification/fallback text of a reply."""
    from bot.render.blocks import fallback_text, reply_to_blocks

    return reply_to_blocks(reply), fallback_text(reply)


def _failed(exc: SlackApiError | SlackRequestError, method: str) -> SlackPublishError:
    if isinstance(exc, SlackApiError):
        error = str(exc.response.get("error") or exc.response.status_code)
        method = api_method(exc.response.api_url) if exc.response.api_url else method
    else:
        error = "request_failed"
    SLACK_API_ERRORS.labels(method, error).inc()
    return SlackPublishError(method, error)


async def post_ephemeral(client: AsyncWebClient, channel: str, reply: Reply, *,
                         user_id: str | None = None, response_url: str | None = None,
                         thread_ts: str | None = None, prefix: str = "") -> None:
    """Show ``reply`` only to the asker: response_url if there is one, else chat.postEphemeral."""
    blocks, text = render(reply)
    if prefix:
        blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": prefix}}, *blocks][:50]
        text = f"{prefix}\n{text}"
    if response_url:
        webhook = AsyncWebhookClient(response_url, timeout=30)
        try:
            resp = await webhook.send(text=text, blocks=blocks, response_type="ephemeral",
                                      replace_original=False)
        except Exception as exc:  # aiohttp raises a zoo of connection errors
            SLACK_API_ERRORS.labels("response_url", type(exc).__name__).inc()
            raise SlackPublishError("response_url", type(exc).__name__) from exc
        if resp.status_code != 200:
            SLACK_API_ERRORS.labels("response_url", str(resp.status_code)).inc()
            raise SlackPublishError("response_url", f"HTTP {resp.status_code}")
        return
    if not user_id:
        raise SlackPublishError("chat.postEphemeral", "no user to show the reply to")
    try:
        await client.chat_postEphemeral(channel=channel, user=user_id, text=text, blocks=blocks,
                                        thread_ts=thread_ts)
    except (SlackApiError, SlackRequestError) as exc:
        raise _failed(exc, "chat.postEphemeral") from exc


async def upload_attachments(client: AsyncWebClient, channel: str, reply: Reply, thread_ts: str,
                             limiter: ChannelRateLimiter | None = None) -> None:
    """Upload every attachment of ``reply`` into the thread, in one files upload v2 call."""
    if not reply.attachments:
        return
    if limiter is not None:
        await limiter.wait(channel)
    uploads = [{"content": a.content, "filename": a.filename, "title": a.title}
               for a in reply.attachments]
    try:
        await client.files_upload_v2(channel=channel, thread_ts=thread_ts, file_uploads=uploads)
    except (SlackApiError, SlackRequestError) as exc:
        raise _failed(exc, "files.completeUploadExternal") from exc


async def post_reply(client: AsyncWebClient, channel: str, reply: Reply,
                     thread_ts: str | None = None, *, user_id: str | None = None,
                     response_url: str | None = None,
                     limiter: ChannelRateLimiter | None = None,
                     metadata: dict | None = None, files: bool = True) -> str:
    """Publish ``reply``; return the ts of the posted message ("" when ephemeral).

    ``metadata``: Slack message metadata the message carries (bot.slack.marks: which job
    step posted it, so a retry finds it instead of posting it again). ``files=False``
    leaves the attachments to the caller (:func:`attach_files`), e.g. to upload them only
    once it knows the message stays.

    A visible reply the bot cannot post (not a member of the channel) still
    reaches the asker through ``response_url``, with a hint to invite @heapbot.
    """
    if reply.ephemeral:
        await post_ephemeral(client, channel, reply, user_id=user_id, response_url=response_url,
                             thread_ts=thread_ts)
        return ""
    blocks, text = render(reply)
    if limiter is not None:
        await limiter.wait(channel)
    try:
        resp = await client.chat_postMessage(channel=channel, text=text, blocks=blocks,
                                             thread_ts=thread_ts, unfurl_links=False,
                                             unfurl_media=False, metadata=metadata)
    except (SlackApiError, SlackRequestError) as exc:
        failure = _failed(exc, "chat.postMessage")
        if failure.error in NOT_A_MEMBER and (response_url or user_id):
            await post_ephemeral(
                client, channel, reply, user_id=user_id, response_url=response_url,
                prefix="heapbot is not a member of this channel, so only you see this. "
                       "Invite it with `/invite @heapbot` to share replies and use threads.")
            return ""
        raise failure from exc
    ts = str(resp["ts"])
    if files:
        await attach_files(client, channel, reply, thread_ts or ts, limiter)
    return ts


async def attach_files(client: AsyncWebClient, channel: str, reply: Reply, thread_ts: str,
                       limiter: ChannelRateLimiter | None = None) -> None:
    """Upload the attachments of a posted reply into ``thread_ts``; a refusal is said there."""
    try:
        await upload_attachments(client, channel, reply, thread_ts, limiter)
    except SlackPublishError as exc:
        # The answer is posted; only its files are missing. Say so in its thread rather
        # than lose the ts (thread memory, follow-ups) by raising.
        await _note_missing_files(client, channel, reply, thread_ts, exc)


async def _note_missing_files(client: AsyncWebClient, channel: str, reply: Reply,
                              thread_ts: str, exc: SlackPublishError) -> None:
    """Best effort: a short thread message naming the files Slack refused, and why."""
    names = ", ".join(a.filename for a in reply.attachments)
    log.warning("reply posted in %s but its files were refused: %s", channel, exc.error)
    try:
        await client.chat_postMessage(
            channel=channel, thread_ts=thread_ts, unfurl_links=False, unfurl_media=False,
            text=f"heapbot could not attach {names}: {exc.user_message()}")
    except (SlackApiError, SlackRequestError) as second:
        log.warning("could not post the missing-files note either: %s", type(second).__name__)
