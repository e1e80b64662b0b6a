"""Installing heapbot prints no setuptools deprecation block, and ships its license (issue 15.9)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_metadata_has_an_spdx_license_and_builds_without_deprecation_warnings(
        tmp_path: Path) -> None:
    script = ("import setuptools.build_meta as b, sys; "
              "print(b.prepare_metadata_for_build_wheel(sys.argv[1]))")
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "deprecat" not in (done.stdout + done.stderr).lower()
    metadata = (tmp_path / done.stdout.split()[-1] / "METADATA").read_text()
    assert "License-Expression: Apache-2.0" in metadata
    assert "License-File: LICENSE" in metadata
    assert (REPO_ROOT / "LICENSE").read_text().lstrip().startswith("Apache License")


def test_the_editable_install_of_make_setup_prints_no_notice(tmp_path: Path) -> None:
    # `pip install -e .` builds this: with the packages at the checkout's top level declared
    # (package-dir), it is a plain .pth entry, without setuptools' "Editable installation …
    # be careful with folders …" block at every `make setup`.
    script = ("import setuptools.build_meta as b, sys; "
              "print(b.build_editable(sys.argv[1]))")
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    output = done.stdout + done.stderr
    assert "be careful with folders" not in output and "meta path finder" not in output
    assert done.stdout.split()[-1].endswith(".whl")
