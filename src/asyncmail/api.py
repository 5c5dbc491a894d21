"""The sending API, async-first: ``asend_mail`` and friends, ``get_connection``.

The blocking twins (``send_mail`` ...) in :mod:`asyncmail.sync` run these same
coroutines on the library's event loop; there is no second copy of the logic.

Backends by name (``get_connection``, MAILERS) are :mod:`asyncmail.mailers`;
``get_connection`` is importable from here too.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from .address import AddressLike
from .backends.sending import skipped
from .connection import Connection, ConnectionLike, async_connection
from .mailers import backend_class, get_connection, takes_credentials
from .message import EmailMessage, EmailMultiAlternatives
from .results import record
from .settings import settings

__all__ = [
    "amail_admins",
    "amail_managers",
    "asend_mail",
    "asend_mass_mail",
    "get_connection",
]


def check_using(
    using: str | None,
    connection: object | None,
    fail_silently: bool,
    auth_user: str | None = None,
    auth_password: str | None = None,
) -> None:
    """Raise Django 6.1's TypeErrors for arguments that *using* excludes: a
    mailer is configured entirely by its MAILERS entry."""
    if using is None:
        return
    if connection is not None:
        raise TypeError("'connection' is not compatible with 'using'.")
    if fail_silently:
        raise TypeError(
            "'fail_silently' is not compatible with 'using'. Set "
            "'fail_silently' in the mailer's OPTIONS instead."
        )
    if auth_user is not None or auth_password is not None:
        raise TypeError(
            "'auth_user' and 'auth_password' are not compatible with 'using'. "
            "Set 'username' and 'password' OPTIONS in MAILERS instead."
        )


def connection_for_call(
    connection: ConnectionLike | None,
    using: str | None,
    auth_user: str | None,
    auth_password: str | None,
    fail_silently: bool = False,
) -> Connection:
    """The backend a convenience function sends through.

    A backend created here gets *fail_silently* (and the credentials, when
    it takes them) in its constructor, as Django passes them; with a given
    *connection*, the caller passes *fail_silently* to ``send_messages``
    (see :func:`send_options`).
    """
    check_using(using, connection, fail_silently, auth_user, auth_password)
    if connection is not None:
        if auth_user is not None or auth_password is not None:
            raise TypeError(
                "auth_user and auth_password cannot be used with a connection. "
                "Pass username and password to get_connection() instead."
            )
        # A BlockingBackend view (from ``with backend as conn``) wraps the backend.
        return async_connection(connection)
    options: dict[str, Any] = {}
    # As in Django: backends without a server (locmem, console, ...) have no
    # use for credentials; tests switch to them freely.
    if (auth_user is not None or auth_password is not None) and takes_credentials(
        backend_class(using)
    ):
        if auth_user is not None:
            options["username"] = auth_user
        if auth_password is not None:
            options["password"] = auth_password
    return get_connection(using=using, fail_silently=fail_silently, **options)


def send_options(connection: object | None, fail_silently: bool) -> dict[str, Any]:
    """Keyword arguments for ``send_messages``: ``fail_silently`` only for a
    connection the caller gave (a backend created for the call has it in its
    constructor), so Django-style ``send_messages(messages)`` overrides work."""
    return {"fail_silently": True} if fail_silently and connection is not None else {}


async def asend_mail(
    subject: str,
    message: str,
    from_email: AddressLike | None,
    recipient_list: Sequence[AddressLike],
    *,
    fail_silently: bool = False,
    auth_user: str | None = None,
    auth_password: str | None = None,
    connection: ConnectionLike | None = None,
    html_message: str | None = None,
    using: str | None = None,
) -> int:
    """Send one message to *recipient_list* (all see each other in To).

    Returns the number of messages sent (0 or 1). ``from_email=None`` means
    DEFAULT_FROM_EMAIL. With *html_message* the message is multipart/alternative.
    """
    check_using(using, connection, fail_silently, auth_user, auth_password)
    mail = EmailMultiAlternatives(
        subject, message, from_email, recipient_list, connection=connection
    )
    if html_message:
        mail.attach_alternative(html_message, "text/html")
    nothing_to_send = skipped(mail)
    if nothing_to_send is not None:
        # As Django's send_mail (through EmailMessage.send): nothing to send,
        # no connection opened, 0 whatever the backend. Skipped, as recorded.
        record(nothing_to_send)
        return 0
    backend = connection_for_call(
        connection, using, auth_user, auth_password, fail_silently
    )
    return await backend.send_messages(
        [mail], **send_options(connection, fail_silently)
    )


async def asend_mass_mail(
    datatuple: Iterable[tuple[str, str, AddressLike | None, Sequence[AddressLike]]],
    *,
    fail_silently: bool = False,
    auth_user: str | None = None,
    auth_password: str | None = None,
    connection: ConnectionLike | None = None,
    using: str | None = None,
) -> int:
    """Send one message per ``(subject, message, from_email, recipient_list)``
    tuple, all over ONE connection; return the number sent.

    As in Django, each message's ``connection`` is that connection (the one
    given, or the one created for the call).
    """
    backend = connection_for_call(
        connection, using, auth_user, auth_password, fail_silently
    )
    messages = [
        EmailMessage(
            subject,
            body,
            sender,
            recipients,
            connection=connection if connection is not None else backend,
        )
        for subject, body, sender, recipients in datatuple
    ]
    return await backend.send_messages(
        messages, **send_options(connection, fail_silently)
    )


async def _asend_server_message(
    setting_name: str,
    subject: str,
    message: str,
    *,
    fail_silently: bool,
    connection: ConnectionLike | None,
    html_message: str | None,
    using: str | None,
) -> None:
    check_using(using, connection, fail_silently)
    recipients: Sequence[str] = getattr(settings, setting_name)
    if not recipients:
        return
    mail = EmailMultiAlternatives(
        f"{settings.EMAIL_SUBJECT_PREFIX}{subject}",
        message,
        settings.SERVER_EMAIL,
        list(recipients),
        connection=connection,
    )
    if html_message:
        mail.attach_alternative(html_message, "text/html")
    backend = connection_for_call(connection, using, None, None, fail_silently)
    await backend.send_messages([mail], **send_options(connection, fail_silently))


async def amail_admins(
    subject: str,
    message: str,
    *,
    fail_silently: bool = False,
    connection: ConnectionLike | None = None,
    html_message: str | None = None,
    using: str | None = None,
) -> None:
    """Send a message to ADMINS (nothing when it is empty), from SERVER_EMAIL,
    with EMAIL_SUBJECT_PREFIX before the subject."""
    await _asend_server_message(
        "ADMINS",
        subject,
        message,
        fail_silently=fail_silently,
        connection=connection,
        html_message=html_message,
        using=using,
    )


async def amail_managers(
    subject: str,
    message: str,
    *,
    fail_silently: bool = False,
    connection: ConnectionLike | None = None,
    html_message: str | None = None,
    using: str | None = None,
) -> None:
    """Send a message to MANAGERS; otherwise like :func:`amail_admins`."""
    await _asend_server_message(
        "MANAGERS",
        subject,
        message,
        fail_silently=fail_silently,
        connection=connection,
        html_message=html_message,
        using=using,
    )
