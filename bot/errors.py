"""heapbot's error hierarchy.

Every error a user can cause or meet derives from :class:`HeapbotError`. Its
message is shown to people as is (in Slack and in the terminal), so it says
what went wrong and what to do, in one or two sentences, with no traceback.
Anything that is *not* a HeapbotError is a bug and is reported as one.
"""

from __future__ import annotations

from collections.abc import Sequence


class HeapbotError(Exception):
    """Base of every error whose message is fit for a user."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def user_message(self) -> str:
        """The message plus the hint, as one short paragraph of whole sentences."""
        return f"{end_sentence(self.message)} {self.hint}" if self.hint else self.message


def end_sentence(text: str) -> str:
    """``text`` ending in a full stop (or its own ``.?!:``), so the next sentence can follow.

    A message joined to its hint ran on without one: "… not 0 Fix the registry".
    """
    stripped = text.rstrip()
    if not stripped or stripped[-1] in ".?!:" or stripped.endswith((".`", ".)")):
        return stripped
    return stripped + "."


class UsageError(HeapbotError):
    """A command's arguments are wrong; the hint carries its usage line."""


class UnknownServiceError(UsageError):
    """A service name that the registry does not know."""

    def __init__(self, name: str, suggestions: Sequence[str] = (),
                 registry: str | None = None) -> None:
        self.name = name
        self.suggestions = list(suggestions)
        self.registry = registry  # the registry file looked in, so a wrong one shows
        if self.suggestions:
            hint = "Did you mean " + " or ".join(f"`{s}`" for s in self.suggestions) + "?"
        elif registry:
            hint = f"`/heap services` lists the services of the registry {registry}."
        else:
            hint = "`/heap services` lists the services heapbot knows."
        super().__init__(f"heapbot knows no service called `{name}`.", hint=hint)


class ConfigError(HeapbotError):
    """The registry file or the environment is invalid (names file, service and key)."""


class ProfileError(HeapbotError):
    """Bytes that are not a usable pprof profile (or goroutine dump, or MemStats)."""


class CaptureError(HeapbotError):
    """No instance of a service answered with a usable profile."""


class StoreError(HeapbotError):
    """The snapshot store (Redis) failed or is unreachable."""


class StoreUnavailableError(StoreError):
    """Redis cannot be reached; commands that need no history still work."""


class NotFoundError(HeapbotError):
    """A snapshot, watch or thread that does not exist."""


class AccessDeniedError(HeapbotError):
    """The user or channel is not on the service's allow list."""
