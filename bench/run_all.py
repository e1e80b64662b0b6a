"""`make bench`: every benchmark in turn, each printing its ratio against its anchor.

- bench/top:   heapbot top vs go tool pprof -top on a 300,000-stack (wide) and a 262,144-stack
               3-function 18-deep recursive (deep) heap profile
- bench/fanout: heapbot top SERVICE over N = 1, 10, 40 HTTP instances vs go tool pprof -top on
               the same N files; Redis bytes per capture
- bench/fanout/download.py: the download-and-store half of a 40-instance capture, peak RSS
               per byte of the bodies (anchor: the bodies)
- bench/fleetload: Slack ack p99 and bot RSS while 5 fleet captures (40 instances each) run
- bench/leaks: precision and recall of /heap leaks over the demo's scenarios
- bench/slack: ack and reply latency of /heap top through the Bolt app
- bench/load:  100 concurrent /heap commands over 10 live demo services
- bench/merge: merge_profiles on 3 copies of the 300,000-stack profile vs go tool pprof
- bench/decode: parse_profile on a 65,536-stack and a 262,144-stack deep profile vs
               zlib inflate + upb parse of the same bytes (time, traced peak, RSS)
- bench/flame: flame graph (layout, PNG, SVG) of a 262,144-stack deep profile, < 2 s;
               heapbot top --flame vs go tool pprof -http's flame graph page
- bench/alerts: /healthz during 10 x 8,000-alert bodies and 1,100 half-open connections,
               vs idle /healthz of the same bot process
- bench/regex: /healthz while (.|.)*Z runs as --focus/--ignore/--hide/FUNC_RE in heapbot serve,
               vs the same bot answering ordinary commands
- bench/store: warm CLI calls and 10 concurrent CLI captures on one embedded store
The fuzzer (bench/fuzz) runs for minutes and is started on its own.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
SCRIPTS = ["top/run.py", "decode/run.py", "leaks/run.py", "slack/run.py", "load/run.py",
           "merge/run.py", "flame/run.py", "alerts/run.py", "regex/run.py",
           "store/run.py", "fanout/run.py", "fanout/download.py", "fleetload/run.py"]


def main() -> int:
    failed = []
    for script in SCRIPTS:
        print(f"\n=== bench/{script}", flush=True)
        started = time.monotonic()
        code = subprocess.call([sys.executable, str(BENCH / script)])
        print(f"=== bench/{script}: exit {code} in {time.monotonic() - started:.0f} s", flush=True)
        if code:
            failed.append(script)
    if failed:
        print("failed: " + ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
