"""OpenTelemetry: spans and metrics, made on the first send that needs them
(the API is looked up once, at import, and never imported before then)."""

from __future__ import annotations

import importlib.util
import os
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from ..backends.base import BaseEmailBackend
    from ..message import BaseMessage as EmailMessage  # any sendable message
    from ..results import MessageResult
from .logs import _outcome_counts, _safe


def _otel_installed() -> bool:
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False  # OpenTelemetry's own switch: off for every signal
    try:
        return importlib.util.find_spec("opentelemetry") is not None
    except (ImportError, ValueError):  # hidden, or a broken install
        return False


#: Whether the OpenTelemetry API is installed (looked up once, not imported).
OTEL_AVAILABLE: Final = _otel_installed()

# A delivery as the spans see it: (backend, message) -> result.
Deliver = Callable[[Any, "EmailMessage"], Awaitable["MessageResult"]]


class _Instruments:
    """The tracer and meter instruments (made once, on the first send)."""

    def __init__(self, tracer_provider: Any = None, meter_provider: Any = None) -> None:
        from opentelemetry import metrics, trace

        from .. import __version__

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
