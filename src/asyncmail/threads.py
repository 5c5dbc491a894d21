"""Threads and event loops: the one lock they share, and bounded workers.

asyncmail's calls arrive from many threads and event loops at once (the
blocking API's library loop, an application's own loop, a Celery worker's
threads). Two helpers cover what they need beyond one loop:

:class:`SharedLock`
    **The one way to serialise work across threads and event loops.** An
    asyncio lock belongs to one loop, and a ``threading.Lock`` blocks the
    loop that waits for it; this lock is taken with ``with`` from blocking
    code and ``async with`` from any loop (the wait does not block the
    loop), first come first served over all of them. It is reset in a
    forked child (a lock held by another thread of the parent at the fork
    would otherwise stay locked there for ever). Settings, the FQDN cache,
    the test outbox and routing and the Django settings memo use it.

:func:`run_sync`
    Blocking helpers (the FQDN look-up, loading the CA store for a TLS
    context) off the event loop, in at most :data:`MAX_THREADS` worker
    threads per loop. anyio's default limiter allows 40 and an idle worker
    lingers for 10 seconds, so a burst of first sends (50 blocking
    ``send_mail`` calls from 50 threads, each building a TLS context) used
    to leave ~40 "AnyIO worker thread"s behind.

The concurrency vocabulary above the protocol layer is anyio's (task
groups, cancel scopes, ``to_thread``, sleeps, timeouts), as the blocking
portal in :mod:`asyncmail.portal` is: structured concurrency, and the same
names whichever loop runs the code. asyncio's own names appear only where
anyio has none: loop hooks (a default executor, a task run in a given
context, signal handlers), a task that outlives its call (the web inbox's
HTTP server), the SMTP protocol layer (transports and protocols) and, here,
waking a waiter on another thread's loop (``call_soon_threadsafe``).
"""

from __future__ import annotations

import asyncio
import os
import threading
import weakref
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import Final, TypeVar

import anyio
import anyio.to_thread
from anyio.lowlevel import RunVar

__all__ = ["MAX_THREADS", "SharedLock", "run_sync"]

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


class _Waiter:
    """One caller waiting for a :class:`SharedLock`: a thread (``loop`` is
    None, woken through an Event) or a task on ``loop``."""

    __slots__ = ("abandoned", "event", "future", "granted", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop | None) -> None:
        self.loop = loop
        self.event = threading.Event() if loop is None else None
        self.future: asyncio.Future[None] | None = (
            None if loop is None else loop.create_future()
        )
        self.granted = False
        self.abandoned = False

    def grant(self) -> bool:
        """Hand the lock over (called under the lock's guard); False when
        this waiter can no longer take it (cancelled, or its loop closed)."""
        if self.abandoned:
            return False
        if self.event is not None:
            self.granted = True
            self.event.set()
            return True
        assert self.loop is not None
        try:
            self.loop.call_soon_threadsafe(self._wake)
        except RuntimeError:  # the loop is closed: nobody left to wake
            return False
        self.granted = True
        return True

    def _wake(self) -> None:
        if self.future is not None and not self.future.done():
            self.future.set_result(None)


class SharedLock:
    """A lock for every thread and event loop of the process.

    ``with lock:`` in blocking code, ``async with lock:`` on any event loop
    (waiting there does not block the loop). Waiters, of both kinds, get the
    lock in the order they asked for it; a released lock is handed straight
    to the next one. Not reentrant. A task cancelled while waiting gives its
    turn to the next waiter.

    Blocking code must not wait for it on a thread whose event loop holds it
    (the holder could never resume): that raises RuntimeError instead of
    hanging.

    In a child process made by ``os.fork()`` every SharedLock starts free:
    the threads and loops that held or awaited it exist only in the parent.
    """

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._held = False
        self._holder_loop: asyncio.AbstractEventLoop | None = None
        self._waiters: deque[_Waiter] = deque()
        _every_lock.add(self)

    def locked(self) -> bool:
        return self._held

    # -- blocking ---------------------------------------------------------------

    def acquire(self, blocking: bool = True) -> bool:
        """Take the lock, waiting in this thread (unless not *blocking*)."""
        with self._guard:
            if not self._held:
                self._take(None)
                return True
            if not blocking:
                return False
            if self._holder_loop is not None and self._holder_loop is _running_loop():
                raise RuntimeError(
                    "SharedLock: a blocking wait on the event loop that holds "
                    "the lock would never end; use 'async with' there"
                )
            waiter = _Waiter(None)
            self._waiters.append(waiter)
        assert waiter.event is not None
        waiter.event.wait()
        return True

    def release(self) -> None:
        """Release the lock, or hand it to the next waiter."""
        with self._guard:
            if not self._held:
                raise RuntimeError("SharedLock released while not held")
            while self._waiters:
                waiter = self._waiters.popleft()
                if waiter.grant():
                    self._holder_loop = waiter.loop
                    return
            self._held = False
            self._holder_loop = None

    def __enter__(self) -> None:
        self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()

    # -- async ------------------------------------------------------------------

    async def __aenter__(self) -> None:
        loop = asyncio.get_running_loop()
        with self._guard:
            if not self._held:
                self._take(loop)
                return
            waiter = _Waiter(loop)
            self._waiters.append(waiter)
        assert waiter.future is not None
        try:
            await waiter.future
        except BaseException:  # cancelled while waiting
            with self._guard:
                if not waiter.granted:
                    waiter.abandoned = True
                    self._waiters.remove(waiter)
                    raise
            self.release()  # granted meanwhile: pass it on
            raise

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()

    # -- internals ----------------------------------------------------------------

    def _take(self, loop: asyncio.AbstractEventLoop | None) -> None:
        self._held = True
        self._holder_loop = loop

    def _reset(self) -> None:
        self._guard = threading.Lock()
        self._held = False
        self._holder_loop = None
        self._waiters = deque()


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


_every_lock: weakref.WeakSet[SharedLock] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # The parent's holders and waiters are not in the child: start free.
    # (The WeakSet is iterated with no other thread running: the child has
    # only the thread that forked.)
    for lock in list(_every_lock):
        lock._reset()


os.register_at_fork(after_in_child=_after_fork_in_child)
