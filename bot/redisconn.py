"""The one place that turns ``REDIS_URL`` into a redis-py client.

heapbot runs on three Redis topologies, chosen by the URL's scheme:

- one server: ``redis://``, ``rediss://`` (TLS) or ``unix://`` (and the embedded
  redis-server, which is a ``unix://`` socket in ``HEAPBOT_DATA_DIR``);
- Sentinel: ``redis+sentinel://[:password@]host:26379[,host:26379…]/MASTER[/DB]``;
- Cluster: ``redis+cluster://[:password@]host:port[,host:port…]`` (or ``rediss+cluster://``).

A URL is checked here first, so a typo is one :class:`ConfigError` naming the
variable and the accepted forms (never redis-py's traceback, never the password).
Every client gets the same retry policy: connection errors and timeouts are
retried with jittered exponential backoff, which rides over a restart of a
single server and over a Cluster or Sentinel failover (a replica promoted in a
few seconds); each retry and each error is counted in ``bot.metrics``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import SplitResult, unquote, urlsplit

from bot.errors import ConfigError

log = logging.getLogger(__name__)
T = TypeVar("T")

SINGLE, SENTINEL, CLUSTER = "single", "sentinel", "cluster"

SCHEMES = {
    "redis": SINGLE, "rediss": SINGLE, "unix": SINGLE,
    "redis+sentinel": SENTINEL,
    "redis+cluster": CLUSTER, "rediss+cluster": CLUSTER,
}

ACCEPTED_FORMS = (
    "redis://[:password@]host:6379/0, rediss://… (TLS), unix:///path/to/redis.sock, "
    "redis+sentinel://[:password@]host:26379[,host2:26379]/MASTER_NAME[/0], "
    "redis+cluster://[:password@]host:7000[,host2:7001] or rediss+cluster://…"
)

_USERINFO = re.compile(r"(//)[^/@]*@")


def redact(url: str) -> str:
    """The URL with any user:password replaced, fit for a message or a log line."""
    return _USERINFO.sub(r"\1[REDACTED]@", url)


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """A checked ``REDIS_URL``: which topology, which hosts, what to show people."""

    url: str
    topology: str  # single | sentinel | cluster
    hosts: tuple[tuple[str, int], ...] = ()
    master: str = ""  # Sentinel master name
    db: int = 0
    password: str | None = field(default=None, repr=False)
    username: str | None = field(default=None, repr=False)
    tls: bool = False

    @property
    def location(self) -> str:
        """Where the data lives, without credentials (for messages)."""
        if self.topology == SENTINEL:
            hosts = ",".join(f"{h}:{p}" for h, p in self.hosts)
            return f"Sentinel master {self.master} via {hosts}"
        if self.topology == CLUSTER:
            return "Redis Cluster via " + ",".join(f"{h}:{p}" for h, p in self.hosts)
        parts = urlsplit(self.url)
        if parts.scheme == "unix":
            return parts.path
        return f"{parts.hostname or 'localhost'}:{parts.port or 6379}/{self.db}"


def _bad(url: str, reason: str) -> ConfigError:
    return ConfigError(
        f"REDIS_URL `{redact(url)[:200]}` is not a Redis URL heapbot can use: {reason}.",
        hint=f"Write one of: {ACCEPTED_FORMS}; or unset REDIS_URL to use the embedded "
        "redis-server.",
    )


def _hosts(url: str, parts: SplitResult, default_port: int) -> tuple[tuple[str, int], ...]:
    """host:port pairs of a comma-separated netloc (Sentinel, Cluster)."""
    text = parts.netloc.rsplit("@", 1)[-1]
    out = []
    for item in text.split(","):
        item = item.strip()
        if item.startswith("["):  # [::1]:7000
            host, _, rest = item[1:].partition("]")
            port_text = rest.removeprefix(":")
        else:
            host, sep, port_text = item.rpartition(":")
            if not sep:
                host, port_text = item, ""
        if not host:
            raise _bad(url, f"`{item or '(empty)'}` has no host name")
        try:
            port = int(port_text) if port_text else default_port
        except ValueError:
            raise _bad(url, f"the port `{port_text[:20]}` of `{host[:60]}` is not a number") \
                from None
        if not 0 < port < 65536:
            raise _bad(url, f"the port {port} of `{host[:60]}` is out of range")
        out.append((host, port))
    return tuple(out)


def _db(url: str, text: str) -> int:
    try:
        db = int(text)
    except ValueError:
        raise _bad(url, f"the database `{text[:20]}` is not a number") from None
    if db < 0:
        raise _bad(url, f"the database {db} is negative")
    return db


def parse_redis_url(url: str) -> RedisTarget:
    """Check ``url`` and say which topology it names; ConfigError for anything else."""
    url = url.strip()
    if "://" not in url:
        raise _bad(url, "it has no scheme (like redis://)")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    topology = SCHEMES.get(scheme)
    if topology is None:
        raise _bad(url, f"`{scheme[:30]}://` is not a scheme heapbot knows")
    password = unquote(parts.password) if parts.password else None
    username = unquote(parts.username) if parts.username else None
    tls = scheme.startswith("rediss")
    if scheme == "unix":
        if not parts.path:
            raise _bad(url, "a unix:// URL needs the socket's path, like unix:///run/redis.sock")
        return RedisTarget(url, SINGLE, password=password, username=username)
    if topology == SINGLE:
        if not parts.hostname:
            raise _bad(url, "it has no host name")
        try:
            port = parts.port or 6379
        except ValueError:
            port_text = parts.netloc.rsplit("@", 1)[-1].rpartition(":")[2]
            raise _bad(url, f"the port `{port_text[:20]}` is not a number") from None
        path = parts.path.strip("/")
        db = _db(url, path) if path else 0
        return RedisTarget(url, SINGLE, ((parts.hostname, port),), db=db, password=password,
                           username=username, tls=tls)
    if topology == SENTINEL:
        hosts = _hosts(url, parts, 26379)
        segments = [p for p in parts.path.split("/") if p]
        if not segments:
            raise _bad(url, "it names no Sentinel master (…/MASTER_NAME/0)")
        db = _db(url, segments[1]) if len(segments) > 1 else 0
        return RedisTarget(url, SENTINEL, hosts, master=unquote(segments[0]), db=db,
                           password=password, username=username, tls=tls)
    hosts = _hosts(url, parts, 6379)
    path = parts.path.strip("/")
    if path and path != "0":
        raise _bad(url, "a Redis Cluster has only database 0")
    return RedisTarget(url, CLUSTER, hosts, password=password, username=username, tls=tls)


def retry_policy(retries: int = 2, cap: float = 0.5, base: float = 0.05) -> Any:
    """Jittered exponential backoff on connection errors and timeouts, counted by kind."""
    from redis.asyncio.retry import Retry
    from redis.backoff import ExponentialWithJitterBackoff

    class _Retry(CountingRetry, Retry):
        pass

    return _Retry(ExponentialWithJitterBackoff(cap=cap, base=base), retries)


@dataclass(slots=True)
class Connection:
    """A redis.asyncio client for one topology, and what else must be closed with it."""

    client: Any  # redis.asyncio.Redis or redis.asyncio.cluster.RedisCluster
    target: RedisTarget
    extra: list[Any] = field(default_factory=list)  # Sentinel connections

    @property
    def is_cluster(self) -> bool:
        return self.target.topology == CLUSTER

    async def aclose(self) -> None:
        await self.client.aclose()
        for other in self.extra:
            await other.aclose()


def _driver_info_option() -> dict[str, Any]:
    """redis-py 8 looks its own version up in package metadata (~2 ms, on the event loop)
    for every new connection, so a burst of commands growing the pool blocked the loop for
    100-200 ms (found by bench/load/run.py). Resolve it once per process instead."""
    from importlib import metadata

    try:
        from redis.driver_info import DriverInfo

        return {"driver_info": DriverInfo(name="redis-py", lib_version=metadata.version("redis"))}
    except (ImportError, metadata.PackageNotFoundError):  # older redis-py: once at import
        return {}


_DRIVER_INFO = _driver_info_option()

# A bounded pool: a burst of 100 Slack requests otherwise opens 100 connections at once
# (each a handshake of ~6 commands on the event loop; bench/load/run.py).
MAX_CONNECTIONS = 32
# A Cluster or Sentinel failover takes a few seconds (node timeout + election): retries
# spread over ~6 s ride over it; a single server gets two quick ones (a restart), more
# would keep a Slack user waiting when Redis is really down.
FAILOVER_RETRIES = 10


# A value bigger than this goes to the socket a piece at a time (PiecewiseSend).
SEND_PIECE_BYTES = 1 << 20


class PiecewiseSend:
    """Mixin for redis-py's asyncio connections: a command's big values go to the socket
    1 MiB at a time, each piece drained before the next.

    redis-py hands asyncio a command as a list of parts (a big value is a part of its own,
    not copied), but Python 3.11's ``StreamWriter.writelines`` joins the list into one
    bytes object and the transport copies what the socket did not take at once: storing
    one 60 MiB profile peaked at 4x its size (bench/fanout/download.py --instances 1).
    This replaces redis-py's ``_send_packed_command`` (what ``send_packed_command`` awaits
    under ``socket_timeout``, which ``connect`` always sets), so timeouts, errors and the
    disconnect after them stay redis-py's; tests/store/test_store_staging.py fails if
    redis-py stops calling it.
    """

    _writer: Any

    async def _send_packed_command(self, command: Iterable[bytes]) -> None:
        writer = self._writer
        group: list[bytes] = []  # small parts, written together as redis-py would
        size = 0
        for part in command:
            if size + len(part) > SEND_PIECE_BYTES and group:
                writer.writelines(group)  # one join of at most 1 MiB
                await writer.drain()
                group, size = [], 0
            if len(part) <= SEND_PIECE_BYTES:
                group.append(part)
                size += len(part)
                continue
            for start in range(0, len(part), SEND_PIECE_BYTES):
                writer.write(part[start:start + SEND_PIECE_BYTES])  # a 1 MiB copy at most
                await writer.drain()
        if group:
            writer.writelines(group)
        await writer.drain()


_PIECEWISE: dict[type, Any] = {}


def piecewise(connection_class: type) -> Any:
    """``connection_class`` with :class:`PiecewiseSend` in front (one class per base)."""
    if issubclass(connection_class, PiecewiseSend):
        return connection_class
    if connection_class not in _PIECEWISE:
        _PIECEWISE[connection_class] = type(
            f"Piecewise{connection_class.__name__}", (PiecewiseSend, connection_class), {})
    return _PIECEWISE[connection_class]


@functools.cache
def _cluster_class() -> type:
    """redis-py's RedisCluster, with backoff between retries of a command.

    redis-py retries a command on a connection error at once (re-reading the slot map
    each time), so all its tries can fail inside the seconds a failover takes. Each
    command here gets those tries again, spaced by jittered backoff (:func:`retrying`),
    until a replica has been promoted.
    """
    from redis.asyncio.cluster import RedisCluster

    class BackoffRedisCluster(RedisCluster):
        async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
            parent = super().execute_command
            return await retrying(str(args[0]) if args else "command",
                                  lambda: parent(*args, **kwargs))

    return BackoffRedisCluster


def connect(url: str) -> Connection:
    """A client for ``url`` (checked by :func:`parse_redis_url` first)."""
    import redis.asyncio as aioredis

    target = parse_redis_url(url)
    options: dict[str, Any] = {
        "socket_connect_timeout": 5, "socket_timeout": 30, **_DRIVER_INFO,
    }
    if target.topology == CLUSTER:
        from redis.asyncio.cluster import ClusterNode

        cluster = _cluster_class()(
            startup_nodes=[ClusterNode(host, port) for host, port in target.hosts],
            password=target.password, username=target.username, ssl=target.tls,
            retry=retry_policy(FAILOVER_RETRIES, cap=1.0, base=0.1),
            max_connections=MAX_CONNECTIONS, **options)
        # redis-py fixes the cluster's connection class; nodes found later are built from
        # these kwargs, the startup nodes already exist
        kwargs = cluster.connection_kwargs
        kwargs["connection_class"] = piecewise(kwargs["connection_class"])
        for node in cluster.nodes_manager.startup_nodes.values():
            node.connection_class = piecewise(node.connection_class)
        return Connection(cluster, target)
    options["health_check_interval"] = 30
    if target.topology == SENTINEL:
        from redis.asyncio.sentinel import Sentinel

        sentinel = Sentinel(list(target.hosts), socket_timeout=5, socket_connect_timeout=5)
        client = sentinel.master_for(
            target.master, password=target.password, username=target.username, db=target.db,
            retry=retry_policy(FAILOVER_RETRIES, cap=1.0, base=0.1), **options)
        pool = client.connection_pool
        pool.connection_class = piecewise(pool.connection_class)
        return Connection(client, target, list(sentinel.sentinels))
    try:
        pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=MAX_CONNECTIONS, timeout=10, retry=retry_policy(), **options)
    except ValueError as exc:  # what parse_redis_url let through and redis-py refuses
        raise _bad(url, str(exc)[:120].rstrip(".")) from None
    pool.connection_class = piecewise(pool.connection_class)
    return Connection(aioredis.Redis.from_pool(pool), target)


class CountingRetry:
    """Mixin for redis-py's Retry: counts each retried failure by kind (bot.metrics)."""

    async def call_with_retry(self, do: Any, fail: Any, is_retryable: Any = None,
                              with_failure_count: bool = False) -> Any:
        async def counted(error: Exception, *rest: Any) -> None:
            from bot.metrics import REDIS_RETRIES, redis_error_kind  # on a retry only

            REDIS_RETRIES.labels(redis_error_kind(error)).inc()
            await fail(error, *rest)

        return await super().call_with_retry(  # type: ignore[misc]
            do, counted, is_retryable, with_failure_count)


