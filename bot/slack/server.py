"""Slack's routes on heapbot's web app: ``POST /slack/events`` or Socket Mode.

HTTP mode serves ``POST /slack/events`` (slash commands, buttons and events all
arrive on this one URL, as the app manifest configures). With ``SLACK_APP_TOKEN``
set, Slack talks over Socket Mode instead and adds no route. The composition
root (bot/serve.py) builds the app and calls :func:`install_slack`.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.signature import SignatureVerifier

from bot import keys
from bot.metrics import ACK_SECONDS
from bot.settings import Settings
from bot.slack.app import build_bolt_app, signing_secret_of
from bot.slack.client import build_web_client
from bot.slack.deps import SlackDeps, build_deps
from bot.slack.seen import SharedSeenSet
from bot.slack.socket_mode import TimedSocketModeHandler, build_socket_handler
from bot.slack.threads import ThreadMemory

if TYPE_CHECKING:
    from bot.runtime import Runtime

log = logging.getLogger(__name__)

EVENTS_PATH = "/slack/events"
SIGNATURE_WINDOW_SECONDS = 5 * 60  # Bolt rejects timestamps older than this
_TIMESTAMP = re.compile(r"[0-9]{1,12}")


@dataclass(slots=True)
class SlackState:
    """What the server knows about its Slack side (for /readyz and shutdown)."""

    deps: SlackDeps
    bolt: AsyncApp
    socket_mode: bool
    ready: bool = False  # auth.test passed (HTTP) or the socket is connected
    socket_handler: TimedSocketModeHandler | None = None
    background: list[asyncio.Task[Any]] = field(default_factory=list)


SLACK_STATE = web.AppKey("heapbot_slack", SlackState)


class ReplayGuard:
    """Refuses a correctly signed request that was already received (a replay).

    Bolt checks the signature and the 5-minute timestamp window but would run
    the same captured request again; remembering each valid signature for the
    window closes that gap. Invalid signatures are left to Bolt (401) and never
    stored, so garbage cannot fill the set.
    """

    def __init__(self, signing_secret: str, redis: Any | None = None) -> None:
        self.verifier = SignatureVerifier(signing_secret)
        self.seen = SharedSeenSet(redis, keys.SLACK_SIGNATURE_SEEN, SIGNATURE_WINDOW_SECONDS + 60)

    async def is_replay(self, body: str, timestamp: str | None, signature: str | None) -> bool:
        if not timestamp or not signature:
            return False
        if not self.verifier.is_valid(body, timestamp, signature):
            return False
        return not await self.seen.first_time(signature)


def _events_handler(bolt: AsyncApp, guard: ReplayGuard, body_timeout: float) -> Any:
    async def slack_events(request: web.Request) -> web.Response:
        started = time.perf_counter()
        timestamp = request.headers.get("X-Slack-Request-Timestamp", "")
        if not _TIMESTAMP.fullmatch(timestamp):  # Bolt would int() it and answer 500
            return web.json_response({"error": "missing or invalid X-Slack-Request-Timestamp"},
                                     status=401)
        try:  # Slack signs and sends UTF-8 whatever charset the header names
            async with asyncio.timeout(body_timeout):  # a trickled body holds nothing
                body = (await request.read()).decode("utf-8")
        except UnicodeDecodeError:
            return web.json_response({"error": "the body is not UTF-8"}, status=400)
        except TimeoutError:
            response = web.json_response({"error": "the body did not arrive in time"},
                                         status=408)
            response.force_close()
            return response
        if await guard.is_replay(body, timestamp, request.headers.get("X-Slack-Signature")):
            log.warning("refused a replayed Slack request")
            return web.json_response({"error": "replayed request"}, status=401)
        bolt_request = AsyncBoltRequest(body=body, query=request.query_string,
                                        headers=request.headers)  # type: ignore[arg-type]
        bolt_response = await bolt.async_dispatch(bolt_request)
        response = await to_aiohttp_response(bolt_response)
        ACK_SECONDS.observe(time.perf_counter() - started)
        return response

    return slack_events


def install_slack(app: web.Application, runtime: Runtime | None, settings: Settings, *,
                  socket_mode: bool | None = None, channel_interval: float = 1.0,
                  max_running: int = 8) -> SlackState:
    """Put heapbot's Slack side on ``app``: ``POST /slack/events`` (HTTP mode) or Socket Mode.

    On startup it checks the token (auth.test) and connects Socket Mode; on shutdown
    it stops taking commands and finishes the running ones. Background tasks the
    composition root adds to ``state.background`` are stopped with the Slack ones.
    """
    if socket_mode is None:
        socket_mode = bool(settings.slack_app_token
                           and settings.slack_app_token.get_secret_value())
    client = build_web_client(settings)
    redis = runtime.redis if runtime is not None else None  # None: transport-only tests
    threads = ThreadMemory(redis)
    # Without a Runtime (the transport's own tests) only commands that need none answer.
    deps = build_deps(cast("Runtime", runtime), client, threads, channel_interval=channel_interval,
                      max_running=max_running, preflight_seconds=settings.slack_preflight_seconds)
    bolt = build_bolt_app(deps, settings, socket_mode=socket_mode)
    state = SlackState(deps=deps, bolt=bolt, socket_mode=socket_mode)
    app[SLACK_STATE] = state
    if not socket_mode:
        guard = ReplayGuard(signing_secret_of(settings), redis)
        app.router.add_post(EVENTS_PATH, _events_handler(bolt, guard,
                                                         settings.body_timeout_seconds))

    async def on_startup(app: web.Application) -> None:
        state.background.append(asyncio.create_task(_check_slack(state, settings),
                                                    name="slack-startup"))

    async def on_shutdown(app: web.Application) -> None:
        # Stop taking new commands first (the listening socket is already closed).
        if state.socket_handler is not None:
            await state.socket_handler.close_async()

    async def on_cleanup(app: web.Application) -> None:
        await deps.runner.drain()
        for task in state.background:
            task.cancel()
        if state.background:  # bounded: a stuck job must not hold up shutdown forever
            done, stuck = await asyncio.wait(state.background, timeout=30)
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    log.error("background task %s failed", task.get_name(),
                              exc_info=task.exception())
            if stuck:
                log.error("background tasks did not stop within 30 s: %s",
                          [task.get_name() for task in stuck])

    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    app.on_cleanup.append(on_cleanup)
    return state


async def _check_slack(state: SlackState, settings: Settings) -> None:
    """Check the bot token (auth.test), then connect Socket Mode when it is on."""
    try:
        await state.deps.client.auth_test()
    except (SlackApiError, SlackClientError, OSError) as exc:
        log.error("Slack auth.test failed (%s); check SLACK_BOT_TOKEN and SLACK_API_URL",
                  type(exc).__name__)
        return
    if state.socket_mode:
        handler = build_socket_handler(state.bolt, settings)
        state.socket_handler = handler
        await handler.connect_async()
        log.info("connected to Slack over Socket Mode")
    state.ready = True


def slack_state(app: web.Application) -> SlackState:
    return app[SLACK_STATE]


def check_slack_settings(settings: Settings) -> None:
    """Raise ConfigError naming the missing token or secret for the chosen mode."""
    build_web_client(settings)
    if not (settings.slack_app_token and settings.slack_app_token.get_secret_value()):
        signing_secret_of(settings)
