"""Snapshots in Redis: stored whole or not at all, indexed per service, kept for a while.

Key layout (every key of one service shares the hash tag ``{service}`` so a
MULTI/EXEC touching them stays in one Redis Cluster slot):

- ``heapbot:{svc}:snap:<id>``  hash: ``meta`` (JSON), ``summary`` (JSON),
  ``merged:heap`` (every instance's heap merged, one .pb.gz) and
  ``raw:<instance>:<kind>`` (the bytes as fetched, compressed) per instance: raw
  heap and goroutine files are kept only for the service's newest
  ``HEAPBOT_RAW_CAPTURES`` snapshots (default 3), so a stored capture does not
  grow with instances x profile size (issue 13); older snapshots saved before
  ``merged:heap`` existed keep their raw files and stay readable;
- ``heapbot:{svc}:index``      sorted set of snapshot ids scored by capture time;
- ``heapbot:{svc}:deploys``    sorted set of deploy markers (JSON) scored by time;
- ``heapbot:{svc}:staging:<id>`` a snapshot's profiles while they are being sent (see
  ``SnapshotStore.save``): never read, renamed into place or left to expire.

A save sends each profile in a command of its own into the staging hash (each with a
short TTL), then one MULTI/EXEC, watching the index and the staging hash, runs a script
(``_COMMIT_SCRIPT``) that RENAMEs the staging hash to the snapshot key and writes meta,
summary, retention and index, once it has checked on the server that the id is not indexed
yet and every profile is staged (a cluster resend has no WATCH; a lost reply must not
commit twice). Readers only reach
a snapshot through the index, so one is visible whole or not at all; a crash or lost
connection before EXEC leaves only a staging hash that expires. Sending the whole
capture as one MULTI/EXEC instead cost 4x its bytes in client memory on Python 3.11
(asyncio joins a pipeline's parts and copies what the socket did not take); one
profile per command costs at most about three times the largest one.

Snapshot ids sort by time (``20261121-224512-a3f9``) and are short enough to
type in ``/heap diff payments since <id>``.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import gzip
import json
import logging
import os
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import WatchError
from redis.typing import EncodableT, FieldT

from bot import keys, records
from bot.analysis.summary import SnapshotSummary
from bot.errors import NotFoundError, StoreError
from bot.redisconn import Connection, connect, retrying, store_errors

log = logging.getLogger(__name__)

RAW_KINDS = ("heap", "goroutine", "memstats")
MERGED = -1  # the "instance" index raw_profiles gives a snapshot's merged profile
# raw kinds trimmed from snapshots older than the newest keep_raw ones
_TRIMMED_KINDS = ("heap", "goroutine")


def _keep_raw_default() -> int:
    text = os.environ.get("HEAPBOT_RAW_CAPTURES", "").strip()
    return max(0, int(text)) if text.isdigit() else 3
_GZIP_MAGIC = b"\x1f\x8b"
# how long a staged profile waits for its snapshot's commit; each staged profile renews it
STAGING_TTL = 300.0
# Redis's default proto-max-bulk-len: the biggest value one command may carry
MAX_VALUE_BYTES = 512 << 20


# The commit of SnapshotStore.save. KEYS: index, staging, snapshot, deploys, the snapshots
# retention drops, the snapshots whose raw files age out; ARGV: the plan (JSON), then the
# head fields and values (meta, summary). "done" when the id is already indexed (a resend,
# a lost reply), "restage" when the staging hash does not hold every profile; then nothing
# is written. Every key carries the service's hash tag: one Cluster slot.
_COMMIT_SCRIPT = """
local plan = cjson.decode(ARGV[1])
if redis.call('ZSCORE', KEYS[1], plan.id) then return 'done' end
if plan.profiles > 0 then
  if redis.call('HLEN', KEYS[2]) ~= plan.profiles then return 'restage' end
  redis.call('RENAME', KEYS[2], KEYS[3])
