"""Hostile webhook deliveries beyond tests/alerts/test_webhooks.py (the routes' owner covers
bad PagerDuty signatures, malformed JSON, unknown services and oversized bodies with a
Content-Length). Here: bodies that stream past the limit without declaring a length,
JSON nested deep enough to blow Python's recursion limit, non-UTF-8 bytes, JSON of the
wrong shape, and the webhook secrets kept out of logs and answers. Real HTTP, real Redis.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator

import aiohttp
import pytest
import redis.asyncio as aioredis

from tests.support.alerts import AM_TOKEN, BEARER, PD_SECRET, pd_signature, queued


async def _post(url: str, body: bytes | AsyncIterator[bytes], headers: dict[str, str]
                ) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.post(
            url, data=body, headers={"Content-Type": "application/json", **headers}) as resp:
        return resp.status, await resp.text()


async def _chunks(total: int, size: int = 16 * 1024) -> AsyncIterator[bytes]:
    yield b'{"alerts": ["'
    sent = 0
    while sent < total:
        yield b"a" * size
        sent += size
    yield b'"]}'


BAD_BODIES = [
    ("deep-nesting", b"[" * 30_000 + b"]" * 30_000, 400, "JSON"),
    ("deep-object-nesting", b'{"a":' * 5_000 + b"1" + b"}" * 5_000, 400, "JSON"),
    ("not-utf8", b'{"alerts": "\xff\xfe\xfa"}', 400, "JSON"),
    ("json-list", b"[1, 2, 3]", 400, ""),
    ("json-number", b"12345", 400, ""),
    ("nul-bytes", b"\x00" * 2048, 400, "JSON"),
]


@pytest.mark.parametrize(("case", "body", "status", "words"), BAD_BODIES,
                         ids=[b[0] for b in BAD_BODIES])
async def test_hostile_alertmanager_bodies_get_one_clear_answer(
        hooks: tuple[str, aioredis.Redis], case: str, body: bytes, status: int,
        words: str) -> None:
    url, redis = hooks
    got, text = await _post(f"{url}/hooks/alertmanager", body, BEARER)
    assert got == status, (case, got, text[:300])
    answer = json.loads(text)
    assert answer["ok"] is False and words in answer["error"]
    assert "Traceback" not in text and len(answer["error"]) < 400
    assert await queued(redis) == []


async def test_pagerduty_deep_nesting_signed_is_a_clear_400(
        hooks: tuple[str, aioredis.Redis]) -> None:
    url, redis = hooks
    body = b"[" * 30_000 + b"]" * 30_000
    got, text = await _post(f"{url}/hooks/pagerduty", body,
                            {"X-PagerDuty-Signature": pd_signature(body)})
    assert got == 400, text[:300]
    assert await queued(redis) == []


async def test_streamed_body_without_length_stops_at_the_limit(
        hooks: tuple[str, aioredis.Redis]) -> None:
    url, redis = hooks
    got, text = await _post(f"{url}/hooks/alertmanager", _chunks(8 * 1024 * 1024), BEARER)
    assert got == 413, text[:300]
    assert "larger than" in json.loads(text)["error"]
    assert await queued(redis) == []


async def test_webhook_secrets_never_reach_logs_or_answers(
        hooks: tuple[str, aioredis.Redis], caplog: pytest.LogCaptureFixture) -> None:
    url, _ = hooks
    caplog.set_level(logging.DEBUG)
    answers = []
    for headers in ({"Authorization": "Bearer wrong-token"}, {},
                    {"Authorization": "Basic bm90OmJhc2U2NA=="}):
        answers.append(await _post(f"{url}/hooks/alertmanager", b"{}", headers))
    body = b'{"event": {}}'
    answers.append(await _post(f"{url}/hooks/pagerduty", body,
                               {"X-PagerDuty-Signature": pd_signature(body, "other")}))
    assert [status for status, _ in answers] == [401, 401, 401, 401]
    for secret in (AM_TOKEN, PD_SECRET):
        assert all(secret not in text for _, text in answers)
        for record in caplog.records:
            assert secret not in record.getMessage() + repr(record.__dict__)
