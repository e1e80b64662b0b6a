"""The /heap grammar and dispatcher: parsing, errors users see, thread context, access."""

from __future__ import annotations

import logging
import textwrap
from pathlib import Path

import pytest

import handlers
from bot.errors import UsageError
from bot.registry import Registry, load_registry
from bot.render.blocks import fallback_text, neutralize_mentions, reply_to_blocks
from bot.render.terminal import print_reply
from bot.slack.text import plain_text
from handlers import Invocation, ack_text, parse, run

REGISTRY_YAML = """
services:
  payments:
    targets: ["http://127.0.0.1:1", "http://127.0.0.1:2", "http://127.0.0.1:3"]
    aliases: [pay]
  locked:
    targets: ["http://127.0.0.1:4"]
    allow_channels: [C0ALLOWED]
    allow_usergroups: [S0SRE]
"""

# A real handler module written to disk for the dispatcher to import: it echoes
# what it received, so tests see exactly what the dispatcher passed on.
ECHO_MODULE = '''
from bot.reply import Reply

USAGE = "/heap echo SERVICE"

async def handle(runtime, argv, inv):
    return Reply(title="echo " + " ".join(argv), sections=[inv.text], data={"argv": argv})
'''
BROKEN_IMPORT_MODULE = "raise RuntimeError('this module is broken at import')\n"
CRASHING_MODULE = '''
async def handle(runtime, argv, inv):
    secret_detail = {"token": "xoxb-should-never-show"}
    raise ValueError(f"boom {secret_detail}")
'''


class RegistryOnly:
    """The part of the Runtime the dispatcher itself reads: the registry."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry


@pytest.fixture
def runtime(tmp_path: Path) -> RegistryOnly:
    path = tmp_path / "heapbot.yaml"
    path.write_text(REGISTRY_YAML)
    return RegistryOnly(load_registry(path))


@pytest.fixture
def extra_handlers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Make modules written under tmp_path/handlers importable as handlers.<name>."""
    folder = tmp_path / "extra_handlers"
    folder.mkdir()
    monkeypatch.setattr(handlers, "__path__", [*handlers.__path__, str(folder)])
    return folder


def install(folder: Path, monkeypatch: pytest.MonkeyPatch, word: str, module: str,
            source: str, *, takes_service: bool = True) -> None:
    (folder / f"{module}.py").write_text(textwrap.dedent(source))
    monkeypatch.setitem(handlers.COMMANDS, word, module)
    if takes_service:
        monkeypatch.setattr(handlers.commands, "SERVICE_COMMANDS",
                            handlers.commands.SERVICE_COMMANDS | {word})


def all_text(reply) -> str:
    return "\n".join([reply.title, reply.summary, *reply.context, *reply.sections])


def test_parse_strips_prefix_mentions_and_control_characters() -> None:
    assert parse("/heap top payments 20 --cum").command == "top"
    assert parse("/heap top payments 20 --cum").argv == ["payments", "20", "--cum"]
    # Slack's markup is undone at the Slack edge: the bot's mention is dropped there
    assert parse(plain_text("<@U0BOT> diff payments since deploy")).argv == [
        "payments", "since", "deploy"]
    assert parse("top\x00 pay\x07ments").argv == ["payments"]
    # quotes group words (Slack's smart quotes too); backslashes stay for regexes
    assert parse("peek payments “main\\.(\\*store\\).Put”").argv == [
        "payments", "main\\.(\\*store\\).Put"]
    assert parse("peek payments main\\.Put").argv == ["payments", "main\\.Put"]
    assert parse("").command == "help"
    assert parse("memstats payments").command == "stats"


def test_parse_refuses_unbalanced_quotes_long_arguments_and_unknown_words() -> None:
    with pytest.raises(UsageError, match="closing quotation"):
        parse('top payments --focus "main.Put')
    with pytest.raises(UsageError, match="limit is 200"):
        parse("top " + "x" * 300)
    with pytest.raises(UsageError, match="too long"):
        parse("top payments " + "a " * 3000)
    with pytest.raises(UsageError) as err:
        parse("tpo payments")
    assert "`/heap top`" in err.value.user_message()


def test_neutralize_mentions_keeps_text_readable_but_inert() -> None:
    text = neutralize_mentions("hi <!channel> <!here|here> <@U123ABC> <#C999|ops> "
                               "<!subteam^S1|@sre> @everyone")
    for live in ("<!channel>", "<!here", "<@U123ABC>", "<#C999", "<!subteam", "@everyone"):
        assert live not in text
    assert "channel" in text and "U123ABC" in text and "ops" in text and "sre" in text


