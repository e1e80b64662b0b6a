"""What the benchmarks under bench/ share: serving profiles, the bot as a process, memory.

Each benchmark used to carry its own copy of these; they live here once:

- ``percentile``, ``latency_line``: nearest-rank percentiles and one printed line of them;
- ``run_measured``: one command as a whole process, its wall time and peak RSS
  (``getrusage(RUSAGE_CHILDREN)`` in a fresh wrapper process);
- ``tree_rss``, ``tree_hwm_mb``, ``TreeRssSampler``, ``run_with_tree_peak``: memory of a
  process and its descendants (heapbot's decode workers, ``go tool``'s pprof child);
- ``ProfileServer``: a heap profile (with goroutine and ``heap?debug=1`` pages) served
  over real HTTP on N ports by a separate process, as N pprof instances;
- ``BotProcess``: ``heapbot serve`` as its own process (bench/load/bot_process.py, with its
  event-loop lag monitor) on a registry, a Redis and the Slack stand-in; ``healthz_seconds``.

Run a benchmark from the repository root (``.venv/bin/python bench/top/run.py``); it puts
the root on sys.path and imports ``bench._common``.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from io import BytesIO
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"
BOT_PROCESS = REPO / "bench" / "load" / "bot_process.py"


# -- percentiles -----------------------------------------------------------------------------

def old_code(commit: str, name: str = "old") -> Path:
    """bot/ as of ``commit`` in a temporary directory (removed at exit): `--old COMMIT` runs.

    A bench's child process puts it first on sys.path to measure the old code beside the new.
    """
    tar = subprocess.run(["git", "archive", commit, "bot"], cwd=REPO, check=True,
                         capture_output=True).stdout
    target = Path(tempfile.mkdtemp(prefix=f"heapbot-{name}-old-"))
    atexit.register(shutil.rmtree, target, ignore_errors=True)
    with tarfile.open(fileobj=BytesIO(tar)) as archive:
        archive.extractall(target, filter="data")
    return target


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (0 for no values)."""
    ordered = sorted(values) or [0.0]
    index = min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def latency_line(name: str, seconds: Sequence[float], width: int = 30) -> str:
    """"name   p50 … ms   p95 … ms   p99 … ms   max … ms   (n=…)"."""
    return (f"{name:<{width}} p50 {percentile(seconds, 50) * 1000:8.1f} ms   "
            f"p95 {percentile(seconds, 95) * 1000:8.1f} ms   "
            f"p99 {percentile(seconds, 99) * 1000:8.1f} ms   "
            f"max {max(seconds or [0]) * 1000:8.1f} ms   (n={len(seconds)})")


# -- whole processes and their memory --------------------------------------------------------

# Runs one command in a fresh process: its children's peak RSS is then that command's alone.
_MEASURE = r"""
import json, resource, subprocess, sys, time
start = time.perf_counter()
proc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
wall = time.perf_counter() - start
if proc.returncode:
    sys.stderr.write(proc.stderr.decode(errors="replace"))
    sys.exit(proc.returncode)
peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"wall": wall, "rss_mb": peak_kb / 1024}))
"""


def run_measured(cmd: Sequence[str], env: Mapping[str, str] | None = None,
                 timeout: float = 900) -> dict[str, float]:
    """Run ``cmd`` as a whole process: {"wall": seconds, "rss_mb": peak RSS of its largest
    process in MiB}. Fails (CalledProcessError) when the command does."""
    out = subprocess.run([sys.executable, "-c", _MEASURE, *cmd],
                         env=dict(os.environ if env is None else env), check=True,
                         capture_output=True, text=True, timeout=timeout)
    return json.loads(out.stdout)


def _tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def tree_rss(pid: int, skip: Sequence[str] = ()) -> int:
    """Bytes of RSS summed over ``pid`` and its descendants now (those whose command line
    holds one of ``skip`` left out)."""
    return tree_memory(pid, skip)[0]


def tree_memory(pid: int, skip: Sequence[str] = (), *, pss: bool = False) -> tuple[int, int]:
    """(summed RSS, summed PSS) in bytes of ``pid`` and its descendants now; PSS only
    when asked (it reads smaps), else 0.

    RSS counts a page shared by processes forked from one parent (the decode workers:
    the interpreter, numpy) once per process; PSS splits it among them, which is what
    the tree costs the machine (and a pod's cgroup).
    """
    rss = shared = 0
    for process in _tree(pid):
        with contextlib.suppress(psutil.Error):
            if skip and any(s in " ".join(process.cmdline()) for s in skip):
                continue
            if pss:
                info = process.memory_full_info()
                rss += info.rss
                shared += getattr(info, "pss", info.rss)
            else:
                rss += process.memory_info().rss
    return rss, shared


