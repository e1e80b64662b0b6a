"""No SSRF: heapbot fetches only registry targets, whatever a user types.

A recording HTTP server stands in for an internal host an attacker would like
heapbot to reach (a metadata service, an admin port). Commands naming URLs,
IPs or hosts instead of services are refused before any request; ``dns+``
targets resolve only the name written in the registry; redirects to other hosts
are refused (tests/reliability/test_reliability_endpoints.py covers other-host/other-port).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from bot.capture import Capturer
from bot.registry import Registry, ServiceConfig
from bot.runtime import Runtime
from bot.store import SnapshotStore
from handlers import Invocation, run
from tests.support.slack_standin import RunningWebApp

FIXTURES = Path(__file__).parents[1] / "fixtures"
HITS = web.AppKey("hits", list)


async def _record(request: web.Request) -> web.StreamResponse:
    request.app[HITS].append(request.path_qs)
    kind = request.match_info.get("kind", "heap")
    name = "goroutine.pb.gz" if kind == "goroutine" else (
        "heap_debug1.txt" if request.query.get("debug") == "1" else "heap_1.pb.gz")
    return web.Response(body=(FIXTURES / name).read_bytes())


@pytest.fixture
async def internal_host() -> AsyncIterator[tuple[str, list[str]]]:
    hits: list[str] = []
    app = web.Application()
    app[HITS] = hits
    app.router.add_get("/debug/pprof/{kind}", _record)
    app.router.add_get("/{tail:.*}", _record)
    server = await RunningWebApp(app).start()
    yield server.url, hits
    await server.stop()


@pytest.fixture
async def runtime(redis_url: str, internal_host: tuple[str, list[str]]
                  ) -> AsyncIterator[Runtime]:
    url, _ = internal_host
    port = url.rsplit(":", 1)[1]
    service = ServiceConfig(name="payments", targets=(f"dns+http://localhost:{port}",),
                            cooldown_seconds=0, timeout_seconds=5)
    rt = Runtime(registry=Registry(services={"payments": service}),
                 store=SnapshotStore.from_url(redis_url), capturer=Capturer(retries=0))
    yield rt
    await rt.close()


def _attacks(url: str) -> list[str]:
    host_port = url.removeprefix("http://")
    return [
        f"top {url}",
        f"top {url}/debug/pprof",
        f"top {host_port}",
        "top 127.0.0.1",
        "top localhost",
        "top http://169.254.169.254/latest/meta-data/",
        f"top dns+{url}",
        f"goroutines {url}",
        f"capture {url}",
        f"history {url}",
        f"diff {url} since deploy",
        f"top payments --snapshot {url}",
        f"top @{host_port}",
    ]


async def test_urls_and_hosts_typed_by_users_are_never_fetched(
        runtime: Runtime, internal_host: tuple[str, list[str]]) -> None:
    url, hits = internal_host
    for text in _attacks(url):
        reply = await run(runtime, Invocation(text=text, user_id="U1", channel_id="C1",
                                              source="slack"))
        shown = " ".join([reply.title, *reply.sections])
        assert reply.error, (text, shown)
        assert "internal error" not in shown, (text, shown)
        assert hits == [], (text, hits)


async def test_dns_target_resolves_only_the_registry_name(
        runtime: Runtime, internal_host: tuple[str, list[str]]) -> None:
    url, hits = internal_host
    port = url.rsplit(":", 1)[1]
    bases = await runtime.capturer.expand_targets(runtime.registry.resolve("payments"))
    addresses = {base for base, _, error in bases if error is None}
    assert addresses and addresses <= {f"http://127.0.0.1:{port}", f"http://[::1]:{port}"}
    assert all(source == f"dns+http://localhost:{port}" for _, source, _ in bases)
    captured = await runtime.capture("payments", requested_by="U1")
    assert captured.snapshot is not None
    assert hits and all(h.startswith("/debug/pprof/") for h in hits)
