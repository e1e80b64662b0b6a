"""What every surface hands the dispatcher: one /heap request, surface-neutral."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

# Invocation sources that are not a chat user's request: no allow-list check.
TRUSTED_SOURCES = frozenset({"console", "cli", "alert", "watch"})


@dataclass(slots=True)
class Invocation:
    """One /heap request as it arrived, independent of the surface it came from.

    ``text`` is plain text: a surface with its own markup (Slack's ``<@U…>``,
    ``<#C…|…>``, ``&lt;``) turns it into what the user saw before calling.
    ``thread_service`` is the service a chat thread is about, so that
    ``@heapbot diff`` inside that thread needs no SERVICE argument.
    ``source`` is one of console, cli, slack, button, mention, watch, alert.
    """

    text: str
    user_id: str = ""
    channel_id: str = ""
    user_groups: Sequence[str] = ()
    thread_service: str | None = None
    source: str = "console"
    # allow-listed groups whose membership the chat could not tell (a failed lookup):
    # a service restricted to them is refused with a message saying so.
    unknown_groups: Sequence[str] = ()
