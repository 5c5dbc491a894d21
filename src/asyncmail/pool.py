"""A bounded pool of reusable connections, independent of the protocol.

The SMTP backend keeps its connections here. The pool bounds how many
connections are *in use* at once (``max_connections``) separately from how
many may sit idle, and retires a connection when it has carried
``max_messages`` messages, lived ``max_lifetime`` seconds, or sat idle longer
than ``idle_timeout``. A connection that sat idle longer than ``probe_after``
is probed (SMTP: NOOP) before reuse; one that fails the probe is discarded.

A connection handed back with ``reusable=False`` (it saw an I/O error, a
timeout, a 421, a cancellation, or anything unexpected) is closed, never
reused. Idle connections are reused last-in first-out, so a quiet pool
shrinks on its own through the idle timeout.

A holder may also *lend* a connection back before it is done with it
(:meth:`ConnectionPool.lend`): SMTP does so once a message's end of data is
written, so that the next message's commands follow it on the same
connection while the reply to the first is still on its way.

When the server refuses a new connection because it is at its connection
limit (SMTP: 421 at the greeting while other connections to it are open),
the caller reports it with :meth:`ConnectionPool.hold`: the pool stops
opening connections beyond those it has for a while, and callers wait for
one of them instead (back-pressure, not a failure).

After ``os.fork()`` a child must never use the parent's connections (they
are the parent's sockets, shared): every pool of the process is *orphaned*
in the child at once, releasing the child's copies of those sockets without
writing a byte (see :meth:`ConnectionPool.orphan`).

Loop-bound primitives are created lazily inside the loop that uses them.
They are anyio's, as everywhere above the protocol layer (see
:mod:`asyncmail.backends.smtp`), but for two: the task a new connection is
made in, for its traceback (see :meth:`ConnectionPool._take`), and the
connection slots (:class:`_Slots`), whose wait under a deadline is one loop
timer rather than a cancel scope: with pipelining, every message waits there
for the connection the one ahead hands on.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import anyio

__all__ = ["ConnectionPool", "PoolLimits", "Pooled", "fail_at"]

C = TypeVar("C")

#: Every pool of this process, to orphan them in a forked child.
_POOLS: weakref.WeakSet[ConnectionPool[Any]] = weakref.WeakSet()
#: What forked children inherited: kept, never finalised (see orphan()).
_ORPHANS: list[object] = []


def fail_at(deadline: float | None) -> AbstractContextManager[anyio.CancelScope]:
    """A scope raising TimeoutError at loop time *deadline* (None: never)."""
    return anyio.fail_after(
        None if deadline is None else deadline - anyio.current_time()
    )


class _Slots:
    """The pool's connections in use, bounded: a counting semaphore, first
    come first served, whose wait takes a loop-time deadline (TimeoutError)
    as one timer. A released slot goes straight to the first waiter."""

    __slots__ = ("_free", "_waiters")

    def __init__(self, count: int) -> None:
        self._free = count
        self._waiters: deque[asyncio.Future[None]] = deque()

    def take_nowait(self) -> bool:
        if self._free:  # never with waiters: a release hands on to them
            self._free -= 1
            return True
        return False

    async def take(self, deadline: float | None) -> None:
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiters.append(waiter)
        timer = None if deadline is None else loop.call_at(deadline, _expire, waiter)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled() and not waiter.exception():
                self.give()  # handed a slot just as it was cancelled: pass it on
            elif waiter in self._waiters:
                self._waiters.remove(waiter)
            raise
        finally:
            if timer is not None:
                timer.cancel()

    def give(self) -> None:
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():  # else timed out or cancelled
                waiter.set_result(None)
                return
        self._free += 1


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


def _after_fork_in_child() -> None:
    for pool in list(_POOLS):
        pool.orphan()


os.register_at_fork(after_in_child=_after_fork_in_child)


@dataclass(frozen=True, slots=True)
class PoolLimits:
    """The bounds of a :class:`ConnectionPool` (None: no bound)."""

    max_connections: int = 1
    max_messages: int | None = None
    max_lifetime: float | None = None
    idle_timeout: float | None = 60.0
    probe_after: float | None = 10.0

    def __post_init__(self) -> None:
        if self.max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        if self.max_messages is not None and self.max_messages < 1:
            raise ValueError("max_messages must be at least 1 or None")
        for name in ("max_lifetime", "idle_timeout", "probe_after"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must be 0 or more seconds, or None")


@dataclass(slots=True)
class Pooled(Generic[C]):
    """A connection in the pool, with the bookkeeping the limits need."""

    connection: C
    created: float = field(default_factory=time.monotonic)
    last_used: float = field(default_factory=time.monotonic)
    messages: int = 0


class ConnectionPool(Generic[C]):
    """Hands out connections made by *connect*, within :class:`PoolLimits`.

    :param connect: opens a new, ready-to-use connection (or raises), by the
        loop time it is given (None: no bound).
    :param close: closes a connection politely (e.g. QUIT); must not raise.
    :param is_usable: cheap check that a connection is still sound.
    :param probe: a round trip proving the connection alive (e.g. NOOP).
    :param detach: in a forked child, let go of a connection without any
        I/O (release this process's copy of its socket).
    """

    def __init__(
        self,
        connect: Callable[[float | None], Coroutine[Any, Any, C]],
        close: Callable[[C], Awaitable[None]],
        is_usable: Callable[[C], bool],
        probe: Callable[[C], Awaitable[bool]],
        limits: PoolLimits,
        *,
        detach: Callable[[C], None] | None = None,
    ) -> None:
        self._connect = connect
        self._close = close
        self._is_usable = is_usable
        self._probe = probe
        self._detach = detach
        self.limits = limits
        self._idle: list[Pooled[C]] = []
        self._live: dict[int, Pooled[C]] = {}  # every open connection, by id
        self._in_use = 0
        self._slots: _Slots | None = None
        self._changed: anyio.Event | None = None  # returned, made or failed
        self._connecting = 0  # connections being made right now
        self._hold: int | None = None  # open no more than this many...
        self._hold_until = 0.0  # ...until then (monotonic time)
        self._closed = False
        self.orphaned = False  # forked: the connections are the parent's
        #: Connections opened over the pool's life (the backend's breaker
        #: tells a new connection from a reused one by it).
        self.opened = 0
        _POOLS.add(self)

    @property
    def idle(self) -> int:
        return len(self._idle)

    @property
    def in_use(self) -> int:
        return self._in_use

    @property
    def connections(self) -> int:
        """Open connections, idle or in use (not counting ones being made)."""
        return len(self._live)

    @property
    def connecting(self) -> int:
        """Connections being made right now."""
        return self._connecting

    def hold(self, seconds: float) -> None:
        """Open no more connections than there are (open or being made) for
        *seconds*: the server said it is at its limit. Callers needing a new
        connection meanwhile wait for one of those to come back."""
        self._hold = max(1, len(self._live) + self._connecting)
        self._hold_until = time.monotonic() + seconds

    def _held(self) -> bool:
        if self._hold is None:
            return False
        busy = len(self._live) + self._connecting
        if time.monotonic() >= self._hold_until or not busy:
            self._hold = None
            return False
        return busy >= self._hold

    def orphan(self) -> None:
        """In a forked child: the connections are the parent's. Never use,
        close or QUIT them here (that would speak on the parent's sessions);
        detach each (release the child's copy of its socket) and keep the
        objects referenced forever, so that nothing finalises them."""
        self.orphaned = True
        self._closed = True
        live, self._live = list(self._live.values()), {}
        self._idle = []
        self._slots = None
        self._changed = None
        self._in_use = 0
        self._connecting = 0
        if self._detach is not None:
            for entry in live:
                with contextlib.suppress(Exception):  # best effort, no I/O
                    self._detach(entry.connection)
        _ORPHANS.append(live)

    def _semaphore(self) -> _Slots:
        if self._slots is None:
            self._slots = _Slots(self.limits.max_connections)
        return self._slots

    async def acquire(self, deadline: float | None = None) -> Pooled[C]:
        """A connection for one use: an idle one if sound, else a new one.

        Waits while ``max_connections`` are in use. *deadline* (a loop time)
        bounds waiting (TimeoutError) and connecting (the *connect*
        callback's own error).
        """
        slots = self._semaphore()
        if not slots.take_nowait():
            await slots.take(deadline)
        self._in_use += 1
        try:
            return await self._take(deadline)
        except BaseException:
            if not self.orphaned:
                self._in_use -= 1
                slots.give()
            raise

    async def _expire_idle(self) -> None:
        """Close idle connections past their limits, oldest first: reuse is
        last-in first-out, so the bottom of the stack would otherwise never
        be looked at while the pool stays busy."""
        now = time.monotonic()
        while self._idle and self._expired(self._idle[0], now):
            await self._discard(self._idle.pop(0))

    async def _take(self, deadline: float | None) -> Pooled[C]:
        if self._idle and self._expired(self._idle[0], time.monotonic()):
            await self._expire_idle()
        while self._idle:
            entry = self._idle.pop()
            if self._expired(entry, time.monotonic()) or not self._is_usable(
                entry.connection
            ):
                await self._discard(entry)
                continue
            probe_after = self.limits.probe_after
            if (
                probe_after is not None
                and time.monotonic() - entry.last_used > probe_after
            ):
                try:
                    alive = await self._probe(entry.connection)
                except BaseException:
                    await self._discard(entry)  # cancelled mid-probe
                    raise
                if not alive:
                    await self._discard(entry)
                    continue
            return entry
        if self._held():
            # The server is at its connection limit: wait for a connection
            # to come back (or the hold to end) instead of opening one more.
            returned = self._changed = anyio.Event()
            wait = max(0.0, self._hold_until - time.monotonic())
            with fail_at(deadline), anyio.move_on_after(wait):
                await returned.wait()
            return await self._take(deadline)
        self._connecting += 1
        try:
            # In a task of its own (cancelled with the caller): a failure's
            # traceback then starts there, and the frames above it here (with
            # the message being sent) are not kept by the error's causes.
            task: asyncio.Task[C] = asyncio.get_running_loop().create_task(
                self._connect(deadline)
            )
            entry = Pooled(await task)
        finally:
            self._connecting -= 1
            if self._changed is not None:
                self._changed.set()  # made or failed: waiters look again
        self.opened += 1
        self._live[id(entry)] = entry
        return entry

    def _expired(self, entry: Pooled[C], now: float) -> bool:
        limits = self.limits
        return (
            (
                limits.max_lifetime is not None
                and now - entry.created > limits.max_lifetime
            )
            or (
                limits.idle_timeout is not None
                and now - entry.last_used > limits.idle_timeout
            )
            or (
                limits.max_messages is not None
                and entry.messages >= limits.max_messages
            )
        )

    async def release(self, entry: Pooled[C], *, reusable: bool) -> None:
        """Give a connection back; one that is not *reusable* is closed."""
        try:
            entry.last_used = time.monotonic()
            if self.orphaned or id(entry) not in self._live:
                return  # the parent's connection: not ours to keep or close
            if (
                reusable
                and not self._closed
                and self._is_usable(entry.connection)
                and not self._expired(entry, entry.last_used)
            ):
                self._idle.append(entry)
                if self._changed is not None:
                    self._changed.set()
            else:
                await self._discard(entry)
        finally:
            if not self.orphaned:
                self._in_use -= 1
                self._semaphore().give()

    def lend(self, entry: Pooled[C]) -> bool:
        """Give a connection back while its holder still awaits replies on it
        (SMTP: the reply to an end of data, with the next message pipelined
        behind it). False, and nothing changes, when it cannot be reused
        (the holder then releases it as usual); True: it is idle, and the
        holder must not release it again (only retire it if its last reply
        says the session is over)."""
        now = time.monotonic()
        if (
            self.orphaned
            or self._closed
            or id(entry) not in self._live
            or not self._is_usable(entry.connection)
            or self._expired(entry, now)
        ):
            return False
        entry.last_used = now
        self._idle.append(entry)
        if self._changed is not None:
            self._changed.set()
        self._in_use -= 1
        self._semaphore().give()
        return True

    async def _discard(self, entry: Pooled[C]) -> None:
        self._live.pop(id(entry), None)
        if self._changed is not None:
            self._changed.set()  # room for a new connection
        with anyio.CancelScope(shield=True):
            await self._close(entry.connection)

    async def close(self) -> None:
        """Close every idle connection (those in use close when released)."""
        self._closed = True
        idle, self._idle = self._idle, []
        if len(idle) == 1:
            await self._discard(idle[0])
            return
        # All at once: each QUIT waits a round trip for its reply, which one
        # after another would cost a round trip per connection.
        async with anyio.create_task_group() as group:
            for entry in idle:
                group.start_soon(self._discard, entry)
