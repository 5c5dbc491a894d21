"""Blocking helpers run in worker threads, bounded.

asyncmail moves the few blocking calls it makes (the FQDN look-up, loading
the CA store for a TLS context) off the event loop with
:func:`anyio.to_thread.run_sync`. anyio's default limiter allows 40 worker
threads per loop, and an idle worker lingers for 10 seconds, so a burst of
concurrent first sends (50 blocking ``send_mail`` calls from 50 threads,
each building a TLS context) used to leave ~40 "AnyIO worker thread"s
behind. :func:`run_sync` runs them under asyncmail's own limiter instead:
at most :data:`MAX_THREADS` at once per event loop, the rest queue.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, TypeVar

import anyio
import anyio.to_thread
from anyio.lowlevel import RunVar

__all__ = ["MAX_THREADS", "run_sync"]

T = TypeVar("T")

#: Worker threads asyncmail's blocking helpers use at most, per event loop.
MAX_THREADS: Final = 4

_limiter: RunVar[anyio.CapacityLimiter] = RunVar("asyncmail_thread_limiter")


async def run_sync(function: Callable[[], T]) -> T:
    """``function()`` in a worker thread, at most MAX_THREADS at once."""
    try:
        limiter = _limiter.get()
    except LookupError:
        limiter = anyio.CapacityLimiter(MAX_THREADS)
        _limiter.set(limiter)
    return await anyio.to_thread.run_sync(function, limiter=limiter)
