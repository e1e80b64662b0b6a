"""pytest fixtures: a local stand-in for Slack's Web API, Socket Mode and response_url.

It is a real aiohttp server on a free port. heapbot talks to it exactly as to
slack.com (``SLACK_API_URL=standin.url + "api/"``): every request is recorded
whole (method, headers, merged query/form/JSON body) in arrival order, so tests
assert on what Slack would have received: the channel and thread of a post, its
blocks, the bytes of an uploaded file. Faults (429 with Retry-After, 500) can be
injected per method. ``SignedSender`` sends correctly (or deliberately wrongly)
signed requests to a running bot, as Slack does.

The module is importable outside pytest (the latency benchmark reuses it).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import itertools
import json
import secrets
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web

BOT_USER_ID = "UHEAPBOT"
BOT_ID = "BHEAPBOT"
TEAM_ID = "T0HEAPBOT"


@dataclass(slots=True)
class RecordedRequest:
    """One HTTP request as the stand-in received it."""

    method: str  # Web API method ("chat.postMessage"), or "upload", "response_url"
    path: str
    headers: dict[str, str]
    body: dict[str, Any]  # query + form + JSON fields merged; JSON-string fields decoded
    raw: bytes
    at: float = field(default_factory=time.monotonic)
    status: int = 200  # what the stand-in answered
    ok: bool = True  # False when it answered an error (HTTP or ``"ok": false``)
    response: dict[str, Any] = field(default_factory=dict)  # the JSON the stand-in answered


@dataclass(slots=True)
class UploadedFile:
    """A file completed with files.completeUploadExternal (bytes from the upload URL)."""

    file_id: str
    filename: str
    title: str
    content: bytes
    channel_id: str | None
    thread_ts: str | None


@dataclass(slots=True)
class _Fault:
    status: int
    times: int
    retry_after: int | None
    error: str
    body: str | None = None  # a raw body instead of Slack's JSON (a proxy's HTML page, …)
    content_type: str = "application/json"


class SlackStandIn:
    """The Slack endpoints heapbot calls, on a local port."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = 0
        self.requests: list[RecordedRequest] = []
        self.socket_acks: list[dict[str, Any]] = []
        self._faults: dict[str, _Fault] = {}
        self._ts_counter = itertools.count(1)
        self._ts_base = int(time.time())
        self._file_counter = itertools.count(1)
        self._uploads: dict[str, dict[str, Any]] = {}  # file_id -> filename, length, content
        self._files: list[UploadedFile] = []
        self.usergroups: dict[str, list[str]] = {}  # group id → member user ids
        # What a person sees in each channel now: posted messages (metadata kept), minus
        # chat.delete'd ones; conversations.history/replies serve them.
        self._messages: dict[str, list[dict[str, Any]]] = {}
        self._sockets: list[web.WebSocketResponse] = []
        self._socket_connected = asyncio.Event()
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Base URL, ending in "/"; the Web API lives under ``url + "api/"``."""
        return f"http://{self.host}:{self.port}/"

    @property
    def api_url(self) -> str:
        """What to put in SLACK_API_URL."""
        return self.url + "api/"

    async def start(self) -> SlackStandIn:
        app = web.Application(client_max_size=256 * 1024 * 1024)
        app.router.add_post("/api/{method}", self._api)
        app.router.add_get("/api/{method}", self._api)
        app.router.add_post("/upload/{file_id}", self._upload)
        app.router.add_post("/response/{token}", self._response_url)
        app.router.add_get("/socket", self._socket)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        for ws in list(self._sockets):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def reset(self) -> None:
        """Forget recorded traffic and faults (between tests sharing one stand-in)."""
        self.requests.clear()
        self.socket_acks.clear()
        self._faults.clear()
        self._files.clear()
        self._uploads.clear()
        self._messages.clear()

    # -- fault injection ---------------------------------------------------------------------

    def fail(self, method: str, *, status: int = 429, times: int = 1,
             retry_after: int | None = 1, error: str | None = None,
             body: str | None = None, content_type: str = "application/json") -> None:
        """Answer the next ``times`` calls of ``method`` with ``status`` (429 gets Retry-After).

        ``status=200`` with ``error`` gives Slack's usual ``{"ok": false, "error": ...}``;
        ``body`` answers those bytes instead, under ``content_type`` (garbage, HTML).
        """
        default = {429: "ratelimited", 200: "fatal_error"}.get(status, "internal_error")
        self._faults[method] = _Fault(status, times, retry_after if status == 429 else None,
                                      error or default, body, content_type)

    # -- queries -----------------------------------------------------------------------------

    def calls(self, method: str) -> list[RecordedRequest]:
        """Requests of one method that were answered successfully, in order."""
        return [r for r in self.requests if r.method == method and r.ok]

    def posts(self, channel: str | None = None) -> list[dict[str, Any]]:
        """Bodies of successful chat.postMessage calls (optionally to one channel)."""
        return [r.body for r in self.calls("chat.postMessage")
                if channel is None or r.body.get("channel") == channel]

    def post_ts(self, channel: str | None = None) -> list[str]:
        """The ts values the stand-in gave successful chat.postMessage calls, in order."""
        return [r.response["ts"] for r in self.calls("chat.postMessage")
                if channel is None or r.body.get("channel") == channel]

    def messages(self, channel: str, thread_ts: str | None = None) -> list[dict[str, Any]]:
        """What a person sees now: the channel's top-level messages, or a thread's replies
        (its first message excluded), oldest first; deleted messages are gone."""
        stored = self._messages.get(channel, [])
        if thread_ts is None:
            return [m for m in stored if m.get("thread_ts", m["ts"]) == m["ts"]]
        return [m for m in stored if m.get("thread_ts") == thread_ts and m["ts"] != thread_ts]

    def ephemerals(self) -> list[dict[str, Any]]:
        return [r.body for r in self.calls("chat.postEphemeral")]

    def responses(self) -> list[dict[str, Any]]:
        """Bodies POSTed to response_url endpoints."""
        return [r.body for r in self.calls("response_url")]

    def files(self) -> list[UploadedFile]:
        return list(self._files)

    def response_url(self) -> str:
        """A fresh response_url, as Slack puts in a slash command or block_actions payload."""
        return f"{self.url}response/{secrets.token_hex(8)}"

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 30.0) -> Any:
        """Wait until ``predicate()`` is truthy (re-checked on every request); return its value."""
        deadline = time.monotonic() + timeout
        async with self._changed:
            while True:
                value = predicate()
                if value:
                    return value
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"Slack stand-in: condition not met in {timeout} s; "
                                       f"saw {[r.method for r in self.requests]}")
                try:
                    await asyncio.wait_for(self._changed.wait(), timeout=remaining)
                except TimeoutError:
                    continue

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # -- Socket Mode -------------------------------------------------------------------------

    async def wait_socket(self, timeout: float = 15.0) -> None:
        await asyncio.wait_for(self._socket_connected.wait(), timeout)

    async def send_envelope(self, envelope_type: str, payload: dict[str, Any],
                            accepts_response_payload: bool = True) -> str:
        """Push one Socket Mode envelope to every connected client; return its envelope_id."""
        envelope_id = secrets.token_hex(12)
        message = {"envelope_id": envelope_id, "type": envelope_type, "payload": payload,
                   "accepts_response_payload": accepts_response_payload, "retry_attempt": 0,
                   "retry_reason": ""}
        if not self._sockets:
            raise RuntimeError("no Socket Mode client is connected to the stand-in")
        for ws in self._sockets:
            await ws.send_str(json.dumps(message))
        return envelope_id

    async def wait_ack(self, envelope_id: str, timeout: float = 10.0) -> dict[str, Any]:
        """The client's acknowledgement of one envelope (its JSON message)."""
        return await self.wait_for(
            lambda: next((a for a in self.socket_acks if a.get("envelope_id") == envelope_id),
                         None), timeout)

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self._sockets.append(ws)
        await ws.send_str(json.dumps({"type": "hello", "num_connections": 1,
                                      "connection_info": {"app_id": "AHEAPBOT"}}))
        self._socket_connected.set()
        try:
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    self.socket_acks.append(json.loads(msg.data))
                    await self._notify()
        finally:
            self._sockets.remove(ws)
            if not self._sockets:
                self._socket_connected.clear()
        return ws

    # -- HTTP handlers -----------------------------------------------------------------------

    async def _record(self, method: str, request: web.Request) -> RecordedRequest:
        raw = await request.read()
        body: dict[str, Any] = dict(request.query)
        ctype = request.content_type
        if ctype == "application/json" and raw:
            body.update(json.loads(raw))
        elif ctype == "application/x-www-form-urlencoded" and raw:
            body.update(dict(urllib.parse.parse_qsl(raw.decode(), keep_blank_values=True)))
        for key in ("blocks", "files", "attachments", "metadata"):
            if isinstance(body.get(key), str):
                with contextlib.suppress(ValueError):
                    body[key] = json.loads(body[key])
        rec = RecordedRequest(method=method, path=request.path, headers=dict(request.headers),
                              body=body, raw=raw)
        self.requests.append(rec)
        return rec

    def _fault(self, method: str) -> _Fault | None:
        fault = self._faults.get(method)
        if fault is None or fault.times <= 0:
            return None
        fault.times -= 1
        return fault

    def _next_ts(self) -> str:
        return f"{self._ts_base}.{next(self._ts_counter):06d}"

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        rec = await self._record(method, request)
        try:
            fault = self._fault(method)
            if fault is not None:
                rec.status, rec.ok = fault.status, False
                headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after else {}
                if fault.body is not None:
                    return web.Response(text=fault.body, status=fault.status, headers=headers,
                                        content_type=fault.content_type)
                return web.json_response({"ok": False, "error": fault.error},
                                         status=fault.status, headers=headers)
            auth = rec.headers.get("Authorization", "")
            token = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else ""
            token = token or str(rec.body.get("token", ""))
            want = "xapp-" if method == "apps.connections.open" else "xox"
            if not token.startswith(want):
                rec.ok = False
                return web.json_response({"ok": False, "error": "not_authed"})
            handler = getattr(self, "_m_" + method.replace(".", "_"), None)
            if handler is None:
                rec.ok = False
                return web.json_response({"ok": False, "error": "unknown_method"})
            result = handler(rec.body)
            rec.ok, rec.response = bool(result.get("ok")), result
            return web.json_response(result)
        finally:
            await self._notify()

    async def _upload(self, request: web.Request) -> web.Response:
        rec = await self._record("upload", request)
        file_id = request.match_info["file_id"]
        pending = self._uploads.get(file_id)
        if pending is None:
            rec.status, rec.ok = 404, False
            await self._notify()
            return web.Response(status=404, text="unknown upload")
        content = rec.raw
        if request.content_type.startswith("multipart/"):
            content = _first_multipart_part(rec.raw, request.headers["Content-Type"])
        pending["content"] = content
        await self._notify()
        return web.Response(text=f"OK - {len(content)}")

    async def _response_url(self, request: web.Request) -> web.Response:
        await self._record("response_url", request)
        await self._notify()
        return web.Response(text="ok")

    # -- Web API methods ---------------------------------------------------------------------

    def _m_auth_test(self, body: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "url": "https://heapbot-test.slack.com/", "team": "heapbot test",
                "user": "heapbot", "team_id": TEAM_ID, "user_id": BOT_USER_ID, "bot_id": BOT_ID}

    def _m_chat_postMessage(self, body: dict[str, Any]) -> dict[str, Any]:
        if not body.get("channel"):
            return {"ok": False, "error": "channel_not_found"}
        if not (body.get("text") or body.get("blocks")):
            return {"ok": False, "error": "no_text"}
        ts = self._next_ts()
        message = {"type": "message", "user": BOT_USER_ID, "bot_id": BOT_ID, "ts": ts,
                   "text": body.get("text", ""), "blocks": body.get("blocks", [])}
        if body.get("thread_ts"):
            message["thread_ts"] = body["thread_ts"]
        if isinstance(body.get("metadata"), dict):
            message["metadata"] = body["metadata"]
        self._messages.setdefault(body["channel"], []).append(message)
        return {"ok": True, "channel": body["channel"], "ts": ts, "message": message}

    def _m_chat_delete(self, body: dict[str, Any]) -> dict[str, Any]:
        stored = self._messages.get(str(body.get("channel", "")), [])
        for message in stored:
            if message["ts"] == body.get("ts"):
                stored.remove(message)
                return {"ok": True, "channel": body["channel"], "ts": body["ts"]}
        return {"ok": False, "error": "message_not_found"}

    @staticmethod
    def _page(messages: list[dict[str, Any]], body: dict[str, Any], default_limit: int
              ) -> dict[str, Any]:
        """One page as Slack pages (``cursor``/``limit``; metadata only when
        ``include_all_metadata`` is asked for)."""
        start = int(body.get("cursor") or 0)
        limit = int(body.get("limit") or default_limit)
        metadata = str(body.get("include_all_metadata", "")).lower() in ("1", "true")
        page = [m if metadata else {k: v for k, v in m.items() if k != "metadata"}
                for m in messages[start:start + limit]]
        more = start + limit < len(messages)
        return {"ok": True, "messages": page, "has_more": more,
                "response_metadata": {"next_cursor": str(start + limit) if more else ""}}

    def _m_conversations_history(self, body: dict[str, Any]) -> dict[str, Any]:
        if str(body.get("channel", "")) not in self._messages:
            return {"ok": False, "error": "channel_not_found"}
        oldest = float(body.get("oldest") or 0)
        newest_first = [m for m in reversed(self.messages(str(body["channel"])))
                        if float(m["ts"]) > oldest]
        return self._page(newest_first, body, 100)

    def _m_conversations_replies(self, body: dict[str, Any]) -> dict[str, Any]:
        channel, parent = str(body.get("channel", "")), str(body.get("ts", ""))
        stored = self._messages.get(channel, [])
        first = [m for m in stored if m["ts"] == parent]
        if not first:
            return {"ok": False, "error": "thread_not_found"}
        return self._page(first + self.messages(channel, parent), body, 1000)

    def _m_chat_postEphemeral(self, body: dict[str, Any]) -> dict[str, Any]:
        if not body.get("channel") or not body.get("user"):
            return {"ok": False, "error": "user_not_in_channel"}
        return {"ok": True, "message_ts": self._next_ts()}

    def _m_chat_update(self, body: dict[str, Any]) -> dict[str, Any]:
        if not body.get("channel") or not body.get("ts"):
            return {"ok": False, "error": "message_not_found"}
        return {"ok": True, "channel": body["channel"], "ts": body["ts"],
                "text": body.get("text", "")}

    def _m_files_getUploadURLExternal(self, body: dict[str, Any]) -> dict[str, Any]:
        if not body.get("filename") or not str(body.get("length", "")).isdigit():
            return {"ok": False, "error": "invalid_arguments"}
        file_id = f"F{next(self._file_counter):08d}"
        self._uploads[file_id] = {"filename": body["filename"], "length": int(body["length"]),
                                  "content": None}
        return {"ok": True, "upload_url": f"{self.url}upload/{file_id}", "file_id": file_id}

    def _m_files_completeUploadExternal(self, body: dict[str, Any]) -> dict[str, Any]:
        entries = body.get("files")
        if not isinstance(entries, list) or not entries:
            return {"ok": False, "error": "invalid_arguments"}
        done = []
        for entry in entries:
            pending = self._uploads.get(entry.get("id", ""))
            if pending is None or pending["content"] is None:
                return {"ok": False, "error": "file_not_found"}
            if len(pending["content"]) != pending["length"]:
                return {"ok": False, "error": "file_size_mismatch"}
            done.append((entry, pending))
        result = []
        for entry, pending in done:
            uploaded = UploadedFile(
                file_id=entry["id"], filename=pending["filename"],
                title=entry.get("title") or pending["filename"], content=pending["content"],
                channel_id=body.get("channel_id"), thread_ts=body.get("thread_ts"))
            self._files.append(uploaded)
            result.append({"id": uploaded.file_id, "name": uploaded.filename,
                           "title": uploaded.title, "size": len(uploaded.content)})
        if body.get("channel_id"):  # shared: one message with the files, as Slack shows it
            message: dict[str, Any] = {"type": "message", "subtype": "file_share",
                                       "user": BOT_USER_ID, "ts": self._next_ts(),
                                       "text": "", "files": result}
            if body.get("thread_ts"):
                message["thread_ts"] = body["thread_ts"]
            self._messages.setdefault(str(body["channel_id"]), []).append(message)
        return {"ok": True, "files": result}

    def _m_usergroups_users_list(self, body: dict[str, Any]) -> dict[str, Any]:
        group = str(body.get("usergroup", ""))
        if group not in self.usergroups:
            return {"ok": False, "error": "no_such_subteam"}
        return {"ok": True, "users": list(self.usergroups[group])}

    def _m_apps_connections_open(self, body: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "url": f"ws://{self.host}:{self.port}/socket"}


