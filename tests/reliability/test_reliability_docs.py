"""docs/RELIABILITY.md stays in sync with the cases the tests really run.

Every case id of the parametrized tables and every test function of the
reliability, security and fuzz suites must appear on the page, and every test
the page names must exist somewhere under tests/.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

TESTS = Path(__file__).parents[1]
DOC = (TESTS.parent / "docs" / "RELIABILITY.md").read_text(encoding="utf-8")
SUITES = sorted([*TESTS.rglob("test_reliability_*.py"), *TESTS.rglob("test_security_*.py"),
                 *TESTS.rglob("test_fuzz_*.py")])


def _test_functions(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [node.name for node in tree.body
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            and node.name.startswith("test_")]


def test_every_case_id_is_documented() -> None:
    from tests.reliability.test_reliability_config import BROKEN
    from tests.reliability.test_reliability_endpoints import CASES as ENDPOINTS
    from tests.reliability.test_reliability_profiles import CASES as PROFILES
    from tests.security.test_security_webhooks import BAD_BODIES

    ids = [c.case_id for c in ENDPOINTS] + [c.case_id for c in PROFILES] \
        + [b[0] for b in BAD_BODIES] + [b[0] for b in BROKEN]
    missing = [case for case in ids if f"`{case}`" not in DOC]
    assert missing == [], f"add these cases to docs/RELIABILITY.md: {missing}"


def test_every_test_of_the_suites_is_documented() -> None:
    missing = [f"{path.name}::{name}" for path in SUITES for name in _test_functions(path)
               if name not in DOC and path.name != "test_reliability_docs.py"]
    assert missing == [], f"add these tests to docs/RELIABILITY.md: {missing}"


def test_every_test_the_page_names_exists() -> None:
    everywhere = {name for path in TESTS.rglob("test_*.py") for name in _test_functions(path)}
    named = set(re.findall(r"`(test_[a-z0-9_]+)`", DOC))
    assert named - everywhere == set()
