"""A save stages its profiles one command each, then renames them into place in one
MULTI/EXEC: whole or not at all, on one server and on the Cluster, including a crash or a
lost connection between the two steps; and it no longer holds 4x the capture in memory."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from bot import keys
from bot.errors import NotFoundError, StoreError
from bot.store import InstanceMeta, SnapshotStore, StoredSnapshot, new_snapshot_id
from tests.support.redis import RedisCluster, all_keys

REPO = Path(__file__).resolve().parents[2]
SERVICE = "fleet"


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[SnapshotStore]:
    store = SnapshotStore.from_url(redis_url)
    yield store
    await store.close()


def fleet_snapshot(instances: int, taken_at: float | None = None) -> StoredSnapshot:
    at = time.time() if taken_at is None else taken_at
    return StoredSnapshot(
        id=new_snapshot_id(at), service=SERVICE, taken_at=at, trigger="user",
        requested_by="U1",
        instances=[InstanceMeta(target=f"http://10.0.0.{i}:6060", ok=True, kinds=["heap"])
                   for i in range(instances)])


def bodies(instances: int, size: int, seed: int = 0) -> dict[tuple[int, str], bytes]:
    """Distinct gzip-looking bodies (stored as they are, like Go's profiles)."""
    return {(i, "heap"): b"\x1f\x8b" + bytes([(seed + i) % 256]) * size
            for i in range(instances)}


async def wait_until(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout} s")
        await asyncio.sleep(0.1)


def patch_commit(store: SnapshotStore, monkeypatch: pytest.MonkeyPatch,
                 before: Callable[[], Awaitable[None]]) -> list[int]:
    """Run ``before`` once, when the save's commit starts (its WATCH): after staging."""
    pipeline_class: Any = type(store.redis.pipeline(transaction=True))
    original = pipeline_class.watch
    calls: list[int] = []

    async def watch(self: Any, *names: Any) -> Any:
        calls.append(len(names))
        if len(calls) == 1:
            await before()
        return await original(self, *names)

    monkeypatch.setattr(pipeline_class, "watch", watch)
    return calls


_CRASHING_CHILD = r"""
import asyncio, sys, time
sys.path.insert(0, sys.argv[1])
from bot import keys
from bot.store import InstanceMeta, SnapshotStore, StoredSnapshot

async def main():
    store = SnapshotStore.from_url(sys.argv[2])
    store.staging_ttl = float(sys.argv[4])
    pipeline_class = type(store.redis.pipeline(transaction=True))

    async def watch(self, *names):  # the commit starts: everything is staged
        # read at once by another client: the parent may run much later on a loaded machine
        staging = keys.snapshot_staging("fleet", sys.argv[3])
        probe = SnapshotStore.from_url(sys.argv[2]).redis
        print("staged", await probe.hlen(staging), await probe.pttl(staging), flush=True)
        await asyncio.sleep(3600)  # SIGKILLed here
    pipeline_class.watch = watch
    n = int(sys.argv[5])
    snap = StoredSnapshot(id=sys.argv[3], service="fleet", taken_at=time.time(),
                          instances=[InstanceMeta(target=f"i{i}", ok=True) for i in range(n)])
    await store.save(snap, {(i, "heap"): b"\x1f\x8b" + bytes([i]) * 65536 for i in range(n)})

asyncio.run(main())
"""


async def test_a_crash_between_staging_and_commit_leaves_no_snapshot_and_staging_expires(
        store: SnapshotStore, redis_client: aioredis.Redis, redis_url: str) -> None:
    """SIGKILL of the saving process after every profile is staged, before the commit:
    history shows nothing, the id is unknown, and the staged bytes expire on their own."""
    snap_id = new_snapshot_id(time.time())
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _CRASHING_CHILD, str(REPO), redis_url, snap_id, "3", "6",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        assert child.stdout is not None
        line = await asyncio.wait_for(child.stdout.readline(), 60)
        assert line.startswith(b"staged "), (
            line, await child.stderr.read() if child.stderr else b"")
    finally:
        if child.returncode is None:
            child.send_signal(signal.SIGKILL)
        await child.wait()
    _, fields, ttl_ms = line.split()
    assert int(fields) == 6  # every profile was sent before the crash ...
    assert 0 < int(ttl_ms) <= 3000  # ... into a hash on its way out
    staging = keys.snapshot_staging(SERVICE, snap_id)
    assert await store.list(SERVICE, 0) == []
    assert await store.latest(SERVICE) is None
    with pytest.raises(NotFoundError, match=snap_id):
        await store.get(SERVICE, snap_id)
    assert set(await all_keys(redis_client, "heapbot:*")) <= {staging.encode()}

    async def gone() -> bool:
        return await all_keys(redis_client, "heapbot:*") == []

    await wait_until(gone, 60, "the staged profiles did not expire")


async def test_a_connection_lost_between_staging_and_commit_stores_it_whole_once(
        store: SnapshotStore, redis_client: aioredis.Redis, redis_server: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The store's connections are killed once everything is staged: the client reconnects
    and the commit stores the snapshot whole, with no staging hash left behind."""
    if isinstance(redis_server, RedisCluster):
        pytest.skip("CLIENT KILL of one server's clients; tests/store/test_cluster.py "
                    "kills a Cluster master mid-capture")
    await store.ping()  # the store has a connection to lose
    killer = aioredis.Redis.from_url(redis_server.url)

    async def kill_store_connections() -> None:
        assert await killer.client_kill_filter(_type="normal", skipme=True) >= 1

    patch_commit(store, monkeypatch, kill_store_connections)
    snap = fleet_snapshot(5)
    raw = bodies(5, 100_000)
    try:
        await store.save(snap, raw)
    finally:
        await killer.aclose()
    assert [s.id for s in await store.list(SERVICE, 0)] == [snap.id]
    assert await store.raw_profiles(SERVICE, snap.id) == [(i, raw[(i, "heap")])
                                                           for i in range(5)]
    assert await all_keys(redis_client, "heapbot:*") == sorted(
        [keys.snapshot(SERVICE, snap.id).encode(), keys.snapshot_index(SERVICE).encode()])


async def test_profiles_lost_after_staging_are_sent_again_before_the_commit(
        store: SnapshotStore, redis_client: aioredis.Redis,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A staged profile gone before the commit (its TTL ran out, or a failover lost the
    last writes): the commit sees the staging hash short, sends it again, stores it whole."""
    snap = fleet_snapshot(4)
    staging = keys.snapshot_staging(SERVICE, snap.id)

    async def lose_one() -> None:
        assert await redis_client.hdel(staging, "raw:2:heap") == 1

    calls = patch_commit(store, monkeypatch, lose_one)
    raw = bodies(4, 50_000)
    await store.save(snap, raw)
    assert len(calls) == 2  # the short staging hash was caught, staged again, committed
    assert await store.raw_profiles(SERVICE, snap.id) == [(i, raw[(i, "heap")])
                                                           for i in range(4)]
    assert not await redis_client.exists(staging)


def patch_first_commit(store: SnapshotStore, monkeypatch: pytest.MonkeyPatch,
                       around: Callable[[Any, Callable[[], Awaitable[Any]]], Awaitable[Any]]
                       ) -> None:
    """Wrap the EXEC of the save's first commit (the first transaction pipeline that
    watched keys) in ``around(pipe, execute)``."""
    pipeline_class: Any = type(store.redis.pipeline(transaction=True))
    original_watch, original_execute = pipeline_class.watch, pipeline_class.execute
    state = {"watched": 0, "wrapped": False}

    async def watch(self: Any, *names: Any) -> Any:
        state["watched"] += 1
        self._heapbot_commit = state["watched"] == 1
        return await original_watch(self, *names)

    async def execute(self: Any, *args: Any, **kwargs: Any) -> Any:
        if getattr(self, "_heapbot_commit", False) and not state["wrapped"]:
            state["wrapped"] = True
            return await around(self, lambda: original_execute(self, *args, **kwargs))
        return await original_execute(self, *args, **kwargs)

    monkeypatch.setattr(pipeline_class, "watch", watch)
    monkeypatch.setattr(pipeline_class, "execute", execute)


async def test_a_commit_whose_reply_was_lost_is_not_done_twice(
        store: SnapshotStore, redis_client: aioredis.Redis,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The EXEC committed, the reply never came (redis-py then raises WatchError on a
    watching pipeline, or the failover retry runs the save again): the save does not
    upload and commit a second time, which used to count the snapshot against retention
    twice and strip the new snapshot's own raw files (keep_raw=1)."""
    from redis.exceptions import WatchError

    store.keep_raw = 1
    base = time.time() - 100
    first = fleet_snapshot(2, base)
    await store.save(first, bodies(2, 20_000), retention_count=2)

    async def lost_reply(pipe: Any, execute: Callable[[], Awaitable[Any]]) -> Any:
        await execute()
        raise WatchError("the connection was lost while reading the EXEC reply")

    patch_first_commit(store, monkeypatch, lost_reply)
    second = fleet_snapshot(2, base + 10)
    raw = bodies(2, 20_000, seed=7)
    await store.save(second, raw, retention_count=2)
    assert [s.id for s in await store.list(SERVICE, 0)] == [second.id, first.id]
    assert await store.raw_profiles(SERVICE, second.id) == [(i, raw[(i, "heap")])
                                                            for i in range(2)]
    assert not await redis_client.exists(keys.snapshot_staging(SERVICE, second.id))


async def test_a_commit_sent_without_its_watch_never_indexes_a_half_snapshot(
        store: SnapshotStore, redis_client: aioredis.Redis, redis_server: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """redis-py's cluster pipeline resends a transaction on a new connection after a
    failover, without the WATCH; the new master may lack staged profiles (replication is
    asynchronous). Here the WATCH is left off and a staged profile is lost just before
    the EXEC: the commit checks on the server, stages again and stores the snapshot whole
    (it used to rename the short hash into place: a snapshot with 2 of 3 profiles)."""
    if isinstance(redis_server, RedisCluster):
        pytest.skip("UNWATCH on the pipeline's one connection; the Cluster's resend needs a "
                    "failover at the EXEC, and runs the same server-side check")
    snap = fleet_snapshot(3)
    staging = keys.snapshot_staging(SERVICE, snap.id)

    async def unwatched_and_short(pipe: Any, execute: Callable[[], Awaitable[Any]]) -> Any:
        # what the cluster's resend amounts to: the same MULTI/EXEC, no WATCH held
        await pipe.connection.send_command("UNWATCH")
        assert await pipe.connection.read_response() in (b"OK", "OK")
        await redis_client.hdel(staging, "raw:1:heap")
        return await execute()

    patch_first_commit(store, monkeypatch, unwatched_and_short)
    raw = bodies(3, 30_000)
    await store.save(snap, raw)
    assert [s.id for s in await store.list(SERVICE, 0)] == [snap.id]
    assert await store.raw_profiles(SERVICE, snap.id) == [(i, raw[(i, "heap")])
                                                           for i in range(3)]


async def test_readers_never_see_a_partial_snapshot_while_saves_run(
        store: SnapshotStore, redis_url: str) -> None:
    """History, get and raw_profiles read concurrently with ten 8-instance saves: every
    snapshot a reader finds has its meta and all 8 profiles, byte for byte."""
    instances, saves = 8, 10
    expected: dict[str, dict[tuple[int, str], bytes]] = {}
    reader_store = SnapshotStore.from_url(redis_url)
    seen: set[str] = set()
    done = asyncio.Event()

    async def read() -> None:
        while True:
            finished = done.is_set()  # one more pass once the saves are done
            for listed in await reader_store.list(SERVICE, 0):
                got = await reader_store.get(SERVICE, listed.id)
                assert len(got.instances) == instances
                profiles = await reader_store.raw_profiles(SERVICE, listed.id)
                assert profiles == [(i, expected[listed.id][(i, "heap")])
                                    for i in range(instances)], listed.id
                seen.add(listed.id)
            if finished:
                return
            await asyncio.sleep(0)

    async def write() -> None:
        try:
            base = time.time() - saves
            for n in range(saves):
                snap = fleet_snapshot(instances, base + n)
                expected[snap.id] = bodies(instances, 200_000, seed=n)
                await store.save(snap, expected[snap.id])
                await asyncio.sleep(0.01)
        finally:
            done.set()

    try:
        await asyncio.gather(read(), read(), write())
    finally:
        await reader_store.close()
    assert seen == set(expected) and len(seen) == saves


async def test_a_snapshot_saved_in_one_hset_before_staging_reads_back(
        store: SnapshotStore, redis_client: aioredis.Redis) -> None:
    """Snapshots written by the one-MULTI/EXEC save (meta, summary and raw fields in one
    HSET, no staging) read back through every reader, and a new save trims them as before."""
    old = fleet_snapshot(2, time.time() - 60)
    raw = bodies(2, 1000)
    key = keys.snapshot(SERVICE, old.id)
    await redis_client.hset(key, mapping={
        "meta": json.dumps(old.meta_dict()),
        **{f"raw:{i}:{kind}": data for (i, kind), data in raw.items()}})
    await redis_client.zadd(keys.snapshot_index(SERVICE), {old.id: old.taken_at})
    assert [s.id for s in await store.list(SERVICE, 0)] == [old.id]
    assert (await store.get(SERVICE, old.id)).meta_dict() == old.meta_dict()
    assert await store.raw_profiles(SERVICE, old.id) == [(0, raw[(0, "heap")]),
                                                          (1, raw[(1, "heap")])]
    new = fleet_snapshot(2)
    await store.save(new, bodies(2, 1000, seed=7), retention_count=1)
    assert [s.id for s in await store.list(SERVICE, 0)] == [new.id]
    assert not await redis_client.exists(key)


async def test_a_profile_redis_cannot_hold_in_one_value_is_one_clear_error(
        store: SnapshotStore, redis_client: aioredis.Redis) -> None:
    """Above proto-max-bulk-len Redis drops the connection; heapbot says why first and
    writes nothing."""
    store.max_value_bytes = 1 << 20  # stands for Redis's 512 MiB, with a 2 MiB profile
    with pytest.raises(StoreError) as caught:
        await store.save(fleet_snapshot(2), bodies(2, 2 << 20))
    message = str(caught.value) + " " + (caught.value.hint or "")
    assert "raw:0:heap" in message and "2 MiB" in message
    assert "proto-max-bulk-len" in message and "max_profile_bytes" in message
    assert await all_keys(redis_client, "heapbot:*") == []


async def traced_peak_of_save(store: SnapshotStore, snapshot: StoredSnapshot,
                              raw: dict[tuple[int, str], bytearray]) -> int:
    """Peak bytes Python allocated while saving ``raw`` (connected first, so the
    connection's own buffers are not counted), before ``snapshot`` in the history."""
    await store.save(fleet_snapshot(1, snapshot.taken_at - 1), {(0, "heap"): b"\x1f\x8bwarm"})
    tracemalloc.start()
    try:
        await store.save(snapshot, raw)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


async def test_saving_a_fleet_holds_one_profile_in_flight_not_the_capture(
        store: SnapshotStore) -> None:
    """Python allocations while 24 x 1 MiB profiles are saved, over the profiles' bytes:
    a few profiles' worth at most, where the one-MULTI/EXEC save allocated 2.7x (asyncio's
    join of the pipeline, the slice the socket did not take, the transport's buffer;
    bench/fanout/download.py measures the process's RSS)."""
    raw = {k: bytearray(v) for k, v in bodies(24, 1 << 20).items()}  # as downloaded
    total = sum(len(v) for v in raw.values())
    peak = await traced_peak_of_save(store, fleet_snapshot(24), raw)
    assert peak / total < 0.5, f"{peak / total:.2f}x the profiles"



async def test_saving_one_big_profile_holds_it_once(store: SnapshotStore) -> None:
    """One 24 MiB profile: the connection sends it 1 MiB at a time (bot.redisconn's
    PiecewiseSend), where asyncio's writelines joined and buffered it (3.0x allocated)."""
    raw = {(0, "heap"): bytearray(bodies(1, 24 << 20)[(0, "heap")])}
    peak = await traced_peak_of_save(store, fleet_snapshot(1), raw)
    assert peak / len(raw[(0, "heap")]) < 0.5, f"{peak / len(raw[(0, 'heap')]):.2f}x"
    assert await store.raw_profile(SERVICE, (await store.list(SERVICE, 1))[0].id, 0) == \
        raw[(0, "heap")]


async def test_a_pipeline_of_small_and_big_values_arrives_byte_for_byte(
        redis_url: str) -> None:
    """PiecewiseSend's grouping: 3,000 small values (3 MB of small parts, sent in groups of
    at most 1 MiB) around a 3 MiB one (sent in slices) read back exactly, in order."""
    from bot.redisconn import connect

    connection = connect(redis_url)
    client = connection.client
    small = {f"t:{{pw}}:{i}": os.urandom(1000) for i in range(3000)}
    big = os.urandom(3 << 20)
    try:
        async with client.pipeline(transaction=False) as pipe:
            items = list(small.items())
            for key, value in items[:1500]:
                pipe.set(key, value)
            pipe.set("t:{pw}:big", big)
            for key, value in items[1500:]:
                pipe.set(key, value)
            assert all(await pipe.execute())
        assert await client.get("t:{pw}:big") == big
        assert await client.mget(list(small)) == list(small.values())
    finally:
        await client.delete("t:{pw}:big", *small)
        await connection.aclose()
