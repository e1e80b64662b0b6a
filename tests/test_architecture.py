"""The house rules of issue 11 that a grep can check, next to the import-linter contracts.

``make test`` runs ``lint-imports`` (the layer order in pyproject.toml) and ``mypy``;
a layers contract only constrains the modules it names, so this checks that every
module of ``bot`` is named in it, and the rules the contracts cannot see: no
``except ImportError`` around heapbot's own modules, no attribute-guessing
adapters, no handler taking an untyped runtime.
"""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _layers() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    contract = next(c for c in config["tool"]["importlinter"]["contracts"]
                    if c["type"] == "layers")
    return [name.strip() for layer in contract["layers"] for name in re.split(r"[:|]", layer)]


def test_every_bot_module_has_a_layer() -> None:
    named = set(_layers())
    modules = {f"bot.{p.stem}" for p in (ROOT / "bot").glob("*.py") if p.stem != "__init__"}
    modules |= {f"bot.{p.parent.name}" for p in (ROOT / "bot").glob("*/__init__.py")}
    assert modules - named == set(), "add these to the layers contract in pyproject.toml"
    assert "handlers" in named


def _python_files() -> list[Path]:
    return [*(ROOT / "bot").rglob("*.py"), *(ROOT / "handlers").rglob("*.py")]


def test_no_import_error_guard_around_heapbots_own_modules() -> None:
    offenders = []
    for path in _python_files():
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Try):
                continue
            guarded = any(isinstance(h.type, ast.Name) and h.type.id in (
                "ImportError", "ModuleNotFoundError") for h in node.handlers)
            imports = [n for n in ast.walk(ast.Module(body=node.body, type_ignores=[]))
                       if isinstance(n, ast.Import | ast.ImportFrom)]
            own = [n for n in imports if (isinstance(n, ast.ImportFrom) and (n.module or "")
                                          .split(".")[0] in ("bot", "handlers"))
                   or (isinstance(n, ast.Import) and any(a.name.split(".")[0] in (
                       "bot", "handlers") for a in n.names))]
            if guarded and own:
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []


def test_no_attribute_guessing_adapters() -> None:
    pattern = re.compile(r"def (_first|snapshot_of|_optional|redis_of)\b")
    offenders = [str(p.relative_to(ROOT)) for p in _python_files()
                 if pattern.search(p.read_text())]
    assert offenders == []


def test_handlers_take_the_runtime_typed() -> None:
    """Every ``handle*`` coroutine in handlers/ annotates ``runtime: Runtime``; those of the
    commands run with no Runtime (``NO_RUNTIME_COMMANDS``: help) ``Runtime | None``."""
    from handlers.commands import COMMANDS, NO_RUNTIME_COMMANDS

    offline = {COMMANDS[c] for c in NO_RUNTIME_COMMANDS}
    seen = 0
    for path in (ROOT / "handlers").glob("*.py"):
        expected = "Runtime | None" if path.stem in offline else "Runtime"
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.AsyncFunctionDef) and node.name.startswith("handle"):
                first = node.args.args[0]
                assert first.arg == "runtime", f"{path.name}:{node.lineno}"
                assert ast.unparse(first.annotation or ast.Constant(None)) == expected, \
                    f"{path.name}:{node.lineno}"
                seen += 1
    assert seen >= 15
