"""Fetch heap, goroutine and MemStats from every instance of a service.

Every instance is fetched concurrently (bounded), each request has its own
deadline and size cap, and one instance failing never fails the capture: the
result lists each instance with a reason a person can act on. Only when no
instance yields a heap profile does the capture fail, with a summary of why.

Safety: redirects are followed only to the same scheme, host and port (a
profiled service must not be able to point heapbot at another host), and auth
headers come from environment variables and are never logged or stored.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections import Counter, OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpx

from bot import workpool
from bot.analysis.leaks.observe import HeapFacts, heap_facts
from bot.errors import CaptureError, HeapbotError
from bot.logs import configured_secrets, redact
from bot.registry import ServiceConfig

if TYPE_CHECKING:
    from bot.pprof import Profile

log = logging.getLogger(__name__)

MAX_REDIRECTS = 5
# goroutine and heap?debug=1 are read for counts and the MemStats block: they get a
# smaller cap than the heap profile itself (issue 17 item 12)
TEXT_ENDPOINT_BYTES = 16 * 1024 * 1024
_BUDGET_BLOCK = 1 << 20  # bytes reserved from the global budget at a time
POOL_FROM_INSTANCES = 4  # captures of fewer instances decode in a thread
USER_AGENT = "heapbot (+https://github.com/heapbot)"
KINDS = ("heap", "goroutine", "memstats")


class FetchFailure(Exception):
    """One request failed; the message is the human reason shown per instance."""


@dataclass(slots=True)
class InstanceResult:
    """What one instance answered. ``ok`` means a usable heap profile arrived."""

    target: str  # base URL actually fetched (after DNS expansion)
    ok: bool
    error: str | None = None
    # bodies as downloaded: a bytearray each (held once, see _read_body), never copied
    heap: bytes | bytearray | None = None
    goroutine: bytes | bytearray | None = None
    memstats_text: str | None = None
    elapsed: float = 0.0
    source: str = ""  # the registry target this came from (differs for dns+http)
    warnings: list[str] = field(default_factory=list)  # goroutine/memstats problems
    heap_profile: Profile | None = None  # parsed heap until folded into the capture's merge
    build_id: str = ""  # the heap profile's main build id (kept after the profile is dropped)
    heap_facts: HeapFacts | None = None  # digest and leading functions, for leak analysis
    # /goroutineleak (Go ≥ 1.26), fetched with a fresh heap
    goroutineleak: bytes | bytearray | None = None
    fresh: bool = False  # the heap was fetched with ?gc=1


@dataclass(slots=True)
class CaptureResult:
    """Every instance's outcome for one capture of one service."""

    service: str
    instances: list[InstanceResult]
    started_at: float  # unix seconds
    elapsed: float
    heap: Profile | None = None  # every instance's heap, merged as each one arrived

    @property
    def ok_instances(self) -> list[InstanceResult]:
        return [i for i in self.instances if i.ok]

    @property
    def failed_instances(self) -> list[InstanceResult]:
        return [i for i in self.instances if not i.ok]

    @property
    def partial(self) -> bool:
        return bool(self.failed_instances) and bool(self.ok_instances)


def summarize_failures(instances: Sequence[InstanceResult]) -> str:
    """"2× connection refused (…); timeout: …" for a failed capture."""
    # reasons quoting a ProfileError end in "."; the caller adds its own full stop
    reasons = Counter((i.error or "unknown error").rstrip(".") for i in instances if not i.ok)
    return "; ".join(f"{count}× {reason}" if count > 1 else reason
                     for reason, count in reasons.most_common())


def _same_origin(a: str, b: str) -> bool:
    pa, pb = urlsplit(a), urlsplit(b)
    default = {"http": 80, "https": 443}
    return (
        pa.scheme == pb.scheme
        and (pa.hostname or "").lower() == (pb.hostname or "").lower()
        and (pa.port or default.get(pa.scheme)) == (pb.port or default.get(pb.scheme))
    )


def _looks_like_html(data: bytes | bytearray) -> bool:
    head = data[:512].lstrip().lower()
    return head.startswith((b"<!doctype html", b"<html", b"<head", b"<body", b"<?xml", b"<"))


def _format_bytes(n: int) -> str:
    return f"{n / (1024 * 1024):.0f} MiB" if n >= 1024 * 1024 else f"{n} bytes"


def _path_of(url: str) -> str:
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


