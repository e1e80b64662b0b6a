"""What the job runners of one replica share (paged threads, watches, deploy, capture)."""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis
from slack_sdk.web.async_client import AsyncWebClient

from bot.jobs import JobQueue, QueueSettings
from bot.runtime import Runtime
from bot.settings import Settings


@dataclass(slots=True)
class WorkContext:
    """One replica's Runtime, settings, queue and Slack client (None: Slack not configured)."""

    runtime: Runtime
    settings: Settings | None
    config: QueueSettings
    queue: JobQueue
    slack: AsyncWebClient | None
    consumer: str = "heapbot"

    @property
    def redis(self) -> aioredis.Redis:
        return self.queue.redis