def tree_hwm_mb(pid: int) -> float:
    """The largest peak RSS (VmHWM) among ``pid`` and its descendants, in MiB: what a
    wrapper's RUSAGE_CHILDREN cannot see of a process still running (`go tool` runs
    pprof as its child)."""
    best = 0.0
    for process in _tree(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    best = max(best, int(line.split()[1]) / 1024)
    return best


class TreeRssSampler:
    """Peak of the summed RSS of a process tree, sampled on the event loop."""

    def __init__(self, pid: int, every: float = 0.05) -> None:
        self.pid, self.every = pid, every
        self.peak = 0  # bytes
        self._task: asyncio.Task[None] | None = None

    def start(self) -> TreeRssSampler:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    async def _run(self) -> None:
        while True:
            self.peak = max(self.peak, tree_rss(self.pid))
            await asyncio.sleep(self.every)

    def stop(self) -> int:
        """Stop sampling; the peak in bytes."""
        if self._task is not None:
            self._task.cancel()
        return self.peak


def run_with_tree_peak(cmd: Sequence[str], env: Mapping[str, str], skip: Sequence[str] = (),
                       timeout: float = 1800) -> tuple[float, float]:
    """Run ``cmd``; (wall seconds, peak MB of the summed RSS of it and its descendants,
    sampled every 20 ms from a thread). Exits the benchmark when the command fails."""
    wall, rss, _ = run_with_tree_peaks(cmd, env, skip, timeout, pss=False)
    return wall, rss


def run_with_tree_peaks(cmd: Sequence[str], env: Mapping[str, str], skip: Sequence[str] = (),
                        timeout: float = 1800, *, pss: bool = True
                        ) -> tuple[float, float, float]:
    """:func:`run_with_tree_peak`, plus the peak MB of the tree's summed PSS."""
    start = time.perf_counter()
    proc = subprocess.Popen(list(cmd), env=dict(env), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    peak = peak_pss = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak, peak_pss
        while not done.is_set():
            rss, shared = tree_memory(proc.pid, skip, pss=pss)
            peak, peak_pss = max(peak, rss), max(peak_pss, shared)
            done.wait(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, err = proc.communicate(timeout=timeout)
    wall = time.perf_counter() - start
    done.set()
    sampler.join()
    if proc.returncode:
        sys.stderr.write(err.decode(errors="replace")[-3000:])
        raise SystemExit(f"{list(cmd)[:4]} failed ({proc.returncode})")
    return wall, peak / 1e6, peak_pss / 1e6


# -- pprof endpoints over HTTP ---------------------------------------------------------------

class ProfileServer:
    """``heap`` served as /debug/pprof/heap on ``count`` ports of 127.0.0.1 (with
    /debug/pprof/goroutine and the heap?debug=1 MemStats page; other paths 404), by a
    separate process so serving takes no CPU from the benchmark's own process.
    ``chunked`` sends the profiles without a Content-Length, 32 kB at a time, as Go's
    net/http does (a body over 2 kB written by the pprof handler goes out chunked).

        with ProfileServer(profile, count=40) as server:
            targets = server.urls
    """

    def __init__(self, heap: Path, count: int = 1,
                 goroutine: Path = FIXTURES / "goroutine.pb.gz",
                 memstats: Path = FIXTURES / "heap_debug1.txt", *, chunked: bool = False
                 ) -> None:
        self.args = [str(heap), str(goroutine), str(memstats), str(count),
                     "chunked" if chunked else "sized"]
        self.process: subprocess.Popen[str] | None = None
        self.urls: list[str] = []

    def __enter__(self) -> ProfileServer:
        self.process = subprocess.Popen([sys.executable, __file__, *self.args],
                                        stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        ports = self.process.stdout.readline().split()
        if not ports:
            self.close()
            raise SystemExit("the profile server did not start")
        self.urls = [f"http://127.0.0.1:{port}" for port in ports]
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


async def _serve_profiles(heap: bytes, goroutine: bytes, memstats: bytes, count: int,
                          chunked: bool = False) -> None:
    from aiohttp import web

    async def handle(request: web.Request) -> web.StreamResponse:
        kind = request.match_info["kind"]
        if kind == "heap" and request.query.get("debug") == "1":
            return web.Response(body=memstats, content_type="text/plain")
        body = {"heap": heap, "goroutine": goroutine}.get(kind)
        if body is None:
            return web.Response(status=404)
        if not chunked:
            return web.Response(body=body, content_type="application/octet-stream")
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        view = memoryview(body)
        for at in range(0, len(body), 32 << 10):
            await response.write(view[at:at + (32 << 10)])
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/debug/pprof/{kind}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    ports = []
    for _ in range(count):
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        ports.append(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
    print(" ".join(map(str, ports)), flush=True)
    await asyncio.Event().wait()


# -- the bot as its own process --------------------------------------------------------------

async def healthz_seconds(url: str, timeout: float = 10.0,
                          session: Any | None = None) -> float:
    """Seconds of one GET /healthz (``timeout`` when no answer came in time); a fresh
    connection unless a ``session`` is given."""
    import aiohttp

    started = time.perf_counter()
    try:
        async with contextlib.AsyncExitStack() as stack:
            if session is None:
                session = await stack.enter_async_context(aiohttp.ClientSession())
            async with session.get(url + "/healthz",
                                   timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
                await resp.read()
    except (TimeoutError, aiohttp.ClientError):
        return timeout
    return time.perf_counter() - started


class BotProcess:
    """``heapbot serve`` in its own process (bench/load/bot_process.py) on 127.0.0.1.

    Its settings come from the environment as in a deployment: the registry, Redis, the
    Slack stand-in and a signing secret, plus ``env``. The log goes to ``log_path``; on
    ``stop()`` the lag monitor writes its figures (``stats()``). SIGUSR1 (``mark()``)
    makes the monitor forget start-up and count from then on.
    """

    def __init__(self, workdir: Path, *, registry: Path, redis_url: str, slack_api_url: str,
                 signing_secret: str, env: Mapping[str, str] | None = None,
                 preexec_fn: Callable[[], None] | None = None) -> None:
        from tests.support.redis import free_port

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.events_url = self.url + "/slack/events"
        self.log_path = workdir / "bot.log"
        self.stats_path = workdir / "bot-stats.json"
        environ = {**os.environ, "SLACK_BOT_TOKEN": "xoxb-bench",
                   "SLACK_SIGNING_SECRET": signing_secret, "SLACK_API_URL": slack_api_url,
                   "REDIS_URL": redis_url, "HEAPBOT_CONFIG": str(registry),
                   "HEAPBOT_DATA_DIR": str(workdir / "data"), "HEAPBOT_HOST": "127.0.0.1",
                   "HEAPBOT_PORT": str(self.port), **(env or {})}
        environ.pop("SLACK_APP_TOKEN", None)  # HTTP mode: commands arrive as signed POSTs
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, str(BOT_PROCESS), str(self.stats_path)], env=environ,
                stdout=log, stderr=log, cwd=REPO, preexec_fn=preexec_fn)
        self.pid = self.process.pid

    async def wait_healthy(self, timeout: float = 60) -> None:
        """Until /healthz answers; exits the benchmark with the log's end if it never does."""
        deadline = time.monotonic() + timeout
        while await healthz_seconds(self.url, 1.0) >= 1.0:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the bot did not answer /healthz (exit code "
                                 f"{self.process.poll()}); its log ends:\n{self.log_tail()}")
            await asyncio.sleep(0.1)

    def mark(self) -> None:
        """SIGUSR1: the lag monitor counts from now."""
        self.process.send_signal(signal.SIGUSR1)

    def log_size(self) -> int:
        return self.log_path.stat().st_size

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM (a clean shutdown that writes the stats), then SIGKILL after ``timeout``."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def stats(self) -> dict[str, Any]:
        """What the lag monitor wrote at shutdown ({} when it wrote nothing)."""
        return json.loads(self.stats_path.read_text()) if self.stats_path.exists() else {}


def lag_line(stats: Mapping[str, Any], during: str) -> str:
    """The bot's event-loop lag as its monitor saw it, in one line."""
    return (f"bot loop lag {during}: max {stats['lag_max'] * 1000:.1f} ms, p99 "
            f"{stats['lag_p99'] * 1000:.1f} ms, {stats['lag_over_100ms']} ticks over 100 ms "
            f"of {stats['ticks']}; of it heapbot's own CPU: max "
            f"{stats['busy_max'] * 1000:.1f} ms")


if __name__ == "__main__":  # ProfileServer's process: HEAP GOROUTINE MEMSTATS COUNT FRAMING
    paths = [Path(arg) for arg in sys.argv[1:4]]
    asyncio.run(_serve_profiles(*(p.read_bytes() for p in paths), int(sys.argv[4]),
                                chunked=sys.argv[5:6] == ["chunked"]))
