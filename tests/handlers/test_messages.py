"""What a new user met walking through heapbot, and what they see now.

Real parts only: the demo Go service over HTTP and a real Redis; expected
values are read back from the store or the engine, never written down.
"""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.analysis.goroutines import parse_goroutines
from bot.pprof import profile_pb2
from bot.runtime import Runtime
from bot.settings import Settings
from handlers import Invocation, run
from handlers.goroutines import waits_in
from tests.support.runtime import runtime_on, service_registry

pytestmark = pytest.mark.slow


@pytest.fixture
async def runtime(tmp_path: Path, redis_url: str, demo_service) -> AsyncIterator[Runtime]:
    async with runtime_on(service_registry(tmp_path, "demo", [demo_service.url],
                                           cooldown_seconds=0), redis_url) as rt:
        yield rt


def console(text: str) -> Invocation:
    return Invocation(text=text, user_id="U0TEST", source="console")


async def test_a_bad_since_reference_is_refused_before_capturing(runtime: Runtime) -> None:
    reply = await run(runtime, console("diff demo since yesterday"))
    assert reply.error
    assert "`since yesterday` is not something heapbot understands" in reply.sections[0]
    assert "a duration like 30m" in reply.sections[0]
    assert await runtime.store.count("demo") == 0  # nothing was captured for nothing


async def test_diff_since_an_hour_with_short_history_points_to_previous(runtime: Runtime
                                                                        ) -> None:
    await run(runtime, console("capture demo"))
    reply = await run(runtime, console("diff demo since 1h"))
    assert reply.error
    text = reply.sections[0]
    assert "has no capture from 1h ago or earlier" in text
    assert "The oldest stored capture is from" in text and "`since previous`" in text


async def test_goroutine_as_a_heap_type_points_to_the_goroutines_command(runtime: Runtime
                                                                         ) -> None:
    reply = await run(runtime, console("top demo --type goroutine"))
    assert reply.error
    assert "`/heap goroutines SERVICE`" in reply.sections[0]
    assert await runtime.store.count("demo") == 0


async def test_history_counts_one_deploy_in_the_singular(runtime: Runtime) -> None:
    await run(runtime, console("capture demo"))
    await run(runtime, console("deploy demo v9"))
    await run(runtime, console("capture demo"))
    reply = await run(runtime, console("history demo"))
    assert not reply.error, reply.sections
    assert reply.context[0].endswith("· 1 deploy"), reply.context


async def test_leaks_capture_again_button_captures(runtime: Runtime) -> None:
    reply = await run(runtime, console("leaks demo --sample 3x1s"))
    assert not reply.error, reply.sections
    again = next(a for a in reply.actions if a.label == "Capture again")
    assert again.command == "capture demo"
    clicked = await run(runtime, console(again.command))
    assert clicked.title.startswith("Captured demo")
    if reply.table is not None:
        assert "(s)" not in reply.table.caption


async def test_peek_and_list_of_an_unreachable_service_say_so_once(tmp_path: Path,
                                                                  redis_url: str) -> None:
    from tests.support.redis import free_port

    config = tmp_path / "heapbot.yaml"
    config.write_text(f'services:\n  ghost:\n    targets: ["http://127.0.0.1:{free_port()}"]\n')
    rt = await Runtime.create(Settings(config_path=config, redis_url=redis_url,
                                       data_dir=tmp_path / "data"))
    try:
        for command in ("peek ghost main", "list ghost main"):
            reply = await run(rt, console(command))
            assert reply.error and len(reply.sections) == 1
            assert "No instance of `ghost`" in reply.sections[0]
            assert "Traceback" not in reply.sections[0]
    finally:
        await rt.close()


async def test_goroutines_recorded_without_a_stack_are_named_so(demo_service) -> None:
    import httpx

    async with httpx.AsyncClient() as client:
        served = await client.get(f"{demo_service.url}/debug/pprof/goroutine")
    profile = profile_pb2.Profile()
    profile.ParseFromString(gzip.decompress(served.content))
    served_stackless = sum(s.value[0] for s in profile.sample if not s.location_id)
    profile.sample.add(value=[2])  # Go records goroutines that are just starting like this
    report = parse_goroutines(gzip.compress(profile.SerializeToString()))
    stackless = [g for g in report.groups if not g.frames]
    assert [g.count for g in stackless] == [served_stackless + 2]
    assert waits_in(stackless[0]) == "(no stack recorded)"
    assert all(waits_in(g) != "(no stack recorded)" for g in report.groups if g.frames)