class Capturer:
    """Captures services over HTTP, with one small connection pool per instance.

    One shared pool of ~100 connections made httpcore re-scan every pooled
    connection for each queued request (encode/httpcore#1035): ~30 % of the
    event loop's CPU under 100 concurrent commands (bench/load/run.py). A pool
    per origin (scheme, host, port) holds only that instance's few connections.
    """

    PER_ORIGIN_CONNECTIONS = 6  # heap, goroutine and memstats of two captures at once
    MAX_ORIGINS = 256  # idle pools beyond this are closed (dns+ targets change over time)

    def __init__(
        self,
        *,
        max_concurrency: int = 32,
        retries: int = 2,
        backoff_seconds: float = 0.2,
        environ: Mapping[str, str] | None = None,
        verify: bool | str = True,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.retries = retries
        self.backoff_seconds = backoff_seconds
        self.environ = environ
        self._limit = asyncio.Semaphore(max_concurrency)
        # one TLS context for every pool: building one reads the CA bundle (~60 ms)
        self._ssl_context = httpx.create_ssl_context(verify=verify, trust_env=False)
        self._transport = transport
        self._clients: OrderedDict[str, httpx.AsyncClient] = OrderedDict()
        self._in_flight: Counter[str] = Counter()
        self._closing: set[asyncio.Task[None]] = set()

    def _new_client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            follow_redirects=False,
            verify=self._ssl_context,
            transport=self._transport,
            headers={"User-Agent": USER_AGENT},
            limits=httpx.Limits(max_connections=self.PER_ORIGIN_CONNECTIONS,
                                max_keepalive_connections=self.PER_ORIGIN_CONNECTIONS),
            trust_env=False,  # never route pprof traffic (and credentials) via an env proxy
        )

    def _client_for(self, url: str) -> tuple[str, httpx.AsyncClient]:
        """The pool of ``url``'s origin (one pool for everything with a custom transport)."""
        parts = urlsplit(url)
        origin = "" if self._transport is not None else \
            f"{parts.scheme}://{(parts.netloc.rsplit('@', 1)[-1]).lower()}"
        client = self._clients.get(origin)
        if client is None:
            client = self._clients[origin] = self._new_client()
            self._evict_idle()
        else:
            self._clients.move_to_end(origin)
        return origin, client

    def _evict_idle(self) -> None:
        """Close the least recently used idle pools beyond MAX_ORIGINS."""
        for origin in list(self._clients):
            if len(self._clients) <= self.MAX_ORIGINS:
                return
            if self._in_flight[origin]:
                continue
            task = asyncio.create_task(self._clients.pop(origin).aclose())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def aclose(self) -> None:
        clients = list(self._clients.values())
        self._clients.clear()
        await asyncio.gather(*(c.aclose() for c in clients), *self._closing,
                             return_exceptions=True)

    async def capture(self, service: ServiceConfig, *, fresh: bool | None = None
                      ) -> CaptureResult:
        """Fetch every instance; raises CaptureError only when none answered usefully.

        ``fresh`` asks for ``heap?gc=1`` (a GC on the target right before the heap
        profile) and for the proven goroutine leaks; None follows ``service.gc``.
        """
        fresh = bool(service.gc) if fresh is None else fresh
        headers = service.request_headers(self.environ)  # ConfigError if an env var is unset
        started = time.time()
        clock = time.monotonic()
        bases = await self.expand_targets(service)
        per_service = asyncio.Semaphore(service.concurrency)
        # worker processes pay off from a few instances up (bench/fanout/run.py)
        folder = _Folder(pool_ok=len(bases) >= POOL_FROM_INSTANCES)
        if folder.pool_ok:
            workpool.warm()  # workers start while the profiles download

        async def one(base: str, source: str, dns_error: str | None) -> InstanceResult:
            if dns_error:
                return InstanceResult(target=base, ok=False, error=dns_error, source=source)
            async with per_service, self._limit:
                return await self._capture_instance(service, base, source, headers, folder,
                                                    fresh=fresh)

        instances = list(await asyncio.gather(*(one(*b) for b in bases)))
        result = CaptureResult(service=service.name, instances=instances, started_at=started,
                               elapsed=time.monotonic() - clock, heap=folder.result())
        if not result.ok_instances:
            raise CaptureError(
                f"No instance of `{service.name}` answered with a heap profile "
                f"({len(instances)} tried): {summarize_failures(instances)}.",
                hint="Check that the targets in the registry are right and that the service "
                "imports net/http/pprof on that port.",
            )
        for bad in result.failed_instances:
            log.warning("capture %s: instance %s failed: %s", service.name, bad.target, bad.error)
        return result

    async def expand_targets(self, service: ServiceConfig) -> list[tuple[str, str, str | None]]:
        """(base URL, registry target, DNS error) per instance; dns+ targets resolve now."""
        out: list[tuple[str, str, str | None]] = []
        loop = asyncio.get_running_loop()
        for target in service.targets:
            parts = urlsplit(target)
            if not parts.scheme.startswith("dns+"):
                out.append((target, target, None))
                continue
            scheme = parts.scheme.removeprefix("dns+")
            host, port = parts.hostname or "", parts.port
            try:
                infos = await asyncio.wait_for(
                    loop.getaddrinfo(host, port, type=socket.SOCK_STREAM),
                    timeout=service.timeout_seconds,
                )
            except (OSError, TimeoutError) as exc:
                reason = "timed out" if isinstance(exc, TimeoutError) else (
                    exc.strerror or str(exc))
                out.append((target, target, f"DNS name {host} did not resolve ({reason})"))
                continue
            addresses = sorted({str(info[4][0]) for info in infos})  # (an IP: str for INET*)
            if not addresses:
                out.append((target, target, f"DNS name {host} has no addresses"))
            for address in addresses:
                netloc = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
                out.append((urlunsplit((scheme, netloc, parts.path, "", "")), target, None))
        return out

    async def _capture_instance(self, service: ServiceConfig, base: str, source: str,
                                headers: dict[str, str], folder: _Folder | None = None, *,
                                fresh: bool = False) -> InstanceResult:
        clock = time.monotonic()
        prefix = base.rstrip("/") + service.pprof_prefix
        heap_url = prefix + "/heap" + ("?gc=1" if fresh else "")
        urls = {"heap": heap_url, "goroutine": prefix + "/goroutine",
                "memstats": prefix + "/heap?debug=1",
                "goroutineleak": prefix + "/goroutineleak"}

        async def get(kind: str) -> bytearray | FetchFailure:
            limit = service.max_profile_bytes if kind == "heap" else \
                min(service.max_profile_bytes, TEXT_ENDPOINT_BYTES)
            try:
                return await self._fetch(service, urls[kind], headers, limit)
            except FetchFailure as failure:
                return failure

        async def heap_then_memstats(
                ) -> tuple[bytearray | FetchFailure, bytearray | FetchFailure]:
            # MemStats after the heap: its NumGC/LastGC name the GC the profile is from.
            first = await get("heap")
            return first, await get("memstats")

        (heap, memstats), goroutine, leaked = await asyncio.gather(
            heap_then_memstats(), get("goroutine"),
            get("goroutineleak") if fresh else asyncio.sleep(0, FetchFailure("not asked")))
        result = InstanceResult(target=base, ok=False, source=source, fresh=fresh)
        if (not isinstance(leaked, FetchFailure) and not _looks_like_html(leaked)
                and leaked[:2] == b"\x1f\x8b"):
            result.goroutineleak = leaked  # a gzipped profile: the target serves it
        if isinstance(heap, FetchFailure):
            result.error = str(heap)
        elif _looks_like_html(heap):
            result.error = f"not a profile (got an HTML page from {_path_of(heap_url)})"
        else:
            try:
                if folder is None:
                    result.heap_profile = await workpool.decode_heap(heap,
                                                                     service.max_profile_bytes)
                    result.build_id = result.heap_profile.main_build_id
                    result.heap_facts = await asyncio.to_thread(heap_facts, result.heap_profile)
                else:
                    result.build_id, result.heap_facts = await folder.add(
                        heap, service.max_profile_bytes)
                result.heap, result.ok = heap, True
            except HeapbotError as exc:
                result.error = f"not a heap profile: {target_text(exc.message, headers)}"

        if isinstance(goroutine, FetchFailure):
            result.warnings.append(f"goroutine: {goroutine}")
        elif _looks_like_html(goroutine):
            result.warnings.append("goroutine: not a profile (got an HTML page)")
        else:
            result.goroutine = goroutine

        if isinstance(memstats, FetchFailure):
            result.warnings.append(f"memstats: {memstats}")
        else:
            text = memstats.decode("utf-8", errors="replace")
            if "# runtime.MemStats" in text:
                result.memstats_text = text
            elif _looks_like_html(memstats):
                result.warnings.append("memstats: got an HTML page, not heap?debug=1 text")
            else:
                result.warnings.append("memstats: heap?debug=1 has no # runtime.MemStats block")
        result.elapsed = time.monotonic() - clock
        return result

    async def _fetch(self, service: ServiceConfig, url: str, headers: dict[str, str],
                     limit: int | None = None) -> bytearray:
        """GET with deadline, size cap, same-origin redirects and connect retries."""
        attempt = 0
        while True:
            try:
                async with asyncio.timeout(service.timeout_seconds):
                    return await self._fetch_once(service, url, headers,
                                                  limit or service.max_profile_bytes)
            except TimeoutError:
                raise FetchFailure(
                    f"timeout: no complete answer within {service.timeout_seconds:g}s "
                    f"from {_path_of(url)}"
                ) from None
            except httpx.ConnectError as exc:
                if attempt >= self.retries:
                    raise FetchFailure(_connect_reason(exc)) from None
            except httpx.TimeoutException:
                raise FetchFailure(
                    f"timeout: no answer within {service.timeout_seconds:g}s"
                ) from None
            except httpx.HTTPError as exc:
                raise FetchFailure(f"HTTP error: {type(exc).__name__}") from None
            attempt += 1
            await asyncio.sleep(self.backoff_seconds * (2 ** (attempt - 1)))

    async def _fetch_once(self, service: ServiceConfig, url: str,
                          headers: dict[str, str], limit: int) -> bytearray:
        origin = url
        pool, client = self._client_for(url)  # redirects stay on this origin
        self._in_flight[pool] += 1
        try:
            return await self._fetch_on(client, service, url, origin, headers, limit)
        finally:
            self._in_flight[pool] -= 1
            if not self._in_flight[pool]:
                del self._in_flight[pool]

    async def _fetch_on(self, client: httpx.AsyncClient, service: ServiceConfig, url: str,
                        origin: str, headers: dict[str, str], limit: int) -> bytearray:
        for _ in range(MAX_REDIRECTS + 1):
            timeout = httpx.Timeout(service.timeout_seconds)
            async with client.stream("GET", url, headers=headers,
                                     timeout=timeout) as response:
                status = response.status_code
                if status in (301, 302, 303, 307, 308):
                    location = response.headers.get("location", "")
                    target = urljoin(url, location)
                    if not location or not _same_origin(origin, target):
                        raise FetchFailure(
                            f"refused a redirect to another host "
                            f"({target_text(_origin_text(target), headers)}); "
                            "heapbot only follows redirects on the same scheme, host and port"
                        )
                    url = target
                    continue
                if status != 200:
                    raise FetchFailure(await _status_reason(service, response, url, headers))
                declared = response.headers.get("content-length", "")
                size = int(declared) if declared.isdigit() else None
                if size is not None and size > limit:
                    raise FetchFailure(_too_large(url, limit))
                # Content-Length is the body's size only when it arrives as sent (httpx
                # inflates a Content-Encoding: gzip body as it reads)
                encoding = response.headers.get("content-encoding", "").strip().lower()
                return await _read_body(response, url, limit,
                                        size if encoding in ("", "identity") else None)
        raise FetchFailure(f"too many redirects (more than {MAX_REDIRECTS}) from {_path_of(url)}")