end
for i = 2, #ARGV, 2 do redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1]) end
redis.call('EXPIRE', KEYS[3], plan.ttl)
redis.call('ZADD', KEYS[1], plan.score, plan.id)
local ndrop = #plan.drop
for i, fields in ipairs(plan.trim) do
  if #fields > 0 then redis.call('HDEL', KEYS[4 + ndrop + i], unpack(fields)) end
end
for i, old in ipairs(plan.drop) do
  redis.call('DEL', KEYS[4 + i])
  redis.call('ZREM', KEYS[1], old)
end
for _, marker in ipairs(plan.markers) do
  redis.call('ZADD', KEYS[4], marker[2], marker[1])
end
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', plan.cutoff)
return 'ok'
"""


def new_snapshot_id(taken_at: float) -> str:
    """A time-sortable, human-typeable id: UTC date-time plus 4 random hex digits."""
    stamp = datetime.fromtimestamp(taken_at, tz=UTC).strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{secrets.token_hex(2)}"


def _pack(data: bytes | bytearray) -> bytes | bytearray:
    """What a profile is stored as: gzip data as it is (not copied: Go serves profiles
    gzipped, and a capture's download goes to Redis as downloaded), anything else
    gzipped behind a ``G`` tag byte so ``_unpack`` returns the original."""
    if data[:2] == _GZIP_MAGIC:
        return data
    return b"G" + gzip.compress(data, compresslevel=6, mtime=0)


def _unpack(stored: bytes) -> bytes:
    """The bytes ``_pack`` was given. Snapshots saved before gzip went untagged hold
    an ``R`` tag byte in front of gzip data; neither tag is a gzip magic byte."""
    if stored[:2] == _GZIP_MAGIC:
        return stored
    tag, body = stored[:1], stored[1:]
    return gzip.decompress(body) if tag == b"G" else body


# redis-py's stubs type each reply item as bytes | str (decode_responses is a runtime
# choice, and heapbot's clients never decode): these say which one a reply holds.
def _raw(reply: object) -> bytes:
    """A stored value, field or member as the bytes Redis returned."""
    if not isinstance(reply, bytes):
        raise TypeError(f"a Redis reply of heapbot's client is bytes, not {type(reply).__name__}")
    return reply


def _text(reply: object) -> str:
    """A snapshot id or field name as text."""
    return _raw(reply).decode()


@dataclass(slots=True)
class InstanceMeta:
    """One instance's outcome, as stored (no profile bytes, no headers)."""

    target: str
    ok: bool
    error: str | None = None
    elapsed: float = 0.0
    source: str = ""
    build_id: str = ""
    warnings: list[str] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)  # raw kinds stored for it
    goroutines: int | None = None  # this instance's goroutine count

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> InstanceMeta:
        return records.from_dict(cls, data)


@dataclass(slots=True)
class DeployMarker:
    """A deploy: recorded by someone (``/heap deploy``) or seen as a build-id change."""

    taken_at: float  # when (unix seconds); named like snapshots so analyses line them up
    version: str
    by: str = ""
    source: str = "manual"  # manual | build-id | webhook
    build_id: str = ""
    previous_build_id: str = ""

    @property
    def at(self) -> float:
        return self.taken_at

    def to_json(self) -> str:
        return records.to_json(self)

    @classmethod
    def from_json(cls, text: str | bytes) -> DeployMarker:
        return records.from_json(cls, text)


