"""The asyncio driver of an SMTP session: transactions run over its reply
stream.

Once :mod:`asyncmail.smtp.session` has set the session up (TLS, AUTH) the
transport is handed to a :class:`~asyncmail.smtp.stream.ReplyStream`, which
writes commands straight to it and feeds what arrives to a
:class:`~asyncmail.smtp.parser.ReplyParser`. :class:`SMTPConnection` runs a
:class:`~asyncmail.smtp.transaction.Transaction` over it: it does what each
action says, and nothing else decides anything about SMTP here.

Each transaction keeps its own time limit on the stream (see
:meth:`SMTPConnection._arm`); an end of data counts as written once its
bytes left (see :meth:`~asyncmail.smtp.stream.ReplyStream.left`), and is
taken back if the session fails before that.
"""

from __future__ import annotations

import asyncio
import os
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from typing import Final, Protocol

from .. import observability
from ..exceptions import (
    InvalidMessageError,
    MailError,
    SMTPDeadlineExceededError,
    SMTPError,
    SMTPResponseError,
)
from .errors import map_error
from .stream import ReplyStream
from .transaction import DONE, Read, SendChunks, SendData, Transaction, Write
from .wire import WRITE_CHUNK, WirePayload

__all__ = ["QUIT_TIMEOUT", "SMTPConnection", "end_of_data_hook"]

QUIT_TIMEOUT: Final = 5.0

#: Awaited, in the task delivering a message, just before its end of data is
#: written (the last moment nothing can have been delivered). The durable
#: queue sets it to record "in flight past DATA" first, so a crash afterwards
#: leaves the message unknown instead of resent. An error it raises aborts the
#: transaction before the end of data.
end_of_data_hook: ContextVar[Callable[[], Awaitable[None]] | None] = ContextVar(
    "asyncmail_end_of_data_hook", default=None
)


class Closable(Protocol):
    """What the connection keeps of the client that set the session up:
    closing it, and its host and port for the logs."""

    hostname: str | None
    port: int | None

    def close(self) -> None: ...


