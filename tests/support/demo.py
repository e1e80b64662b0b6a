"""pytest plugin: the demo Go service from deploy/demo, built once and run for real.

Tests profile a real Go process over real HTTP, never canned bytes. The binary
is built once per source version (cached under the project's ``.cache/demo``,
keyed by a hash of the Go sources and the version string), so a session pays
for `go build` only the first time. Every process started here is stopped at
the end of the session, and dies with the test runner even if it is killed;
``start_demo(detach=True)`` is the exception `make demo` uses to leave the demo
running.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import hashlib
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pytest

from bot.gotool import find_go, go_env

REPO_ROOT = Path(__file__).resolve().parents[2]
DEMO_SOURCE_DIR = REPO_ROOT / "deploy" / "demo"
DEFAULT_RATE = 5.0  # fast enough to see growth within seconds, gentle on shared CPUs
START_TIMEOUT_S = 20.0

_running: set[DemoProcess] = set()


def demo_source_hash(version: str = "dev") -> str:
    """Hash of everything that decides the binary: Go sources, go.mod, version."""
    digest = hashlib.sha256(version.encode())
    for path in sorted(DEMO_SOURCE_DIR.iterdir()):
        if path.suffix == ".go" or path.name in ("go.mod", "go.sum"):
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


CACHE_DIR = REPO_ROOT / ".cache" / "demo"  # gitignored; `make clean` removes it


def _cache_dir() -> Path:
    """Demo builds live under the project, not in the system temp dir (62 MB each)."""
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    return CACHE_DIR


def build_demo(version: str = "dev", *, trimpath: bool = False) -> Path:
    """Build deploy/demo with ``main.version`` set; reuse a cached binary when unchanged.

    The build writes to a private name and renames, so concurrent sessions
    never see a half-written binary.
    """
    key = demo_source_hash(version) + ("-trim" if trimpath else "")
    binary = _cache_dir() / key / "demo"
    if binary.exists():
        return binary
    binary.parent.mkdir(parents=True, exist_ok=True)
    partial = binary.with_name(f"demo.{os.getpid()}.partial")
    cmd = [find_go(), "build", "-o", str(partial), "-ldflags", f"-X main.version={version}"]
    if trimpath:
        cmd.append("-trimpath")
    cmd.append(".")
    result = subprocess.run(cmd, cwd=DEMO_SOURCE_DIR, env=go_env(), capture_output=True,
                            text=True, timeout=300, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"go build of deploy/demo failed:\n{result.stderr}")
    os.replace(partial, binary)
    return binary


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGKILL it when the test runner dies (Linux)."""
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


