"""A token bucket shared by concurrent senders: at most ``rate`` messages a
second on average, with bursts of up to ``burst``.

Callers ``await acquire()`` before a message is assigned to a connection;
when the bucket is empty they wait (in order of arrival) for the next token,
which is how a fast producer is slowed to the rate the relay allows.
"""

from __future__ import annotations

import asyncio
import time

__all__ = ["RateLimiter"]


class RateLimiter:
    """Token bucket: *rate* tokens a second, holding at most *burst*."""

    def __init__(self, rate: float, burst: int | None = None) -> None:
        if rate <= 0:
            raise ValueError("rate must be a positive number of messages a second")
        self.rate = float(rate)
        self.burst = max(1, int(burst if burst is not None else max(1.0, rate)))
        self._tokens = float(self.burst)
        self._updated = time.monotonic()
        self._lock: asyncio.Lock | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _refill(self) -> None:
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
        self._updated = now

    async def acquire(self) -> None:
        """Take one token, waiting for it if the bucket is empty."""
        loop = asyncio.get_running_loop()
        if self._lock is None or self._loop is not loop:
            # A lock belongs to the loop that first waited on it, and a backend
            # may be used from several (the blocking API's, the caller's).
            self._lock = asyncio.Lock()
            self._loop = loop
        async with self._lock:  # first come, first served
            self._refill()
            if self._tokens < 1:
                await asyncio.sleep((1 - self._tokens) / self.rate)
                self._refill()
            self._tokens -= 1
