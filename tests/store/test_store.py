"""The snapshot store against a real redis-server: whole-or-nothing, retention, deploys."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from bot.errors import NotFoundError, StoreUnavailableError
from bot.keys import snapshot as snapshot_key
from bot.store import InstanceMeta, SnapshotStore, StoredSnapshot, new_snapshot_id
from tests.support.redis import all_keys


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[SnapshotStore]:
    store = SnapshotStore.from_url(redis_url)
    yield store
    await store.close()


@pytest.fixture(scope="module")
def real_raw(demo_service: Any) -> dict[tuple[int, str], bytes]:
    """Real bytes from the demo: heap and goroutine (gzip proto) and heap?debug=1 text."""
    return {(0, "heap"): demo_service.get("/debug/pprof/heap"),
            (0, "goroutine"): demo_service.get("/debug/pprof/goroutine"),
            (0, "memstats"): demo_service.get("/debug/pprof/heap?debug=1")}


def snapshot(taken_at: float, build_id: str = "", service: str = "payments") -> StoredSnapshot:
    return StoredSnapshot(
        id=new_snapshot_id(taken_at), service=service, taken_at=taken_at, trigger="user",
        requested_by="U1", build_id=build_id, goroutine_total=42,
        instances=[InstanceMeta(target="http://10.0.0.5:6060", ok=True, build_id=build_id,
                                kinds=["heap", "goroutine", "memstats"]),
                   InstanceMeta(target="http://10.0.0.6:6060", ok=False,
                                error="connection refused")],
        memstats={"HeapInuse": 1234}, memstats_per_instance={"http://10.0.0.5:6060":
                                                             {"HeapInuse": 1234}})


async def test_round_trip_keeps_raw_bytes_exactly(store: SnapshotStore,
                                                  real_raw: dict[tuple[int, str], bytes]
                                                  ) -> None:
    snap = snapshot(time.time())
    await store.save(snap, real_raw)
    loaded = await store.get("payments", snap.id)
    assert loaded.meta_dict() == snap.meta_dict()
    for (instance, kind), data in real_raw.items():
        assert await store.raw_profile("payments", snap.id, instance, kind) == data
    assert await store.raw_profile("payments", snap.id, "http://10.0.0.5:6060") == \
        real_raw[(0, "heap")]
    with pytest.raises(NotFoundError):
        await store.raw_profile("payments", snap.id, 1, "heap")  # the failed instance


async def test_a_gzip_profile_is_stored_as_served_and_older_tagged_ones_still_read(
        store: SnapshotStore, redis_client: aioredis.Redis,
        real_raw: dict[tuple[int, str], bytes]) -> None:
    """What Redis holds for a heap profile is the .pb.gz the target served, byte for byte
    (`redis-cli HGET KEY raw:0:heap > heap.pb.gz` is a file `go tool pprof` reads), saved
    from the capture's own download buffer. Raw files saved by earlier versions, with a
    tag byte in front, read back the same."""
    snap = snapshot(time.time())
    await store.save(snap, {k: bytearray(v) for k, v in real_raw.items()})  # as downloaded
    key = snapshot_key("payments", snap.id)
    heap = real_raw[(0, "heap")]
    assert await redis_client.hget(key, "raw:0:heap") == heap
    for (instance, kind), data in real_raw.items():
        assert await store.raw_profile("payments", snap.id, instance, kind) == data
    await redis_client.hset(key, "raw:0:heap", b"R" + heap)  # as saved before
    assert await store.raw_profile("payments", snap.id, 0) == heap
    assert await store.raw_profiles("payments", snap.id) == [(0, heap)]


async def test_keys_share_the_service_hash_tag(store: SnapshotStore,
                                               redis_client: aioredis.Redis) -> None:
    await store.save(snapshot(time.time()), {(0, "heap"): b"\x1f\x8bxx"})
    await store.add_deploy("payments", "v2", by="U1")
    keys = [k.decode() for k in await all_keys(redis_client)]
    assert keys and all(k.startswith("heapbot:{payments}:") for k in keys)


async def test_nothing_is_written_when_a_save_is_rejected(store: SnapshotStore,
                                                          redis_client: aioredis.Redis) -> None:
    with pytest.raises(ValueError):
        await store.save(snapshot(time.time()), {(0, "heap"): b"x", (0, "cpu"): b"y"})
    assert await all_keys(redis_client) == []


async def test_retention_by_count_drops_the_oldest(store: SnapshotStore,
                                                   redis_client: aioredis.Redis) -> None:
    base = time.time() - 100
    saved = [snapshot(base + i) for i in range(6)]
    for snap in saved:
        await store.save(snap, {(0, "heap"): b"\x1f\x8bdata"}, retention_count=4)
    listed = await store.list("payments", 0)
    assert [s.id for s in listed] == [s.id for s in reversed(saved[-4:])]
    for old in saved[:2]:
        assert not await redis_client.exists(f"heapbot:{{payments}}:snap:{old.id}")


async def test_retention_by_age_drops_old_snapshots_and_deploys(
        store: SnapshotStore, redis_client: aioredis.Redis) -> None:
    now = time.time()
    old = snapshot(now - 40 * 86400)
    await store.save(old, retention_days=365)
    await store.add_deploy("payments", "ancient", at=now - 40 * 86400)
    fresh = snapshot(now)
    await store.save(fresh, retention_days=30)
    assert [s.id for s in await store.list("payments")] == [fresh.id]
    assert not await redis_client.exists(f"heapbot:{{payments}}:snap:{old.id}")
    assert await store.deploys("payments") == []
    ttl = await redis_client.ttl(f"heapbot:{{payments}}:snap:{fresh.id}")
    assert 29 * 86400 < ttl <= 30 * 86400


async def test_build_id_change_records_a_deploy(store: SnapshotStore) -> None:
    now = time.time()
    assert await store.save(snapshot(now - 20, "aaaa1111")) == []
    assert await store.save(snapshot(now - 10, "aaaa1111")) == []
    markers = await store.save(snapshot(now, "bbbb2222"))
    assert [(m.source, m.previous_build_id, m.build_id) for m in markers] == \
        [("build-id", "aaaa1111", "bbbb2222")]
    assert [m.build_id for m in await store.deploys("payments")] == ["bbbb2222"]


async def test_explicit_deploys_in_a_time_range(store: SnapshotStore) -> None:
    now = time.time()
    await store.add_deploy("payments", "v1", by="U1", at=now - 3600)
    await store.add_deploy("payments", "v2", by="U2", at=now - 60)
    assert [d.version for d in await store.deploys("payments")] == ["v1", "v2"]
    assert [d.version for d in await store.deploys("payments", since=now - 600)] == ["v2"]
    assert [d.by for d in await store.deploys("payments", until=now - 600)] == ["U1"]


async def test_latest_before_and_unknown_ids(store: SnapshotStore) -> None:
    now = time.time()
    first, second = snapshot(now - 60), snapshot(now)
    await store.save(first)
    await store.save(second)
    assert (await store.latest("payments")).id == second.id  # type: ignore[union-attr]
    assert (await store.before("payments", now, exclude=second.id)).id == first.id  # type: ignore[union-attr]
    assert await store.latest("checkout") is None
    with pytest.raises(NotFoundError) as err:
        await store.get("payments", "20200101-000000-abcd")
    assert "/heap history payments" in err.value.user_message()


async def test_latest_of_many_services_at_once_equals_latest_of_each(store: SnapshotStore) -> None:
    """`/heap services` reads every newest capture in one go (slots differ on a Cluster)."""
    now = time.time()
    names = [f"svc{i}" for i in range(12)]
    for i, name in enumerate(names[:9]):  # svc9..svc11 have never been captured
        for age in range(i % 3 + 1):
            await store.save(snapshot(now - 60 * age - i, service=name))
    many = await store.latest_many(names)
    assert list(many) == names
    for name in names:
        one = await store.latest(name)
        assert (many[name].id if many[name] else None) == (one.id if one else None), name
        if one:
            assert (many[name].taken_at, many[name].service) == (one.taken_at, name)
    assert [n for n, s in many.items() if s is None] == ["svc9", "svc10", "svc11"]
    assert await store.latest_many([]) == {}


async def test_unreachable_redis_is_one_clear_error() -> None:
    from tests.support.redis import free_port

    store = SnapshotStore.from_url(f"redis://:hunter2@127.0.0.1:{free_port()}/0")
    try:
        with pytest.raises(StoreUnavailableError) as err:
            await store.ping()
        message = err.value.user_message()
        assert "cannot be reached" in message and "hunter2" not in message
        with pytest.raises(StoreUnavailableError):
            await store.save(snapshot(time.time()))
    finally:
        await store.close()


async def test_history_survives_a_redis_restart(redis_server: Any, redis_url: str) -> None:
    store = SnapshotStore.from_url(redis_url)
    snap = snapshot(time.time())
    await store.save(snap, {(0, "heap"): b"\x1f\x8bprofile"})
    await store.close()
    redis_server.stop()
    redis_server.start()
    store = SnapshotStore.from_url(redis_url)
    try:
        assert [s.id for s in await store.list("payments")] == [snap.id]
        assert await store.raw_profile("payments", snap.id, 0) == b"\x1f\x8bprofile"
    finally:
        await store.close()


async def test_a_long_history_reads_back_whole_and_knows_its_oldest(store: SnapshotStore
                                                                    ) -> None:
    from bot.store import DECODE_INLINE_ROWS

    start = time.time() - 3600
    saved = [snapshot(start + 60 * i, service="longhist") for i in range(DECODE_INLINE_ROWS + 4)]
    for snap in saved:
        await store.save(snap, {(0, "heap"): b"\x1f\x8bxx"})
    listed = await store.list("longhist", 0)  # more rows than are decoded inline
    assert [s.id for s in listed] == [s.id for s in reversed(saved)]
    assert [s.meta_dict() for s in listed] == [s.meta_dict() for s in reversed(saved)]
    oldest = await store.oldest("longhist")
    assert oldest is not None and oldest.id == saved[0].id
    assert await store.oldest("never-captured") is None
