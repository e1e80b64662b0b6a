"""The Bolt AsyncApp: verification, listeners, and nothing else.

Bolt verifies each HTTP request's signature and timestamp (401 before any
listener runs); the listener groups in :mod:`bot.slack.listeners` are
registered one ``register(app, deps)`` at a time.
"""

from __future__ import annotations

import logging

from slack_bolt.async_app import AsyncApp
from slack_bolt.logger.messages import warning_client_prioritized_and_token_skipped

from bot.errors import ConfigError
from bot.settings import Settings
from bot.slack.deps import SlackDeps
from bot.slack.listeners import register_listeners

log = logging.getLogger(__name__)


def signing_secret_of(settings: Settings) -> str:
    secret = settings.slack_signing_secret.get_secret_value() if settings.slack_signing_secret \
        else ""
    if not secret:
        raise ConfigError("SLACK_SIGNING_SECRET is not set, so heapbot cannot verify requests.",
                          hint="Copy the Signing Secret from the app's Basic Information page, "
                               "or set SLACK_APP_TOKEN to use Socket Mode instead.")
    return secret


class _ClientGivenOnPurpose(logging.Filter):
    """Drops Bolt's "As you gave `client` as well, `token` will be unused" warning.

    Bolt reads SLACK_BOT_TOKEN from the environment by itself and warns at every
    start that the client heapbot hands it wins; that client carries the same
    token, so the warning is noise (issue 15.9). Every other Bolt line passes.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != warning_client_prioritized_and_token_skipped()


def build_bolt_app(deps: SlackDeps, settings: Settings, *, socket_mode: bool = False) -> AsyncApp:
    """An AsyncApp posting through ``deps.client``; HTTP mode requires a signing secret."""
    secret = "" if socket_mode else signing_secret_of(settings)
    bolt_logger = logging.getLogger("heapbot.bolt")
    if not any(isinstance(f, _ClientGivenOnPurpose) for f in bolt_logger.filters):
        bolt_logger.addFilter(_ClientGivenOnPurpose())
    app = AsyncApp(
        client=deps.client,
        signing_secret=secret,
        request_verification_enabled=not socket_mode,
        process_before_response=False,
        raise_error_for_unhandled_request=False,
        logger=bolt_logger,
    )
    register_listeners(app, deps)
    return app
