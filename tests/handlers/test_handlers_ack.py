"""The instant ack names what is wrong with a command, with the same words as its answer.

Slack shows the ack within 3 s, before any capture. A command with bad arguments
must not be acked "capturing demo (2 instances)…" and only then refused: the ack
runs the handler's own validation (``handlers.check_arguments`` → each module's
``check(argv)``) and says what is wrong and how the command is used. These tests
compare the ack with what ``handlers.run`` answers for the same text, so both
must come from one piece of code.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.registry import load_registry
from handlers import Invocation, ack_text, run, usage_of

REGISTRY_YAML = """
services:
  payments:
    targets: ["http://127.0.0.1:1", "http://127.0.0.1:2", "http://127.0.0.1:3"]
    aliases: [pay]
  single:
    targets: ["http://127.0.0.1:4"]
"""


class RegistryOnly:
    """A Runtime with a registry and nothing else: an attempted capture would fail loudly."""

    def __init__(self, path: Path) -> None:
        self.registry = load_registry(path)


@pytest.fixture
def runtime(tmp_path: Path) -> RegistryOnly:
    path = tmp_path / "heapbot.yaml"
    path.write_text(REGISTRY_YAML)
    return RegistryOnly(path)


# (text, command whose usage the ack shows, words that name the problem)
INVALID = [
    ("top payments --bogus", "top", "Unknown option `--bogus`"),
    ("top payments --type", "top", "`--type` needs a value"),
    ("top payments many", "top", "must be a whole number of rows, not `many`"),
    ("top payments -n 1234567", "top", "whole number of rows"),
    ("top payments --focus '(unclosed'", "top", "not a valid regular expression"),
    ("top payments --type inuse_bogus", "top", "`inuse_bogus` is not a heap sample type"),
    ("top payments 5 6", "top", "Unexpected argument `6`"),
    ("top", "top", "`/heap top` needs a SERVICE"),
    ("top --cum", "top", "`/heap top` needs a SERVICE"),
    ("top payments --snapshot yesterday", "top", "`--snapshot yesterday` is not a snapshot id"),
    ("diff payments since", "diff", "`since` needs a reference"),
    ("diff payments since tuesday", "diff", "`since tuesday` is not something heapbot"),
    ("diff payments --frobnicate", "diff", "Unknown option `--frobnicate`"),
    ("diff payments --hide '[a-'", "diff", "not a valid regular expression"),
    ("diff payments -t alloc", "diff", "`alloc` is not a heap sample type"),
    ("diff", "diff", "`/heap diff` needs a SERVICE"),
    ("goroutines payments lots", "goroutines", "whole number of rows, not `lots`"),
    ("goroutines payments -n", "goroutines", "`-n` needs a value"),
    ("stats payments extra", "stats", "Unexpected argument `extra`"),
    ("stats", "stats", "`/heap stats` needs a SERVICE"),
    ("capture payments --now", "capture", "Unknown option `--now`"),
    ("history payments --limit ten", "history", "whole number of rows, not `ten`"),
    ("peek payments", "peek", "Give a FUNC_RE"),
    ("peek payments '(main'", "peek", "not a valid function regex"),
    ("list payments main --type bytes", "list", "`bytes` is not a heap sample type"),
    ("deploy payments", "deploy", "Some arguments are missing"),
    ("leaks payments --sample 1x30s", "leaks", "--sample takes 2 to"),
    ("leaks payments --sample", "leaks", "`--sample` needs a value"),
    ("services payments", "services", "Unexpected argument `payments`"),
    ("watch payments", "watch", "Say how often, e.g. `every 15m`"),
    ("watch payments every 15m --goroutines x", "watch", "`--goroutines` needs a whole number"),
]


@pytest.mark.parametrize(("text", "command", "problem"), INVALID, ids=[c[0] for c in INVALID])
async def test_the_ack_names_the_problem_and_the_usage(runtime: RegistryOnly, text: str,
                                                       command: str, problem: str) -> None:
    ack = ack_text(runtime, text)
    assert problem in ack
    assert "capturing" not in ack.lower() and "…" not in ack
    usage = usage_of(command)
    # the usage line, or for a bad reference the references heapbot understands
    assert any(hint in ack for hint in (f"Usage: `{usage}`", "Use previous, deploy, a duration",
                                        "`/heap history payments` lists the stored ones"))
    # The answer that follows says exactly the same: one validation, not two.
    reply = await run(runtime, Invocation(text, source="slack"))
    assert reply.error
    assert reply.sections == [ack]


def test_the_usage_line_is_the_commands_own(runtime: RegistryOnly) -> None:
    ack = ack_text(runtime, "top payments --bogus")
    assert ack == ("Unknown option `--bogus`. Usage: `" + usage_of("top") + "`")


async def test_an_unknown_service_is_named_with_did_you_mean(runtime: RegistryOnly) -> None:
    ack = ack_text(runtime, "top paymnts")
    assert "no service called `paymnts`" in ack and "`payments`" in ack
    reply = await run(runtime, Invocation("top paymnts", source="slack"))
    assert reply.sections == [ack]


async def test_an_unreadable_command_is_named(runtime: RegistryOnly) -> None:
    for text, problem in [("top 'unbalanced", "no closing quotation"),
                          ("tpo payments", "no command `tpo`")]:
        ack = ack_text(runtime, text)
        assert problem in ack
        assert (await run(runtime, Invocation(text, source="slack"))).sections == [ack]


@pytest.mark.parametrize(("text", "expected"), [
    ("top payments", "capturing payments (3 instances)…"),
    ("top pay 20 --cum --type alloc_space --focus 'main\\.'", "capturing payments (3 instances)…"),
    ("top single -n 0 --download", "capturing single (1 instance)…"),
    ("diff payments since deploy --type inuse_objects", "capturing payments to compare (3 "
                                                        "instances)…"),
    ("diff pay 1h", "capturing payments to compare (3 instances)…"),
    ("goroutines single 5", "capturing single (1 instance)…"),
    ("stats payments", "reading MemStats of payments (3 instances)…"),
    ("capture payments --force", "capturing payments (3 instances)…"),
    ("peek payments 'main\\.handle' --type alloc_objects", "capturing payments (3 instances)…"),
    ("list single main", "capturing single (1 instance)…"),
    ("leaks payments --sample 3x30s", "checking payments for leaks (3 instances)…"),
    ("history payments 5", "Reading the stored history of payments…"),
    ("deploy payments v1.2.3", "Recording a deploy of payments…"),
    ("top pay --snapshot 20261121-233932-b8d9 --download", "Loading a stored snapshot of "
                                                           "payments…"),
    ("services", "Listing the services heapbot knows…"),
    ("help top", "Here is what heapbot can do…"),
])
def test_valid_commands_are_still_acked_with_what_happens_next(runtime: RegistryOnly,
                                                               text: str, expected: str) -> None:
    assert ack_text(runtime, text) == expected


def test_the_ack_cannot_ping_a_channel(runtime: RegistryOnly) -> None:
    """Slack's ack is made inert at the Slack edge (the handlers' ack text is plain)."""
    from types import SimpleNamespace

    from bot.slack.listeners.commands import ack_text_for
    from bot.slack.text import plain_text

    deps = SimpleNamespace(runtime=runtime)
    for text in ("top payments --<!channel>", "top <!here>", "top payments <!channel> 3"):
        ack = ack_text_for(deps, plain_text(text))
        assert "<!channel>" not in ack and "<!here>" not in ack
        assert "@channel" not in ack and "@here" not in ack
