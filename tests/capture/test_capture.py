"""Capture over real HTTP: the demo Go service, plus in-test servers that misbehave."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from bot.capture import Capturer
from bot.errors import CaptureError, ConfigError
from bot.registry import ServiceConfig, parse_registry
from tests.support.redis import free_port

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def service_of(targets: list[str], **options: Any) -> ServiceConfig:
    """A registry entry built the way heapbot builds it from heapbot.yaml."""
    entry = {"targets": targets, "cooldown_seconds": 0, **options}
    return parse_registry({"services": {"svc": entry}}, Path("heapbot.yaml")).resolve("svc")


class HttpServer:
    """A real aiohttp server on 127.0.0.1 that counts requests per path."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.hits: Counter[str] = Counter()
        self.seen_headers: list[dict[str, str]] = []
        self.runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _entry(self, request: web.Request) -> web.StreamResponse:
        self.hits[request.path_qs] += 1
        self.seen_headers.append(dict(request.headers))
        return await self.handler(request)

    async def start(self) -> HttpServer:
        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", self._entry)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


def pprof_like(heap: bytes, goroutine: bytes, memstats: bytes) -> Handler:
    """Serve real bytes captured from the demo at the pprof paths."""

    async def handler(request: web.Request) -> web.StreamResponse:
        if request.path.endswith("/heap") and request.query.get("debug") == "1":
            return web.Response(body=memstats, content_type="text/plain")
        if request.path.endswith("/heap"):
            return web.Response(body=heap, content_type="application/octet-stream")
        if request.path.endswith("/goroutine"):
            return web.Response(body=goroutine, content_type="application/octet-stream")
        return web.Response(status=404, text="404 page not found")

    return handler


def reverse_proxy(upstream: str) -> Handler:
    """Forward GETs to a real demo instance (so tests can count what heapbot fetched)."""
    import httpx

    async def handler(request: web.Request) -> web.StreamResponse:
        async with httpx.AsyncClient() as client:
            answer = await client.get(upstream + request.path_qs, timeout=30)
        return web.Response(status=answer.status_code, body=answer.content,
                            content_type=answer.headers.get("content-type", "text/plain")
                            .split(";")[0])

    return handler


@pytest.fixture
async def servers() -> AsyncIterator[Callable[[Handler], Awaitable[HttpServer]]]:
    started: list[HttpServer] = []

    async def start(handler: Handler) -> HttpServer:
        server = await HttpServer(handler).start()
        started.append(server)
        return server

    yield start
    for server in started:
        await server.stop()


@pytest.fixture(scope="module")
def demo_bytes(demo_service: Any) -> tuple[bytes, bytes, bytes]:
    """Real heap, goroutine and heap?debug=1 bytes from the running demo."""
    return (demo_service.get("/debug/pprof/heap"), demo_service.get("/debug/pprof/goroutine"),
            demo_service.get("/debug/pprof/heap?debug=1"))


@pytest.fixture
async def capturer() -> AsyncIterator[Capturer]:
    capturer = Capturer(backoff_seconds=0.05)
    yield capturer
    await capturer.aclose()


async def test_fans_out_to_every_demo_instance(capturer: Capturer, demo_cluster: list[Any]
                                               ) -> None:
    result = await capturer.capture(service_of([d.url for d in demo_cluster]))
    assert [i.target for i in result.instances] == [d.url for d in demo_cluster]
    for instance in result.instances:
        assert instance.ok, instance.error
        assert instance.heap is not None and instance.heap[:2] == b"\x1f\x8b"
        assert instance.goroutine is not None and instance.goroutine[:2] == b"\x1f\x8b"
        assert instance.memstats_text is not None
        assert "# runtime.MemStats" in instance.memstats_text
        assert instance.warnings == []


async def test_one_instance_down_does_not_fail_the_capture(capturer: Capturer,
                                                           demo_service: Any) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    result = await capturer.capture(service_of([demo_service.url, dead]))
    ok, down = result.instances
    assert ok.ok and result.partial
    assert not down.ok and down.error is not None and "connection refused" in down.error


async def test_every_instance_down_is_a_capture_error(capturer: Capturer) -> None:
    dead = [f"http://127.0.0.1:{free_port()}" for _ in range(2)]
    with pytest.raises(CaptureError) as err:
        await capturer.capture(service_of(dead))
    message = err.value.user_message()
    assert "No instance of `svc`" in message and "2× connection refused" in message


