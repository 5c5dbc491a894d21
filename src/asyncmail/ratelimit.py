"""A token bucket shared by concurrent senders: at most ``rate`` messages a
second on average, with bursts of up to ``burst``.

Callers ``await acquire()`` before a message is assigned to a connection;
when the bucket is empty they wait (in order of arrival) for the next token,
which is how a fast producer is slowed to the rate the relay allows.
"""

from __future__ import annotations

import asyncio
import time
import weakref

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
        # One lock per event loop: asyncio locks belong to one loop, and a
        # backend may be used from several (the blocking API's, the caller's).
        self._locks: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, asyncio.Lock
        ] = weakref.WeakKeyDictionary()

    def _refill(self) -> None:
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
        self._updated = now

    async def acquire(self) -> None:
        """Take one token, waiting for it if the bucket is empty."""
        lock = self._locks.get(asyncio.get_running_loop())
        if lock is None:
            lock = self._locks[asyncio.get_running_loop()] = asyncio.Lock()
        async with lock:  # first come, first served (within a loop)
            self._refill()
            if self._tokens < 1:
                await asyncio.sleep((1 - self._tokens) / self.rate)
                self._refill()
            self._tokens -= 1
