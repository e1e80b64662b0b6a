"""`make demo`, then the README's next commands, as a new user types them (issue 15.1, 15.11).

The demo runs in a temporary project directory (``--dir CWD/.heapbot-demo``) and
every later command runs there with no HEAPBOT_* variable, so the CLI must find
the demo's registry and data by itself. TMPDIR points at an empty folder to
prove that nothing is left in the system temp dir.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[2]
RUN_DEMO = REPO_ROOT / "deploy" / "demo" / "run_demo.py"


def _alive(pid: int) -> bool:
    try:
        return bool(Path(f"/proc/{pid}/cmdline").read_bytes())  # a zombie has none
    except OSError:
        return False


def demo_hints(output: str) -> list[str]:
    """The /heap commands the demo's replies offer: `next:` buttons and the leak report's Next."""
    found: list[str] = []
    for line in output.splitlines():
        if line.startswith("next: "):
            found += re.findall(r"(?:^next: |\s{3})[^:]+: (/heap .+?)(?=\s{3}|$)", line)
        elif line.startswith("Next: "):
            found += re.findall(r"(/heap diff \S+ since \S+) compares", line)
    return list(dict.fromkeys(found))


def test_demo_leaves_a_running_demo_the_readme_commands_can_use(tmp_path: Path) -> None:
    project = tmp_path / "project"
    temp = tmp_path / "tmp"
    project.mkdir()
    temp.mkdir()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HEAPBOT_", "REDIS_URL", "DEMO_", "COLUMNS"))}
    env.update(TMPDIR=str(temp), NO_COLOR="1")
    folder = project / ".heapbot-demo"

    def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, *args], cwd=project, env=env, input=stdin,
                              capture_output=True, text=True, timeout=240, check=False)

    def heapbot(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return run("-m", "bot", *args, stdin=stdin)

    demo = run(str(RUN_DEMO), "--dir", str(folder), "--instances", "1", "--pause", "1")
    try:
        assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
        assert "main.leakmapLoadUser" in demo.stdout
        assert 'heapbot ask "/heap top demo"' in demo.stdout  # the next step it names
        assert "heapbot help     # every /heap command" in demo.stdout
        pids = [i["pid"] for i in json.loads((folder / "instances.json").read_text())["instances"]]
        assert pids and all(_alive(pid) for pid in pids)

        # The README's next commands, as written, from the project directory.
        top = heapbot("ask", "/heap top demo")
        assert top.returncode == 0, top.stdout + top.stderr
        assert "demo: top 10 by inuse_space" in top.stdout
        assert "main." in top.stdout and "no registry" not in top.stdout

        listed = heapbot("help")
        assert listed.returncode == 0 and "/heap leaks SERVICE" in listed.stdout

        # Every hint the demo printed, pasted after `heapbot` as a shell would pass it.
        hints = demo_hints(demo.stdout)
        assert {"/heap diff demo since previous", "/heap leaks demo"} <= set(hints), hints
        assert "Recorded deploy demo-1 of demo" in demo.stdout  # the instances just started
        assert "/heap diff demo since deploy" in hints, hints
        for hint in hints:
            done = heapbot(*shlex.split(hint))
            assert done.returncode == 0, f"{hint}\n{done.stdout[-2000:]}{done.stderr[-2000:]}"

        console = heapbot("console", stdin="diff demo\nexit\n")
        assert console.returncode == 0, console.stdout + console.stderr
        assert "demo: inuse_space change since previous" in console.stdout, console.stdout
        assert f"registry: {folder / 'heapbot.yaml'} (1 service)" in console.stdout

        # Run again: new instances, and a leak report of this run only, not across the
        # restart into the first run's captures.
        second = run(str(RUN_DEMO), "--dir", str(folder), "--instances", "1", "--pause", "1")
        assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
        leak_header = next(line for line in second.stdout.splitlines()
                           if "captures analysed" in line)
        assert "since deploy demo-1" in leak_header and "restart" not in leak_header
        pids = [i["pid"] for i in json.loads((folder / "instances.json").read_text())["instances"]]

        # --console goes straight to the prompt, on the instances already running.
        prompt = run(str(RUN_DEMO), "--dir", str(folder), "--console", stdin="services\nexit\n")
        assert prompt.returncode == 0, prompt.stdout + prompt.stderr
        assert "/heap capture demo" not in prompt.stdout  # no scripted run first
        assert "demo" in prompt.stdout and "heap>" not in prompt.stderr
        again = json.loads((folder / "instances.json").read_text())["instances"]
        assert [i["pid"] for i in again] == pids
    finally:
        stopped = run(str(RUN_DEMO), "--dir", str(folder), "--stop")
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert "stopped 1 demo instance and the embedded redis-server" in stopped.stdout
    assert not any(_alive(pid) for pid in pids)
    gone = heapbot("ask", "/heap top demo")
    assert gone.returncode == 2 and "knows no service called `demo`" in gone.stdout
    assert list(temp.iterdir()) == []  # no heapbot-demo-run-* dirs, no empty demo logs