def _first_multipart_part(raw: bytes, content_type: str) -> bytes:
    """The body of the first part of a multipart/form-data request."""
    boundary = content_type.split("boundary=", 1)[1].strip('"').encode()
    part = raw.split(b"--" + boundary)[1]
    return part.split(b"\r\n\r\n", 1)[1].rsplit(b"\r\n", 1)[0]


# -- signed requests to a running bot -------------------------------------------------------


def slack_signature(secret: str, timestamp: str, body: str) -> str:
    """Slack's v0 request signature: HMAC-SHA256 over ``v0:{timestamp}:{body}``."""
    digest = hmac.new(secret.encode(), f"v0:{timestamp}:{body}".encode(), hashlib.sha256)
    return "v0=" + digest.hexdigest()


@dataclass(slots=True)
class SentRequest:
    status: int
    text: str
    headers: dict[str, str]
    elapsed: float  # seconds from send to full response
    body: str  # what was sent
    request_headers: dict[str, str]


class SignedSender:
    """Sends Slack-shaped, signed requests over real HTTP to the bot's /slack/events."""

    def __init__(self, events_url: str, signing_secret: str, standin: SlackStandIn | None = None,
                 team_id: str = TEAM_ID) -> None:
        self.events_url = events_url
        self.signing_secret = signing_secret
        self.standin = standin
        self.team_id = team_id

    async def send(self, body: str, content_type: str, *, timestamp: int | None = None,
                   signature: str | None = None,
                   extra_headers: dict[str, str] | None = None) -> SentRequest:
        """POST ``body``; signed correctly unless ``signature``/``timestamp`` say otherwise."""
        ts = str(int(time.time()) if timestamp is None else timestamp)
        headers = {
            "Content-Type": content_type,
            "X-Slack-Request-Timestamp": ts,
            "X-Slack-Signature": signature or slack_signature(self.signing_secret, ts, body),
            **(extra_headers or {}),
        }
        return await self.send_raw(body, headers)

    async def send_raw(self, body: str, headers: dict[str, str]) -> SentRequest:
        """POST exactly these bytes and headers (for replay tests)."""
        started = time.perf_counter()
        async with aiohttp.ClientSession() as session, session.post(
                self.events_url, data=body.encode(), headers=headers) as resp:
            text = await resp.text()
            return SentRequest(resp.status, text, dict(resp.headers),
                               time.perf_counter() - started, body, headers)

    def _response_url(self) -> str:
        return self.standin.response_url() if self.standin else "http://127.0.0.1:9/response"

    def slash_command_body(self, text: str, *, channel_id: str = "C0HEAP", user_id: str = "U0ALICE",
                           command: str = "/heap", response_url: str | None = None) -> str:
        fields = {
            "token": "legacy-verification-token", "team_id": self.team_id,
            "team_domain": "heapbot-test", "channel_id": channel_id, "channel_name": "ops",
            "user_id": user_id, "user_name": "alice", "command": command, "text": text,
            "api_app_id": "AHEAPBOT", "is_enterprise_install": "false",
            "response_url": response_url or self._response_url(),
            "trigger_id": f"{int(time.time())}.{secrets.randbelow(10**9)}.{secrets.token_hex(8)}",
        }
        return urllib.parse.urlencode(fields)

    async def slash_command(self, text: str, **kwargs: Any) -> SentRequest:
        """``/heap {text}`` as Slack sends it (form-encoded)."""
        return await self.send(self.slash_command_body(text, **kwargs),
                               "application/x-www-form-urlencoded")

    async def block_action(self, *, value: str, message_ts: str, channel_id: str = "C0HEAP",
                           user_id: str = "U0ALICE", thread_ts: str | None = None,
                           action_id: str = "heap_action", text: str = "") -> SentRequest:
        """A button click on a bot message: ``payload=`` form field holding block_actions JSON."""
        message: dict[str, Any] = {"type": "message", "user": BOT_USER_ID, "ts": message_ts,
                                   "text": "heapbot reply"}
        if thread_ts:
            message["thread_ts"] = thread_ts
        payload = {
            "type": "block_actions", "api_app_id": "AHEAPBOT", "token": "legacy",
            "user": {"id": user_id, "username": "alice", "team_id": self.team_id},
            "team": {"id": self.team_id, "domain": "heapbot-test"},
            "container": {"type": "message", "message_ts": message_ts, "channel_id": channel_id,
                          "is_ephemeral": False},
            "trigger_id": f"{int(time.time())}.1.{secrets.token_hex(8)}",
            "channel": {"id": channel_id, "name": "ops"},
            "message": message,
            "response_url": self._response_url(),
            "actions": [{"type": "button", "action_id": action_id, "block_id": "actions",
                         "text": {"type": "plain_text", "text": text or value}, "value": value,
                         "action_ts": f"{time.time():.6f}"}],
        }
        body = urllib.parse.urlencode({"payload": json.dumps(payload)})
        return await self.send(body, "application/x-www-form-urlencoded")

    def event_body(self, event: dict[str, Any]) -> str:
        return json.dumps({
            "token": "legacy", "team_id": self.team_id, "api_app_id": "AHEAPBOT",
            "event": event, "type": "event_callback", "event_id": "Ev" + secrets.token_hex(6),
            "event_time": int(time.time()),
            "authorizations": [{"team_id": self.team_id, "user_id": BOT_USER_ID,
                                "is_bot": True}],
        })

    async def app_mention(self, text: str, *, channel_id: str = "C0HEAP",
                          user_id: str = "U0ALICE", thread_ts: str | None = None) -> SentRequest:
        """``@heapbot {text}``, optionally inside a thread."""
        event: dict[str, Any] = {"type": "app_mention", "user": user_id,
                                 "text": f"<@{BOT_USER_ID}> {text}", "ts": f"{time.time():.6f}",
                                 "channel": channel_id, "event_ts": f"{time.time():.6f}"}
        if thread_ts:
            event["thread_ts"] = thread_ts
        return await self.send(self.event_body(event), "application/json")

    async def url_verification(self, challenge: str) -> SentRequest:
        body = json.dumps({"token": "legacy", "challenge": challenge, "type": "url_verification"})
        return await self.send(body, "application/json")