class SMTPConnection:
    """One SMTP session, set up by :mod:`asyncmail.smtp.session`, then
    driven by a :class:`ReplyStream`.

    Transactions can overlap (cross-message pipelining, RFC 2920): once a
    transaction's end of data is written, :meth:`run` calls its *handoff*
    and the connection may carry the next transaction's envelope while the
    first still awaits the reply to its end of data. The replies are read in
    wire order (see :class:`ReplyStream`), so each still answers its own
    commands; nothing is written for a transaction after its end of data.

    :param transport: the session's transport (TLS already on it, if any).
    :param extensions: the EHLO extensions, lower-case names to parameters.
    :param client: closed with the connection (and named in the logs).
    :param timeout: seconds for each wait on the server (None: no limit).
    """

    def __init__(
        self,
        transport: asyncio.WriteTransport,
        *,
        extensions: Mapping[str, str],
        client: Closable,
        timeout: float | None,
    ) -> None:
        self.client = client
        self.timeout = timeout
        self.pipelining = "pipelining" in extensions
        #: RFC 3030: messages go in BDAT chunks (not stuffed) instead of DATA.
        self.chunking = "chunking" in extensions
        self.eight_bit_mime = "8bitmime" in extensions
        self.smtputf8 = "smtputf8" in extensions
        size = extensions.get("size", "")
        self.size_limit = (
            int(size) if size.strip().isdigit() and int(size) > 0 else None
        )
        self.stream = ReplyStream(transport, asyncio.get_running_loop())
        self.retired = False

    @property
    def usable(self) -> bool:
        return not self.retired and not self.stream.broken

    def retire(self) -> None:
        """Carry no new transaction (e.g. the server said 421 to a message
        whose connection was handed on): closed when the pool next sees it."""
        self.retired = True

    def _arm(self, owner: object, limit: float | None) -> None:
        """*owner*'s next phase must finish one timeout from now, but never
        after *limit* (the message's overall deadline)."""
        self.stream.arm(owner, self.timeout, limit)

    def transaction(
        self,
        sender: str,
        recipients: list[str],
        data: WirePayload,
        *,
        eight_bit: bool,
        smtputf8: bool,
    ) -> Transaction:
        """A transaction for this connection (its extensions decide the
        commands), to run with :meth:`run`."""
        return Transaction(
            sender,
            recipients,
            data,
            pipelining=self.pipelining,
            chunking=self.chunking,
            size=self.size_limit is not None,
            eight_bit=eight_bit,
            smtputf8=smtputf8,
        )

    async def run(
        self,
        transaction: Transaction,
        *,
        deadline: float | None,
        handoff: Callable[[], None] | None = None,
    ) -> bool:
        """Drive *transaction* to its end; *deadline* is a loop time
        bounding the whole exchange. True when it failed only because the
        session ended before its turn (the transaction ahead of it on the
        connection got a 421, or the connection failed while that one's
        replies were still due): nothing of it was answered, it never
        reached its end of data, and it is as if it had not been tried.

        *handoff*, with PIPELINING, is called once the end of data is
        written while the connection is sound: from then on the connection
        may carry other transactions, this one only reads its last reply.

        Never raises for what the server said or for a lost connection: the
        outcome is on *transaction*. Cancellation propagates, but only after
        the transaction records what is known at that moment (replies that
        already arrived stand; unknown once the end of data was written;
        temporary otherwise), with no waiting. The transport is aborted,
        except when only the reply to the end of data was still awaited:
        then that reply is dropped on arrival and the session goes on for
        the transactions after it.
        """
        stream = self.stream
        self._arm(transaction, deadline)
        tickets: deque[int] = deque()  # the replies this transaction awaits
        first = stream.written  # the ticket of its first reply
        # Where its end of data ends in the stream, once sent: it counts as
        # written from then on, unless the session fails before those bytes
        # left (see ReplyStream.left): then it is taken back, below.
        end: list[int] = []
        try:
            if deadline is not None and stream.loop.time() >= deadline:
                raise SMTPDeadlineExceededError(
                    "The message's deadline passed before it was sent"
                )
            await self._drive(transaction, deadline, tickets, handoff, end)
        except (MailError, OSError, TimeoutError) as exc:
            if end and transaction.awaiting_final and not stream.left(end[0]):
                transaction.end_of_data_unsent()
            if stream.written != first:  # it wrote: the session is out of step
                if stream.ended_at is None:
                    stream.ended_at = max(first, stream.consumed - 1)
                stream.transport.abort()
            # Else nothing of it was written (e.g. its deadline had passed):
            # the session is sound for any transaction still reading on it.
            ended = stream.ended_at
            collateral = (
                not transaction.replies
                and not transaction.end_written
                and ended is not None
                and ended < first
            )
            transaction.fail(map_error(exc))
            stream.abandon(tickets)  # the readers behind it take their turn
            return collateral
        except BaseException:
            # Cancelled (or worse) mid-exchange.
            if (
                end
                and transaction.awaiting_final
                and (
                    stream.handed < end[0]
                    or (stream.error is not None and not stream.left(end[0]))
                )
            ):
                # Its end of data is still held back (see send_together), and
                # the abort below drops it; or the session failed before its
                # bytes left: never written. Once handed to a sound session
                # it may be delivered (unknown, never resent): the session
                # goes on and writes what is still buffered.
                transaction.end_of_data_unsent()
            final = transaction.awaiting_final  # only its last reply was due
            transaction.cancelled(stream.take(tickets))
            if final and not tickets:
                pass  # that reply was here: the session is clean
            elif final and not stream.broken:
                stream.abandon(tickets)  # the session is in step without us
            else:
                # Mid-exchange (e.g. a 354 taken but no data sent): the
                # session state is unknown.
                stream.transport.abort()
                stream.abandon(tickets)
            raise
        finally:
            # The transactions behind it on the connection get their turn:
            # their phase clocks start now, not when they were written.
            stream.release(transaction, self.timeout)
        return False

    async def _drive(
        self,
        transaction: Transaction,
        deadline: float | None,
        tickets: deque[int],
        handoff: Callable[[], None] | None,
        end: list[int],
    ) -> None:
        stream = self.stream
        # Replies already parsed are taken from here with no coroutine (what
        # stream.read() would return at once); only a wait goes through it.
        queued = stream.parser.replies
        while True:
            action = transaction.next_action()
            if isinstance(action, Read):
                if action.fresh_deadline:
                    self._arm(transaction, deadline)
                # The ticket leaves *tickets* only once its reply is read: a
                # cancelled wait must still find it there (see run).
                ticket = tickets[0]
                if queued and stream.consumed == ticket:
                    tickets.popleft()
                    reply = queued.popleft()
                    stream.consumed = ticket + 1
                    if queued:
                        stream.wake()  # the next reply may be another's
                else:
                    try:
                        reply = await stream.read(ticket)
                    except SMTPError as exc:
                        if not transaction.lost(exc):
                            raise
                        continue
                    tickets.popleft()
                if reply.code == 421 and stream.ended_at is None:
                    stream.ended_at = ticket
                transaction.receive(reply)
                if action.group_end and isinstance(stream.error, SMTPResponseError):
                    raise stream.error  # e.g. more replies than commands
            elif isinstance(action, Write):
                if action.fresh_deadline:
                    self._arm(transaction, deadline)
                first = stream.send(action.data, action.replies)
                tickets.extend(range(first, first + action.replies))
            elif isinstance(action, SendData):
                self._arm(transaction, deadline)
                payload = action.payload
                handing_off = handoff is not None and self.pipelining
                if isinstance(payload, bytes) and len(payload) <= WRITE_CHUNK:
                    # What _send_data does for it; handing the connection on,
                    # the next envelope goes in the same write.
                    hook = end_of_data_hook.get()
                    if hook is not None:
                        await self._end_hook(hook, deadline)
                    if handing_off:
                        last = stream.send_together(payload, 1)
                    else:
                        last = stream.send(payload, 1)
                else:
                    last = await self._send_data(payload, transaction, deadline)
                tickets.append(last)
                # Written, as far as anyone waits to know: once its bytes
                # leave, or else (the session failed first) run() takes it
                # back. Nothing waits for the transport here.
                end.append(stream.queued)
                transaction.end_of_data_written()
                if handing_off and not stream.broken:
                    assert handoff is not None
                    handoff()
            elif isinstance(action, SendChunks):
                self._arm(transaction, deadline)
                chunks = action.chunks
                if (
                    len(chunks) == 1
                    and isinstance(content := chunks[0][1], bytes)
                    and len(content) <= WRITE_CHUNK
                    and (not action.last or end_of_data_hook.get() is None)
                ):
                    # One write (what _send_chunks does for it): with
                    # PIPELINING, MAIL, RCPT... and BDAT <n> LAST together.
                    count = action.lead_replies + 1
                    first = stream.send(action.lead + chunks[0][0] + content, count)
                    tickets.extend(range(first, first + count))
                else:
                    await self._send_chunks(action, transaction, deadline, tickets)
                if action.last:
                    # The reply to the LAST chunk (not one to MAIL or an
                    # earlier chunk) proves it left our buffer. Nothing was
                    # sent on the stream after it (BDAT never hands on).
                    last, ends_at = tickets[-1], stream.queued
                    if (
                        not stream.left(ends_at)
                        and stream.consumed + len(queued) <= last
                    ):
                        await stream.flushed(last, ends_at)
                    transaction.end_of_data_written()
            else:
                assert action is DONE
                return

    async def _end_hook(
        self, hook: Callable[[], Awaitable[None]], deadline: float | None
    ) -> None:
        """Await the end-of-data hook; if the message's deadline passed
        meanwhile, fail before the end of data is written (the message is
        then not sent, not "maybe delivered")."""
        await hook()
        if deadline is not None and self.stream.loop.time() >= deadline:
            raise SMTPDeadlineExceededError(
                "The message's deadline passed before its end of data was written"
            )

    async def _send_data(
        self, data: WirePayload, owner: object, deadline: float | None
    ) -> int:
        """Write the data and the end of data (the hook awaited just before
        the end of data is written); the ticket of the reply to the end."""
        stream = self.stream
        hook = end_of_data_hook.get()
        if isinstance(data, bytes):
            # A large body goes in slices, each written once the previous
            # ones drained, so that the end of data is only queued when the
            # rest has (nearly) left: a connection lost mid-body leaves it
            # unwritten, and the message safe to retry.
            if len(data) > WRITE_CHUNK:
                view = memoryview(data)
                start = 0
                while len(view) - start > WRITE_CHUNK:
                    stream.send(view[start : start + WRITE_CHUNK], 0)
                    start += WRITE_CHUNK
                    await stream.drain()
                    self._arm(owner, deadline)  # progress
                if hook is not None:
                    await self._end_hook(hook, deadline)
                return stream.send(view[start:], 1)
            if hook is not None:
                await self._end_hook(hook, deadline)
            return stream.send(data, 1)
        for chunk in data:
            if isinstance(chunk, bytes):
                stream.send(chunk, 0)
                await stream.drain()
                continue
            blocks = chunk.ablocks()
            while True:
                try:
                    block = await anext(blocks, None)
                except (OSError, InvalidMessageError) as exc:
                    # The attachment could not be read, or changed while sent:
                    # the message cannot be completed (the session is dropped
                    # mid-data, so nothing half-written can be accepted).
                    raise InvalidMessageError(
                        f"An attachment could not be sent: {exc}"
                    ) from exc
                if block is None:
                    break
                stream.send(block, 0)
                await stream.drain()
                self._arm(owner, deadline)  # progress
        if hook is not None:
            await self._end_hook(hook, deadline)
        return stream.send(b".\r\n", 1)

    async def _send_chunks(
        self,
        action: SendChunks,
        owner: object,
        deadline: float | None,
        tickets: deque[int],
    ) -> None:
        """Write the action's commands and BDAT chunks (the hook awaited just
        before the write that carries the end of the LAST chunk); the
        tickets of their replies go in *tickets*."""
        stream = self.stream
        hook = end_of_data_hook.get() if action.last else None
        lead, replies = action.lead, action.lead_replies
        final = len(action.chunks) - 1
        for index, (command, content) in enumerate(action.chunks):
            ends = index == final and hook is not None
            if isinstance(content, bytes) and len(content) <= WRITE_CHUNK:
                if ends:
                    assert hook is not None
                    await self._end_hook(hook, deadline)
                first = stream.send(lead + command + content, replies + 1)
            elif isinstance(content, bytes):
                # A large chunk in slices, each written once the previous
                # ones drained (as a large DATA body: see _send_data).
                first = stream.send(lead + command, replies + 1)
                view = memoryview(content)
                start = 0
                while len(view) - start > WRITE_CHUNK:
                    stream.send(view[start : start + WRITE_CHUNK], 0)
                    start += WRITE_CHUNK
                    await stream.drain()
                    self._arm(owner, deadline)  # progress
                if ends:
                    assert hook is not None
                    await self._end_hook(hook, deadline)
                stream.send(view[start:], 0)
            else:
                # A streamed attachment: its size was announced, so exactly
                # that many octets must follow (else the session is dropped
                # mid-chunk: an incomplete chunk is never delivered).
                first = stream.send(lead + command, replies + 1)
                sent = 0
                blocks = content.ablocks()
                while True:
                    try:
                        block = await anext(blocks, None)
                    except (OSError, InvalidMessageError) as exc:
                        raise InvalidMessageError(
                            f"An attachment could not be sent: {exc}"
                        ) from exc
                    if block is None:
                        break
                    sent += len(block)
                    if sent > content.encoded_size:
                        break
                    stream.send(block, 0)
                    await stream.drain()
                    self._arm(owner, deadline)  # progress
                if sent != content.encoded_size:
                    raise InvalidMessageError(
                        "An attachment could not be sent: it changed size while "
                        "it was sent"
                    )
            tickets.extend(range(first, first + replies + 1))
            lead, replies = b"", 0
            await stream.drain()

    async def noop(self) -> bool:
        """A NOOP round trip: True when the server answered 250."""
        stream = self.stream
        try:
            self._arm(self, None)
            ticket = stream.send(b"NOOP\r\n", 1)
            reply = await stream.read(ticket)
        except (SMTPError, OSError):
            return False
        except BaseException:
            # Cancelled waiting for the reply: the session is out of step.
            stream.transport.abort()
            raise
        finally:
            stream.release(self)
        return reply.positive

    def detach(self) -> None:
        """In a forked child: let go of the parent's session without a byte
        on it. The child's copy of the socket is pointed at /dev/null (the
        parent's TCP connection is no longer held open by the child, and the
        descriptor number stays owned by this never-finalised object, so it
        can never close a descriptor the child reuses)."""
        sock = self.stream.transport.get_extra_info("socket")
        fd = sock.fileno() if sock is not None else -1
        if fd < 0:
            return
        null = os.open(os.devnull, os.O_RDWR)
        try:
            os.dup2(null, fd)
        finally:
            os.close(null)

    async def close(self) -> None:
        """QUIT politely (bounded wait), then close the transport."""
        observability.connection_closed(self.client, broken=not self.usable)
        stream = self.stream
        try:
            if self.usable:
                timeout = min(self.timeout or QUIT_TIMEOUT, QUIT_TIMEOUT)
                async with asyncio.timeout(timeout):
                    ticket = stream.send(b"QUIT\r\n", 1)
                    await stream.read(ticket)
        except (SMTPError, OSError, TimeoutError):
            pass
        finally:
            stream.transport.close()
            self.client.close()
