"""Socket Mode: Slack pushes envelopes over a WebSocket; no public URL needed.

Used when ``SLACK_APP_TOKEN`` (xapp-…) is set. The same AsyncApp and listeners
serve both modes; acks go back over the socket instead of in an HTTP response.
"""

from __future__ import annotations

import time

from slack_bolt.adapter.socket_mode.aiohttp import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest

from bot.metrics import ACK_SECONDS
from bot.settings import Settings


class TimedSocketModeHandler(AsyncSocketModeHandler):
    """Bolt's aiohttp Socket Mode handler, recording the ack latency of every envelope."""

    # Bolt's aiohttp handler narrows its base's client type to the aiohttp client; this
    # override takes the same type as the method it wraps.
    async def handle(  # type: ignore[override]
            self, client: SocketModeClient, req: SocketModeRequest) -> None:
        started = time.perf_counter()
        try:
            await super().handle(client, req)
        finally:
            ACK_SECONDS.observe(time.perf_counter() - started)


def build_socket_handler(app: AsyncApp, settings: Settings) -> TimedSocketModeHandler:
    token = settings.slack_app_token.get_secret_value() if settings.slack_app_token else ""
    return TimedSocketModeHandler(app, app_token=token, ping_interval=10)


async def connected(handler: TimedSocketModeHandler) -> bool:
    return bool(await handler.client.is_connected())
