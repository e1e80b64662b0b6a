"""Alert and automation webhooks: validate, enqueue, answer fast.

Routes (mounted on the same aiohttp app as /slack/events):
- ``POST /hooks/alertmanager``: Prometheus Alertmanager webhook (payload version 4);
- ``POST /hooks/pagerduty``: PagerDuty webhooks v3, signed (``X-PagerDuty-Signature``);
- ``POST /hooks/deploy``: ``{"service", "version"}`` records a deploy marker;
- ``POST /hooks/capture``: ``{"service", "reason"}`` takes a capture.

Nothing slow happens here: the work runs from the Redis-stream queue
(bot/jobs.py, bot/alerts/worker.py), so senders get a 2xx well under a second. An
alert for a service heapbot does not know gets a 2xx too (with the label values
that were tried), because a 4xx/5xx would only make Alertmanager retry forever.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from bot import workpool
from bot.alerts.intake import IN_PROCESS_BYTES, BodyError, parse_alertmanager, parse_json
from bot.alerts.payloads import FIRING, RESOLVED, AlertJob, CaptureJob, DeployJob
from bot.errors import HeapbotError, UnknownServiceError
from bot.httpauth import credential_matches
from bot.jobs import JobQueue, QueueSettings
from bot.metrics import WEBHOOKS
from bot.registry import ServiceConfig
from bot.runtime import Runtime
from bot.settings import Settings

log = logging.getLogger(__name__)

QUEUE_KEY: web.AppKey[JobQueue] = web.AppKey("heapbot_job_queue", JobQueue)

MAX_TRIED_SHOWN = 20  # label values echoed back to the sender
MAX_SUGGESTED = 5  # unknown values given a did-you-mean per notification
PAGERDUTY_CLOCK_SKEW_SECONDS = 300
PAGERDUTY_OPEN = {"incident.triggered", "incident.reopened"}
PAGERDUTY_CLOSE = {"incident.resolved"}


class _Loose(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


def _str_map(value: Any) -> Any:
    """Label and annotation values as strings (Alertmanager sends strings; be lenient)."""
    if value is None:
        return {}
    if isinstance(value, dict):
        return {str(k): "" if v is None else str(v) for k, v in value.items()}
    return value


class AlertmanagerAlert(_Loose):
    status: str = FIRING
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    starts_at: str | None = Field(None, alias="startsAt")
    ends_at: str | None = Field(None, alias="endsAt")
    fingerprint: str = ""
    generator_url: str = Field("", alias="generatorURL")

    _maps = field_validator("labels", "annotations", mode="before")(_str_map)


class AlertmanagerPayload(_Loose):
    """Alertmanager's webhook body, version 4; unknown and missing fields tolerated."""

    version: str = "4"
    group_key: str = Field("", alias="groupKey")
    status: str = FIRING
    receiver: str = ""
    group_labels: dict[str, str] = Field(default_factory=dict, alias="groupLabels")
    common_labels: dict[str, str] = Field(default_factory=dict, alias="commonLabels")
    common_annotations: dict[str, str] = Field(default_factory=dict, alias="commonAnnotations")
    external_url: str = Field("", alias="externalURL")
    alerts: list[AlertmanagerAlert] = Field(default_factory=list)

    _maps = field_validator("group_labels", "common_labels", "common_annotations",
                            mode="before")(_str_map)

    @field_validator("version", mode="before")
    @classmethod
    def _version_text(cls, value: Any) -> Any:
        return str(value) if value is not None else "4"


class ServiceRequest(_Loose):
    service: str = Field(min_length=1, max_length=200)
    version: str = Field("", max_length=200)
    reason: str = Field("", max_length=500)
    by: str = Field("", max_length=200)


class WebhookRejected(Exception):
    """A request refused with an HTTP status and a message for the sender."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra


def parse_time(text: str | None) -> float | None:
    """Unix seconds from an RFC 3339 time (nanosecond fractions allowed); None for Go's zero."""
    if not text or text.startswith("0001-01-01"):
        return None
    match = re.match(r"^(.*?T\d{2}:\d{2}:\d{2})(?:\.(\d+))?(Z|[+-]\d{2}:?\d{2})?$", text.strip())
    if not match:
        return None
    base, fraction, zone = match.groups()
    zone = "+00:00" if zone in (None, "Z") else zone
    stamp = base + (f".{fraction[:6].ljust(6, '0')}" if fraction else "") + zone
    try:
        return datetime.fromisoformat(stamp).timestamp()
    except ValueError:
        return None


