"""SMTP backend: aiosmtplib for the session, a pipelined path for each message.

How a connection is made (:meth:`EmailBackend.connect`), with aiosmtplib:
greeting, EHLO (HELO fallback), STARTTLS when ``use_tls`` (required: a server
that does not offer it is an error, never a silent downgrade), EHLO again,
then AUTH when credentials are set, but only over TLS, to a loopback peer, or
with the loudly named ``dangerously_allow_plaintext_auth=True``. TLS always
verifies the certificate and host name (TLS 1.2+) unless you pass your own
``ssl_context``. The connection joins the pool only when every step succeeded;
anything that fails is closed, never reused.

How a message is sent (:class:`SMTPConnection`): aiosmtplib's per-command API
costs most of the client's CPU (a timer and an address parse per command, no
pipelining), so once the session is set up the transport is handed to a small
protocol of ours. It writes MAIL, every RCPT and DATA in one go when the
server offers PIPELINING (RFC 2920), then the already serialised, dot-stuffed
message, and reads and checks every reply, under one deadline per phase
instead of one timer per command. Every command argument is checked for
CR/LF/NUL before a byte is written, replies are parsed strictly (bounded line
length and line count), and unsolicited data marks the connection broken.

Outcomes are recorded per recipient (see :mod:`asyncmail.results`). Transient
failures (connection lost before the end of data, 421, 4xx on MAIL, RCPT or
DATA) are retried with exponential backoff and jitter, within ``retries`` and
the per-message ``deadline``, for the recipients still pending. A recipient
the data was written for is never retried: a connection lost after the end
of data leaves it "unknown" (it may have been delivered), and a 4xx reply to
the end of data leaves it "temporary" for the caller to decide.

Replies already received are final (a 550 that arrived before the
connection was lost is permanent), and the end of data counts as written
only once the transport handed it to the operating system.

With ``max_connections`` above 1 the backend sends concurrently over a
bounded pool (see :mod:`asyncmail.pool`), optionally rate limited (see
:mod:`asyncmail.ratelimit`); with the default of 1 it behaves like Django's
backend: one connection, made for the first message of a ``send_messages``
call (or by ``open()``), reused while open. Consecutive connect failures
open the breaker (:mod:`asyncmail.backends.retry`); a 421 greeting while
other connections are open is back-pressure for the pool. Cancelling a send
publishes, first, the result of every message it took.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import os
import random
import re
import socket
import ssl
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, NamedTuple, cast

import aiosmtplib
import anyio

from .. import observability
from ..address import envelope_address
from ..dkim import DKIMSigner, signer_from_option
from ..dnsname import aget_fqdn, ascii_hostname
from ..exceptions import (
    ConfigurationError,
    DataRefusedError,
    DeliveryUnknownError,
    InsecureAuthError,
    InvalidMessageError,
    MailError,
    MessageRefusedError,
    RecipientsRefusedError,
    SenderRefusedError,
    SendError,
    SMTPAuthenticationError,
    SMTPConnectError,
    SMTPConnectTimeoutError,
    SMTPDeadlineExceededError,
    SMTPError,
    SMTPNotSupportedError,
    SMTPPoolTimeoutError,
    SMTPReadTimeoutError,
    SMTPResponseError,
    SMTPServerDisconnectedError,
    SMTPTimeoutError,
    TLSError,
    is_transient,
)
from ..message import Base64Payload, RenderedMessage, render_is_heavy
from ..oauth2 import TokenProvider, token_provider_from_option
from ..oauth2 import authenticate as oauth2_authenticate
from ..pool import ConnectionPool, Pooled, PoolLimits
from ..ratelimit import RateLimiter
from ..results import (
    MessageResult,
    Outcome,
    RecipientResult,
    ResultCallback,
    reply_outcome,
)
from ..settings import settings
from ..threads import run_sync
from .base import BaseEmailBackend, failure_result
from .retry import Breaker

if TYPE_CHECKING:
    from ..message import EmailMessage

__all__ = ["EmailBackend", "SMTPConnection", "end_of_data_hook"]

#: Awaited, in the task delivering a message, just before its end of data is
#: written (the last moment nothing can have been delivered). The durable
#: queue sets it to record "in flight past DATA" first, so a crash afterwards
#: leaves the message unknown instead of resent. An error it raises aborts the
#: transaction before the end of data.
end_of_data_hook: ContextVar[Callable[[], Awaitable[None]] | None] = ContextVar(
    "asyncmail_end_of_data_hook", default=None
)


class _NotGiven:
    """Sentinel: the option was not given (distinct from None)."""

    def __repr__(self) -> str:
        return "NOT_GIVEN"


NOT_GIVEN: Final = _NotGiven()

# Reply parsing bounds: a reply line and a whole reply (an endless multi-line
# reply must fail, not eat memory).
MAX_REPLY_LINE: Final = 4096
MAX_REPLY_LINES: Final = 256
QUIT_TIMEOUT: Final = 5.0
#: Bodies are written in slices of this size (see SMTPConnection._send_data).
WRITE_CHUNK: Final = 64 * 1024

_ENHANCED_STATUS = re.compile(r"([245]\.\d{1,3}\.\d{1,3})(?:\s|$)")
# Dot-separated labels (each unambiguous, so a bad name fails in linear
# time), or an address literal; at most 255 characters (checked first).
_EHLO_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_EHLO_NAME = re.compile(
    rf"{_EHLO_LABEL}(?:\.{_EHLO_LABEL})*\.?|\[(?:IPv6:)?[0-9A-Fa-f:.]{{1,253}}\]"
)


class Reply(NamedTuple):
    """One SMTP reply: the code and the text (lines joined with "\\n")."""

    code: int
    text: str

    @property
    def enhanced_status(self) -> str | None:
        match = _ENHANCED_STATUS.match(self.text)
        return match.group(1) if match else None

    @property
    def outcome(self) -> Outcome:
        return reply_outcome(self.code)

    def __str__(self) -> str:
        return f"{self.code} {self.text}"


class _ReplyStream(asyncio.Protocol):
    """The connection's protocol once aiosmtplib has set up the session.

    Commands are written straight to the transport; replies are parsed as
    they arrive and queued. ``send(data, n)`` announces how many replies the
    data will produce: anything beyond that is unsolicited and breaks the
    connection, as does a malformed or overlong reply.

    Time limits use one timer per connection, armed lazily: moving the
    deadline later costs an attribute write, and the timer re-arms itself
    when it fires early (instead of one timer per command or per phase).
    """

    def __init__(
        self, transport: asyncio.WriteTransport, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.transport = transport
        self.loop = loop
        self._partial = b""
        self._lines: list[bytes] = []
        self._replies: deque[Reply] = deque()
        self._expected = 0
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
        if not self._expected:
            self._fail(
                SMTPResponseError(f"Unsolicited data from the server: {data[:80]!r}")
            )
            return
        try:
            self._parse(self._partial + data if self._partial else data)
        except SMTPError as exc:
            self._fail(exc)
            return
        waiter = self._waiter
        if waiter is not None and not waiter.done() and self._replies:
            waiter.set_result(None)

    def _parse(self, data: bytes) -> None:
        lines = data.split(b"\n")
        self._partial = lines.pop()  # after the last line break: incomplete
        if len(self._partial) > MAX_REPLY_LINE:
            raise SMTPResponseError("The server sent an overlong reply line")
        for raw in lines:
            if not self._expected:
                raise SMTPResponseError("The server sent more replies than commands")
            line = raw[:-1] if raw.endswith(b"\r") else raw
            if len(line) > MAX_REPLY_LINE:
                raise SMTPResponseError("The server sent an overlong reply line")
            code = line[:3]
            separator = line[3:4]
            if (
                not code.isdigit()
                or len(code) < 3
                or separator not in (b" ", b"-", b"")
            ):
                raise SMTPResponseError(
                    f"Malformed reply from the server: {line[:80]!r}"
                )
            pending = self._lines
            if pending and code != pending[0][:3]:
                raise SMTPResponseError("Reply lines with different codes")
            if separator == b"-":
                pending.append(line)
                if len(pending) > MAX_REPLY_LINES:
                    raise SMTPResponseError(
                        "The server sent an endless multi-line reply"
                    )
                continue
            if pending:
                pending.append(line)
                text = "\n".join(
                    item[4:].decode("utf-8", "replace") for item in pending
                )
                self._lines = []
            else:
                text = line[4:].decode("utf-8", "replace")
            self._replies.append(Reply(int(code), text))
            self._expected -= 1
        if not self._expected and self._partial:
            raise SMTPResponseError("The server sent more replies than commands")

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

    # -- API for the transaction ---------------------------------------------------

    def send(self, data: bytes | memoryview, replies: int) -> None:
        """Write *data*, which will produce *replies* replies."""
        if self.broken:
            raise self.error or SMTPServerDisconnectedError("Connection closed")
        self._expected += replies
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
        queued = list(self._replies)
        self._replies.clear()
        return queued

    async def flushed(self) -> None:
        """Wait until the transport has handed everything written to the
        operating system: only then has it been *written* (a connection lost
        while the end of data still sat in our buffer never delivered it).

        Raises if the connection failed with data still buffered. A failure
        that emptied the buffer itself (a reset) is taken as written: when
        in doubt, "maybe delivered", never a resend. A reply arriving means
        the server has it all.
        """
        transport = self.transport
        delay = 0.0005
        while transport.get_write_buffer_size() > 0 and not self._replies:
            if self.error is None:
                self._check_deadline()
            if self.broken:
                raise self.error or SMTPConnectError("Connection closed")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)

    async def read(self) -> Reply:
        """The next reply, waiting for it (until the deadline) if needed."""
        replies = self._replies
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


def _check_commands(wire: str, count: int) -> None:
    """*wire* holds exactly *count* CRLF-ended command lines: no CR, LF or NUL
    inside a command (defence in depth: the arguments are validated
    addresses already)."""
    if wire.count("\r") != count or wire.count("\n") != count or "\0" in wire:
        raise SMTPError(f"Refusing to send a command with a line break: {wire!r}")


def _plausible(replies: list[Reply], recipients: int) -> bool:
    """Whether replies can belong to MAIL, RCPT x *recipients*, DATA: 2xx,
    4xx or 5xx to MAIL and RCPT, 354, 4xx or 5xx to DATA. Anything else
    means an unsolicited reply shifted them."""
    for index, reply in enumerate(replies):
        code = reply.code
        if index <= recipients:
            if not (200 <= code < 300 or 400 <= code < 600):
                return False
        elif code != 354 and not 400 <= code < 600:
            return False
    return True


#: What a transaction writes after DATA: bytes ready for the wire (stuffed,
#: with the end-of-data line), or for messages with streamed attachments the
#: chunks (bytes already stuffed, payloads encoded as they are written).
WirePayload = bytes | tuple[bytes | Base64Payload, ...]


def wire_payload(rendered: RenderedMessage) -> WirePayload:
    """The DATA-phase form of a rendered message.

    A RenderedMessage holds CRLF line endings only, every chunk starting a
    line and ending with CRLF (asyncmail's serialiser writes nothing else,
    and foreign bytes are normalised on the way in), so only the dots need
    stuffing here.
    """
    if not rendered.streamed:
        return _stuff_dots(rendered.data) + b".\r\n"
    # Base64 blocks never start a line with ".".
    return tuple(
        _stuff_dots(chunk) if isinstance(chunk, bytes) else chunk
        for chunk in rendered.chunks
    )


def _stuff_dots(data: bytes) -> bytes:
    """Double the dot starting any line of clean CRLF *data*."""
    if data.startswith(b"."):
        data = b"." + data
    return data.replace(b"\r\n.", b"\r\n..")


def payload_size(payload: WirePayload) -> int:
    """Octets the payload puts on the wire."""
    if isinstance(payload, bytes):
        return len(payload)
    return 3 + sum(
        len(chunk) if isinstance(chunk, bytes) else chunk.encoded_size
        for chunk in payload
    )


@dataclass(slots=True)
class _Transaction:
    """What one MAIL..end-of-data exchange did.

    ``end_written`` turns true the moment the end-of-data sequence is handed
    to the transport: from then on a failure leaves the outcome unknown.
    """

    recipients: dict[str, RecipientResult] = field(default_factory=dict)
    error: MailError | None = None
    reply: str = ""
    reusable: bool = True
    end_written: bool = False
    #: The recipients the message data was written for (accepted at RCPT):
    #: once the end of data is written they are never retried.
    data_recipients: tuple[str, ...] = ()
    settled: bool = False  # every recipient has its outcome
    #: The replies to MAIL, RCPT... and DATA received so far: final even if
    #: the connection is lost before the rest arrive.
    replies: list[Reply] = field(default_factory=list)
    envelope_done: bool = False  # the envelope replies were applied
    awaiting_final: bool = False  # waiting for the reply to the end of data


_REFUSED: Final = (Outcome.TEMPORARY, Outcome.PERMANENT)


def _refusal(address: str, reply: Reply) -> RecipientResult:
    return RecipientResult(
        address, reply.outcome, reply.code, reply.enhanced_status, reply.text
    )


def _refused_by(
    what: str, reply: Reply, sender: str | None = None
) -> MessageRefusedError:
    """The error for a refused sender (*sender* given) or refused data."""
    if sender is not None:
        return SenderRefusedError(
            f"{what}: {reply}",
            sender=sender,
            code=reply.code,
            text=reply.text,
            enhanced_status=reply.enhanced_status,
        )
    return DataRefusedError(
        f"{what}: {reply}",
        code=reply.code,
        text=reply.text,
        enhanced_status=reply.enhanced_status,
    )


def recipients_refused(
    refused: dict[str, RecipientResult], total: int
) -> RecipientsRefusedError:
    """The error for a message whose *refused* recipients (of *total*) were
    refused."""
    first = next(iter(refused.values()))
    return RecipientsRefusedError(
        f"{len(refused)} of {total} recipient(s) refused, first "
        f"<{first.address}>: {first.code} {first.text}",
        refused=refused,
    )


def _apply_envelope(result: _Transaction, recipients: list[str]) -> None:
    """Record the refusals among the envelope replies received before an
    exchange failed: a 550 that arrived is final, whatever happened next."""
    replies = result.replies[: 1 + len(recipients)]
    if result.envelope_done or not replies or not _plausible(replies, len(recipients)):
        return
    mail_reply = replies[0]
    if not 200 <= mail_reply.code < 300:
        for address in recipients:
            result.recipients.setdefault(address, _refusal(address, mail_reply))
        return
    for address, reply in zip(recipients, replies[1:], strict=False):
        if not 200 <= reply.code < 300:
            result.recipients.setdefault(address, _refusal(address, reply))


def _apply_final(result: _Transaction, accepted: list[str], final: Reply) -> None:
    """Record the reply to the end of data for the *accepted* recipients."""
    result.awaiting_final = False
    result.reply = str(final)
    if final.code == 421:
        result.reusable = False
    if 200 <= final.code < 300:
        for address in accepted:
            result.recipients[address] = RecipientResult(
                address, Outcome.ACCEPTED, final.code, final.enhanced_status, final.text
            )
    else:
        for address in accepted:
            result.recipients[address] = _refusal(address, final)
        result.error = _refused_by("Message refused after DATA", final)


def _settle_failure(
    result: _Transaction, recipients: list[str], error: MailError
) -> None:
    """Decide the recipients a failed exchange left open: unknown once the end
    of data was written (maybe delivered), else temporary (safe to retry).
    Replies already received stand (see :func:`_apply_envelope`)."""
    _apply_envelope(result, recipients)
    if result.end_written:
        outcome = Outcome.UNKNOWN
    elif isinstance(error, SMTPError):
        outcome = Outcome.TEMPORARY  # the session failed: safe to retry
    else:
        outcome = Outcome.PERMANENT  # our side (e.g. an unreadable attachment)
    for address in recipients:
        if address not in result.recipients:
            result.recipients[address] = RecipientResult(
                address, outcome, text=str(error)
            )
    if result.end_written:
        result.error = DeliveryUnknownError(
            f"Connection failed after the end of data was sent ({error}); the "
            "message may have been delivered, so it is not resent"
        )
    else:
        result.error = error


class SMTPConnection:
    """One SMTP session, set up by aiosmtplib, then driven by :class:`_ReplyStream`."""

    def __init__(self, client: aiosmtplib.SMTP, timeout: float | None) -> None:
        transport = client.transport
        # uvloop's transports do not subclass asyncio's; check the interface.
        if transport is None or not hasattr(transport, "set_protocol"):
            raise SMTPServerDisconnectedError("The connection closed during setup")
        transport = cast("asyncio.WriteTransport", transport)
        self.client = client
        self.timeout = timeout
        extensions = client.esmtp_extensions
        self.pipelining = "pipelining" in extensions
        self.eight_bit_mime = "8bitmime" in extensions
        self.smtputf8 = "smtputf8" in extensions
        size = extensions.get("size", "")
        self.size_limit = (
            int(size) if size.strip().isdigit() and int(size) > 0 else None
        )
        self.stream = _ReplyStream(transport, asyncio.get_running_loop())
        leftover = client.protocol._buffer if client.protocol is not None else b""
        transport.set_protocol(self.stream)
        if leftover:
            self.stream.error = SMTPResponseError("Unsolicited data from the server")

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

    async def transaction(
        self,
        sender: str,
        recipients: list[str],
        data: WirePayload,
        *,
        eight_bit: bool,
        smtputf8: bool,
        deadline: float | None,
        result: _Transaction | None = None,
    ) -> _Transaction:
        """Send one message to *recipients*; *data* is already dot-stuffed.

        *deadline* is a loop time bounding the whole exchange. Never raises for
        what the server said or for a lost connection: the outcome is in the
        returned :class:`_Transaction` (or in *result*, when given).

        Cancellation propagates, but only after *result* records what is
        known at that moment (replies that already arrived stand; unknown
        once the end of data was written; temporary otherwise), with no
        waiting: the transport is aborted.
        """
        if result is None:
            result = _Transaction()
        self.stream.set_deadline(self._deadline(deadline))
        try:
            await self._exchange(
                result,
                sender,
                recipients,
                data,
                eight_bit=eight_bit,
                smtputf8=smtputf8,
                deadline=deadline,
            )
        except (MailError, OSError, TimeoutError) as exc:
            result.reusable = False
            self.stream.transport.abort()
            if not result.settled:
                _settle_failure(result, recipients, map_error(exc))
        except BaseException:
            # Cancelled (or worse) mid-exchange: the session state is unknown.
            result.reusable = False
            if not result.settled:
                self._settle_cancelled(result, recipients)
            self.stream.transport.abort()
            raise
        return result

    def _settle_cancelled(self, result: _Transaction, recipients: list[str]) -> None:
        """Record what a cancelled exchange is known to have done, taking the
        replies that arrived but were not read yet (no waiting)."""
        queued = self.stream.take_queued()
        if result.awaiting_final and queued:
            _apply_final(result, list(result.data_recipients), queued[0])
        elif not result.envelope_done:
            result.replies.extend(queued)
        _settle_failure(
            result,
            recipients,
            SMTPError("The send was cancelled before this message was completed"),
        )
        result.settled = True

    async def _exchange(
        self,
        result: _Transaction,
        sender: str,
        recipients: list[str],
        data: WirePayload,
        *,
        eight_bit: bool,
        smtputf8: bool,
        deadline: float | None,
    ) -> None:
        stream = self.stream
        if deadline is not None and stream.loop.time() >= deadline:
            raise SMTPDeadlineExceededError(
                "The message's deadline passed before it was sent"
            )
        params = ""
        if self.size_limit is not None:
            params += f" SIZE={payload_size(data)}"
        if eight_bit:
            params += " BODY=8BITMIME"
        if smtputf8:
            params += " SMTPUTF8"
        commands = [f"MAIL FROM:<{sender}>{params}"]
        commands += [f"RCPT TO:<{r}>" for r in recipients]
        encoding = "utf-8" if smtputf8 else "ascii"
        replies = result.replies
        if self.pipelining:
            commands.append("DATA")
            wire = "\r\n".join(commands) + "\r\n"
            _check_commands(wire, len(commands))
            stream.send(wire.encode(encoding), len(commands))
            commands.pop()
            for _ in range(len(commands) + 1):
                try:
                    replies.append(await stream.read())
                except SMTPConnectError:
                    if not replies or replies[-1].code != 421:
                        raise
                    break  # "421 closing": keep what the server said
            if isinstance(stream.error, SMTPResponseError):
                raise stream.error  # e.g. more replies than commands: out of step
        else:
            for command in commands:
                _check_commands(f"{command}\r\n", 1)
                stream.send(f"{command}\r\n".encode(encoding), 1)
                replies.append(await stream.read())
                if not 200 <= replies[0].code < 300 or replies[-1].code == 421:
                    break
            if (
                replies[0].code < 300
                and replies[-1].code != 421  # the server is closing
                and any(200 <= r.code < 300 for r in replies[1:])
            ):
                stream.send(b"DATA\r\n", 1)
                replies.append(await stream.read())

        mail_reply = replies[0]
        rcpt_replies = replies[1 : 1 + len(recipients)]
        data_reply = (
            replies[1 + len(recipients)] if len(replies) > len(recipients) + 1 else None
        )
        if not _plausible(replies, len(recipients)):
            # A 354 to MAIL/RCPT, a 250 to DATA...: an unsolicited reply shifted
            # the others; none of them can be trusted.
            raise SMTPResponseError(
                "Replies out of step with commands: "
                + ", ".join(str(r.code) for r in replies)
            )
        closing = next((r for r in replies if r.code == 421), None)
        if closing is not None:
            result.reusable = False
        result.envelope_done = True

        if not 200 <= mail_reply.code < 300:
            for address in recipients:
                result.recipients[address] = _refusal(address, mail_reply)
            result.error = _refused_by(f"Sender <{sender}> refused", mail_reply, sender)
            if _wants_auth(mail_reply):
                _add_hint(result.error, AUTH_HINT)
        else:
            for address, reply in zip(recipients, rcpt_replies, strict=False):
                if 200 <= reply.code < 300:
                    continue
                result.recipients[address] = _refusal(address, reply)
            for address in recipients[len(rcpt_replies) :]:
                # No reply (the session stopped early, or closed with 421).
                result.recipients[address] = (
                    _refusal(address, closing)
                    if closing is not None
                    else RecipientResult(
                        address, Outcome.TEMPORARY, text="not attempted"
                    )
                )
        accepted = [a for a in recipients if a not in result.recipients]

        if data_reply is not None and data_reply.code == 354:
            stream.set_deadline(self._deadline(deadline))
            if not accepted:
                # RFC 2920: DATA accepted although every RCPT failed; end it
                # with an empty message, which the server must reject.
                stream.send(b".\r\n", 1)
                await stream.read()
            else:
                result.data_recipients = tuple(accepted)
                await self._send_data(result, data, deadline)
                stream.set_deadline(self._deadline(deadline))
                result.awaiting_final = True
                final = await stream.read()
                if not 200 <= final.code < 300 and not 400 <= final.code < 600:
                    raise SMTPResponseError(
                        f"Unexpected reply to the end of data: {final}"
                    )
                _apply_final(result, accepted, final)
                accepted = []
        elif accepted:
            # DATA refused (or never sent): nobody got the message.
            reply = data_reply or closing or Reply(503, "DATA not sent")
            for address in accepted:
                result.recipients[address] = _refusal(address, reply)
            result.error = _refused_by("DATA refused", reply)

        refused = {a: r for a, r in result.recipients.items() if not r.accepted}
        if refused and result.error is None:
            result.error = recipients_refused(refused, len(recipients))
        result.settled = True
        if refused and result.reusable:
            # Leave the session clean for the next message.
            stream.send(b"RSET\r\n", 1)
            reset = await stream.read()
            if not 200 <= reset.code < 300:
                result.reusable = False

    async def _send_data(
        self, result: _Transaction, data: WirePayload, deadline: float | None
    ) -> None:
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
            await self._end_written(result)
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
        await self._end_written(result)

    async def _end_written(self, result: _Transaction) -> None:
        """The end of data is queued: it counts as written (the message may
        be delivered from now on, never to be resent) once the transport
        handed it to the operating system."""
        await self.stream.flushed()
        result.end_written = True

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
        return 200 <= reply.code < 300

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
        try:
            if self.usable:
                timeout = min(self.timeout or QUIT_TIMEOUT, QUIT_TIMEOUT)
                with anyio.move_on_after(timeout):
                    self.stream.send(b"QUIT\r\n", 1)
                    await self.stream.read()
        except (SMTPError, OSError):
            pass
        finally:
            self.stream.transport.close()
            self.client.close()


# -- errors -----------------------------------------------------------------------


def _ssl_cause(exc: BaseException) -> ssl.SSLError | None:
    """The ssl module's own error behind *exc*, if any (not our TLSError,
    which is an ssl.SSLError too)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError) and not isinstance(seen, MailError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


# Failures to reach the server at all (not TLS failures) during an implicit
# TLS connect.
_UNREACHABLE_ERRNOS = frozenset(
    {errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EADDRNOTAVAIL}
)


def _in_handshake(exc: BaseException, client: aiosmtplib.SMTP) -> bool:
    """Whether an implicit-TLS connect failed in the TLS handshake: the TCP
    connection was made (nothing refused, unreachable or timed out) but no
    transport came out of it."""
    if getattr(client, "transport", None) is not None:
        return False  # the handshake succeeded; the greeting failed
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, (TimeoutError, socket.gaierror)) or (
            isinstance(seen, OSError) and seen.errno in _UNREACHABLE_ERRNOS
        ):
            return False
        seen = seen.__cause__ or seen.__context__
    return isinstance(exc, aiosmtplib.SMTPConnectError)


