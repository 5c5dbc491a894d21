"""The asyncio side of an SMTP session: a protocol feeding the reply parser,
and the connection driving transactions over it.

Once :mod:`asyncmail.smtp.session` has set the session up (TLS, AUTH) the
transport is handed to :class:`ReplyStream`, which writes commands straight
to it and feeds what arrives to a :class:`~asyncmail.smtp.parser.ReplyParser`.
:class:`SMTPConnection` runs a
:class:`~asyncmail.smtp.transaction.Transaction` over it: it does what each
action says, and nothing else decides anything about SMTP here.

Time limits use one timer per connection, armed lazily: moving the deadline
later costs an attribute write, and the timer re-arms itself when it fires
early (instead of one timer per command or per phase). The end of data
counts as written only once the transport handed it to the operating
system (a connection lost while it still sat in our buffer never
delivered it).

A little over the house's ~400 lines: the protocol and its driver share
the transport's life (timers, flow control, the end-of-data flush), and
split apart they would talk through each other's private state.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from typing import Final, Protocol

from .. import observability
from ..exceptions import (
    InvalidMessageError,
    MailError,
    SMTPConnectError,
    SMTPDeadlineExceededError,
    SMTPError,
    SMTPReadTimeoutError,
    SMTPResponseError,
    SMTPServerDisconnectedError,
    SMTPTimeoutError,
)
from .errors import map_error
from .parser import Reply, ReplyParser
from .transaction import DONE, Read, SendChunks, SendData, Transaction, Write
from .wire import WRITE_CHUNK, WirePayload

__all__ = ["QUIT_TIMEOUT", "ReplyStream", "SMTPConnection", "end_of_data_hook"]

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


class ReplyStream(asyncio.Protocol):
    """The connection's protocol once the session is set up.

    Commands are written straight to the transport; replies are parsed as
    they arrive and queued. ``send(data, n)`` announces how many replies the
    data will produce: anything beyond that is unsolicited and breaks the
    connection, as does a malformed or overlong reply.
    """

    def __init__(
        self, transport: asyncio.WriteTransport, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.transport = transport
        self.loop = loop
        self.parser = ReplyParser()
        self._waiter: asyncio.Future[None] | None = None
        self._drain_waiter: asyncio.Future[None] | None = None
        self._paused = False
        self._deadline: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.error: SMTPError | None = None
        # Which limit the deadline is (see SMTPConnection._deadline).
        self.timeout_error: type[SMTPTimeoutError] = SMTPReadTimeoutError

    @property
    def broken(self) -> bool:
        return self.error is not None or self.transport.is_closing()

    # -- time limits ----------------------------------------------------------------

    def set_deadline(self, deadline: float | None) -> None:
        """Fail the waits from now on at loop time *deadline* (None: never)."""
        self._deadline = deadline
        if deadline is None:
            return
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
        if self._waiter is not None or self._drain_waiter is not None:
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
        waiter = self._waiter
        if waiter is not None and not waiter.done() and parser.replies:
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
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- API for the driver ------------------------------------------------------

    def send(self, data: bytes | memoryview, replies: int) -> None:
        """Write *data*, which will produce *replies* replies."""
        if self.broken:
            raise self.error or SMTPServerDisconnectedError("Connection closed")
        self.parser.expect(replies)
        self.transport.write(data)

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

    def take_queued(self) -> list[Reply]:
        """The replies that arrived but were not read yet (no waiting)."""
        return self.parser.take_all()

    async def flushed(self) -> None:
        """Wait until the transport has handed everything written to the
        operating system: only then has it been *written*.

        Raises if the connection failed with data still buffered. A failure
        that emptied the buffer itself (a reset) is taken as written: when
        in doubt, "maybe delivered", never a resend. A reply arriving means
        the server has it all.
        """
        transport = self.transport
        replies = self.parser.replies
        delay = 0.0005
        while transport.get_write_buffer_size() > 0 and not replies:
            if self.error is None:
                self._check_deadline()
            if self.broken:
                raise self.error or SMTPConnectError("Connection closed")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)

    async def read(self) -> Reply:
        """The next reply, waiting for it (until the deadline) if needed."""
        replies = self.parser.replies
        while not replies:
            if self.error is None:
                self._check_deadline()
            if self.error is not None:
                raise self.error
            self._waiter = self.loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return replies.popleft()


class SMTPConnection:
    """One SMTP session, set up by :mod:`asyncmail.smtp.session`, then
    driven by a :class:`ReplyStream`.

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

    @property
    def usable(self) -> bool:
        return not self.stream.broken

    def _deadline(self, limit: float | None) -> float | None:
        """The loop time by which the next phase must finish: one timeout from
        now, but never after *limit* (the message's overall deadline)."""
        phase = None if self.timeout is None else self.stream.loop.time() + self.timeout
        if phase is None or (limit is not None and limit <= phase):
            self.stream.timeout_error = SMTPDeadlineExceededError
            return limit
        self.stream.timeout_error = SMTPReadTimeoutError
        return phase

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

    async def run(self, transaction: Transaction, *, deadline: float | None) -> None:
        """Drive *transaction* to its end; *deadline* is a loop time
        bounding the whole exchange.

        Never raises for what the server said or for a lost connection: the
        outcome is on *transaction*. Cancellation propagates, but only after
        the transaction records what is known at that moment (replies that
        already arrived stand; unknown once the end of data was written;
        temporary otherwise), with no waiting: the transport is aborted.
        """
        stream = self.stream
        stream.set_deadline(self._deadline(deadline))
        try:
            if deadline is not None and stream.loop.time() >= deadline:
                raise SMTPDeadlineExceededError(
                    "The message's deadline passed before it was sent"
                )
            await self._drive(transaction, deadline)
        except (MailError, OSError, TimeoutError) as exc:
            stream.transport.abort()
            transaction.fail(map_error(exc))
        except BaseException:
            # Cancelled (or worse) mid-exchange: the session state is unknown.
            transaction.cancelled(stream.take_queued())
            stream.transport.abort()
            raise

    async def _drive(self, transaction: Transaction, deadline: float | None) -> None:
        stream = self.stream
        # Replies already parsed are taken from here with no coroutine (what
        # stream.read() would return at once); only a wait goes through it.
        queued = stream.parser.replies
        while True:
            action = transaction.next_action()
            if isinstance(action, Read):
                if action.fresh_deadline:
                    stream.set_deadline(self._deadline(deadline))
                if queued:
                    reply = queued.popleft()
                else:
                    try:
                        reply = await stream.read()
                    except SMTPError as exc:
                        if not transaction.lost(exc):
                            raise
                        continue
                transaction.receive(reply)
                if action.group_end and isinstance(stream.error, SMTPResponseError):
                    raise stream.error  # e.g. more replies than commands
            elif isinstance(action, Write):
                if action.fresh_deadline:
                    stream.set_deadline(self._deadline(deadline))
                stream.send(action.data, action.replies)
            elif isinstance(action, SendData):
                stream.set_deadline(self._deadline(deadline))
                payload = action.payload
                if (
                    isinstance(payload, bytes)
                    and len(payload) <= WRITE_CHUNK
                    and end_of_data_hook.get() is None
                ):
                    stream.send(payload, 1)  # what _send_data does for it
                else:
                    await self._send_data(payload, deadline)
                if stream.transport.get_write_buffer_size() > 0 and not queued:
                    await stream.flushed()  # else it is written already
                transaction.end_of_data_written()
            elif isinstance(action, SendChunks):
                stream.set_deadline(self._deadline(deadline))
                chunks = action.chunks
                if (
                    len(chunks) == 1
                    and isinstance(content := chunks[0][1], bytes)
                    and len(content) <= WRITE_CHUNK
                    and (not action.last or end_of_data_hook.get() is None)
                ):
                    # One write (what _send_chunks does for it): with
                    # PIPELINING, MAIL, RCPT... and BDAT <n> LAST together.
                    stream.send(
                        action.lead + chunks[0][0] + content, action.lead_replies + 1
                    )
                else:
                    await self._send_chunks(action, deadline)
                if action.last:
                    if stream.transport.get_write_buffer_size() > 0:
                        await self._flushed(deadline)
                    transaction.end_of_data_written()
            else:
                assert action is DONE
                return

    async def _send_data(self, data: WirePayload, deadline: float | None) -> None:
        """Write the data and the end of data (the hook awaited just before
        the end of data is written)."""
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
                    stream.set_deadline(self._deadline(deadline))  # progress
                if hook is not None:
                    await hook()
                stream.send(view[start:], 1)
            else:
                if hook is not None:
                    await hook()
                stream.send(data, 1)
            return
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
                stream.set_deadline(self._deadline(deadline))  # progress
        if hook is not None:
            await hook()
        stream.send(b".\r\n", 1)

    async def _send_chunks(self, action: SendChunks, deadline: float | None) -> None:
        """Write the action's commands and BDAT chunks (the hook awaited just
        before the write that carries the end of the LAST chunk)."""
        stream = self.stream
        hook = end_of_data_hook.get() if action.last else None
        lead, replies = action.lead, action.lead_replies
        final = len(action.chunks) - 1
        for index, (command, content) in enumerate(action.chunks):
            ends = index == final and hook is not None
            if isinstance(content, bytes) and len(content) <= WRITE_CHUNK:
                if ends:
                    assert hook is not None
                    await hook()
                stream.send(lead + command + content, replies + 1)
            elif isinstance(content, bytes):
                # A large chunk in slices, each written once the previous
                # ones drained (as a large DATA body: see _send_data).
                stream.send(lead + command, replies + 1)
                view = memoryview(content)
                start = 0
                while len(view) - start > WRITE_CHUNK:
                    stream.send(view[start : start + WRITE_CHUNK], 0)
                    start += WRITE_CHUNK
                    await stream.drain()
                    stream.set_deadline(self._deadline(deadline))  # progress
                if ends:
                    assert hook is not None
                    await hook()
                stream.send(view[start:], 0)
            else:
                # A streamed attachment: its size was announced, so exactly
                # that many octets must follow (else the session is dropped
                # mid-chunk: an incomplete chunk is never delivered).
                stream.send(lead + command, replies + 1)
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
                    stream.set_deadline(self._deadline(deadline))  # progress
                if sent != content.encoded_size:
                    raise InvalidMessageError(
                        "An attachment could not be sent: it changed size while "
                        "it was sent"
                    )
            lead, replies = b"", 0
            await stream.drain()

    async def _flushed(self, deadline: float | None) -> None:
        """Wait until the transport handed all it holds to the operating
        system. Unlike ReplyStream.flushed, a reply that arrived proves
        nothing here: under BDAT it may answer MAIL, a RCPT or an earlier
        chunk while the LAST chunk is still buffered."""
        stream = self.stream
        transport = stream.transport
        limit = self._deadline(deadline)
        delay = 0.0005
        while transport.get_write_buffer_size() > 0:
            if stream.broken:
                raise stream.error or SMTPConnectError("Connection closed")
            if limit is not None and stream.loop.time() >= limit:
                raise stream.timeout_error("Timed out writing the message")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)

    async def noop(self) -> bool:
        """A NOOP round trip: True when the server answered 250."""
        try:
            self.stream.set_deadline(self._deadline(None))
            self.stream.send(b"NOOP\r\n", 1)
            reply = await self.stream.read()
        except (SMTPError, OSError):
            return False
        except BaseException:
            # Cancelled waiting for the reply: the session is out of step.
            self.stream.transport.abort()
            raise
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
                    stream.send(b"QUIT\r\n", 1)
                    await stream.read()
        except (SMTPError, OSError, TimeoutError):
            pass
        finally:
            stream.transport.close()
            self.client.close()
