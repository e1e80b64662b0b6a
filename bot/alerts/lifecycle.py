"""Stop signals and live-task bookkeeping shared by the worker, paged threads and watches.

A module of its own so the worker, the incident lock and the watch scheduler can
all use it without importing each other (no worker ↔ paged ↔ watches cycle).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any


def stop_requested(stop: asyncio.Event | None = None) -> bool:
    """True once shutdown began, even if a library swallowed this task's CancelledError.

    Python 3.11's asyncio.timeout (used by redis-py around socket reads) can swallow a
    cancel() that lands as its own deadline expires; so the loops also watch an Event
    that the owning task sets when it is cancelled.
    """
    if stop is not None and stop.is_set():
        return True
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


# Queue loops and jobs running in this process (task → what it is), so an owner that
# forgot to stop a worker is found (tests assert none is left) instead of it silently
# consuming jobs meant for a later worker on the same stream.
_LIVE: dict[asyncio.Task[Any], str] = {}


@contextlib.contextmanager
def tracked(what: str) -> Iterator[None]:
    """Register the current task in :func:`live_tasks` while the block runs."""
    task = asyncio.current_task()
    if task is None:
        yield
        return
    _LIVE[task] = what
    try:
        yield
    finally:
        _LIVE.pop(task, None)


def live_tasks() -> dict[asyncio.Task[Any], str]:
    """Job consumers, watch schedulers and jobs still running in this process."""
    return {task: what for task, what in _LIVE.items()
            if not task.done() and not task.get_loop().is_closed()}
