"""/heap capture, history, deploy and services through handlers.run: what users see."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import handlers
from bot.capture import Capturer
from bot.registry import parse_registry
from bot.runtime import Runtime
from bot.store import SnapshotStore
from tests.support.redis import free_port


@pytest.fixture
async def runtime(redis_url: str, demo_cluster: list[Any]) -> AsyncIterator[Runtime]:
    registry = parse_registry({"services": {
        "demo": {"targets": [d.url for d in demo_cluster], "cooldown_seconds": 0,
                 "aliases": ["dm"], "channel": "C0DEMO"},
        "ghost": {"targets": [f"http://127.0.0.1:{free_port()}",
                              "dns+http://localhost:6060"]},
    }}, Path("heapbot.yaml"))
    runtime = Runtime(registry=registry, store=SnapshotStore.from_url(redis_url),
                      capturer=Capturer(backoff_seconds=0.05))
    yield runtime
    await runtime.close()


async def ask(runtime: Runtime, text: str, **kwargs: Any) -> Any:
    return await handlers.run(runtime, handlers.Invocation(text, user_id="U42", **kwargs))


async def test_capture_reply_lists_each_instance(runtime: Runtime,
                                                 demo_cluster: list[Any]) -> None:
    reply = await ask(runtime, "/heap capture dm")
    assert not reply.error, reply.sections
    assert reply.title == "Captured demo: 3/3 instances"
    assert reply.table is not None
    assert [row[0] for row in reply.table.rows] == [d.url for d in demo_cluster]
    assert all(row[1] == "ok" for row in reply.table.rows)
    stored = await runtime.store.get("demo", reply.snapshot_id)
    for row, inst in zip(reply.table.rows, stored.instances, strict=True):
        assert row[3] == f"{inst.goroutines:,}"
    assert reply.data["snapshot"]["id"] == stored.id
    assert f"{stored.goroutine_total:,} goroutines" in reply.summary


async def test_capture_of_a_dead_service_is_one_clear_failure(runtime: Runtime) -> None:
    reply = await ask(runtime, "/heap capture ghost")
    assert reply.error and reply.ephemeral
    text = " ".join(reply.sections)
    assert "No instance of `ghost` answered" in text and "Traceback" not in text


async def test_history_shows_captures_and_deploys_newest_first(runtime: Runtime) -> None:
    first = await ask(runtime, "/heap capture demo")
    deploy = await ask(runtime, "/heap deploy demo v1.2.3")
    assert deploy.title == "Recorded deploy v1.2.3 of demo"
    second = await ask(runtime, "/heap capture demo")
    reply = await ask(runtime, "/heap history demo")
    assert reply.table is not None
    last_column = [row[-1] for row in reply.table.rows]
    assert last_column == [second.snapshot_id, "— deploy v1.2.3 by U42", first.snapshot_id]
    assert [s["id"] for s in reply.data["snapshots"]] == [second.snapshot_id, first.snapshot_id]
    assert reply.data["deploys"][0]["version"] == "v1.2.3"
    charts = [a for a in reply.attachments if a.kind == "chart"]
    assert charts and charts[0].content[:8] == b"\x89PNG\r\n\x1a\n"


async def test_history_of_a_service_never_captured(runtime: Runtime) -> None:
    reply = await ask(runtime, "/heap history ghost")
    assert reply.title == "No stored captures of ghost yet" and not reply.error


async def test_services_table(runtime: Runtime) -> None:
    await ask(runtime, "/heap capture demo")
    reply = await ask(runtime, "/heap services")
    rows = {row[0]: row for row in reply.table.rows}
    assert rows["demo"][1:4] == ["dm", "3", "C0DEMO"]
    assert rows["demo"][4].endswith("ago")
    assert rows["ghost"][2] == "1 + DNS" and rows["ghost"][4] == "never"


async def test_unknown_service_gets_did_you_mean(runtime: Runtime) -> None:
    reply = await ask(runtime, "/heap capture dmeo")
    assert reply.error and "Did you mean `demo`?" in " ".join(reply.sections)


async def test_deploy_needs_a_version(runtime: Runtime) -> None:
    reply = await ask(runtime, "/heap deploy demo")
    assert reply.error and "/heap deploy SERVICE VERSION" in " ".join(reply.sections)
