"""`heapbot ask`, service-mode commands and `heapbot console` as real subprocesses.

Each run uses the embedded redis-server under a temp HEAPBOT_DATA_DIR (no
REDIS_URL), the demo Go service over HTTP, and prints what a terminal user sees.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bot import keys
from bot.analysis.goroutines import parse_goroutines

pytestmark = pytest.mark.slow


@pytest.fixture
def cli_env(tmp_path: Path, demo_service) -> dict[str, str]:
    config = tmp_path / "heapbot.yaml"
    config.write_text(f'services:\n  demo:\n    targets: ["{demo_service.url}"]\n'
                      "    cooldown_seconds: 0\n")
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "HEAPBOT_CONFIG")}
    env.update(HEAPBOT_CONFIG=str(config), HEAPBOT_DATA_DIR=str(tmp_path / "data"),
               COLUMNS="160", HEAPBOT_LOG_LEVEL="WARNING", NO_COLOR="1")
    return env


def heapbot(env: dict[str, str], *args: str, stdin: str | None = None
            ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bot", *args], env=env, input=stdin,
                          capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[2])


def _blocked(report: Any) -> int:
    return sum(g.count for g in report.groups if g.wait_function == "main.blockedSendResult")


def test_ask_prints_the_goroutine_table(cli_env: dict[str, str], demo_service) -> None:
    before = parse_goroutines(demo_service.get("/debug/pprof/goroutine"))
    done = heapbot(cli_env, "ask", "/heap goroutines demo 20")
    after = parse_goroutines(demo_service.get("/debug/pprof/goroutine"))
    assert done.returncode == 0, done.stderr
    out = done.stdout
    # The blocked-send leak only adds goroutines (until the demo's cap, where it stays):
    # its printed count lies between two fresh counts. The total also holds goroutines
    # that come and go (HTTP connections), so it is checked against the printed rows.
    rows = [line.split() for line in out.splitlines()
            if re.match(r"\s*[\d,]+\s{2,}\S", line)]
    blocked = [int(r[0].replace(",", "")) for r in rows if "main.blockedSendResult" in r]
    assert blocked and _blocked(before) <= blocked[0] <= _blocked(after), blocked
    printed = int(out.split(" goroutines")[0].split(":")[-1].strip().replace(",", ""))
    shown = re.search(r"Showing (\d+) of (\d+) groups \(([\d,]+) goroutines\)", out)
    assert shown and int(shown[3].replace(",", "")) == printed
    if shown[1] == shown[2]:  # every group printed: the rows add up to the total
        assert sum(int(r[0].replace(",", "")) for r in rows) == printed
    assert "chan send" in out
    assert "1/1 instances" in out
    assert "Traceback" not in out + done.stderr


def test_service_mode_json_and_exit_codes(cli_env: dict[str, str]) -> None:
    done = heapbot(cli_env, "goroutines", "demo", "--format", "json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["service"] == "demo"
    assert data["total"] == sum(g["count"] for g in data["groups"])

    unknown = heapbot(cli_env, "goroutines", "dmeo")
    assert unknown.returncode == 2
    assert "Did you mean `demo`" in unknown.stdout + unknown.stderr
    assert "Traceback" not in unknown.stdout + unknown.stderr

    bad = heapbot(cli_env, "ask", "/heap top demo --focus '(unclosed'")
    assert bad.returncode == 2
    assert "Traceback" not in bad.stdout + bad.stderr


def test_console_runs_commands_until_exit(cli_env: dict[str, str]) -> None:
    script = ("help\n/heap goroutines demo 5\nnonsense words\ntop dmeo\nexit\n"
              "/heap services\n")
    done = heapbot(cli_env, "console", stdin=script)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "/heap top SERVICE" in out  # help
    assert "main.blockedSendResult" in out or "goroutines" in out
    # each error once: no ack repeating it before the reply (issue 15.3)
    assert out.count("heapbot has no command `nonsense`") == 1
    assert out.count("Did you mean `demo`") == 1
    assert "capturing demo (1 instance)…" in out  # the ack
    assert "Traceback" not in out + done.stderr
    # nothing after `exit` ran: the ack of `/heap services` never printed
    assert "Listing the services" not in out


def test_json_top_carries_every_row_unless_told(cli_env: dict[str, str]) -> None:
    every = json.loads(heapbot(cli_env, "top", "demo", "--format", "json").stdout)
    five = json.loads(heapbot(cli_env, "top", "demo", "-n", "5", "--format", "json").stdout)
    assert len(five["rows"]) == 5
    assert len(every["rows"]) > 5
    assert {"function", "flat", "cum", "flat_pct", "sum_pct", "cum_pct"} <= set(every["rows"][0])
    assert every["sample_type"] == "inuse_space" and every["unit"] == "bytes"


def test_piped_output_keeps_each_row_on_one_line(cli_env: dict[str, str]) -> None:
    env = {k: v for k, v in cli_env.items() if k != "COLUMNS"}  # like `heapbot … | grep`
    done = heapbot(env, "goroutines", "demo", "-n", "5")
    assert done.returncode == 0, done.stderr
    row = next(line for line in done.stdout.splitlines() if "chan send" in line)
    assert "main.blockedSendResult" in row and "scenarios.go:" in row, done.stdout
    assert "goroutines" in done.stdout.splitlines()[0]


def test_both_heap_numbers_are_explained_where_they_appear(cli_env: dict[str, str]) -> None:
    captured = heapbot(cli_env, "capture", "demo")
    assert captured.returncode == 0, captured.stderr
    assert "(MemStats HeapInuse; `/heap top` totals the sampled live objects" in captured.stdout
    top = heapbot(cli_env, "top", "demo", "-n", "3")
    assert top.returncode == 0, top.stderr
    note = next(line for line in top.stdout.splitlines() if line.startswith("Two heap numbers"))
    assert "Total is pprof's inuse_space" in note and "is MemStats HeapInuse" in note
    # the other sample types have no MemStats twin: no note
    objects = heapbot(cli_env, "top", "demo", "-n", "3", "--type", "inuse_objects")
    assert objects.returncode == 0 and "Two heap numbers" not in objects.stdout


GC_AT_EXIT = ("import atexit, gc, sys; atexit.register(lambda: print('gc on', gc.isenabled(), "
              "'frozen', gc.get_freeze_count() > 0, file=sys.stderr)); "
              "from bot.cli import main; sys.exit(main(sys.argv[1:]))")


def test_garbage_collection_is_back_on_after_a_usage_error() -> None:
    """main() called in a long-lived process (a test run, a wrapper) must not leave it off."""
    code = ("import gc; from bot.cli import main\ntry: main(['top', '--bogus'])\n"
            "except SystemExit: pass\nprint('gc on', gc.isenabled())")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd=Path(__file__).resolve().parents[2])
    assert "gc on True" in done.stdout, done.stdout + done.stderr


@pytest.mark.parametrize("args", [["services"], ["history", "demo"],
                                  ["top", "--profile", "tests/fixtures/heap_1.pb.gz"],
                                  ["store", "status"]])
def test_garbage_collection_is_back_on_once_the_command_has_started(
        cli_env: dict[str, str], args: list[str]) -> None:
    """Start-up runs with the cyclic GC off (a warm `services` ~25% faster); the work must not.

    A console, a capture or `heapbot serve` lives on after start-up: with the GC left off,
    every reference cycle they make would stay in memory for the life of the process.
    """
    done = subprocess.run([sys.executable, "-c", GC_AT_EXIT, *args], env=cli_env,
                          capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr
    assert "gc on True frozen True" in done.stderr


ACKS = ("capturing demo", "Loading a stored snapshot", "Reading the stored history",
        "Setting up a watch", "Working on it")


def test_a_refused_command_prints_no_ack_first(tmp_path: Path, cli_env: dict[str, str]) -> None:
    """Every refusal the console can know before working is the reply alone, with no
    "capturing demo…" before it: unknown service, bad option, a `since` base or snapshot
    that is not stored, and the cooldown (the capture that would be reused has no
    previous one, or is the base named). `heapbot ask` prints no ack at all."""
    config = tmp_path / "cooldown.yaml"
    config.write_text(Path(cli_env["HEAPBOT_CONFIG"]).read_text()
                      .replace("cooldown_seconds: 0", "cooldown_seconds: 600"))
    env = {**cli_env, "HEAPBOT_CONFIG": str(config)}
    env.pop("HEAPBOT_ALERT_CHANNEL", None)

    asked = heapbot(env, "ask", "/heap diff demo since 1h")
    assert asked.returncode == 2
    assert "`demo` has no capture from 1h ago or earlier." in asked.stdout
    assert not any(ack in asked.stdout + asked.stderr for ack in ACKS), asked.stdout

    refused = ["diff demo since 1h", "top demo --snapshot 20200101-000000-abcd", "top dmeo",
               "top demo --fcous main", "history dmeo", "watch demo every 1s",
               "watch demo every 15m"]  # the console has no channel to post in
    script = "\n".join([*refused, "capture demo", "diff demo", "diff demo since deploy",
                        "exit"]) + "\n"
    done = heapbot(env, "console", stdin=script)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    for said in ("`demo` has no capture from 1h ago or earlier.",
                 "Did you mean `demo`?",  # top dmeo, history dmeo
                 "Unknown option `--fcous`.",
                 "There is no earlier capture of `demo` to compare with.",  # cooldown: reused
                 "No deploy of `demo` is recorded.",
                 "Every 1s is too often: the shortest interval is 1m.",
                 "Say where to post, e.g. `in #payments-oncall` (picked from Slack's list) "
                 "or `in C0123ABCD` (the channel's id)."):
        assert said in out, (said, out)
    assert "20200101-000000-abcd" in out  # the snapshot that is not stored is named
    # one ack in the whole session: the capture that ran
    assert out.count("capturing demo (1 instance)…") == 1, out
    assert "capturing demo to compare" not in out and "Loading a stored" not in out, out
    assert "Reading the stored history" not in out and "Setting up a watch" not in out, out

    # the base named is the very capture the cooldown would reuse: refused, no ack
    snapshot = json.loads(heapbot(env, "capture", "demo", "--format", "json").stdout)
    snapshot_id = snapshot["snapshot"]["id"]
    same = heapbot(env, "console", stdin=f"diff demo since {snapshot_id}\nexit\n")
    assert "names the capture heapbot would reuse now (the cooldown of `demo`)" in same.stdout
    assert "--force` takes a new capture" in same.stdout
    assert "capturing demo" not in same.stdout, same.stdout
    forced = heapbot(env, "console",
                     stdin=f"diff demo since {snapshot_id} --force\nexit\n")
    assert "capturing demo to compare (1 instance)…" in forced.stdout, forced.stdout
    assert "demo: inuse_space change since" in forced.stdout, forced.stdout


def test_a_bad_record_read_before_the_ack_does_not_end_the_console(
        tmp_path: Path, cli_env: dict[str, str], redis_url: str) -> None:
    """The checks before the ack read Redis; a record heapbot cannot read there (here a
    capture's meta that is not JSON) is answered as run() answers it, with an error id,
    and the console takes the next command."""
    import redis

    config = tmp_path / "cooldown.yaml"
    config.write_text(Path(cli_env["HEAPBOT_CONFIG"]).read_text()
                      .replace("cooldown_seconds: 0", "cooldown_seconds: 600"))
    env = {**cli_env, "HEAPBOT_CONFIG": str(config), "REDIS_URL": redis_url}
    stored = json.loads(heapbot(env, "capture", "demo", "--format", "json").stdout)
    client = redis.Redis.from_url(redis_url)
    try:
        client.hset(keys.snapshot("demo", stored["snapshot"]["id"]), "meta", "{not json")
    finally:
        client.close()
    done = heapbot(env, "console", stdin="diff demo\nhelp\nexit\n")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert re.search(r"internal error", done.stdout, re.I), done.stdout
    assert "/heap top SERVICE" in done.stdout, done.stdout  # help answered after it