async def _read_body(response: httpx.Response, url: str, limit: int,
                     expected: int | None = None) -> bytearray:
    """The body, up to ``limit``, held once and counted against the global byte budget.

    Bytes are reserved from ``workpool.BYTES`` a block at a time, before they are
    held, and returned when the download is over: however many instances and
    commands run at once, downloads hold at most the budget (a slow endless target
    waits for room instead of growing the bot's memory).

    The bytes land in one bytearray, which the decoder and the store take as it is:
    allocated once at ``expected`` (the Content-Length) when known, else grown in
    place as chunks arrive (Go's net/http sends a profile chunked). A list of chunks
    joined at the end held every body twice for a moment.
    """
    body = bytearray()
    size = reserved = 0
    done = False
    try:
        if expected:
            while expected > reserved:
                await workpool.BYTES.reserve(_BUDGET_BLOCK, timeout=None)
                reserved += _BUDGET_BLOCK
            body = bytearray(expected)
        async for chunk in response.aiter_bytes():
            end = size + len(chunk)
            if end > limit:
                raise FetchFailure(_too_large(url, limit))
            while end > reserved:
                await workpool.BYTES.reserve(_BUDGET_BLOCK, timeout=None)
                reserved += _BUDGET_BLOCK
            body[size:end] = chunk  # in place; past the end (or no Content-Length) it grows
            size = end
        del body[size:]  # a body shorter than its Content-Length (httpx refuses those)
        done = True
        return body
    finally:
        # A failed or cancelled download's bytes go now: the exception's traceback keeps
        # this frame (and the body) alive until the cyclic GC gets to it, long after the
        # budget was released (issue 17 item 12: RSS was 2.6x the budget).
        if not done:
            body.clear()
        if reserved:
            workpool.BYTES.release(reserved)


