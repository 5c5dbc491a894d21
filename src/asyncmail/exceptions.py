"""The asyncmail error tree.

Every error the library raises on purpose derives from :class:`MailError`, and
is mixed with the builtin it resembles, so code written against the builtins
(``except ValueError``, ``except ConnectionError``, ``except TimeoutError``)
keeps working. Every SMTP failure is also a :class:`smtplib.SMTPException`
(an :class:`OSError`), and the closest :mod:`smtplib` class where there is
one, so Django code that catches ``smtplib.SMTPException`` (Django documents
that ``send_mail`` raises it) or ``smtplib.SMTPRecipientsRefused`` keeps
working::

    MailError
    ├── BadHeaderError (ValueError)      header injection, malformed header
    │   └── InvalidAddressError          an address that does not parse strictly
    ├── InvalidMessageError (ValueError) content that cannot be serialised
    ├── ConfigurationError (ValueError)  unknown setting, bad option or backend
    │   └── InvalidMailer                a MAILERS entry is wrong
    │       └── MailerDoesNotExist (KeyError)   no mailer of that name
    ├── SMTPError (smtplib.SMTPException)  talking to an SMTP server went wrong
    │   ├── SMTPConnectError (ConnectionError, smtplib.SMTPConnectError)
    │   │   │                          refused, lost, greeting refused
    │   │   └── SMTPServerDisconnectedError (smtplib.SMTPServerDisconnected)
    │   │                              the connection was lost or closed
    │   ├── SMTPTimeoutError (TimeoutError)     an operation or the deadline
    │   ├── TLSError (ssl.SSLError)    handshake, certificate, no STARTTLS
    │   ├── SMTPAuthenticationError (smtplib.SMTPAuthenticationError)
    │   ├── InsecureAuthError          credentials would travel in clear text
    │   ├── SMTPNotSupportedError (smtplib.SMTPNotSupportedError)
    │   └── SMTPResponseError (smtplib.SMTPResponseException)
    └── SendError (smtplib.SMTPException)  a message was not (fully) delivered
        ├── RecipientsRefusedError (smtplib.SMTPRecipientsRefused)
        ├── MessageRefusedError (smtplib.SMTPResponseException)
        │   ├── SenderRefusedError (smtplib.SMTPSenderRefused)  at MAIL FROM
        │   └── DataRefusedError (smtplib.SMTPDataError)        at or after DATA
        └── DeliveryUnknownError (smtplib.SMTPServerDisconnected)
                                         lost after the end of data

The :mod:`smtplib` attributes are there too: ``smtp_code`` and
``smtp_error`` (the reply's code, or -1 when no reply decided the error, and
its text as bytes), ``recipients`` on :class:`RecipientsRefusedError`
(address -> ``(code, text bytes)``) and ``sender`` on
:class:`SenderRefusedError`. ``args`` and ``str()`` stay asyncmail's: one
readable message.

A send call that fails raises the error of the first message (in the order
given) that was not fully delivered, after attempting every message; the
error's ``results`` holds the outcome of the call's messages and ``sent`` the
Django-style count of messages accepted.

Foreign errors (aiosmtplib's, :mod:`ssl`'s, :class:`OSError`) are mapped to this
tree where they cross into asyncmail (``raise ... from exc``); they never leak
raw. All exceptions pickle with their attributes.
"""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .results import MessageResult

__all__ = [
    "BadHeaderError",
    "ConfigurationError",
    "DataRefusedError",
    "DeliveryUnknownError",
    "InsecureAuthError",
    "InvalidAddressError",
    "InvalidMailer",
    "InvalidMessageError",
    "MailError",
    "MailerDoesNotExist",
    "MessageRefusedError",
    "RecipientsRefusedError",
    "SMTPAuthenticationError",
    "SMTPConnectError",
    "SMTPError",
    "SMTPNotSupportedError",
    "SMTPResponseError",
    "SMTPServerDisconnectedError",
    "SMTPTimeoutError",
    "SendError",
    "SenderRefusedError",
    "TLSError",
    "is_transient",
]


