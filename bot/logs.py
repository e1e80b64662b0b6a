"""Logging for heapbot processes: JSON lines (or text) with secrets redacted.

Logs are read by people and shipped to systems heapbot does not control, so
every line passes through one redaction step: Slack tokens, Authorization /
Bearer / Basic credentials, passwords in URLs, and any value equal to a
configured secret are replaced before the line is written. Each line carries
the request id of the HTTP request (or job) it belongs to, taken from a
contextvar that the aiohttp middleware here sets.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sys
import time
import uuid
from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:  # only annotations: the engine's workers import this module for target_name
    from bot.settings import Settings

REDACTED = "[REDACTED]"
REQUEST_ID_HEADER = "X-Request-Id"

request_id_var: ContextVar[str] = ContextVar("heapbot_request_id", default="")

# Slack tokens: bot/user/refresh (xoxb-, xoxp-, xoxe-, xoxe.xoxp-), app-level (xapp-).
_SLACK_TOKEN = re.compile(r"\b(?:xox[a-z](?:\.xox[a-z])?|xapp)-[A-Za-z0-9-]+")
# "Authorization: Bearer abc", "'authorization': 'Basic abc'", "authorization=abc".
_AUTH_HEADER = re.compile(
    r"(?i)((?:proxy-)?authorization['\"]?\s*[:=]\s*['\"]?)"
    r"(?:(?:bearer|basic|token|digest)\s+)?[^\s'\",;}]+"
)
# (the value never ends in a full stop: that ends the sentence)
_SCHEME_CREDENTIAL = re.compile(r"(?i)\b(bearer|basic)\s+([A-Za-z0-9._~+/=-]{5,}[A-Za-z0-9_~+/=-])")
# What a credential after "Bearer"/"Basic" looks like, unlike an English word
# ("send it as a bearer token", "basic authentication"): a digit, a capital
# inside the word, a token68 symbol, or a long run of characters.
_CREDENTIAL_SHAPE = re.compile(r"\d|.[A-Z]|[._~+/=]|^.{24,}$")
_URL_CREDENTIALS = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s:@]*:[^/\s@]+@")
# Environment variables whose values are secrets even if heapbot's settings do not
# name them (e.g. the registry's auth_header_env variables).
_SECRET_ENV_NAME = re.compile(r"(?i)(TOKEN|SECRET|PASSWORD|PASSWD|AUTH|APIKEY|API_KEY)$")
_MIN_SECRET_LENGTH = 6  # shorter values would redact ordinary words

_configured_secrets: set[str] = set()

# LogRecord attributes that are not "extra" fields.
_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "request_id", "taskName",
}


def new_request_id() -> str:
    return uuid.uuid4().hex[:16]


def set_request_id(request_id: str | None = None) -> str:
    """Set the current context's request id (a new one if None) and return it."""
    value = _clean_request_id(request_id) or new_request_id()
    request_id_var.set(value)
    return value


@contextlib.contextmanager
def request_context(request_id: str | None = None) -> Iterator[str]:
    """Run a block (a job, a console command) under its own request id."""
    token = request_id_var.set(_clean_request_id(request_id) or new_request_id())
    try:
        yield request_id_var.get()
    finally:
        request_id_var.reset(token)


def _clean_request_id(value: str | None) -> str:
    """A caller-supplied id, kept only if short and harmless (it lands in every log line)."""
    if not value:
        return ""
    value = value.strip()[:64]
    return value if re.fullmatch(r"[A-Za-z0-9._:-]+", value) else ""


def add_secret(value: str | None) -> None:
    """Redact ``value`` wherever it appears in a log line from now on."""
    if value and len(value) >= _MIN_SECRET_LENGTH:
        _configured_secrets.add(value)


def configured_secrets() -> set[str]:
    """The secrets registered with ``add_secret`` (for redacting text that is not a log line)."""
    return set(_configured_secrets)


def secrets_of(settings: Settings, environ: dict[str, str] | None = None) -> set[str]:
    """Every SecretStr in settings plus values of secret-looking environment variables."""
    found: set[str] = set()
    for name in type(settings).model_fields:
        value = getattr(settings, name, None)
        if value is not None and hasattr(value, "get_secret_value"):
            found.add(value.get_secret_value())
    env = os.environ if environ is None else environ
    for name, value in env.items():
        if _SECRET_ENV_NAME.search(name):
            found.add(value)
    return {s for s in found if s and len(s) >= _MIN_SECRET_LENGTH}


