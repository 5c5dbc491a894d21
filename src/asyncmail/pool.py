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

Loop-bound primitives are created lazily inside the loop that uses them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import anyio

__all__ = ["ConnectionPool", "PoolLimits", "Pooled"]

C = TypeVar("C")


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

    :param connect: opens a new, ready-to-use connection (or raises).
    :param close: closes a connection politely (e.g. QUIT); must not raise.
    :param is_usable: cheap check that a connection is still sound.
    :param probe: a round trip proving the connection alive (e.g. NOOP).
    """

    def __init__(
        self,
        connect: Callable[[], Awaitable[C]],
        close: Callable[[C], Awaitable[None]],
        is_usable: Callable[[C], bool],
        probe: Callable[[C], Awaitable[bool]],
        limits: PoolLimits,
    ) -> None:
        self._connect = connect
        self._close = close
        self._is_usable = is_usable
        self._probe = probe
        self.limits = limits
        self._idle: list[Pooled[C]] = []
        self._in_use = 0
        self._slots: asyncio.Semaphore | None = None
        self._closed = False
        self.opened = 0  # connections opened over the pool's life (for tests)

    @property
    def idle(self) -> int:
        return len(self._idle)

    @property
    def in_use(self) -> int:
        return self._in_use

    def _semaphore(self) -> asyncio.Semaphore:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.limits.max_connections)
        return self._slots

    async def acquire(self) -> Pooled[C]:
        """A connection for one use: an idle one if sound, else a new one.

        Waits while ``max_connections`` are in use.
        """
        slots = self._semaphore()
        await slots.acquire()
        self._in_use += 1
        try:
            return await self._take()
        except BaseException:
            self._in_use -= 1
            slots.release()
            raise

    async def _expire_idle(self) -> None:
        """Close idle connections past their limits, oldest first: reuse is
        last-in first-out, so the bottom of the stack would otherwise never
        be looked at while the pool stays busy."""
        now = time.monotonic()
        while self._idle and self._expired(self._idle[0], now):
            await self._discard(self._idle.pop(0))

    async def _take(self) -> Pooled[C]:
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
        entry = Pooled(await self._connect())
        self.opened += 1
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
            if (
                reusable
                and not self._closed
                and self._is_usable(entry.connection)
                and not self._expired(entry, entry.last_used)
            ):
                self._idle.append(entry)
            else:
                await self._discard(entry)
        finally:
            self._in_use -= 1
            self._semaphore().release()

    async def _discard(self, entry: Pooled[C]) -> None:
        with anyio.CancelScope(shield=True):
            await self._close(entry.connection)

    async def close(self) -> None:
        """Close every idle connection (those in use close when released)."""
        self._closed = True
        idle, self._idle = self._idle, []
        for entry in idle:
            await self._discard(entry)
