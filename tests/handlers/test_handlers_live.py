"""/heap handlers against real parts: the demo Go service over HTTP, a real Redis.

Expected numbers are never written down: each test recomputes them from the
stored raw bytes with the engine (the same code `go tool pprof` is checked
against) and compares them with what the user would see in the reply.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.analysis.goroutines import parse_goroutines
from bot.analysis.memstats import merge_memstats, parse_memstats
from bot.render.blocks import fallback_text, reply_to_blocks
from bot.runtime import Runtime
from handlers import Invocation, run
from tests.support.runtime import runtime_on

pytestmark = pytest.mark.slow


def registry_yaml(cluster: list, single) -> str:
    targets = ", ".join(f'"{d.url}"' for d in cluster)
    return f"""
services:
  demo:
    targets: [{targets}]
    aliases: [dm]
    cooldown_seconds: 0
  single:
    targets: ["{single.url}"]
    cooldown_seconds: 0
  locked:
    targets: ["{single.url}"]
    cooldown_seconds: 0
    allow_channels: [C0ALLOWED]
"""


@pytest.fixture
async def runtime(tmp_path: Path, redis_url: str, demo_cluster, demo_service
                  ) -> AsyncIterator[Runtime]:
    config = tmp_path / "heapbot.yaml"
    config.write_text(registry_yaml(demo_cluster, demo_service))
    async with runtime_on(config, redis_url) as rt:
        yield rt


def slack(text: str, channel: str = "C0ALLOWED") -> Invocation:
    return Invocation(text=text, user_id="U0TEST", channel_id=channel, source="slack")


def column(reply, name: str) -> list[str]:
    index = [c.name for c in reply.table.columns].index(name)
    return [row[index] for row in reply.table.rows]


async def wait_for_goroutine(cluster: list, function: str, timeout: float = 20.0) -> None:
    """Until every demo instance has started a goroutine in ``function`` (a fresh demo
    may not have yet: the scenarios tick every few hundred milliseconds)."""
    import asyncio
    import time

    deadline = time.monotonic() + timeout
    while not all(function in d.get("/debug/pprof/goroutine?debug=1").decode()
                  for d in cluster):
        assert time.monotonic() < deadline, f"no demo goroutine in {function} yet"
        await asyncio.sleep(0.2)


async def test_goroutines_groups_match_the_stored_dumps(runtime: Runtime, demo_cluster) -> None:
    await wait_for_goroutine(demo_cluster, "main.blockedSendResult")
    await wait_for_goroutine(demo_cluster, "main.tickerPollUntilDone")
    reply = await run(runtime, slack("goroutines demo 50"))
    assert not reply.error, reply.sections
    assert reply.service == "demo"
    assert "3/3 instances" in reply.context[0]

    blobs = await runtime.store.raw_profiles("demo", reply.snapshot_id, "goroutine")
    assert len(blobs) == 3
    reports = [parse_goroutines(blob) for _, blob in blobs]
    total = sum(r.total for r in reports)
    assert reply.data["total"] == total
    assert f"{total:,} goroutines" in reply.title

    waits = column(reply, "waits in")
    states = column(reply, "state")
    counts = [int(c.replace(",", "")) for c in column(reply, "goroutines")]
    assert counts == sorted(counts, reverse=True)
    blocked = waits.index("main.blockedSendResult")
    assert states[blocked] == "chan send"
    expected = sum(g.count for r in reports for g in r.groups
                   if g.wait_function == "main.blockedSendResult")
    assert counts[blocked] == expected
    assert "main.tickerPollUntilDone" in waits

    blocks = reply_to_blocks(reply)
    table = next(b for b in blocks if b["type"] == "table")
    assert any(cell["text"] == "main.blockedSendResult" for row in table["rows"] for cell in row)
    assert "main.blockedSendResult" in fallback_text(reply)


async def test_stats_show_memstats_and_the_change(runtime: Runtime) -> None:
    from bot.units import format_value

    first = await run(runtime, slack("stats demo"))
    second = await run(runtime, slack("memstats dm"))
    assert not first.error and not second.error, (first.sections, second.sections)

    def merged(snapshot_id: str) -> dict[str, int]:
        return merged_by_id[snapshot_id]

    merged_by_id = {}
    for reply in (first, second):
        texts = await runtime.store.raw_profiles("demo", reply.snapshot_id, "memstats")
        merged_by_id[reply.snapshot_id] = merge_memstats(
            [parse_memstats(t) for _, t in texts]).fields

    fields = column(second, "field")
    now = dict(zip(fields, column(second, "now"), strict=True))
    before_column = next(c.name for c in second.table.columns if c.name.startswith("at "))
    before = dict(zip(fields, column(second, before_column), strict=True))
    latest, earlier = merged(second.snapshot_id), merged(first.snapshot_id)
    for name in ("HeapInuse", "HeapAlloc", "HeapIdle", "HeapReleased", "Sys", "NextGC"):
        assert now[name] == format_value(latest[name], "bytes"), name
        assert before[name] == format_value(earlier[name], "bytes"), name
    assert now["NumGC"] == f"{latest['NumGC']:,}"
    assert "goroutines" in fields
    assert "HeapInuse" in second.summary
    assert second.data["memstats"]["HeapInuse"] == latest["HeapInuse"]
    assert second.data["previous"]["HeapInuse"] == earlier["HeapInuse"]


async def test_access_refused_means_no_capture(runtime: Runtime) -> None:
    refused = await run(runtime, slack("stats locked", channel="C0ELSEWHERE"))
    assert refused.error and refused.ephemeral
    assert await runtime.store.count("locked") == 0
    allowed = await run(runtime, slack("stats locked", channel="C0ALLOWED"))
    assert not allowed.error
    assert await runtime.store.count("locked") == 1


async def test_unknown_service_and_bad_since(runtime: Runtime) -> None:
    unknown = await run(runtime, slack("goroutines dmeo"))
    assert unknown.error and "Did you mean `demo`" in unknown.sections[0]
    assert await runtime.store.count("demo") == 0


def pprof_top_rows(raw_profile: bytes, tmp_path: Path, *args: str) -> list[list[str]]:
    """Rows of `go tool pprof -top` on the same bytes: [flat, flat%, sum%, cum, cum%, name]."""
    import subprocess

    from bot.gotool import find_go, go_env

    path = tmp_path / "heap.pb.gz"
    path.write_bytes(raw_profile)
    done = subprocess.run([find_go(), "tool", "pprof", "-top", *args, str(path)],
                          capture_output=True, text=True, env=go_env(), timeout=120, check=True)
    lines = done.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:1] == ["flat"]) + 1
    rows = [line.split(None, 5) for line in lines[start:] if line.strip()]
    for row in rows:  # pprof marks functions only ever seen inlined; the name is the same
        row[5] = row[5].removesuffix(" (inline)")
    return rows


async def test_top_table_equals_the_engine_and_pprof(runtime: Runtime, tmp_path: Path) -> None:
    from bot.analysis.top import TopOptions, top

    reply = await run(runtime, slack("top single 12"))
    assert not reply.error, reply.sections
    snapshot = await runtime.get("single", reply.snapshot_id)
    expected = top(await runtime.load_profile(snapshot), TopOptions(node_count=12))
    assert column(reply, "function") == [r.function for r in expected.rows]
    assert reply.data["rows"] == expected.to_json()["rows"]
    assert reply.data["total"] == expected.total
    assert "1/1 instances" in reply.context[0]

    raw = await runtime.store.raw_profile("single", reply.snapshot_id, 0, "heap")
    pprof_rows = pprof_top_rows(raw, tmp_path, "-nodecount=12")
    shown = [[r[1], r[2], r[3], r[4], r[5], r[0]] for r in reply.table.rows]
    assert shown == pprof_rows

    blocks = reply_to_blocks(reply)
    table = next(b for b in blocks if b["type"] == "table")
    assert [row[0]["text"] for row in table["rows"][1:]] == [r.function for r in expected.rows]
    assert table["rows"][1][1]["text"] == reply.table.rows[0][1]
    labels = [e["text"]["text"] for b in blocks if b["type"] == "actions" for e in b["elements"]]
    assert labels[:4] == ["Diff vs previous", "Goroutines", "Leaks", "Capture again"]


async def test_top_merges_every_instance_and_sorts_by_cum(runtime: Runtime) -> None:
    from bot.analysis.top import TopOptions, top
    from bot.pprof import merge_profiles, parse_profile

    reply = await run(runtime, slack("top demo 15 --cum --type alloc_space"))
    assert not reply.error, reply.sections
    assert "3/3 instances" in reply.context[0]
    raws = await runtime.store.raw_profiles("demo", reply.snapshot_id, "heap")
    assert len(raws) == 3
    merged = merge_profiles([parse_profile(b) for _, b in raws])
    expected = top(merged, TopOptions(sample_type="alloc_space", sort="cum", node_count=15))
    assert reply.data["rows"] == expected.to_json()["rows"]
    assert reply.data["sample_type"] == "alloc_space"
    cums = [r["cum"] for r in reply.data["rows"]]
    assert cums == sorted(cums, reverse=True)


async def test_top_focus_and_takeaway_against_the_previous_capture(runtime: Runtime) -> None:
    first = await run(runtime, slack("top single"))
    second = await run(runtime, slack("top single"))
    assert not first.error and not second.error
    leader = max(second.data["rows"], key=lambda r: abs(r["flat"]))
    assert second.summary.startswith(leader["function"])
    assert "since" in second.summary  # the change vs the first capture
    # the total's change reads as a clause, never "(… since 12:00:01 UTC (0.2 s before …))"
    import re

    assert re.search(r"\. Total \S+, \S+ since \d\d:\d\d:\d\d UTC", second.summary), \
        second.summary
    assert "))" not in second.summary
    # Focus on a function this young process has surely sampled (a fixed name such as
    # leakmap may have no sample yet), and check the rows against the engine's own.
    from bot.analysis.top import TopOptions, top

    focus = re.escape(leader["function"])
    focused = await run(runtime, slack(f"top single --focus {focus}"))
    assert not focused.error, focused.sections
    profile = await runtime.load_profile(await runtime.get("single", focused.snapshot_id))
    expected = top(profile, TopOptions(focus=focus, node_count=10))
    assert expected.rows and column(focused, "function") == [r.function for r in expected.rows]
    assert leader["function"] in column(focused, "function")


async def test_download_attaches_one_merged_profile_equal_to_the_table(runtime: Runtime) -> None:
    import gzip

    from bot.analysis.top import TopOptions, top
    from bot.pprof import parse_profile

    first = await run(runtime, slack("top single 3"))
    download = next(a for a in first.actions if a.label == "Download profile")
    again = await run(runtime, slack(download.command))
    assert not again.error, again.sections
    assert again.snapshot_id == first.snapshot_id  # no new capture
    assert await runtime.store.count("single") == 1
    (attachment,) = again.attachments
    assert attachment.filename == f"single-{first.snapshot_id}-heap.pb.gz"
    assert attachment.content[:2] == b"\x1f\x8b"
    stored = await runtime.store.raw_profile("single", first.snapshot_id, 0, "heap")
    assert parse_profile(attachment.content).totals() == parse_profile(stored).totals()

    # Three instances: still ONE file, the merge, whose top is the service's table.
    cluster = await run(runtime, slack("top demo 0"))
    files = await run(runtime, slack(next(a.command for a in cluster.actions
                                          if a.label == "Download profile") + " 0"))
    assert not files.error, files.sections
    assert len(await runtime.store.raw_profiles("demo", cluster.snapshot_id, "heap")) == 3
    (merged,) = files.attachments
    assert merged.filename == f"demo-{cluster.snapshot_id}-heap.pb.gz"
    assert gzip.decompress(merged.content)  # a whole gzip stream
    downloaded = parse_profile(merged.content)
    assert column(files, "function") == column(cluster, "function")
    assert files.table.rows == cluster.table.rows
    for sample_type in ("inuse_space", "alloc_objects"):
        theirs = top(downloaded, TopOptions(sample_type=sample_type)).to_json()
        ours = top(await runtime.load_profile(await runtime.get("demo", cluster.snapshot_id)),
                   TopOptions(sample_type=sample_type)).to_json()
        assert theirs == ours and theirs["rows"]
    shown = top(downloaded, TopOptions())  # the default type, every row: what the table shows
    assert column(cluster, "function") == [r.function for r in shown.rows]

    # --per-instance keeps each instance's raw file, clearly named, byte for byte.
    raw = await run(runtime, slack(f"top demo --snapshot {cluster.snapshot_id} --per-instance"))
    stored_all = await runtime.store.raw_profiles("demo", cluster.snapshot_id, "heap")
    assert [a.filename for a in raw.attachments] == [
        f"demo-{cluster.snapshot_id}-i{i}-heap.pb.gz" for i in range(3)]
    for attachment, (_, data) in zip(raw.attachments, stored_all, strict=True):
        unpacked = gzip.decompress(attachment.content)
        assert unpacked == (gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data)


async def test_diff_equals_the_engine_on_both_snapshots(runtime: Runtime) -> None:
    from bot.analysis.diff import diff
    from bot.analysis.top import TopOptions

    first = await run(runtime, slack("top demo 3"))
    reply = await run(runtime, slack("diff demo since previous"))
    assert not reply.error, reply.sections
    assert reply.data["base_snapshot_id"] == first.snapshot_id
    base = await runtime.load_profile(await runtime.get("demo", first.snapshot_id))
    new = await runtime.load_profile(await runtime.get("demo", reply.snapshot_id))
    expected = diff(base, new, TopOptions(node_count=10))
    assert reply.data["rows"] == expected.to_json()["rows"]
    assert column(reply, "function") == [r.function for r in expected.rows]
    assert reply.summary.startswith(("Biggest growth", "Nothing grew", "No function"))


async def test_diff_without_history_says_what_to_do(runtime: Runtime) -> None:
    reply = await run(runtime, slack("diff single since deploy"))
    assert reply.error
    assert "No deploy of `single` is recorded" in reply.sections[0]
    # refused before capturing: no capture spent, `/heap history` shows nothing new
    assert await runtime.store.count("single") == 0


async def test_peek_and_list_match_the_engine(runtime: Runtime) -> None:
    import re

    from bot.analysis.listing import list_lines
    from bot.analysis.peek import peek

    # the function that holds the most right now: the demo's leaks keep it there
    leading = (await run(runtime, slack("top demo 1"))).data["rows"][0]["function"]
    regex = "^" + re.escape(leading) + "$"
    peeked = await run(runtime, slack(f"peek demo '{regex}'"))
    assert not peeked.error, peeked.sections
    profile = await runtime.load_profile(await runtime.get("demo", peeked.snapshot_id))
    expected = peek(profile, regex)
    assert peeked.data["entries"] == expected.to_json()["entries"]
    roles = column(peeked, "")
    functions = column(peeked, "function")
    assert functions[roles.index("▶")] == leading
    assert [f for r, f in zip(roles, functions, strict=True) if r == "caller"] == [
        e.function for e in expected.entries[0].callers]

    listed = await run(runtime, slack(next(a.command for a in peeked.actions
                                           if a.label == "List lines")))
    assert not listed.error, listed.sections
    profile = await runtime.load_profile(await runtime.get("demo", listed.snapshot_id))
    expected_list = list_lines(profile, regex)
    assert listed.data["functions"] == expected_list.to_json()["functions"]
    line_rows = [r for r in column(listed, "function / line") if r.strip().startswith("line ")]
    # one block per matching function (a function can be listed from several files),
    # largest cum first, its heaviest lines in line order
    from handlers.listing import MAX_FUNCTIONS, MAX_LINES

    shown = sorted(expected_list.functions, key=lambda f: -abs(f.cum))[:MAX_FUNCTIONS]
    assert line_rows == [
        f"    line {x.line}" for f in shown
        for x in sorted(sorted(f.lines, key=lambda x: -abs(x.flat or x.cum))[:MAX_LINES],
                        key=lambda x: x.line)]

    missing = await run(runtime, slack("peek demo nosuchfunction"))
    assert missing.error and "No function matches" in missing.sections[0]


async def test_diff_since_deploy_and_since_an_hour(runtime: Runtime) -> None:
    await run(runtime, slack("top single 1"))
    deployed = await run(runtime, slack("deploy single v2"))
    assert not deployed.error, deployed.sections
    after_deploy = await run(runtime, slack("top single 1"))
    reply = await run(runtime, slack("diff single since deploy"))
    assert not reply.error, reply.sections
    assert reply.data["base_snapshot_id"] == after_deploy.snapshot_id
    assert reply.data["since"] == "deploy"
    stored = await runtime.store.count("single")
    too_old = await run(runtime, slack("diff single 1h"))
    assert too_old.error and "1h ago" in too_old.sections[0]
    assert await runtime.store.count("single") == stored  # refused before any capture
    nonsense = await run(runtime, slack("diff single since yesterdayish"))
    assert nonsense.error and "yesterdayish" in nonsense.sections[0]
