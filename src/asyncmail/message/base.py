"""What every sendable message has: the envelope, sending, the stdlib view.

:class:`BaseMessage` is the part of a message the backends, the queue, the
results and the test outboxes use: ``from_email`` and the recipient lists
(the SMTP envelope), ``connection``, ``result``, :meth:`~BaseMessage.render`,
:meth:`~BaseMessage.as_bytes`, :meth:`~BaseMessage.message`, ``send()`` and
``asend()``. :class:`~asyncmail.message.EmailMessage` (a model rendered by
asyncmail) and :class:`~asyncmail.message.RawMessage` (bytes sent as given)
are its two kinds; neither is the other, so a raw message has no body,
subject or attachments that could be set and then ignored.
"""

from __future__ import annotations

import email.message
import email.policy
from collections.abc import Iterable, Sequence
from email.headerregistry import Address
from email.parser import BytesParser
from typing import TYPE_CHECKING, Any

from ..address import AddressLike, envelope_address
from ..lazytext import is_lazy_text, resolve_text
from ..settings import settings

if TYPE_CHECKING:
    from ..connection import ConnectionLike
    from ..results import MessageResult
    from .mime import RenderedMessage

__all__ = ["BaseMessage"]


class BaseMessage:
    """The sendable part of a message: envelope, rendering, sending.

    Subclasses implement :meth:`render`. ``to``, ``cc`` and ``bcc`` are
    lists; a bare string is a ``TypeError`` (it would be iterated character
    by character).
    """

    #: On the copies in ``asyncmail.outbox``: the alias of the mailer that
    #: sent it (None without MAILERS), as Django 6.1's locmem backend sets it.
    sent_using: str | None = None
    #: What recipients see as the Subject (queue labels, outbox summaries).
    subject: Any = ""
    #: Whether :meth:`message` with a UTF-8 policy (``email.policy.SMTPUTF8``)
    #: rewrites RFC 2047 encoded header text as plain text (Django 6 does so
    #: for the messages it builds; a raw message's headers are shown as given).
    _decode_for_utf8 = True

    def __init__(
        self,
        from_email: AddressLike | None = None,
        to: Iterable[AddressLike] | None = None,
        *,
        cc: Iterable[AddressLike] | None = None,
        bcc: Iterable[AddressLike] | None = None,
        connection: ConnectionLike | None = None,
    ) -> None:
        self.to: list[AddressLike] = _address_list_argument("to", to)
        self.cc: list[AddressLike] = _address_list_argument("cc", cc)
        self.bcc: list[AddressLike] = _address_list_argument("bcc", bcc)
        self.from_email: AddressLike = from_email or settings.DEFAULT_FROM_EMAIL
        self.connection = connection
        #: The outcome of the last send of this message (None before any).
        self.result: MessageResult | None = None

    def recipients(self) -> list[AddressLike]:
        """Every envelope recipient: to + cc + bcc, without empty entries."""
        to: Sequence[AddressLike] = self.to
        cc: Sequence[AddressLike] = self.cc
        bcc: Sequence[AddressLike] = self.bcc
        if type(to) is not list or type(cc) is not list or type(bcc) is not list:
            # Set after construction: checked as the constructor checks.
            to = address_list("to", to)
            cc = address_list("cc", cc)
            bcc = address_list("bcc", bcc)
        return [address for address in (*to, *cc, *bcc) if address]

    def envelope(self) -> tuple[str, list[str]]:
        """The SMTP envelope: the sender and each recipient once, as the
        addr-specs ``MAIL FROM`` and ``RCPT TO`` carry, strictly checked
        (:class:`~asyncmail.exceptions.InvalidAddressError` otherwise)."""
        sender = envelope_address(self.from_email)
        recipients: list[str] = []
        for address in self.recipients():
            key = envelope_address(address)
            if key not in recipients:
                recipients.append(key)
        return sender, recipients

    def render(self, *, allow_8bit: bool = True) -> RenderedMessage:
        """Serialise the message for sending (see
        :class:`~asyncmail.message.RenderedMessage`)."""
        raise NotImplementedError(f"{type(self).__name__} must implement render()")

    def _message_source(self, allow_8bit: bool) -> bytes:
        """The CRLF bytes :meth:`message` parses."""
        return self.render(allow_8bit=allow_8bit).data

    def message(
        self, *, policy: email.policy.Policy = email.policy.default
    ) -> email.message.EmailMessage:
        """The message as a stdlib :class:`email.message.EmailMessage`.

        It is parsed from asyncmail's serialisation, so it is exactly what
        :meth:`as_bytes` gives (unless a subclass overrides this method); as
        in Django, its line endings are ``\\n`` (the serialisation holds only
        CRLF, so the conversion is exact).

        *policy* is honoured as Django 6 honours it: the message carries it
        (its ``linesep``, ``max_line_length``... apply to ``as_bytes()``);
        with ``cte_type="7bit"`` no part is ``8bit`` (text is
        quoted-printable or base64 instead); with ``utf8=True``
        (``email.policy.SMTPUTF8``) header text is plain UTF-8 instead of
        RFC 2047 encoded words. Any policy works, ``compat32`` included.
        """
        allow_8bit = getattr(policy, "cte_type", "8bit") != "7bit"
        data = self._message_source(allow_8bit).replace(b"\r\n", b"\n")
        parsed = BytesParser(email.message.EmailMessage, policy=policy).parsebytes(data)
        assert isinstance(parsed, email.message.EmailMessage)
        if self._decode_for_utf8 and getattr(policy, "utf8", False):
            _decode_encoded_headers(parsed)
        return parsed

    def as_bytes(self) -> bytes:
        """The message as sent: RFC 5322 bytes with CRLF line endings."""
        return self.render().data

    def send(self, fail_silently: bool = False, *, using: str | None = None) -> int:
        """Send the message (blocking); return the number sent (0 or 1)."""
        from ..sync import run_blocking

        return run_blocking(self.asend, fail_silently, using=using)

    async def asend(
        self, fail_silently: bool = False, *, using: str | None = None
    ) -> int:
        """Send the message; return the number sent (0 or 1).

        Uses ``self.connection`` if set, else the mailer named by *using*, else
        the default backend. The per-recipient outcome is in :attr:`result`.
        """
        from ..backends.sending import skipped
        from ..results import record

        nothing_to_send = skipped(self)
        if nothing_to_send is not None:
            # Nobody to send to: don't even open a connection (the result
            # still says so).
            record(nothing_to_send)
            return 0
        # The lazy import Django's message.send() API implies: a message
        # finds its backend when it is sent.
        from ..api import connection_for_call, send_options

        backend = connection_for_call(self.connection, using, None, None, fail_silently)
        return await backend.send_messages(
            [self],
            **send_options(self.connection, fail_silently),
        )

    def freeze_lazy_text(self) -> None:
        """Replace lazy strings (``gettext_lazy`` and the like) in the
        message's addresses by their text, in the active language of the
        calling thread (subclasses freeze their other text too).

        The blocking calls do it before handing the message to the library's
        event loop thread, where the caller's translation is not active.
        """
        self.from_email = _freeze_address(self.from_email)
        for name in ("to", "cc", "bcc", "reply_to"):
            addresses = getattr(self, name, None)
            if addresses is not None and any(
                _holds_lazy_text(item) for item in addresses
            ):
                setattr(self, name, [_freeze_address(item) for item in addresses])

    def __getstate__(self) -> dict[str, Any]:
        # A live connection belongs to the process that opened it.
        state = self.__dict__.copy()
        state["connection"] = None
        return state


