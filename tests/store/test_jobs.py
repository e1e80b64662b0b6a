"""The Redis-stream job queue against a real redis-server."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from bot import keys
from bot.jobs import DEAD_LETTER, STREAM, JobQueue


async def test_enqueue_read_ack_empties_the_queue(redis_client: aioredis.Redis) -> None:
    queue = JobQueue(redis_client)
    job_id = await queue.enqueue("capture", {"service": "demo", "reason": "test"})
    assert job_id
    assert await queue.depth() == 1
    jobs = await queue.read("replica-a", block_ms=100)
    assert [(j.id, j.kind, j.payload) for j in jobs] == [
        (job_id, "capture", {"service": "demo", "reason": "test"})
    ]
    assert jobs[0].deliveries == 1
    assert await queue.depth() == 1  # read but not acked: still pending
    await queue.ack(jobs[0])
    assert await queue.depth() == 0
    assert await queue.read("replica-a", block_ms=50) == []


async def test_duplicate_delivery_is_dropped(redis_client: aioredis.Redis) -> None:
    queue = JobQueue(redis_client)
    first = await queue.enqueue("alert", {"group": "g1"}, dedupe_key="am:g1:firing")
    second = await queue.enqueue("alert", {"group": "g1"}, dedupe_key="am:g1:firing")
    other = await queue.enqueue("alert", {"group": "g1"}, dedupe_key="am:g1:resolved")
    assert first and other and second is None
    assert await redis_client.xlen(STREAM) == 2


async def test_pending_job_of_a_dead_consumer_is_claimed(redis_client: aioredis.Redis) -> None:
    queue = JobQueue(redis_client, claim_idle_ms=200)
    job_id = await queue.enqueue("capture", {"service": "demo"})
    taken = await queue.read("replica-dies", block_ms=100)
    assert [j.id for j in taken] == [job_id]
    # Not idle long enough yet: nobody may take it.
    assert await queue.claim_stale("replica-b") == []
    await asyncio.sleep(0.3)
    claimed = await queue.claim_stale("replica-b")
    assert [(j.id, j.deliveries) for j in claimed] == [(job_id, 2)]
    pending = await redis_client.xpending_range(STREAM, queue.group, "-", "+", 10)
    assert [(p["message_id"].decode(), p["consumer"].decode()) for p in pending] == [
        (job_id, "replica-b")
    ]
    await queue.ack(claimed[0])
    assert await queue.depth() == 0


async def test_a_replica_never_takes_over_or_dead_letters_its_own_running_job(
        redis_client: aioredis.Redis) -> None:
    """A stalled event loop whose heartbeat came late: the claim on the same replica finds
    its own job idle. It stays running there, on its delivery, not dead-lettered.

    Seen in tests/alerts/test_worker.py under load (1 run in 22): a capture failing on
    its last allowed delivery was dead-lettered as "delivered 3 times" while it still ran,
    so the dead letter said nothing of why it failed."""
    queue = JobQueue(redis_client, claim_idle_ms=100, max_deliveries=1)
    job_id = await queue.enqueue("capture", {"service": "demo"})
    (job,) = await queue.read("replica-a", block_ms=100)
    await asyncio.sleep(0.2)  # no heartbeat: idle past claim_idle_ms
    assert await queue.claim_stale("replica-a", running={job_id}) == []
    assert await queue.dead_jobs() == []
    pending = await redis_client.xpending_range(STREAM, queue.group, "-", "+", 10)
    assert [(p["consumer"].decode(), p["times_delivered"]) for p in pending] == [
        ("replica-a", 1)]
    assert await queue.fail(job, "capture failed: connection refused")  # its own reason
    (dead,) = await queue.dead_jobs()
    assert dead["job_id"] == job_id and "connection refused" in dead["reason"]


async def test_poison_job_goes_to_dead_letter(redis_client: aioredis.Redis) -> None:
    queue = JobQueue(redis_client, claim_idle_ms=50, max_deliveries=3)
    job_id = await queue.enqueue("capture", {"service": "broken"})
    runs = 0
    jobs = await queue.read("a", block_ms=100)
    while jobs:
        runs += 1
        dead = await queue.fail(jobs[0], "capture failed: connection refused")
        if dead:
            break
        await asyncio.sleep(0.08)
        jobs = await queue.claim_stale("b")
    assert runs == 3
    assert await queue.depth() == 0
    dead_jobs = await queue.dead_jobs()
    assert len(dead_jobs) == 1
    assert dead_jobs[0]["job_id"] == job_id
    assert dead_jobs[0]["kind"] == "capture"
    assert "connection refused" in dead_jobs[0]["reason"]
    assert await redis_client.xlen(DEAD_LETTER) == 1


async def test_progress_is_kept_per_job_until_ack(redis_client: aioredis.Redis) -> None:
    queue = JobQueue(redis_client)
    await queue.enqueue("alert", {"service": "demo"})
    (job,) = await queue.read("a", block_ms=100)
    assert await queue.progress(job) == {}
    await queue.record_step(job, "summary", "1700000000.000100")
    assert await queue.progress(job) == {"summary": "1700000000.000100"}
    await queue.ack(job)
    assert await queue.progress(job) == {}
    # A replica that lost the job while it stalled, back after the ack, writes nothing back
    # (before: a progress hash no job would ever delete, kept a week).
    await queue.record_step(job, "top", "1700000000.000200")
    assert await redis_client.exists(keys.job_progress(job.id)) == 0
