"""What a handler answers: a structure, not a wire format.

Handlers build a :class:`Reply`; ``bot.render.blocks`` turns it into Slack
Block Kit, ``bot.render.terminal`` into rich text for the console and CLI.
Nothing here knows about Slack.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Align = Literal["left", "right"]


@dataclass(slots=True)
class Column:
    name: str
    align: Align = "right"


@dataclass(slots=True)
class Table:
    """A table of already formatted cells (pprof-style units applied)."""

    columns: list[Column]
    rows: list[list[str]]
    caption: str = ""  # e.g. "Showing top 10 nodes out of 83"


@dataclass(slots=True)
class Action:
    """A button. ``command`` is the /heap command it runs, e.g. "diff payments"."""

    label: str
    command: str
    style: Literal["default", "primary", "danger"] = "default"


@dataclass(slots=True)
class Attachment:
    """A file to upload into the reply's thread (raw profile, PNG chart)."""

    filename: str
    content: bytes
    title: str
    kind: Literal["profile", "chart", "text"] = "profile"


@dataclass(slots=True)
class Reply:
    """One answer to one command.

    ``service`` lets follow-ups in a thread (``@heapbot diff``) know what the
    thread is about. ``ephemeral`` replies are seen only by the asker (errors,
    refusals, help). ``error`` marks a reply that explains a failure.
    """

    title: str
    context: list[str] = field(default_factory=list)
    summary: str = ""  # one-line takeaway
    table: Table | None = None
    sections: list[str] = field(default_factory=list)  # plain paragraphs (mrkdwn-free text)
    actions: list[Action] = field(default_factory=list)
    attachments: list[Attachment] = field(default_factory=list)
    service: str | None = None
    snapshot_id: str | None = None
    ephemeral: bool = False
    error: bool = False
    data: dict[str, Any] | None = None  # machine-readable result, for --format json

    @classmethod
    def failure(cls, message: str, *, service: str | None = None) -> Reply:
        return cls(title="heapbot could not do that", sections=[message], ephemeral=True,
                   error=True, service=service)
