"""bot.records: dataclasses to Redis hashes and JSON and back, through a real Redis."""

from __future__ import annotations

import redis.asyncio as aioredis

from bot import records
from bot.alerts.incidents import Incident
from bot.store import DeployMarker, InstanceMeta, StoredSnapshot
from bot.watchlist import Watch


async def test_incident_round_trips_through_a_redis_hash(redis_client: aioredis.Redis) -> None:
    incident = Incident(key="am:abc", service="payments", channel="C1", ts="1700000000.000100",
                        opened_at=1700000000.25, resolved_at=0.0)
    await redis_client.hset("t", mapping=records.to_hash(incident))
    back = records.from_hash(Incident, await redis_client.hgetall("t"))
    assert back == incident
    assert isinstance(back.opened_at, float) and back.ts == "1700000000.000100"


async def test_unknown_fields_are_ignored_and_missing_ones_defaulted(
        redis_client: aioredis.Redis) -> None:
    await redis_client.hset("t", mapping={"key": "k", "service": "s", "channel": "C",
                                          "added_by_a_newer_heapbot": "x"})
    back = records.from_hash(Incident, await redis_client.hgetall("t"))
    assert (back.key, back.status, back.opened_at) == ("k", "open", 0.0)


def test_nested_dataclasses_and_optional_fields_round_trip_as_json() -> None:
    snapshot = StoredSnapshot(
        id="20261121-224512-a3f9", service="payments", taken_at=1700000000.5,
        instances=[InstanceMeta(target="http://a:6060", ok=True, kinds=["heap"], goroutines=12),
                   InstanceMeta(target="http://b:6060", ok=False, error="timeout")],
        goroutine_total=None, memstats={"HeapInuse": 5}, memstats_per_instance={"a": {"Sys": 9}})
    import json

    back = StoredSnapshot.from_stored(json.loads(json.dumps(snapshot.meta_dict())), None)
    assert back == snapshot
    watch = Watch(service="payments", interval_seconds=900.0, channel="#oncall",
                  goroutine_threshold=None)
    assert records.from_json(Watch, records.to_json(watch)) == watch
    marker = DeployMarker(taken_at=1.5, version="v2", by="ci", source="webhook")
    assert DeployMarker.from_json(marker.to_json()) == marker
