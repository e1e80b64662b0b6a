"""Process settings from the environment (pydantic-settings).

The service registry (which services exist and where their pprof endpoints
are) lives in a YAML file and is loaded by :mod:`bot.registry`; this module
holds only what varies per deployment: tokens, ports, Redis, paths. Secrets
are ``SecretStr`` so they never print by accident, and an empty variable is
unset (docker-compose passes ``${VAR:-}`` as ""), as is a whitespace-only secret.
A value heapbot cannot use stops it with one ConfigError naming the variable.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import platformdirs
from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from bot.errors import ConfigError

DEMO_DIR = ".heapbot-demo"  # what `make demo` leaves running: registry, data, service logs
DEFAULT_CONFIG = Path("heapbot.yaml")


@dataclass(frozen=True, slots=True)
class RegistrySearch:
    """Where the default registry was looked for, and what was found (as git finds .git).

    ``found`` is the nearest ``heapbot.yaml`` (or ``.heapbot-demo/heapbot.yaml``, the one
    `make demo` leaves) in ``start`` or a directory above it, or None; ``top`` is the
    last directory looked in (the filesystem root, a mount boundary or $HOME).
    """

    start: Path
    top: Path
    found: Path | None

    @property
    def demo(self) -> Path | None:
        """The `make demo` folder whose registry was found, or None."""
        if self.found is not None and self.found.parent.name == DEMO_DIR:
            return self.found.parent
        return None

    def describe(self) -> str:
        """"heapbot.yaml or .heapbot-demo/heapbot.yaml in /a/b/c or a directory above it
        (up to /a)": what a user reads when nothing was found."""
        names = f"{DEFAULT_CONFIG} or {DEMO_DIR}/{DEFAULT_CONFIG}"
        if self.top == self.start:
            return f"{names} in {self.start}"
        return f"{names} in {self.start} or a directory above it (up to {self.top})"


def _candidates(folder: Path) -> tuple[Path, Path]:
    return folder / DEFAULT_CONFIG, folder / DEMO_DIR / DEFAULT_CONFIG


def find_registry(start: Path | None = None) -> RegistrySearch:
    """The nearest registry from ``start`` (default: the current directory) upwards.

    So `cd deploy/demo && heapbot top demo` finds the registry `make demo` left at the
    checkout's root. In each directory ``heapbot.yaml`` comes before
    ``.heapbot-demo/heapbot.yaml``. The walk stops at the filesystem root, at a mount
    boundary (another device, as git does without GIT_DISCOVERY_ACROSS_FILESYSTEM) and
    at $HOME when ``start`` is inside it, so another user's or the machine's file is
    never picked up by accident.
    """
    # Real paths on both sides: the current directory is one already, and a $HOME that
    # is a symlink (/home -> /var/home) must still stop the walk.
    here = (start or Path.cwd()).resolve()
    try:
        home: Path | None = Path.home().resolve()
    except (RuntimeError, KeyError):  # no $HOME and no passwd entry (some containers)
        home = None
    stop_at_home = home is not None and here.is_relative_to(home)
    folder = here
    while True:
        for candidate in _candidates(folder):
            if candidate.is_file():
                return RegistrySearch(start=here, top=folder, found=candidate)
        parent = folder.parent
        if parent == folder or (stop_at_home and folder == home) or _other_device(folder,
                                                                                 parent):
            return RegistrySearch(start=here, top=folder, found=None)
        folder = parent


def _other_device(folder: Path, parent: Path) -> bool:
    """Whether ``parent`` lies on another filesystem than ``folder`` (a mount point)."""
    try:
        return folder.stat().st_dev != parent.stat().st_dev
    except OSError:  # an unreadable parent: stop there
        return True


def default_config_path() -> Path:
    """The nearest ``heapbot.yaml`` (or the demo's) from here upwards; else ``heapbot.yaml``.
    What HEAPBOT_CONFIG defaults to, for Settings and for :func:`bot.registry.load_registry`."""
    return find_registry().found or DEFAULT_CONFIG


def _default_data_dir(data: dict[str, Any]) -> Path:
    """The demo's own data dir when its registry is the one in use, else the platform's."""
    config = data.get("config_path")
    if config is not None and Path(config).parent.name == DEMO_DIR:
        folder = Path(config).absolute().parent
        if (folder / DEFAULT_CONFIG).is_file():
            return folder / "data"
    return Path(platformdirs.user_data_dir("heapbot", appauthor=False))


def _variable(error: Any) -> str:
    loc = error.get("loc") or ("?",)
    return str(loc[0])


def environment_problem(exc: ValidationError) -> str:
    """One sentence per unusable variable: its name and what is wrong, never its value.

    pydantic's own text is a traceback with the value in it (a secret, perhaps).
    """
    problems = []
    for error in exc.errors(include_url=False, include_input=False):
        # "Input should be a valid integer, unable to parse string as an integer": the first half
        message = str(error.get("msg", "invalid")).split(", unable to")[0].rstrip(".")
        if message.startswith("Input should"):
            message = "it should" + message.removeprefix("Input should")
        problems.append(f"{_variable(error)} is set to a value heapbot cannot use: {message}")
    return "; ".join(problems) + "."


