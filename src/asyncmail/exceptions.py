"""The asyncmail error tree.

Every error the library raises on purpose derives from :class:`MailError`, and
is mixed with the builtin it resembles, so code written against the builtins
(``except ValueError``, ``except ConnectionError``, ``except TimeoutError``)
keeps working::

    MailError
    ├── BadHeaderError (ValueError)      header injection, malformed header
    │   └── InvalidAddressError          an address that does not parse strictly
    ├── InvalidMessageError (ValueError) content that cannot be serialised
    ├── ConfigurationError (ValueError)  unknown setting, bad option or backend
    ├── SMTPError                        talking to an SMTP server went wrong
    │   ├── SMTPConnectError (ConnectionError)  refused, lost, greeting refused
    │   ├── SMTPTimeoutError (TimeoutError)     an operation or the deadline
    │   ├── TLSError                   handshake, certificate, no STARTTLS
    │   ├── SMTPAuthenticationError    the server rejected the credentials
    │   ├── InsecureAuthError          credentials would travel in clear text
    │   ├── SMTPNotSupportedError      a needed extension (SMTPUTF8...) absent
    │   └── SMTPResponseError          an unexpected reply (code, text kept)
    └── SendError                        a message was not (fully) delivered
        ├── RecipientsRefusedError       some or all recipients refused
        ├── MessageRefusedError          the sender or the data refused
        └── DeliveryUnknownError         lost after the end of data

A send call that fails raises the error of the first message (in the order
given) that was not fully delivered, after attempting every message; the
error's ``results`` holds the outcome of the call's messages and ``sent`` the
Django-style count of messages accepted.

Foreign errors (aiosmtplib's, :mod:`ssl`'s, :class:`OSError`) are mapped to this
tree where they cross into asyncmail (``raise ... from exc``); they never leak
raw. All exceptions pickle with their attributes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .results import MessageResult

__all__ = [
    "BadHeaderError",
    "ConfigurationError",
    "DeliveryUnknownError",
    "InsecureAuthError",
    "InvalidAddressError",
    "InvalidMessageError",
    "MailError",
    "MessageRefusedError",
    "RecipientsRefusedError",
    "SMTPAuthenticationError",
    "SMTPConnectError",
    "SMTPError",
    "SMTPNotSupportedError",
    "SMTPResponseError",
    "SMTPTimeoutError",
    "SendError",
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


class _ReplyError(MailError):
    """An error that a server's reply may have decided.

    ``code`` and ``text`` are that reply, when there was one;
    ``enhanced_status`` is its RFC 3463 enhanced status code (``"5.1.1"``)
    when the server sent one.
    """

    def __init__(
        self,
        message: str,
        *,
        code: int | None = None,
        text: str | None = None,
        enhanced_status: str | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.text = text
        self.enhanced_status = enhanced_status


class SMTPError(_ReplyError):
    """Talking to the SMTP server failed (``code``, ``text`` and
    ``enhanced_status`` are the reply that caused it, if any)."""


class SMTPConnectError(SMTPError, ConnectionError):
    """The connection could not be made, was lost, or the greeting refused us."""


class SMTPTimeoutError(SMTPError, TimeoutError):
    """An SMTP operation, or the overall deadline of a send, timed out."""


class TLSError(SMTPError):
    """TLS could not be established: handshake or certificate failure, wrong
    host name, unknown CA, or STARTTLS requested but not offered."""


class SMTPAuthenticationError(SMTPError):
    """The server rejected the credentials, or offered no usable AUTH method."""


class InsecureAuthError(SMTPError):
    """Credentials were not sent because the connection is not encrypted.

    Use ``use_tls`` or ``use_ssl``; for a trusted network only, the SMTP
    backend's ``dangerously_allow_plaintext_auth=True`` lifts the refusal.
    """


class SMTPNotSupportedError(SMTPError):
    """The server lacks an extension the message needs (e.g. SMTPUTF8)."""


class SMTPResponseError(SMTPError):
    """The server answered a command with an unexpected reply."""


class SendError(_ReplyError):
    """A message was not fully delivered; the base of the per-message errors
    (``code``, ``text`` and ``enhanced_status`` are the reply that decided
    it, if any)."""


class RecipientsRefusedError(SendError):
    """The server refused some or all recipients.

    ``refused`` maps each refused address to its
    :class:`~asyncmail.results.RecipientResult`.
    """

    def __init__(self, message: str, *, refused: Mapping[str, Any]) -> None:
        super().__init__(message)
        self.refused = dict(refused)


class MessageRefusedError(SendError):
    """The server refused the sender (MAIL FROM) or the message (after DATA)."""


class DeliveryUnknownError(SendError):
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