class MailError(Exception):
    """Root of every error asyncmail raises on purpose.

    When the error comes out of a send call, ``results`` holds the outcome of
    the call's messages and ``sent`` the number accepted; otherwise they are
    empty and 0.
    """

    results: Sequence[MessageResult] = ()
    sent: int = 0

    def __reduce__(self) -> tuple[Any, ...]:
        # Exceptions pickle their ``args`` only; keep the attributes too.
        return (_rebuild, (type(self), self.args, self.__dict__))


def _rebuild(
    cls: type[MailError], args: tuple[Any, ...], state: dict[str, Any]
) -> MailError:
    exc = cls.__new__(cls)
    exc.args = args
    exc.__dict__.update(state)
    return exc


class BadHeaderError(MailError, ValueError):
    """A header name or value is unsafe or malformed (CR/LF injection and such).

    ``header`` names the offending header when it is known.
    """

    def __init__(self, message: str, *, header: str | None = None) -> None:
        super().__init__(message)
        self.header = header


class InvalidAddressError(BadHeaderError):
    """An e-mail address did not parse as exactly one well-formed mailbox."""


class InvalidMessageError(MailError, ValueError):
    """A message's content cannot be serialised: text the charset cannot
    encode, an invalid MIME type, a line over 998 octets or a NUL in content
    asyncmail must send as is, an attachment that changed while sent."""


class ConfigurationError(MailError, ValueError):
    """A setting, backend option or backend path is unknown or has a bad value."""


class InvalidMailer(ConfigurationError):  # noqa: N818 - Django's name
    """A ``MAILERS`` entry is wrong (Django 6.1's ``InvalidMailer``).

    ``alias`` names the mailer when it is known; the message then starts
    with ``MAILERS['alias']:``.
    """

    def __init__(self, message: str, *, alias: str | None = None) -> None:
        if alias is not None:
            message = f"MAILERS[{alias!r}]: {message}"
        super().__init__(message)
        self.alias = alias


class MailerDoesNotExist(InvalidMailer, KeyError):  # noqa: N818 - Django's name
    """No mailer of the requested name is configured (``using=`` or
    ``get_connection(using=...)``); also a :class:`KeyError`, as in Django."""

    def __init__(self, message: str, *, alias: str | None = None) -> None:
        # The message names the alias itself, in Django's words.
        super().__init__(message)
        self.alias = alias

    def __str__(self) -> str:
        # KeyError would show the message quoted, as a key.
        return str(self.args[0]) if self.args else ""


class _ReplyError(MailError):
    """An error that a server's reply may have decided.

    ``code`` and ``text`` are that reply, when there was one;
    ``enhanced_status`` is its RFC 3463 enhanced status code (``"5.1.1"``)
    when the server sent one. ``smtp_code`` and ``smtp_error`` give the same
    reply the way :mod:`smtplib`'s exceptions do.
    """

    def __init__(
        self,
        message: str,
        *,
        code: int | None = None,
        text: str | None = None,
        enhanced_status: str | None = None,
    ) -> None:
        # Not super().__init__: the smtplib bases' constructors take other
        # arguments (code and message, recipients...); their attributes are
        # set here from ours.
        Exception.__init__(self, message)
        self.code = code
        self.text = text
        self.enhanced_status = enhanced_status
        #: The reply's code as :mod:`smtplib` gives it; -1 when no reply
        #: decided the error.
        self.smtp_code: int = -1 if code is None else code
        #: The reply's text as bytes, as in :mod:`smtplib` (else the message).
        self.smtp_error: bytes | str = (message if text is None else text).encode(
            "utf-8", "replace"
        )


class SMTPError(_ReplyError, smtplib.SMTPException):
    """Talking to the SMTP server failed (``code``, ``text`` and
    ``enhanced_status`` are the reply that caused it, if any)."""


class SMTPConnectError(SMTPError, smtplib.SMTPConnectError, ConnectionError):
    """The connection could not be made, was lost, or the greeting refused us."""


class SMTPServerDisconnectedError(SMTPConnectError, smtplib.SMTPServerDisconnected):
    """The server closed the connection, or it was lost, before the end of the
    data was sent (so nothing was delivered and retrying is safe)."""


