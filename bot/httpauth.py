"""The one bearer/basic credential check for heapbot's own HTTP routes (webhooks, /metrics)."""

from __future__ import annotations

import base64
import hmac

from aiohttp import web


def credential_matches(request: web.Request, secret: str) -> bool:
    """``Authorization: Bearer <secret>``, or basic auth whose password is ``secret``.

    Compared in constant time; Alertmanager's and Prometheus' ``http_config`` can send
    either form. An empty ``secret`` never matches (settings turn "" into unset anyway).
    """
    if not secret:
        return False
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer":
        return hmac.compare_digest(value.encode(), secret.encode())
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value, validate=True).decode()
        except (ValueError, UnicodeDecodeError):
            return False
        _user, _, password = decoded.partition(":")
        return hmac.compare_digest(password.encode(), secret.encode())
    return False