@pytest.fixture
async def slack_standin() -> AsyncIterator[SlackStandIn]:
    """A running Slack stand-in; ``.api_url`` goes into SLACK_API_URL."""
    standin = await SlackStandIn().start()
    try:
        yield standin
    finally:
        await standin.stop()


# -- running the bot's aiohttp app on a free port -------------------------------------------


class RunningWebApp:
    """An aiohttp Application served on 127.0.0.1:<free port> (the bot under test)."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.runner = web.AppRunner(app, access_log=None)
        self.url = ""

    async def start(self) -> RunningWebApp:
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self

    @property
    def events_url(self) -> str:
        return self.url + "/slack/events"

    async def stop(self) -> None:
        await self.runner.cleanup()


async def wait_until_serving(url: str, process: Any, log_path: Any,
                             attempts: int = 400) -> None:
    """Poll a `heapbot serve` child's /healthz until it answers; fail with its log if it dies."""
    async with aiohttp.ClientSession() as session:
        for _ in range(attempts):
            try:
                async with session.get(url + "/healthz") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            assert process.poll() is None, log_path.read_text()[-3000:]
            await asyncio.sleep(0.05)
    raise AssertionError(f"{url}/healthz did not answer: {log_path.read_text()[-3000:]}")


SIGNING_SECRET = "heapbot-test-signing-secret"


