"""Who may run a command on a service, and which service a command is about.

Runs before any capture: a SERVICE command gets its service from the thread when
the user left it out, the name is resolved through the registry (aliases,
did-you-mean), and a chat user outside the service's allow lists is refused.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bot.errors import AccessDeniedError, UnknownServiceError, UsageError
from bot.reply import Reply
from handlers import commands
from handlers.invocation import TRUSTED_SOURCES, Invocation

if TYPE_CHECKING:
    from bot.registry import Registry, ServiceConfig


def check_access(service: ServiceConfig, inv: Invocation) -> None:
    """Refuse a request from a channel or user outside the service's allow lists.

    Console and CLI requests come from whoever holds the registry and the store,
    and alert/watch runs are heapbot's own (set up by the operator), so only
    requests typed or clicked by a chat user are checked.
    """
    if inv.source in TRUSTED_SOURCES:
        return
    try:
        service.check_access(inv.channel_id, tuple(inv.user_groups))
    except AccessDeniedError:
        unread = sorted(set(inv.unknown_groups) & set(service.allow_usergroups))
        if not unread:
            raise
        groups = "user group" + ("s " if len(unread) > 1 else " ")
        raise AccessDeniedError(
            f"heapbot could not check whether you are in the {groups}{', '.join(unread)} "
            f"that may use `{service.name}`: Slack did not answer the membership lookup.",
            hint="Try again in a minute, or ask in one of the service's allowed channels.",
        ) from None


def answers_privately(service: ServiceConfig, inv: Invocation) -> bool:
    """Whether a chat answer about ``service`` must reach the asker alone.

    A user group lets its members *ask* from any channel, but everyone in the
    channel reads a post: outside the service's ``allow_channels`` the answer is
    the asker's alone (issue 17: a restricted service's data reaches no other channel).
    """
    return inv.source not in TRUSTED_SOURCES and not service.may_post_in(inv.channel_id)


def keep_private(reply: Reply, service: ServiceConfig, inv: Invocation) -> Reply:
    """Make ``reply`` ephemeral when :func:`answers_privately`; its files stay unposted.

    Slack cannot share a file with one person only, so the files (flame graphs,
    raw profiles, charts) are named instead of uploaded into the channel.
    """
    if not answers_privately(service, inv):
        return reply
    reply.ephemeral = True
    if reply.attachments:
        allowed = ", ".join(f"#{c}" for c in service.allow_channels) or "none"
        names = ", ".join(f"`{a.filename}`" for a in reply.attachments)
        reply.sections.append(
            f"Only you see this: `{service.name}`'s files ({names}) are posted only in its "
            f"allowed channels ({allowed}); ask there for them.")
        reply.attachments = []
    return reply


def may_use(service: ServiceConfig, inv: Invocation) -> bool:
    """Whether :func:`check_access` lets ``inv`` use ``service`` (for lists that hide)."""
    try:
        check_access(service, inv)
    except AccessDeniedError:
        return False
    return True


def resolve_for(registry: Registry, name: str, inv: Invocation | None) -> ServiceConfig:
    """``registry.resolve(name)``, whose did-you-mean names only services ``inv`` may use.

    A near miss (``vaul``) must not reveal a restricted service's name to someone
    outside its allow lists; ``inv`` None (no chat context) suggests every service.
    """
    try:
        return registry.resolve(name)
    except UnknownServiceError as err:
        if inv is None or not err.suggestions:
            raise
        usable = [s for s in err.suggestions if may_use(registry.resolve(s), inv)]
        if usable == err.suggestions:
            raise
        raise UnknownServiceError(err.name, usable, err.registry) from None


def require_service(command: str, argv: list[str]) -> None:
    """A SERVICE command must start with a service name, not an option or nothing."""
    if not argv or argv[0].startswith("-"):
        raise UsageError(f"`/heap {command}` needs a SERVICE.",
                         hint=f"Usage: `{commands.usage_of(command)}`")


def _needs_thread_service(registry: Registry, argv: list[str], inv: Invocation) -> bool:
    """Whether ``argv`` lacks a SERVICE that the thread can supply.

    A first word that is a near miss of a known service (``paymnts``) is taken as
    a misspelt service, so the user gets did-you-mean instead of a confusing
    error about the word in another position.
    """
    if not inv.thread_service:
        return False
    if not argv or argv[0].startswith("-"):
        return True
    try:
        registry.resolve(argv[0])
    except UnknownServiceError as err:
        return not err.suggestions
    return False


def resolve_and_authorize(registry: Registry, command: str, argv: list[str],
                          inv: Invocation) -> list[str]:
    """For a SERVICE command: fill in the thread's service, resolve aliases, enforce the
    allow lists (before any capture).

    Returns argv with the service's canonical name first.
    """
    if _needs_thread_service(registry, argv, inv):
        argv = [str(inv.thread_service), *argv]
    require_service(command, argv)
    service = resolve_for(registry, argv[0], inv)  # did-you-mean: usable services only
    check_access(service, inv)
    return [service.name, *argv[1:]]
