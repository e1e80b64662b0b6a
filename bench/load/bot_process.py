"""The bot as its own process (``heapbot serve``) plus an event-loop lag monitor.

Started by bench/load/run.py. Settings come from the environment like any
deployment; on SIGTERM the server shuts down cleanly and this writes what the
monitor saw (max and p99 loop lag, peak RSS) as JSON to the path in argv[1].
"""

from __future__ import annotations

import asyncio
import cProfile
import io
import json
import os
import pstats
import resource
import signal
import sys
import threading
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from bot.serve import serve  # noqa: E402
from bot.settings import Settings  # noqa: E402

TICK = 0.010  # the monitor asks to wake every 10 ms; lateness is loop lag
WATCHDOG: StallWatchdog | None = None


async def monitor(lags: list[float], busy: list[float]) -> None:
    """Sleep TICK again and again; how late each wake-up is = how long the loop was blocked.

    On a shared machine a late wake-up can also mean the OS did not schedule the
    process at all, so each tick also records the CPU time the loop's own thread
    used in it: lateness backed by that much CPU was heapbot's code blocking the loop.
    """
    loop = asyncio.get_running_loop()
    while True:
        started, cpu = loop.time(), time.thread_time()
        if WATCHDOG is not None:
            WATCHDOG.beat = time.monotonic()
        await asyncio.sleep(TICK)
        lag = max(0.0, loop.time() - started - TICK)
        lags.append(lag)
        busy.append(min(lag, max(0.0, time.thread_time() - cpu - 0.0005)))


class StallWatchdog(threading.Thread):
    """A thread that, when the loop has not ticked for STALL seconds, records where the
    loop's thread is (its Python stack): the code that blocks the loop, named."""

    STALL = 0.08

    def __init__(self, loop_thread_id: int) -> None:
        super().__init__(name="stall-watchdog", daemon=True)
        self.loop_thread_id = loop_thread_id
        self.beat = time.monotonic()
        self.stalls: list[str] = []
        self.armed = True

    def run(self) -> None:
        while True:
            time.sleep(0.01)
            if time.monotonic() - self.beat > self.STALL and self.armed:
                frame = sys._current_frames().get(self.loop_thread_id)
                if frame is not None:
                    stack = traceback.format_stack(frame, limit=12)
                    self.stalls.append("".join(s for s in stack if "/work/" in s or
                                               "site-packages" in s)[-3000:])
                self.armed = False  # one sample per stall
            elif time.monotonic() - self.beat <= self.STALL:
                self.armed = True


async def main(out: Path) -> None:
    global WATCHDOG
    WATCHDOG = StallWatchdog(threading.get_ident())
    WATCHDOG.start()
    lags: list[float] = []
    busy: list[float] = []
    task = asyncio.create_task(monitor(lags, busy), name="loop-lag-monitor")
    # SIGUSR1 from the driver marks the start of the load: forget start-up lag (imports,
    # first connections) so the figures describe serving under load only.
    # HEAPBOT_BENCH_PROFILE=1: cProfile the loop's thread from then on (where its CPU goes).
    profiler = cProfile.Profile() if os.environ.get("HEAPBOT_BENCH_PROFILE") else None

    started_counting: list[bool] = []

    def start_counting() -> None:
        started_counting.append(True)
        lags.clear()
        busy.clear()
        WATCHDOG.stalls.clear()
        if profiler is not None:
            profiler.enable()

    ack_window: list[str] = []

    def acks_done() -> None:
        """SIGUSR2: every ack has arrived; keep the profile of that window apart."""
        if profiler is not None:
            buffer = io.StringIO()
            pstats.Stats(profiler, stream=buffer).sort_stats("tottime").print_stats(20)
            ack_window.append(buffer.getvalue())
            profiler.enable()  # Stats() stopped it; the whole-load profile goes on

    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, start_counting)
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR2, acks_done)
    started = time.perf_counter()
    try:
        await serve(Settings())
    finally:
        task.cancel()
        hot = ""
        if profiler is not None and started_counting:
            profiler.disable()
            buffer = io.StringIO()
            pstats.Stats(profiler, stream=buffer).sort_stats("tottime").print_stats(15)
            hot = buffer.getvalue()
        ordered = sorted(lags) or [0.0]
        out.write_text(json.dumps({
            "stalls": WATCHDOG.stalls[:10],
            "profile": hot,
            "ack_profile": ack_window[0] if ack_window else "",
            "busy_max": max(busy or [0.0]),
            "busy_over_100ms": sum(1 for v in busy if v > 0.1),
            "lag_max": ordered[-1],
            "lag_p99": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
            "lag_over_100ms": sum(1 for v in lags if v > 0.1),
            "ticks": len(lags),
            "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "uptime": time.perf_counter() - started,
        }))


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