def _holds_lazy_text(address: object) -> bool:
    if isinstance(address, tuple):
        return any(is_lazy_text(item) for item in address)
    return is_lazy_text(address)


def _freeze_address(address: Any) -> Any:
    if isinstance(address, tuple) and len(address) == 2:
        return (resolve_text(address[0]), resolve_text(address[1]))
    return resolve_text(address)


def _decode_encoded_headers(msg: email.message.EmailMessage) -> None:
    """Rewrite *msg*'s RFC 2047 / RFC 2231 encoded header fields as plain
    text, for a policy that allows UTF-8 headers (SMTPUTF8): what Django 6
    gives for such a policy. Domains stay IDNA-encoded (ASCII is valid under
    SMTPUTF8 too)."""
    for part in msg.walk():
        raw = list(part.raw_items())
        counts: dict[str, int] = {}
        for name, _ in raw:
            counts[name.lower()] = counts.get(name.lower(), 0) + 1
        for name, value in raw:
            if ("=?" in value or "*=" in value) and counts[name.lower()] == 1:
                part.replace_header(name, str(part[name]))


def address_list(name: str, value: Any) -> Sequence[AddressLike]:
    """*value* of the address list attribute *name* (``to``, ``cc``,
    ``bcc``, ``reply_to``), refused as the constructor refuses it when it
    is a single address (a string or an Address set after construction)
    rather than a list or tuple of them."""
    if value is None:
        return ()
    if isinstance(value, str) or is_lazy_text(value):
        raise TypeError(
            f'"{name}" must be a list or tuple of addresses, not a single '
            f"address ({value!r})"
        )
    if isinstance(value, Address):
        raise TypeError(
            f'"{name}" must be a list or tuple of addresses, not an Address'
        )
    return value  # type: ignore[no-any-return]


def _address_list_argument(
    name: str, value: Iterable[AddressLike] | None
) -> list[AddressLike]:
    if not value:
        return []
    if isinstance(value, str):
        raise TypeError(f'"{name}" argument must be a list or tuple')
    if isinstance(value, Address):
        raise TypeError(f'"{name}" argument must be a list or tuple of addresses')
    return list(value)