class EnvSettings(BaseSettings):
    """Settings from environment variables; a bad value is one ConfigError, not a traceback.

    An empty variable counts as unset (``HEAPBOT_PORT=`` is the default port), as
    docker-compose's ``${VAR:-}`` and many .env files write it.
    """

    model_config = SettingsConfigDict(env_prefix="", extra="ignore", populate_by_name=True,
                                      env_ignore_empty=True)

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise ConfigError(environment_problem(exc),
                              hint="Fix it, or unset it for heapbot's default (README: "
                                   "Configuration reference).") from None


class Settings(EnvSettings):

    # Registry and storage
    config_path: Path = Field(default_factory=default_config_path,
                              validation_alias="HEAPBOT_CONFIG")
    data_dir: Path = Field(default_factory=_default_data_dir, validation_alias="HEAPBOT_DATA_DIR")
    redis_url: str | None = Field(None, validation_alias="REDIS_URL")

    # Slack
    slack_bot_token: SecretStr | None = Field(None, validation_alias="SLACK_BOT_TOKEN")
    slack_signing_secret: SecretStr | None = Field(None, validation_alias="SLACK_SIGNING_SECRET")
    slack_app_token: SecretStr | None = Field(None, validation_alias="SLACK_APP_TOKEN")
    slack_api_url: str = Field("https://slack.com/api/", validation_alias="SLACK_API_URL")
    # How long a /heap command's checks (service, access, options, a `since` base in Redis)
    # may hold its ack: a refusal then is the ack itself. Slack drops acks after 3 s;
    # past this budget heapbot acks as usual and the checks run with the command. 0: off.
    slack_preflight_seconds: float = Field(
        1.0, ge=0, le=2.5, validation_alias="HEAPBOT_SLACK_PREFLIGHT_SECONDS")

    # HTTP server (Slack events in HTTP mode, webhooks, health, metrics)
    host: str = Field("0.0.0.0", validation_alias="HEAPBOT_HOST")
    port: int = Field(3000, validation_alias="HEAPBOT_PORT")

    # Webhooks
    webhook_token: SecretStr | None = Field(None, validation_alias="HEAPBOT_WEBHOOK_TOKEN")
    alertmanager_token: SecretStr | None = Field(
        None, validation_alias=AliasChoices("HEAPBOT_ALERTMANAGER_TOKEN")
    )
    pagerduty_secret: SecretStr | None = Field(
        None, validation_alias=AliasChoices("PAGERDUTY_WEBHOOK_SECRET")
    )
    # Without HEAPBOT_ALERTMANAGER_TOKEN the Alertmanager hook is off; this opts in to an
    # open hook (anyone who reaches the port can page), with a warning at start-up.
    alertmanager_open: bool = Field(False, validation_alias="HEAPBOT_ALERTMANAGER_OPEN")
    # A second port for /hooks/* and /metrics, so a NetworkPolicy can keep them internal;
    # when set, the public port serves only /slack/events, /healthz and /readyz.
    internal_port: int | None = Field(None, validation_alias="HEAPBOT_INTERNAL_PORT")
    metrics_token: SecretStr | None = Field(None, validation_alias="HEAPBOT_METRICS_TOKEN")

    # HTTP server limits (slow or half-open clients must not starve /healthz or the fds)
    header_timeout_seconds: float = Field(
        10.0, gt=0, validation_alias="HEAPBOT_HTTP_HEADER_TIMEOUT_SECONDS")
    body_timeout_seconds: float = Field(
        15.0, gt=0, validation_alias="HEAPBOT_HTTP_BODY_TIMEOUT_SECONDS")
    max_connections: int = Field(512, ge=8, validation_alias="HEAPBOT_HTTP_MAX_CONNECTIONS")

    # Logging
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field(
        "INFO", validation_alias="HEAPBOT_LOG_LEVEL")
    log_format: Literal["json", "text"] = Field("json", validation_alias="HEAPBOT_LOG_FORMAT")

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _any_case(cls, value: Any) -> Any:
        """`info`, `Info` and `INFO` are one level; `TEXT` is `text`."""
        if not isinstance(value, str):
            return value
        value = value.strip()
        return value.upper() if value.lower() in ("debug", "info", "warning", "error",
                                                  "critical") else value.lower()

    @field_validator("internal_port", mode="before")
    @classmethod
    def _blank_port_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("slack_bot_token", "slack_signing_secret", "slack_app_token",
                     "webhook_token", "alertmanager_token", "pagerduty_secret",
                     "metrics_token", mode="before")
    @classmethod
    def _blank_secret_is_unset(cls, value: Any) -> Any:
        """An empty or whitespace-only secret means "not set", never the secret ""."""
        raw = value.get_secret_value() if isinstance(value, SecretStr) else value
        if isinstance(raw, str) and not raw.strip():
            return None
        return value


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings of this process (read once; tests build their own Settings)."""
    return Settings()
