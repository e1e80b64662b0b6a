"""Run /heap commands after the ack, in the background, and publish their replies.

Slack wants an ack within 3 s; a capture can take much longer. Listeners ack
first and hand the command to :class:`CommandRunner`, which keeps a reference
to every task (so none is garbage-collected mid-flight), bounds how many run at
once, and posts the Reply where the command came from: a new message in the
channel, or the thread the request came from.

Acks come first: all requests share one event loop, and a capture's downloads,
parsing threads (which hold the GIL) and Redis writes delay every ack that
arrives beside them. So a command's work starts only once acks have stopped
streaming in for a moment (:class:`AckGate`; bench/load/run.py: 100 commands
at once).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from slack_sdk.web.async_client import AsyncWebClient

import handlers
from bot.errors import HeapbotError
from bot.metrics import REPLY_SECONDS
from bot.reply import Reply
from bot.slack.publish import post_ephemeral, post_reply
from bot.slack.ratelimit import ChannelRateLimiter
from bot.slack.threads import ThreadMemory
from bot.slack.usergroups import UserGroups

if TYPE_CHECKING:
    from bot.runtime import Runtime

log = logging.getLogger(__name__)


@dataclass(slots=True, frozen=True)
class ReplyTarget:
    """Where a command came from and so where its reply goes."""

    channel: str
    user_id: str = ""
    thread_ts: str | None = None  # reply into this thread; None → a new channel message
    response_url: str | None = None  # for ephemeral replies


def command_word(text: str) -> str:
    """The /heap subcommand named in ``text``, for metrics ("unknown" if unparsable)."""
    try:
        word = handlers.parse(text).command
    except HeapbotError:
        return "unknown"
    return word if word in handlers.COMMANDS else "unknown"


class AckGate:
    """Holds background work back while acks are still streaming in.

    ``note()`` is called for every acked request; ``wait()`` returns once no
    request has been acked for ``quiet`` seconds, or after ``max_wait`` at most
    (a steady stream of commands must not starve the work it asked for).
    """

    def __init__(self, quiet: float = 0.1, max_wait: float = 1.0) -> None:
        self.quiet = quiet
        self.max_wait = max_wait
        self.last_ack = -1e9

    def note(self) -> None:
        self.last_ack = time.monotonic()

    async def wait(self) -> None:
        deadline = time.monotonic() + self.max_wait
        while True:
            now = time.monotonic()
            pause = min(self.last_ack + self.quiet, deadline) - now
            if pause <= 0:
                return
            await asyncio.sleep(pause)


class CommandRunner:
    """Background execution of commands with bounded concurrency and kept references."""

    def __init__(self, runtime: Runtime, client: AsyncWebClient, threads: ThreadMemory,
                 limiter: ChannelRateLimiter, *, max_running: int = 8,
                 max_pending: int = 200) -> None:
        self.runtime = runtime
        self.client = client
        self.threads = threads
        self.limiter = limiter
        self.usergroups = UserGroups(client)
        self.max_pending = max_pending
        self._slots = asyncio.Semaphore(max_running)
        self._tasks: set[asyncio.Task[None]] = set()
        self.ack_gate = AckGate()

    @property
    def pending(self) -> int:
        return len(self._tasks)

    def has_room(self) -> bool:
        return len(self._tasks) < self.max_pending

    def submit(self, text: str, target: ReplyTarget, *, source: str = "slack",
               started: float | None = None) -> asyncio.Task[None]:
        """Start running ``text`` for ``target``; the task is kept until it finishes."""
        started = time.monotonic() if started is None else started
        self.ack_gate.note()
        task = asyncio.create_task(self._run_after_acks(text, target, source, started),
                                   name=f"heap:{command_word(text)}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _run_after_acks(self, text: str, target: ReplyTarget, source: str,
                              started: float) -> None:
        await self.ack_gate.wait()
        await self.run(text, target, source=source, started=started)

    async def run(self, text: str, target: ReplyTarget, *, source: str = "slack",
                  started: float | None = None) -> str:
        """Run one command and publish its reply; return the posted ts ("" if ephemeral)."""
        started = time.monotonic() if started is None else started
        async with self._slots:
            try:
                reply = await self._answer(text, target, source)
            except Exception:  # handlers.run turns errors into replies; this is a bug
                error_id = secrets.token_hex(4)
                log.exception("internal error %s running a Slack command", error_id)
                reply = Reply.failure(
                    f"heapbot hit an internal error (id {error_id}); it is in heapbot's log.")
            ts = await self.publish(reply, target)
        REPLY_SECONDS.labels(command_word(text)).observe(time.monotonic() - started)
        return ts

    async def _invocation(self, text: str, target: ReplyTarget,
                          source: str) -> handlers.Invocation:
        """``text`` with the thread's service and the user's groups filled in."""
        thread_service = await self.threads.service_of(target.channel, target.thread_ts)
        membership = await self.usergroups.membership(self.runtime, target.user_id)
        return handlers.Invocation(
            text=text, user_id=target.user_id, channel_id=target.channel,
            user_groups=membership.groups, thread_service=thread_service, source=source,
            unknown_groups=membership.unknown)

    async def _answer(self, text: str, target: ReplyTarget, source: str) -> Reply:
        """The handlers' Reply for ``text`` from ``target``."""
        return await handlers.run(self.runtime, await self._invocation(text, target, source))

    async def refusal(self, text: str, target: ReplyTarget, *, source: str = "slack"
                      ) -> str | None:
        """What :meth:`run` would refuse ``text`` with before working, or None if it passes.

        For the ack: a command that will be refused is answered by its refusal alone,
        never by "capturing demo…" first. May read Redis and look up user groups; the
        caller bounds how long.
        """
        return await handlers.refusal(self.runtime, await self._invocation(text, target, source))

    async def publish(self, reply: Reply, target: ReplyTarget) -> str:
        """Post ``reply`` and remember which service its thread is about."""
        try:
            ts = await post_reply(self.client, target.channel, reply, target.thread_ts,
                                  user_id=target.user_id or None,
                                  response_url=target.response_url, limiter=self.limiter)
        except HeapbotError as exc:
            log.warning("could not publish a reply in %s: %s", target.channel, exc.message)
            await self._tell_asker(exc, target)
            return ""
        except Exception:
            log.exception("could not publish a reply in %s", target.channel)
            return ""
        if ts and reply.service:
            await self.threads.remember(target.channel, target.thread_ts or ts, reply.service)
        if ts and reply.data and reply.data.get("sampling_id"):
            await self._sampling_thread(str(reply.data["sampling_id"]), target, ts)
        return ts

    async def _sampling_thread(self, sampling_id: str, target: ReplyTarget, ts: str) -> None:
        """A --sample reply was posted: its verdict, posted later by the worker, goes there."""
        try:
            await self.runtime.set_sampling_thread(sampling_id, target.channel,
                                                   target.thread_ts or ts)
        except Exception as exc:  # the verdict then starts its own message in the channel
            log.warning("could not record the thread of sampling %s: %s", sampling_id,
                        type(exc).__name__)

    async def _tell_asker(self, exc: HeapbotError, target: ReplyTarget) -> None:
        """Best effort: tell the asker privately that their reply could not be posted."""
        if not (target.response_url or target.user_id):
            return
        failure = Reply.failure(f"heapbot could not post its reply here: {exc.user_message()}")
        try:
            await post_ephemeral(self.client, target.channel, failure, user_id=target.user_id,
                                 response_url=target.response_url, thread_ts=target.thread_ts)
        except Exception as second:  # nothing more we can do than log it
            log.warning("could not tell the asker either: %s", second)

    async def drain(self, timeout: float = 30.0) -> None:
        """Let running commands finish (on shutdown); cancel what is left after ``timeout``."""
        if not self._tasks:
            return
        _done, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
