"""Benchmark: the download-and-store half of a 40-instance capture, memory per body byte.

A fleet capture downloads every instance's heap profile, keeps each file until the
snapshot is stored (the newest captures keep every instance's raw file), then saves
them in one MULTI/EXEC. What that costs in memory is measured here without the
decoder (whose peak is bench/decode's subject): N instances served by
``bench._common.ProfileServer`` (chunked, as Go's net/http sends a profile; ``--sized``
for a Content-Length) each answer a gzip body of ``--mib`` MiB; one fresh process
downloads them all at once with heapbot's own ``Capturer`` (its budget, caps and
buffers) and saves them as one snapshot's raw heap files with ``SnapshotStore.save``
into a real redis-server.

The anchor is the bodies' own size, in the same run: a capture that keeps every file
must hold at least that. Printed: the process's peak RSS above its RSS before the first
request (VmHWM, exact, reset after warm-up), divided by the bodies' bytes, after the
downloads and again once they are stored (and the save's wall time). 1.0 means each body
is held once. With
``--old COMMIT`` the same child runs on bot/ as of that commit (git archive), alternating
with this checkout, for a before/after figure.

    .venv/bin/python bench/fanout/download.py [--instances 40] [--mib 4] [--runs 3]
        [--sized] [--old COMMIT]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench._common import ProfileServer, old_code  # noqa: E402

# Runs in a child process whose sys.path starts with the bot/ to measure.
_CHILD = r"""
import asyncio, json, sys, time
from pathlib import Path
code, redis_url, urls = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
sys.path.insert(0, code)
from bot.capture import Capturer
from bot.registry import parse_registry
from bot.store import InstanceMeta, SnapshotStore, StoredSnapshot, new_snapshot_id


def status(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise SystemExit(f"no {field} in /proc/self/status")


def snapshot(n):
    now = time.time()
    return StoredSnapshot(
        id=new_snapshot_id(now), service="fleet", taken_at=now, trigger="bench",
        requested_by="bench", instances=[InstanceMeta(target=f"i{i}", ok=True, kinds=["heap"])
                                         for i in range(n)])


async def main():
    entry = {"targets": urls, "cooldown_seconds": 0, "concurrency": len(urls),
             "timeout_seconds": 300, "max_profile_bytes": 64 << 20}
    service = parse_registry({"services": {"fleet": entry}}, Path("heapbot.yaml")
                             ).resolve("fleet")
    capturer = Capturer(retries=0)
    store = SnapshotStore.from_url(redis_url)
    # warm-up: connections, first-use imports and buffers are part of the base
    warm = await asyncio.gather(*(capturer._fetch(service, u + "/debug/pprof/goroutine", {})
                                  for u in urls))
    await store.save(snapshot(len(urls)), {(i, "goroutine"): b for i, b in enumerate(warm)})
    del warm
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS now
    base = status("VmRSS")
    bodies = await asyncio.gather(*(capturer._fetch(service, u + "/debug/pprof/heap", {})
                                    for u in urls))
    downloaded = status("VmHWM")
    started = time.perf_counter()
    await store.save(snapshot(len(urls)), {(i, "heap"): b for i, b in enumerate(bodies)})
    seconds = time.perf_counter() - started
    stored = status("VmHWM")
    total = sum(len(b) for b in bodies)
    await capturer.aclose()
    await store.close()
    print(json.dumps({"bytes": total, "download": (downloaded - base) / total,
                      "store": (stored - base) / total, "store_seconds": seconds}))


asyncio.run(main())
"""


def child(code: Path, redis_url: str, urls: list[str]) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", _CHILD, str(code), redis_url, ",".join(urls)],
                         check=True, capture_output=True, text=True, timeout=900,
                         env={**os.environ, "HEAPBOT_LOG_LEVEL": "WARNING"})
    return json.loads(out.stdout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instances", type=int, default=40)
    parser.add_argument("--mib", type=float, default=4.0, help="MiB of each instance's body")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sized", action="store_true",
                        help="serve with a Content-Length instead of chunked")
    parser.add_argument("--old", metavar="COMMIT", help="also measure bot/ as of COMMIT")
    args = parser.parse_args()
    from bot.redis_server import EmbeddedRedis

    work = Path(tempfile.mkdtemp(prefix="heapbot-download-"))
    codes = {"heapbot": ROOT} | ({"old": old_code(args.old, "download")} if args.old else {})
    body = work / "body.pb.gz"  # incompressible gzip: as big stored as served
    body.write_bytes(gzip.compress(os.urandom(int(args.mib * (1 << 20))), compresslevel=1))
    redis = EmbeddedRedis(work / "redis")
    redis_url = redis.ensure()
    server = ProfileServer(body, count=args.instances, chunked=not args.sized).__enter__()
    try:
        print(f"{args.instances} instances x {body.stat().st_size / (1 << 20):.1f} MiB gzip, "
              f"served {'sized' if args.sized else 'chunked'}; {os.cpu_count()} CPUs",
              flush=True)
        results: dict[str, list[dict[str, float]]] = {name: [] for name in codes}
        for run in range(args.runs):
            for name, code in codes.items():
                got = child(code, redis_url, server.urls)
                results[name].append(got)
                print(f"run {run + 1} {name}: peak above base / bodies "
                      f"{got['download']:.2f} downloaded, {got['store']:.2f} stored "
                      f"({got['bytes'] / (1 << 20):.0f} MiB of bodies, saved in "
                      f"{got['store_seconds']:.2f} s)", flush=True)
        for name, rows in results.items():
            down = statistics.median(r["download"] for r in rows)
            stored = statistics.median(r["store"] for r in rows)
            seconds = statistics.median(r["store_seconds"] for r in rows)
            print(f"{name}: median peak RSS above base = {down:.2f}x the bodies once "
                  f"downloaded, {stored:.2f}x once stored (anchor: the bodies, 1.00); "
                  f"the save took {seconds:.2f} s")
    finally:
        server.close()
        redis.stop()
        shutil.rmtree(work, ignore_errors=True)
        for name, code in codes.items():
            if name != "heapbot":
                shutil.rmtree(code, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
