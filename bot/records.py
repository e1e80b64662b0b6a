"""One way to turn heapbot's dataclasses into Redis values and back.

Incidents are Redis hashes (one field per attribute, so a step can update one
field), watches and deploy markers are JSON members of a hash or sorted set,
snapshot metadata is JSON with nested instances. Each had its own converter;
they all go through here now:

- :func:`to_hash` / :func:`from_hash`: a flat dataclass ↔ ``HSET`` mapping of
  strings (lists, dicts and nested dataclasses as JSON, ``None`` as an absent field);
- :func:`to_json` / :func:`from_json`: a dataclass ↔ one JSON string;
- :func:`from_dict`: a dataclass from a decoded JSON object, nested dataclasses
  (and lists of them) included.

Reading is tolerant the way stored data must be: unknown keys (written by a
newer heapbot) are ignored, missing ones take the field's default, and values
are converted to the field's declared type (a hash stores only strings).
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Mapping
from functools import cache
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")  # a record type: a dataclass


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes | bytearray) else str(value)


def _plain(value: Any) -> Any:
    """JSON-ready form of a field value (nested dataclasses as dicts)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def _convert(tp: Any, value: Any) -> Any:
    """``value`` (decoded JSON, or a hash's string) as type ``tp``."""
    if value is None:
        return None
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _convert(args[0], value) if len(args) == 1 else value
    if isinstance(value, bytes | bytearray):
        value = value.decode()
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return from_dict(tp, json.loads(value) if isinstance(value, str) else value)
    if origin in (list, tuple) or tp in (list, tuple):
        items = json.loads(value) if isinstance(value, str) else value
        params = typing.get_args(tp)
        inner = params[0] if params else Any
        out = [_convert(inner, v) for v in items]
        return tuple(out) if (origin or tp) is tuple else out
    if origin is dict or tp is dict:
        items = json.loads(value) if isinstance(value, str) else value
        params = typing.get_args(tp)
        inner = params[1] if len(params) == 2 else Any
        return {str(k): _convert(inner, v) for k, v in items.items()}
    if tp is bool:
        return value if isinstance(value, bool) else _text(value).lower() in ("1", "true", "yes")
    if tp in (int, float):
        return tp(float(value)) if tp is int and isinstance(value, str) and "." in value \
            else tp(value)
    if tp is str:
        return _text(value)
    return value


def from_dict(cls: type[T], data: Mapping[str, Any]) -> T:
    """A ``cls`` from a mapping, converting each known key to its field's type."""
    hints = _hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        if f.name in data:
            values[f.name] = _convert(hints[f.name], data[f.name])
    return cls(**values)


def to_dict(obj: Any) -> dict[str, Any]:
    """A dataclass as a JSON-ready dict (nested dataclasses included)."""
    return _plain(obj)


def to_json(obj: Any) -> str:
    """A dataclass as one JSON string (keys sorted, so equal records are equal strings)."""
    return json.dumps(_plain(obj), sort_keys=True)


def from_json(cls: type[T], text: str | bytes) -> T:
    """A ``cls`` from :func:`to_json`'s output."""
    return from_dict(cls, json.loads(text))


def to_hash(obj: Any) -> dict[str, str]:
    """A dataclass as an ``HSET`` mapping: str/int/float as text, the rest as JSON."""
    out: dict[str, str] = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if value is None:
            continue
        if isinstance(value, bool):
            out[f.name] = "1" if value else "0"
        elif isinstance(value, str | int | float):
            out[f.name] = str(value)
        else:
            out[f.name] = json.dumps(_plain(value), sort_keys=True)
    return out


def from_hash(cls: type[T], data: Mapping[Any, Any]) -> T:
    """A ``cls`` from ``HGETALL`` (bytes or str keys and values)."""
    return from_dict(cls, {_text(k): v for k, v in data.items()})
