"""At most one post per second per channel, as Slack asks of bots in bursts.

Slack tolerates short bursts but throttles a channel that sees more than about
one message a second; spacing posts ourselves keeps a burst of button clicks
from turning into 429s and out-of-order replies.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class ChannelRateLimiter:
    """Spaces calls per channel by ``interval`` seconds; channels do not wait for each other."""

    def __init__(self, interval: float = 1.0, *, max_channels: int = 10_000) -> None:
        self.interval = interval
        self.max_channels = max_channels
        self._next_slot: dict[str, float] = {}
        self._lock = asyncio.Lock()

    async def wait(self, channel: str) -> float:
        """Wait for this channel's next slot; return the seconds waited."""
        async with self._lock:
            now = time.monotonic()
            slot = max(now, self._next_slot.get(channel, 0.0))
            self._next_slot[channel] = slot + self.interval
            if len(self._next_slot) > self.max_channels:
                self._forget_idle(now)
        delay = slot - now
        if delay > 0:
            await asyncio.sleep(delay)
        return delay

    @asynccontextmanager
    async def slot(self, channel: str) -> AsyncIterator[None]:
        await self.wait(channel)
        yield

    def _forget_idle(self, now: float) -> None:
        for channel in [c for c, t in self._next_slot.items() if t < now]:
            del self._next_slot[channel]