async def test_unknown_service_gets_did_you_mean(runtime: RegistryOnly) -> None:
    reply = await run(runtime, Invocation("top paymnets", source="slack", channel_id="C1"))
    assert reply.error and reply.ephemeral
    assert "paymnets" in all_text(reply)
    assert "Did you mean `payments`" in all_text(reply)


async def test_missing_service_shows_usage(runtime: RegistryOnly) -> None:
    reply = await run(runtime, Invocation("top"))
    assert reply.error
    assert "/heap top SERVICE [N]" in all_text(reply)


async def test_bad_quotes_are_a_usage_message_not_a_traceback(runtime: RegistryOnly) -> None:
    reply = await run(runtime, Invocation("top payments --focus 'x"))
    assert reply.error
    assert "Traceback" not in all_text(reply)
    assert "quote" in all_text(reply)


async def test_help_lists_every_command(runtime: RegistryOnly) -> None:
    reply = await run(runtime, Invocation("help"))
    usages = [row[0] for row in reply.table.rows]
    for word in ("top", "diff", "goroutines", "stats", "history", "peek", "list", "deploy",
                 "services", "capture", "leaks", "watch", "unwatch", "watches"):
        assert any(u.startswith(f"/heap {word}") for u in usages), word
    one = await run(runtime, Invocation("help diff"))
    assert "since previous|deploy|1h" in one.summary


async def test_access_refused_outside_allowed_channels(runtime: RegistryOnly) -> None:
    refused = await run(runtime, Invocation("top locked", channel_id="C0OTHER", source="slack"))
    assert refused.error and refused.ephemeral
    assert "locked" in all_text(refused)
    # the refusal names the allowed channel without linking or pinging it
    assert "<#" not in all_text(refused) and "<!subteam" not in all_text(refused)


