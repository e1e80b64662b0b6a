"""Which of the registry's allowed user groups a Slack user belongs to.

A service can be opened to user groups (``allow_usergroups: [S0123]``) as well as
channels. Slack does not send group membership with a command, so it is looked
up with ``usergroups.users.list`` (scope ``usergroups:read``) for the groups the
registry names, and cached for a few minutes.

A failed lookup, whatever its shape (a Slack error, a 5xx, an HTML or truncated
body from a proxy, a dropped connection), never breaks a command: the group
counts as "not a member" (access falls back to the channel allow list, never
wider), is remembered as *unknown* so that only a service restricted to it is
refused, with a message saying why, and the failure is cached briefly so a
broken Slack is not asked again by every command.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.metrics import SLACK_API_ERRORS

if TYPE_CHECKING:
    from bot.runtime import Runtime

log = logging.getLogger(__name__)

_METHOD = "usergroups.users.list"
_ERROR_CODE = re.compile(r"^[a-z0-9_]{1,40}$")  # Slack's error codes: invalid_auth, …


def allowed_groups(runtime: Runtime) -> set[str]:
    """Every user group any service in the registry allows."""
    if runtime is None:  # the Slack transport's own tests run without one
        return set()
    return {g for service in runtime.registry for g in service.allow_usergroups}


@dataclass(frozen=True, slots=True)
class Membership:
    """A user's standing in the allow-listed groups: in ``groups``; ``unknown`` = unreadable."""

    groups: tuple[str, ...] = ()
    unknown: tuple[str, ...] = ()


def describe_failure(exc: BaseException) -> str:
    """A short, bounded label for a failed lookup (metrics and logs; never the body).

    ``SlackApiError.response`` is a SlackResponse for Slack's own ``ok: false``
    answers but the raw aiohttp response for a body that is not JSON, so nothing
    about its shape is assumed.
    """
    if isinstance(exc, SlackApiError):
        response = getattr(exc, "response", None)
        data = getattr(response, "data", None)
        error = data.get("error") if isinstance(data, dict) else None
        if isinstance(error, str) and _ERROR_CODE.match(error):
            return error
        status = getattr(response, "status_code", None) or getattr(response, "status", None)
        if isinstance(status, int) and status != 200:
            return f"http_{status}"
        return "unreadable_answer"
    return type(exc).__name__


class UserGroups:
    """Cached membership of the user groups named in allow lists."""

    def __init__(self, client: AsyncWebClient, ttl: float = 300.0,
                 failure_ttl: float = 30.0) -> None:
        self.client = client
        self.ttl = ttl
        # A failed lookup denies (never widens) access, so it is retried soon rather than
        # locking a group's members out for the whole ttl after one Slack hiccup.
        self.failure_ttl = failure_ttl
        # group → (expires at, members; None when the lookup failed)
        self._members: dict[str, tuple[float, frozenset[str] | None]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def groups_of(self, runtime: Runtime, user_id: str) -> tuple[str, ...]:
        """The allow-listed groups ``user_id`` is in (empty when none are configured)."""
        return (await self.membership(runtime, user_id)).groups

    async def membership(self, runtime: Runtime, user_id: str) -> Membership:
        """Groups ``user_id`` is in, and groups whose members could not be read. Never raises."""
        if not user_id:
            return Membership()
        member_of: list[str] = []
        unknown: list[str] = []
        for group in sorted(allowed_groups(runtime)):
            members = await self._members_of(group)
            if members is None:
                unknown.append(group)
            elif user_id in members:
                member_of.append(group)
        return Membership(tuple(member_of), tuple(unknown))

    async def _members_of(self, group: str) -> frozenset[str] | None:
        cached = self._fresh(group)
        if cached is not None:
            return cached[1]
        # One lookup per group at a time: a burst of commands must not fan out to Slack.
        async with self._locks.setdefault(group, asyncio.Lock()):
            cached = self._fresh(group)
            if cached is not None:
                return cached[1]
            members = await self._lookup(group)
            ttl = self.ttl if members is not None else self.failure_ttl
            self._members[group] = (time.monotonic() + ttl, members)
            return members

    def _fresh(self, group: str) -> tuple[float, frozenset[str] | None] | None:
        cached = self._members.get(group)
        return cached if cached is not None and cached[0] > time.monotonic() else None

    async def _lookup(self, group: str) -> frozenset[str] | None:
        """Members of ``group``, or None when Slack's answer cannot be used (any failure)."""
        try:
            resp = await self.client.usergroups_users_list(usergroup=group)
            users = resp.get("users")
            if not isinstance(users, list):
                raise SlackApiError("usergroups.users.list answered without a users list",
                                    resp)
            return frozenset(u for u in users if isinstance(u, str))
        except Exception as exc:  # any shape: a lookup failure must not fail the command
            reason = describe_failure(exc)
            SLACK_API_ERRORS.labels(_METHOD, reason).inc()
            log.warning("cannot read members of user group %s (%s); commands on services "
                        "restricted to it are refused for %.0fs (the app needs the "
                        "usergroups:read scope)", group, reason, self.failure_ttl)
            return None
