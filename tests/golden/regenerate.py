"""Regenerate tests/golden/*.txt from `go tool pprof` on tests/fixtures.

Run after the fixtures change:  .venv/bin/python tests/golden/regenerate.py
Each file is pprof's -top output with -unit=B -nodefraction=0 -edgefraction=0
(every value an integer) plus the case's flags; the header lines that name the
build or the capture time are dropped so the files only change when numbers do.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.golden.pprof_tool import CASES, REAL_GO_CASES, run_pprof

_VOLATILE = ("File:", "Build ID:", "Time:", "Duration:")


def main() -> int:
    for case in [*CASES, *REAL_GO_CASES]:
        text = run_pprof(case.pprof_args())
        kept = [ln for ln in text.splitlines() if not ln.startswith(_VOLATILE)]
        case.golden_path().write_text("\n".join(kept) + "\n")
        print(case.golden_path().name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
