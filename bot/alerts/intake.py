"""Webhook bodies to capped JSON: pure functions that may run in a worker process.

Parsing 1 MiB of JSON holds the GIL for 20-100 ms, and a thread does not help (the
decoder is C that never lets go). Large bodies are therefore parsed in bot.workpool's
process pool, and only the capped result (at most ``max_alerts`` alerts) comes back.
Nothing here imports aiohttp or the Runtime, so a worker process imports it quickly.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

IN_PROCESS_BYTES = 64 * 1024  # smaller bodies parse faster than a round trip to a worker


class BodyError(ValueError):
    """The body is not JSON heapbot can read; the message is for the sender."""


def parse_json(body: bytes) -> Any:
    """The body as JSON; BodyError with one sentence when it is not."""
    if not body.strip():
        raise BodyError("The body is empty; send a JSON object.")
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BodyError(f"The body is not valid JSON ({exc.__class__.__name__} "
                        f"at position {getattr(exc, 'pos', '?')}).") from None
    except ValueError:  # e.g. an integer of more than 4,300 digits (int-string limit)
        raise BodyError("The body is not valid JSON for heapbot: it holds a number too "
                        "long to read.") from None
    except RecursionError:  # "[[[[…" a few thousand deep blows the decoder's stack
        raise BodyError("The body is not valid JSON for heapbot: it nests too "
                        "deeply.") from None


def cap_alerts(data: Any, max_alerts: int, max_labels: int) -> tuple[Any, dict[str, int]]:
    """The payload with at most ``max_alerts`` alerts of ``max_labels`` labels each.

    Cut before validation, so an 8,000-alert body costs what 200 alerts cost. Returns
    what was left out, for the answer (Alertmanager itself sends ``truncatedAlerts``).
    """
    if not isinstance(data, dict) or not isinstance(data.get("alerts"), list):
        return data, {}
    alerts = data["alerts"]
    skipped: dict[str, int] = {}
    if len(alerts) > max_alerts:
        skipped["alerts_not_looked_at"] = len(alerts) - max_alerts
        alerts = alerts[:max_alerts]

    def trim(values: Any) -> Any:
        if isinstance(values, dict) and len(values) > max_labels:
            skipped["labels_not_looked_at"] = (skipped.get("labels_not_looked_at", 0)
                                               + len(values) - max_labels)
            return dict(itertools.islice(values.items(), max_labels))
        return values

    trimmed = []
    for alert in alerts:
        if isinstance(alert, dict):
            alert = {**alert, **{k: trim(alert[k]) for k in ("labels", "annotations")
                                 if k in alert}}
        trimmed.append(alert)
    data = {**data, **{k: trim(data[k]) for k in ("commonLabels", "commonAnnotations",
                                                  "groupLabels") if k in data}}
    return {**data, "alerts": trimmed}, skipped


def parse_alertmanager(body: bytes, max_alerts: int, max_labels: int
                       ) -> tuple[Any, dict[str, int]]:
    """:func:`parse_json` then :func:`cap_alerts` (what a worker process runs)."""
    return cap_alerts(parse_json(body), max_alerts, max_labels)