def require_credential(request: web.Request, secret: SecretStr | None, *, setting: str,
                       hook: str, open_when_unset: bool = False, off_hint: str = "") -> None:
    """The one webhook auth check: 403 when the hook's secret is unset, 401 when it is wrong.

    ``open_when_unset`` lets a request through when no secret is configured.
    """
    if secret is None:
        if open_when_unset:
            return
        raise WebhookRejected(403, f"/hooks/{hook} is off: set {setting} and send it as a "
                                   f"bearer token.{off_hint}")
    if not credential_matches(request, secret.get_secret_value()):
        raise WebhookRejected(401, f"Missing or wrong credentials: send the token set in "
                                   f"{setting} as `Authorization: Bearer <token>`.")


def _short_hash(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:24]


class Webhooks:
    """The route handlers, holding the Runtime, settings and queue they share."""

    def __init__(self, runtime: Runtime, settings: Settings, config: QueueSettings,
                 queue: JobQueue | None = None) -> None:
        self.runtime = runtime
        self.settings = settings
        self.config = config
        self._queue = queue
        self._suggested: dict[str, list[str]] = {}  # did-you-mean per unknown label value

    def queue(self, app: web.Application) -> JobQueue:
        if self._queue is None:
            self._queue = app.get(QUEUE_KEY) or self.config.queue(self.runtime.redis)
        return self._queue

    # -- shared plumbing -------------------------------------------------

    async def _body(self, request: web.Request) -> bytes:
        limit = self.config.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            raise WebhookRejected(413, f"The body is larger than {limit} bytes; heapbot "
                                       "refuses it.")
        chunks: list[bytes] = []
        size = 0
        seconds = self.settings.body_timeout_seconds
        try:
            async with asyncio.timeout(seconds):  # a client trickling its body holds nothing
                async for chunk in request.content.iter_chunked(64 * 1024):
                    size += len(chunk)
                    if size > limit:
                        raise WebhookRejected(413, f"The body is larger than {limit} bytes; "
                                                   "heapbot refuses it.")
                    chunks.append(chunk)
        except TimeoutError:
            raise WebhookRejected(408, f"The body did not arrive within {seconds:g} s; send it "
                                       "in one go.") from None
        return b"".join(chunks)

    @staticmethod
    def _json(body: bytes) -> Any:
        try:
            return parse_json(body)
        except BodyError as exc:
            raise WebhookRejected(400, str(exc)) from None

    @staticmethod
    def _validation_message(exc: ValidationError, what: str) -> str:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "body"
        return f"The body is not a valid {what}: {where}: {first.get('msg', 'invalid')}."

    def _resolve(self, name: str) -> ServiceConfig | None:
        """The service ``name`` names, or None: a dict lookup, no did-you-mean."""
        return self.runtime.registry.find(name)

    def _service_from_labels(self, labels: dict[str, str],
                             known: dict[str, ServiceConfig | None]
                             ) -> tuple[ServiceConfig | None, dict[str, str]]:
        """The first configured label whose value names a registry service (or alias)."""
        tried: dict[str, str] = {}
        for key in self.config.alert_service_labels:
            value = labels.get(key)
            if not value:
                continue
            tried[key] = value
            if value not in known:
                known[value] = self._resolve(value)
            service = known[value]
            if service is not None:
                return service, tried
        return None, tried

    # -- Alertmanager ----------------------------------------------------

    async def alertmanager(self, request: web.Request) -> web.Response:
        require_credential(request, self.settings.alertmanager_token,
                           setting="HEAPBOT_ALERTMANAGER_TOKEN", hook="alertmanager",
                           open_when_unset=self.settings.alertmanager_open,
                           off_hint=" (HEAPBOT_ALERTMANAGER_OPEN=true opens it to anyone who "
                                    "can reach this port.)")
        data, skipped = await self._alertmanager_body(await self._body(request))
        try:
            payload = AlertmanagerPayload.model_validate(data)
        except ValidationError as exc:
            raise WebhookRejected(400, self._validation_message(exc, "Alertmanager payload")) \
                from None

        by_service: dict[str, tuple[Any, list[AlertmanagerAlert]]] = {}
        unmatched: list[dict[str, str]] = []
        known: dict[str, ServiceConfig | None] = {}  # each distinct value looked up once
        for alert in payload.alerts:
            labels = {**payload.common_labels, **alert.labels}
            service, tried = self._service_from_labels(labels, known)
            if service is None:
                unmatched.append(tried)
                continue
            by_service.setdefault(service.name, (service, []))[1].append(alert)

        tried_values = sorted({f"{k}={v}" for t in unmatched for k, v in t.items()})
        if unmatched:  # a count, not every value: a hostile body must not flood the log
            log.warning("alertmanager webhook: %d alert(s) name no service heapbot knows "
                        "(%d distinct label values)", len(unmatched), len(tried_values))
        if not by_service:
            reason = ("No alert in this notification names a service heapbot knows "
                      f"(labels tried: {', '.join(self.config.alert_service_labels)}).")
            WEBHOOKS.labels(source="alertmanager", outcome="unknown_service").inc()
            values = sorted({v for t in unmatched for v in t.values()})
            return web.json_response({"ok": False, "status": 422, "error": reason,
                                      "tried": tried_values[:MAX_TRIED_SHOWN],
                                      "did_you_mean": await self._suggestions(values),
                                      **skipped}, status=200)

        queue = self.queue(request.app)
        queued = []
        for name, (_service, alerts) in sorted(by_service.items()):
            firing = [a for a in alerts if a.status == FIRING]
            status = FIRING if firing else RESOLVED
            shown = firing or alerts
            labels = {**payload.common_labels, **shown[0].labels}
            annotations = {**payload.common_annotations, **shown[0].annotations}
            starts = [t for t in (parse_time(a.starts_at) for a in shown) if t is not None]
            incident_key = "am:" + _short_hash(payload.group_key or payload.receiver, name)
            content = sorted(f"{a.fingerprint}/{a.status}/{a.starts_at}" for a in alerts)
            job = AlertJob(
                source="alertmanager",
                service=name,
                status=status,
                incident_key=incident_key,
                title=labels.get("alertname", "alert"),
                severity=labels.get("severity", ""),
                summary=annotations.get("summary") or annotations.get("description", ""),
                starts_at=min(starts) if starts else None,
                alerts=len(shown),
                link=shown[0].generator_url or payload.external_url,
            )
            dedupe = "am:" + _short_hash(payload.group_key, name, status, *content)
            job_id = await job.enqueue(queue, dedupe_key=dedupe)
            queued.append({"service": name, "status": status, "job": job_id,
                           "duplicate": job_id is None})
        WEBHOOKS.labels(source="alertmanager", outcome="accepted").inc()
        body: dict[str, Any] = {"ok": True, "queued": queued, **skipped}
        if unmatched:
            body["unmatched"] = tried_values[:MAX_TRIED_SHOWN]
        return web.json_response(body, status=202)

    async def _alertmanager_body(self, body: bytes) -> tuple[Any, dict[str, int]]:
        """The capped payload; a large body is parsed in a worker process, not on the loop."""
        limits = (self.config.alert_max_alerts, self.config.alert_max_labels)
        try:
            if len(body) <= IN_PROCESS_BYTES:
                return parse_alertmanager(body, *limits)
            return await workpool.run_cpu(parse_alertmanager, body, *limits)
        except BodyError as exc:
            raise WebhookRejected(400, str(exc)) from None

    async def _suggestions(self, values: list[str]) -> dict[str, list[str]]:
        """Did-you-mean for a few unknown values: once per distinct value, off the event loop."""
        wanted = [v for v in values[:MAX_SUGGESTED] if v not in self._suggested]
        if wanted:
            found = await asyncio.to_thread(
                lambda: {v: self.runtime.registry.suggest(v) for v in wanted})
            self._suggested.update(found)
            while len(self._suggested) > 1024:
                self._suggested.pop(next(iter(self._suggested)))
        return {v: self._suggested[v] for v in values[:MAX_SUGGESTED] if self._suggested.get(v)}

    # -- PagerDuty -------------------------------------------------------

    def _pagerduty_signed(self, body: bytes, header: str, secret: str) -> bool:
        expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        ok = False
        for part in header.split(","):
            version, _, signature = part.strip().partition("=")
            if version == "v1" and hmac.compare_digest(expected, signature.strip().lower()):
                ok = True  # keep comparing: the time spent does not depend on which matched
        return ok

    def _check_fresh(self, event: dict[str, Any]) -> None:
        """Refuse a signed event older than the dedupe window (or from the future).

        The signature proves PagerDuty sent it once, not when; within the window a
        replay is dropped as a duplicate, after it only its own timestamp tells.
        """
        occurred = parse_time(str(event.get("occurred_at") or ""))
        if occurred is None:
            raise WebhookRejected(400, "The event has no readable `occurred_at`; heapbot needs "
                                       "it to refuse replayed events.")
        age = time.time() - occurred
        window = self.config.dedupe_seconds
        if age > window:
            raise WebhookRejected(400, f"The event occurred {age / 60:.0f} minutes ago, longer "
                                       f"ago than heapbot remembers deliveries "
                                       f"({window / 60:.0f} minutes); a replay is refused.")
        if age < -PAGERDUTY_CLOCK_SKEW_SECONDS:
            raise WebhookRejected(400, "The event's `occurred_at` is in the future; check the "
                                       "clocks of heapbot's host.")

    async def pagerduty(self, request: web.Request) -> web.Response:
        secret = self.settings.pagerduty_secret
        if secret is None:
            # 403 like the other hooks, not 5xx: PagerDuty retries a 5xx delivery for good,
            # and a hook that is off will not turn on by itself.
            raise WebhookRejected(403, "/hooks/pagerduty is off: set PAGERDUTY_WEBHOOK_SECRET "
                                       "to the webhook subscription's signing secret.")
        body = await self._body(request)
        header = request.headers.get("X-PagerDuty-Signature", "")
        if not header or not self._pagerduty_signed(body, header, secret.get_secret_value()):
            raise WebhookRejected(401, "The X-PagerDuty-Signature does not match this body; "
                                       "check PAGERDUTY_WEBHOOK_SECRET.")
        data = self._json(body)
        event = data.get("event") if isinstance(data, dict) else None
        if not isinstance(event, dict):
            raise WebhookRejected(400, "The body has no `event` object (PagerDuty webhooks v3).")
        self._check_fresh(event)
        event_type = str(event.get("event_type", ""))
        data = event.get("data")
        incident: dict[str, Any] = data if isinstance(data, dict) else {}
        if event_type not in PAGERDUTY_OPEN | PAGERDUTY_CLOSE:
            WEBHOOKS.labels(source="pagerduty", outcome="ignored").inc()
            return web.json_response({"ok": True, "ignored": event_type or "no event_type"})
        listed = incident.get("service")
        pd_service: dict[str, Any] = listed if isinstance(listed, dict) else {}
        names = [str(pd_service.get(k, "")) for k in ("summary", "name")]
        service = None
        tried: list[str] = []
        for candidate in _name_variants(n for n in names if n):
            tried.append(candidate)
            service = self._resolve(candidate)
            if service is not None:
                break
        if service is None:
            reason = "The incident's PagerDuty service names no service heapbot knows."
            log.warning("pagerduty webhook ignored: %s tried: %s", reason, tried)
            WEBHOOKS.labels(source="pagerduty", outcome="unknown_service").inc()
            return web.json_response({"ok": False, "status": 422, "error": reason,
                                      "tried": tried}, status=200)
        incident_id = str(incident.get("id", "")) or str(event.get("id", ""))
        job = AlertJob(
            source="pagerduty",
            service=service.name,
            status=FIRING if event_type in PAGERDUTY_OPEN else RESOLVED,
            incident_key="pd:" + _short_hash(incident_id, service.name),
            title=str(incident.get("title", "PagerDuty incident"))[:200],
            severity=str(incident.get("urgency", "")),
            summary=str(incident.get("title", ""))[:500],
            starts_at=parse_time(str(incident.get("created_at") or event.get("occurred_at")
                                     or "")),
            alerts=1,
            link=str(incident.get("html_url", "")),
        )
        event_id = str(event.get("id", "")) or _short_hash(body.decode("utf-8", "replace"))
        job_id = await job.enqueue(self.queue(request.app), dedupe_key="pd:" + event_id)
        WEBHOOKS.labels(source="pagerduty", outcome="accepted").inc()
        return web.json_response({"ok": True, "queued": [{
            "service": service.name, "status": job.status, "job": job_id,
            "duplicate": job_id is None}]}, status=202)

    # -- deploy and capture ----------------------------------------------

    async def _service_request(self, request: web.Request,
                               source: str) -> tuple[Any, ServiceRequest]:
        require_credential(request, self.settings.webhook_token,
                           setting="HEAPBOT_WEBHOOK_TOKEN", hook=source)
        data = self._json(await self._body(request))
        try:
            body = ServiceRequest.model_validate(data)
        except ValidationError as exc:
            raise WebhookRejected(400, self._validation_message(exc, f"{source} request")) \
                from None
        try:
            service = self.runtime.registry.resolve(body.service)
        except UnknownServiceError as exc:
            raise WebhookRejected(422, exc.user_message()) from None
        return service, body

    async def deploy(self, request: web.Request) -> web.Response:
        service, body = await self._service_request(request, "deploy")
        if not body.version:
            raise WebhookRejected(400, "The body needs a `version` (e.g. the git sha or tag).")
        job = DeployJob(service=service.name, version=body.version, by=body.by or "webhook")
        job_id = await job.enqueue(self.queue(request.app))
        WEBHOOKS.labels(source="deploy", outcome="accepted").inc()
        return web.json_response({"ok": True, "service": service.name, "job": job_id},
                                 status=202)

    async def capture(self, request: web.Request) -> web.Response:
        service, body = await self._service_request(request, "capture")
        job = CaptureJob(service=service.name, reason=body.reason or "webhook",
                         by=body.by or "webhook")
        job_id = await job.enqueue(self.queue(request.app))
        WEBHOOKS.labels(source="capture", outcome="accepted").inc()
        return web.json_response({"ok": True, "service": service.name, "job": job_id},
                                 status=202)


