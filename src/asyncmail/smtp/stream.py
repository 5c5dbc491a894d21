"""The connection's asyncio protocol once the session is set up: commands
written straight to the transport, replies parsed as they arrive and handed
out in wire order (tickets), time limits, flow control, and the byte count
that says whether a write left for the operating system.

Time limits use one timer per connection, armed lazily: moving the deadline
later costs an attribute write, and the timer re-arms itself when it fires
early (instead of one timer per command or per phase). Each transaction in
flight keeps its own limit on the stream, and the earliest binds: a message
handed the connection later never extends the wait of the one ahead, and
when the one ahead leaves, the phase clocks of those behind it start anew
(their replies could not come before its own).

The stream counts the bytes it is given and those it handed to the
transport: a write counts as written once the bytes up to its end left the
transport's buffer, whatever was written after it. When the session fails,
what had left by then is recorded and what is still buffered is dropped,
so that record stays true. :mod:`asyncmail.smtp.connection` drives
transactions over it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from operator import itemgetter

from ..exceptions import (
    SMTPConnectError,
    SMTPDeadlineExceededError,
    SMTPError,
    SMTPReadTimeoutError,
    SMTPServerDisconnectedError,
    SMTPTimeoutError,
)
from .parser import Reply, ReplyParser

__all__ = ["ReplyStream"]

_first = itemgetter(0)


class ReplyStream(asyncio.Protocol):
    """The connection's protocol once the session is set up.

    Commands are written straight to the transport; replies are parsed as
    they arrive and queued. ``send(data, n)`` announces how many replies the
    data will produce: anything beyond that is unsolicited and breaks the
    connection, as does a malformed or overlong reply.

    Replies are numbered in the order their commands were written: ``send``
    returns the number (the *ticket*) of the first reply its data produces,
    and ``read(ticket)`` waits until that reply is the next one. Several
    transactions can so be in flight on one connection (cross-message
    pipelining): each reads only its own replies, in wire order, whichever
    task runs first. A reader that gives up (cancelled) *abandons* its
    tickets: their replies are dropped when they arrive, and the others'
    stay in step.
    """

    def __init__(
        self, transport: asyncio.WriteTransport, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.transport = transport
        self.loop = loop
        self.parser = ReplyParser()
        #: The readers waiting for their reply, by ticket.
        self._waiters: dict[int, asyncio.Future[None]] = {}
        self.written = 0  # the replies announced by every write so far
        self.consumed = 0  # the replies handed out (or dropped) so far
        self._abandoned: set[int] = set()
        #: Writes held back to go out as one (see send_together).
        self._corked: list[bytes | memoryview] | None = None
        self._uncorked: asyncio.Future[None] | None = None
        #: Bytes sent so far, in wire order, and those of them handed to the
        #: transport (the rest are held back, or were dropped with the
        #: connection): where one write ends says whether it left (flushed).
        self.queued = 0
        self.handed = 0
        #: The bytes that had left when the session failed (see left()).
        self.left_at_failure = 0
        #: Where the session ended, as a reply number: that of the first 421
        #: read (the server is closing), of the reply a transaction failed
        #: on, or the first reply still missing when the connection failed.
        #: A transaction whose replies all come after it was never answered.
        self.ended_at: int | None = None
        self._drain_waiter: asyncio.Future[None] | None = None
        self._paused = False
        #: Each waiter's limit (a transaction in flight, a NOOP): a loop time
        #: and what passing it means (see SMTPConnection._arm).
        self._limits: dict[
            object, tuple[float, type[SMTPTimeoutError], float | None]
        ] = {}
        self._deadline: float | None = None  # the earliest of them
        self._timer: asyncio.TimerHandle | None = None
        self.error: SMTPError | None = None
        # Which limit the deadline is.
        self.timeout_error: type[SMTPTimeoutError] = SMTPReadTimeoutError

    @property
    def broken(self) -> bool:
        return self.error is not None or self.transport.is_closing()

    # -- time limits ----------------------------------------------------------------

    def set_deadline(
        self,
        owner: object,
        deadline: float | None,
        error: type[SMTPTimeoutError] = SMTPReadTimeoutError,
        cap: float | None = None,
    ) -> None:
        """*owner*'s waits from now on must end by loop time *deadline*
        (None: no limit), else they fail with *error*; *cap* is the latest
        its limit may ever move to (see :meth:`release`). The stream fails at
        the earliest limit of all its owners: replies come in wire order, so
        a limit passed ahead is one passed for everyone behind it."""
        limits = self._limits
        if deadline is None:
            limits.pop(owner, None)
        else:
            limits[owner] = (deadline, error, cap)
        self._rearm()

    def arm(self, owner: object, timeout: float | None, cap: float | None) -> None:
        """*owner*'s next phase must end one *timeout* from now (None: no
        limit), but never after *cap*, its message's deadline."""
        self._limit(owner, timeout, cap)
        self._rearm()

    def _limit(self, owner: object, timeout: float | None, cap: float | None) -> None:
        phase = None if timeout is None else self.loop.time() + timeout
        if phase is None or (cap is not None and cap <= phase):
            if cap is None:
                self._limits.pop(owner, None)
            else:
                self._limits[owner] = (cap, SMTPDeadlineExceededError, cap)
        else:
            self._limits[owner] = (phase, SMTPReadTimeoutError, cap)

    def release(self, owner: object, timeout: float | None = None) -> None:
        """*owner* waits no more: its limit no longer binds the others.

        With *timeout* (the connection's, for one phase), the owners that
        came on the connection after *owner* had their replies queued
        behind its replies, which the server answers first: their phase
        clocks start now (arm on turn), still never past their cap. Owners
        ahead of *owner*, and limits that are already a deadline, stay."""
        limits = self._limits
        if owner not in limits:
            return
        # The dict is in the order the owners came on the connection (an
        # owner enters it when its exchange starts), the order on the wire.
        owners = list(limits) if len(limits) > 1 else []
        del limits[owner]
        if timeout is not None and owners and self.error is None:
            for other in owners[owners.index(owner) + 1 :]:
                _, error, cap = limits[other]
                if error is SMTPReadTimeoutError:  # a phase, set before now
                    self._limit(other, timeout, cap)
        self._rearm()

    def _rearm(self) -> None:
        limits = self._limits
        if not limits:
            self._deadline = None
            return
        if len(limits) == 1:
            ((deadline, error, _),) = limits.values()
        else:
            deadline, error, _ = min(limits.values(), key=_first)
        self._deadline = deadline
        self.timeout_error = error
        timer = self._timer
        if timer is None or timer.when() > deadline:
            if timer is not None:
                timer.cancel()
            self._timer = self.loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        deadline = self._deadline
        if deadline is None:
            return
        if self.loop.time() < deadline:  # moved later meanwhile: wait again
            self._timer = self.loop.call_at(deadline, self._on_timer)
            return
        if self._waiters or self._drain_waiter is not None:
            self._fail(self._timed_out())
            if self._drain_waiter is not None and not self._drain_waiter.done():
                self._drain_waiter.set_result(None)

    def _timed_out(self) -> SMTPTimeoutError:
        if self.timeout_error is SMTPDeadlineExceededError:
            return SMTPDeadlineExceededError(
                "The message's deadline passed while waiting for the server"
            )
        return self.timeout_error("Timed out waiting for the server")

    def _check_deadline(self) -> None:
        """Before waiting: fail if the deadline passed, else make sure the
        timer will wake the wait (it disarms when it fires with no waiter)."""
        deadline = self._deadline
        if deadline is None:
            return
        if self.loop.time() >= deadline:
            self._fail(self._timed_out())
        elif self._timer is None:
            self._timer = self.loop.call_at(deadline, self._on_timer)

    # -- asyncio callbacks -------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.error is not None:
            return
        parser = self.parser
        try:
            parser.feed(data)
        except SMTPError as exc:
            self._fail(exc)
            return
        if parser.replies:
            self.wake()

    def _drop_abandoned(self) -> None:
        replies = self.parser.replies
        abandoned = self._abandoned
        while replies and self.consumed in abandoned:
            abandoned.discard(self.consumed)
            replies.popleft()
            self.consumed += 1

    def wake(self) -> None:
        """The next reply may be here: drop it if abandoned, else wake its
        reader (if it waits)."""
        if self._abandoned:
            self._drop_abandoned()
        replies = self.parser.replies
        if self.error is not None:
            # Failed: every reader looks again (those whose replies are not
            # here will raise, once the ones ahead took theirs).
            for waiting in self._waiters.values():
                if not waiting.done():
                    waiting.set_result(None)
        elif replies and self._waiters:
            waiter = self._waiters.get(self.consumed)
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(
            SMTPServerDisconnectedError(f"Connection lost{f': {exc}' if exc else ''}")
        )
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_result(None)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def eof_received(self) -> bool:
        self._fail(SMTPServerDisconnectedError("The server closed the connection"))
        return False

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_result(None)

    def _fail(self, error: SMTPError) -> None:
        if self.error is None:
            self.error = error
            # What left by now stays the truth: what is still buffered is
            # dropped, never written (a reset emptied the buffer already:
            # all of it counts as left).
            left = self.handed - self._buffered()
            self.left_at_failure = left
            if left < self.handed:
                self.transport.abort()
            if self.ended_at is None:
                self.ended_at = self.consumed + len(self.parser.replies)
        for waiter in self._waiters.values():
            if not waiter.done():
                waiter.set_result(None)

    # -- API for the driver ------------------------------------------------------

    @property
    def corked(self) -> bool:
        """Writes are held back (see :meth:`send_together`)."""
        return self._corked is not None

    @property
    def outstanding(self) -> int:
        """Replies written for and not yet read (by anyone)."""
        return self.written - self.consumed

    def send(self, data: bytes | memoryview, replies: int) -> int:
        """Write *data*, which will produce *replies* replies; the ticket of
        the first of them (see :meth:`read`)."""
        if self.broken:
            raise self.error or SMTPServerDisconnectedError("Connection closed")
        self.parser.expect(replies)
        ticket = self.written
        self.written = ticket + replies
        self.queued += len(data)
        corked = self._corked
        if corked is None:
            self.transport.write(data)
            self.handed = self.queued
        else:
            corked.append(data)
        return ticket

    def send_together(self, data: bytes, replies: int) -> int:
        """Like :meth:`send`, but *data* goes out in one write with what
        else is sent on this stream during the next loop iteration (the
        next transaction's envelope, once the connection is handed to it:
        one system call and one TCP segment instead of two). Until then it
        is not written: :meth:`flushed` waits for it."""
        if self._corked is not None:
            return self.send(data, replies)
        self._corked = []
        ticket = self.send(data, replies)
        # Two hops: a task woken by what the caller does next (the pool
        # handing the connection on) runs in the next iteration, before this.
        self.loop.call_soon(self.loop.call_soon, self._uncork)
        return ticket

    def _uncork(self) -> None:
        corked, self._corked = self._corked, None
        if corked and not self.broken:  # else never written: safe to retry
            self.transport.write(corked[0] if len(corked) == 1 else b"".join(corked))
            self.handed = self.queued
        waiter, self._uncorked = self._uncorked, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def drain(self) -> None:
        """Wait until the transport's write buffer has room again."""
        while self._paused and not self.broken:
            self._check_deadline()
            if self.error is not None:
                break
            self._drain_waiter = self.loop.create_future()
            try:
                await self._drain_waiter
            finally:
                self._drain_waiter = None
        if self.error is not None:
            raise self.error

    def take(self, tickets: deque[int]) -> list[Reply]:
        """The replies for *tickets* (in order) that already arrived, with no
        waiting; the tickets taken are removed from *tickets*."""
        taken: list[Reply] = []
        replies = self.parser.replies
        while tickets and replies and self.consumed == tickets[0]:
            tickets.popleft()
            taken.append(replies.popleft())
            self.consumed += 1
        if taken and replies:
            self.wake()
        return taken

    def abandon(self, tickets: deque[int]) -> None:
        """Nobody will read the replies for *tickets*: drop them on arrival."""
        self._abandoned.update(tickets)
        tickets.clear()
        if self.parser.replies:
            self.wake()

    def left(self, end: int) -> bool:
        """Whether the bytes up to offset *end* (a value of ``queued``) were
        handed to the operating system: only then were they *written*. What
        was sent after them may still sit in the transport's buffer. Once
        the session failed, what had left by then (nothing leaves after)."""
        if self.error is not None:
            return self.left_at_failure >= end
        return self.handed - self._buffered() >= end

    def _buffered(self) -> int:
        """The bytes the transport still holds (none once it is gone)."""
        try:
            return self.transport.get_write_buffer_size()
        except AttributeError:  # a TLS transport after connection_lost
            return 0

    async def flushed(self, ticket: int, end: int) -> None:
        """Wait until the write ending at offset *end* left (see
        :meth:`left`); *ticket* is the reply to it.

        Raises if the connection failed before: those bytes never left (they
        were held back, or still buffered when the session broke; nothing
        writes them any more). A failure that emptied the buffer itself (a
        reset) is taken as written: when in doubt, "maybe delivered", never
        a resend. The reply numbered *ticket* arriving means the server has
        it all (a reply to an earlier command says nothing about it).
        """
        replies = self.parser.replies
        delay = 0.0005
        while not self.left(end) and self.consumed + len(replies) <= ticket:
            if self.error is None:
                self._check_deadline()
            if self.broken:
                raise self.error or SMTPConnectError("Connection closed")
            if self._corked is not None:  # held back: goes out soon
                if self._uncorked is None:
                    self._uncorked = self.loop.create_future()
                await self._uncorked
                continue
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)

    async def read(self, ticket: int) -> Reply:
        """Reply number *ticket*, once every reply before it was read,
        waiting for it (until the deadline) if needed."""
        replies = self.parser.replies
        if self._abandoned:
            self._drop_abandoned()
        while not replies or self.consumed != ticket:
            if self.error is None:
                self._check_deadline()
            if self.error is not None and not replies:
                raise self.error
            # Else wait; after a failure, for the readers ahead to take the
            # replies that did arrive (so that results come out in order).
            waiter = self._waiters[ticket] = self.loop.create_future()
            try:
                await waiter
            finally:
                del self._waiters[ticket]
            if self._abandoned:
                self._drop_abandoned()
        self.consumed = ticket + 1
        reply = replies.popleft()
        if replies:
            self.wake()  # the next reader's reply may be here already
        return reply
