"""Logging and OpenTelemetry: what happened to each message and connection.

Everything asyncmail reports goes through this module; the rest of the
library calls it from a handful of one-line hooks (the result recorder, the
backend base, the SMTP connection), so it is easy to find and to change.

Logging (stdlib, the ``asyncmail`` logger; it has no handler of its own)
    ======================================  =========  ======================
    event                                   level      logger
    ======================================  =========  ======================
    a message sent, or skipped              DEBUG      ``asyncmail.send``
    a message failed, partly or unknown     WARNING    ``asyncmail.send``
    a retry after a transient failure       INFO       ``asyncmail.send``
    an SMTP connection opened / closed      DEBUG      ``asyncmail.smtp``
    a connection failed to open             WARNING    ``asyncmail.smtp``
    a broken connection discarded           INFO       ``asyncmail.smtp``
    ======================================  =========  ======================

    So at INFO a bulk run of a million good messages logs nothing, and every
    problem is one line; when a whole batch fails with one and the same
    error (the server unreachable), that is one WARNING, the rest DEBUG.
    Records carry structured fields (``mail_message_id``, ``mail_status``,
    ``mail_recipients`` (a count), ``mail_attempts``, ``mail_reply``,
    ``mail_error``; ``smtp_host``, ``smtp_port``) for JSON formatters.
    Secrets and bodies are never logged; addresses only at DEBUG (above it,
    the local part of any address in a server's reply or an error is
    masked: ``a***@example.com``).

OpenTelemetry (``pip install "asyncmail[otel]"``)
    A span per message sent (``email send``; a child of the caller's span)
    and per SMTP connection set up (``smtp connect``, a child of the message
    that needed it), with ``server.address``, ``server.port``,
    ``error.type`` and ``email.*`` attributes; the counters
    ``asyncmail.messages`` (by ``email.status``) and ``asyncmail.recipients``
    (by ``email.outcome``); and the histogram ``asyncmail.send.duration``
    (seconds per message, retries included). They go to whatever tracer and
    meter providers the application installed; until it installs one,
    they are skipped (cheaply). ``OTEL_SDK_DISABLED=true`` turns them off.

    Zero cost when the package is not installed: whether it is is looked up
    once, at import, without importing it, and then the hooks are the
    undecorated functions themselves.

The package: :mod:`.logs` (the records), :mod:`.otel` (spans and metrics),
and here the hooks that join them around a connection and a delivery.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

if TYPE_CHECKING:
    from ..backends.base import BaseEmailBackend
    from ..message import BaseMessage as EmailMessage  # any sendable message
    from ..results import MessageResult
from .logs import (
    _connection_failed,
    _connection_opened,
    _outcome_counts,
    _Repeats,
    _safe,
    connection_closed,
    logger,
    retrying,
    send_logger,
)

# _Loaded: the instruments in use (the tests reset them between runs).
from .otel import OTEL_AVAILABLE, _load, instrument
from .otel import _Loaded as _Loaded

__all__ = [
    "OTEL_AVAILABLE",
    "connection_closed",
    "instrument",
    "logger",
    "message_outcome",
    "retrying",
    "traced_connect",
    "traced_delivery",
]

T = TypeVar("T")
P = ParamSpec("P")
B = TypeVar("B", bound="BaseEmailBackend")


def message_outcome(result: MessageResult) -> None:
    """One message's outcome (called by :func:`asyncmail.results.record`)."""
    if OTEL_AVAILABLE and (instruments := _load()) is not None and instruments.live():
        instruments.count(result)
    ok = result.ok
    level = logging.DEBUG if ok else logging.WARNING
    error = result.error
    if error is None:
        _Repeats.key = None  # after a success, a failure is news again
    else:
        key = (type(error), str(error))
        if key == _Repeats.key:
            level = logging.DEBUG  # the same failure again: said once already
        else:
            _Repeats.key = key
    if not send_logger.isEnabledFor(level):
        return
    full = send_logger.isEnabledFor(logging.DEBUG)
    status = result.status.value
    fields: dict[str, Any] = {
        "mail_message_id": result.message_id,
        "mail_status": status,
        "mail_recipients": len(result.recipients),
        "mail_attempts": result.attempts,
        "mail_reply": _safe(result.reply, full=full),
        "mail_error": None if error is None else type(error).__name__,
    }
    text = f"message {result.message_id or '(no Message-ID)'} {status}: "
    counts = _outcome_counts(result)
    text += ", ".join(f"{count} {name}" for name, count in counts.items()) or (
        "no recipients"
    )
    if result.attempts > 1:
        text += f", {result.attempts} attempts"
    if error is not None:
        text += f"; {type(error).__name__}: {_safe(str(error), full=full)}"
    elif result.reply:
        text += f"; {fields['mail_reply']}"
    if full and result.recipients:
        fields["mail_to"] = list(result.recipients)
        text += f" [{', '.join(result.recipients)}]"
    send_logger.log(level, "%s", text, extra=fields)


def _tls_mode(backend: Any) -> str:
    if getattr(backend, "use_ssl", False):
        return "implicit TLS"
    return "STARTTLS" if getattr(backend, "use_tls", False) else "no TLS"


def traced_connect(
    connect: Callable[Concatenate[Any, P], Coroutine[Any, Any, T]],
) -> Callable[Concatenate[Any, P], Coroutine[Any, Any, T]]:
    """Decorates the SMTP backend's ``connect``: logs the connection opening
    (or failing) and, with OpenTelemetry, makes it a span."""

    @functools.wraps(connect)
    async def wrapper(backend: Any, /, *args: P.args, **kwargs: P.kwargs) -> T:
        host, port = str(backend.host), int(backend.port)
        tls = _tls_mode(backend)
        started = time.perf_counter()
        instruments = _load() if OTEL_AVAILABLE else None
        if instruments is not None and not instruments.live():
            instruments = None
        span = None if instruments is None else instruments.connect_span(backend, tls)
        try:
            connection = await connect(backend, *args, **kwargs)
        except BaseException as exc:
            if isinstance(exc, Exception):
                _connection_failed(host, port, exc)
            if instruments is not None:
                instruments.end_span(span, exc)
            raise
        if instruments is not None:
            instruments.end_span(span, None)
        _connection_opened(host, port, time.perf_counter() - started, tls)
        return connection

    return wrapper


def traced_delivery(
    deliver: Callable[Concatenate[B, EmailMessage, P], Awaitable[MessageResult]],
) -> Callable[Concatenate[B, EmailMessage, P], Awaitable[MessageResult]]:
    """Decorates a backend's one-message delivery (``deliver_or_fail``, the
    SMTP backend's per-message send): with OpenTelemetry, a span and a
    duration per message. Without it, *deliver* itself. Arguments after the
    message are passed through."""
    if not OTEL_AVAILABLE:
        return deliver

    @functools.wraps(deliver)
    async def wrapper(
        backend: B, message: EmailMessage, /, *args: P.args, **kwargs: P.kwargs
    ) -> MessageResult:
        instruments = _load()
        if instruments is None or not instruments.live():
            return await deliver(backend, message, *args, **kwargs)

        def call(backend: B, message: EmailMessage) -> Awaitable[MessageResult]:
            return deliver(backend, message, *args, **kwargs)

        return await instruments.deliver(call, backend, message)

    return wrapper
