"""An environment variable heapbot cannot use is one line naming it, exit status 2.

Runs the real CLI (``python -m bot``) as an operator would, with the mistakes a
deployment makes: a word where a number goes, a value below its floor, an unknown
log level, a boolean typo, and the empty values docker-compose writes for
``${VAR:-}`` (those mean "unset": the default applies). Values are never echoed,
since the variable may hold a secret.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot.errors import ConfigError
from bot.jobs import QueueSettings
from bot.settings import Settings

REPO = Path(__file__).resolve().parents[2]

UNUSABLE = [
    ("HEAPBOT_PORT", "hunter2port", "should be a valid integer"),
    ("HEAPBOT_HTTP_MAX_CONNECTIONS", "2", "should be greater than or equal to 8"),
    ("HEAPBOT_LOG_LEVEL", "LOUD", "should be 'DEBUG', 'INFO', 'WARNING', 'ERROR' or 'CRITICAL'"),
    ("HEAPBOT_ALERTMANAGER_OPEN", "maybe", "should be a valid boolean"),
    ("HEAPBOT_JOB_CONCURRENCY", "hunter2jobs", "should be a valid integer"),  # QueueSettings
]


def _run(args: list[str], tmp_path: Path, **variables: str) -> subprocess.CompletedProcess[str]:
    registry = tmp_path / "heapbot.yaml"
    registry.write_text('services:\n  demo:\n    targets: ["http://127.0.0.1:9"]\n')
    env = {**os.environ, "HEAPBOT_DATA_DIR": str(tmp_path / "data"),
           "HEAPBOT_CONFIG": str(registry), "REDIS_URL": "redis://127.0.0.1:9/0",
           "SLACK_BOT_TOKEN": "xoxb-test", "SLACK_SIGNING_SECRET": "s3cret",
           "SLACK_API_URL": "http://127.0.0.1:9/api/", **variables}
    env.pop("SLACK_APP_TOKEN", None)
    return subprocess.run([sys.executable, "-m", "bot", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize(("variable", "value", "reason"), UNUSABLE,
                         ids=[u[0] for u in UNUSABLE])
@pytest.mark.parametrize("command", [["services"], ["serve"]], ids=["services", "serve"])
def test_unusable_variable_is_one_line_naming_it_and_exit_2(
        tmp_path: Path, command: list[str], variable: str, value: str, reason: str) -> None:
    if variable == "HEAPBOT_JOB_CONCURRENCY" and command == ["services"]:
        command = ["ask", "/heap watch demo every 5m"]  # the queue's knobs load when used
    done = _run(command, tmp_path, **{variable: value})
    shown = done.stdout + done.stderr
    assert done.returncode == 2, shown
    assert "Traceback" not in shown and "pydantic" not in shown, shown
    assert f"{variable} is set to a value heapbot cannot use: it {reason}." in shown, shown
    assert "unset it for heapbot's default" in shown
    assert value not in shown  # may be a secret


@pytest.mark.parametrize("variable", ["HEAPBOT_PORT", "HEAPBOT_LOG_LEVEL", "HEAPBOT_CONFIG",
                                      "HEAPBOT_HTTP_MAX_CONNECTIONS", "SLACK_BOT_TOKEN"])
def test_an_empty_variable_means_unset(variable: str, monkeypatch: pytest.MonkeyPatch) -> None:
    name = next(n for n, f in Settings.model_fields.items() if f.validation_alias == variable)
    monkeypatch.delenv(variable, raising=False)
    unset = getattr(Settings(), name)
    monkeypatch.setenv(variable, "")
    assert getattr(Settings(), name) == unset


def test_log_level_and_format_take_any_case(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEAPBOT_LOG_LEVEL", " warning ")
    monkeypatch.setenv("HEAPBOT_LOG_FORMAT", "TEXT")
    settings = Settings()
    assert (settings.log_level, settings.log_format) == ("WARNING", "text")


def test_queue_settings_refuse_with_the_variable_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEAPBOT_JOB_MAX_DELIVERIES", "0")
    with pytest.raises(ConfigError) as err:
        QueueSettings()
    assert err.value.user_message().startswith(
        "HEAPBOT_JOB_MAX_DELIVERIES is set to a value heapbot cannot use: it should be "
        "greater than or equal to 1.")
