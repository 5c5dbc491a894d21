"""A rate limit shared by concurrent senders: at most ``rate`` messages in
any one second, evenly spaced, with an optional burst.

Two rules hold together for every grant:

* **spacing** (a generic cell rate algorithm): grants come at least
  ``1 / rate`` seconds apart, except that after a pause up to ``burst``
  (default 1: none) may go back to back. Idle time is never saved up beyond
  that, so a batch starting on an idle limiter, or after a second of quiet
  on an open backend, does not rush;
* **window** (a sliding log of the last ``ceil(rate)`` grants): never more
  than ``ceil(rate)`` grants in any ``ceil(rate) / rate`` seconds, i.e. for a
  whole-number rate never more than ``rate`` in any one-second window,
  however the burst is set and however late the event loop wakes.

So with ``burst=1`` a 100 ms window holds at most ``rate / 10`` grants, plus
one where a window's edges fall on two grants. The guarantee is on the
moment a message is granted, which the SMTP backend does just before it
writes the message's first command; what a server sees may shift by the
network's and the two event loops' jitter (a few milliseconds).

Callers ``await acquire()``; when no grant is due they wait, in order of
arrival, which is how a fast producer is slowed to the rate the relay
allows.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque

from .threads import SharedLock

__all__ = ["RateLimiter"]


class RateLimiter:
    """At most *rate* grants a second, evenly spaced; *burst* back to back
    after a pause (at most ``ceil(rate)``)."""

    def __init__(self, rate: float, burst: int = 1) -> None:
        if not rate > 0 or math.isinf(rate):
            raise ValueError("rate must be a positive number of messages a second")
        if isinstance(burst, bool) or not isinstance(burst, int) or burst < 1:
            raise ValueError("burst must be a whole number of messages, at least 1")
        self.rate = float(rate)
        self._interval = 1.0 / self.rate
        self._size = max(1, math.ceil(self.rate))  # grants in the sliding log
        self._window = self._size / self.rate  # seconds the log spans
        self.burst = min(burst, self._size)
        self._recent: deque[float] = deque(maxlen=self._size)
        self._due = -math.inf  # the theoretical time of the next grant
        # One lock for every event loop and thread: a backend may be used from
        # several loops at once (the blocking API's, the caller's), and the
        # rate holds over all of them.
        self._lock = SharedLock()

    def _earliest(self, now: float) -> float:
        """The earliest time a grant is allowed (now or later)."""
        earliest = max(self._due, now) - (self.burst - 1) * self._interval
        recent = self._recent
        if len(recent) == self._size:
            earliest = max(earliest, recent[0] + self._window)
        return max(earliest, now)

    async def acquire(self) -> None:
        """Take one grant, waiting until it is allowed."""
        async with self._lock:  # first come, first served (over every loop)
            now = time.monotonic()
            slot = earliest = self._earliest(now)
            while earliest > now:
                # A timer may fire a hair early: check again, never grant early.
                await asyncio.sleep(earliest - now)
                now = time.monotonic()
                earliest = self._earliest(now)
            # A caller that queued for its grant had it due at *slot*: the
            # next one is due an interval after that, not after the moment
            # the timer woke us (a timer's lateness would otherwise slow the
            # rate down, a little every time). One that arrived after its
            # grant was due starts the spacing afresh: idle time is not
            # saved up. The log holds the real times (the window is exact).
            self._due = max(self._due, slot) + self._interval
            self._recent.append(now)
