"""One message on its way through the SMTP backend, across attempts.

:class:`Prepared` is a message rendered and addressed once, for any
connection; :func:`payload_for` picks its form for one connection (8-bit
only where the server takes it, dot-stuffed for DATA or as it is for BDAT,
within its size limit); :class:`Delivery`
is what is known of it so far, kept outside the call stack so that a
cancelled send can still report it (:meth:`Delivery.interrupted`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, NamedTuple

import anyio

from ..dkim import DKIMSigner
from ..exceptions import (
    DeliveryUnknownError,
    MailError,
    MessageRefusedError,
    RecipientsRefusedError,
    SendError,
    SMTPError,
    SMTPNotSupportedError,
)
from ..message import RenderedMessage, render_is_heavy
from ..results import MessageResult, Outcome, RecipientResult
from ..smtp.connection import SMTPConnection
from ..smtp.errors import recipients_refused
from ..smtp.transaction import Transaction
from ..smtp.wire import (
    WirePayload,
    chunked_payload,
    chunked_size,
    payload_size,
    wire_payload,
)

if TYPE_CHECKING:
    from ..message import BaseMessage as EmailMessage  # any sendable message

__all__ = [
    "MAX_BUSY_WAITS",
    "Attempt",
    "Delivery",
    "Prepared",
    "payload_for",
    "prepare",
]

REFUSED: Final = (Outcome.TEMPORARY, Outcome.PERMANENT)


def _render_for_wire(message: EmailMessage) -> tuple[RenderedMessage, WirePayload]:
    """Render a message and dot-stuff it (pure work, safe in a thread)."""
    rendered = message.render()
    return rendered, wire_payload(rendered)


# -- the backend --------------------------------------------------------------------


class Attempt(NamedTuple):
    """What one try at a message did."""

    error: MailError | None
    reply: str = ""
    written: tuple[str, ...] = ()  # recipients its end of data was written for
    fail_fast: bool = False  # the breaker is open: no retry
    #: The server is at its connection limit (421 at the greeting while other
    #: connections are open): wait for one of those, not counted as a try.
    busy: bool = False


@dataclass(slots=True)
class Prepared:
    """A message rendered and addressed, ready for any connection."""

    message: EmailMessage
    sender: str
    recipients: list[str]
    rendered: RenderedMessage
    data: WirePayload  # dot-stuffed, for DATA
    smtputf8: bool  # a header or envelope address needs SMTPUTF8
    # Rendered again without 8bit, if a server needs it, and stuffed.
    seven_bit: tuple[RenderedMessage, WirePayload] | None = None
    message_id: str = ""  # that of the rendering last sent


#: How many times one message waits for a busy server's open connections
#: (421 at the greeting) before the 421 counts as an ordinary failure.
MAX_BUSY_WAITS: Final = 20


@dataclass(slots=True)
class Delivery:
    """One message on its way, across attempts: what is known so far.

    Kept outside the call stack so that a cancelled send can still report,
    from it, what happened to the message (:meth:`interrupted`).
    """

    prepared: Prepared
    pending: list[str]  # the recipients the next attempt is for
    deadline: float | None = None  # loop time; set when sending starts
    outcome: dict[str, RecipientResult] = field(default_factory=dict)
    settled: set[str] = field(default_factory=set)  # data written: never retried
    error: MailError | None = None
    reply: str = ""
    attempts: int = 0
    busy_waits: int = 0  # waits for a busy server's open connections
    transaction: Transaction | None = None  # the exchange under way, if any

    def result(self) -> MessageResult:
        prepared = self.prepared
        ordered = {address: self.outcome[address] for address in prepared.recipients}
        error = self.error
        if all(result.accepted for result in ordered.values()):
            error = None
        elif isinstance(error, RecipientsRefusedError):
            # Across attempts: the recipients refused in the end, not the last try's.
            refused = {a: r for a, r in ordered.items() if r.outcome in REFUSED}
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


async def prepare(message: EmailMessage, dkim: DKIMSigner | None) -> Prepared:
    """Render and address *message* once, for any connection (BadHeaderError
    and such: nothing on the wire)."""
    sender, recipients = message.envelope()  # raises for an invalid address
    if dkim is not None:  # rendered 7-bit where it can be, and signed
        rendered = await dkim.arender(message)
        payload = wire_payload(rendered)
    elif render_is_heavy(message):
        # Big content: render (pure work) off the event loop, so that no
        # send stalls the loop (benchmarks/worst_case.py has the figures).
        rendered, payload = await anyio.to_thread.run_sync(_render_for_wire, message)
    else:
        rendered, payload = _render_for_wire(message)
    smtputf8 = (
        rendered.smtputf8
        or not sender.isascii()
        or not all(address.isascii() for address in recipients)
    )
    return Prepared(
        message,
        sender,
        recipients,
        rendered,
        payload,
        smtputf8,
        message_id=rendered.message_id,
    )


def payload_for(
    prepared: Prepared, connection: SMTPConnection, dkim: DKIMSigner | None
) -> tuple[WirePayload, bool]:
    """The payload for this connection: 8bit only where the server takes it;
    dot-stuffed for DATA, or the message as it is where the server offers
    CHUNKING (BDAT frames it by size).

    Raises a MailError, before anything is written, when the connection
    cannot carry the message (SMTPUTF8 or 8BITMIME missing, too large).

    BINARYMIME (RFC 3030) has no use here: asyncmail never has content DATA
    cannot carry. An EmailMessage encodes every part to lines of at most 998
    octets (base64 for binary data); a RawMessage refuses a NUL or an
    overlong line and normalises line endings when it is rendered, before
    any connection is chosen.
    """
    rendered = prepared.rendered
    if prepared.smtputf8 and not connection.smtputf8:
        raise SMTPNotSupportedError(
            "The message needs SMTPUTF8 (a non-ASCII local part) but the "
            "server does not support it"
        )
    if not rendered.eight_bit or connection.eight_bit_mime:
        data, eight_bit = prepared.data, rendered.eight_bit
        chosen = rendered
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
            if dkim is not None:  # rare: signed content rendered 8-bit
                seven_bit = dkim.sign(seven_bit)
            prepared.seven_bit = (seven_bit, wire_payload(seven_bit))
        # A new rendering has its own Message-ID (unless one was given).
        chosen, data = prepared.seven_bit
        eight_bit = False
    prepared.message_id = chosen.message_id
    if connection.chunking:
        data = chunked_payload(chosen)
    limit = connection.size_limit
    if limit is not None:
        size = chunked_size(data) if connection.chunking else payload_size(data)
        if size > limit:
            raise MessageRefusedError(
                f"The message ({size} octets) exceeds the server's "
                f"size limit ({limit} octets)"
            )
    return data, eight_bit
