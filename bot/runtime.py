"""The Runtime: the one facade handlers, webhooks and watches use.

It ties the registry, the capturer and the snapshot store together and adds
what none of them can do alone: single-flight (twenty people typing
``/heap top payments`` at once cause one fetch per instance, in one process
via a shared future and across replicas via a Redis lock), the per-service
cooldown, and turning ``since deploy`` / ``since 1h`` into a stored snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, overload

import redis.asyncio as aioredis
from redis.exceptions import LockError, RedisError

from bot import keys
from bot.errors import (
    CaptureError,
    HeapbotError,
    NotFoundError,
    StoreError,
    StoreUnavailableError,
    UsageError,
)
from bot.redisconn import parse_redis_url, store_errors
from bot.registry import Registry, ServiceConfig, load_registry
from bot.store import (
    DeployMarker,
    InstanceMeta,
    SnapshotStore,
    StoredSnapshot,
    new_snapshot_id,
)
from bot.units import duration_seconds, format_duration
from bot.watchlist import Watch, WatchStore

if TYPE_CHECKING:
    # Imported where used: `heapbot services` / `history` read only the store and start
    # without the engine (numpy, re2), the capturer (httpx), the leak analysis or the
    # --sample scheduler (issue 15 item 12: warm CLI calls are fast).
    from bot.analysis.goroutines import GoroutineReport
    from bot.analysis.leaks import HeapSite, LeakReport
    from bot.analysis.summary import SnapshotSummary
    from bot.capture import Capturer, CaptureResult
    from bot.pprof import Profile
    from bot.redis_server import EmbeddedRedis
    from bot.sampling import Sampling
    from bot.settings import Settings
    from bot.source import Sources

log = logging.getLogger(__name__)

SINCE_HELP = "previous, deploy, a duration like 30m, 1h or 2d, or a snapshot id"
_SNAPSHOT_ID = re.compile(r"\d{8}-\d{6}-[0-9a-f]{4}")


@dataclass(slots=True)
class Captured:
    """A capture as handlers use it: stored snapshot plus parsed data."""

    snapshot: StoredSnapshot
    heap: Profile | None = None  # merged over the instances that answered
    goroutines: GoroutineReport | None = None  # merged over instances
    memstats: dict[str, int] = field(default_factory=dict)  # merged (summed)
    instances: list[InstanceMeta] = field(default_factory=list)
    reused: bool = False  # inside the cooldown: an earlier capture was returned
    shared: bool = False  # another request's (or replica's) capture was joined
    age_seconds: float = 0.0
    stored: bool = True  # False when Redis was down (the capture is still usable)
    store_error: str | None = None
    deploys_detected: list[DeployMarker] = field(default_factory=list)
    heap_note: str = ""  # "heap profile unchanged since the previous capture: no GC ran…"

    @property
    def service(self) -> str:
        return self.snapshot.service

    @property
    def snapshot_id(self) -> str:
        return self.snapshot.id

    @property
    def taken_at(self) -> float:
        return self.snapshot.taken_at


def check_since_ref(ref: str | None) -> str:
    """The reference, normalised, or UsageError before anything is captured for nothing."""
    text = (ref or "previous").strip()
    low = text.lower()
    if (low in ("previous", "prev", "last", "deploy") or duration_seconds(low) is not None
            or _SNAPSHOT_ID.fullmatch(low)):
        return text
    raise UsageError(f"`since {text[:40]}` is not something heapbot understands.",
                     hint=f"Use {SINCE_HELP}.")


def _parse_profiles(blobs: Sequence[bytes]) -> Profile | None:
    """Parse and merge heap profiles (CPU-heavy: called via asyncio.to_thread)."""
    from bot.pprof import parse_profile

    return _merge_parsed([parse_profile(b) for b in blobs])


def _merge_parsed(profiles: Sequence[Profile]) -> Profile | None:
    from bot.pprof import merge_profiles

    if not profiles:
        return None
    return profiles[0] if len(profiles) == 1 else merge_profiles(profiles)


def _goroutine_reports(blobs: Sequence[bytes | bytearray]) -> list[GoroutineReport]:
    from bot.analysis.goroutines import parse_goroutines

    reports = []
    for blob in blobs:
        try:
            reports.append(parse_goroutines(blob))
        except HeapbotError as exc:
            log.warning("goroutine profile skipped: %s", exc.message)
    return reports


def _memstats(texts: dict[str, str]) -> tuple[dict[str, int], dict[str, dict[str, int]]]:
    """Merged MemStats fields and per-instance fields."""
    from bot.analysis.memstats import merge_memstats, parse_memstats

    parsed = {}
    for target, text in texts.items():
        try:
            parsed[target] = parse_memstats(text)
        except HeapbotError as exc:
            log.warning("memstats of %s skipped: %s", target, exc.message)
    if not parsed:
        return {}, {}
    merged = merge_memstats(list(parsed.values()))
    return dict(merged.fields), {t: dict(m.fields) for t, m in parsed.items()}


def _memstats_block(text: str) -> str:
    """The ``# runtime.MemStats`` block of a heap?debug=1 page (the whole text if none)."""
    at = text.find("# runtime.MemStats")
    return text[at:] if at >= 0 else text


