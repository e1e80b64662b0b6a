"""Terminal output: whole function names and no trailing spaces, piped or not (issue 15.8)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from bot.render.terminal import output_console, print_reply
from bot.reply import Column, Reply, Table

REPO_ROOT = Path(__file__).resolve().parents[2]
LONG_NAMES = ["main.leakmapSetContext", "github.com/acme/payments/internal/ledger."
              "(*reconciliationWorker).applyPendingSettlementBatch.func1"]


def _reply() -> Reply:
    rows = [[f"{i}MB", f"{i}%", name] for i, name in enumerate(LONG_NAMES, 1)]
    return Reply(title="top demo", table=Table(
        [Column("flat"), Column("flat%"), Column("function", "left")], rows),
        sections=["a section long enough to wrap at eighty columns if anything wrapped it, "
                  "which piped output must not do"])


def test_piped_output_keeps_names_whole_and_has_no_trailing_spaces(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)
    out = io.StringIO()  # not a terminal, like `heapbot top demo | grep main.`
    console = output_console(out)
    print_reply(_reply(), console)
    console.file.flush()
    lines = out.getvalue().splitlines()
    for name in LONG_NAMES:
        assert any(name in line for line in lines), out.getvalue()
    assert [line for line in lines if line != line.rstrip()] == []


def test_a_table_wider_than_the_terminal_is_printed_whole() -> None:
    out = io.StringIO()
    console = Console(file=out, width=60, force_terminal=True, color_system=None)
    print_reply(_reply(), console)
    for name in LONG_NAMES:
        assert name in out.getvalue()


def test_piped_help_has_no_trailing_spaces_and_unbroken_usage(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "HEAPBOT_CONFIG")}
    env["HEAPBOT_DATA_DIR"] = str(tmp_path)
    result = subprocess.run([sys.executable, "-m", "bot", "ask", "help"], cwd=tmp_path,
                            env=env | {"PYTHONPATH": str(REPO_ROOT)}, capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line for line in lines if line.endswith(" ")] == []
    assert any("/heap diff SERVICE [since previous|deploy|1h|SNAPSHOT_ID]" in line
               and "snapshot id" in line for line in lines), result.stdout