async def test_diff_since_deploy_says_which_capture_it_compares_with(runtime: Runtime) -> None:
    before = await run(runtime, console("capture demo"))
    await run(runtime, console("deploy demo v9"))
    first = await run(runtime, console("diff demo since deploy"))
    assert not first.error, first.sections
    assert first.data["base_snapshot_id"] == before.snapshot_id
    assert ", the last before deploy v9" in first.context[0]
    second = await run(runtime, console("diff demo since deploy"))
    assert second.data["base_snapshot_id"] == first.snapshot_id
    assert ", the first after deploy v9" in second.context[0]


async def test_a_reused_capture_names_the_command_that_takes_a_new_one(
        tmp_path: Path, redis_url: str, demo_service) -> None:
    config = tmp_path / "heapbot.yaml"
    config.write_text(f'services:\n  cool:\n    targets: ["{demo_service.url}"]\n'
                      "    cooldown_seconds: 600\n")
    rt = await Runtime.create(Settings(config_path=config, redis_url=redis_url,
                                       data_dir=tmp_path / "data"))
    try:
        first = await run(rt, console("top cool"))
        again = await run(rt, console("top cool"))
        assert again.snapshot_id == first.snapshot_id
        note = next(c for c in again.context if c.startswith("reused the capture"))
        command = note.split("`/heap ")[1].split("`")[0]
        assert command == "capture cool --force"
        fresh = await run(rt, console(command))
        assert not fresh.error and fresh.snapshot_id != first.snapshot_id
    finally:
        await rt.close()


def test_stats_takeaway_says_unchanged_rather_than_plus_zero(demo_service) -> None:
    from bot.analysis.memstats import parse_memstats
    from handlers.stats import takeaway

    now = dict(parse_memstats(demo_service.get("/debug/pprof/heap?debug=1")).fields)
    now["goroutines"] = parse_goroutines(demo_service.get("/debug/pprof/goroutine")).total
    same = takeaway(now, dict(now), "12:00:00 UTC")
    assert "(unchanged since 12:00:00 UTC)" in same and "(unchanged)" in same
    assert "+0" not in same and "(0 since" not in same
    grown = takeaway(now, {**now, "goroutines": now["goroutines"] - 5}, "12:00:00 UTC")
    assert f"{now['goroutines']:,} goroutines (+5)" in grown


async def test_goroutine_creator_column_says_created_by_only_when_the_dump_knows(
        runtime: Runtime, demo_service) -> None:
    from bot.analysis.goroutines import creator_heading

    reply = await run(runtime, console("goroutines demo 5"))
    assert not reply.error, reply.sections
    headings = [c.name for c in reply.table.columns]
    assert reply.data["source"] == "proto" and "created by" not in headings
    assert headings[-1] == "started in"
    # ?debug=2 names the goroutine that ran the `go` statement: there it is "created by"
    dump = parse_goroutines(demo_service.get("/debug/pprof/goroutine?debug=2"))
    assert creator_heading(dump.source) == "created by"
    blocked = next(g for g in dump.groups if g.wait_function == "main.blockedSendResult")
    assert blocked.creator != "main.blockedSendResult"  # the spawner, not the goroutine


async def test_a_malformed_snapshot_id_says_what_ids_look_like(runtime: Runtime) -> None:
    reply = await run(runtime, console("top demo --snapshot last-tuesday"))
    assert reply.error
    text = reply.sections[0]
    assert "`--snapshot last-tuesday` is not a snapshot id" in text and "since" not in text
    assert "`/heap history demo`" in text
    taken = await run(runtime, console("capture demo"))
    again = await run(runtime, console(f"top demo --snapshot {taken.snapshot_id}"))
    assert not again.error and again.snapshot_id == taken.snapshot_id