def encode_merged(heap: Profile | None) -> dict[str, bytes]:
    """The merged heap as stored with a snapshot (``merged:heap``): one .pb.gz."""
    if heap is None:
        return {}
    from bot.pprof.encode import encode_profile

    return {"heap": encode_profile(heap)}


def _digest(result: CaptureResult, snapshot_id: str, trigger: str, requested_by: str,
            job: str = "") -> tuple[StoredSnapshot, dict[tuple[int, str], bytes | bytearray],
                                    Profile | None, GoroutineReport | None]:
    """Everything CPU-heavy about a fresh capture, off the event loop."""
    from bot.analysis.goroutines import merge_reports
    from bot.analysis.summarize import summarize_snapshot

    instances: list[InstanceMeta] = []
    raw: dict[tuple[int, str], bytes | bytearray] = {}  # the downloads themselves
    heaps: list[Profile] = []
    goroutine_blobs: list[bytes | bytearray] = []
    memstats_texts: dict[str, str] = {}
    for index, inst in enumerate(result.instances):
        build_id = inst.build_id or getattr(inst.heap_profile, "main_build_id", "") or ""
        kinds = []
        if inst.ok and inst.heap is not None:
            raw[(index, "heap")] = inst.heap
            kinds.append("heap")
            if inst.heap_profile is not None:
                heaps.append(inst.heap_profile)
        if inst.ok and inst.goroutine is not None:
            raw[(index, "goroutine")] = inst.goroutine
            goroutine_blobs.append(inst.goroutine)
            kinds.append("goroutine")
        if inst.ok and inst.memstats_text is not None:
            # heap?debug=1 repeats every heap sample as text before the MemStats
            # block: only the block is kept (megabytes less per instance)
            raw[(index, "memstats")] = _memstats_block(inst.memstats_text).encode()
            memstats_texts[inst.target] = inst.memstats_text
            kinds.append("memstats")
        instances.append(InstanceMeta(
            target=inst.target, ok=inst.ok, error=inst.error, elapsed=round(inst.elapsed, 4),
            source=inst.source, build_id=build_id, warnings=list(inst.warnings), kinds=kinds))
    # Capturer.capture folds each instance's heap into result.heap as it arrives
    # (bot.pprof.fold); profiles still attached to instances are merged here.
    heap = result.heap if result.heap is not None else _merge_parsed(heaps)
    reports: list[GoroutineReport] = []
    by_target: dict[str, GoroutineReport] = {}
    for meta, blob in zip([i for i in instances if "goroutine" in i.kinds], goroutine_blobs,
                          strict=True):
        parsed = _goroutine_reports([blob])
        if parsed:
            meta.goroutines = parsed[0].total
            reports.extend(parsed)
            by_target[meta.target] = parsed[0]
    goroutines = merge_reports(reports)
    memstats, per_instance = _memstats(memstats_texts)
    from bot.analysis.leaks.observe import leaked_groups, observe

    observations = []
    for inst in result.instances:
        if not inst.ok:
            continue
        observations.append(observe(
            inst.target, inst.heap_facts, per_instance.get(inst.target),
            by_target.get(inst.target),
            leaked_groups(inst.goroutineleak) if inst.goroutineleak else None))
    builds = Counter(i.build_id for i in instances if i.ok and i.build_id)
    build_id = builds.most_common(1)[0][0] if builds else ""
    answered = sum(1 for i in instances if i.ok)
    summary = summarize_snapshot(
        snapshot_id=snapshot_id, service=result.service, taken_at=result.started_at,
        build_id=build_id, instances=answered, heap=heap, goroutines=goroutines,
        memstats=memstats, trigger=trigger)
    summary.observations = observations
    summary.fresh = any(i.fresh for i in result.instances if i.ok)
    snapshot = StoredSnapshot(
        id=snapshot_id, service=result.service, taken_at=result.started_at, trigger=trigger,
        requested_by=requested_by, instances=instances, build_id=build_id,
        goroutine_total=goroutines.total if goroutines is not None else None,
        memstats=memstats, memstats_per_instance=per_instance, summary=summary,
        elapsed=round(result.elapsed, 4), job=job)
    return snapshot, raw, heap, goroutines


