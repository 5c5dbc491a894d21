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
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, Concatenate, Final, ParamSpec, TypeVar

if TYPE_CHECKING:
    from .backends.base import BaseEmailBackend
    from .message import BaseMessage as EmailMessage  # any sendable message
    from .results import MessageResult

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

logger: Final = logging.getLogger("asyncmail")
send_logger: Final = logging.getLogger("asyncmail.send")
smtp_logger: Final = logging.getLogger("asyncmail.smtp")


def _otel_installed() -> bool:
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False  # OpenTelemetry's own switch: off for every signal
    try:
        return importlib.util.find_spec("opentelemetry") is not None
    except (ImportError, ValueError):  # hidden, or a broken install
        return False


#: Whether the OpenTelemetry API is installed (looked up once, not imported).
OTEL_AVAILABLE: Final = _otel_installed()

_REPLY_LIMIT = 200  # characters of a server reply or error kept in a record
_ADDRESS = re.compile(r"([^\s<>\"'(),;:@]+)@([A-Za-z0-9.\-\[\]:]+)")

T = TypeVar("T")
P = ParamSpec("P")
B = TypeVar("B", bound="BaseEmailBackend")
# A delivery as the spans see it: (backend, message) -> result.
Deliver = Callable[[Any, "EmailMessage"], Awaitable["MessageResult"]]


# -- logging ------------------------------------------------------------------------


def _mask(match: re.Match[str]) -> str:
    return f"{match.group(1)[:1]}***@{match.group(2)}"


def _safe(text: str, *, full: bool) -> str:
    """*text* bounded in length, with addresses masked unless *full*."""
    text = " ".join(text.split())
    if len(text) > _REPLY_LIMIT:
        text = text[: _REPLY_LIMIT - 1] + "…"
    return text if full else _ADDRESS.sub(_mask, text)


class _Repeats:
    """The error of the last failed message: when a whole batch fails with
    one and the same error (the server is unreachable, or the backend could
    not open), the first message is a WARNING and the others DEBUG."""

    # (type, text), not the error itself: holding it would keep its
    # traceback's frames (and the messages they hold) alive. Not its id
    # either: each message of a batch that meets a dead server fails with an
    # error of its own, all saying the same thing.
    key: tuple[type[BaseException], str] | None = None


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


def _outcome_counts(result: MessageResult) -> dict[str, int]:
    counts: dict[str, int] = {}
    for recipient in result.recipients.values():
        name = recipient.outcome.value
        counts[name] = counts.get(name, 0) + 1
    return counts


def retrying(
    message_id: str | None, attempt: int, delay: float, error: BaseException | None
) -> None:
    """A transient failure: attempt number *attempt* is retried in *delay* s."""
    if not send_logger.isEnabledFor(logging.INFO):
        return
    full = send_logger.isEnabledFor(logging.DEBUG)
    reason = "" if error is None else f": {_safe(str(error), full=full)}"
    send_logger.info(
        "message %s: attempt %d failed%s; retrying in %.2fs",
        message_id or "(no Message-ID)",
        attempt,
        reason,
        delay,
        extra={
            "mail_message_id": message_id,
            "mail_attempts": attempt,
            "mail_error": None if error is None else type(error).__name__,
        },
    )


def connection_closed(client: Any, *, broken: bool) -> None:
    """An SMTP connection (its aiosmtplib client) closed politely, or
    discarded when *broken*."""
    level = logging.INFO if broken else logging.DEBUG
    if smtp_logger.isEnabledFor(level):
        host, port = str(client.hostname), int(client.port or 0)
        smtp_logger.log(
            level,
            "SMTP connection to %s:%d %s",
            host,
            port,
            "discarded (broken)" if broken else "closed",
            extra={"smtp_host": host, "smtp_port": port},
        )


def _connection_opened(host: str, port: int, seconds: float, tls: str) -> None:
    if smtp_logger.isEnabledFor(logging.DEBUG):
        smtp_logger.debug(
            "SMTP connection to %s:%d opened in %.3fs (%s)",
            host,
            port,
            seconds,
            tls,
            extra={"smtp_host": host, "smtp_port": port},
        )


def _connection_failed(host: str, port: int, error: BaseException) -> None:
    if smtp_logger.isEnabledFor(logging.WARNING):
        full = smtp_logger.isEnabledFor(logging.DEBUG)
        smtp_logger.warning(
            "SMTP connection to %s:%d failed: %s: %s",
            host,
            port,
            type(error).__name__,
            _safe(str(error), full=full),
            extra={
                "smtp_host": host,
                "smtp_port": port,
                "mail_error": type(error).__name__,
            },
        )


# -- connection and delivery hooks (decorators) ------------------------------------


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


# -- OpenTelemetry -------------------------------------------------------------------


