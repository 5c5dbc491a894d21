"""The sending API, async-first: ``asend_mail`` and friends, ``get_connection``.

The blocking twins (``send_mail`` ...) in :mod:`asyncmail.sync` run these same
coroutines on the library's event loop; there is no second copy of the logic.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Literal, Unpack, overload

from .address import AddressLike
from .backends.base import BaseEmailBackend
from .exceptions import ConfigurationError
from .message import EmailMessage, EmailMultiAlternatives
from .options import ConnectionOptions, ConsoleOptions, FileOptions, SMTPOptions
from .results import MessageResult, record
from .settings import settings

if TYPE_CHECKING:
    from .backends import console, dummy, filebased, locmem, smtp

__all__ = [
    "amail_admins",
    "amail_managers",
    "asend_mail",
    "asend_mass_mail",
    "get_connection",
]

DEFAULT_MAILER = "default"


def _import_backend(path: str) -> type[BaseEmailBackend]:
    module_name, _, class_name = path.rpartition(".")
    if not module_name:
        raise ConfigurationError(
            f"Backend {path!r} is not a dotted path like "
            "'asyncmail.backends.smtp.EmailBackend'"
        )
    try:
        module = importlib.import_module(module_name)
        backend = getattr(module, class_name)
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(f"Could not import backend {path!r}: {exc}") from exc
    if not (isinstance(backend, type) and issubclass(backend, BaseEmailBackend)):
        raise ConfigurationError(
            f"{path!r} is not an asyncmail backend (a BaseEmailBackend subclass)"
        )
    return backend


# The options are typed (asyncmail.options): per built-in backend when its
# dotted path is spelt out, any built-in backend's when the backend comes
# from the settings, and anything for a third-party backend's path.
@overload
def get_connection(
    backend: Literal["asyncmail.backends.smtp.EmailBackend"],
    *,
    fail_silently: bool = ...,
    **options: Unpack[SMTPOptions],
) -> smtp.EmailBackend: ...
@overload
def get_connection(
    backend: Literal["asyncmail.backends.console.EmailBackend"],
    *,
    fail_silently: bool = ...,
    **options: Unpack[ConsoleOptions],
) -> console.EmailBackend: ...
@overload
def get_connection(
    backend: Literal["asyncmail.backends.filebased.EmailBackend"],
    *,
    fail_silently: bool = ...,
    **options: Unpack[FileOptions],
) -> filebased.EmailBackend: ...
@overload
def get_connection(
    backend: Literal["asyncmail.backends.locmem.EmailBackend"],
    *,
    fail_silently: bool = ...,
) -> locmem.EmailBackend: ...
@overload
def get_connection(
    backend: Literal["asyncmail.backends.dummy.EmailBackend"],
    *,
    fail_silently: bool = ...,
) -> dummy.EmailBackend: ...
@overload
def get_connection(
    backend: None = None,
    *,
    fail_silently: bool = ...,
    using: str | None = ...,
    **options: Unpack[ConnectionOptions],
) -> BaseEmailBackend: ...
@overload
def get_connection(
    backend: str,
    *,
    fail_silently: bool = ...,
    using: None = ...,
    **options: Any,
) -> BaseEmailBackend: ...
def get_connection(
    backend: str | None = None,
    *,
    fail_silently: bool = False,
    using: str | None = None,
    **options: Any,
) -> BaseEmailBackend:
    """Create a backend: the dotted path *backend*, or the mailer named by
    *using*, or the default (MAILERS["default"] if configured, else
    EMAIL_BACKEND).

    Keyword *options* go to the backend's constructor and win over the
    mailer's OPTIONS, which win over the EMAIL_* settings. Their names and
    types are in :mod:`asyncmail.options` (:class:`~asyncmail.options.SMTPOptions`
    and the others), which type checkers and editors use: a misspelt option
    is a type error, and an unknown one a :class:`ConfigurationError` at run
    time. A built-in backend's dotted path gives that backend's type back.

    :param backend: a backend's dotted path (not with *using*).
    :param fail_silently: the backend swallows delivery errors (they stay in
        the results).
    :param using: the name of a mailer configured in MAILERS.
    :raises ConfigurationError: an unknown backend, mailer or option.
    """
    mailers: dict[str, dict[str, Any]] = settings.MAILERS
    if using is not None:
        if backend is not None:
            raise ConfigurationError("Give either backend or using, not both")
        if using not in mailers:
            known = ", ".join(sorted(mailers)) or "none configured"
            raise ConfigurationError(f"No mailer named {using!r} (known: {known})")
    elif backend is None and DEFAULT_MAILER in mailers:
        using = DEFAULT_MAILER
    if using is not None:
        config = mailers[using]
        backend_class = _import_backend(config["BACKEND"])
        options = {**config["OPTIONS"], **options}
        return backend_class(fail_silently=fail_silently, alias=using, **options)
    backend_class = _import_backend(backend or settings.EMAIL_BACKEND)
    return backend_class(fail_silently=fail_silently, **options)


def connection_for_call(
    connection: BaseEmailBackend | Any | None,
    using: str | None,
    auth_user: str | None,
    auth_password: str | None,
) -> BaseEmailBackend:
    """The backend a convenience function sends through."""
    if connection is not None:
        if auth_user is not None or auth_password is not None:
            raise TypeError(
                "auth_user and auth_password cannot be used with a connection; "
                "pass username and password to get_connection() instead."
            )
        # A BlockingBackend view (from ``with backend as conn``) wraps the backend.
        backend: BaseEmailBackend = getattr(connection, "backend", connection)
        return backend
    backend = get_connection(using=using)
    if auth_user is None and auth_password is None:
        return backend
    if not _takes_credentials(type(backend)):
        # As in Django: backends without a server (locmem, console, ...)
        # have no use for credentials; tests switch to them freely.
        return backend
    options: dict[str, Any] = {}
    if auth_user is not None:
        options["username"] = auth_user
    if auth_password is not None:
        options["password"] = auth_password
    return get_connection(using=using, **options)


def _takes_credentials(backend_class: type[BaseEmailBackend]) -> bool:
    parameters = inspect.signature(backend_class).parameters
    return "username" in parameters and "password" in parameters


async def asend_mail(
    subject: str,
    message: str,
    from_email: AddressLike | None,
    recipient_list: Sequence[AddressLike],
    *,
    fail_silently: bool = False,
    auth_user: str | None = None,
    auth_password: str | None = None,
    connection: BaseEmailBackend | None = None,
    html_message: str | None = None,
    using: str | None = None,
) -> int:
    """Send one message to *recipient_list* (all see each other in To).

    Returns the number of messages sent (0 or 1). ``from_email=None`` means
    DEFAULT_FROM_EMAIL. With *html_message* the message is multipart/alternative.
    """
    backend = connection_for_call(connection, using, auth_user, auth_password)
    mail = EmailMultiAlternatives(subject, message, from_email, recipient_list)
    if html_message:
        mail.attach_alternative(html_message, "text/html")
    if not mail.recipients():
        # As Django's send_mail (through EmailMessage.send): nothing to send,
        # no connection opened, 0 whatever the backend. Skipped, as recorded.
        record(MessageResult(mail))
        return 0
    return await backend.send_messages([mail], fail_silently=fail_silently)


async def asend_mass_mail(
    datatuple: Iterable[tuple[str, str, AddressLike | None, Sequence[AddressLike]]],
    *,
    fail_silently: bool = False,
    auth_user: str | None = None,
    auth_password: str | None = None,
    connection: BaseEmailBackend | None = None,
    using: str | None = None,
) -> int:
    """Send one message per ``(subject, message, from_email, recipient_list)``
    tuple, all over ONE connection; return the number sent."""
    backend = connection_for_call(connection, using, auth_user, auth_password)
    messages = [
        EmailMessage(subject, body, sender, recipients)
        for subject, body, sender, recipients in datatuple
    ]
    return await backend.send_messages(messages, fail_silently=fail_silently)


async def _asend_server_message(
    setting_name: str,
    subject: str,
    message: str,
    *,
    fail_silently: bool,
    connection: BaseEmailBackend | None,
    html_message: str | None,
    using: str | None,
) -> None:
    recipients: Sequence[str] = getattr(settings, setting_name)
    if not recipients:
        return
    mail = EmailMultiAlternatives(
        f"{settings.EMAIL_SUBJECT_PREFIX}{subject}",
        message,
        settings.SERVER_EMAIL,
        list(recipients),
    )
    if html_message:
        mail.attach_alternative(html_message, "text/html")
    backend = connection_for_call(connection, using, None, None)
    await backend.send_messages([mail], fail_silently=fail_silently)


async def amail_admins(
    subject: str,
    message: str,
    *,
    fail_silently: bool = False,
    connection: BaseEmailBackend | None = None,
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
    connection: BaseEmailBackend | None = None,
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