def _handshake_error(exc: BaseException, where: str) -> TLSError:
    """A TLS handshake the server broke off, as a TLSError with the reason."""
    tls = _ssl_cause(exc)
    if tls is not None:
        reason = getattr(tls, "verify_message", None) or tls.reason or str(tls)
    else:
        cause: BaseException = exc
        while cause.__cause__ is not None:
            cause = cause.__cause__
        detail = str(cause) or type(cause).__name__
        reason = (
            "the server closed or reset the connection during the handshake "
            f"({detail}); it may speak only an old TLS version, or not TLS "
            "on this port"
        )
    return TLSError(f"{where}: TLS failed: {reason}")


def map_error(exc: BaseException, where: str = "") -> MailError:
    """Map aiosmtplib, ssl and OS errors to asyncmail's tree (see exceptions)."""
    if isinstance(exc, MailError):
        return exc
    prefix = f"{where}: " if where else ""
    tls = _ssl_cause(exc)
    if tls is not None:
        reason = getattr(tls, "verify_message", None) or tls.reason or str(tls)
        return TLSError(f"{prefix}TLS failed: {reason}")
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
        return SMTPAuthenticationError(
            f"{prefix}authentication failed: {exc.code} {exc.message}",
            code=exc.code,
            text=exc.message,
            enhanced_status=Reply(exc.code, exc.message).enhanced_status,
        )
    if isinstance(exc, aiosmtplib.SMTPTimeoutError) or (
        isinstance(exc, TimeoutError) and exc.errno is not None
    ):  # a step of the set-up (or the OS's TCP connect) exceeded its limit
        return SMTPConnectTimeoutError(f"{prefix}timed out ({exc or 'no answer'})")
    if isinstance(exc, TimeoutError):  # asyncio's, at the deadline
        return SMTPDeadlineExceededError(f"{prefix}timed out (deadline reached)")
    if isinstance(exc, aiosmtplib.SMTPConnectResponseError):
        return SMTPConnectError(
            f"{prefix}the server refused the connection: {exc.code} {exc.message}",
            code=exc.code,
            text=exc.message,
            enhanced_status=Reply(exc.code, exc.message).enhanced_status,
        )
    if isinstance(exc, aiosmtplib.SMTPServerDisconnected):
        return SMTPServerDisconnectedError(f"{prefix}{exc}")
    if isinstance(exc, aiosmtplib.SMTPConnectError):
        return SMTPConnectError(f"{prefix}{exc}")
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return SMTPResponseError(
            f"{prefix}unexpected reply: {exc.code} {exc.message}",
            code=exc.code,
            text=exc.message,
            enhanced_status=Reply(exc.code, exc.message).enhanced_status,
        )
    if isinstance(exc, OSError):
        return SMTPConnectError(f"{prefix}{exc.strerror or exc}")
    if isinstance(exc, aiosmtplib.SMTPException):
        return SMTPError(f"{prefix}{exc}")
    return SMTPError(f"{prefix}{type(exc).__name__}: {exc}")


