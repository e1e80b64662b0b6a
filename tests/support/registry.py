"""heapbot.yaml files for tests and benchmarks: services, their targets, further keys."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path


def write_registry(path: Path, services: Mapping[str, Sequence[str]], **keys: object) -> Path:
    """Write ``path``: every service with its targets and the same further registry ``keys``
    (lists as YAML flow lists, everything else as it reads, e.g. cooldown_seconds=0)."""
    lines = ["services:"]
    for name, targets in services.items():
        lines += [f"  {name}:", f"    targets: {json.dumps(list(targets))}"]
        lines += [f"    {key}: {json.dumps(value) if isinstance(value, list) else value}"
                  for key, value in keys.items()]
    path.write_text("\n".join(lines) + "\n")
    return path
