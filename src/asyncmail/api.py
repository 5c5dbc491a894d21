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
from .connection import Connection, ConnectionLike, async_connection
from .exceptions import ConfigurationError, InvalidMailer, MailerDoesNotExist
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

    Keyword *options* go to the backend's constructor. For a mailer they win
    over its OPTIONS, and the EMAIL_* settings are not used (Django 6.1's
    MAILERS rules, see :func:`_mailer_options`); without a mailer, options
    not given come from the EMAIL_* settings. Their names and types are in
    :mod:`asyncmail.options` (:class:`~asyncmail.options.SMTPOptions` and the
    others), which type checkers and editors use: a misspelt option is a type
    error, and an unknown one a :class:`ConfigurationError` at run time. A
    built-in backend's dotted path gives that backend's type back.

    :param backend: a backend's dotted path (not with *using*).
    :param fail_silently: the backend swallows delivery errors (they stay in
        the results).
    :param using: the name of a mailer configured in MAILERS.
    :raises MailerDoesNotExist: an unknown *using*.
    :raises InvalidMailer: a mailer whose configuration is wrong.
    :raises ConfigurationError: an unknown backend or option.
    """
    mailers: dict[str, dict[str, Any]] = settings.MAILERS
    if using is not None:
        if backend is not None:
            raise ConfigurationError("Give either backend or using, not both")
        if using not in mailers:
            known = ", ".join(sorted(mailers)) or "none configured"
            raise MailerDoesNotExist(
                f"The mailer {using!r} is not configured (known: {known}).",
                alias=using,
            )
    elif backend is None and DEFAULT_MAILER in mailers:
        using = DEFAULT_MAILER
    if using is not None:
        return _create_mailer(using, mailers[using], fail_silently, options)
    backend_class = _import_backend(backend or settings.EMAIL_BACKEND)
    return backend_class(fail_silently=fail_silently, **options)


def _create_mailer(
    alias: str,
    config: dict[str, Any],
    fail_silently: bool,
    overrides: dict[str, Any],
) -> BaseEmailBackend:
    """The backend of the mailer *alias*; every configuration error is an
    :class:`InvalidMailer` naming it."""
    # OPTIONS defining "alias" never get here: settings refuse them (every
    # source of MAILERS goes through asyncmail.settings' validator).
    try:
        backend_class = _import_backend(config["BACKEND"])
    except ConfigurationError as exc:
        raise InvalidMailer(str(exc), alias=alias) from exc
    options = _mailer_options(backend_class, alias, {**config["OPTIONS"], **overrides})
    if fail_silently:
        options["fail_silently"] = True
    try:
        return backend_class(alias=alias, **options)
    except InvalidMailer:
        raise
    except ConfigurationError as exc:
        raise InvalidMailer(str(exc), alias=alias) from exc


def _mailer_options(
    backend_class: type[BaseEmailBackend], alias: str, options: dict[str, Any]
) -> dict[str, Any]:
    """A mailer's constructor options under Django 6.1's MAILERS rules.

    A mailer is configured by its OPTIONS alone: the EMAIL_* settings are not
    inherited (they configure the backend used without MAILERS). For the
    SMTP backend, OPTIONS must give ``host``, and the port, when not given,
    follows the TLS mode: 465 with ``use_ssl``, 587 with ``use_tls``, else
    25. The file backend needs ``file_path``. ``timeout`` not given is
    asyncmail's default (60 seconds), not EMAIL_TIMEOUT.
    """
    from .backends import filebased, smtp
    from .settings import DEFAULTS

    options = dict(options)
    if issubclass(backend_class, smtp.EmailBackend):
        if not options.get("host"):
            raise InvalidMailer("OPTIONS must define 'host'.", alias=alias)
        # None means not given, as in Django; other values go to the backend,
        # which checks them.
        use_tls = options.get("use_tls")
        use_ssl = options.get("use_ssl")
        use_tls = False if use_tls is None else use_tls
        use_ssl = False if use_ssl is None else use_ssl
        if use_tls and use_ssl:
            raise InvalidMailer(
                "The 'use_ssl' and 'use_tls' OPTIONS are incompatible. "
                "Set at most one of them to True.",
                alias=alias,
            )
        options["use_tls"], options["use_ssl"] = use_tls, use_ssl
        if options.get("port") is None:
            options["port"] = 465 if use_ssl else 587 if use_tls else 25
        for name in ("username", "password", "ssl_keyfile", "ssl_certfile"):
            if options.get(name) is None:
                options[name] = ""  # given, so the EMAIL_* setting is not read
        options.setdefault("timeout", DEFAULTS["EMAIL_TIMEOUT"])
    elif (
        issubclass(backend_class, filebased.EmailBackend)
        and options.get("file_path") is None
    ):
        raise InvalidMailer("OPTIONS must define 'file_path'.", alias=alias)
    return options


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
    if (auth_user is not None or auth_password is not None) and _takes_credentials(
        _backend_class(using)
    ):
        if auth_user is not None:
            options["username"] = auth_user
        if auth_password is not None:
            options["password"] = auth_password
    return get_connection(using=using, fail_silently=fail_silently, **options)


def _backend_class(using: str | None) -> type[BaseEmailBackend]:
    """The class :func:`get_connection` would create for *using* (its errors
    are left for get_connection to raise)."""
    mailers: dict[str, dict[str, Any]] = settings.MAILERS
    if using is None and DEFAULT_MAILER in mailers:
        using = DEFAULT_MAILER
    try:
        if using is not None:
            return _import_backend(mailers[using]["BACKEND"])
        return _import_backend(settings.EMAIL_BACKEND)
    except (KeyError, ConfigurationError):
        return BaseEmailBackend  # takes no credentials; the error comes next


def send_options(connection: object | None, fail_silently: bool) -> dict[str, Any]:
    """Keyword arguments for ``send_messages``: ``fail_silently`` only for a
    connection the caller gave (a backend created for the call has it in its
    constructor), so Django-style ``send_messages(messages)`` overrides work."""
    return {"fail_silently": True} if fail_silently and connection is not None else {}


def _takes_credentials(backend_class: type[BaseEmailBackend]) -> bool:
    """Whether the backend's constructor takes ``username`` and ``password``:
    it names them, or it is a backend of the user's own with ``**kwargs``
    (asyncmail's own backends without a server reject unknown options)."""
    parameters = inspect.signature(backend_class).parameters
    if "username" in parameters and "password" in parameters:
        return True
    own_init = getattr(backend_class.__init__, "__module__", "") or ""
    return not own_init.startswith("asyncmail.") and any(
        parameter.kind is inspect.Parameter.VAR_KEYWORD
        for parameter in parameters.values()
    )


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
    if not mail.recipients():
        # As Django's send_mail (through EmailMessage.send): nothing to send,
        # no connection opened, 0 whatever the backend. Skipped, as recorded.
        record(MessageResult(mail))
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