def _render_for_wire(message: EmailMessage) -> tuple[RenderedMessage, WirePayload]:
    """Render a message and dot-stuff it (pure work, safe in a thread)."""
    rendered = message.render()
    return rendered, wire_payload(rendered)


AUTH_HINT = (
    "The server requires authentication (AUTH): set EMAIL_HOST_USER and "
    "EMAIL_HOST_PASSWORD (or the username and password options)"
)


def _add_hint(error: MailError, hint: str) -> MailError:
    """Append *hint* to *error*'s message; its type and attributes stay."""
    if error.args and isinstance(error.args[0], str):
        error.args = (f"{error.args[0].rstrip('.')}. {hint}.", *error.args[1:])
    return error


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, kind):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _plain_answer(exc: BaseException) -> bool:
    """Whether a TLS handshake failed because plain text came back (an SMTP
    greeting where a TLS record was expected)."""
    tls = _ssl_cause(exc)
    reason = (getattr(tls, "reason", None) or str(tls or exc)).upper()
    return any(
        sign in reason
        for sign in (
            "WRONG_VERSION_NUMBER",
            "RECORD_LAYER_FAILURE",
            "HTTP_REQUEST",
            "UNKNOWN_PROTOCOL",
            "PACKET_LENGTH_TOO_LONG",
        )
    )