async def test_access_allowed_by_channel_or_group(
    runtime: RegistryOnly, extra_handlers: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install(extra_handlers, monkeypatch, "echo", "echo_cmd", ECHO_MODULE)
    by_channel = await run(runtime, Invocation("echo locked", channel_id="C0ALLOWED",
                                               source="slack"))
    by_group = await run(runtime, Invocation("echo locked", channel_id="C0OTHER",
                                             user_groups=("S0SRE",), source="slack"))
    refused = await run(runtime, Invocation("echo locked", channel_id="C0OTHER", source="slack"))
    assert by_channel.data == {"argv": ["locked"]}
    assert by_group.data == {"argv": ["locked"]}
    assert refused.error and refused.data is None


async def test_thread_service_fills_the_missing_service(
    runtime: RegistryOnly, extra_handlers: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install(extra_handlers, monkeypatch, "echo", "echo_cmd", ECHO_MODULE)
    bare = await run(runtime, Invocation(plain_text("<@U0BOT> echo"),
                                         thread_service="payments", source="mention"))
    with_args = await run(runtime, Invocation("echo since deploy", thread_service="payments"))
    explicit = await run(runtime, Invocation("echo pay 5", thread_service="locked"))
    assert bare.data == {"argv": ["payments"]}
    assert with_args.data == {"argv": ["payments", "since", "deploy"]}
    assert explicit.data == {"argv": ["payments", "5"]}  # alias resolved to its name
    assert bare.service == "payments"
    typo = await run(runtime, Invocation("echo paymnts", thread_service="locked"))
    assert typo.error and "Did you mean `payments`" in all_text(typo)


async def test_replies_never_ping_in_slack_and_show_as_typed_in_the_console(
    runtime: RegistryOnly, extra_handlers: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from io import StringIO

    from rich.console import Console

    install(extra_handlers, monkeypatch, "echo", "echo_cmd", ECHO_MODULE)
    reply = await run(runtime, Invocation("echo payments '<!channel>' '<@U0BOSS>' '<#C0GEN>' "
                                          "@here"))
    blocks_json = str(reply_to_blocks(reply)) + fallback_text(reply)
    for live in ("<!channel>", "<@U0BOSS>", "<#C0GEN>", "&lt;!channel&gt;"):
        assert live not in blocks_json, live
    assert "@\u200bhere" in blocks_json and "@here" not in blocks_json
    assert "@\u200bchannel" in blocks_json
    console = Console(file=StringIO(), width=200)
    print_reply(reply, console)
    shown = console.file.getvalue()
    assert "<!channel> <@U0BOSS> <#C0GEN> @here" in shown  # the console shows what was typed
    assert reply.sections[0].endswith("'<!channel>' '<@U0BOSS>' '<#C0GEN>' @here")


async def test_missing_and_broken_modules_fail_alone(
    runtime: RegistryOnly, extra_handlers: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setitem(handlers.COMMANDS, "ghost", "no_such_module_here")
    install(extra_handlers, monkeypatch, "broken", "broken_cmd", BROKEN_IMPORT_MODULE)
    install(extra_handlers, monkeypatch, "echo", "echo_cmd", ECHO_MODULE)
    ghost = await run(runtime, Invocation("ghost"))
    with caplog.at_level(logging.ERROR, logger="heapbot.handlers"):
        broken = await run(runtime, Invocation("broken payments"))
    still_fine = await run(runtime, Invocation("echo payments"))
    assert ghost.error and "not available" in all_text(ghost)
    assert broken.error and "failed to load" in all_text(broken)
    assert "this module is broken" in caplog.text  # the cause goes to the log only
    assert "this module is broken" not in all_text(broken)
    assert not still_fine.error


async def test_unexpected_exception_is_an_internal_error_with_an_id(
    runtime: RegistryOnly, extra_handlers: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    install(extra_handlers, monkeypatch, "crash", "crash_cmd", CRASHING_MODULE)
    with caplog.at_level(logging.ERROR, logger="heapbot.handlers"):
        reply = await run(runtime, Invocation("crash payments"))
    shown = all_text(reply)
    assert reply.error and "internal error (id " in shown
    error_id = shown.split("(id ")[1].split(")")[0]
    assert error_id in caplog.text and "Traceback" in caplog.text
    assert "boom" not in shown and "xoxb" not in shown and "Traceback" not in shown


def test_ack_text(runtime: RegistryOnly) -> None:
    assert ack_text(runtime, "top pay") == "capturing payments (3 instances)…"
    assert ack_text(runtime, "goroutines locked") == "capturing locked (1 instance)…"
    assert "payments" in ack_text(runtime, "diff payments since deploy")
    assert ack_text(runtime, "help").startswith("Here is")
    from types import SimpleNamespace

    from bot.slack.listeners.commands import ack_text_for

    slack_ack = ack_text_for(SimpleNamespace(runtime=runtime), plain_text("top <!channel>"))
    assert "<!channel>" not in slack_ack and "@\u200bchannel" in slack_ack
    assert ack_text(runtime, "top 'unbalanced")  # never raises
    stored = ack_text(runtime, "top pay --snapshot 20261121-233932-b8d9 --download")
    assert stored == "Loading a stored snapshot of payments…"  # nothing is captured


@pytest.mark.parametrize(("text", "says"), [
    ("top payments --type bogus", "not a heap sample type"),
    ("top payments many", "whole number"),
    ("top payments 10 20", "Unexpected argument"),
    ("top payments --focus '(unclosed'", "not a valid regular expression"),
    ("top payments --frobnicate", "Unknown option `--frobnicate`"),
    ("top payments --type", "needs a value"),
    ("diff payments since", "needs a reference"),
    ("diff payments since deploy extra", "Unexpected argument"),
    ("diff payments deploy --since 1h", "once"),
    ("goroutines payments -n -5", "whole number"),
    ("stats payments extra", "Unexpected argument"),
])
async def test_bad_arguments_get_the_usage_line(runtime: RegistryOnly, text: str,
                                                says: str) -> None:
    reply = await run(runtime, Invocation(text, source="slack", channel_id="C1"))
    shown = all_text(reply)
    assert reply.error and reply.ephemeral
    assert says in shown
    word = text.split()[0]
    assert f"Usage: `/heap {word} SERVICE" in shown
    assert "Traceback" not in shown


def test_since_reference_forms() -> None:
    from handlers.diff import since_ref

    assert since_ref(["p"], None) == "previous"
    assert since_ref(["p", "since", "deploy"], None) == "deploy"
    assert since_ref(["p", "1h"], None) == "1h"
    assert since_ref(["p"], "30m") == "30m"


def test_the_list_command_is_served_by_handlers_listing() -> None:
    """`/heap list` keeps its name; its module is handlers.listing (no shadowed builtin)."""
    from handlers import commands

    assert commands.load("list").__name__ == "handlers.listing"
    assert parse("list payments 'a b'") == handlers.ParsedCommand("list", ["payments", "a b"])
    assert parse("peek payments 'a b'").argv == ["payments", "a b"]
    with pytest.raises(UsageError) as err:
        parse("tpo")
    assert "`/heap top`" in err.value.user_message()


async def test_heapbots_own_runs_and_the_terminal_skip_the_allow_list(
    runtime: RegistryOnly, extra_handlers: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install(extra_handlers, monkeypatch, "echo", "echo_cmd", ECHO_MODULE)
    for source in ("alert", "watch", "console", "cli"):
        reply = await run(runtime, Invocation("echo locked", channel_id="C0OTHER", source=source))
        assert reply.data == {"argv": ["locked"]}, source
    for source in ("slack", "button", "mention"):
        reply = await run(runtime, Invocation("echo locked", channel_id="C0OTHER", source=source))
        assert reply.error, source
