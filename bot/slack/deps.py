"""What every listener needs, built once per process."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from slack_sdk.web.async_client import AsyncWebClient

from bot import keys
from bot.slack.ratelimit import ChannelRateLimiter
from bot.slack.seen import SharedSeenSet
from bot.slack.threads import ThreadMemory
from bot.slack.work import CommandRunner

if TYPE_CHECKING:
    from bot.runtime import Runtime


@dataclass(slots=True)
class SlackDeps:
    runtime: Runtime
    client: AsyncWebClient
    runner: CommandRunner
    threads: ThreadMemory
    limiter: ChannelRateLimiter
    # How long the checks before an ack may take (Settings.slack_preflight_seconds).
    preflight_seconds: float = 1.0
    # Slack redelivers an event it thinks we missed (to any replica); do its work once.
    seen_events: SharedSeenSet = field(
        default_factory=lambda: SharedSeenSet(None, keys.SLACK_EVENT_SEEN, 3600))


def build_deps(runtime: Runtime, client: AsyncWebClient, threads: ThreadMemory,
               *, channel_interval: float = 1.0, max_running: int = 8,
               preflight_seconds: float = 1.0) -> SlackDeps:
    limiter = ChannelRateLimiter(channel_interval)
    runner = CommandRunner(runtime, client, threads, limiter, max_running=max_running)
    return SlackDeps(runtime=runtime, client=client, runner=runner, threads=threads,
                     limiter=limiter, preflight_seconds=preflight_seconds,
                     seen_events=SharedSeenSet(threads.redis, keys.SLACK_EVENT_SEEN, 3600))
