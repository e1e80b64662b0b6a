"""What a new user types first: `heapbot help`, a hint pasted whole, each `--help`.

Real ``python -m bot`` processes (no service needed: help and the registry-less
commands answer without capturing); what is asserted is what the terminal shows.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest

import handlers
from bot.cli import SERVICE_EXAMPLES, SLASH_ONLY, _parser, parse
from bot.cli.chat import command_argv
from bot.errors import HeapbotError
from handlers import commands

ROOT = Path(__file__).resolve().parents[2]


def heapbot(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """`heapbot ARGS` run in ``cwd``; its registry and data dir (when any) live there too."""
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "HEAPBOT_CONFIG")}
    env.update(NO_COLOR="1", HEAPBOT_DATA_DIR=str(cwd / "data"),
               HEAPBOT_CONFIG=str(cwd / "heapbot.yaml"))
    return subprocess.run([sys.executable, "-m", "bot", *args], capture_output=True,
                          text=True, timeout=120, cwd=cwd, env=env, check=False)


def test_heapbot_help_lists_the_commands_and_explains_one(tmp_path: Path) -> None:
    listed = heapbot("help", cwd=tmp_path)
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert "/heap top SERVICE" in listed.stdout and "/heap leaks SERVICE" in listed.stdout
    one = heapbot("help", "diff", cwd=tmp_path)
    assert one.returncode == 0 and "/heap diff SERVICE [since previous" in one.stdout
    # the same, pasted as the replies print it
    pasted = heapbot("/heap", "help", "diff", cwd=tmp_path)
    assert pasted.stdout == one.stdout
    # help reads nothing stored: no embedded redis-server was started for it
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("command", sorted(commands.NO_RUNTIME_COMMANDS))
def test_commands_run_without_a_runtime_are_typed_to_take_none(command: str) -> None:
    """`heapbot help` passes no Runtime: its handler says so in its type (mypy then refuses
    a dereference), and it answers with none."""
    handler = commands.offline_handler_of(commands.load(command), command)
    annotation = inspect.signature(handler).parameters["runtime"].annotation
    assert annotation.replace(" ", "") in ("Runtime|None", "None|Runtime", "Optional[Runtime]")
    reply = asyncio.run(handlers.run(None, handlers.Invocation(text=command)))
    assert not reply.error and reply.title


def test_a_command_that_needs_a_runtime_is_refused_without_one() -> None:
    """Should a surface run `/heap top` with no Runtime, the user reads why, not a crash."""
    reply = asyncio.run(handlers.run(None, handlers.Invocation(text="top demo")))
    assert reply.error
    said = " ".join(reply.sections) + reply.title
    assert "needs heapbot's registry and store" in said and "internal error" not in said


def test_top_help_names_every_option_the_next_hints_use(tmp_path: Path) -> None:
    shown = heapbot("help", "top", cwd=tmp_path).stdout
    for option in ("--snapshot", "--download", "--per-instance", "--flame", "--ignore",
                   "--hide", "--force", "--gc"):
        assert option in shown, option


def test_a_typo_in_an_option_gets_the_fix(tmp_path: Path) -> None:
    (tmp_path / "heapbot.yaml").write_text(  # refused before any capture: no service needed
        'services:\n  demo:\n    targets: ["http://127.0.0.1:9"]\n')
    typo = heapbot("ask", "/heap top demo --fcous main", cwd=tmp_path)
    assert typo.returncode == 2
    assert "Unknown option `--fcous`. Did you mean `--focus`?" in typo.stdout
    nonsense = heapbot("ask", "/heap top demo --bogus", cwd=tmp_path)
    assert "Unknown option `--bogus`. Usage:" in nonsense.stdout  # no far-fetched guess


FIXTURE = ROOT / "tests" / "fixtures" / "heap_1.pb.gz"


def _cli_says(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit):
        parse(list(argv))
    return capsys.readouterr().err


def _slash_says(text: str) -> str:
    parsed = handlers.parse(text)
    check = commands.checker_of(commands.load(parsed.command), parsed.command)
    assert check is not None
    with pytest.raises(HeapbotError) as err:
        check(parsed.argv)
    return err.value.user_message()


@pytest.mark.parametrize(("typo", "fix"), [
    ("--fcous", "--focus"), ("--ignroe", "--ignore"), ("--hdie", "--hide"),
    ("--cmu", "--cum"), ("--nodse", "--nodes"), ("--tpye", "--type"),
    ("--fcous=main", "--focus"), ("--bogus", None),
])
def test_the_cli_and_the_slash_grammar_suggest_the_same_fix(
        capsys: pytest.CaptureFixture[str], typo: str, fix: str | None) -> None:
    """One did-you-mean rule (handlers._common.closest_option) for argparse and /heap."""
    cli = _cli_says(capsys, "top", "--profile", str(FIXTURE), typo)
    slash = _slash_says(f"/heap top demo {typo}")
    name = typo.split("=")[0]
    assert f"unrecognized arguments: {typo}" in cli
    assert f"Unknown option `{name}`." in slash
    if fix is None:
        assert "Did you mean" not in cli + slash
    else:
        assert f"Did you mean `{fix}`?" in cli and f"Did you mean `{fix}`?" in slash


def test_slash_only_commands_are_the_ones_without_a_subcommand() -> None:
    _, subcommands = _parser()
    assert set(SLASH_ONLY) == set(commands.COMMANDS) - set(subcommands)
    for word in SLASH_ONLY:  # each runs as `heapbot ask "/heap WORD …"`
        args = parse([word, "demo"] if word != "watches" and word != "help" else [word])
        assert args.command == "ask" and args.text.startswith(f"/heap {word}")


@pytest.mark.parametrize("name", sorted(SERVICE_EXAMPLES))
def test_each_help_example_is_a_command_the_slash_grammar_takes(name: str,
                                                               tmp_path: Path) -> None:
    example = SERVICE_EXAMPLES[name].replace("SERVICE", "demo").replace(
        "ID", "20261129-230252-240d").split()[1:]
    args = parse(example)
    words = command_argv(args)
    checker = commands.checker_of(commands.load(words[0]), words[0])
    assert checker is not None
    checker(words[1:])  # raises UsageError if the example were not valid
    shown = heapbot(name, "--help", cwd=tmp_path).stdout
    assert " ".join(SERVICE_EXAMPLES[name].split()) in " ".join(shown.split())


def test_store_help_does_not_pretend_to_be_a_slash_command(tmp_path: Path) -> None:
    shown = heapbot("store", "--help", cwd=tmp_path).stdout
    assert "SERVICE" not in shown and "/heap" not in shown


def test_top_level_help_points_to_heapbot_help(tmp_path: Path) -> None:
    shown = " ".join(heapbot("--help", cwd=tmp_path).stdout.split())
    assert "`heapbot help` lists the /heap commands" in shown
    assert handlers.COMMANDS  # the list it points to is not empty


def test_file_mode_flame_without_a_path_writes_next_to_the_profile_name(tmp_path: Path) -> None:
    fixture = ROOT / "tests" / "fixtures" / "heap_2.pb.gz"
    done = heapbot("top", "--profile", str(fixture), "-n", "3", "--flame", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "flame graph written to heap_2-flame.png and heap_2-flame.svg" in done.stderr
    assert (tmp_path / "heap_2-flame.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "main.cacheBuildEntry" in (tmp_path / "heap_2-flame.svg").read_text()


def test_bare_heapbot_and_a_mistyped_command_say_what_exists(tmp_path: Path) -> None:
    bare = heapbot(cwd=tmp_path)
    assert bare.returncode == 2 and "console   a prompt for /heap commands" in bare.stderr
    typo = heapbot("tpo", "demo", cwd=tmp_path)
    assert typo.returncode == 2
    assert "heapbot has no command `tpo`. Did you mean `heapbot top`?" in typo.stderr
    # the slash command's aliases are the CLI's too
    alias = heapbot("hist", "--help", cwd=tmp_path)
    assert alias.returncode == 0 and "usage: heapbot history" in alias.stdout


def test_diff_since_without_a_reference_is_refused_as_the_slash_command_does(
        tmp_path: Path) -> None:
    done = heapbot("diff", "demo", "since", cwd=tmp_path)
    assert done.returncode == 2 and "`since` needs a reference." in done.stderr
    assert not (tmp_path / "data").exists()  # refused before anything was opened
