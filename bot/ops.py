"""Operational HTTP routes: liveness, readiness and Prometheus metrics.

- ``GET /healthz``: the process is alive and its event loop answers (Kubernetes
  liveness; restarting would not fix anything else).
- ``GET /readyz``: this replica can do its job: Redis answers a PING and, when the
  server knows it, Slack accepted the token / the socket is connected. 503 with a
  JSON reason otherwise, so a load balancer routes around it.
- ``GET /metrics``: the default Prometheus registry (bot.metrics holds the metrics),
  as Prometheus text or OpenMetrics, as the scraper's Accept header asks. With
  ``HEAPBOT_METRICS_TOKEN`` set it needs that bearer token; with
  ``HEAPBOT_INTERNAL_PORT`` set it is served there, not on the public port.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import REGISTRY
from prometheus_client.exposition import choose_encoder
from pydantic import SecretStr

from bot.errors import HeapbotError
from bot.httpauth import credential_matches
from bot.logs import REQUEST_ID_HEADER, request_context, request_id_var

READY_TIMEOUT_SECONDS = 2.0
STARTED_AT = time.time()


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Give each HTTP request an id (the caller's X-Request-Id if sane) for its log lines."""
    with request_context(request.headers.get(REQUEST_ID_HEADER)):
        response = await handler(request)
        if not response.prepared:
            response.headers[REQUEST_ID_HEADER] = request_id_var.get()
        return response


def _json(body: dict[str, Any], status: int = 200) -> web.Response:
    return web.json_response(body, status=status, headers={"Cache-Control": "no-store"})


class Pingable(Protocol):
    """What readiness needs of the Runtime (a layer above this module): a store PING and
    the Redis topology behind it."""

    async def ping(self) -> float: ...

    async def topology(self) -> dict[str, Any]: ...


async def _redis_check(runtime: Pingable | None) -> dict[str, Any]:
    """``{"ok": bool, ...}`` for the Runtime's store; never raises."""
    if runtime is None:
        return {"ok": False, "reason": "heapbot has no snapshot store configured yet."}
    try:
        seconds = await asyncio.wait_for(runtime.ping(), READY_TIMEOUT_SECONDS)
    except HeapbotError as exc:
        return {"ok": False, "reason": exc.user_message()}
    except TimeoutError:
        return {"ok": False,
                "reason": f"Redis did not answer PING within {READY_TIMEOUT_SECONDS:g} s."}
    except Exception as exc:  # readiness must answer, whatever the store raised
        return {"ok": False, "reason": f"Redis check failed ({type(exc).__name__})."}
    check: dict[str, Any] = {"ok": True, "ping_ms": round(float(seconds) * 1000, 3)}
    try:
        state = await asyncio.wait_for(runtime.topology(), READY_TIMEOUT_SECONDS)
    except (HeapbotError, TimeoutError) as exc:
        return {"ok": False, "reason": getattr(exc, "message", "")
                or "Redis Cluster did not report its state in time."}
    check.update({k: v for k, v in state.items() if k != "ok"})
    if not state.get("ok", True):
        check.update(ok=False, reason=f"Redis Cluster state is {state.get('cluster_state')} "
                     f"({state.get('slots_fail', 0)} slots failing): a master is down and "
                     "no replica has taken over yet.")
    return check


def register_metrics(app: web.Application, token: SecretStr | None = None) -> None:
    """Add ``GET /metrics``; with ``token``, only for requests that send it (401 otherwise)."""

    async def metrics(request: web.Request) -> web.Response:
        if token is not None and not credential_matches(request, token.get_secret_value()):
            return _json({"error": "Send the token set in HEAPBOT_METRICS_TOKEN as "
                                   "`Authorization: Bearer <token>`."}, 401)
        # Prometheus text by default; OpenMetrics when the scraper asks for it.
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        body = await asyncio.to_thread(encoder, REGISTRY)
        return web.Response(body=body, headers={"Content-Type": content_type})

    app.router.add_get("/metrics", metrics)


def register_routes(app: web.Application, runtime: Pingable | None,
                    slack_ready: Callable[[], bool] | None = None, *,
                    metrics: bool = True, metrics_token: SecretStr | None = None) -> None:
    """Add /healthz, /readyz and (unless ``metrics`` is False) /metrics, and a request id."""
    if request_id_middleware not in app.middlewares:
        app.middlewares.append(request_id_middleware)

    async def healthz(request: web.Request) -> web.Response:
        return _json({"status": "ok", "uptime_seconds": round(time.time() - STARTED_AT, 1)})

    async def readyz(request: web.Request) -> web.Response:
        checks: dict[str, dict[str, Any]] = {"redis": await _redis_check(runtime)}
        if slack_ready is not None:
            ok = bool(slack_ready())
            checks["slack"] = {"ok": ok} if ok else {
                "ok": False,
                "reason": "Slack has not accepted the bot token yet (auth.test) or the "
                "Socket Mode connection is not open; check SLACK_BOT_TOKEN/SLACK_APP_TOKEN.",
            }
        failing = [name for name, check in checks.items() if not check["ok"]]
        if failing:
            reason = " ".join(checks[name]["reason"] for name in failing)
            return _json({"status": "not ready", "reason": reason, "checks": checks}, 503)
        return _json({"status": "ready", "checks": checks})

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    if metrics:
        register_metrics(app, metrics_token)