class _Instruments:
    """The tracer and meter instruments (made once, on the first send)."""

    def __init__(self, tracer_provider: Any = None, meter_provider: Any = None) -> None:
        from opentelemetry import metrics, trace

        from . import __version__

        self.trace = trace
        self.metrics = metrics
        # Until the application installs a provider, the API hands out its
        # proxies, and every span and measurement would go nowhere: skip
        # them (a few microseconds a message) while both are still those.
        self._unset = (
            None
            if tracer_provider is not None or meter_provider is not None
            else (trace.get_tracer_provider(), metrics.get_meter_provider())
        )
        # The public getters read the environment on every call (~1 us);
        # the API's own globals say the same for free. Used only when they
        # exist and no provider is named by environment variable.
        from opentelemetry.metrics import _internal as metrics_internal

        self._globals = (trace, metrics_internal)
        self._fast = (
            hasattr(trace, "_TRACER_PROVIDER")
            and hasattr(metrics_internal, "_METER_PROVIDER")
            and "OTEL_PYTHON_TRACER_PROVIDER" not in os.environ
            and "OTEL_PYTHON_METER_PROVIDER" not in os.environ
        )
        self.tracer = trace.get_tracer(
            "asyncmail", __version__, tracer_provider=tracer_provider
        )
        meter = metrics.get_meter(
            "asyncmail", __version__, meter_provider=meter_provider
        )
        self.messages = meter.create_counter(
            "asyncmail.messages", unit="{message}", description="Messages by outcome"
        )
        self.recipients = meter.create_counter(
            "asyncmail.recipients",
            unit="{recipient}",
            description="Envelope recipients by outcome",
        )
        self.duration = meter.create_histogram(
            "asyncmail.send.duration",
            unit="s",
            description="Time to send one message, retries included",
        )

    def live(self) -> bool:
        """Whether anything records what asyncmail emits (checked per
        message until a provider is installed; providers are set once)."""
        unset = self._unset
        if unset is None:
            return True
        if self._fast:
            tracing, metering = self._globals
            if tracing._TRACER_PROVIDER is None and metering._METER_PROVIDER is None:
                return False
        elif (
            self.trace.get_tracer_provider() is unset[0]
            and self.metrics.get_meter_provider() is unset[1]
        ):
            return False
        self._unset = None
        return True

    def count(self, result: MessageResult) -> None:
        self.messages.add(1, {"email.status": result.status.value})
        for name, count in _outcome_counts(result).items():
            self.recipients.add(count, {"email.outcome": name})

    async def deliver(
        self, deliver: Deliver, backend: BaseEmailBackend, message: EmailMessage
    ) -> MessageResult:
        kind = (
            self.trace.SpanKind.CLIENT
            if hasattr(backend, "host")
            else (self.trace.SpanKind.INTERNAL)
        )
        attributes: dict[str, Any] = {
            "email.backend": f"{type(backend).__module__}.{type(backend).__qualname__}",
            "email.recipients.count": len(message.recipients()),
        }
        if backend.alias:
            attributes["email.mailer"] = backend.alias
        if hasattr(backend, "host") and hasattr(backend, "port"):
            attributes["server.address"] = str(backend.host)
            attributes["server.port"] = int(backend.port)
        started = time.perf_counter()
        with self.tracer.start_as_current_span(
            "email send",
            kind=kind,
            attributes=attributes,
            end_on_exit=True,
            record_exception=True,
            set_status_on_exception=True,
        ) as span:
            result = await deliver(backend, message)
            status = result.status.value
            span.set_attribute("email.status", status)
            span.set_attribute("email.attempts", result.attempts)
            if result.message_id:
                span.set_attribute("email.message_id", result.message_id)
            counts = _outcome_counts(result)
            for name, count in counts.items():
                span.set_attribute(f"email.recipients.{name}", count)
            if not result.ok:
                error = result.error
                span.set_attribute(
                    "error.type", type(error).__name__ if error is not None else status
                )
                span.set_status(
                    self.trace.Status(
                        self.trace.StatusCode.ERROR,
                        _safe(str(error), full=False) if error is not None else status,
                    )
                )
        self.duration.record(
            time.perf_counter() - started,
            {"email.status": status, "email.backend": attributes["email.backend"]},
        )
        return result

    def connect_span(self, backend: Any, tls: str) -> Any:
        return self.tracer.start_span(
            "smtp connect",
            kind=self.trace.SpanKind.CLIENT,
            attributes={
                "server.address": str(backend.host),
                "server.port": int(backend.port),
                "network.transport": "tcp",
                "smtp.tls": tls,
                "smtp.auth": bool(backend.username or backend.password),
            },
        )

    def end_span(self, span: Any, error: BaseException | None) -> None:
        if error is not None:
            span.set_attribute("error.type", type(error).__name__)
            span.set_status(
                self.trace.Status(
                    self.trace.StatusCode.ERROR, _safe(str(error), full=False)
                )
            )
        span.end()


class _Loaded:
    """The instruments in use (None until the first send needs them)."""

    instruments: _Instruments | None = None


def instrument(*, tracer_provider: Any = None, meter_provider: Any = None) -> None:
    """Send asyncmail's spans and metrics to these OpenTelemetry providers
    instead of the global ones (``trace.get_tracer_provider()`` and
    ``metrics.get_meter_provider()``, used when this is never called).

    Raises RuntimeError when OpenTelemetry is not installed.
    """
    if not OTEL_AVAILABLE:
        raise RuntimeError(
            'OpenTelemetry is not installed: pip install "asyncmail[otel]"'
        )
    _Loaded.instruments = _Instruments(tracer_provider, meter_provider)


def _load() -> _Instruments | None:
    """The instruments, made on first use (importing OpenTelemetry then)."""
    instruments = _Loaded.instruments
    if instruments is None and OTEL_AVAILABLE:
        try:
            instruments = _Loaded.instruments = _Instruments()
        except ImportError:  # pragma: no cover - a broken install
            return None
    return instruments