class SMTPTimeoutError(SMTPError, TimeoutError):
    """An SMTP operation, or the overall deadline of a send, timed out."""


class TLSError(SMTPError, ssl.SSLError):
    """TLS could not be established: handshake or certificate failure, wrong
    host name, unknown CA, or STARTTLS requested but not offered.

    Also an :class:`ssl.SSLError`, as Django's SMTP backend raises for a
    failed handshake, so code written for Django that catches it keeps
    working; the ssl module's own error is the ``__cause__``.
    """

    # ssl.SSLError's str() would show the args tuple: keep the message.
    __str__ = SMTPError.__str__
    #: ssl.SSLError's attributes (empty here: the ssl module's values are
    #: on the cause).
    library: str = ""
    reason: str = ""


class SMTPAuthenticationError(SMTPError, smtplib.SMTPAuthenticationError):
    """The server rejected the credentials, or offered no usable AUTH method."""


class InsecureAuthError(SMTPError):
    """Credentials were not sent because the connection is not encrypted.

    Use ``use_tls`` or ``use_ssl``; for a trusted network only, the SMTP
    backend's ``dangerously_allow_plaintext_auth=True`` lifts the refusal.
    """


class SMTPNotSupportedError(SMTPError, smtplib.SMTPNotSupportedError):
    """The server lacks an extension the message needs (e.g. SMTPUTF8)."""


class SMTPResponseError(SMTPError, smtplib.SMTPResponseException):
    """The server answered a command with an unexpected reply."""


class SendError(_ReplyError, smtplib.SMTPException):
    """A message was not fully delivered; the base of the per-message errors
    (``code``, ``text`` and ``enhanced_status`` are the reply that decided
    it, if any)."""


class RecipientsRefusedError(SendError, smtplib.SMTPRecipientsRefused):
    """The server refused some or all recipients.

    ``refused`` maps each refused address to its
    :class:`~asyncmail.results.RecipientResult`; ``recipients`` gives the
    same as :mod:`smtplib` does, address -> ``(code, text bytes)``.
    """

    def __init__(self, message: str, *, refused: Mapping[str, Any]) -> None:
        super().__init__(message)
        self.refused = dict(refused)
        #: smtplib's view of :attr:`refused`: address -> (code, text bytes).
        self.recipients: dict[str, tuple[int, bytes]] = {
            address: (
                -1 if result.code is None else result.code,
                (result.text or "").encode("utf-8", "replace"),
            )
            for address, result in self.refused.items()
        }


class MessageRefusedError(SendError, smtplib.SMTPResponseException):
    """The server refused the sender (MAIL FROM) or the message (after DATA),
    or the message cannot go to this server at all (over its size limit)."""


# smtplib types this class's smtp_error as bytes only; ours is always bytes.
class SenderRefusedError(MessageRefusedError, smtplib.SMTPSenderRefused):  # type: ignore[misc]
    """The server refused the sender at MAIL FROM; ``sender`` is its address."""

    def __init__(
        self,
        message: str,
        *,
        sender: str = "",
        code: int | None = None,
        text: str | None = None,
        enhanced_status: str | None = None,
    ) -> None:
        super().__init__(message, code=code, text=text, enhanced_status=enhanced_status)
        self.sender = sender


class DataRefusedError(MessageRefusedError, smtplib.SMTPDataError):
    """The server refused the DATA command or, after the data, the message."""


class DeliveryUnknownError(SendError, smtplib.SMTPServerDisconnected):
    """The connection was lost after the end of the data was sent.

    The server may have accepted the message; asyncmail never resends it
    automatically, to avoid duplicates.
    """


def is_transient(error: BaseException) -> bool:
    """Whether trying again later may succeed: the connection was refused,
    lost or timed out, or the server answered 4xx. Not for TLS,
    authentication, clear-text refusals, 5xx replies or bad messages."""
    if isinstance(error, (TLSError, SMTPAuthenticationError, InsecureAuthError)):
        return False
    if isinstance(error, (ConnectionError, TimeoutError)):
        code = getattr(error, "code", None)
        return code is None or 400 <= code < 500
    return False