async def test_slow_instance_times_out_alone(capturer: Capturer, servers: Any,
                                             demo_service: Any) -> None:
    async def slow(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(5)
        return web.Response(body=b"late")

    server = await servers(slow)
    start = time.monotonic()
    result = await capturer.capture(service_of([demo_service.url, server.url],
                                               timeout_seconds=0.5))
    assert time.monotonic() - start < 3
    fast, late = result.instances
    assert fast.ok
    assert not late.ok and late.error is not None and late.error.startswith("timeout")


async def test_404_says_pprof_is_probably_not_imported(capturer: Capturer, servers: Any,
                                                       demo_service: Any) -> None:
    async def not_found(request: web.Request) -> web.StreamResponse:
        return web.Response(status=404, text="404 page not found")

    server = await servers(not_found)
    result = await capturer.capture(service_of([demo_service.url, server.url]))
    assert result.instances[1].error == ("404 on /debug/pprof/heap: no pprof here "
                                         "(import net/http/pprof, or set pprof_prefix)")
    with pytest.raises(CaptureError) as err:  # every instance 404: one message, clean stops
        await capturer.capture(service_of([server.url]))
    message = err.value.user_message()
    assert "no pprof here (import net/http/pprof, or set pprof_prefix). Check that" in message
    assert "?." not in message and ".." not in message


async def test_html_page_with_200_is_not_a_profile(capturer: Capturer, servers: Any,
                                                   demo_service: Any) -> None:
    async def login_page(request: web.Request) -> web.StreamResponse:
        return web.Response(text="<!DOCTYPE html><html><body>Sign in</body></html>",
                            content_type="text/html")

    server = await servers(login_page)
    result = await capturer.capture(service_of([demo_service.url, server.url]))
    assert result.instances[1].error is not None
    assert result.instances[1].error.startswith("not a profile (got an HTML page")


async def test_redirect_to_another_host_is_refused(capturer: Capturer, servers: Any,
                                                   demo_service: Any, demo_bytes: Any) -> None:
    elsewhere = await servers(pprof_like(*demo_bytes))

    async def redirect(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound(elsewhere.url + request.path_qs)

    server = await servers(redirect)
    result = await capturer.capture(service_of([demo_service.url, server.url]))
    bad = result.instances[1]
    assert not bad.ok and bad.error is not None
    assert "refused a redirect to another host" in bad.error
    assert sum(elsewhere.hits.values()) == 0  # never contacted


async def test_redirect_on_the_same_origin_is_followed(capturer: Capturer, servers: Any,
                                                       demo_bytes: Any) -> None:
    serve = pprof_like(*demo_bytes)

    async def moved(request: web.Request) -> web.StreamResponse:
        if request.path.startswith("/debug/pprof/"):
            raise web.HTTPMovedPermanently("/v2" + request.path_qs)
        return await serve(request)

    server = await servers(moved)
    result = await capturer.capture(service_of([server.url]))
    assert result.instances[0].ok
    assert result.instances[0].heap == demo_bytes[0]


@pytest.mark.parametrize("chunked", [False, True])
async def test_oversized_body_is_aborted(capturer: Capturer, servers: Any, demo_service: Any,
                                         chunked: bool) -> None:
    big = b"\x1f\x8b" + b"x" * (3 * 1024 * 1024)

    async def huge(request: web.Request) -> web.StreamResponse:
        if not chunked:
            return web.Response(body=big)
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for start in range(0, len(big), 64 * 1024):
            await response.write(big[start:start + 64 * 1024])
        return response

    server = await servers(huge)
    result = await capturer.capture(service_of([demo_service.url, server.url],
                                               max_profile_bytes=1024 * 1024))
    bad = result.instances[1]
    assert not bad.ok and bad.error is not None and bad.error.startswith("too large")
    assert "1 MiB" in bad.error


async def test_auth_header_from_env_is_sent_and_never_shown(
        servers: Any, demo_bytes: Any, caplog: pytest.LogCaptureFixture) -> None:
    secret = "Bearer very-secret-value-123"
    serve = pprof_like(*demo_bytes)

    async def guarded(request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != secret:
            return web.Response(status=401, text="unauthorized")
        return await serve(request)

    server = await servers(guarded)
    caplog.set_level(logging.DEBUG)
    good = Capturer(environ={"SVC_AUTH": secret})
    wrong = Capturer(environ={"SVC_AUTH": "Bearer nope"})
    try:
        result = await good.capture(service_of([server.url], auth_header_env="SVC_AUTH"))
        assert result.instances[0].ok
        with pytest.raises(CaptureError) as err:
            await wrong.capture(service_of([server.url], auth_header_env="SVC_AUTH"))
        assert "401 on /debug/pprof/heap: the credentials" in err.value.user_message()
        assert "nope" not in err.value.user_message()
        with pytest.raises(ConfigError):
            await Capturer(environ={}).capture(service_of([server.url],
                                                          auth_header_env="SVC_AUTH"))
    finally:
        await good.aclose()
        await wrong.aclose()
    assert "very-secret" not in caplog.text and "nope" not in caplog.text


async def test_dns_target_resolves_every_address(capturer: Capturer, demo_service: Any) -> None:
    result = await capturer.capture(service_of([f"dns+http://localhost:{demo_service.port}"]))
    targets = {i.target for i in result.instances}
    assert f"http://127.0.0.1:{demo_service.port}" in targets
    assert all(i.source == f"dns+http://localhost:{demo_service.port}" for i in result.instances)
    assert any(i.ok for i in result.instances)


async def test_unresolvable_dns_name_is_reported(capturer: Capturer, demo_service: Any) -> None:
    result = await capturer.capture(service_of(
        [demo_service.url, "dns+http://no-such-host.invalid:6060"]))
    bad = result.instances[1]
    assert not bad.ok and bad.error is not None
    assert bad.error.startswith("DNS name no-such-host.invalid did not resolve")


FIXTURES = Path(__file__).parents[1] / "fixtures"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"\x1f\x8b\x08\x00garbage-not-gzip", "not a heap profile:"),
        ((FIXTURES / "cpu.pb.gz").read_bytes(), "not a heap profile: it holds samples, cpu"),
    ],
    ids=["garbage", "cpu-profile"],
)
async def test_bytes_that_are_not_a_heap_profile(capturer: Capturer, servers: Any,
                                                 demo_service: Any, body: bytes,
                                                 expected: str) -> None:
    async def wrong(request: web.Request) -> web.StreamResponse:
        return web.Response(body=body)

    server = await servers(wrong)
    result = await capturer.capture(service_of([demo_service.url, server.url]))
    assert result.instances[0].ok
    bad = result.instances[1]
    assert not bad.ok and bad.error is not None and bad.error.startswith(expected), bad.error
