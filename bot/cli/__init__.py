"""The `heapbot` command line.

Two families of commands share one parser:
- file commands (``heapbot top --profile FILE``) run the engine on local files;
- service commands (``heapbot top payments``) capture from the registry, store
  in Redis and answer through the same handlers as Slack.
Each subcommand names the function that runs it as "module:function"; the
module is imported only when the command runs, so ``heapbot top --profile``
starts fast and never touches Redis or Slack.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import os
import sys
from collections.abc import Callable, Sequence

from bot.errors import HeapbotError

Runner = Callable[[argparse.Namespace], int]

SAMPLE_TYPES = "inuse_space, inuse_objects, alloc_space, alloc_objects (heap) or goroutine"


def _add_report_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--type", dest="sample_type", metavar="T",
                   help=f"sample type: {SAMPLE_TYPES}; default: the profile's default")
    p.add_argument("--cum", action="store_true", help="sort by cumulative value (top -cum)")
    p.add_argument("-n", "--nodes", type=int, default=None, metavar="N",
                   help="rows to show (default 10 for text, every row for json; 0 = every row)")
    p.add_argument("--focus", metavar="RE", help="keep only samples with a frame matching RE")
    p.add_argument("--ignore", metavar="RE", help="drop samples with a frame matching RE")
    p.add_argument("--hide", metavar="RE", help="hide frames matching RE from the stacks")
    p.add_argument("--format", choices=("text", "json"), default="text")


FLAME_DEFAULT = ""  # `--flame` without OUT.png: the reply's own file names (see files.flame_out)


def _add_flame_option(p: argparse.ArgumentParser) -> None:
    # OUT is optional so that `heapbot top demo --snapshot ID --flame`, the slash command's
    # hint typed after `heapbot`, works as printed (one grammar).
    p.add_argument("--flame", metavar="OUT.png", nargs="?", const=FLAME_DEFAULT,
                   help="also draw a flame graph: writes OUT.png and OUT.svg (hover for "
                        "values); without OUT, next to the profile's name (file mode) or "
                        "under HEAPBOT_DATA_DIR/files (service mode)")


SERVICE_EPILOG = (
    "With a SERVICE, every word of `/heap {name}` works here too, written the same way "
    "(one grammar){example}. `heapbot help {name}` lists them."
)
# A true example per command for its --help (each is run by tests/cli/test_cli_help.py).
SERVICE_EXAMPLES = {
    "top": "heapbot top SERVICE --snapshot ID --download",
    "diff": "heapbot diff SERVICE since 1h --flame",
    "leaks": "heapbot leaks SERVICE --sample 3x30s",
    "capture": "heapbot capture SERVICE --gc",
    "memstats": "heapbot memstats SERVICE",
}
# /heap commands without a subcommand of their own: `heapbot help`, `heapbot watch …` run as
# `heapbot ask "/heap …"` (tests/cli/test_cli_help.py keeps this in step with handlers).
SLASH_ONLY = ("help", "watch", "unwatch", "watches")
TOP_EPILOG = (
    "`heapbot help` lists the /heap commands: each works here with the same words "
    "(`heapbot top demo --snapshot ID --download` is `/heap top demo --snapshot ID "
    "--download`; a `next:` hint pasted whole, `/heap` included, works too). "
    "`heapbot COMMAND --help` shows one command's options, file mode (--profile) included."
)
# Options only the CLI has: file mode (no slash command behind it) and the output format.
FILE_FLAGS = ("profile", "base", "file")


def _parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The parser, and each subcommand's parser (to print that command's usage on errors)."""
    parser = argparse.ArgumentParser(
        prog="heapbot",
        description="Go heap and goroutine profiling: pprof-exact tables, diffs and leak hunts.",
        epilog=TOP_EPILOG,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands: dict[str, argparse.ArgumentParser] = {}

    def add(name: str, runner: str, help_text: str) -> argparse.ArgumentParser:
        slash = name not in ("ask", "console", "serve", "store")
        example = SERVICE_EXAMPLES.get(name)
        p = sub.add_parser(name, help=help_text, description=help_text,
                           epilog=SERVICE_EPILOG.format(
                               name=_SLASH_NAME.get(name, name),
                               example=f": e.g. `{example}`" if example else "")
                           if slash else None)
        p.set_defaults(runner=runner)
        commands[name] = p
        return p

    p = add("top", "bot.cli.dispatch:top", "top table of a profile file or a live service")
    p.add_argument("service", nargs="?", help="registry service to capture (omit with --profile)")
    p.add_argument("--profile", metavar="FILE", help="a heap/goroutine profile (.pb.gz or raw)")
    _add_report_options(p)
    _add_flame_option(p)

    p = add("diff", "bot.cli.dispatch:diff", "difference between two profiles (pprof -diff_base)")
    p.add_argument("service", nargs="?", help="registry service (omit with --base/--profile)")
    p.add_argument("--base", metavar="OLD", help="the earlier profile file")
    p.add_argument("--profile", metavar="NEW", help="the later profile file")
    p.add_argument("--since", default="previous", metavar="REF",
                   help="service mode: previous | deploy | 1h | 30m | SNAPSHOT_ID")
    _add_report_options(p)
    _add_flame_option(p)

    p = add("peek", "bot.cli.dispatch:peek", "callers and callees of matching functions")
    p.add_argument("service", nargs="?")
    p.add_argument("regex", nargs="?", metavar="FUNC_RE")
    p.add_argument("--profile", metavar="FILE")
    _add_report_options(p)

    p = add("list", "bot.cli.dispatch:list_", "per-line values of matching functions")
    p.add_argument("service", nargs="?")
    p.add_argument("regex", nargs="?", metavar="FUNC_RE")
    p.add_argument("--profile", metavar="FILE")
    p.add_argument("--source-dir", metavar="DIR",
                   help="file mode: the checkout the binary was built from (shows source lines)")
    p.add_argument("--trim-prefix", action="append", metavar="PREFIX",
                   help="file mode: cut PREFIX off the profile's file paths (repeatable)")
    _add_report_options(p)

    p = add("goroutines", "bot.cli.dispatch:goroutines", "goroutine count and stack groups")
    p.add_argument("service", nargs="?")
    p.add_argument("--profile", metavar="FILE", help="goroutine profile: proto or ?debug=1 text")
    p.add_argument("-n", "--nodes", type=int, default=None, metavar="N")
    p.add_argument("--format", choices=("text", "json"), default="text")

    p = add("memstats", "bot.cli.dispatch:memstats", "runtime.MemStats from heap?debug=1")
    p.add_argument("service", nargs="?")
    p.add_argument("--profile", "--file", dest="file", metavar="FILE",
                   help="saved output of /debug/pprof/heap?debug=1 (--file works too)")
    p.add_argument("--format", choices=("text", "json"), default="text")

    p = add("leaks", "bot.cli.dispatch:leaks", "suspected leak sites over stored captures")
    p.add_argument("service")
    p.add_argument("--sample", metavar="NxDURATION", help="take N captures first, e.g. 3x30s")
    p.add_argument("--format", choices=("text", "json"), default="text")

    p = add("capture", "bot.cli.dispatch:capture", "capture a service now and store it")
    p.add_argument("service")
    p.add_argument("--force", action="store_true", help="ignore the per-service cooldown")
    p.add_argument("--format", choices=("text", "json"), default="text")

    p = add("history", "bot.cli.dispatch:history", "stored captures of a service")
    p.add_argument("service")
    p.add_argument("-n", "--limit", type=int, default=20)
    p.add_argument("--format", choices=("text", "json"), default="text")

    p = add("stats", "bot.cli.dispatch:stats", "MemStats of a live service and the change")
    p.add_argument("service")
    p.add_argument("--format", choices=("text", "json"), default="text")

    p = add("deploy", "bot.cli.dispatch:deploy", "record a deploy marker")
    p.add_argument("service")
    p.add_argument("version")
    p.add_argument("--format", choices=("text", "json"), default="text")

    p = add("services", "bot.cli.dispatch:services", "services in the registry")
    p.add_argument("--format", choices=("text", "json"), default="text")

    p = add("ask", "bot.cli.dispatch:ask", "run one /heap command in the terminal")
    p.add_argument("text", help='e.g. "/heap top demo"')

    p = add("store", "bot.cli.store:status",
            "the embedded redis-server of HEAPBOT_DATA_DIR: status, or stop it")
    store = p.add_subparsers(dest="store_command", metavar="ACTION")
    q = store.add_parser("status", help="is it running, its pid, version, and who uses it")
    q.set_defaults(runner="bot.cli.store:status")
    q.add_argument("--format", choices=("text", "json"), default="text")
    q = store.add_parser("stop", help="stop it (refused while a heapbot process uses it)")
    q.set_defaults(runner="bot.cli.store:stop")
    q.add_argument("--force", action="store_true", help="stop it even if in use")
    add("console", "bot.cli.dispatch:console", "a prompt for /heap commands, no Slack needed")
    add("serve", "bot.cli.dispatch:serve", "run the Slack bot (HTTP or Socket Mode)")
    return parser, commands


_SLASH_NAME = {"memstats": "stats"}  # CLI subcommands whose slash command has another name


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line; in service mode, unknown words go to the slash command.

    ``heapbot top demo --snapshot ID --download`` is ``/heap top demo --snapshot ID
    --download``: the handler's own grammar decides (``args.extra``). In file mode
    and for ask/console/serve an unknown word is an error with that command's usage.
    """
    parser, commands = _parser()
    words = slash_words(sys.argv[1:] if argv is None else argv)
    if not words:  # bare `heapbot`: what it can do, not only "COMMAND is required"
        parser.print_help(sys.stderr)
        sys.exit(2)
    if not words[0].startswith("-") and words[0] not in commands:
        words[0] = _known_command(parser, words[0], commands)
    args, extra = parser.parse_known_args(words)
    args.extra = []
    if extra:
        file_mode = any(getattr(args, flag, None) for flag in FILE_FLAGS)
        if file_mode or args.command in ("ask", "console", "serve"):
            command = commands[args.command]
            command.error(f"unrecognized arguments: {' '.join(extra)}"
                          + _closest_option(command, extra))
        args.extra = extra
    return args


def slash_words(argv: Sequence[str]) -> list[str]:
    """A /heap command typed after `heapbot` as printed: `/heap top demo` is `top demo`.

    ``heapbot help [COMMAND]`` and the watch commands have no subcommand of their own:
    they run as ``heapbot ask "/heap …"``, so every word of the help works in the CLI.
    """
    words = list(argv)
    if words[:1] == ["/heap"]:  # a `next:` hint pasted whole
        words = words[1:]
    if words and words[0].lstrip("/") in SLASH_ONLY:
        import shlex

        return ["ask", shlex.join(["/heap", words[0].lstrip("/"), *words[1:]])]
    return words


def _closest_option(parser: argparse.ArgumentParser, words: Sequence[str]) -> str:
    """". Did you mean `--focus`?" for `--fcous`, from the subcommand's own options.

    The slash grammar's rule (:func:`handlers._common.closest_option`): the same typo
    gets the same fix in `heapbot top --profile F` as in `/heap top demo`. Imported on
    this error path only, so a right command starts no slower.
    """
    from handlers._common import did_you_mean_option

    known = [o for action in parser._actions for o in action.option_strings]
    for word in words:
        if (hint := did_you_mean_option(word, known)):
            return "." + hint
    return ""


def _known_command(parser: argparse.ArgumentParser, word: str,
                   commands: dict[str, argparse.ArgumentParser]) -> str:
    """A slash alias (`leak`, `gr`, `hist`) as its subcommand, or a did-you-mean error.

    Only on this path is handlers' command table read, so a right command starts no slower.
    """
    import difflib

    from handlers.commands import ALIASES, canonical

    name = canonical(word)
    if name in commands:
        return name
    close = difflib.get_close_matches(word.lower(), [*commands, *SLASH_ONLY, *ALIASES], n=1,
                                      cutoff=0.6)
    guess = f" Did you mean `heapbot {canonical(close[0])}`?" if close else ""
    parser.error(f"heapbot has no command `{word[:40]}`.{guess} `heapbot --help` lists them.")


def _resolve(spec: str) -> Runner:
    module_name, _, func_name = spec.partition(":")
    return getattr(importlib.import_module(module_name), func_name)


def one_malloc_arena() -> None:
    """Ask glibc for one malloc arena in this process (unless MALLOC_ARENA_MAX is set).

    The engine's numpy arrays are made in whichever thread decodes or folds; with an
    arena per thread, memory freed in one is not reused by the next, and a 40-instance
    capture decoded in threads peaked at ~270 MB instead of ~225 MB (bench/fanout). The
    GIL serialises the allocations anyway, so one arena costs no speed. Called before
    any thread starts; a no-op where there is no glibc ``mallopt``.
    """
    if sys.platform != "linux" or os.environ.get("MALLOC_ARENA_MAX"):
        return
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).mallopt(-8, 1)  # M_ARENA_MAX


def startup_done() -> None:
    """Turn the cyclic GC back on once the command's modules are loaded (see main).

    The ~300k objects import makes live as long as the process; collecting over them
    while they load cost a quarter of a warm `heapbot services` (0.49 vs 0.38 s). Frozen, they
    stay out of every later collection too (as in long-running servers).
    """
    if not gc.isenabled():
        gc.freeze()
        gc.enable()


def main(argv: Sequence[str] | None = None) -> int:
    one_malloc_arena()  # before any thread allocates (`heapbot serve` too)
    gc.disable()  # until the command's modules are loaded: startup_done()
    try:
        args = parse(argv)
        runner = _resolve(args.runner)
        if not args.runner.startswith("bot.cli.dispatch:"):
            startup_done()  # dispatch ends start-up itself, once it knows the module
        return runner(args)
    except HeapbotError as exc:
        print(f"heapbot: {exc.user_message()}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    finally:
        startup_done()  # whatever ended the command (a usage error too), the GC is back on


if __name__ == "__main__":
    sys.exit(main())