def _wants_auth(reply: Reply) -> bool:
    """Whether a refusal of MAIL says authentication is required (530, or an
    RFC 3463 security status naming authentication)."""
    if reply.code == 530:
        return True
    status = reply.enhanced_status or ""
    return status.startswith("5.7.") and "auth" in reply.text.lower()


def _is_loopback(host: str) -> bool:
    """Whether *host* (a peer's IP address, never a name) is a loopback address.

    An IPv4-mapped IPv6 address (``::ffff:127.0.0.1``, what a dual-stack
    socket reports) counts as the IPv4 address it maps.
    """
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


# -- the backend --------------------------------------------------------------------


class _Attempt(NamedTuple):
    """What one try at a message did."""

    error: MailError | None
    reply: str = ""
    written: tuple[str, ...] = ()  # recipients its end of data was written for
    fail_fast: bool = False  # the breaker is open: no retry
    #: The server is at its connection limit (421 at the greeting while other
    #: connections are open): wait for one of those, not counted as a try.
    busy: bool = False


@dataclass(slots=True)
class _Prepared:
    """A message rendered and addressed, ready for any connection."""

    message: EmailMessage
    sender: str
    recipients: list[str]
    rendered: RenderedMessage
    data: WirePayload
    smtputf8: bool  # a header or envelope address needs SMTPUTF8
    # Rendered again without 8bit, if a server needs it: (payload, Message-ID).
    seven_bit: tuple[WirePayload, str] | None = None
    message_id: str = ""  # that of the rendering last sent


