"""Slack's markup is undone at the Slack edge: handlers read the text the user saw."""

from __future__ import annotations

import pytest

from bot.slack.text import plain_text
from handlers import parse
from handlers.watch import parse_watch


@pytest.mark.parametrize(("slack", "plain"), [
    ("<@U0BOT> diff payments since deploy", "diff payments since deploy"),
    ("top <@U0BOSS>", "top @U0BOSS"),
    ("top <@U0BOSS|boss>", "top @boss"),
    ("history <!subteam^S0ONCALL|@oncall>", "history @oncall"),
    ("help <!here|here> <!channel>", "help @here @channel"),
    ("peek <#C0GENERAL|general> main", "peek C0GENERAL main"),
    ("top payments --focus 'a&amp;b' --ignore &lt;x&gt;",
     "top payments --focus 'a&b' --ignore <x>"),
    ("top payments --focus <https://example.com|x>", "top payments --focus https://example.com"),
])
def test_plain_text_is_what_the_user_saw(slack: str, plain: str) -> None:
    assert plain_text(slack) == plain


def test_a_linked_channel_reaches_the_watch_as_its_id() -> None:
    parsed = parse(plain_text("watch demo every 1h30m in <#C0OPS|ops>"))
    assert parse_watch(parsed.argv, 60) == ("demo", 5400.0, "C0OPS", None)


@pytest.mark.parametrize("typed", ["#payments-oncall", "payments-oncall"])
def test_a_channel_name_without_its_id_is_one_clear_message(typed: str) -> None:
    from bot.errors import UsageError

    with pytest.raises(UsageError) as refused:
        parse_watch(parse(plain_text(f"watch demo every 1h in {typed}")).argv, 60)
    message = refused.value.user_message()
    assert "heapbot cannot tell which channel `#payments-oncall` is" in message
    assert "C0123ABCD" in message
