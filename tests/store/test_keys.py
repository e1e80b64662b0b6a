"""Redis Cluster guard: keys used together land in one slot, and every key comes from bot.keys.

A Cluster refuses a MULTI/EXEC or script whose keys are in different slots
(CROSSSLOT). These tests fail when a new key pattern would break that: a builder
added to a group with another hash tag, or a ``heapbot:`` key spelled outside
bot/keys.py (where no group would check it).
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest
from redis.crc import key_slot

from bot import keys

REPO = Path(__file__).resolve().parents[2]
NAMES = ["payments", "a", "svc-with-dashes", "ns:name", "üñí", "x" * 200, "pay{ments", "9"]


def _build(builder: object, name: str) -> str:
    params = inspect.signature(builder).parameters  # type: ignore[arg-type]
    args = [name, "20261121-224512-a3f9", "1700000000"][: len(params)]
    return builder(*args)  # type: ignore[operator]


@pytest.mark.parametrize("group", list(keys.MULTI_KEY_GROUPS), ids=list(keys.MULTI_KEY_GROUPS))
def test_keys_used_together_share_one_cluster_slot(group: str) -> None:
    builders = keys.MULTI_KEY_GROUPS[group]
    for name in NAMES:
        built = [_build(b, name) for b in builders]
        slots = {k: key_slot(k.encode()) for k in built}
        assert len(set(slots.values())) == 1, (group, name, slots)


def test_different_services_spread_over_slots() -> None:
    slots = {key_slot(keys.snapshot_index(f"svc{i}").encode()) for i in range(50)}
    assert len(slots) > 40  # a tag per service, not one tag for all


def _heapbot_literals(path: Path) -> list[str]:
    """String constants (and f-string parts) starting with ``heapbot:`` in a module."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.JoinedStr) and node.values:
            first = node.values[0]
            if isinstance(first, ast.Constant) and str(first.value).startswith("heapbot:") \
                    and " " not in str(first.value):
                found.append(f"{path.relative_to(REPO)}:{node.lineno}")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and node.value.startswith("heapbot:") and " " not in node.value:
            found.append(f"{path.relative_to(REPO)}:{node.lineno}")
    return found


def test_no_module_spells_a_redis_key_outside_bot_keys() -> None:
    sources = [p for d in ("bot", "handlers") for p in (REPO / d).rglob("*.py")
               if p != REPO / "bot" / "keys.py"]
    found = [hit for path in sources for hit in _heapbot_literals(path)]
    assert found == [], f"build these Redis keys in bot/keys.py (and group them): {found}"


def test_unwatch_deletes_every_key_a_watch_owns() -> None:
    """Each per-watch key builder is in keys.watch_keys, which the unwatch script deletes (the
    tick log it gives a TTL): a new key of a watch cannot be forgotten there (an `ok-streak:`
    key once outlived it)."""
    builders = [name for name, value in vars(keys).items()
                if name.startswith("watch_") and name != "watch_keys" and callable(value)]
    assert len(builders) >= 6
    owned = {*keys.watch_keys("payments"), keys.watch_ticks("payments")}
    assert [b for b in builders if getattr(keys, b)("payments") not in owned] == []