#: How many times one message waits for a busy server's open connections
#: (421 at the greeting) before the 421 counts as an ordinary failure.
MAX_BUSY_WAITS: Final = 20


@dataclass(slots=True)
class _Delivery:
    """One message on its way, across attempts: what is known so far.

    Kept outside the call stack so that a cancelled send can still report,
    from it, what happened to the message (:meth:`interrupted`).
    """

    prepared: _Prepared
    pending: list[str]  # the recipients the next attempt is for
    deadline: float | None = None  # loop time; set when sending starts
    outcome: dict[str, RecipientResult] = field(default_factory=dict)
    settled: set[str] = field(default_factory=set)  # data written: never retried
    error: MailError | None = None
    reply: str = ""
    attempts: int = 0
    transaction: _Transaction | None = None  # the exchange under way, if any

    def result(self) -> MessageResult:
        prepared = self.prepared
        ordered = {address: self.outcome[address] for address in prepared.recipients}
        error = self.error
        if all(result.accepted for result in ordered.values()):
            error = None
        elif isinstance(error, RecipientsRefusedError):
            # Across attempts: the recipients refused in the end, not the last try's.
            refused = {a: r for a, r in ordered.items() if r.outcome in _REFUSED}
            if refused:
                error = recipients_refused(refused, len(ordered))
        return MessageResult(
            prepared.message,
            ordered,
            error=error,
            message_id=prepared.message_id,
            reply=self.reply,
            attempts=self.attempts,
        )

    def interrupted(self) -> MessageResult:
        """The result of a message whose send is being cancelled: accepted
        where the reply to its end of data arrived, unknown where the end of
        data was written without a reply, not sent (temporary) otherwise."""
        transaction = self.transaction
        if transaction is not None:
            self.outcome.update(transaction.recipients)
            self.reply = transaction.reply or self.reply
        cancelled = SMTPError("The send was interrupted before this message was sent")
        for address in self.prepared.recipients:
            if address not in self.outcome:
                self.outcome[address] = RecipientResult.failure(
                    address, Outcome.TEMPORARY, cancelled
                )
        if any(r.outcome is Outcome.UNKNOWN for r in self.outcome.values()):
            self.error = DeliveryUnknownError(
                "The send was interrupted after the end of data was written; "
                "the message may have been delivered, so it is not resent"
            )
        elif self.error is None or not isinstance(self.error, SendError):
            self.error = cancelled
        return self.result()


