"""One leak verdict: `/heap leaks`, a watch tick and a paged thread judge the same way.

The captures are stored in a real Redis as heapbot stores them; half of them were
stored without a heap summary (only their raw heap profiles), which the verdict
must read back from the profiles wherever it is asked for.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import handlers
from bot.analysis.summary import ProfileSummary
from bot.store import InstanceMeta, StoredSnapshot
from tests.analysis.test_leaks import BACKGROUND, MB, captures, fills, grows
from tests.support.heap import heap_profile
from tests.support.runtime import UNREACHABLE, runtime_on, service_registry, work_context


@pytest.fixture
async def runtime(tmp_path: Path, redis_url: str) -> AsyncIterator[Any]:
    async with runtime_on(service_registry(tmp_path, "payments", [UNREACHABLE],
                                           channel="C0PAY"), redis_url) as rt:
        yield rt


async def store_history(runtime: Any) -> StoredSnapshot:
    """10 captures: an append-only audit log grows, a cache fills and stops."""
    series = captures(10, {**BACKGROUND, "main.auditAppend": grows(MB, MB),
                           "main.cachePut": fills(0, 3 * MB, 9 * MB)},
                      {"main.start;main.sendResult": ("chan send", grows(10, 40))})
    last = None
    for i, summary in enumerate(series):
        inuse = {fv.function: fv.flat for fv in summary.heap.functions["inuse_space"]}
        raw = {(0, "heap"): heap_profile(inuse)}
        if i % 2:  # stored while the summarizer was missing: only the raw profile
            summary.heap = ProfileSummary()
        last = StoredSnapshot(
            id=f"20270115-0000{i:02d}-{i:04x}", service="payments", taken_at=summary.taken_at,
            instances=[InstanceMeta(target="http://127.0.0.1:9", ok=True, kinds=["heap"])],
            goroutine_total=summary.goroutine_total, memstats=dict(summary.memstats),
            summary=summary)
        summary.snapshot_id = last.id
        await runtime.store.save(last, raw, retention_days=10_000)
    assert last is not None
    return last


async def test_leaks_watch_and_paged_thread_give_the_same_verdict(runtime: Any) -> None:
    from bot.alerts.paged import _leak_line
    from bot.alerts.watches import _alarm
    from bot.watchlist import Watch

    latest = await store_history(runtime)
    reply = await handlers.run(runtime, handlers.Invocation("leaks payments"))
    assert reply.title == "payments: leak likely", reply.summary
    shown = [row[0] for row in reply.table.rows]
    assert "main.auditAppend" in shown and "main.cachePut" not in shown
    report = await runtime.leak_report("payments")
    assert [s.function for s in report.suspects] == shown
    top = report.suspects[0].function

    ctx = work_context(runtime=runtime)
    state, why = await _alarm(ctx, Watch("payments", 60.0, "C0PAY",
                                         goroutine_threshold=10**9), latest)
    assert state == "leak likely"
    assert f"`{top}`" in why

    line = await _leak_line(ctx, "payments")
    assert line.startswith("Top leak suspect (leak likely)")
    assert f"`{top}`" in line