def _name_variants(names: Iterable[str]) -> list[str]:
    """PagerDuty service names as registry keys: as is, slugged, and the first word."""
    out: list[str] = []
    for name in names:
        slug = re.sub(r"[^a-z0-9_.-]+", "-", name.strip().lower()).strip("-")
        for variant in (name.strip(), slug, slug.split("-")[0] if slug else ""):
            if variant and variant not in out:
                out.append(variant)
    return out


Handler = Callable[[web.Request], Awaitable[web.Response]]


def _guarded(source: str, handler: Handler) -> Handler:
    """Turn rejections and user-facing errors into one clear JSON message, never a traceback."""

    async def route(request: web.Request) -> web.Response:
        try:
            return await handler(request)
        except WebhookRejected as exc:
            WEBHOOKS.labels(source=source, outcome=f"rejected_{exc.status}").inc()
            log.info("webhook %s rejected (%d): %s", source, exc.status, exc.message)
            headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
            response = web.json_response({"ok": False, "error": exc.message, **exc.extra},
                                         status=exc.status, headers=headers)
            if exc.status in (408, 413):  # the rest of the body is not worth reading
                response.force_close()
            return response
        except HeapbotError as exc:  # e.g. Redis down: ask the sender to retry later
            WEBHOOKS.labels(source=source, outcome="error").inc()
            log.error("webhook %s failed: %s", source, exc.user_message())
            return web.json_response({"ok": False, "error": exc.user_message()}, status=503)

    return route


def register_routes(app: web.Application, runtime: Runtime, settings: Settings, *,
                    config: QueueSettings | None = None, queue: JobQueue | None = None) -> None:
    """Mount /hooks/{alertmanager,pagerduty,deploy,capture} on ``app``."""
    hooks = Webhooks(runtime, settings, config or QueueSettings(), queue)
    if settings.alertmanager_open and settings.alertmanager_token is None:
        log.warning("HEAPBOT_ALERTMANAGER_OPEN is set: /hooks/alertmanager takes alerts from "
                    "anyone who can reach this port, and each can page a service's channel. "
                    "Set HEAPBOT_ALERTMANAGER_TOKEN instead.")
    app.router.add_post("/hooks/alertmanager", _guarded("alertmanager", hooks.alertmanager))
    app.router.add_post("/hooks/pagerduty", _guarded("pagerduty", hooks.pagerduty))
    app.router.add_post("/hooks/deploy", _guarded("deploy", hooks.deploy))
    app.router.add_post("/hooks/capture", _guarded("capture", hooks.capture))