class _Folder:
    """One capture's streaming merge: each heap is decoded and folded in as it arrives.

    At most two instances' decoded profiles exist at once (one being folded, one
    waiting; one in all when decoding in threads), whatever the number of instances;
    each is dropped once folded.
    """

    def __init__(self, *, pool_ok: bool = True) -> None:
        self.pool_ok = pool_ok and workpool.processes() > 0
        self._merger: Any = None
        self._lock = asyncio.Lock()
        # Two in flight feed two worker processes; in threads they would only take
        # turns at the GIL, and each held its decode's peak memory at the same time.
        self._decoding = asyncio.Semaphore(2 if self.pool_ok else 1)

    async def add(self, data: bytes | bytearray, max_compressed: int) -> tuple[str, HeapFacts]:
        """Decode (process pool) and fold; returns the profile's main build id and what
        leak analysis keeps of this instance's own heap (digest, leading functions)."""
        async with self._decoding:
            profile, facts, keys = await workpool.decode_for_fold(data, max_compressed,
                                                                  pool_ok=self.pool_ok)
            build_id = profile.main_build_id
            async with self._lock:
                if self._merger is None:
                    from bot.pprof.fold import Merger

                    self._merger = Merger()
                async with workpool.fold_slot():
                    await asyncio.to_thread(self._merger.add, profile, keys)
            del profile, keys
            return build_id, facts

    def result(self) -> Profile | None:
        return self._merger.result() if self._merger is not None else None


