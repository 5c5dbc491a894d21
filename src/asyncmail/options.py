"""The options of the built-in backends, as types for ``get_connection()``.

``get_connection(**options)`` passes its keyword options to the backend's
constructor. These TypedDicts name them, so that an editor completes
``max_connections``, ``rate_limit``, ``retries`` and the rest, and mypy
refuses a misspelt option or a value of the wrong type::

    backend = get_connection(max_connections=10, rate_limit=200.0)   # checked
    get_connection(max_conections=10)        # mypy: unexpected keyword argument

They describe the constructors, which stay the source of truth (a test keeps
the two in step); the values are checked at run time by the backends
whatever the types say. Options of a third-party backend are not known here:
``get_connection("myapp.Backend", **anything)`` is accepted as such.

The run-time checks are here too, once: one validator per kind of value
(:func:`check_str`, :func:`check_bool`, :func:`check_port`,
:func:`check_timeout`, :func:`check_seconds`, :func:`check_count`,
:func:`check_tls_mode`), shared by the EMAIL_* settings
(:mod:`asyncmail.settings`), the MAILERS rules (:mod:`asyncmail.mailers`) and
the backends' options. Each takes the name the user wrote (``EMAIL_PORT``,
``$EMAIL_PORT``, ``port``) and raises a
:class:`~asyncmail.exceptions.ConfigurationError` naming it and the bad
value (a text value's type only: it may be a secret).
"""

from __future__ import annotations

import math
import os
import ssl
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, TextIO, TypedDict

from .exceptions import ConfigurationError

if TYPE_CHECKING:
    from .dkim import DKIMSigner

__all__ = [
    "ConnectionOptions",
    "ConsoleOptions",
    "FileOptions",
    "SMTPOptions",
    "check_bool",
    "check_count",
    "check_port",
    "check_seconds",
    "check_str",
    "check_timeout",
    "check_tls_mode",
]


class SMTPOptions(TypedDict, total=False):
    """Options of ``asyncmail.backends.smtp.EmailBackend``.

    Every option is optional; those with a Django setting default to it.
    """

    #: The server's name or address (default EMAIL_HOST).
    host: str
    #: The server's port (default EMAIL_PORT).
    port: int
    #: The AUTH user name (default EMAIL_HOST_USER; empty: no AUTH).
    username: str
    #: The AUTH password (default EMAIL_HOST_PASSWORD).
    password: str
    #: STARTTLS, required when set (default EMAIL_USE_TLS).
    use_tls: bool
    #: Implicit TLS, e.g. port 465 (default EMAIL_USE_SSL; not with use_tls).
    use_ssl: bool
    #: Seconds for each wait on the server; None: no timeout (EMAIL_TIMEOUT).
    timeout: float | None
    #: A client certificate's key file (EMAIL_SSL_KEYFILE).
    ssl_keyfile: str | None
    #: A client certificate file (EMAIL_SSL_CERTFILE).
    ssl_certfile: str | None
    #: Your own context, replacing the verifying default.
    ssl_context: ssl.SSLContext | None
    #: The EHLO name (default: this host's FQDN).
    local_hostname: str | None
    #: Send credentials over an unencrypted connection to a remote server.
    dangerously_allow_plaintext_auth: bool
    #: Connections used at once (default 1: Django's behaviour).
    max_connections: int
    #: Messages in flight at once on one connection (default 2; with
    #: PIPELINING, one round trip per message; 1: one at a time).
    pipeline_depth: int
    #: Retire a connection after this many messages.
    max_messages_per_connection: int | None
    #: Retire a connection after this many seconds.
    max_connection_lifetime: float | None
    #: Close a connection idle this many seconds (default 60).
    idle_timeout: float | None
    #: Probe (NOOP) a connection idle this long before reusing it (default 10).
    probe_after: float | None
    #: At most this many messages in any one second, over all connections,
    #: spaced evenly.
    rate_limit: float | None
    #: Messages that may go back to back after a pause (default 1: none).
    rate_limit_burst: int
    #: Extra attempts for transient failures (default 2).
    retries: int
    #: First backoff in seconds, doubled each retry, with jitter (default 0.5).
    retry_backoff: float
    #: The longest backoff in seconds (default 30).
    retry_backoff_max: float
    #: Seconds one message may take in all: connecting, TLS, AUTH and
    #: retries included (default: timeout; None: no bound).
    deadline: float | None
    #: Consecutive connect failures that open the breaker (default 3).
    breaker_threshold: int
    #: Seconds before an open breaker lets one message probe (default 5).
    breaker_cooldown: float
    #: OAuth2 (XOAUTH2/OAUTHBEARER) instead of a password: a callable (async
    #: or not, may take ``refresh``) returning an access token, or its path.
    oauth2_token_provider: Callable[..., str | Awaitable[str]] | str | None
    #: DKIM-sign every message: a DKIMSigner or a dict of its arguments
    #: (default EMAIL_DKIM; None: no signing). See asyncmail.dkim.
    dkim: DKIMSigner | Mapping[str, Any] | None


