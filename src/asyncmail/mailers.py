"""Backends by name: ``get_connection`` and Django 6.1's MAILERS rules.

Which backend class a dotted path names (:func:`import_backend`, also the
EMAIL_BACKEND setting's check), the backend of a named mailer (its OPTIONS
alone, with Django's defaults for the SMTP port and TLS), and what a
convenience call creates when no ``connection=`` is given
(:func:`backend_class`, :func:`takes_credentials`). The sending functions
are in :mod:`asyncmail.api`.
"""

from __future__ import annotations

import importlib
import inspect
from typing import TYPE_CHECKING, Any, Literal, Unpack, overload

from .backends.base import BaseEmailBackend
from .exceptions import ConfigurationError, InvalidMailer, MailerDoesNotExist
from .options import ConnectionOptions, ConsoleOptions, FileOptions, SMTPOptions
from .settings import settings

if TYPE_CHECKING:
    from .backends import console, dummy, filebased, locmem, smtp

__all__ = ["backend_class", "get_connection", "import_backend", "takes_credentials"]

DEFAULT_MAILER = "default"


def import_backend(path: str) -> type[BaseEmailBackend]:
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
    backend_class = import_backend(backend or settings.EMAIL_BACKEND)
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
        backend_class = import_backend(config["BACKEND"])
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


def backend_class(using: str | None) -> type[BaseEmailBackend]:
    """The class :func:`get_connection` would create for *using* (its errors
    are left for get_connection to raise)."""
    mailers: dict[str, dict[str, Any]] = settings.MAILERS
    if using is None and DEFAULT_MAILER in mailers:
        using = DEFAULT_MAILER
    try:
        if using is not None:
            return import_backend(mailers[using]["BACKEND"])
        return import_backend(settings.EMAIL_BACKEND)
    except (KeyError, ConfigurationError):
        return BaseEmailBackend  # takes no credentials; the error comes next


def takes_credentials(backend_class: type[BaseEmailBackend]) -> bool:
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
