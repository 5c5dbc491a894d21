"""Foreign errors mapped at the boundary, and the errors replies decide.

aiosmtplib, ssl and OS errors become asyncmail's own tree
(:mod:`asyncmail.exceptions`) here and nowhere else (as httpcore's
``map_exceptions``), with the cause kept by the caller's ``raise ... from``.
The hints that say what to check for the failures users hit most (a wrong
port, TLS of the wrong kind, a server wanting AUTH) are built here too.
"""

from __future__ import annotations

import errno
import socket
import ssl
from typing import Final

import aiosmtplib

from ..exceptions import (
    DataRefusedError,
    MailError,
    MessageRefusedError,
    RecipientsRefusedError,
    SenderRefusedError,
    SMTPAuthenticationError,
    SMTPConnectError,
    SMTPConnectTimeoutError,
    SMTPDeadlineExceededError,
    SMTPError,
    SMTPResponseError,
    SMTPServerDisconnectedError,
    TLSError,
)
from ..results import RecipientResult
from .parser import Reply

__all__ = [
    "AUTH_HINT",
    "add_hint",
    "caused_by",
    "handshake_error",
    "in_handshake",
    "map_error",
    "plain_answer",
    "recipients_refused",
    "refused_by",
    "wants_auth",
]

AUTH_HINT: Final = (
    "The server requires authentication (AUTH): set EMAIL_HOST_USER and "
    "EMAIL_HOST_PASSWORD (or the username and password options)"
)

# Failures to reach the server at all (not TLS failures) during an implicit
# TLS connect.
_UNREACHABLE_ERRNOS = frozenset(
    {errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EADDRNOTAVAIL}
)


def _ssl_cause(exc: BaseException) -> ssl.SSLError | None:
    """The ssl module's own error behind *exc*, if any (not our TLSError,
    which is an ssl.SSLError too)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError) and not isinstance(seen, MailError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _from_reply(
    kind: type[SMTPError], what: str, exc: aiosmtplib.SMTPResponseException
) -> SMTPError:
    """*kind* for an aiosmtplib error that carries the server's reply: the
    message says *what* happened and quotes the reply, whose code, text and
    enhanced status the error keeps."""
    return kind(
        f"{what}: {exc.code} {exc.message}",
        code=exc.code,
        text=exc.message,
        enhanced_status=Reply(exc.code, exc.message).enhanced_status,
    )


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
        return _from_reply(
            SMTPAuthenticationError, f"{prefix}authentication failed", exc
        )
    if isinstance(exc, aiosmtplib.SMTPTimeoutError) or (
        isinstance(exc, TimeoutError) and exc.errno is not None
    ):  # a step of the set-up (or the OS's TCP connect) exceeded its limit
        return SMTPConnectTimeoutError(f"{prefix}timed out ({exc or 'no answer'})")
    if isinstance(exc, TimeoutError):  # asyncio's, at the deadline
        return SMTPDeadlineExceededError(f"{prefix}timed out (deadline reached)")
    if isinstance(exc, aiosmtplib.SMTPConnectResponseError):
        return _from_reply(
            SMTPConnectError, f"{prefix}the server refused the connection", exc
        )
    if isinstance(exc, aiosmtplib.SMTPServerDisconnected):
        return SMTPServerDisconnectedError(f"{prefix}{exc}")
    if isinstance(exc, aiosmtplib.SMTPConnectError):
        return SMTPConnectError(f"{prefix}{exc}")
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return _from_reply(SMTPResponseError, f"{prefix}unexpected reply", exc)
    if isinstance(exc, OSError):
        return SMTPConnectError(f"{prefix}{exc.strerror or exc}")
    if isinstance(exc, aiosmtplib.SMTPException):
        return SMTPError(f"{prefix}{exc}")
    return SMTPError(f"{prefix}{type(exc).__name__}: {exc}")


def in_handshake(exc: BaseException, client: aiosmtplib.SMTP) -> bool:
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


def handshake_error(exc: BaseException, where: str) -> TLSError:
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


def add_hint(error: MailError, hint: str) -> MailError:
    """Append *hint* to *error*'s message; its type and attributes stay."""
    if error.args and isinstance(error.args[0], str):
        error.args = (f"{error.args[0].rstrip('.')}. {hint}.", *error.args[1:])
    return error


def caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    """Whether *exc* or anything in its cause chain is a *kind*."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, kind):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def plain_answer(exc: BaseException) -> bool:
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


def wants_auth(reply: Reply) -> bool:
    """Whether a refusal of MAIL says authentication is required (530, or an
    RFC 3463 security status naming authentication)."""
    if reply.code == 530:
        return True
    status = reply.enhanced_status or ""
    return status.startswith("5.7.") and "auth" in reply.text.lower()


def refused_by(
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
