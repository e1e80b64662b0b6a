"""The AsyncWebClient heapbot posts with: Slack's base URL from settings, retries, metrics.

429s are retried after Retry-After, 500/503 and dropped connections once more,
with slack_sdk's own retry handlers; each retried failure is counted in
``heapbot_slack_api_errors_total`` so a throttled workspace shows on /metrics.
"""

from __future__ import annotations

from typing import Any

from slack_sdk.http_retry.async_handler import AsyncRetryHandler
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from bot.errors import ConfigError
from bot.metrics import SLACK_API_ERRORS
from bot.settings import Settings


def api_method(url: str) -> str:
    """``https://slack.com/api/chat.postMessage`` → ``chat.postMessage`` (uploads → "upload")."""
    tail = url.rstrip("/").rsplit("/", 1)[-1]
    return tail if "." in tail else "upload"


class _CountRetries:
    """Mixin: count every failure a retry handler decides to retry."""

    error_label = "retry"

    async def _can_retry_async(self, **kwargs: Any) -> bool:
        retry = await super()._can_retry_async(**kwargs)  # type: ignore[misc]
        if retry:
            response = kwargs.get("response")
            label = str(response.status_code) if response is not None else self.error_label
            SLACK_API_ERRORS.labels(api_method(kwargs["request"].url), label).inc()
        return retry


class CountingRateLimitRetry(_CountRetries, AsyncRateLimitErrorRetryHandler):
    """Retries 429 after Retry-After (slack_sdk's handler), counting each."""


class CountingServerErrorRetry(_CountRetries, AsyncServerErrorRetryHandler):
    """Retries 500/503, counting each."""


class CountingConnectionRetry(_CountRetries, AsyncConnectionErrorRetryHandler):
    """Retries a reset or refused connection, counting each."""

    error_label = "connection"


def retry_handlers(rate_limit_retries: int = 3, server_error_retries: int = 2,
                   connection_retries: int = 2) -> list[AsyncRetryHandler]:
    return [
        CountingRateLimitRetry(max_retry_count=rate_limit_retries),
        CountingServerErrorRetry(max_retry_count=server_error_retries),
        CountingConnectionRetry(max_retry_count=connection_retries),
    ]


def normalized_api_url(url: str) -> str:
    """AsyncWebClient joins method names onto base_url, so it must end in "/"."""
    return url if url.endswith("/") else url + "/"


def build_web_client(settings: Settings) -> AsyncWebClient:
    """The bot-token client against ``SLACK_API_URL``; raises ConfigError without a token."""
    if settings.slack_bot_token is None or not settings.slack_bot_token.get_secret_value():
        raise ConfigError("SLACK_BOT_TOKEN is not set.",
                          hint="Set it to the app's Bot User OAuth Token (xoxb-…); "
                               "`heapbot console` works without Slack.")
    return AsyncWebClient(
        token=settings.slack_bot_token.get_secret_value(),
        base_url=normalized_api_url(settings.slack_api_url),
        timeout=30,
        retry_handlers=retry_handlers(),
    )