@dataclass(slots=True)
class StoredSnapshot:
    """A snapshot's metadata and summary; raw profiles are fetched on demand."""

    id: str
    service: str
    taken_at: float
    trigger: str = "user"  # user | watch | alert | schedule
    requested_by: str = ""
    instances: list[InstanceMeta] = field(default_factory=list)
    build_id: str = ""
    goroutine_total: int | None = None
    memstats: dict[str, int] = field(default_factory=dict)  # merged over instances
    memstats_per_instance: dict[str, dict[str, int]] = field(default_factory=dict)
    summary: SnapshotSummary | None = None
    elapsed: float = 0.0
    # "<job id>:<step>" of the alert/watch job step that took it: a job retried after a
    # crash between storing it and recording it finds it instead of capturing again.
    job: str = ""

    @property
    def answered(self) -> int:
        return sum(1 for i in self.instances if i.ok)

    @property
    def heap_inuse(self) -> int | None:
        """In-use heap bytes from the summary, else HeapInuse from MemStats."""
        if self.summary and "inuse_space" in self.summary.heap.totals:
            return self.summary.heap.totals["inuse_space"]
        return self.memstats.get("HeapInuse")

    def meta_dict(self) -> dict[str, Any]:
        """Everything but the summary (stored in a field of its own), as JSON-ready data."""
        data = records.to_dict(self)
        del data["summary"]
        return data

    def to_json(self) -> dict[str, Any]:
        """JSON-friendly view for ``--format json`` and ``Reply.data``."""
        data = self.meta_dict()
        data["heap_inuse"] = self.heap_inuse
        return data

    @classmethod
    def from_stored(cls, meta: Mapping[str, Any], summary: dict[str, Any] | None
                    ) -> StoredSnapshot:
        snapshot = records.from_dict(cls, {k: v for k, v in meta.items() if k != "summary"})
        snapshot.summary = SnapshotSummary.from_dict(summary) if summary else None
        return snapshot


DECODE_INLINE_ROWS = 8  # more stored snapshots than this are decoded in a worker thread


def _decode_rows(rows: Sequence[Sequence[bytes | None]], with_summary: bool
                 ) -> list[StoredSnapshot]:
    """StoredSnapshots from HMGET rows of (meta, summary) JSON."""
    out: list[StoredSnapshot] = []
    for row in rows:
        if not row or not row[0]:
            continue  # expired between index read and fetch
        summary = json.loads(row[1]) if with_summary and row[1] else None
        out.append(StoredSnapshot.from_stored(json.loads(row[0]), summary))
    return out