class Runtime:
    """Registry + capturer + store, with single-flight and since-resolution."""

    def __init__(self, *, registry: Registry, store: SnapshotStore,
                 capturer: Capturer | None = None,
                 settings: Settings | None = None, embedded: EmbeddedRedis | None = None,
                 lock_timeout: float | None = None) -> None:
        self.registry = registry
        self.store = store
        self._capturer = capturer
        self.settings = settings
        self.embedded = embedded
        self.lock_timeout = lock_timeout
        self._inflight: dict[str, asyncio.Future[Captured]] = {}

    @classmethod
    async def create(cls, settings: Settings, *, registry: Registry | None = None,
                     capturer: Capturer | None = None) -> Runtime:
        """Load the registry, connect to REDIS_URL or start the embedded Redis."""
        if settings.redis_url:
            parse_redis_url(settings.redis_url)  # a typo is one message before anything else
        registry = registry if registry is not None else load_registry(settings.config_path)
        if not registry.found:
            log.warning("no registry at %s: heapbot starts with no services. %s",
                        registry.path, registry.setup_hint())
        embedded = None
        if settings.redis_url:
            store = SnapshotStore.from_url(settings.redis_url)
        else:
            from bot.redis_server import EmbeddedRedis

            embedded = EmbeddedRedis(settings.data_dir)
            url = await asyncio.to_thread(embedded.ensure)
            store = SnapshotStore.from_url(url)
            store.location = f"embedded redis-server in {settings.data_dir}"
        return cls(registry=registry, store=store, capturer=capturer,
                   settings=settings, embedded=embedded)

    @property
    def capturer(self) -> Capturer:
        """The HTTP capturer, made on first use."""
        if self._capturer is None:
            from bot.capture import Capturer

            self._capturer = Capturer()
        return self._capturer

    async def close(self) -> None:
        """Close connections; let go of the embedded Redis (it stays up for the next process)."""
        for pending in list(self._inflight.values()):
            pending.cancel()
        if self._capturer is not None:
            await self._capturer.aclose()
        with contextlib.suppress(Exception):
            await self.store.close()
        if self.embedded is not None:  # it keeps running for the next heapbot process
            self.embedded.release()

    async def ping(self) -> float:
        """Seconds a PING to the store took (readiness); StoreError when Redis is down."""
        return await self.store.ping()

    async def topology(self) -> dict[str, Any]:
        """The Redis behind the store for readiness: topology and, on a Cluster, its state."""
        return await self.store.topology()

    @property
    def redis(self) -> aioredis.Redis:
        """The one Redis client of this process (the store's pool), for the job queue,
        thread memory and replay guard the composition root builds."""
        return self.store.redis

    def service(self, name: str) -> ServiceConfig:
        return self.registry.resolve(name)

    # -- capture -------------------------------------------------------------------

    async def capture(self, service: str, trigger: str = "user", requested_by: str = "",
                      force: bool = False, gc: bool = False, job: str = "") -> Captured:
        """Capture every instance and store the snapshot (or reuse/join a recent one).

        Whether the heap is fetched fresh (``heap?gc=1``) follows the registry's
        policy for ``trigger`` (:meth:`ServiceConfig.fresh_heap`); ``gc`` is a
        user's ``--gc``, which also bypasses the cooldown. ``job`` tags the stored snapshot
        with the job step that asked (``StoredSnapshot.job``).
        """
        force = force or gc
        config = self.registry.resolve(service)
        requested_at = time.time()
        while (pending := self._inflight.get(config.name)) is not None:
            # Someone in this process is capturing it right now: share that capture.
            try:
                return _joined(await asyncio.shield(pending))
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if not pending.cancelled() or (task is not None and task.cancelling()):
                    raise  # we were cancelled ourselves
                # the leader's request was cancelled, not ours: capture (or join) again
        future: asyncio.Future[Captured] = asyncio.get_running_loop().create_future()
        self._inflight[config.name] = future
        try:
            result = await self._capture_once(config, trigger, requested_by, force,
                                              requested_at, gc, job)
        except asyncio.CancelledError:
            future.cancel()
            raise
        except BaseException as exc:
            if not future.done():
                future.set_exception(exc)
                future.exception()  # retrieved: no "never retrieved" warning if unused
            raise
        else:
            future.set_result(result)
            return result
        finally:
            self._inflight.pop(config.name, None)

    async def _capture_once(self, config: ServiceConfig, trigger: str, requested_by: str,
                            force: bool, requested_at: float, gc: bool = False,
                            job: str = "") -> Captured:
        from bot import metrics  # prometheus_client: not for `heapbot services`

        now = time.time()
        latest: StoredSnapshot | None = None
        store_error: str | None = None
        try:
            latest = await self.store.latest(config.name)
        except StoreError as exc:
            store_error = exc.user_message()
        if latest is not None and latest.taken_at >= requested_at:
            # Another replica began a capture after this request arrived and has
            # finished it: that is as fresh as ours would be (single-flight).
            metrics.CAPTURES.labels(config.name, "reused").inc()
            return _joined(await self._from_stored(latest))
        if not force and latest is not None and _within_cooldown(config, latest, now):
            metrics.CAPTURES.labels(config.name, "reused").inc()
            return await self._from_stored(latest, reused=True)

        lock = None
        if store_error is None:
            ttl = self.lock_timeout or (config.timeout_seconds * 3 + 30)
            lock = self.store.redis.lock(keys.capture_lock(config.name),
                                         timeout=ttl, sleep=0.05, blocking_timeout=ttl)
            try:
                if not await lock.acquire(blocking=False):
                    # Another replica is capturing: wait for it and use what it stored.
                    acquired = await lock.acquire(blocking=True)
                    newest = await self.store.latest(config.name)
                    if newest is not None and (latest is None or newest.id != latest.id):
                        if acquired:
                            await _release(lock)
                        metrics.CAPTURES.labels(config.name, "reused").inc()
                        return _joined(await self._from_stored(newest))
                    if not acquired:
                        lock = None  # the holder vanished without storing: capture anyway
            except (RedisError, OSError) as exc:
                log.warning("capture lock for %s unavailable: %s", config.name,
                            type(exc).__name__)
                lock = None
        try:
            return await self._fresh(config, trigger, requested_by, store_error, gc, latest,
                                     job)
        finally:
            if lock is not None:
                await _release(lock)

    async def _fresh(self, config: ServiceConfig, trigger: str, requested_by: str,
                     store_error: str | None, gc: bool = False,
                     latest: StoredSnapshot | None = None, job: str = "") -> Captured:
        from bot import metrics

        clock = time.monotonic()
        try:
            result = await self.capturer.capture(config, fresh=config.fresh_heap(trigger, gc))
        except CaptureError:
            metrics.CAPTURES.labels(config.name, "failed").inc()
            raise
        finally:
            metrics.CAPTURE_SECONDS.labels(config.name).observe(time.monotonic() - clock)
        snapshot_id = new_snapshot_id(result.started_at)
        snapshot, raw, heap, goroutines = await asyncio.to_thread(
            _digest, result, snapshot_id, trigger, requested_by, job)
        metrics.CAPTURES.labels(config.name, "partial" if result.partial else "ok").inc()
        captured = Captured(snapshot=snapshot, heap=heap, goroutines=goroutines,
                            memstats=dict(snapshot.memstats), instances=snapshot.instances)
        if latest is not None and latest.summary is not None and snapshot.summary is not None:
            from bot.analysis.leaks.observe import unchanged_note

            captured.heap_note = unchanged_note(latest.summary.observations,
                                                snapshot.summary.observations, config.name)
        log.info("captured %s: %d/%d instances in %.2fs, snapshot %s", config.name,
                 snapshot.answered, len(snapshot.instances), result.elapsed, snapshot_id)
        if store_error is not None:
            captured.stored, captured.store_error = False, store_error
            return captured
        try:
            merged = await asyncio.to_thread(encode_merged, heap)
            captured.deploys_detected = await self.store.save(
                snapshot, raw, merged=merged, retention_count=config.retention_count,
                retention_days=config.retention_days)
        except StoreError as exc:
            captured.stored, captured.store_error = False, exc.user_message()
            log.warning("snapshot of %s not stored: %s", config.name, exc.message)
        return captured

    async def _from_stored(self, snapshot: StoredSnapshot, *, reused: bool = False
                           ) -> Captured:
        heap = await self.load_profile(snapshot, missing_ok=True)
        goroutines = None
        blobs = [b for _, b in await self.store.raw_profiles(
            snapshot.service, snapshot.id, "goroutine")]
        if blobs:
            from bot.analysis.goroutines import merge_reports

            goroutines = merge_reports(
                await asyncio.to_thread(_goroutine_reports, blobs))
        return Captured(snapshot=snapshot, heap=heap, goroutines=goroutines,
                        memstats=dict(snapshot.memstats), instances=snapshot.instances,
                        reused=reused, age_seconds=max(0.0, time.time() - snapshot.taken_at))

    # -- stored snapshots --------------------------------------------------------------

    @overload
    async def load_profile(self, snapshot: StoredSnapshot, kind: str = "heap", *,
                           missing_ok: Literal[False] = False) -> Profile: ...

    @overload
    async def load_profile(self, snapshot: StoredSnapshot, kind: str = "heap", *,
                           missing_ok: bool) -> Profile | None: ...

    async def load_profile(self, snapshot: StoredSnapshot, kind: str = "heap", *,
                           missing_ok: bool = False) -> Profile | None:
        """The merged profile of ``kind`` rebuilt from the snapshot's stored raw bytes
        (NotFoundError when it holds none, unless ``missing_ok``: then None)."""
        blobs = [b for _, b in await self.store.raw_profiles(snapshot.service, snapshot.id,
                                                             kind)]
        profile = await asyncio.to_thread(_parse_profiles, blobs) if blobs else None
        if profile is None and not missing_ok:
            raise NotFoundError(
                f"Snapshot `{snapshot.id}` of `{snapshot.service}` holds no {kind} profile.",
                hint=f"`/heap capture {snapshot.service}` takes a new one.")
        return profile

    async def open_snapshot(self, service: str, ref: str) -> Captured:
        """A stored snapshot (``ref`` as in :meth:`resolve_since`) with its merged heap profile.

        What ``/heap top SERVICE --snapshot ID`` shows: nothing is captured.
        """
        snapshot = await self.resolve_since(service, ref)
        heap = await self.load_profile(snapshot)
        return Captured(snapshot=snapshot, heap=heap, memstats=dict(snapshot.memstats),
                        instances=snapshot.instances,
                        age_seconds=max(0.0, time.time() - snapshot.taken_at))

    async def reusable(self, service: str) -> StoredSnapshot | None:
        """The capture a non-forced :meth:`capture` of ``service`` would reuse now (its
        cooldown), or None when it would capture anew; StoreError when Redis cannot say."""
        config = self.registry.resolve(service)
        if config.cooldown_seconds <= 0:
            return None
        latest = await self.store.latest(config.name)
        return latest if _within_cooldown(config, latest, time.time()) else None

    async def previous(self, service: str, snapshot: StoredSnapshot) -> StoredSnapshot | None:
        """The capture stored before ``snapshot``, or None when there is none (or no store)."""
        try:
            return await self.resolve_since(service, "previous", snapshot)
        except (NotFoundError, StoreError):
            return None

    async def get(self, service: str, snapshot_id: str) -> StoredSnapshot:
        return await self.store.get(self.registry.resolve(service).name, snapshot_id)

    async def latest(self, service: str) -> StoredSnapshot | None:
        """The newest stored snapshot of ``service`` (None when it has none)."""
        return await self.store.latest(self.registry.resolve(service).name)

    async def latest_many(self, services: Sequence[str]) -> dict[str, StoredSnapshot | None]:
        """The newest stored snapshot of each registry service (meta only), in one go."""
        return await self.store.latest_many([self.registry.resolve(s).name for s in services])

    async def before(self, service: str, when: float, *, exclude: str | None = None
                     ) -> StoredSnapshot | None:
        """The newest stored snapshot taken at or before ``when`` (not ``exclude``)."""
        return await self.store.before(self.registry.resolve(service).name, when,
                                       exclude=exclude)

    async def snapshots_since(self, service: str, since: float) -> list[StoredSnapshot]:
        """Every stored snapshot taken at or after ``since``, newest first."""
        return await self.store.list(self.registry.resolve(service).name, 0, since=since)

    async def raw_profiles(self, service: str, snapshot_id: str, kind: str = "heap", *,
                           merged_ok: bool = True) -> list[tuple[int, bytes]]:
        """(instance index, raw bytes) of every stored ``kind`` profile of a snapshot.

        Past the newest few captures only the merged profile is kept: it comes back
        as one entry with index ``bot.store.MERGED`` (-1) unless ``merged_ok`` is False.
        """
        return await self.store.raw_profiles(self.registry.resolve(service).name, snapshot_id,
                                             kind, merged_ok=merged_ok)

    async def history(self, service: str, limit: int = 20) -> list[StoredSnapshot]:
        """Stored snapshots, newest first (with summaries)."""
        name = self.registry.resolve(service).name
        return await self.store.list(name, limit, with_summary=True)

    async def summaries(self, service: str, since: float | str | None = None, *,
                        limit: int = 0) -> list[SnapshotSummary]:
        """Stored summaries oldest first (the newest ``limit`` when set); ``since`` is unix
        seconds or a since-reference."""
        name = self.registry.resolve(service).name
        if isinstance(since, str):
            since = (await self.resolve_since(name, since, None)).taken_at
        return await self.store.summaries(name, since=since, limit=limit)

    async def deploys(self, service: str, since: float | None = None) -> list[DeployMarker]:
        return await self.store.deploys(self.registry.resolve(service).name, since=since)

    async def sources(self, service: str, files: Sequence[str], *,
                      build_id: str | None = None) -> Sources:
        """Source text of ``files`` from the service's ``source:`` block, for `list`.

        ``{version}`` in a URL template is the version of the latest deploy marker.
        """
        from pathlib import Path

        from bot.source import find_sources

        config = self.registry.resolve(service)
        version = None
        if config.source is not None and "{version}" in (config.source.url or ""):
            with contextlib.suppress(StoreError):
                markers = await self.deploys(service)
                version = markers[-1].version if markers else None
        folder = Path(self.registry.path).parent if self.registry.path else None
        return await find_sources(config.source, files, version=version, build_id=build_id,
                                  registry_dir=folder)

    async def leak_report(self, service: str) -> LeakReport:
        """The one leak verdict over a service's stored captures.

        `/heap leaks`, watch ticks and paged threads all call this, so they give
        the same verdict and suspects on the same captures. It reads summaries and
        deploy markers, fills heap summaries stored without one from their raw
        profiles, adds file:line and own-code callers from the latest heap
        profile, and runs the analysis off the event loop.
        """
        from bot.analysis.leaks import analyze as analyze_leaks

        name = self.registry.resolve(service).name
        summaries = await self._with_heap(name, await self.summaries(name))
        deploys = await self.deploys(name)
        sites = await self._latest_sites(name)
        return await asyncio.to_thread(analyze_leaks, summaries, deploys, None, None,
                                       sites=sites, service=name)

    async def _with_heap(self, service: str, summaries: list[SnapshotSummary]
                         ) -> list[SnapshotSummary]:
        """Fill the heap part of summaries stored without one, from their raw profiles."""
        from bot.analysis.leaks import MAX_CAPTURES as MAX_LEAK_CAPTURES
        from bot.analysis.leaks import summarize_heap_bytes

        for summary in summaries[-MAX_LEAK_CAPTURES:]:
            if summary.heap.functions:
                continue
            try:
                blobs = [b for _, b in await self.store.raw_profiles(
                    service, summary.snapshot_id, "heap")]
            except HeapbotError:
                continue
            if blobs:
                with contextlib.suppress(HeapbotError):
                    summary.heap = await asyncio.to_thread(summarize_heap_bytes, blobs)
        return summaries

    async def _latest_sites(self, service: str) -> dict[str, HeapSite]:
        """File:line and own-code callers from the latest capture's raw heap profiles."""
        try:
            latest = await self.store.latest(service)
            if latest is None:
                return {}
            blobs = [b for _, b in await self.store.raw_profiles(service, latest.id, "heap")]
        except HeapbotError:
            return {}
        return await asyncio.to_thread(_sites_of, blobs)

    async def add_deploy(self, service: str, version: str, by: str = "",
                         at: float | None = None) -> DeployMarker:
        version = version.strip()
        if not version or len(version) > 200:
            raise UsageError("A deploy needs a VERSION (at most 200 characters).",
                             hint="Usage: `/heap deploy SERVICE VERSION`")
        return await self.store.add_deploy(self.registry.resolve(service).name, version, by,
                                           at)

    async def start_sampling(self, plan: Sampling) -> Sampling:
        """Reserve and schedule ``/heap leaks --sample`` captures (bot/sampling.py caps)."""
        from bot import sampling

        async with store_errors("reserve a sampling", self.store.location):
            return await sampling.start(self.redis, plan)

    async def set_sampling_thread(self, sampling_id: str, channel: str, ts: str) -> None:
        """Where a sampling's verdict goes: the thread of the reply that announced it."""
        from bot import sampling

        async with store_errors("record a sampling's thread", self.store.location):
            await sampling.set_thread(self.redis, sampling_id, channel, ts)

    # -- watches (stored beside the snapshots; the alert wing schedules them) ----------

    @property
    def _watches(self) -> WatchStore:
        return WatchStore(self.redis)

    async def watch(self, service: str) -> Watch | None:
        """The watch on ``service``, or None."""
        return await self._watches.get(service)

    async def watches(self) -> list[Watch]:
        """Every watch, by service name."""
        return await self._watches.all()

    async def put_watch(self, watch: Watch) -> Watch | None:
        """Store ``watch`` (replacing the service's earlier one, which is returned)."""
        previous = await self._watches.get(watch.service)
        await self._watches.put(watch)
        return previous

    async def remove_watch(self, service: str) -> bool:
        """Drop the watch on ``service``; False when there was none."""
        return await self._watches.remove(service)

    async def resolve_since(self, service: str, ref: str | None,
                            before: StoredSnapshot | float | None = None) -> StoredSnapshot:
        """The stored snapshot that ``ref`` names, relative to ``before`` (default: now).

        ``previous``: the capture before ``before``. ``deploy``: the first capture
        at or after the latest deploy (growth since the deploy), else the last one
        before it. ``30m``/``1h``/``2d``: the newest capture at least that old.
        Otherwise ``ref`` is a snapshot id.
        """
        name = self.registry.resolve(service).name
        ref = check_since_ref(ref)
        exclude = before.id if isinstance(before, StoredSnapshot) else None
        when = (before.taken_at if isinstance(before, StoredSnapshot)
                else float(before) if before is not None else time.time())
        low = ref.lower()
        if low in ("previous", "prev", "last"):
            found = await self.store.before(name, when, exclude=exclude)
            if found is None:
                raise NotFoundError(
                    f"There is no earlier capture of `{name}` to compare with.",
                    hint=f"Capture again later (`/heap capture {name}`) and compare then.")
            return found
        if low == "deploy":
            markers = await self.store.deploys(name, until=when)
            if not markers:
                raise NotFoundError(
                    f"No deploy of `{name}` is recorded.",
                    hint=f"`/heap deploy {name} VERSION` records one; heapbot also notices "
                    "a new build between two captures.")
            marker = markers[-1]
            after = [s for s in await self.store.list(name, 0, since=marker.taken_at)
                     if s.id != exclude and s.taken_at <= when]
            if after:
                return after[-1]  # list is newest first: the first capture after the deploy
            found = await self.store.before(name, marker.taken_at, exclude=exclude)
            if found is None:
                raise NotFoundError(
                    f"`{name}` has no capture since its deploy {marker.version} other than "
                    "this one.", hint="Capture again later to see the change since the deploy.")
            return found
        seconds = duration_seconds(low)
        if seconds is not None:
            found = await self.store.before(name, when - seconds, exclude=exclude)
            if found is None:
                oldest = await self.store.oldest(name)
                if oldest is not None:
                    age = format_duration(when - oldest.taken_at)
                    hint = (f"The oldest stored capture is from {age} ago; "
                            f"`since previous` compares with the last one.")
                else:
                    hint = f"`/heap capture {name}` starts the history."
                raise NotFoundError(f"`{name}` has no capture from {ref} ago or earlier.",
                                    hint=hint)
            return found
        return await self.store.get(name, low)  # a snapshot id (check_since_ref said so)


