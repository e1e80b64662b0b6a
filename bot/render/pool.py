"""A worker process for drawing, so matplotlib never holds the bot's event loop.

Drawing a flame graph is a few hundred milliseconds of pure-Python matplotlib
work; in a thread it would hold the GIL and stall every other Slack request of
the bot meanwhile. Work sent here runs in one separate process (started on
first use with "spawn": no fork of a process that runs threads and an event
loop), which keeps matplotlib and its fonts loaded between requests. Only small
inputs cross the process boundary (a flame graph layout of a few thousand
rectangles), never a profile. One worker: the machines heapbot runs on are
small, and drawings are rare next to captures.

If the worker dies (killed, out of memory), the next call starts a new one.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import threading
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

_lock = threading.Lock()
_pool: ProcessPoolExecutor | None = None


def _executor() -> ProcessPoolExecutor:
    global _pool
    with _lock:
        if _pool is None:
            _pool = ProcessPoolExecutor(max_workers=1,
                                        mp_context=multiprocessing.get_context("spawn"))
        return _pool


def _discard(pool: ProcessPoolExecutor) -> None:
    global _pool
    with _lock:
        if _pool is pool:
            _pool = None
    pool.shutdown(wait=False, cancel_futures=True)


async def run_drawing(fn: Callable[..., T], *args: object) -> T:
    """``fn(*args)`` in the drawing process (``fn`` and ``args`` must pickle)."""
    pool = _executor()
    loop = asyncio.get_running_loop()
    try:
        return await loop.run_in_executor(pool, fn, *args)
    except BrokenProcessPool:
        log.warning("the drawing process died; starting a new one")
        _discard(pool)
        return await loop.run_in_executor(_executor(), fn, *args)


def shutdown() -> None:
    """Stop the drawing process (tests and a clean exit; it also ends with the bot)."""
    global _pool
    with _lock:
        pool, _pool = _pool, None
    if pool is not None:
        pool.shutdown(wait=True, cancel_futures=True)
