"""The /heap grammar: plain text → a command word and its arguments.

Quotes group words (Slack's smart quotes too), backslashes are kept for
regexes, control and bidi characters are dropped, and sizes are capped so a
pasted novel gets one short answer. Surface markup (Slack's ``<@U…>`` and
entities) is the surface's business: the text here is what the user saw.
"""

from __future__ import annotations

import re
import shlex
import unicodedata
from dataclasses import dataclass, field

from bot.errors import UsageError
from handlers import commands

MAX_TEXT_CHARS = 1000
MAX_ARG_CHARS = 200
MAX_ARGS = 24

_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069]")
_SMART_QUOTES = str.maketrans({"“": '"', "”": '"', "„": '"', "‘": "'", "’": "'"})
_PREFIX = re.compile(r"^\s*/?heap(?:bot)?\b\s*", re.IGNORECASE)


@dataclass(slots=True)
class ParsedCommand:
    """A command word and its arguments after tokenising and cleaning."""

    command: str
    argv: list[str] = field(default_factory=list)


def clean_text(text: str) -> str:
    """Drop control and bidi characters, turn smart quotes into plain ones."""
    text = text.replace("\t", " ").replace("\r", " ").replace("\n", " ")
    text = unicodedata.normalize("NFC", text).translate(_SMART_QUOTES)
    return _CONTROL_CHARS.sub("", text).strip()


def shorten(text: str, limit: int = 40) -> str:
    """User text quoted back: backticks removed, length capped."""
    text = text.replace("`", "'")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def parse(text: str) -> ParsedCommand:
    """Tokenise a /heap command line; raise UsageError on what cannot be parsed."""
    if len(text) > MAX_TEXT_CHARS * 4:
        raise UsageError(f"That command is too long ({len(text)} characters).",
                         hint=f"Keep it under {MAX_TEXT_CHARS} characters.")
    text = _PREFIX.sub("", clean_text(text), count=1)
    if len(text) > MAX_TEXT_CHARS:
        raise UsageError(f"That command is too long ({len(text)} characters).",
                         hint=f"Keep it under {MAX_TEXT_CHARS} characters.")
    try:
        tokens = _split(text)
    except ValueError as exc:  # "No closing quotation", "No escaped character"
        raise UsageError(f"Could not read that command: {str(exc).lower()}.",
                         hint="Close every quote, or leave quotes out.") from None
    if len(tokens) > MAX_ARGS:
        raise UsageError(f"That command has {len(tokens)} words; heapbot reads at most {MAX_ARGS}.")
    for token in tokens:
        if len(token) > MAX_ARG_CHARS:
            raise UsageError(f"An argument is {len(token)} characters long; the limit is "
                             f"{MAX_ARG_CHARS}.")
    if not tokens:
        return ParsedCommand("help", [])
    word = commands.canonical(tokens[0])
    if word not in commands.COMMANDS:
        raise UsageError(f"heapbot has no command `{shorten(tokens[0])}`.",
                         hint=commands.did_you_mean(word))
    return ParsedCommand(word, tokens[1:])


def _split(text: str) -> list[str]:
    """shlex with quotes but no backslash escapes: regexes like ``main\\.Put`` stay intact."""
    lexer = shlex.shlex(text, posix=True)
    lexer.whitespace_split = True
    lexer.escape = ""
    lexer.commenters = ""
    return list(lexer)