@dataclass
class LiveSlackBot:
    """The whole bot (Runtime on real Redis, aiohttp + Bolt) wired to the stand-in."""

    web: RunningWebApp
    sender: SignedSender
    standin: SlackStandIn
    runtime: Any

    async def redis_value(self, key: str, timeout: float = 5.0) -> bytes | None:
        """GET ``key`` once it exists (the bot writes it just after Slack answers)."""
        deadline = time.monotonic() + timeout
        while True:
            value = await self.runtime.store.redis.get(key)
            if value is not None or time.monotonic() > deadline:
                return value
            await asyncio.sleep(0.02)


@asynccontextmanager
async def running_slack_bot(standin: SlackStandIn, redis_url: str, registry_yaml: str,
                            tmp_path: Any, *, socket_mode: bool = False
                            ) -> AsyncIterator[LiveSlackBot]:
    """heapbot serving /slack/events on a free port, with this registry, on real Redis.

    ``socket_mode`` sets SLACK_APP_TOKEN: the bot connects to the stand-in's WebSocket.
    """
    from pydantic import SecretStr

    from bot.runtime import Runtime
    from bot.serve import build_web_app
    from bot.settings import Settings
    from bot.slack.server import SLACK_STATE

    registry = tmp_path / "heapbot.yaml"
    registry.write_text(registry_yaml)
    settings = Settings(SLACK_BOT_TOKEN=SecretStr("xoxb-test-token"),
                        SLACK_SIGNING_SECRET=SecretStr(SIGNING_SECRET),
                        SLACK_API_URL=standin.api_url, REDIS_URL=redis_url,
                        HEAPBOT_CONFIG=str(registry), HEAPBOT_DATA_DIR=str(tmp_path / "data"),
                        SLACK_APP_TOKEN=SecretStr("xapp-1-test") if socket_mode else None)
    runtime = await Runtime.create(settings)
    web_app = await RunningWebApp(build_web_app(runtime, settings, start_worker=False)).start()
    try:
        deadline = time.monotonic() + 10
        while not web_app.app[SLACK_STATE].ready and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        yield LiveSlackBot(web_app, SignedSender(web_app.events_url, SIGNING_SECRET, standin),
                           standin, runtime)
    finally:
        await web_app.stop()
        await runtime.close()


@pytest.fixture
async def live_slack_bot(slack_standin: SlackStandIn, redis_url: str, demo_service: Any,
                         tmp_path: Any) -> AsyncIterator[LiveSlackBot]:
    """heapbot on a free port; registry: ``demo`` → the demo service, no cooldown."""
    registry = ("services:\n  demo:\n    targets: [\"" + demo_service.url + "\"]\n"
                "    cooldown_seconds: 0\n")
    async with running_slack_bot(slack_standin, redis_url, registry, tmp_path) as bot:
        yield bot
