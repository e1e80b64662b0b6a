"""Sample-type names are the target's choice: quoted redacted and bounded, like its other text.

A profiled process writes its own profile, so the names of its sample types can be
anything: a token it was sent, a credential-shaped string, 5,000 characters,
backticks and newlines. Before, replies and errors quoted them as they came ("it
holds <names>, not heap samples", the top title "top 10 by <name>"). Real HTTP,
real Redis, the real handlers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web

from bot.analysis.diff import check_comparable
from bot.analysis.goroutines import parse_goroutines
from bot.capture import Capturer
from bot.errors import HeapbotError
from bot.logs import target_names
from bot.pprof import merge_profiles, parse_profile
from bot.pprof.encode import encode_profile
from bot.pprof.model import Profile, SampleType, sample_type_index
from bot.reply import Reply
from bot.runtime import Runtime
from bot.settings import Settings
from handlers import Invocation, run
from tests.capture.test_capture import HttpServer

FIXTURES = Path(__file__).parents[1] / "fixtures"
TOKEN = "s3cr3t-pprof-token-8842"  # what heapbot sends the target (auth_header_env)
SLACK = "xoxb-1111-2222-hostileNamedType"
LONG = "A" * 5000


def _renamed(fixture: str, names: list[str], default: str = "") -> Profile:
    """``fixture`` parsed, its sample types renamed to ``names`` (units kept)."""
    profile = parse_profile((FIXTURES / fixture).read_bytes())
    profile.sample_types = [SampleType(name, st.unit)
                            for name, st in zip(names, profile.sample_types, strict=True)]
    profile.default_sample_type = default
    return profile


def _target(heap: bytes) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(request: web.Request) -> web.Response:
        if request.query.get("debug") == "1":
            return web.Response(text=(FIXTURES / "heap_debug1.txt").read_text())
        if request.path.endswith("/goroutine"):
            return web.Response(body=(FIXTURES / "goroutine.pb.gz").read_bytes())
        return web.Response(body=heap)
    return handler


def _shown(reply: Reply) -> str:
    """Every text of a reply a user reads."""
    parts = [reply.title, *reply.context, reply.summary, *reply.sections,
             *(a.title for a in reply.attachments)]
    if reply.table is not None:
        parts.append(reply.table.caption)
    return "\n".join(parts)


async def _top(heap: Profile, redis_url: str, tmp_path: Path) -> tuple[Reply, Runtime]:
    server = await HttpServer(_target(encode_profile(heap))).start()
    registry = tmp_path / "heapbot.yaml"
    registry.write_text(f"services:\n  payments:\n    targets: [\"{server.url}\"]\n"
                        "    cooldown_seconds: 0\n    auth_header_env: PPROF_AUTH\n")
    settings = Settings(REDIS_URL=redis_url, HEAPBOT_CONFIG=str(registry),
                        HEAPBOT_DATA_DIR=str(tmp_path / "data"))
    runtime = await Runtime.create(
        settings, capturer=Capturer(environ={"PPROF_AUTH": f"Bearer {TOKEN}"}))
    try:
        reply = await run(runtime, Invocation(text="top payments", user_id="U1",
                                              channel_id="C1", source="slack"))
    finally:
        await server.stop()
    return reply, runtime


async def test_a_profile_with_hostile_sample_types_fails_with_them_redacted_and_bounded(
        redis_url: str, tmp_path: Path) -> None:
    heap = _renamed("heap_1.pb.gz", [SLACK, f"echo {TOKEN}", LONG, "x`\n<!channel>"])
    reply, runtime = await _top(heap, redis_url, tmp_path)
    try:
        shown = _shown(reply)
        assert reply.error, shown
        assert "not heap samples (is the endpoint a heap profile?)" in shown, shown
        assert SLACK not in shown and TOKEN not in shown, shown
        assert shown.count("[REDACTED]") >= 2, shown
        assert "A" * 60 not in shown and "A" * 59 + "…" in shown, shown
        assert "x`" not in shown and "x <!channel>" in shown, shown  # no code-span break-out
        assert len(shown) < 1000, len(shown)
    finally:
        await runtime.close()


async def test_a_hostile_default_sample_type_is_bounded_in_the_top_reply(
        redis_url: str, tmp_path: Path) -> None:
    hostile = f"{SLACK} {'B' * 3000}"
    heap = _renamed("heap_1.pb.gz", [hostile, "alloc_space", "inuse_objects", "inuse_space"],
                    default=hostile)
    reply, runtime = await _top(heap, redis_url, tmp_path)
    try:
        shown = _shown(reply)
        assert not reply.error, shown
        assert reply.title.startswith("payments: top ") and " by [REDACTED] BBB" in reply.title
        assert reply.title.endswith("…") and len(reply.title) < 100, reply.title
        assert SLACK not in shown and "B" * 60 not in shown, shown
        assert reply.table is not None and reply.table.rows  # the table is still there
    finally:
        await runtime.close()


def _raises(call: Callable[[], object]) -> str:
    with pytest.raises(HeapbotError) as failed:
        call()
    return failed.value.user_message()


def test_engine_and_analysis_errors_quote_sample_types_redacted_and_bounded() -> None:
    goroutine = _renamed("heap_1.pb.gz", [SLACK, LONG, "c", "d"])
    heap = parse_profile((FIXTURES / "heap_1.pb.gz").read_bytes())
    messages = {
        "goroutines": _raises(lambda: parse_goroutines(encode_profile(goroutine))),
        "diff": _raises(lambda: check_comparable(heap, goroutine)),
        "merge": _raises(lambda: merge_profiles([heap, goroutine])),
        "--type": _raises(lambda: sample_type_index(goroutine, "inuse_space")),
    }
    for where, message in messages.items():
        assert SLACK not in message and "A" * 60 not in message, (where, message)
        assert "[REDACTED]" in message and "A" * 59 + "…" in message, (where, message)
        assert len(message) < 600, (where, len(message))


def test_target_names_shows_a_few_names_and_counts_the_rest() -> None:
    names = [f"type{i}" for i in range(40)]
    assert target_names(names) == "type0, type1, type2, type3, type4, type5 and 34 more"
    assert target_names(["a\x00b\nc", "`x`"]) == "a b c, x"
