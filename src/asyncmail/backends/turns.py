"""Turns: how many messages of a batch are before their end of data at once.

With pipelining a connection carries up to ``pipeline_depth`` messages: one
in its envelope or data, the others only awaiting their last reply. Every
task that sends (a worker of :meth:`EmailBackend.dispatch
<asyncmail.backends.smtp.EmailBackend.dispatch>`, a consumer of an outbox
:class:`~asyncmail.queue.Worker`) takes a turn before it takes a message,
and the turn comes back as soon as that message's end of data is written and
its connection handed on (:meth:`Lease.lend`), or else when its delivery
ends. So no more messages wait for a connection, or write, than there are
connections, and a message waiting for its turn has not been taken yet: its
deadline has not started.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING

import anyio

if TYPE_CHECKING:
    from ..pool import ConnectionPool, Pooled
    from ..smtp.connection import SMTPConnection

__all__ = ["Lease", "Turn", "Turns"]


class Turns:
    """*count* turns, shared by the tasks that join them."""

    __slots__ = ("_gate",)

    def __init__(self, count: int) -> None:
        self._gate = anyio.Semaphore(count, fast_acquire=True)

    def join(self) -> Turn:
        """The calling task's turn, given back by :meth:`Lease.lend` when a
        message sent from this task hands its connection on. Call it once,
        in each task that sends."""
        turn = Turn(self._gate)
        _TURN.set(turn)  # this task's context only
        return turn


class Turn:
    """One sending task's turn: taken before each message, given back once."""

    __slots__ = ("gate", "held")

    def __init__(self, gate: anyio.Semaphore) -> None:
        self.gate = gate
        self.held = False

    async def take(self) -> None:
        await self.gate.acquire()
        self.held = True

    def give_back(self) -> None:
        if self.held:
            self.held = False
            self.gate.release()


class Lease:
    """A connection taken from the pool for one message, which it may lend
    back (see :meth:`ConnectionPool.lend`) once the end of data is written:
    the sending task's turn then goes to the next message."""

    __slots__ = ("entry", "lent", "pool")

    def __init__(
        self, pool: ConnectionPool[SMTPConnection], entry: Pooled[SMTPConnection]
    ) -> None:
        self.pool = pool
        self.entry = entry
        self.lent = False

    def lend(self) -> None:
        entry = self.entry
        entry.messages += 1  # counted before: the pool retires it at its limit
        self.lent = self.pool.lend(entry)
        if not self.lent:
            entry.messages -= 1
            return
        turn = _TURN.get()
        if turn is not None:
            turn.give_back()  # the next message of the batch may start


#: The turn of the sending task this runs in, if it joined any.
_TURN: ContextVar[Turn | None] = ContextVar("asyncmail_sending_turn", default=None)