def _within_cooldown(config: ServiceConfig, latest: StoredSnapshot | None, now: float) -> bool:
    """Whether ``latest`` is recent enough to be reused instead of a new capture."""
    return (latest is not None and config.cooldown_seconds > 0
            and now - latest.taken_at < config.cooldown_seconds)


def _sites_of(blobs: list[bytes]) -> dict[str, HeapSite]:
    from bot.analysis.leaks import heap_sites

    sites: dict[str, HeapSite] = {}
    for blob in blobs:
        try:
            for fn, site in heap_sites(blob).items():
                sites.setdefault(fn, site)
        except HeapbotError:
            continue  # a bad instance profile only costs its file:line hints
    return sites


def _joined(captured: Captured) -> Captured:
    """A copy for a request that joined another's capture."""
    return Captured(
        snapshot=captured.snapshot, heap=captured.heap, goroutines=captured.goroutines,
        memstats=captured.memstats, instances=captured.instances, reused=captured.reused,
        shared=True, age_seconds=max(0.0, time.time() - captured.snapshot.taken_at),
        stored=captured.stored, store_error=captured.store_error,
        deploys_detected=captured.deploys_detected, heap_note=captured.heap_note)


async def _release(lock: Any) -> None:
    with contextlib.suppress(LockError, RedisError, OSError):
        await lock.release()


__all__ = [
    "SINCE_HELP",
    "Captured",
    "Runtime",
    "StoreUnavailableError",
    "check_since_ref",
]