def _origin_text(url: str) -> str:
    """scheme://host:port of a URL a target sent, without userinfo (its to choose: it can
    echo the credential it was sent there)."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return f"{parts.scheme}://{host}" if host else url[:80]


def _too_large(url: str, limit: int) -> str:
    return (f"too large: {_path_of(url)} is over the {_format_bytes(limit)} limit "
            "(raise max_profile_bytes in the registry if this is expected)")


def _connect_reason(exc: httpx.ConnectError) -> str:
    chain: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None and len(chain) < 8:  # httpx wraps the OSError that says why
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    if any(isinstance(e, ConnectionRefusedError) for e in chain):
        return "connection refused (is the service running, and is the port right?)"
    text = " ".join(str(e) for e in chain).lower()
    if "refused" in text:
        return "connection refused (is the service running, and is the port right?)"
    if "name or service not known" in text or "nodename" in text or "getaddrinfo" in text:
        return "cannot resolve the host name"
    if "ssl" in text or "certificate" in text:
        return "TLS handshake failed (certificate or https on an http port?)"
    if "unreachable" in text:
        return "network unreachable"
    return "cannot connect"


def target_text(text: str, headers: Mapping[str, str]) -> str:
    """Text a target sent, fit to show and store: credentials redacted (issue 17 item 9).

    A target may echo the request's Authorization header ("bad auth header: Bearer …")
    into an error body that heapbot quotes: the values heapbot sent, every secret the
    process registered for its logs and anything credential-shaped are replaced by
    [REDACTED], with the same redactor as the logs.
    """
    sent = set(headers.values())
    sent |= {part for value in headers.values() for part in value.split() if len(part) >= 6}
    return redact(text, configured_secrets() | {s for s in sent if len(s) >= 6})


async def _status_reason(service: ServiceConfig, response: httpx.Response, url: str,
                         headers: Mapping[str, str] | None = None) -> str:
    status = response.status_code
    path = _path_of(url)
    if status == 404:
        return f"404 on {path}: no pprof here (import net/http/pprof, or set pprof_prefix)"
    if status in (401, 403):
        if service.auth_header_env or service.headers_env:
            return (f"{status} on {path}: the credentials from the registry's env vars were "
                    "refused")
        return f"{status} on {path}: the endpoint needs auth (set auth_header_env in the registry)"
    snippet = ""
    content_type = response.headers.get("content-type", "")
    if content_type.startswith("text/plain"):
        body = b""
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > 300:
                break
        line = body.decode("utf-8", errors="replace").strip().splitlines()
        if line:  # redacted before it is cut, so a cut cannot hide a secret's end
            snippet = ": " + target_text(line[0], headers or {})[:160]
    return f"HTTP {status} on {path}{snippet}"


def instance_summary(instances: Sequence[InstanceResult]) -> dict[str, Any]:
    """Counts for replies: answered, total."""
    return {"answered": sum(1 for i in instances if i.ok), "total": len(instances)}
