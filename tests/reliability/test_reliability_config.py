"""A broken registry file stops `heapbot` at start with one line naming file, service, key.

Runs the real CLI (``python -m bot``) as a child process, as an operator would,
so the check covers what reaches the terminal: one message, no traceback.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

BROKEN = [
    ("bad-target", "services:\n  payments:\n    targets: [\"ftp://10.0.0.5:6060\"]\n",
     ("heapbot.yaml", "payments", "targets[0]")),
    ("unknown-key", "services:\n  payments:\n    targets: [\"http://a:1\"]\n    timeout: 5\n",
     ("heapbot.yaml", "payments", "timeout")),
    ("bad-type", "services:\n  payments:\n    targets: [\"http://a:1\"]\n"
     "    timeout_seconds: soon\n", ("heapbot.yaml", "payments", "timeout_seconds")),
    ("not-yaml", "services:\n  payments: [\n", ("heapbot.yaml", "line")),
    ("secret-pasted", "services:\n  payments:\n    targets: [\"http://a:1\"]\n"
     "    auth_header_env: \"Bearer hunter2-secret\"\n",
     ("heapbot.yaml", "payments", "auth_header_env")),
    ("duplicate-alias", "services:\n  payments:\n    targets: [\"http://a:1\"]\n"
     "    aliases: [pay]\n  pay:\n    targets: [\"http://b:1\"]\n",
     ("heapbot.yaml", "pay")),
]


@pytest.mark.parametrize(("case", "text", "names"), BROKEN, ids=[b[0] for b in BROKEN])
def test_broken_registry_is_one_clear_line_at_start(tmp_path: Path, case: str, text: str,
                                                    names: tuple[str, ...]) -> None:
    registry = tmp_path / "heapbot.yaml"
    registry.write_text(text)
    env = {**os.environ, "HEAPBOT_CONFIG": str(registry),
           "HEAPBOT_DATA_DIR": str(tmp_path / "data"), "REDIS_URL": "redis://127.0.0.1:9/0"}
    done = subprocess.run([sys.executable, "-m", "bot", "services"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode != 0, done.stdout
    err = done.stderr.strip()
    assert "Traceback" not in err, err
    for name in names:
        assert name in err, (case, err)
    assert "hunter2" not in err + done.stdout  # a pasted secret is never echoed
    assert len(err.splitlines()) <= 3, err
