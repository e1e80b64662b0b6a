"""The composition root: one aiohttp app for Slack, webhooks, health and metrics.

``heapbot serve`` runs :func:`serve_cli`. Everything is wired here with plain
imports: the Slack side (bot.slack.server), the alert webhooks and the job
worker (bot.alerts), the ops routes (bot.ops) and logging (bot.logs). Nothing
below this module decides what else runs in the process.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from aiohttp import web

from bot.alerts import webhooks
from bot.alerts.worker import start_worker as start_alert_worker
from bot.errors import ConfigError
from bot.httpserver import GuardedSite, guarded_runner, quiet_accept_errors
from bot.logs import configure_logging
from bot.ops import register_routes as register_ops_routes
from bot.runtime import Runtime
from bot.settings import Settings, get_settings
from bot.slack.server import EVENTS_PATH, SLACK_STATE, check_slack_settings, install_slack

log = logging.getLogger(__name__)


def build_web_app(runtime: Runtime | None, settings: Settings, *,
                  socket_mode: bool | None = None, channel_interval: float = 1.0,
                  max_running: int = 8, start_worker: bool = True) -> web.Application:
    """The aiohttp app: Slack (HTTP or Socket Mode), webhooks, health and metrics routes.

    ``start_worker`` also runs this replica's job worker (bot.alerts.worker) beside the
    server. Without a Runtime (Slack-only tests) there are no webhooks and no worker.
    """
    app = web.Application(client_max_size=2 * 1024 * 1024)
    state = install_slack(app, runtime, settings, socket_mode=socket_mode,
                          channel_interval=channel_interval, max_running=max_running)
    internal = settings.internal_port is not None  # hooks and /metrics live there instead
    register_ops_routes(app, runtime, lambda: state.ready, metrics=not internal,
                        metrics_token=settings.metrics_token)
    if runtime is None:
        return app
    if not internal:
        webhooks.register_routes(app, runtime, settings)
    if start_worker:
        async def on_startup(app: web.Application) -> None:
            state.background.append(start_alert_worker(runtime, settings, state.deps.client))

        app.on_startup.append(on_startup)
    return app


def build_internal_app(runtime: Runtime, settings: Settings) -> web.Application:
    """What ``HEAPBOT_INTERNAL_PORT`` serves: /hooks/*, /metrics, /healthz and /readyz.

    A port apart from /slack/events, so a NetworkPolicy can keep it inside the cluster.
    """
    app = web.Application(client_max_size=2 * 1024 * 1024)
    register_ops_routes(app, runtime, None, metrics_token=settings.metrics_token)
    webhooks.register_routes(app, runtime, settings)
    return app


async def _listen(app: web.Application, settings: Settings, port: int, setting: str
                  ) -> web.AppRunner:
    """Serve ``app`` on ``port`` with header timeouts and a connection cap (bot.httpserver)."""
    runner, limiter = guarded_runner(app, settings.header_timeout_seconds,
                                     settings.max_connections)
    await runner.setup()
    try:
        await GuardedSite(runner, settings.host, port, limiter).start()
    except OSError as exc:
        await runner.cleanup()
        raise ConfigError(f"heapbot cannot listen on {settings.host}:{port} "
                          f"({exc.strerror or exc}).",
                          hint=f"Stop whatever uses that port or set {setting}.") from None
    return runner


def _preload() -> None:
    """Import what the first commands would import on the event loop, before serving.

    Handlers load a command's module on first use, httpcore imports h11 on the first
    download (and anyio its asyncio backend), numpy imports numpy.ma on the first merge: on
    a fresh process the first commands held /healthz up to 430 ms (bench/regex/run.py's
    warm-up round; 73 ms with this).
    """
    import importlib

    from handlers.commands import COMMANDS

    for module in sorted(set(COMMANDS.values())):
        importlib.import_module("handlers." + module)
    for module in ("h11", "numpy.ma", "httpcore._async.http11", "anyio._backends._asyncio"):
        importlib.import_module(module)


async def serve(settings: Settings, *, stop: asyncio.Event | None = None) -> None:
    """Run until SIGINT/SIGTERM (or ``stop`` is set): the server, then a clean shutdown."""
    check_slack_settings(settings)  # before starting Redis: a missing token is one message
    runtime = await Runtime.create(settings)
    if runtime.registry.found:  # which file: HEAPBOT_CONFIG, or found from here upwards
        log.info("registry %s: %d service(s)", runtime.registry.where, len(runtime.registry))
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    quiet_accept_errors(loop)
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    runners: list[web.AppRunner] = []
    try:
        await asyncio.to_thread(_preload)
        app = build_web_app(runtime, settings)
        runners.append(await _listen(app, settings, settings.port, "HEAPBOT_PORT"))
        if settings.internal_port is not None:
            internal = build_internal_app(runtime, settings)
            runners.append(await _listen(internal, settings, settings.internal_port,
                                         "HEAPBOT_INTERNAL_PORT"))
            log.info("webhooks and /metrics on %s:%s only", settings.host,
                     settings.internal_port)
        mode = "Socket Mode" if app[SLACK_STATE].socket_mode else \
            f"HTTP mode, Slack request URL http://<public host>:{settings.port}{EVENTS_PATH}"
        log.info("heapbot serving on %s:%s (%s)", settings.host, settings.port, mode)
        await stop.wait()
        log.info("shutting down: finishing running commands")
    finally:
        for runner in reversed(runners):
            await runner.cleanup()
        await runtime.close()


def serve_cli(args: argparse.Namespace) -> int:
    """``heapbot serve``: settings from the environment; config errors become one message."""
    settings = get_settings()
    configure_logging(settings)  # JSON/text lines with secrets redacted
    asyncio.run(serve(settings))
    return 0
