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
    └── SMTPError (smtplib.SMTPException)  anything an SMTP server (or the way
        │                                  to it) refused or failed; carries
        │                                  the reply: code, text, enhanced_status
        ├── SMTPConnectError (ConnectionError, smtplib.SMTPConnectError)
        │   │                          refused, lost, greeting refused
        │   └── SMTPServerDisconnectedError (smtplib.SMTPServerDisconnected)
        │                              the connection was lost or closed
        ├── SMTPTimeoutError (TimeoutError)     named by phase:
        │   ├── SMTPConnectTimeoutError         setting up the connection
        │   ├── SMTPReadTimeoutError            waiting for a reply
        │   ├── SMTPPoolTimeoutError            waiting for a pooled connection
        │   └── SMTPDeadlineExceededError       the message's whole deadline
        ├── TLSError (ssl.SSLError)    handshake, certificate, no STARTTLS
        ├── SMTPAuthenticationError (smtplib.SMTPAuthenticationError)
        ├── InsecureAuthError          credentials would travel in clear text
        ├── SMTPNotSupportedError (smtplib.SMTPNotSupportedError)
        ├── SMTPResponseError (smtplib.SMTPResponseException)
        └── SendError                  a message was not (fully) delivered
            ├── RecipientsRefusedError (smtplib.SMTPRecipientsRefused)
            ├── MessageRefusedError (smtplib.SMTPResponseException)
            │   ├── SenderRefusedError (smtplib.SMTPSenderRefused)  at MAIL FROM
            │   └── DataRefusedError (smtplib.SMTPDataError)        at or after DATA
            └── DeliveryUnknownError (smtplib.SMTPServerDisconnected)
                                             lost after the end of data

So ``except SMTPError`` catches every refusal (an RCPT 550 as much as a
refused connection) and ``except TimeoutError`` every timeout.

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

Whether trying again may succeed is one rule, :func:`is_transient`, built on
:func:`~asyncmail.results.reply_outcome` (the rule for a reply code, which
the SMTP backend also applies to every reply it reads).

Foreign errors (aiosmtplib's, :mod:`ssl`'s, :class:`OSError`) are mapped to this
tree where they cross into asyncmail (``raise ... from exc``); they never leak
raw. All exceptions pickle with their attributes.
"""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .results import Outcome, reply_outcome

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
    "SMTPConnectTimeoutError",
    "SMTPDeadlineExceededError",
    "SMTPError",
    "SMTPNotSupportedError",
    "SMTPPoolTimeoutError",
    "SMTPReadTimeoutError",
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
        # Exceptions pickle their ``args`` only; keep the attributes too. The
        # attributes go as the state (set after the object exists), so that
        # the cycle through ``results`` (each result's ``error`` is this
        # error) pickles as one object, not as a copy missing its state.
        return (_rebuild, (type(self), self.args), self.__dict__)


def _rebuild(
    cls: type[MailError],
    args: tuple[Any, ...],
    state: dict[str, Any] | None = None,
) -> MailError:
    exc = cls.__new__(cls)
    exc.args = args
    if state:  # pickles made before the state moved out of the arguments
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


class SMTPError(MailError, smtplib.SMTPException):
    """Talking to an SMTP server failed, or it refused something: the base of
    every SMTP failure, refusals of a recipient, sender or message included.

    ``code`` and ``text`` are the server's reply that decided the error, when
    there was one (None otherwise); ``enhanced_status`` is its RFC 3463
    enhanced status code (``"5.1.1"``) when the server sent one.
    ``smtp_code`` and ``smtp_error`` give the same reply the way
    :mod:`smtplib`'s exceptions do.
    """

    #: The reply's code as :mod:`smtplib` gives it; -1 when no reply decided
    #: the error.
    smtp_code: int
    #: The reply's text as bytes, as in :mod:`smtplib` (else the message);
    #: always bytes, though smtplib's base types it ``bytes | str``.
    smtp_error: bytes | str

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
        self.smtp_code = -1 if code is None else code
        self.smtp_error = (message if text is None else text).encode("utf-8", "replace")


class SMTPConnectError(SMTPError, smtplib.SMTPConnectError, ConnectionError):
    """The connection could not be made, was lost, or the greeting refused us."""


class SMTPServerDisconnectedError(SMTPConnectError, smtplib.SMTPServerDisconnected):
    """The server closed the connection, or it was lost, before the end of the
    data was sent (so nothing was delivered and retrying is safe)."""


class SMTPTimeoutError(SMTPError, TimeoutError):
    """Something took too long; the subclass names the phase. asyncmail
    raises only the subclasses; catch this class for any of them."""


class SMTPConnectTimeoutError(SMTPTimeoutError):
    """Setting up a connection took longer than ``timeout`` at one step: the
    TCP connect, the TLS handshake, the greeting, EHLO, STARTTLS or AUTH."""


class SMTPReadTimeoutError(SMTPTimeoutError):
    """The server took longer than ``timeout`` to answer a command of a
    transaction (MAIL, RCPT, DATA, the end of data, RSET, NOOP) or to take
    the data being written."""


class SMTPPoolTimeoutError(SMTPTimeoutError):
    """The message's deadline passed while it waited for a connection from
    the pool (all ``max_connections`` busy, or the server at its limit); the
    server was not involved."""


class SMTPDeadlineExceededError(SMTPTimeoutError):
    """The message's overall ``deadline`` passed: before it was sent, while
    connecting, or while waiting for the server."""


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


class SendError(SMTPError):
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


class SenderRefusedError(MessageRefusedError, smtplib.SMTPSenderRefused):
    """The server refused the sender at MAIL FROM; ``sender`` is its address."""

    # Declared here, as smtplib.SMTPSenderRefused does (bytes only), so the
    # two bases' declarations do not meet (ours is always bytes).
    smtp_error: bytes

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
    """Whether trying again later may succeed without sending anything twice:
    the one transience rule, used by every backend, the retries, the breaker
    and the queue.

    * An error a reply decided follows its code
      (:func:`~asyncmail.results.reply_outcome`): 4xx is transient, 5xx is
      not; a :class:`RecipientsRefusedError` is transient when every refusal
      was.
    * asyncmail's own connection failures and timeouts without a reply are
      transient: asyncmail raises them only before the end of the data was
      sent (after it, :class:`DeliveryUnknownError`, which is not).
    * TLS, authentication, clear-text and missing-extension refusals, bad
      messages and settings are not: retrying without a change will not fix
      them.
    * A foreign error (a :class:`TimeoutError` or :class:`ConnectionError`
      that did not come through asyncmail) is not transient: it does not say
      whether the data had already reached the server, so retrying it could
      deliver a message twice.
    """
    if not isinstance(error, SMTPError):
        return False  # ours but not the server's (bad input), or foreign
    if isinstance(
        error,
        (
            DeliveryUnknownError,
            TLSError,
            SMTPAuthenticationError,
            InsecureAuthError,
            SMTPNotSupportedError,
        ),
    ):
        return False
    if isinstance(error, RecipientsRefusedError) and error.code is None:
        outcomes = {result.outcome for result in error.refused.values()}
        return outcomes == {Outcome.TEMPORARY}
    if error.code is not None:
        return reply_outcome(error.code) is Outcome.TEMPORARY
    return isinstance(error, (SMTPConnectError, SMTPTimeoutError))
