"""Heavy work off the event loop: a process pool for decoding, and bounds on what is in flight.

Decoding a profile is CPU-bound Python/numpy: in a thread it holds the GIL and
slows every Slack ack; in another process it uses the machine's other cores.
``decode_heap`` runs ``parse_profile`` in a process pool sized to the machine
(``HEAPBOT_WORKER_PROCESSES``, default: the CPU count, at most 4; 0 decodes in a
thread instead) and sends the decoded Profile back (numpy arrays pickle as raw
buffers: a few milliseconds for a 64k-stack profile).

Bounds (issue 13 and issue 17 item 12), stated in the README:
- ``heavy_slot()``: at most ``2 x processes`` decodes queued or running at once,
  whatever the number of captures; the rest wait their turn (a bounded queue).
- ``BYTES``: a global budget of bytes being downloaded or held before decoding,
  across every instance of every command (``HEAPBOT_INFLIGHT_BYTES``, 256 MiB).
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import concurrent.futures
import contextlib
import logging
import multiprocessing
import os
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from bot.errors import CaptureError, ProfileError
from bot.logs import target_names

if TYPE_CHECKING:
    from bot.analysis.leaks.observe import HeapFacts
    from bot.pprof import Profile
    from bot.pprof.fold import SampleKeys

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_INFLIGHT_BYTES = 256 << 20


def _env_int(name: str, default: int) -> int:
    text = os.environ.get(name, "").strip()
    try:
        return int(text) if text else default
    except ValueError:
        log.warning("%s=%r is not a whole number; using %d", name, text, default)
        return default


_one_shot = False


def one_shot() -> None:
    """This process runs one user's commands (the CLI), not the server.

    On a machine of 2 CPUs it then decodes in threads by default: with no Slack acks to
    keep fast, worker processes only add their start-up and ~100 MB each, and a
    40-instance capture is as fast in threads (numpy and zlib let go of the GIL) at half
    the memory (bench/fanout). With more CPUs the workers are used as in the server.
    """
    global _one_shot
    _one_shot = True


def processes() -> int:
    """Worker processes for decoding (0: decode in a thread)."""
    cpus = os.cpu_count() or 1
    default = 0 if _one_shot and cpus <= 2 else min(cpus, 4)
    return max(0, _env_int("HEAPBOT_WORKER_PROCESSES", default))


_pool: concurrent.futures.ProcessPoolExecutor | None = None
_pool_lock = threading.Lock()
_broken_until = 0.0  # after a worker failure, decode in threads for a while
_RETRY_POOL_AFTER_S = 60.0
_slots: dict[asyncio.AbstractEventLoop, asyncio.Semaphore] = {}


# Imported once by the fork server, so each worker forked from it starts with the
# decoder loaded instead of importing numpy and the engine itself (~0.5 s each).
_PRELOAD = ["bot.workpool", "bot.pprof.fold", "bot.analysis.leaks.observe"]


def _get_pool() -> concurrent.futures.ProcessPoolExecutor | None:
    global _pool
    count = processes()
    if count == 0 or time.monotonic() < _broken_until:
        return None
    with _pool_lock:
        if _pool is None:
            # forkserver: never fork a process whose threads may hold locks
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(_PRELOAD)
            _pool = concurrent.futures.ProcessPoolExecutor(max_workers=count,
                                                           mp_context=context)
            atexit.register(shutdown, wait=True)
        return _pool


def _ready() -> None:
    """A no-op run in each worker by :func:`warm`."""


def warm() -> None:
    """Start the worker processes now (in the background), so a capture's first decode
    does not wait for them: called when a fleet capture starts fetching.

    The submits run in a thread: starting a worker waits for the fork server, whose first
    start imports numpy and the decoder (seconds on a loaded machine), and on the event
    loop that wait stopped every other request (see :func:`_offload`)."""
    pool = _get_pool()
    if pool is not None:
        threading.Thread(target=_submit_ready, args=(pool, processes()),
                         name="workpool-warm", daemon=True).start()


def _submit_ready(pool: concurrent.futures.ProcessPoolExecutor, count: int) -> None:
    with contextlib.suppress(RuntimeError, concurrent.futures.process.BrokenProcessPool):
        for _ in range(count):  # RuntimeError: the pool was shut down meanwhile
            pool.submit(_ready)


def shutdown(wait: bool = False) -> None:
    """Stop the worker processes (they start again on the next decode)."""
    global _pool
    with _pool_lock:
        pool, _pool = _pool, None
    if pool is not None:
        atexit.unregister(shutdown)
        pool.shutdown(wait=wait, cancel_futures=True)


@asynccontextmanager
async def heavy_slot() -> AsyncIterator[None]:
    """Wait for one of the bounded heavy-work slots of this event loop."""
    loop = asyncio.get_running_loop()
    sem = _slots.get(loop)
    if sem is None:
        for old in [k for k in _slots if k.is_closed()]:
            del _slots[old]
        sem = _slots[loop] = asyncio.Semaphore(max(2, 2 * processes()))
    async with sem:
        yield


def parse_heap(data: bytes | bytearray, max_compressed: int) -> Profile:
    """Parse and check a heap profile (CPU-bound: runs in this module's processes)."""
    from bot.pprof import Limits, parse_profile

    limits = Limits(max_compressed=max(max_compressed, len(data)))
    profile = parse_profile(data, limits)
    kinds = [t.type for t in profile.sample_types]
    if not {"inuse_space", "alloc_space"} & set(kinds):
        raise ProfileError(f"it holds {target_names(kinds) or 'no sample types'}, not heap "
                           "samples (is the endpoint a heap profile?)")
    return profile


_fold_slots: dict[asyncio.AbstractEventLoop, asyncio.Semaphore] = {}


@asynccontextmanager
async def fold_slot() -> AsyncIterator[None]:
    """One fold at a time per event loop: folding runs in a thread of this process and
    holds its GIL; five captures folding at once would slow every Slack ack five-fold."""
    loop = asyncio.get_running_loop()
    sem = _fold_slots.get(loop)
    if sem is None:
        for old in [k for k in _fold_slots if k.is_closed()]:
            del _fold_slots[old]
        sem = _fold_slots[loop] = asyncio.Semaphore(1)
    async with sem:
        yield


def _decode(data: bytes | bytearray, max_compressed: int) -> Profile:
    """In a worker: parse and check a heap profile, labels decoded, ready to pickle."""
    profile = parse_heap(data, max_compressed)
    profile.decode_labels()  # the lazy decoder is a closure: it does not pickle
    profile.cache.clear()
    return profile


def _decode_for_fold(data: bytes | bytearray, max_compressed: int
                     ) -> tuple[Profile, HeapFacts, SampleKeys]:
    """In a worker: decode, plus everything per-frame a fleet capture needs of this one
    profile (leak facts, the fold's sample keys), so the capture's own process only
    looks keys up (issue 13: per sample, not per frame, on the event loop's process)."""
    from bot.analysis.leaks.observe import heap_facts
    from bot.pprof.fold import sample_keys

    profile = _decode(data, max_compressed)
    return profile, heap_facts(profile), sample_keys(profile)


async def _offload(fn: Callable[..., T], *args: Any, pool_ok: bool = True) -> T:
    """``fn(*args)`` in the process pool, or a thread when there is none (or
    ``pool_ok`` is False). A failing pool is shut down and work runs in threads for
    ``_RETRY_POOL_AFTER_S`` before the pool is tried again."""
    pool = _get_pool() if pool_ok else None
    if pool is None:
        return await asyncio.to_thread(fn, *args)
    try:
        # Submitted from a thread: a submit may start a worker, which waits for the fork
        # server (its first start imports numpy: /healthz stalled 3-4.6 s behind the first
        # webhook body on a loaded 2-core machine when this ran on the loop).
        future = await asyncio.to_thread(pool.submit, fn, *args)
        return await asyncio.wrap_future(future)
    except (concurrent.futures.process.BrokenProcessPool, RuntimeError, OSError) as exc:
        global _broken_until
        _broken_until = time.monotonic() + _RETRY_POOL_AFTER_S
        log.warning("worker processes failed (%s) running %s; using threads for %.0f s",
                    type(exc).__name__, getattr(fn, "__name__", "work"), _RETRY_POOL_AFTER_S)
        shutdown()
        return await asyncio.to_thread(fn, *args)


async def _heavy(fn: Callable[..., T], *args: Any, pool_ok: bool) -> T:
    """``fn(*args)`` offloaded in a heavy-work slot."""
    async with heavy_slot():
        return await _offload(fn, *args, pool_ok=pool_ok)


async def decode_heap(data: bytes | bytearray, max_compressed: int, *, pool_ok: bool = True
                      ) -> Profile:
    """Decode a heap profile in the process pool (or a thread), in a heavy-work slot.

    ``pool_ok=False`` decodes in a thread: for a lone profile, starting or feeding a
    worker costs more than it saves.
    """
    return await _heavy(_decode, data, max_compressed, pool_ok=pool_ok)


async def decode_for_fold(data: bytes | bytearray, max_compressed: int, *, pool_ok: bool = True
                          ) -> tuple[Profile, HeapFacts, SampleKeys]:
    """:func:`decode_heap`, plus the profile's leak facts and fold keys, made there too."""
    return await _heavy(_decode_for_fold, data, max_compressed, pool_ok=pool_ok)


async def run_cpu(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in the process pool (or a thread when there is none): CPU-bound work
    that would hold the GIL, e.g. parsing a 1 MiB webhook body. ``fn`` must be a
    module-level function and its arguments and result picklable. Not bounded by
    :func:`heavy_slot`, so a webhook never waits behind profile decodes."""
    return await _offload(fn, *args)


class ByteBudget:
    """A global budget of in-flight bytes, shared by every capture of this process.

    ``reserve(n)`` waits (first come, first served) until n more bytes fit;
    ``release(n)`` is synchronous, so it is safe in a ``finally`` of a cancelled
    task. A request that could never fit is refused at once.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.peak = 0
        self._waiters: collections.deque[tuple[int, asyncio.Future[None]]] = collections.deque()

    async def reserve(self, n: int, timeout: float | None = None) -> None:
        """Wait until ``n`` more bytes fit (CaptureError after ``timeout`` seconds)."""
        if n > self.limit:
            raise CaptureError(f"{n} bytes do not fit heapbot's in-flight budget "
                               f"of {self.limit} bytes.")
        if not self._waiters and self.used + n <= self.limit:
            self._take(n)
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (n, waiter)
        self._waiters.append(entry)
        try:
            async with asyncio.timeout(timeout):
                await waiter
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled():
                self.release(n)  # granted while we were being cancelled: give it back
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(entry)
                self._wake()
            if isinstance(exc, TimeoutError):
                raise CaptureError(
                    "heapbot is busy: other captures hold its whole download budget "
                    f"({self.limit >> 20} MiB).", hint="Try again in a minute.") from None
            raise

    def _take(self, n: int) -> None:
        self.used += n
        self.peak = max(self.peak, self.used)

    def release(self, n: int) -> None:
        """Give ``n`` bytes back and let waiting downloads continue."""
        self.used = max(0, self.used - n)
        self._wake()

    def _wake(self) -> None:
        while self._waiters:
            n, waiter = self._waiters[0]
            if waiter.done():
                self._waiters.popleft()
                continue
            if self.used + n > self.limit:
                return
            self._waiters.popleft()
            self._take(n)
            waiter.set_result(None)  # bytes are the waiter's from now on


BYTES = ByteBudget(_env_int("HEAPBOT_INFLIGHT_BYTES", DEFAULT_INFLIGHT_BYTES))
