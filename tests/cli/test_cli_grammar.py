"""One grammar: the service-mode CLI takes every flag its slash command takes (issue 15.4, 15.10).

Real subprocesses of ``python -m bot`` against the demo Go service and the
embedded redis-server in a temp data dir; what is asserted is what a terminal
user reads (and the exit status).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bot.pprof import parse_profile
from tests.support.redis import free_port

FIXTURES = Path(__file__).parents[1] / "fixtures"


@pytest.fixture
def cli_env(tmp_path: Path, demo_service) -> dict[str, str]:
    config = tmp_path / "heapbot.yaml"
    config.write_text(f'services:\n  demo:\n    targets: ["{demo_service.url}"]\n'
                      "    cooldown_seconds: 0\n")
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "HEAPBOT_CONFIG")}
    env.update(HEAPBOT_CONFIG=str(config), HEAPBOT_DATA_DIR=str(tmp_path / "data"),
               HEAPBOT_LOG_LEVEL="WARNING", NO_COLOR="1")
    return env


def heapbot(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bot", *args], env=env, capture_output=True,
                          text=True, timeout=120, cwd=Path(__file__).resolve().parents[2])


@pytest.mark.slow
def test_the_download_hint_runs_as_printed_in_the_cli(cli_env: dict[str, str]) -> None:
    top = heapbot(cli_env, "top", "demo", "-n", "3")
    assert top.returncode == 0, top.stderr
    hint = re.search(r"/heap (top demo --snapshot (\S+) --download)", top.stdout)
    assert hint, top.stdout
    snapshot_id = hint.group(2)
    # the "next:" hint, typed as a CLI command: same words after `heapbot`
    download = heapbot(cli_env, *hint.group(1).split())
    assert download.returncode == 0, download.stdout + download.stderr
    saved = re.search(r"attached: (demo-\S+-heap\.pb\.gz) .*→ saved to (\S+)", download.stdout)
    assert saved and saved.group(1) == f"demo-{snapshot_id}-heap.pb.gz", download.stdout
    assert parse_profile(Path(saved.group(2)).read_bytes()).num_samples > 0

    # more slash-command words the CLI parser does not know itself
    again = heapbot(cli_env, "top", "demo", "3", "--snapshot", snapshot_id, "--cum",
                    "--format", "json")
    assert again.returncode == 0, again.stderr
    data = json.loads(again.stdout)
    assert data["snapshot_id"] == snapshot_id and len(data["rows"]) == 3
    since = heapbot(cli_env, "diff", "demo", "since", snapshot_id, "-n", "2")
    assert since.returncode == 0, since.stdout + since.stderr
    assert "change since" in since.stdout

    wrong = heapbot(cli_env, "top", "demo", "--bogus")  # the slash command's own message
    assert wrong.returncode == 2
    assert "Unknown option `--bogus`" in wrong.stdout and "Traceback" not in wrong.stderr


@pytest.mark.slow
def test_the_flame_hint_runs_as_printed_and_pasted_whole(cli_env: dict[str, str]) -> None:
    top = heapbot(cli_env, "top", "demo", "-n", "3")
    hint = re.search(r"Flame graph: (/heap (top demo --snapshot (\S+) --flame))", top.stdout)
    assert hint, top.stdout
    for words in (hint.group(2).split(), hint.group(1).split()):  # after `heapbot`, or whole
        drawn = heapbot(cli_env, *words)
        assert drawn.returncode == 0, drawn.stdout + drawn.stderr
        saved = dict(re.findall(r"attached: (\S+) .*→ saved to (\S+)", drawn.stdout))
        png = saved[f"demo-{hint.group(3)}-flame.png"]
        assert Path(png).read_bytes()[:4] == b"\x89PNG"
        assert "main." in Path(saved[f"demo-{hint.group(3)}-flame.svg"]).read_text()


@pytest.mark.slow
def test_no_download_or_history_hints_when_redis_did_not_store_the_capture(
        cli_env: dict[str, str]) -> None:
    down = {**cli_env, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    top = heapbot(down, "top", "demo", "-n", "3")
    assert top.returncode == 0, top.stdout + top.stderr
    assert "main." in top.stdout
    assert "Not stored:" in top.stdout
    # nothing was read from or written to the history: no claim about it either
    assert "first stored capture" not in top.stdout
    hints = next(line for line in top.stdout.splitlines() if line.startswith("next:"))
    assert "--download" not in hints and "diff" not in hints and "leaks" not in hints
    assert "capture demo" in hints


def test_file_mode_errors_print_the_subcommands_usage() -> None:
    env = dict(os.environ)
    bogus = heapbot(env, "top", "--profile", str(FIXTURES / "heap_1.pb.gz"), "--bogus")
    assert bogus.returncode == 2
    assert "usage: heapbot top" in bogus.stderr
    assert "unrecognized arguments: --bogus" in bogus.stderr
    typo = heapbot(env, "top", "--profile", str(FIXTURES / "heap_1.pb.gz"), "--fcous", "main")
    assert typo.returncode == 2
    assert "unrecognized arguments: --fcous. Did you mean `--focus`?" in typo.stderr


def test_memstats_takes_profile_like_every_file_command() -> None:
    env = dict(os.environ)
    for flag in ("--profile", "--file"):
        done = heapbot(env, "memstats", flag, str(FIXTURES / "heap_debug1.txt"))
        assert done.returncode == 0, done.stderr
        assert "HeapInuse" in done.stdout


def test_a_goroutine_dump_given_to_top_points_to_heapbot_goroutines(tmp_path: Path) -> None:
    dump = tmp_path / "goroutines.txt"
    dump.write_text("goroutine 1 [running]:\nmain.main()\n\t/src/main.go:10 +0x1d\n")
    done = heapbot(dict(os.environ), "top", "--profile", str(dump))
    assert done.returncode == 2
    assert "goroutine dump (?debug=2)" in done.stderr
    assert "`heapbot goroutines --profile FILE` reads it" in done.stderr
    readable = heapbot(dict(os.environ), "goroutines", "--profile", str(dump))
    assert readable.returncode == 0 and "main.main" in readable.stdout