class EmailBackend(BaseEmailBackend):
    """Send over SMTP (aiosmtplib underneath), Django-compatible options.

    Django's options, each defaulting to its EMAIL_* setting: ``host``,
    ``port``, ``username``, ``password``, ``use_tls`` (STARTTLS, required when
    set), ``use_ssl`` (implicit TLS; not with use_tls), ``timeout`` (seconds
    for each wait on the server; None: no timeout), ``ssl_certfile``,
    ``ssl_keyfile`` (a client certificate).

    asyncmail's own:

    :param ssl_context: your :class:`ssl.SSLContext` (replaces the verifying
        default; not with ssl_certfile/ssl_keyfile).
    :param local_hostname: the EHLO name (default: this host's FQDN).
    :param dangerously_allow_plaintext_auth: send credentials over an
        unencrypted connection to a non-loopback server. Off by default.
    :param max_connections: connections used at once (1: Django's behaviour).
    :param max_messages_per_connection: retire a connection after this many.
    :param max_connection_lifetime: retire a connection after this many seconds.
    :param idle_timeout: close a connection idle this long (seconds).
    :param probe_after: probe (NOOP) a connection idle this long before reuse.
    :param rate_limit: at most this many messages in any one second (all
        connections together), spaced evenly.
    :param rate_limit_burst: how many messages may go back to back after a
        pause (default 1: none); never more than ``rate_limit`` a second.
    :param retries: extra attempts for transient failures (default 2).
    :param retry_backoff: first backoff in seconds, doubled each retry, with
        jitter, capped by ``retry_backoff_max``.
    :param deadline: seconds one message may take in all, connecting, TLS,
        AUTH and retries included (default: ``timeout``, so that a send fails
        within about one EMAIL_TIMEOUT; None: no bound). Waiting for the rate
        limit is not counted.
    :param breaker_threshold: consecutive connect failures after which the
        server is taken to be unreachable (see :mod:`.retry`).
    :param breaker_cooldown: seconds before an open breaker lets one message
        probe the server again.
    :param oauth2_token_provider: authenticate with OAuth2 (XOAUTH2 or
        OAUTHBEARER) instead of a password: a callable (async or not; may
        take ``refresh``) returning an access token for ``username``, called
        for each new connection (see :mod:`asyncmail.oauth2`).
    :param dkim: DKIM-sign every message: a :class:`asyncmail.dkim.DKIMSigner`
        or a dict of its arguments (``selector``, ``domain``, ``private_key``
        ...); default the EMAIL_DKIM setting (None: no signing).
    """

    def __init__(
        self,
        *,
        host: str | None = None,
        port: int | None = None,
        username: str | None = None,
        password: str | None = None,
        use_tls: bool | None = None,
        use_ssl: bool | None = None,
        timeout: float | _NotGiven | None = NOT_GIVEN,
        ssl_keyfile: str | None = None,
        ssl_certfile: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        local_hostname: str | None = None,
        dangerously_allow_plaintext_auth: bool = False,
        max_connections: int = 1,
        max_messages_per_connection: int | None = None,
        max_connection_lifetime: float | None = None,
        idle_timeout: float | None = 60.0,
        probe_after: float | None = 10.0,
        rate_limit: float | None = None,
        rate_limit_burst: int = 1,
        retries: int = 2,
        retry_backoff: float = 0.5,
        retry_backoff_max: float = 30.0,
        deadline: float | _NotGiven | None = NOT_GIVEN,
        breaker_threshold: int = 3,
        breaker_cooldown: float = 5.0,
        oauth2_token_provider: TokenProvider | str | None = None,
        dkim: DKIMSigner | Mapping[str, Any] | None = None,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self.host = host or settings.EMAIL_HOST
        self.port = port or settings.EMAIL_PORT
        self.username = settings.EMAIL_HOST_USER if username is None else username
        self.password = settings.EMAIL_HOST_PASSWORD if password is None else password
        self.use_tls = settings.EMAIL_USE_TLS if use_tls is None else use_tls
        self.use_ssl = settings.EMAIL_USE_SSL if use_ssl is None else use_ssl
        self.timeout: float | None = (
            settings.EMAIL_TIMEOUT if isinstance(timeout, _NotGiven) else timeout
        )
        self.ssl_keyfile = (
            settings.EMAIL_SSL_KEYFILE if ssl_keyfile is None else ssl_keyfile
        )
        self.ssl_certfile = (
            settings.EMAIL_SSL_CERTFILE if ssl_certfile is None else ssl_certfile
        )
        self.ssl_context = ssl_context
        self.local_hostname = local_hostname
        self.dangerously_allow_plaintext_auth = dangerously_allow_plaintext_auth
        self.retries = retries
        self.retry_backoff = retry_backoff
        self.retry_backoff_max = retry_backoff_max
        if isinstance(deadline, _NotGiven):
            deadline = self.timeout
        self.deadline = deadline
        if breaker_threshold < 1:
            raise ConfigurationError("breaker_threshold must be at least 1")
        if breaker_cooldown < 0:
            raise ConfigurationError("breaker_cooldown must be 0 or more seconds")
        self._validate()
        # OAuth2 (asyncmail/oauth2.py): a token per connection, never kept.
        self.oauth2 = token_provider_from_option(oauth2_token_provider)
        if self.oauth2 is not None and (self.password or not self.username):
            raise ConfigurationError(
                "oauth2_token_provider needs username (the mailbox the token is "
                "for) and no password"
            )
        # DKIM (asyncmail/dkim.py): the key is read and checked here.
        self.dkim = signer_from_option(settings.EMAIL_DKIM if dkim is None else dkim)
        try:
            self.limits = PoolLimits(
                max_connections=max_connections,
                max_messages=max_messages_per_connection,
                max_lifetime=max_connection_lifetime,
                idle_timeout=idle_timeout,
                probe_after=probe_after,
            )
            self.rate_limiter = (
                None
                if rate_limit is None
                else RateLimiter(rate_limit, burst=rate_limit_burst)
            )
        except ValueError as exc:  # a bad option, as the others are
            raise ConfigurationError(str(exc)) from exc
        self._pool: ConnectionPool[SMTPConnection] | None = None
        self._tls_context: ssl.SSLContext | None = None
        # Opens after consecutive connect failures: then messages needing a
        # new connection fail fast, until a probe after the cooldown connects.
        self._breaker = Breaker(breaker_threshold, breaker_cooldown)

    def _validate(self) -> None:
        if self.use_tls and self.use_ssl:
            raise ConfigurationError(
                "use_tls (STARTTLS) and use_ssl (implicit TLS) are mutually "
                "exclusive; set only one"
            )
        if self.ssl_context is not None and (self.ssl_certfile or self.ssl_keyfile):
            raise ConfigurationError(
                "Give either ssl_context or ssl_certfile/ssl_keyfile, not both"
            )
        if (
            not isinstance(self.port, int)
            or isinstance(self.port, bool)
            or not 0 < self.port < 65536
        ):
            raise ConfigurationError(f"Invalid SMTP port {self.port!r}")
        if self.local_hostname is not None and not (
            isinstance(self.local_hostname, str)
            and len(self.local_hostname) <= 255
            and _EHLO_NAME.fullmatch(self.local_hostname)
        ):
            raise ConfigurationError(
                f"Invalid local_hostname {self.local_hostname!r}: use a host name "
                "or an address literal such as [192.0.2.1]"
            )
        for name in ("host", "username", "password"):
            value = getattr(self, name)
            if not isinstance(value, str) or any(c in value for c in "\r\n\0"):
                raise ConfigurationError(f"Invalid SMTP {name}")
        if not self.host.isascii():
            # The same IDNA 2008 conversion as every address's domain (the
            # resolver would otherwise apply the stdlib's IDNA 2003 codec).
            ascii_host = ascii_hostname(self.host)
            if ascii_host is None:
                raise ConfigurationError(
                    f"Invalid SMTP host {self.host!r}: not a valid host name"
                )
            self.host = ascii_host
        if self.timeout is not None and self.timeout <= 0:
            raise ConfigurationError("timeout must be positive or None")
        if self.retries < 0:
            raise ConfigurationError("retries must be 0 or more")
        if self.deadline is not None and self.deadline <= 0:
            raise ConfigurationError("deadline must be positive or None")

    def __repr__(self) -> str:
        return (
            f"<{type(self).__module__}.{type(self).__qualname__} "
            f"{self.host}:{self.port} {self.state.value}>"
        )

    # -- connections ---------------------------------------------------------------

    async def _tls(self) -> ssl.SSLContext:
        if self.ssl_context is not None:
            return self.ssl_context
        if self._tls_context is None:
            # Loading the CA store reads files: keep it off the event loop.
            self._tls_context = await run_sync(self._build_tls_context)
        return self._tls_context

    def _build_tls_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.ssl_certfile:
            context.load_cert_chain(self.ssl_certfile, self.ssl_keyfile)
        return context

    @observability.traced_connect  # logs it; with OpenTelemetry, a span
    async def connect(self, deadline: float | None = None) -> SMTPConnection:
        """Open a new, fully set-up connection (TLS and AUTH done) or raise.

        *deadline* (a loop time) bounds the whole set-up; ``timeout`` still
        bounds each wait on the server, and ``deadline`` the whole.
        """
        if deadline is None and self.deadline is not None:
            deadline = asyncio.get_running_loop().time() + self.deadline
        where = f"SMTP {self.host}:{self.port}"
        try:
            tls = await self._tls() if (self.use_tls or self.use_ssl) else None
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            raise ConfigurationError(
                f"{where}: cannot set up TLS with ssl_certfile="
                f"{self.ssl_certfile!r}, ssl_keyfile={self.ssl_keyfile!r}: {exc}"
            ) from exc
        client = aiosmtplib.SMTP(
            hostname=self.host,
            port=self.port,
            local_hostname=self.local_hostname or await aget_fqdn(),
            timeout=self.timeout,
            use_tls=self.use_ssl,
            start_tls=False,
            tls_context=tls,
        )
        try:
            async with asyncio.timeout_at(deadline):
                try:
                    await client.connect()
                except Exception as exc:
                    if self.use_ssl and _in_handshake(exc, client):
                        raise _handshake_error(exc, where) from exc
                    raise
                await self._hello(client)
                if self.use_tls:
                    if not client.supports_extension("starttls"):
                        raise TLSError(
                            f"{where}: STARTTLS extension not supported by "
                            "server. STARTTLS was required (use_tls) but the "
                            "server does not offer it; nothing was sent"
                        )
                    try:
                        await client.starttls(tls_context=tls)
                    except aiosmtplib.SMTPServerDisconnected as exc:
                        # Closed or reset during the handshake (e.g. a server
                        # that speaks only an old TLS): not worth retrying.
                        raise _handshake_error(exc, where) from exc
                    await self._hello(client)
                if self.username or self.password or self.oauth2 is not None:
                    await self._login(client, where)
            return SMTPConnection(client, self.timeout)
        except BaseException as exc:
            client.close()
            if isinstance(exc, MailError):
                self._hinted(exc, exc)
                raise  # ours already, with its cause kept
            if isinstance(exc, Exception):
                raise self._hinted(map_error(exc, where), exc) from exc
            raise

    def _hinted(self, error: MailError, exc: BaseException) -> MailError:
        """*error*, saying what to check for the connect failures users hit
        most (a wrong host or port, TLS of the wrong kind)."""
        if _caused_by(exc, ConnectionRefusedError):
            return _add_hint(
                error,
                f"Is an SMTP server listening on {self.host}:{self.port}? Check "
                "EMAIL_HOST and EMAIL_PORT (or the host and port options)",
            )
        if self.use_ssl and isinstance(error, TLSError) and _plain_answer(exc):
            return _add_hint(
                error,
                f"The server on port {self.port} answered without TLS: use_ssl "
                "(EMAIL_USE_SSL) is implicit TLS, usually port 465; for STARTTLS "
                "set use_tls (EMAIL_USE_TLS) instead, usually with port 587",
            )
        if (
            not self.use_ssl
            and self.port == 465
            and isinstance(error, SMTPTimeoutError)
        ):
            return _add_hint(
                error,
                "Port 465 usually expects implicit TLS: set use_ssl (EMAIL_USE_SSL)",
            )
        return error

    async def _hello(self, client: aiosmtplib.SMTP) -> None:
        try:
            await client.ehlo()
        except aiosmtplib.SMTPHeloError:
            await client.helo()

    async def _login(self, client: aiosmtplib.SMTP, where: str) -> None:
        encrypted = client.get_transport_info("sslcontext") is not None
        peer = client.get_transport_info("peername")
        loopback = isinstance(peer, tuple) and _is_loopback(str(peer[0]))
        if not (encrypted or loopback or self.dangerously_allow_plaintext_auth):
            raise InsecureAuthError(
                f"{where}: refusing to send credentials over an unencrypted "
                "connection; set use_tls or use_ssl (or, on a trusted network only, "
                "dangerously_allow_plaintext_auth=True)"
            )
        if not client.supports_extension("auth"):
            raise SMTPAuthenticationError(
                f"{where}: credentials are set but the server offers no AUTH"
            )
        if self.oauth2 is not None:
            await oauth2_authenticate(
                client,
                self.oauth2,
                username=self.username,
                host=self.host,
                port=self.port,
                where=where,
            )
            return
        await client.login(self.username, self.password)

    def _new_pool(self) -> ConnectionPool[SMTPConnection]:
        return ConnectionPool(
            connect=self.connect,
            close=SMTPConnection.close,
            is_usable=lambda connection: connection.usable,
            probe=SMTPConnection.noop,
            limits=self.limits,
            detach=SMTPConnection.detach,
        )

    @property
    def pool(self) -> ConnectionPool[SMTPConnection] | None:
        """The connection pool while the backend is open (None when closed)."""
        return self._pool

    async def open(self) -> bool | None:
        """Connect (one connection; a pool grows on demand) and keep it open.

        Returns True if connected now, False if already open, None if the
        connection failed and ``fail_silently`` is set.
        """
        self.check_loop()
        if self._pool is not None:
            return False
        pool = self._pool = self._new_pool()
        self.bound_loop = asyncio.get_running_loop()  # no other loop meanwhile
        try:
            entry = await self._first_connection(pool)
        except BaseException as exc:
            # Not open after all (failed, or cancelled mid-way).
            self._pool = None
            self.bound_loop = None
            if isinstance(exc, MailError) and self.fail_silently:
                self.open_error = exc
                return None
            raise
        self.open_error = None
        await pool.release(entry, reusable=True)
        await super().open()
        return True

    async def open_for_sending(self) -> bool | None:
        """What ``send_messages`` does on a closed backend: open the pool
        without connecting. The first message connects, within its own
        deadline, so that one send's time (connecting included) is bounded
        by one deadline, and a server that cannot be reached is met by the
        breaker rather than by a second retry loop."""
        self.check_loop()
        if self._pool is not None:
            return False
        self._pool = self._new_pool()
        self.bound_loop = asyncio.get_running_loop()
        self.open_error = None
        await BaseEmailBackend.open(self)
        return True

    def forget_inherited(self) -> None:
        """In a forked child: the parent's pool (already orphaned, see
        :meth:`ConnectionPool.orphan`) is dropped; the next send opens
        connections of the child's own."""
        self._pool = None
        super().forget_inherited()

    async def _first_connection(
        self, pool: ConnectionPool[SMTPConnection]
    ) -> Pooled[SMTPConnection]:
        """Connect, retrying transient failures (421 greeting, silence, a
        dropped connection) as a message would be, within the deadline."""
        loop = asyncio.get_running_loop()
        deadline = None if self.deadline is None else loop.time() + self.deadline
        attempt = 0
        while True:
            attempt += 1
            try:
                return await pool.acquire(deadline)
            except MailError as exc:
                delay = self._backoff(attempt)
                if not (
                    is_transient(exc)
                    and attempt <= self.retries
                    and (deadline is None or loop.time() + delay < deadline)
                ):
                    raise
            except TimeoutError as exc:  # waiting for the pool: cannot happen here
                raise SMTPPoolTimeoutError(
                    f"SMTP {self.host}:{self.port}: the deadline passed while "
                    "waiting for a connection"
                ) from exc
            await asyncio.sleep(delay)

    async def close(self) -> None:
        """QUIT and close every connection (from the loop that opened them)."""
        self.check_loop()
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()
        self.bound_loop = None
        await super().close()

    # -- sending -------------------------------------------------------------------

    async def _prepare(self, message: EmailMessage) -> _Prepared:
        sender = envelope_address(message.from_email)
        recipients: list[str] = []
        for address in message.recipients():
            key = envelope_address(address)  # raises for an invalid recipient
            if key not in recipients:
                recipients.append(key)
        if self.dkim is not None:  # rendered 7-bit where it can be, and signed
            rendered = await self.dkim.arender(message)
            payload = wire_payload(rendered)
        elif render_is_heavy(message):
            # Big content: render (pure work) off the event loop, so that no
            # send stalls the loop (benchmarks/worst_case.py has the figures).
            rendered, payload = await anyio.to_thread.run_sync(
                _render_for_wire, message
            )
        else:
            rendered, payload = _render_for_wire(message)
        smtputf8 = (
            rendered.smtputf8
            or not sender.isascii()
            or not all(address.isascii() for address in recipients)
        )
        return _Prepared(
            message,
            sender,
            recipients,
            rendered,
            payload,
            smtputf8,
            message_id=rendered.message_id,
        )

    def _payload(
        self, prepared: _Prepared, connection: SMTPConnection
    ) -> tuple[WirePayload, bool]:
        """The payload for this connection: 8bit only where the server takes it.

        Raises a MailError, before anything is written, when the connection
        cannot carry the message (SMTPUTF8 or 8BITMIME missing, too large).
        """
        rendered = prepared.rendered
        if prepared.smtputf8 and not connection.smtputf8:
            raise SMTPNotSupportedError(
                "The message needs SMTPUTF8 (a non-ASCII local part) but the "
                "server does not support it"
            )
        if not rendered.eight_bit or connection.eight_bit_mime:
            data, eight_bit = prepared.data, rendered.eight_bit
            prepared.message_id = rendered.message_id
        else:
            if prepared.seven_bit is None:
                try:
                    seven_bit = prepared.message.render(allow_8bit=False)
                    if seven_bit.eight_bit:  # e.g. a subclass's own message()
                        raise ValueError("its 8-bit content cannot be re-encoded")
                except ValueError as exc:  # e.g. a raw message's 8-bit body
                    raise SMTPNotSupportedError(
                        "The server does not support 8BITMIME and the message "
                        f"cannot be sent without it: {exc}"
                    ) from exc
                if self.dkim is not None:  # rare: signed content rendered 8-bit
                    seven_bit = self.dkim.sign(seven_bit)
                prepared.seven_bit = (wire_payload(seven_bit), seven_bit.message_id)
            # A new rendering has its own Message-ID (unless one was given).
            data, prepared.message_id = prepared.seven_bit
            eight_bit = False
        if (
            connection.size_limit is not None
            and (size := payload_size(data)) > connection.size_limit
        ):
            raise MessageRefusedError(
                f"The message ({size} octets) exceeds the server's "
                f"size limit ({connection.size_limit} octets)"
            )
        return data, eight_bit

    def _backoff(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number *attempt* (from 1):
        exponential, capped, with jitter so that retries spread out."""
        delay = min(self.retry_backoff * 2.0 ** (attempt - 1), self.retry_backoff_max)
        return delay * random.uniform(0.5, 1.0)

    async def deliver(self, message: EmailMessage) -> MessageResult:
        delivery = await self._begin(message)
        await self._deliver(delivery)
        return delivery.result()

    async def _begin(self, message: EmailMessage) -> _Delivery:
        # BadHeaderError etc.: nothing on the wire
        prepared = await self._prepare(message)
        return _Delivery(prepared, list(prepared.recipients))

    async def _deliver(self, delivery: _Delivery) -> None:
        """Attempt *delivery* until done, out of retries or out of time."""
        loop = asyncio.get_running_loop()
        if self.deadline is not None:
            delivery.deadline = loop.time() + self.deadline
        outcome, settled = delivery.outcome, delivery.settled
        busy_waits = 0
        while True:
            delivery.attempts += 1
            step = await self._attempt(delivery)
            if step.busy and busy_waits < MAX_BUSY_WAITS:
                # Back-pressure: wait for one of the open connections (the
                # pool holds its size); not a failed try.
                busy_waits += 1
                delivery.attempts -= 1
                continue
            settled.update(step.written)
            if not isinstance(delivery.error, DeliveryUnknownError):
                # A later success keeps what failed.
                delivery.error = step.error or delivery.error
            delivery.reply = step.reply or delivery.reply
            # Only what failed transiently is tried again, and never a
            # recipient the data was written for (unknown: it may have been
            # delivered; or refused after the data: asyncmail never resends
            # once the end of data was written).
            retry = [
                a
                for a in delivery.pending
                if outcome[a].outcome is Outcome.TEMPORARY and a not in settled
            ]
            if not retry or delivery.attempts > self.retries or step.fail_fast:
                break
            delay = self._backoff(delivery.attempts)
            deadline = delivery.deadline
            if deadline is not None and loop.time() + delay >= deadline:
                break
            observability.retrying(
                delivery.prepared.message_id, delivery.attempts, delay, step.error
            )
            await asyncio.sleep(delay)
            delivery.pending = retry

    async def _attempt(self, delivery: _Delivery) -> _Attempt:
        """One try at the delivery's pending recipients; fills its outcome."""
        recipients = delivery.pending
        pool = self._pool
        loop = asyncio.get_running_loop()
        failure: MailError | None = None
        if pool is None:
            failure = SMTPConnectError("The backend was closed while sending")
        elif delivery.deadline is not None and loop.time() >= delivery.deadline:
            failure = SMTPDeadlineExceededError(
                "The message's deadline passed before it was sent"
            )
        if failure is not None or pool is None:
            return self._failed(delivery, failure or SMTPConnectError("closed"))
        probe = False
        if not pool.idle:
            blocked, probe = self._breaker.check()
            if blocked is not None:
                # The breaker is open: fail with the error that opened it (not
                # raised again: a shared exception would collect a traceback
                # per message).
                return self._failed(delivery, blocked, fail_fast=True)
        opened = pool.opened
        try:
            entry: Pooled[SMTPConnection] = await pool.acquire(delivery.deadline)
        except MailError as exc:
            # Kept in the message's result: without the traceback through
            # this call's frames, which would keep them (and the batch's
            # state) alive as long as the result lives.
            exc.__traceback__ = None
            if _busy(exc) and (pool.connections or pool.connecting):
                # A server at its connection limit (it takes, or is taking,
                # our other connections): back-pressure, not down.
                self._breaker.abandoned(probe=probe)
                pool.hold(self._breaker.cooldown or 1.0)
                attempt = self._failed(delivery, exc)
                return attempt._replace(busy=True)
            if is_transient(exc):
                self._breaker.failed(exc, probe=probe)
            else:
                self._breaker.connected()  # it answered (TLS, AUTH...): it is up
            return self._failed(delivery, exc)
        except TimeoutError:
            # Waiting for a busy pool says nothing about the server.
            self._breaker.abandoned(probe=probe)
            return self._failed(
                delivery,
                SMTPPoolTimeoutError(
                    "The message's deadline passed while waiting for a connection"
                ),
            )
        except BaseException:
            self._breaker.abandoned(probe=probe)
            raise
        if pool.opened != opened:
            self._breaker.connected()
        else:
            self._breaker.abandoned(probe=probe)
        reusable = False
        try:
            connection = entry.connection
            try:
                data, eight_bit = self._payload(delivery.prepared, connection)
            except MailError as problem:
                # Refused before a byte was written: the connection is fine.
                reusable = True
                return self._failed(delivery, problem, outcome=Outcome.PERMANENT)
            if self.rate_limiter is not None:
                # Taken last, just before the first byte, so that messages
                # reach the server as evenly spaced as the limiter grants
                # them; waiting for it is queueing, not the message's time.
                waited = loop.time()
                await self.rate_limiter.acquire()
                if delivery.deadline is not None:
                    delivery.deadline += loop.time() - waited
            prepared = delivery.prepared
            transaction = delivery.transaction = _Transaction()
            await connection.transaction(
                prepared.sender,
                recipients,
                data,
                eight_bit=eight_bit,
                smtputf8=prepared.smtputf8,
                deadline=delivery.deadline,
                result=transaction,
            )
            entry.messages += 1
            reusable = transaction.reusable
            delivery.outcome.update(transaction.recipients)
            delivery.transaction = None
            written = transaction.data_recipients if transaction.end_written else ()
            return _Attempt(transaction.error, transaction.reply, written=written)
        finally:
            await pool.release(entry, reusable=reusable)

    @staticmethod
    def _failed(
        delivery: _Delivery,
        failure: MailError,
        *,
        outcome: Outcome | None = None,
        fail_fast: bool = False,
    ) -> _Attempt:
        """An attempt that ended before its transaction: every pending
        recipient gets *failure* (temporary when it is transient)."""
        if outcome is None:
            outcome = Outcome.TEMPORARY if is_transient(failure) else Outcome.PERMANENT
        for address in delivery.pending:
            delivery.outcome[address] = RecipientResult.failure(
                address, outcome, failure
            )
        return _Attempt(failure, fail_fast=fail_fast)

    @observability.traced_delivery  # with OpenTelemetry installed: a span
    async def _deliver_message(
        self, message: EmailMessage, started: list[_Delivery]
    ) -> MessageResult:
        """Prepare and deliver *message*; its delivery goes in *started* as
        soon as it exists, for :meth:`_send_one` to report if cancelled."""
        delivery = await self._begin(message)
        started.append(delivery)
        await self._deliver(delivery)
        return delivery.result()

    async def _send_one(self, message: EmailMessage, publish: ResultCallback) -> None:
        """Deliver one message and publish its result; cancelled, publish
        what is known of it first (see :meth:`_Delivery.interrupted`)."""
        started: list[_Delivery] = []  # the delivery, once prepared
        try:
            if not message.recipients():
                result = MessageResult(message)
            else:
                result = await self._deliver_message(message, started)
        except BaseException as exc:
            failed = failure_result(message, exc)
            if failed is not None:
                publish(failed)
                return
            if started:
                publish(started[0].interrupted())
            raise
        publish(result)

    async def dispatch(
        self,
        messages: AsyncIterator[EmailMessage],
        publish: ResultCallback,
    ) -> None:
        """Send over up to ``max_connections`` connections at once.

        One worker per connection slot takes the next message only when it is
        free, so a huge or endless iterator is never materialised and a slow
        relay slows the producer (backpressure). The lock only matters for
        async sources (an async generator must not be entered twice).

        Cancelled, every message already taken gets its result (published
        before the cancellation propagates): see :meth:`_Delivery.interrupted`.
        """
        self._breaker.reset()
        try:
            await self._dispatch(messages, publish)
        finally:
            # Nothing of this call stays behind (the breaker's error and its
            # traceback would keep the call's frames, and messages, alive).
            self._breaker.reset()

    async def _dispatch(
        self,
        messages: AsyncIterator[EmailMessage],
        publish: ResultCallback,
    ) -> None:
        workers = self.limits.max_connections
        if workers == 1:
            async for message in messages:
                await self._send_one(message, publish)
            return
        lock = asyncio.Lock()
        errors: list[Exception] = []

        async def work() -> None:
            try:
                while not errors:
                    async with lock:
                        message = None if errors else await anext(messages, None)
                    if message is None:
                        return
                    await self._send_one(message, publish)
            except Exception as exc:
                # E.g. a failing source: the other workers finish what they
                # are sending (no result is lost mid-transaction) and take
                # nothing more.
                errors.append(exc)

        async with anyio.create_task_group() as group:
            for _ in range(workers):
                group.start_soon(work)
        if errors:
            raise errors[0]  # as the one-connection path raises it


def _busy(error: MailError) -> bool:
    """A 421 greeting: the server is up but will not take one more session."""
    return isinstance(error, SMTPConnectError) and error.code == 421