@contextlib.asynccontextmanager
async def store_errors(operation: str, location: str = "Redis") -> AsyncIterator[None]:
    """The store boundary: every Redis failure leaves as a StoreError a person can act on.

    Connection failures, timeouts and a cluster without a master for a slot are
    :class:`StoreUnavailableError` ("cannot be reached … works again once Redis is
    back"); anything else Redis refuses is a :class:`StoreError` naming the operation.
    Each is counted in ``heapbot_redis_errors_total{operation,kind}``; the log names
    the kind, never the values involved.
    """
    from redis.exceptions import RedisError

    from bot.errors import HeapbotError, StoreError, StoreUnavailableError

    try:
        yield
    except HeapbotError:
        raise
    except (RedisError, OSError) as exc:
        from bot.metrics import redis_error, redis_error_kind  # on error only: CLI start-up

        redis_error(operation, exc)
        kind = redis_error_kind(exc)
        log.warning("redis %s failed: %s (%s)", operation, type(exc).__name__, kind)
        if kind in ("connection", "timeout", "cluster_down", "busy", "readonly"):
            raise StoreUnavailableError(
                f"heapbot's history store (Redis at {location}) cannot be reached.",
                hint="Commands that need stored captures will work again once Redis is back; "
                "check REDIS_URL or the embedded redis-server in HEAPBOT_DATA_DIR.",
            ) from None
        raise StoreError(
            f"heapbot's history store (Redis at {location}) failed to {operation}: "
            f"{type(exc).__name__}.",
            hint="Try again; if it persists, check the Redis server's log.",
        ) from None


async def retrying(operation: str, call: Callable[[], Awaitable[T]], *,
                   attempts: int = 8, base: float = 0.2, cap: float = 2.0) -> T:
    """``call()`` again with jittered backoff while Redis is unreachable or failing over.

    For whole operations that are safe to repeat (a MULTI/EXEC that writes the same
    values, a SET NX lease): the client's own retries cover one command, this
    covers a transaction whose connection died at EXEC during a failover.
    """
    import random

    from redis.exceptions import RedisError

    for attempt in range(1, attempts + 1):
        try:
            return await call()
        except (RedisError, OSError) as exc:
            from bot.metrics import REDIS_RETRIES, redis_error_kind

            kind = redis_error_kind(exc)
            if attempt == attempts or kind not in ("connection", "timeout", "cluster_down",
                                                   "moved", "readonly", "busy"):
                raise
            REDIS_RETRIES.labels(kind).inc()
            log.info("redis %s: %s, retry %d", operation, kind, attempt)
            await asyncio.sleep(random.uniform(0, min(cap, base * 2 ** attempt)))
    raise AssertionError("unreachable")
