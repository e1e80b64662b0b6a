"""Slack's message markup ↔ the plain text handlers read and write.

Slack sends what a user typed with its own markup: ``<@U123>`` for a mention,
``<#C123|ops>`` for a channel, ``<!channel>`` / ``<!subteam^S1|@sre>`` for
broadcasts, and ``&amp;``, ``&lt;``, ``&gt;`` for the three characters it
reserves. :func:`plain_text` turns that into what the user saw, so handlers
(and the console, which has no markup) get the same text. Going the other way,
``bot.render.blocks`` makes every reply text inert before it reaches Slack.
"""

from __future__ import annotations

import re

# <@U123>, <@U123|alice>, <#C123>, <#C123|ops>, <!channel>, <!here|here>, <!subteam^S1|@sre>,
# <https://example.com|label>
_MARKUP = re.compile(r"<([!@#]?)([^<>|]*)(?:\|([^<>]*))?>")
_LEADING_MENTION = re.compile(r"^\s*<@[A-Z0-9]+(?:\|[^>]*)?>\s*")


def _plain(match: re.Match[str]) -> str:
    sigil, ref, label = match.group(1), match.group(2), match.group(3)
    if sigil == "#":
        return ref  # a channel id: what `/heap watch … in #channel` needs to post there
    if sigil == "@":
        return "@" + (label or ref).lstrip("@")
    if sigil == "!":
        if ref.startswith("subteam^"):
            return "@" + (label or ref.split("^", 1)[1]).lstrip("@")
        return "@" + (label or ref).lstrip("@")
    return ref  # a link: its URL, as typed


def plain_text(text: str) -> str:
    """What the user typed, from Slack's markup: leading bot mention dropped, entities decoded."""
    text = _LEADING_MENTION.sub("", text, count=1)
    text = _MARKUP.sub(_plain, text)
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
