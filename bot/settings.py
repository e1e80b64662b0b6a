"""Process settings from the environment (pydantic-settings).

The service registry (which services exist and where their pprof endpoints
are) lives in a YAML file and is loaded by :mod:`bot.registry`; this module
holds only what varies per deployment: tokens, ports, Redis, paths. Secrets
are ``SecretStr`` so they never print by accident.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import platformdirs
from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("heapbot", appauthor=False))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", extra="ignore", populate_by_name=True)

    # Registry and storage
    config_path: Path = Field(Path("heapbot.yaml"), validation_alias="HEAPBOT_CONFIG")
    data_dir: Path = Field(default_factory=_default_data_dir, validation_alias="HEAPBOT_DATA_DIR")
    redis_url: str | None = Field(None, validation_alias="REDIS_URL")

    # Slack
    slack_bot_token: SecretStr | None = Field(None, validation_alias="SLACK_BOT_TOKEN")
    slack_signing_secret: SecretStr | None = Field(None, validation_alias="SLACK_SIGNING_SECRET")
    slack_app_token: SecretStr | None = Field(None, validation_alias="SLACK_APP_TOKEN")
    slack_api_url: str = Field("https://slack.com/api/", validation_alias="SLACK_API_URL")

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

    # Logging
    log_level: str = Field("INFO", validation_alias="HEAPBOT_LOG_LEVEL")
    log_format: str = Field("json", validation_alias="HEAPBOT_LOG_FORMAT")  # json | text


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings of this process (read once; tests build their own Settings)."""
    return Settings()
