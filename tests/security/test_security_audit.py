"""`.ci/audit` judges pip-audit's JSON: a known vulnerability fails CI, an unreachable
vulnerability service does not. Reports are written in pip-audit's real JSON format
(``pip-audit -f json``) and judged by the script itself (``AUDIT_REPORT``); the live
run against the installed venv is the script's normal mode (slow, offline here)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def judge(tmp_path: Path, report: dict | str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "report.json"
    path.write_text(report if isinstance(report, str) else json.dumps(report))
    return subprocess.run([str(REPO / ".ci" / "audit")], env={**os.environ,
                          "AUDIT_REPORT": str(path)}, capture_output=True, text=True,
                          timeout=60, check=False)


def test_a_known_vulnerability_fails(tmp_path: Path) -> None:
    done = judge(tmp_path, {"dependencies": [
        {"name": "aiohttp", "version": "3.8.0", "vulns": [
            {"id": "GHSA-q3qx-c6g2-7pw2", "fix_versions": ["3.8.5"], "aliases": []}]},
        {"name": "httpx", "version": "0.28.1", "vulns": []},
    ], "fixes": []})
    assert done.returncode == 1, done.stdout
    assert "VULNERABLE aiohttp 3.8.0: GHSA-q3qx-c6g2-7pw2 (fixed in: 3.8.5)" in done.stdout
    assert "2 of 2 installed packages audited" in done.stdout


def test_clean_report_passes(tmp_path: Path) -> None:
    done = judge(tmp_path, {"dependencies": [{"name": "httpx", "version": "0.28.1",
                                              "vulns": []}], "fixes": []})
    assert done.returncode == 0 and "0 known vulnerabilities" in done.stdout


@pytest.mark.parametrize("report", [
    {"dependencies": [{"name": "httpx", "skip_reason": "Dependency not found on PyPI and "
                       "could not be audited: httpx (0.28.1)"}], "fixes": []},
    "",  # pip-audit died before writing its report (service unreachable, timeout)
])
def test_unreachable_service_warns_but_does_not_fail(tmp_path: Path, report: dict | str
                                                     ) -> None:
    done = judge(tmp_path, report)
    assert done.returncode == 0, done.stdout
    assert "WARNING" in done.stdout and "audit" in done.stdout