class ConsoleOptions(TypedDict, total=False):
    """Options of ``asyncmail.backends.console.EmailBackend``."""

    #: Where messages are written (default: standard output).
    stream: TextIO | None


class FileOptions(TypedDict, total=False):
    """Options of ``asyncmail.backends.filebased.EmailBackend``."""

    #: The directory messages are written to (default EMAIL_FILE_PATH).
    file_path: str | os.PathLike[str] | None


class ConnectionOptions(SMTPOptions, ConsoleOptions, FileOptions, total=False):
    """Any built-in backend's options: what ``get_connection(**options)``
    accepts when the backend comes from the settings (EMAIL_BACKEND or a
    named mailer), which are not known until run time."""


# -- the validators: one per kind of value -----------------------------------------


def check_str(name: str, value: object) -> str:
    """*value*, a str (its type only is named when it is not: it may be a
    password)."""
    if not isinstance(value, str):
        raise ConfigurationError(f"{name} must be a str, not {type(value).__name__}")
    return value


def check_bool(name: str, value: object) -> bool:
    """*value*, True or False (not 0, 1 or "yes": those are typos here)."""
    if not isinstance(value, bool):
        raise ConfigurationError(f"{name} must be True or False, not {value!r}")
    return value


def check_port(name: str, value: object) -> int:
    """*value*, a TCP port: an int from 1 to 65535."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        raise ConfigurationError(
            f"{name} must be an int from 1 to 65535, not {value!r}"
        )
    return value


def _number(value: object) -> float | None:
    """*value* as a float when it is a real number (not a bool, not NaN)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = float(value)
    return None if math.isnan(number) else number


def check_timeout(name: str, value: object) -> float | None:
    """*value*, a positive number of seconds, or None (no bound): a timeout
    or a deadline."""
    if value is None:
        return None
    number = _number(value)
    if number is None or number <= 0:
        raise ConfigurationError(
            f"{name} must be a positive number of seconds or None, not {value!r}"
        )
    return number


def check_seconds(name: str, value: object, *, optional: bool = True) -> float | None:
    """*value*, 0 or more seconds (a lifetime, a cool-down), or None (no
    bound) when *optional*."""
    if value is None and optional:
        return None
    number = _number(value)
    if number is None or number < 0:
        extra = ", or None" if optional else ""
        raise ConfigurationError(
            f"{name} must be 0 or more seconds{extra}, not {value!r}"
        )
    return number


def check_count(
    name: str, value: object, *, minimum: int = 0, optional: bool = False
) -> int | None:
    """*value*, a whole number of at least *minimum* (connections, retries,
    messages), or None (no bound) when *optional*."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        extra = " or None" if optional else ""
        raise ConfigurationError(
            f"{name} must be at least {minimum} (a whole number){extra}, not {value!r}"
        )
    return value


def check_tls_mode(
    use_tls: object,
    use_ssl: object,
    *,
    names: tuple[str, str] = ("use_tls", "use_ssl"),
) -> None:
    """STARTTLS (*use_tls*) and implicit TLS (*use_ssl*) are two ways to the
    same end: at most one of them may be on. *names* are the user's names
    for them (``EMAIL_USE_TLS``, ``EMAIL_USE_SSL`` for the settings)."""
    if use_tls and use_ssl:
        tls, ssl_name = names
        raise ConfigurationError(
            f"{tls} (STARTTLS) and {ssl_name} (implicit TLS) are mutually "
            "exclusive; set at most one of them to True"
        )
