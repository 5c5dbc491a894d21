"""``asyncmail.django.EmailBackend``: a Django e-mail backend on asyncmail's SMTP.

Set it as Django's ``EMAIL_BACKEND`` (or as a ``BACKEND`` in Django 6.1's
``MAILERS``) and Django's own ``send_mail``, ``EmailMessage.send``,
``send_mass_mail``, ``mail_admins``, ``AdminEmailHandler``, password reset
... send through asyncmail's pooled, pipelined SMTP path, with Django's
synchronous contract: ``open()`` (True, False, or None when it failed
silently), ``close()``, ``send_messages()`` returning the count,
``with connection:``, a connection reused across calls while open, and
``fail_silently``.

The asyncmail SMTP backend inside lives on asyncmail's library event loop
(:mod:`asyncmail.sync`), whatever thread calls: WSGI workers, the thread
Django runs ASGI sync views in, management commands, Celery workers. So its
pooled connections outlive each request and are never bound to a loop that
``async_to_sync`` creates and throws away. Async code awaits
:meth:`EmailBackend.asend_messages` (or :func:`asend_messages`), which does
the same without blocking the caller's event loop.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Final

import anyio.to_thread
import django
from django.core.mail import EmailMessage as DjangoEmailMessage
from django.core.mail.backends.base import BaseEmailBackend as DjangoBaseEmailBackend
from django.core.mail.backends.smtp import EmailBackend as DjangoSMTPBackend

from ..backends.base import BaseEmailBackend as AsyncBackend
from ..backends.smtp import EmailBackend as SMTPBackend
from ..exceptions import ConfigurationError
from ..settings import settings
from ..sync import run_blocking
from .messages import SERIALISERS, DjangoMessage, Serialiser, active_language

__all__ = ["EmailBackend", "asend_messages"]

#: Django's own SMTP options (handled here, with Django's defaults).
_DJANGO_OPTIONS: Final = frozenset(
    {
        "host",
        "port",
        "username",
        "password",
        "use_tls",
        "use_ssl",
        "timeout",
        "ssl_keyfile",
        "ssl_certfile",
        "fail_silently",
    }
)

#: asyncmail's own SMTP options (pool, retries, TLS context ...), passed through.
ASYNCMAIL_OPTIONS: Final = frozenset(
    name
    for name, parameter in inspect.signature(SMTPBackend).parameters.items()
    if parameter.kind is inspect.Parameter.KEYWORD_ONLY and name not in _DJANGO_OPTIONS
)


def _invalid_mailer(message: str, alias: str) -> Exception:
    """Django 6.1's InvalidMailer (ImproperlyConfigured before 6.1)."""
    error: Exception
    try:
        from django.core.mail import InvalidMailer  # Django 6.1+
    except ImportError:
        from django.core.exceptions import ImproperlyConfigured

        error = ImproperlyConfigured(f"MAILERS[{alias!r}]: {message}")
    else:
        error = InvalidMailer(message, alias=alias)
    return error


