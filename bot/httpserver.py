"""heapbot's listening sockets: header timeouts, a connection cap, quiet accept errors.

aiohttp alone lets a client hold a connection forever with half a request head, and
accepts until the process runs out of file descriptors; then ``/healthz`` stops
answering and asyncio logs every failed accept. Here:

- a request head must arrive within ``header_timeout`` seconds of connecting (or of
  the previous response): aiohttp's keep-alive timer, which closes a connection that
  has no complete request, runs from the first byte on;
- at most ``max_connections`` connections are open, kept below the fd limit; a new
  connection beyond it closes the oldest one that is not running a request (a
  half-open or idle keep-alive one), so a flood of slow clients cannot lock out a
  ``/healthz`` probe, whose request arrives at once;
- accept errors (EMFILE and the like) are logged at most once per 10 s, with a count.

Body read timeouts live where bodies are read (webhooks, ``/slack/events``), since
each reads its body its own way.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

log = logging.getLogger(__name__)

FD_RESERVE = 256  # descriptors kept for Redis, targets, Slack, logs and accept bursts
ACCEPT_LOG_INTERVAL_SECONDS = 10.0


def connection_limit(wanted: int) -> int:
    """``wanted``, lowered so that open connections stay below the process's fd limit."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(8, min(wanted, soft - FD_RESERVE))


class _Connection(asyncio.Protocol):
    """aiohttp's protocol for one connection, counted by its :class:`ConnectionLimiter`."""

    def __init__(self, limiter: ConnectionLimiter, inner: asyncio.Protocol) -> None:
        self.limiter = limiter
        self.inner = inner
        self.transport: asyncio.Transport | None = None
        self.opened = False  # aiohttp saw it open (it was admitted)
        self.busy = 0  # requests running on it (set by the limiter's middleware)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if not self.limiter.admit(self):
            transport.abort()
            return
        self.opened = True
        self.inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.limiter.release(self)
        if self.opened:
            self.inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


class ConnectionLimiter:
    """Wraps aiohttp's protocol factory to cap open connections (see the module doc)."""

    def __init__(self, factory: Callable[[], asyncio.Protocol], limit: int) -> None:
        self.factory = factory
        self.limit = limit
        self.live: dict[_Connection, None] = {}  # insertion order: oldest first
        self.by_transport: dict[asyncio.BaseTransport, _Connection] = {}
        self.evicted = 0
        self.refused = 0

    def __call__(self) -> asyncio.Protocol:
        return _Connection(self, self.factory())

    def admit(self, conn: _Connection) -> bool:
        """Make room for ``conn``: evict the oldest idle connection, or refuse ``conn``."""
        if len(self.live) >= self.limit:
            victim = next((c for c in self.live if not c.busy), None)
            if victim is None:
                self.refused += 1
                return False
            self.release(victim)
            if victim.transport is not None:
                victim.transport.abort()
            self.evicted += 1
            if self.evicted in (1, 10, 100) or self.evicted % 1000 == 0:
                log.warning("HTTP connection limit %d reached: closed %d idle or half-open "
                            "connection(s) so far to let new ones in", self.limit, self.evicted)
        self.live[conn] = None
        if conn.transport is not None:
            self.by_transport[conn.transport] = conn
        return True

    def release(self, conn: _Connection) -> None:
        """Stop counting ``conn`` (closed, or being closed to make room)."""
        if conn.transport is not None:
            self.by_transport.pop(conn.transport, None)
        self.live.pop(conn, None)

    @web.middleware
    async def middleware(self, request: web.Request,
                         handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                         ) -> web.StreamResponse:
        """Mark the connection busy while a request runs, so it is never evicted mid-request."""
        conn = self.by_transport.get(request.transport) if request.transport else None
        if conn is not None:
            conn.busy += 1
        try:
            return await handler(request)
        finally:
            if conn is not None:
                conn.busy -= 1


class _AcceptErrorFilter:
    """A loop exception handler that logs accept failures once per interval, with a count."""

    def __init__(self, interval: float = ACCEPT_LOG_INTERVAL_SECONDS) -> None:
        self.interval = interval
        self.last = -interval
        self.suppressed = 0

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if "accept" not in str(context.get("message", "")):
            loop.default_exception_handler(context)
            return
        now = time.monotonic()
        if now - self.last < self.interval:
            self.suppressed += 1
            return
        exc = context.get("exception")
        more = f" ({self.suppressed} more since the last report)" if self.suppressed else ""
        log.error("accepting a connection failed: %s%s; heapbot keeps serving the open ones",
                  exc or context.get("message"), more)
        self.last, self.suppressed = now, 0


def quiet_accept_errors(loop: asyncio.AbstractEventLoop) -> None:
    """Install the rate-limited accept-error logging on ``loop``."""
    loop.set_exception_handler(_AcceptErrorFilter())


class GuardedSite(web.BaseSite):
    """A TCP site whose connections go through a :class:`ConnectionLimiter`."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int,
                 limiter: ConnectionLimiter, backlog: int = 128) -> None:
        super().__init__(runner, backlog=backlog)
        self._host = host
        self._port = port
        self.limiter = limiter

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self.limiter, self._host, self._port, backlog=self._backlog, reuse_address=True)


def guarded_runner(app: web.Application, header_timeout: float, max_connections: int
                   ) -> tuple[web.AppRunner, ConnectionLimiter]:
    """An AppRunner whose connections need a request head within ``header_timeout`` s.

    Call ``await runner.setup()``, then start a :class:`GuardedSite` with the limiter.
    """
    runner = web.AppRunner(app, access_log=None, keepalive_timeout=header_timeout)
    def protocol() -> asyncio.Protocol:
        assert runner.server is not None, "call runner.setup() before serving"
        return runner.server()

    limiter = ConnectionLimiter(protocol, connection_limit(max_connections))
    app.middlewares.insert(0, limiter.middleware)
    return runner, limiter
