"""Which of the registry's allowed user groups a Slack user belongs to.

A service can be opened to user groups (``allow_usergroups: [S0123]``) as well as
channels. Slack does not send group membership with a command, so it is looked
up with ``usergroups.users.list`` (scope ``usergroups:read``) for the groups the
registry names, and cached for a few minutes. Any failure means "no groups":
access then falls back to the channel allow list, never wider.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient

from bot.metrics import SLACK_API_ERRORS

log = logging.getLogger(__name__)


def allowed_groups(runtime: Any) -> set[str]:
    """Every user group any service in the registry allows."""
    registry = getattr(runtime, "registry", None)
    if registry is None:
        return set()
    return {g for service in registry for g in getattr(service, "allow_usergroups", ())}


class UserGroups:
    """Cached membership of the user groups named in allow lists."""

    def __init__(self, client: AsyncWebClient, ttl: float = 300.0,
                 failure_ttl: float = 30.0) -> None:
        self.client = client
        self.ttl = ttl
        # A failed lookup denies (never widens) access, so it is retried soon rather than
        # locking a group's members out for the whole ttl after one Slack hiccup.
        self.failure_ttl = failure_ttl
        self._members: dict[str, tuple[float, frozenset[str]]] = {}

    async def groups_of(self, runtime: Any, user_id: str) -> tuple[str, ...]:
        """The allow-listed groups ``user_id`` is in (empty when none are configured)."""
        if not user_id:
            return ()
        member_of = []
        for group in sorted(allowed_groups(runtime)):
            if user_id in await self._members_of(group):
                member_of.append(group)
        return tuple(member_of)

    async def _members_of(self, group: str) -> frozenset[str]:
        cached = self._members.get(group)
        now = time.monotonic()
        if cached is not None and cached[0] > now:
            return cached[1]
        ttl = self.failure_ttl
        try:
            resp = await self.client.usergroups_users_list(usergroup=group)
            members = frozenset(resp.get("users") or ())
            ttl = self.ttl
        except SlackApiError as exc:
            error = str(exc.response.get("error") or exc.response.status_code)
            SLACK_API_ERRORS.labels("usergroups.users.list", error).inc()
            log.warning("cannot read members of user group %s (%s); the app needs the "
                        "usergroups:read scope", group, error)
            members = frozenset()
        except (SlackClientError, OSError) as exc:
            SLACK_API_ERRORS.labels("usergroups.users.list", type(exc).__name__).inc()
            log.warning("cannot read members of user group %s: %s", group, type(exc).__name__)
            members = frozenset()
        self._members[group] = (now + ttl, members)
        return members