class EmailBackend(DjangoBaseEmailBackend):  # type: ignore[misc]
    """A Django e-mail backend that sends through asyncmail's SMTP backend.

    Django's options, with Django's defaults: ``host``, ``port``,
    ``username``, ``password``, ``use_tls``, ``use_ssl``, ``timeout``,
    ``ssl_keyfile``, ``ssl_certfile``, ``fail_silently``. Created by Django
    from ``EMAIL_BACKEND`` (no ``alias``), an option not given comes from
    the ``EMAIL_*`` settings (through asyncmail's settings bridge, so
    ``asyncmail.configure()`` and asyncmail's 60 s default timeout apply
    too). Created from a Django 6.1 ``MAILERS`` entry (``alias`` given),
    Django's rules apply: ``OPTIONS`` must give ``host``, the ``EMAIL_*``
    settings are not inherited, and the port follows ``use_ssl`` (465) /
    ``use_tls`` (587) / 25.

    asyncmail's own options pass through to
    :class:`asyncmail.backends.smtp.EmailBackend` (``max_connections``,
    ``rate_limit``, ``retries``, ``ssl_context``, ``local_hostname``, ...;
    see :data:`ASYNCMAIL_OPTIONS`), and ``serializer`` chooses how Django's
    messages become bytes: ``"asyncmail"`` (fast; Django 6's structure) or
    ``"django"`` (Django's own bytes), by default the Django setting
    ``ASYNCMAIL_SERIALIZER`` or ``"asyncmail"``; see
    :mod:`asyncmail.django.messages`.

    Other keyword arguments go to Django's ``BaseEmailBackend``, which
    reports them as Django does (a warning, or ``InvalidMailer`` for a
    mailer alias).
    """

    def __init__(  # noqa: PLR0917 - Django's positional signature
        self,
        host: str | None = None,
        port: int | None = None,
        username: str | None = None,
        password: str | None = None,
        use_tls: bool | None = None,
        fail_silently: bool = False,
        use_ssl: bool | None = None,
        timeout: float | None = None,
        ssl_keyfile: str | None = None,
        ssl_certfile: str | None = None,
        *,
        serializer: Serialiser | None = None,
        **kwargs: Any,
    ) -> None:
        options = {
            name: kwargs.pop(name) for name in list(kwargs) if name in ASYNCMAIL_OPTIONS
        }
        alias: str | None = kwargs.get("alias")
        if alias is None and django.VERSION >= (6, 1):
            # As Django 6.1 says of its own SMTP backend (silent when Django
            # itself creates it, from EMAIL_BACKEND).
            from django.utils.deprecation import (
                RemovedInDjango2028Warning,
                warn_about_external_use,
            )

            warn_about_external_use(
                "Directly creating EmailBackend instances is deprecated. "
                "Use mail.mailers instead.",
                RemovedInDjango2028Warning,
            )
        super().__init__(**kwargs)
        self.alias = alias  # Django 5.2's base class does not keep it
        self.fail_silently = fail_silently
        if serializer is None:
            from django.conf import settings as django_settings

            serializer = getattr(django_settings, "ASYNCMAIL_SERIALIZER", "asyncmail")
        if serializer not in SERIALISERS:
            raise ConfigurationError(
                f"serializer must be one of {', '.join(map(repr, SERIALISERS))}, "
                f"not {serializer!r}"
            )
        self.serializer: Serialiser = serializer
        if alias is None:
            # Django's EMAIL_BACKEND: each option defaults to its EMAIL_*
            # setting, read through asyncmail's settings (and the bridge).
            self.host = host or settings.EMAIL_HOST
            self.port = port or settings.EMAIL_PORT
            self.username = settings.EMAIL_HOST_USER if username is None else username
            self.password = (
                settings.EMAIL_HOST_PASSWORD if password is None else password
            )
            self.use_tls = settings.EMAIL_USE_TLS if use_tls is None else use_tls
            self.use_ssl = settings.EMAIL_USE_SSL if use_ssl is None else use_ssl
            self.timeout = settings.EMAIL_TIMEOUT if timeout is None else timeout
            self.ssl_keyfile = (
                settings.EMAIL_SSL_KEYFILE if ssl_keyfile is None else ssl_keyfile
            )
            self.ssl_certfile = (
                settings.EMAIL_SSL_CERTFILE if ssl_certfile is None else ssl_certfile
            )
            if self.use_tls and self.use_ssl:
                raise ConfigurationError(
                    "EMAIL_USE_TLS/EMAIL_USE_SSL are mutually exclusive, so only "
                    "set one of those settings to True."
                )
        else:
            # A Django 6.1 mailer: Django's MAILERS rules.
            self.host = host
            self.port = port
            self.username = username
            self.password = password
            self.use_tls = bool(use_tls)
            self.use_ssl = bool(use_ssl)
            self.timeout = settings.EMAIL_TIMEOUT if timeout is None else timeout
            self.ssl_keyfile = ssl_keyfile
            self.ssl_certfile = ssl_certfile
            if host is None:
                raise _invalid_mailer("OPTIONS must define 'host'.", alias)
            if self.use_ssl and self.use_tls:
                raise _invalid_mailer(
                    "The 'use_ssl' and 'use_tls' OPTIONS are incompatible. "
                    "Set at most one of them to True.",
                    alias,
                )
            if self.port is None:
                self.port = 465 if self.use_ssl else 587 if self.use_tls else 25
        self._smtp = SMTPBackend(
            host=self.host,
            port=self.port,
            username=self.username or "",
            password=self.password or "",
            use_tls=self.use_tls,
            use_ssl=self.use_ssl,
            timeout=self.timeout,
            ssl_keyfile=self.ssl_keyfile,
            ssl_certfile=self.ssl_certfile,
            fail_silently=fail_silently,
            alias=alias,
            **options,
        )

    @property
    def smtp_backend(self) -> SMTPBackend:
        """The asyncmail SMTP backend doing the work (on the library loop)."""
        self._smtp.fail_silently = self.fail_silently  # Django code may set it
        return self._smtp

    @property
    def connection(self) -> object | None:
        """Something while open, None while closed (as Django's attribute):
        the asyncmail connection pool."""
        return self._smtp.pool

    def prep_address(self, address: Any, force_ascii: bool = True) -> str:
        """Django's SMTP backend helper, for subclasses that use it (the
        envelope itself is checked by asyncmail, more strictly)."""
        result: str = DjangoSMTPBackend.prep_address(self, address, force_ascii)
        return result

    def __repr__(self) -> str:
        state = self._smtp.state.value
        return f"<asyncmail.django.EmailBackend {self.host}:{self.port} {state}>"

    # -- Django's synchronous contract -------------------------------------------

    def open(self) -> bool | None:
        """Connect (or check the connection is open); True if connected now,
        False if already open, None if it failed and ``fail_silently``."""
        return self.smtp_backend.blocking().open()

    def close(self) -> None:
        """QUIT and close the connections; a no-op when closed."""
        self.smtp_backend.blocking().close()

    def send_messages(self, email_messages: Iterable[DjangoEmailMessage]) -> int:
        """Send Django messages; return how many were sent (Django's count).

        Every message is attempted; unless ``fail_silently``, the error of
        the first one not delivered is raised afterwards (with every
        message's result on it: ``exc.results``).
        """
        if not email_messages:
            return 0
        messages = self.prepare(email_messages)
        return self.smtp_backend.blocking().send_messages(
            messages, fail_silently=self.fail_silently
        )

    # -- async code -------------------------------------------------------------

    async def asend_messages(self, email_messages: Iterable[DjangoEmailMessage]) -> int:
        """:meth:`send_messages` for async code: the caller's event loop is
        not blocked (the work runs on asyncmail's library loop, where this
        backend's connections live)."""
        if not email_messages:
            return 0
        messages = self.prepare(email_messages)
        send = functools.partial(
            run_blocking,
            self.smtp_backend.send_messages,
            messages,
            fail_silently=self.fail_silently,
        )
        return await anyio.to_thread.run_sync(send)

    async def aopen(self) -> bool | None:
        """:meth:`open` for async code."""
        return await anyio.to_thread.run_sync(self.open)

    async def aclose(self) -> None:
        """:meth:`close` for async code."""
        await anyio.to_thread.run_sync(self.close)

    def prepare(
        self, email_messages: Iterable[DjangoEmailMessage]
    ) -> list[DjangoMessage] | Iterator[DjangoMessage]:
        """Django's messages as asyncmail messages (rendered when sent): a
        list for a list, else an iterator, so that a generator of messages
        is consumed as it is sent, never held in memory whole."""
        serializer = self.serializer
        # Rendered in the caller's language, wherever the rendering runs.
        language = active_language()
        if isinstance(email_messages, (list, tuple)):
            return [
                DjangoMessage(message, serializer, language=language)
                for message in email_messages
            ]
        return (
            DjangoMessage(message, serializer, language=language)
            for message in email_messages
        )