def redact(text: str, secrets: Iterable[str] | None = None) -> str:
    """``text`` with tokens, credentials and configured secrets replaced by [REDACTED]."""
    # Longest first, so a secret that contains another is replaced whole.
    for secret in sorted(_configured_secrets if secrets is None else secrets, key=len,
                         reverse=True):
        if secret in text:
            text = text.replace(secret, REDACTED)
    text = _SLACK_TOKEN.sub(REDACTED, text)
    text = _AUTH_HEADER.sub(lambda m: m.group(1) + REDACTED, text)
    text = _SCHEME_CREDENTIAL.sub(_scheme_credential, text)
    return _URL_CREDENTIALS.sub(lambda m: m.group(1) + REDACTED + "@", text)


_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029`]+")


def target_name(text: str, width: int = 60) -> str:
    """A name a profiled target chose (a sample type, a unit), fit to quote in a reply.

    A target decides what its profile says, so such names get what other
    target-chosen text gets (issue 17): credentials and configured secrets
    redacted, control characters and backticks (which would break out of Slack's
    code spans) made blanks, and the length bounded to ``width`` characters.
    """
    text = _UNPRINTABLE.sub(" ", redact(text)).strip()
    return text if len(text) <= width else text[: width - 1] + "…"


def target_names(names: Iterable[str], most: int = 6, width: int = 60, quote: str = "") -> str:
    """"a, b, c and 4 more": at most ``most`` target-chosen names, each as target_name
    (and each between ``quote``s: a backtick makes code spans, which a name cannot end)."""
    names = list(names)
    shown = ", ".join(f"{quote}{target_name(n, width)}{quote}" for n in names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


def _scheme_credential(match: re.Match[str]) -> str:
    """"Bearer eyJhbGciOi…" → "Bearer [REDACTED]"; "a bearer token" stays as written."""
    if _CREDENTIAL_SHAPE.search(match.group(2)):
        return f"{match.group(1)} {REDACTED}"
    return match.group(0)


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {str(k): _redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_redact_value(v) for v in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    return redact(str(value))


class RedactingFilter(logging.Filter):
    """Redacts the message, its arguments and extra fields before any handler sees them."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a bad format string must not hide the line
            message = f"{record.msg!r} {record.args!r}"
        record.msg = redact(message)
        record.args = None
        for key, value in list(vars(record).items()):
            if key not in _STANDARD_ATTRS:
                setattr(record, key, _redact_value(value))
        if not getattr(record, "request_id", None):
            record.request_id = request_id_var.get()
        return True


def _iso_time(created: float) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    return f"{seconds}.{int(created % 1 * 1000):03d}Z"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request_id, extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _iso_time(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", "") or request_id_var.get(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and key not in entry:
                entry[key] = _redact_value(value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        # Tracebacks are formatted here, after the filter ran: redact the whole line too.
        return redact(json.dumps(entry, default=str, ensure_ascii=False))


class TextFormatter(logging.Formatter):
    """Human-readable lines for a terminal: time level logger [request_id] message."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        if not getattr(record, "request_id", None):
            record.request_id = request_id_var.get() or "-"
        return redact(super().format(record))


def configure_logging(settings: Settings, *, stream: TextIO | None = None) -> logging.Handler:
    """Send every log record through redaction to ``stream`` (stderr) in the configured format.

    Replaces the root logger's handlers, so calling it twice is harmless. Slack's
    SDK logs request headers (the bot token) at DEBUG; it is kept at INFO or above.
    """
    for secret in secrets_of(settings):
        add_secret(secret)
    level = logging.getLevelNamesMapping().get(settings.log_level.upper(), logging.INFO)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(RedactingFilter())
    handler.setFormatter(TextFormatter() if settings.log_format.lower() == "text"
                         else JsonFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name in ("slack_sdk", "slack_bolt", "heapbot.bolt"):
        logging.getLogger(name).setLevel(max(level, logging.INFO))
    logging.captureWarnings(True)
    return handler

