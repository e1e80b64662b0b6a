"""The registry is found the way git finds `.git`: from the current directory upwards.

`make demo` leaves `.heapbot-demo/heapbot.yaml` at the checkout's root; `cd deploy/demo &&
heapbot services` must find it, say which file it used, and an unknown service or a
missing registry must name the file (or the directories) heapbot looked in.
HEAPBOT_CONFIG still wins. Real subprocesses of ``python -m bot``; the embedded
redis-server they start is stopped by tests/support/redis.py after each test.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot.registry import load_registry
from bot.settings import Settings, find_registry

REGISTRY = 'services:\n  demo:\n    targets: ["http://127.0.0.1:9"]\n'


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A checkout inside $HOME with the registry `make demo` leaves, and a subdirectory."""
    home = tmp_path / "home"
    root = home / "src" / "heapbot"
    (root / ".heapbot-demo").mkdir(parents=True)
    (root / ".heapbot-demo" / "heapbot.yaml").write_text(REGISTRY)
    (root / "deploy" / "demo").mkdir(parents=True)
    return root


def heapbot(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`heapbot ARGS` typed in ``cwd``, with no HEAPBOT_* variable; HOME is the test's `home`."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HEAPBOT_", "REDIS_URL", "COLUMNS"))}
    home = next(p for p in (cwd, *cwd.parents) if p.name == "home")
    env.update(HOME=str(home), HEAPBOT_LOG_LEVEL="WARNING", NO_COLOR="1",
               PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    return subprocess.run([sys.executable, "-m", "bot", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def test_the_demo_registry_is_found_from_a_subdirectory(project: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(project.parents[1]))
    monkeypatch.delenv("HEAPBOT_CONFIG", raising=False)
    monkeypatch.delenv("HEAPBOT_DATA_DIR", raising=False)
    monkeypatch.chdir(project / "deploy" / "demo")
    demo = project / ".heapbot-demo"
    assert find_registry().found == demo / "heapbot.yaml"
    settings = Settings()
    assert settings.config_path == demo / "heapbot.yaml"
    assert settings.data_dir == demo / "data"  # the demo's captures, not the platform dir
    assert load_registry().resolve("demo").name == "demo"

    # a nearer heapbot.yaml wins, as a nearer .git does
    (project / "deploy" / "heapbot.yaml").write_text(REGISTRY.replace("demo:", "near:"))
    assert Settings().config_path == project / "deploy" / "heapbot.yaml"
    assert Settings().data_dir != demo / "data"

    # HEAPBOT_CONFIG still wins over anything found
    other = project.parent / "other.yaml"
    monkeypatch.setenv("HEAPBOT_CONFIG", str(other))
    assert Settings().config_path == other


def test_the_search_stops_at_home(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A registry above $HOME (another user's, the machine's) is never picked up."""
    home = project / "deploy"  # HOME below the checkout's root: its registry is above HOME
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(home / "demo")
    search = find_registry()
    assert search.found is None and search.top == home
    assert search.describe() == (f"heapbot.yaml or .heapbot-demo/heapbot.yaml in {home / 'demo'}"
                                 f" or a directory above it (up to {home})")


def test_the_search_stops_at_home_reached_through_a_symlink(
        project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """$HOME may be a symlink to the real home (Silverblue's /home -> /var/home) while the
    current directory is always the real path: the walk still stops at $HOME."""
    home = project / "deploy"
    link = project.parents[2] / "home-link"
    link.symlink_to(home, target_is_directory=True)
    monkeypatch.setenv("HOME", str(link))
    monkeypatch.chdir(home / "demo")
    search = find_registry()
    assert search.found is None and search.top == home.resolve()


def test_services_from_a_subdirectory_names_the_registry_it_used(project: Path) -> None:
    subdir = project / "deploy" / "demo"
    listed = heapbot(subdir, "services")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert f"registry {project / '.heapbot-demo' / 'heapbot.yaml'}" in listed.stdout
    assert "demo" in listed.stdout

    unknown = heapbot(subdir, "top", "nosuch")
    assert unknown.returncode == 2
    said = " ".join(unknown.stdout.split())
    assert ("knows no service called `nosuch`. `/heap services` lists the services of the "
            f"registry {project / '.heapbot-demo' / 'heapbot.yaml'}.") in said, said


def test_no_registry_says_where_heapbot_looked(tmp_path: Path) -> None:
    home = tmp_path / "home"
    work = home / "work"
    work.mkdir(parents=True)
    missing = heapbot(work, "top", "demo")
    assert missing.returncode == 2
    said = " ".join(missing.stdout.split())
    assert ("There is no registry file: heapbot looked for heapbot.yaml or "
            f".heapbot-demo/heapbot.yaml in {work} or a directory above it (up to {home}).") \
        in said, said
