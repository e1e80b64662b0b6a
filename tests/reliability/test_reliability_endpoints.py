"""pprof endpoints that misbehave, served for real on 127.0.0.1.

One aiohttp server plays every broken endpoint under its own path prefix (a
service's ``pprof_prefix`` selects the case), plus a socket that accepts and
never answers, a closed port, a plain port spoken to over https, and a
self-signed https server. Each case goes through ``Capturer.capture`` and
through ``handlers.run("top SERVICE")`` on a real Runtime with a real Redis;
the test asserts the message a user sees and that nothing was stored.

``CASES`` is also the source of the endpoint rows in docs/RELIABILITY.md
(tests/reliability/test_reliability_docs.py keeps the two in sync).
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import logging
import ssl
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web

from bot.capture import Capturer
from bot.errors import CaptureError
from bot.registry import Registry, ServiceConfig
from bot.runtime import Runtime
from bot.store import SnapshotStore
from handlers import Invocation, run
from tests.support.redis import all_keys, async_client, free_port

FIXTURES = Path(__file__).parents[1] / "fixtures"
HEAP = (FIXTURES / "heap_1.pb.gz").read_bytes()
GOROUTINE = (FIXTURES / "goroutine.pb.gz").read_bytes()
HEAP_DEBUG1 = (FIXTURES / "heap_debug1.txt").read_bytes()
SIZE_LIMIT = 64 * 1024  # max_profile_bytes for the oversize cases
OTHER_PORT = web.AppKey("other_port", int)
SECRET_TOKEN = "Bearer s3cr3t-pprof-token-7f1e2d"  # must never leave the request


@dataclass(frozen=True, slots=True)
class EndpointCase:
    """One broken endpoint: how the registry reaches it and what the user must read."""

    case_id: str
    description: str
    expect: str  # fragment of the per-instance reason, as shown to users
    prefix: str = ""  # pprof_prefix on the shared server (when target is "shared")
    target: str = "shared"  # shared | hang | closed | tls-plain | self-signed | other-host
    timeout: float = 5.0


CASES: list[EndpointCase] = [
    EndpointCase("http-404", "404 on /debug/pprof/heap",
                 "404 on /e404/debug/pprof/heap: no pprof here (import net/http/pprof, or "
                 "set pprof_prefix)",
                 "/e404/debug/pprof"),
    EndpointCase("http-401", "401 without credentials configured",
                 "401 on /e401/debug/pprof/heap: the endpoint needs auth", "/e401/debug/pprof"),
    EndpointCase("http-403", "403 without credentials configured",
                 "403 on /e403/debug/pprof/heap: the endpoint needs auth", "/e403/debug/pprof"),
    EndpointCase("http-500", "500 with a text/plain body",
                 "HTTP 500 on /e500/debug/pprof/heap: database is down", "/e500/debug/pprof"),
    EndpointCase("html-200", "an HTML login page with status 200",
                 "not a profile (got an HTML page", "/html/debug/pprof"),
    EndpointCase("redirect-other-host", "302 to another host",
                 "refused a redirect to another host", "/away/debug/pprof"),
    EndpointCase("redirect-other-port", "302 to the same host on another port",
                 "refused a redirect to another host", "/awayport/debug/pprof"),
    EndpointCase("redirect-loop", "a redirect loop on the same host",
                 "too many redirects", "/loop/debug/pprof"),
    EndpointCase("drip", "a server that sends one byte a second",
                 "timeout", "/drip/debug/pprof", timeout=1.5),
    EndpointCase("hang", "accepts the connection and never answers",
                 "timeout", target="hang", timeout=1.5),
    EndpointCase("refused", "connection refused (nothing listens)",
                 "connection refused", target="closed"),
    EndpointCase("tls-plain-port", "an https target pointing at a plain-HTTP port",
                 "TLS handshake failed", target="tls-plain"),
    EndpointCase("tls-self-signed", "an https server with a self-signed certificate",
                 "TLS handshake failed", target="self-signed"),
    EndpointCase("oversize-declared", "Content-Length over max_profile_bytes",
                 "too large: /big/debug/pprof/heap is over the", "/big/debug/pprof"),
    EndpointCase("oversize-chunked", "a chunked body that grows past max_profile_bytes",
                 "too large: /bigchunked/debug/pprof/heap is over the",
                 "/bigchunked/debug/pprof"),
    EndpointCase("cpu-as-heap", "a CPU profile served at /debug/pprof/heap",
                 "not a heap profile", "/cpu/debug/pprof"),
    EndpointCase("garbage-200", "random bytes with status 200",
                 "not a heap profile", "/garbage/debug/pprof"),
    EndpointCase("truncated-200", "a heap profile cut short, status 200",
                 "not a heap profile", "/truncated/debug/pprof"),
    EndpointCase("dns-unknown-name", "a dns+http target whose name does not resolve",
                 "did not resolve", target="dns-unknown"),
]


# -- the misbehaving servers ----------------------------------------------------------------


def _pprof_body(request: web.Request) -> bytes:
    kind = request.match_info["kind"]
    if kind == "goroutine":
        return GOROUTINE
    return HEAP_DEBUG1 if request.query.get("debug") == "1" else HEAP


async def _good(request: web.Request) -> web.StreamResponse:
    auth = request.app.get("required_auth")
    if auth and request.headers.get("Authorization") != auth:
        return web.Response(status=401, text="unauthorized")
    return web.Response(body=_pprof_body(request), content_type="application/octet-stream")


async def _status(request: web.Request) -> web.StreamResponse:
    status = int(request.match_info["status"])
    return web.Response(status=status, text="database is down\nmore detail",
                        content_type="text/plain")


async def _html(request: web.Request) -> web.StreamResponse:
    page = "<!DOCTYPE html><html><body><form action=/login>Sign in</form></body></html>"
    return web.Response(text=page, content_type="text/html")


async def _away(request: web.Request) -> web.StreamResponse:
    port = request.url.port
    raise web.HTTPFound(f"http://127.0.0.2:{port}/debug/pprof/{request.match_info['kind']}")


async def _away_port(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound(f"http://127.0.0.1:{request.app[OTHER_PORT]}/debug/pprof/heap")


async def _loop(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound(f"/loop/debug/pprof/{request.match_info['kind']}")


async def _drip(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse()
    response.content_type = "application/octet-stream"
    await response.prepare(request)
    with contextlib.suppress(ConnectionError, asyncio.CancelledError):
        for byte in HEAP[:30]:
            await response.write(bytes([byte]))
            await asyncio.sleep(1.0)
    return response


async def _big(request: web.Request) -> web.StreamResponse:
    return web.Response(body=b"\x00" * (SIZE_LIMIT * 2), content_type="application/octet-stream")


async def _big_chunked(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse()
    response.enable_chunked_encoding()
    await response.prepare(request)
    with contextlib.suppress(ConnectionError):
        for _ in range(64):
            await response.write(b"\x01" * 4096)
    return response


async def _cpu(request: web.Request) -> web.StreamResponse:
    return web.Response(body=(FIXTURES / "cpu.pb.gz").read_bytes())


async def _garbage(request: web.Request) -> web.StreamResponse:
    return web.Response(body=bytes(range(256)) * 40)


async def _truncated(request: web.Request) -> web.StreamResponse:
    return web.Response(body=HEAP[: len(HEAP) // 3])


def _build_app(other_port: int) -> web.Application:
    app = web.Application()
    app[OTHER_PORT] = other_port
    add = app.router.add_get
    add("/ok/debug/pprof/{kind}", _good)
    add("/debug/pprof/{kind}", _good)
    add("/e{status:\\d+}/debug/pprof/{kind}", _status)
    add("/html/debug/pprof/{kind}", _html)
    add("/away/debug/pprof/{kind}", _away)
    add("/awayport/debug/pprof/{kind}", _away_port)
    add("/loop/debug/pprof/{kind}", _loop)
    add("/drip/debug/pprof/{kind}", _drip)
    add("/big/debug/pprof/{kind}", _big)
    add("/bigchunked/debug/pprof/{kind}", _big_chunked)
    add("/cpu/debug/pprof/{kind}", _cpu)
    add("/garbage/debug/pprof/{kind}", _garbage)
    add("/truncated/debug/pprof/{kind}", _truncated)
    return app


@dataclass(slots=True)
class Endpoints:
    shared: str
    hang: str
    closed: str
    self_signed: str


async def _serve(app: web.Application, ssl_context: ssl.SSLContext | None = None
                 ) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]


def _self_signed(tmp: Path) -> ssl.SSLContext:
    """A server context with a fresh self-signed certificate (openssl CLI)."""
    key, cert = tmp / "key.pem", tmp / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                    str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


@pytest.fixture
async def endpoints(tmp_path: Path) -> AsyncIterator[Endpoints]:
    """Every misbehaving endpoint, up for one test."""
    writers: list[asyncio.StreamWriter] = []

    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        with contextlib.suppress(Exception):
            await reader.read(1 << 16)  # read the request, then say nothing
            await asyncio.sleep(3600)

    hang = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    hang_port = hang.sockets[0].getsockname()[1]
    other_runner, other_port = await _serve(_build_app(0))
    runner, port = await _serve(_build_app(other_port))
    tls_runner, tls_port = await _serve(_build_app(0), _self_signed(tmp_path))
    try:
        yield Endpoints(shared=f"http://127.0.0.1:{port}", hang=f"http://127.0.0.1:{hang_port}",
                        closed=f"http://127.0.0.1:{free_port()}",
                        self_signed=f"https://127.0.0.1:{tls_port}")
    finally:
        hang.close()
        for writer in writers:
            writer.close()
        for r in (runner, other_runner, tls_runner):
            await r.cleanup()


def service_for(case: EndpointCase, ep: Endpoints, name: str = "broken") -> ServiceConfig:
    target = {
        "shared": ep.shared, "hang": ep.hang, "closed": ep.closed,
        "tls-plain": ep.shared.replace("http://", "https://"),
        "self-signed": ep.self_signed,
        "dns-unknown": "dns+http://heapbot-no-such-host.invalid:6060",
    }[case.target]
    return ServiceConfig(name=name, targets=(target,), timeout_seconds=case.timeout,
                         pprof_prefix=case.prefix or "/debug/pprof",
                         max_profile_bytes=SIZE_LIMIT, cooldown_seconds=0)


def _capturer() -> Capturer:
    return Capturer(retries=1, backoff_seconds=0.05, environ={})


# -- through the capturer -------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=[c.case_id for c in CASES])
async def test_capture_names_what_went_wrong(case: EndpointCase, endpoints: Endpoints) -> None:
    capturer = _capturer()
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(CaptureError) as raised:
            await capturer.capture(service_for(case, endpoints))
        elapsed = loop.time() - started
    finally:
        await capturer.aclose()
    message = raised.value.user_message()
    assert case.expect in message, message
    assert "No instance of `broken` answered" in message
    assert ".." not in message  # one full stop after a quoted reason, not two
    assert "Traceback" not in message and "{" not in message.split("(1 tried)")[0]
    assert elapsed < case.timeout * 3 + 5, f"{case.case_id} took {elapsed:.1f}s"


async def test_one_bad_instance_does_not_fail_the_capture(endpoints: Endpoints) -> None:
    """A partial capture keeps the good instance and names the bad one."""
    service = ServiceConfig(name="mixed", targets=(endpoints.shared, endpoints.closed),
                            timeout_seconds=3)
    capturer = _capturer()
    try:
        result = await capturer.capture(service)
    finally:
        await capturer.aclose()
    assert [i.ok for i in result.instances] == [True, False]
    assert result.partial
    assert "connection refused" in (result.instances[1].error or "")
    assert result.instances[0].heap == HEAP


async def test_same_host_redirect_is_followed(endpoints: Endpoints) -> None:
    service = ServiceConfig(name="moved", targets=(endpoints.shared,),
                            pprof_prefix="/ok/debug/pprof")
    capturer = _capturer()
    try:
        result = await capturer.capture(service)
    finally:
        await capturer.aclose()
    assert result.instances[0].ok and result.instances[0].heap == HEAP


# -- through the Runtime and /heap top, with a real Redis -------------------------------------


async def _keys(redis_url: str) -> list[bytes]:
    client = async_client(redis_url)
    try:
        return sorted(await all_keys(client))
    finally:
        await client.aclose()


@pytest.fixture
async def runtime_for(redis_url: str) -> AsyncIterator[object]:
    made: list[Runtime] = []

    def make(*services: ServiceConfig) -> Runtime:
        runtime = Runtime(registry=Registry(services={s.name: s for s in services}),
                          store=SnapshotStore.from_url(redis_url), capturer=_capturer())
        made.append(runtime)
        return runtime

    yield make
    for runtime in made:
        await runtime.close()


RUNTIME_CASES = [c for c in CASES if c.case_id in {
    "http-404", "http-401", "html-200", "redirect-other-host", "hang", "refused",
    "tls-plain-port", "oversize-chunked", "cpu-as-heap", "garbage-200"}]


@pytest.mark.parametrize("case", RUNTIME_CASES, ids=[c.case_id for c in RUNTIME_CASES])
async def test_top_answers_one_clear_message_and_stores_nothing(
        case: EndpointCase, endpoints: Endpoints, runtime_for, redis_url: str) -> None:
    runtime = runtime_for(service_for(case, endpoints, name="payments"))
    with pytest.raises(CaptureError) as raised:
        await runtime.capture("payments")
    assert case.expect in raised.value.user_message()

    reply = await run(runtime, Invocation(text="top payments", user_id="U1", channel_id="C1",
                                          source="slack"))
    assert reply.error and reply.ephemeral
    shown = " ".join([reply.title, *reply.sections, reply.summary])
    assert case.expect in shown, shown
    assert "Traceback" not in shown and "internal error" not in shown
    assert reply.table is None
    assert [k for k in await _keys(redis_url) if b"snap" in k or b"index" in k] == []


async def test_secret_auth_header_stays_out_of_logs_and_redis(
        endpoints: Endpoints, redis_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """The Authorization value reaches the endpoint and nothing else."""
    seen: list[str] = []

    async def guarded(request: web.Request) -> web.StreamResponse:
        seen.append(request.headers.get("Authorization", ""))
        if request.headers.get("Authorization") != SECRET_TOKEN:
            return web.Response(status=401, text="unauthorized")
        return await _good(request)

    app = web.Application()
    app.router.add_get("/debug/pprof/{kind}", guarded)
    runner, port = await _serve(app)
    service = ServiceConfig(name="secured", targets=(f"http://127.0.0.1:{port}",
                                                     endpoints.closed),
                            auth_header_env="SECURED_PPROF_AUTH", cooldown_seconds=0,
                            timeout_seconds=3)
    capturer = Capturer(retries=0, environ={"SECURED_PPROF_AUTH": SECRET_TOKEN})
    runtime = Runtime(registry=Registry(services={"secured": service}),
                      store=SnapshotStore.from_url(redis_url), capturer=capturer)
    caplog.set_level(logging.DEBUG)
    try:
        captured = await runtime.capture("secured", requested_by="U1")
        reply = await run(runtime, Invocation(text="top secured", source="slack"))
    finally:
        await runtime.close()
        await runner.cleanup()
    assert SECRET_TOKEN in seen  # the header really was sent
    assert captured.snapshot is not None
    secret_bits = (SECRET_TOKEN, SECRET_TOKEN.split()[1])
    for record in caplog.records:
        text = record.getMessage() + repr(record.args) + str(record.__dict__)
        assert not any(s in text for s in secret_bits), record
    shown = repr(reply)
    assert not any(s in shown for s in secret_bits)
    client = async_client(redis_url)
    try:
        keys = await all_keys(client)
        assert any(b"snap" in k for k in keys)
        for key in keys:
            kind = (await client.type(key)).decode()
            values: list[bytes] = []
            if kind == "hash":
                values = list((await client.hgetall(key)).values())
            elif kind == "zset":
                values = [m for m, _ in await client.zrange(key, 0, -1, withscores=True)]
            elif kind == "string":
                values = [await client.get(key) or b""]
            for value in map(_readable, values):
                assert not any(s.encode() in value for s in secret_bits), key
    finally:
        await client.aclose()


def _readable(value: bytes) -> bytes:
    """Stored raw profiles are gzip-packed (bot.store): scan what they decompress to."""
    with contextlib.suppress(OSError, EOFError, gzip.BadGzipFile):
        if value[:1] == b"G":
            return gzip.decompress(value[1:])
        if value[:3] == b"R\x1f\x8b":
            return gzip.decompress(value[1:])
    return value


def test_case_ids_are_unique() -> None:
    assert len({c.case_id for c in CASES}) == len(CASES)