async def asend_messages(
    email_messages: Sequence[DjangoEmailMessage],
    *,
    connection: Any = None,
    using: str | None = None,
) -> int:
    """Send Django messages from async code; return how many were sent.

    Through *connection* if given (an ``asyncmail.django.EmailBackend``, any
    Django backend, or an asyncmail backend), else Django's mailer *using*
    (Django 6.1), else Django's default backend: with asyncmail's backends
    the caller's loop is never blocked; another Django backend (e.g. locmem
    under Django's test runner, so the messages land in
    ``django.core.mail.outbox``) runs in a thread, as Django's
    ``sync_to_async`` would.
    """
    if connection is not None and using is not None:
        raise TypeError("Give either connection or using, not both")
    if connection is None:
        connection = _django_connection(using)
    if isinstance(connection, EmailBackend):
        return await connection.asend_messages(email_messages)
    if isinstance(connection, AsyncBackend):  # an asyncmail backend: await it
        return await connection.send_messages(
            [DjangoMessage(message, "asyncmail") for message in email_messages]
        )
    from asgiref.sync import sync_to_async

    sent: int = await sync_to_async(connection.send_messages)(list(email_messages))
    return sent


def _django_connection(using: str | None) -> Any:
    from django.core import mail

    mailers = getattr(mail, "mailers", None)
    if mailers is None:  # Django 5.2
        if using is not None:
            raise TypeError("using= needs Django 6.1's MAILERS")
        return mail.get_connection()
    return mailers.default if using is None else mailers[using]