@dataclass(eq=False)
class DemoProcess:
    """One running demo instance: ``url`` is its base URL (``http://127.0.0.1:PORT``)."""

    process: subprocess.Popen[bytes]
    port: int
    version: str
    scenarios: str
    rate: float
    log_path: Path | None  # a detached instance's log; None: stderr went to an unnamed file
    extra: dict[str, Any] = field(default_factory=dict)
    stderr_file: IO[bytes] | None = None  # unnamed (O_TMPFILE): gone with us, even on SIGKILL

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def get(self, path: str, timeout: float = 30.0) -> bytes:
        """GET a path of this instance (``/debug/pprof/heap``…) and return the body."""
        with urllib.request.urlopen(self.url + path, timeout=timeout) as response:
            return response.read()

    def stats(self) -> dict[str, Any]:
        """How far each scenario got (the demo's ``/stats``)."""
        return json.loads(self.get("/stats"))

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, then SIGKILL if it does not exit in time."""
        if self.alive():
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        self._close()

    def kill(self) -> None:
        """SIGKILL at once: an instance that dies mid-capture."""
        if self.alive():
            self.process.kill()
            self.process.wait(5)
        self._close()

    def _close(self) -> None:
        if self.process.stdout:
            self.process.stdout.close()
        if self.stderr_file is not None:
            self.stderr_file.close()
        _running.discard(self)


def _read_listen_line(process: subprocess.Popen[bytes], deadline: float,
                      log_path: Path | None = None) -> str:
    """The demo prints ``demo VERSION listening on http://HOST:PORT ...`` once bound.

    A detached instance writes it to its log file (``log_path``) instead of a pipe.
    """
    if log_path is not None:
        while time.monotonic() < deadline and process.poll() is None:
            for line in log_path.read_text(errors="replace").splitlines():
                if line.startswith("demo ") and " listening on " in line:
                    return line
            time.sleep(0.05)
        return ""
    assert process.stdout is not None
    buf = b""
    while b"\n" not in buf:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or process.poll() is not None:
            break
        ready, _, _ = select.select([process.stdout], [], [], min(remaining, 0.2))
        if ready:
            chunk = os.read(process.stdout.fileno(), 4096)
            if not chunk:
                break
            buf += chunk
    return buf.decode(errors="replace").split("\n", 1)[0]


def _wait_healthy(url: str, deadline: float) -> None:
    while True:
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"demo at {url} did not answer /healthz")
        time.sleep(0.05)


def start_demo(
    binary: Path,
    scenarios: str = "all",
    rate: float = DEFAULT_RATE,
    env: Mapping[str, str] | None = None,
    *,
    memprofilerate: int | None = None,
    extra_args: tuple[str, ...] = (),
    port: int = 0,
    detach_log: Path | None = None,
    ready: Mapping[str, int] | None = None,
) -> DemoProcess:
    """Start the demo on a free port (``port=0``) and wait until /healthz answers.

    ``ready`` also waits until the demo's /stats reach those counts (e.g.
    ``{"blocked_goroutines": 3}``): scenarios tick on their own clock, and on a loaded
    machine a capture made at once can come before the first simulated request.

    With ``detach_log`` the instance outlives this process (its own session, no
    parent-death signal, output to that file): `make demo` leaves it running.
    """
    detached = detach_log is not None
    args = [str(binary), "-addr", f"127.0.0.1:{port}", "-scenarios", scenarios,
            "-rate", str(rate), *extra_args]
    if memprofilerate is not None:
        args += ["-memprofilerate", str(memprofilerate)]
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("DEMO_")}
    child_env.update(env or {})
    stderr_file: IO[bytes] | None = None
    if detach_log is not None:
        with open(detach_log, "wb") as log_file:
            process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log_file,
                                       stderr=log_file, env=child_env, start_new_session=True)
    else:
        # No name in the temp dir: a test run killed before its atexit leaves nothing behind
        # (named temp logs piled up as empty heapbot-demo-*.log files).
        stderr_file = tempfile.TemporaryFile(prefix="heapbot-demo-", suffix=".log")  # noqa: SIM115 - lives as long as the instance
        process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=stderr_file,
                                   env=child_env, preexec_fn=_die_with_parent)
    deadline = time.monotonic() + START_TIMEOUT_S
    line = _read_listen_line(process, deadline, detach_log)
    try:
        # "demo v1 listening on http://127.0.0.1:40651 scenarios=... rate=..."
        words = line.split()
        version = words[1]
        bound_port = int(words[4].rsplit(":", 1)[1])
    except (IndexError, ValueError):
        process.kill()
        process.wait(5)
        if stderr_file is not None:
            stderr_file.seek(0)
            stderr = stderr_file.read().decode(errors="replace")
            stderr_file.close()
        else:
            stderr = detach_log.read_text(errors="replace") if detach_log else ""
        raise RuntimeError(f"demo did not start: {line!r}; stderr: {stderr}") from None
    demo = DemoProcess(process=process, port=bound_port, version=version,
                       scenarios=scenarios, rate=rate, log_path=detach_log,
                       stderr_file=stderr_file)
    if not detached:
        _running.add(demo)
    try:
        _wait_healthy(demo.url, deadline)
        _wait_stats(demo, ready or {}, time.monotonic() + START_TIMEOUT_S)
    except RuntimeError:
        demo.kill()
        raise
    return demo


def _wait_stats(demo: DemoProcess, ready: Mapping[str, int], deadline: float) -> None:
    while True:
        stats = demo.stats()
        short = {k: v for k, v in ready.items() if stats[k] < v}
        if not short:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the demo's /stats never reached {short}: {stats}")
        time.sleep(0.05)


@atexit.register
def _stop_all() -> None:
    for demo in list(_running):
        with contextlib.suppress(Exception):
            demo.kill()


@pytest.fixture(scope="session")
def demo_binary() -> Path:
    """The demo built with version "dev"."""
    return build_demo("dev")


@pytest.fixture(scope="session")
def demo_service(demo_binary: Path) -> Iterator[DemoProcess]:
    """One demo instance with every scenario, shared by the session."""
    demo = start_demo(demo_binary, "all", rate=DEFAULT_RATE)
    yield demo
    demo.stop()


@pytest.fixture(scope="session")
def demo_cluster(demo_binary: Path) -> Iterator[list[DemoProcess]]:
    """Three demo instances of one service (every scenario), shared by the session."""
    instances: list[DemoProcess] = []
    try:
        for _ in range(3):
            instances.append(start_demo(demo_binary, "all", rate=DEFAULT_RATE,
                                        ready={"blocked_goroutines": 1}))
        yield instances
    finally:
        for demo in instances:
            demo.stop()