class SnapshotStore:
    """Snapshots, their index and deploy markers in Redis (redis.asyncio)."""

    def __init__(self, client: aioredis.Redis, *, location: str = "redis",
                 connection: Connection | None = None, keep_raw: int | None = None,
                 staging_ttl: float = STAGING_TTL) -> None:
        self.redis = client
        # seconds a crashed save's staged profiles stay in Redis before they expire
        self.staging_ttl = staging_ttl
        self.max_value_bytes = MAX_VALUE_BYTES
        self.location = location
        self.connection = connection
        # per-instance raw heap/goroutine files are kept for this many newest snapshots
        self.keep_raw = _keep_raw_default() if keep_raw is None else keep_raw

    @property
    def failover_capable(self) -> bool:
        """Cluster or Sentinel: a failed master is replaced within seconds, worth waiting for."""
        return self.connection is not None and self.connection.target.topology != "single"

    @classmethod
    def from_url(cls, url: str) -> SnapshotStore:
        """A store on the Redis named by ``url`` (any form bot.redisconn accepts).

        A malformed URL is a ConfigError naming REDIS_URL and the accepted forms.
        """
        connection = connect(url)
        return cls(connection.client, location=connection.target.location,
                   connection=connection)

    async def close(self) -> None:
        if self.connection is not None:
            await self.connection.aclose()
        else:
            await self.redis.aclose()

    def _errors(self, operation: str) -> contextlib.AbstractAsyncContextManager[None]:
        """The store boundary: Redis failures become StoreErrors a person can act on."""
        return store_errors(operation, self.location)

    async def topology(self) -> dict[str, Any]:
        """What /readyz shows of the Redis behind the store: the topology and, on a
        Cluster, its state (``ok`` only when every slot has a reachable master)."""
        if self.connection is None or not self.connection.is_cluster:
            kind = self.connection.target.topology if self.connection is not None else "single"
            return {"topology": kind, "ok": True}
        cluster: Any = self.redis  # a redis.asyncio.cluster.RedisCluster here
        async with self._errors("read the cluster state"):
            info = await cluster.cluster_info()
        if isinstance(info, dict) and info and all(isinstance(v, dict) for v in info.values()):
            info = next(iter(info.values()))  # answered per node: one is enough
        state = str(info.get("cluster_state", "unknown"))
        masters = sum(1 for n in cluster.get_nodes() if n.server_type == "primary")
        return {"topology": "cluster", "ok": state == "ok", "cluster_state": state,
                "slots_ok": int(info.get("cluster_slots_ok", 0)),
                "slots_fail": int(info.get("cluster_slots_fail", 0)),
                "known_nodes": int(info.get("cluster_known_nodes", 0)), "masters": masters}

    async def ping(self) -> float:
        """Round-trip time in seconds; StoreUnavailableError when Redis does not answer."""
        async with self._errors("ping"):
            start = time.perf_counter()
            await self.redis.ping()
            return time.perf_counter() - start

    # -- writing ------------------------------------------------------------------

    async def save(
        self,
        snapshot: StoredSnapshot,
        raw: Mapping[tuple[int, str], bytes | bytearray] | None = None,
        *,
        merged: Mapping[str, bytes] | None = None,
        retention_count: int = 500,
        retention_days: float = 30.0,
    ) -> list[DeployMarker]:
        """Store the snapshot and its raw profiles whole or not at all; enforce retention.

        The profiles go first, one command each, into a staging hash with a TTL; then
        one MULTI/EXEC renames it to the snapshot's key and indexes it (module doc).
        Returns the deploy markers this save added (a build-id change since the
        previous snapshot of the service counts as a deploy).
        """
        svc = snapshot.service
        index = keys.snapshot_index(svc)
        deploys = keys.deploys(svc)
        snap_key = keys.snapshot(svc, snapshot.id)

        def encode() -> dict[FieldT, EncodableT]:
            """JSON and gzip of the snapshot: CPU work kept off the event loop (a burst of
            captures blocked it 100+ ms here; found by bench/load/run.py)."""
            mapping: dict[FieldT, EncodableT] = {"meta": json.dumps(snapshot.meta_dict())}
            if snapshot.summary is not None:
                mapping["summary"] = json.dumps(snapshot.summary.to_dict())
            for kind, data in (merged or {}).items():
                mapping[f"merged:{kind}"] = _pack(data)
            for (instance, kind), body in (raw or {}).items():
                if kind not in RAW_KINDS:
                    raise ValueError(f"unknown raw kind {kind!r}")
                if self.keep_raw == 0 and kind in _TRIMMED_KINDS and "merged:heap" in mapping:
                    continue
                mapping[f"raw:{instance}:{kind}"] = _pack(body)
            for name, value in mapping.items():
                name = name if isinstance(name, str) else repr(name)
                if isinstance(value, bytes | bytearray) and len(value) > self.max_value_bytes:
                    raise StoreError(
                        f"Could not store the snapshot of `{svc}`: its `{name}` is "
                        f"{len(value) / (1 << 20):.0f} MiB, more than Redis takes in one "
                        f"value ({self.max_value_bytes >> 20} MiB, its proto-max-bulk-len).",
                        hint="Lower the service's max_profile_bytes in the registry "
                        "(default 64 MiB).")
            return mapping

        mapping = await asyncio.to_thread(encode)
        ttl = max(1, int(retention_days * 86400))
        head: dict[FieldT, EncodableT] = {
            f: v for f, v in mapping.items() if f in ("meta", "summary")}
        blobs = {f: v for f, v in mapping.items() if f not in head}
        staging = keys.snapshot_staging(svc, snapshot.id)
        staging_ms = max(1, int(self.staging_ttl * 1000))

        async def stage() -> None:
            """Each profile in a MULTI/EXEC of its own (so the hash never lives without its
            TTL): the client holds one profile's packed copy at a time, not the capture's."""
            for name, value in blobs.items():
                async with self.redis.pipeline(transaction=True) as pipe:
                    pipe.hset(staging, name, value)
                    pipe.pexpire(staging, staging_ms)
                    await pipe.execute()

        async def transaction() -> list[DeployMarker]:
            # run again after a lost connection (retrying): the EXEC may have committed
            if await self.redis.zscore(index, snapshot.id) is not None:
                return []
            staged = False
            for _ in range(10):  # optimistic: retry when another writer touched the index
                if blobs and not staged:
                    await stage()
                    staged = True
                async with self.redis.pipeline(transaction=True) as pipe:
                    try:
                        await pipe.watch(index, staging)
                        if await pipe.zscore(index, snapshot.id) is not None:
                            return []  # committed, its reply lost (a WatchError): not again
                        # expired, or lost in a failover since it was sent: send it again
                        # (WATCH also fails the EXEC if it expires from here on)
                        if blobs and await pipe.hlen(staging) != len(blobs):
                            staged = False
                            continue
                        previous_ids = await pipe.zrevrangebyscore(
                            index, snapshot.taken_at, "-inf", start=0, num=1)
                        previous_build = ""
                        if previous_ids:
                            prev_meta = await pipe.hget(
                                keys.snapshot(svc, _text(previous_ids[0])), "meta")
                            if prev_meta:
                                previous_build = json.loads(prev_meta).get("build_id", "")
                        cutoff = snapshot.taken_at - retention_days * 86400
                        too_old = await pipe.zrangebyscore(index, "-inf", f"({cutoff}")
                        count = await pipe.zcard(index)
                        overflow = count + 1 - retention_count
                        by_count = (await pipe.zrange(index, 0, overflow - 1)
                                    if overflow > 0 else [])
                        drop = {_text(m) for m in [*too_old, *by_count]}
                        # the snapshot this save pushes out of the newest keep_raw: its
                        # per-instance heap/goroutine files go (its merged profile stays)
                        trim: list[tuple[str, list[bytes]]] = []
                        if self.keep_raw > 0 and mapping.keys() & {"merged:heap"}:
                            aged = await pipe.zrevrangebyscore(
                                index, snapshot.taken_at, "-inf", start=self.keep_raw - 1,
                                num=1)
                            for old_id in (_text(a) for a in aged):
                                old_key = keys.snapshot(svc, old_id)
                                fields = [_raw(f) for f in await pipe.hkeys(old_key)]
                                if b"merged:heap" in fields:
                                    trim.append((old_key, [
                                        f for f in fields if f.startswith(b"raw:")
                                        and f.rsplit(b":", 1)[-1].decode() in _TRIMMED_KINDS]))
                        markers: list[DeployMarker] = []
                        if (previous_build and snapshot.build_id
                                and previous_build != snapshot.build_id):
                            markers.append(DeployMarker(
                                taken_at=snapshot.taken_at,
                                version=f"build {snapshot.build_id[:12]}", by="heapbot",
                                source="build-id", build_id=snapshot.build_id,
                                previous_build_id=previous_build))
                        # One script does every write, after checking on the server that
                        # the save is not done yet and that every profile is staged: so a
                        # resend without the WATCH (redis-py's cluster pipeline resends a
                        # transaction on another connection after a failover) or after a
                        # lost reply never indexes a half snapshot nor trims twice.
                        drop_keys = [keys.snapshot(svc, old) for old in drop]
                        plan = {"id": snapshot.id, "score": snapshot.taken_at,
                                "profiles": len(blobs), "ttl": ttl, "cutoff": f"({cutoff}",
                                "drop": list(drop),
                                "trim": [[f.decode() for f in fields] for _, fields in trim],
                                "markers": [[m.to_json(), m.taken_at] for m in markers]}
                        pipe.multi()
                        pipe.eval(_COMMIT_SCRIPT, 4 + len(drop_keys) + len(trim), index,
                                  staging, snap_key, deploys, *drop_keys,
                                  *(old_key for old_key, _ in trim), json.dumps(plan),
                                  *(x for f, v in head.items() for x in (f, v)))
                        (outcome,) = await pipe.execute()
                        if _text(outcome) == "restage":  # lost since the check above
                            staged = False
                            continue
                        if _text(outcome) == "done":  # an earlier EXEC's reply was lost
                            return []
                        return markers
                    except WatchError:
                        continue
            with contextlib.suppress(Exception):  # else it expires after staging_ttl
                await self.redis.delete(staging)
            raise StoreError(
                f"Could not store the snapshot of `{svc}`: the index kept changing under "
                "concurrent writers.", hint="Try the capture again.")

        async with self._errors("save a snapshot"):
            if self.failover_capable:  # a Cluster or Sentinel failover: wait for the new master
                return await retrying("save a snapshot", transaction)
            return await transaction()

    async def add_deploy(self, service: str, version: str, by: str = "",
                         at: float | None = None, source: str = "manual") -> DeployMarker:
        """Record an explicit deploy marker (``/heap deploy``, deploy webhook)."""
        marker = DeployMarker(taken_at=time.time() if at is None else float(at),
                              version=version, by=by, source=source)
        async with self._errors("record a deploy"):
            await self.redis.zadd(keys.deploys(service), {marker.to_json(): marker.taken_at})
        return marker

    # -- reading ------------------------------------------------------------------

    async def _load(self, service: str, ids: Sequence[str], *, with_summary: bool = True
                    ) -> list[StoredSnapshot]:
        if not ids:
            return []
        fields = ["meta", "summary"] if with_summary else ["meta"]
        async with self.redis.pipeline(transaction=False) as pipe:
            for snapshot_id in ids:
                pipe.hmget(keys.snapshot(service, snapshot_id), fields)
            rows = await pipe.execute()
        if len(rows) > DECODE_INLINE_ROWS:  # a long history: JSON decoding off the loop
            return await asyncio.to_thread(_decode_rows, rows, with_summary)
        return _decode_rows(rows, with_summary)

    async def get(self, service: str, snapshot_id: str) -> StoredSnapshot:
        """One snapshot by id; NotFoundError names the service and the id."""
        async with self._errors("read a snapshot"):
            found = await self._load(service, [snapshot_id])
        if not found:
            raise NotFoundError(
                f"`{service}` has no stored snapshot `{snapshot_id}`.",
                hint=f"`/heap history {service}` lists the stored ones.")
        return found[0]

    async def latest(self, service: str) -> StoredSnapshot | None:
        async with self._errors("read the latest snapshot"):
            ids = await self.redis.zrevrange(keys.snapshot_index(service), 0, 0)
            found = await self._load(service, [_text(i) for i in ids])
        return found[0] if found else None

    async def latest_many(self, services: Sequence[str]) -> dict[str, StoredSnapshot | None]:
        """The newest snapshot of each service (meta only), in two round trips for them all.

        `/heap services` on a 40-service registry made 80 sequential round trips with
        latest(); a non-transactional pipeline is split by slot on a Cluster.
        """
        if not services:
            return {}
        async with self._errors("read the latest snapshots"):
            async with self.redis.pipeline(transaction=False) as pipe:
                for service in services:
                    pipe.zrevrange(keys.snapshot_index(service), 0, 0)
                newest = await pipe.execute()
            wanted = [(service, ids[0].decode())
                      for service, ids in zip(services, newest, strict=True) if ids]
            async with self.redis.pipeline(transaction=False) as pipe:
                for service, snapshot_id in wanted:
                    pipe.hmget(keys.snapshot(service, snapshot_id), ["meta"])
                rows = await pipe.execute() if wanted else []
        found: dict[str, StoredSnapshot | None] = dict.fromkeys(services)
        for (service, _), row in zip(wanted, rows, strict=True):
            decoded = _decode_rows([row], with_summary=False)
            found[service] = decoded[0] if decoded else None
        return found

    async def before(self, service: str, when: float, *, exclude: str | None = None
                     ) -> StoredSnapshot | None:
        """The newest snapshot taken at or before ``when`` (skipping ``exclude``)."""
        async with self._errors("read snapshots"):
            ids = await self.redis.zrevrangebyscore(
                keys.snapshot_index(service), when, "-inf", start=0, num=2)
            wanted = [i for i in map(_text, ids) if i != exclude][:1]
            found = await self._load(service, wanted)
        return found[0] if found else None

    async def list(self, service: str, limit: int = 20, *, since: float | None = None,
                   with_summary: bool = False) -> list[StoredSnapshot]:
        """Newest first, at most ``limit`` (0 = all), optionally only after ``since``."""
        async with self._errors("list snapshots"):
            low = "-inf" if since is None else since
            ids = await self.redis.zrevrangebyscore(
                keys.snapshot_index(service), "+inf", low,
                start=0 if limit else None, num=limit or None)
            return await self._load(service, [_text(i) for i in ids],
                                    with_summary=with_summary)

    async def oldest(self, service: str) -> StoredSnapshot | None:
        """The first stored snapshot still kept (without its summary)."""
        async with self._errors("read the oldest snapshot"):
            ids = await self.redis.zrange(keys.snapshot_index(service), 0, 0)
            found = await self._load(service, [_text(i) for i in ids], with_summary=False)
        return found[0] if found else None

    async def count(self, service: str) -> int:
        async with self._errors("count snapshots"):
            return int(await self.redis.zcard(keys.snapshot_index(service)))

    async def summaries(self, service: str, since: float | None = None,
                        until: float | None = None, limit: int = 0
                        ) -> builtins.list[SnapshotSummary]:
        """Stored summaries oldest first (what trends and leak analysis read)."""
        async with self._errors("read summaries"):
            ids = await self.redis.zrevrangebyscore(
                keys.snapshot_index(service), "+inf" if until is None else until,
                "-inf" if since is None else since,
                start=0 if limit else None, num=limit or None)
            snaps = await self._load(service, [_text(i) for i in ids])
        return [s.summary for s in reversed(snaps) if s.summary is not None]

    async def raw_profile(self, service: str, snapshot_id: str, instance: int | str,
                          kind: str = "heap") -> bytes:
        """The bytes one instance answered (heap/goroutine as fetched, memstats text)."""
        if isinstance(instance, str):
            snap = await self.get(service, snapshot_id)
            targets = [i.target for i in snap.instances]
            if instance not in targets:
                raise NotFoundError(f"Snapshot `{snapshot_id}` has no instance {instance}.")
            instance = targets.index(instance)
        async with self._errors("read a raw profile"):
            data = await self.redis.hget(keys.snapshot(service, snapshot_id),
                                         f"raw:{instance}:{kind}")
        if data is None:
            raise NotFoundError(
                f"Snapshot `{snapshot_id}` of `{service}` holds no {kind} data for instance "
                f"{instance}.", hint="That instance may have failed during the capture.")
        return _unpack(_raw(data))

    async def raw_profiles(self, service: str, snapshot_id: str, kind: str = "heap", *,
                           merged_ok: bool = True) -> builtins.list[tuple[int, bytes]]:
        """Every instance's raw bytes of one kind, by instance index.

        When the per-instance files are no longer kept (older than the newest
        ``keep_raw`` snapshots), the snapshot's merged profile comes back as one
        entry with index ``MERGED`` (-1) unless ``merged_ok`` is False: merging or
        summarizing it gives what the instances' files gave.
        """
        async with self._errors("read raw profiles"):
            key = keys.snapshot(service, snapshot_id)
            names = [_text(f) for f in await self.redis.hkeys(key)]
            wanted = sorted((int(n.split(":")[1]), n) for n in names
                            if n.startswith("raw:") and n.endswith(f":{kind}"))
            if not wanted:
                if merged_ok and f"merged:{kind}" in names:
                    data = await self.redis.hget(key, f"merged:{kind}")
                    return [(MERGED, _unpack(_raw(data)))] if data is not None else []
                return []
            values = await self.redis.hmget(key, [n for _, n in wanted])
        return [(i, _unpack(_raw(v))) for (i, _), v in zip(wanted, values, strict=True)
                if v is not None]

    async def deploys(self, service: str, since: float | None = None,
                      until: float | None = None) -> builtins.list[DeployMarker]:
        """Deploy markers oldest first, optionally within [since, until]."""
        async with self._errors("read deploy markers"):
            rows = await self.redis.zrangebyscore(
                keys.deploys(service), "-inf" if since is None else since,
                "+inf" if until is None else until)
        return [DeployMarker.from_json(_raw(r)) for r in rows]
