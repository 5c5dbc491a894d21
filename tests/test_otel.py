"""OpenTelemetry: spans per message and per SMTP connection, counters and a
latency histogram, read back from the SDK's in-memory exporters; and no
cost (nothing imported, nothing wrapped) when it is not installed."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import asyncmail
from asyncmail import EmailMessage, observability
from asyncmail.backends.smtp import EmailBackend
from asyncmail.testing import SMTPTestServer
from helpers import unused_port


class Telemetry:
    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    def spans(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.exporter.get_finished_spans() if s.name == name]

    def points(self, metric: str) -> list[Any]:
        data = self.reader.get_metrics_data()
        found = []
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for item in scope.metrics:
                    if item.name == metric:
                        found.extend(item.data.data_points)
        return found

    def counted(self, metric: str, attribute: str) -> dict[str, int]:
        return {
            point.attributes[attribute]: point.value for point in self.points(metric)
        }


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    telemetry = Telemetry()
    observability.instrument(
        tracer_provider=telemetry.tracer_provider,
        meter_provider=telemetry.meter_provider,
    )
    try:
        yield telemetry
    finally:
        observability._Loaded.instruments = None  # back to the global providers
        telemetry.meter_provider.shutdown()
        telemetry.tracer_provider.shutdown()


def backend_for(server: SMTPTestServer, **options: Any) -> EmailBackend:
    return EmailBackend(host="127.0.0.1", port=server.port, timeout=10, **options)


def test_a_span_per_message_and_per_connection(telemetry: Telemetry) -> None:
    tracer = telemetry.tracer_provider.get_tracer("test")
    with SMTPTestServer() as server:
        messages = [
            EmailMessage(f"n{i}", "x", None, [f"u{i}@example.com", "c@example.com"])
            for i in range(3)
        ]
        with tracer.start_as_current_span("request") as parent:
            assert backend_for(server).blocking().send_messages(messages) == 3
    sends = telemetry.spans("email send")
    assert len(sends) == 3
    by_id = {span.attributes["email.message_id"]: span for span in sends}
    for message in messages:
        assert message.result is not None
        span = by_id[message.result.message_id]
        assert span.kind is SpanKind.CLIENT
        assert span.parent is not None
        assert span.parent.span_id == parent.get_span_context().span_id
        assert span.attributes["server.address"] == "127.0.0.1"
        assert span.attributes["server.port"] == server.port
        assert span.attributes["email.status"] == "sent"
        assert span.attributes["email.recipients.count"] == 2
        assert span.attributes["email.recipients.accepted"] == 2
        assert span.attributes["email.attempts"] == 1
        assert span.status.status_code is StatusCode.UNSET
    [connect] = telemetry.spans("smtp connect")
    assert connect.kind is SpanKind.CLIENT
    assert connect.attributes["server.port"] == server.port
    assert connect.attributes["network.transport"] == "tcp"
    assert connect.attributes["smtp.tls"] == "no TLS"
    assert connect.attributes["smtp.auth"] is False
    assert connect.parent is not None
    # The connection is made for the first message that needs it: its span
    # nests under that message's send (or the request), in the same trace.
    assert connect.context.trace_id == parent.get_span_context().trace_id
    assert connect.parent.span_id in {
        parent.get_span_context().span_id,
        *(span.context.span_id for span in sends),
    }


def test_failures_mark_spans_and_count(telemetry: Telemetry) -> None:
    refusal = "550 5.1.1 <bob@example.com>: no such user"
    with SMTPTestServer(refuse={"bob@example.com": refusal}) as server:
        good = EmailMessage("ok", "x", None, ["ada@example.com"])
        partial = EmailMessage("p", "x", None, ["ada@example.com", "bob@example.com"])
        refused = EmailMessage("r", "x", None, ["bob@example.com"])
        backend = backend_for(server)
        sent = backend.blocking().send_messages(
            [good, partial, refused], fail_silently=True
        )
        assert sent == 2
    spans = {
        span.attributes["email.status"]: span for span in telemetry.spans("email send")
    }
    assert set(spans) == {"sent", "partial", "failed"}
    for status in ("partial", "failed"):
        span = spans[status]
        assert span.status.status_code is StatusCode.ERROR
        assert span.attributes["error.type"] == "RecipientsRefusedError"
        assert "bob@" not in (span.status.description or "")  # masked
    assert spans["partial"].attributes["email.recipients.permanent"] == 1
    assert telemetry.counted("asyncmail.messages", "email.status") == {
        "sent": 1,
        "partial": 1,
        "failed": 1,
    }
    assert telemetry.counted("asyncmail.recipients", "email.outcome") == {
        "accepted": 2,
        "permanent": 2,
    }
    [histogram] = telemetry.points("asyncmail.send.duration")[:1]
    durations = telemetry.points("asyncmail.send.duration")
    assert sum(point.count for point in durations) == 3
    assert all(point.sum >= 0 for point in durations)
    assert (
        histogram.attributes["email.backend"] == "asyncmail.backends.smtp.EmailBackend"
    )


def test_a_failed_connection_is_an_error_span(telemetry: Telemetry) -> None:
    backend = EmailBackend(host="127.0.0.1", port=unused_port(), retries=0, timeout=5)
    message = EmailMessage("Hi", "x", None, ["ada@example.com"])
    assert backend.blocking().send_messages([message], fail_silently=True) == 0
    [connect] = telemetry.spans("smtp connect")
    assert connect.status.status_code is StatusCode.ERROR
    assert connect.attributes["error.type"] == "SMTPConnectError"
    assert telemetry.counted("asyncmail.messages", "email.status") == {"failed": 1}


def test_local_backends_get_internal_spans(
    telemetry: Telemetry, mailoutbox: asyncmail.testing.Outbox
) -> None:
    asyncmail.send_mail("Hi", "x", None, ["ada@example.com"])
    [span] = telemetry.spans("email send")
    assert span.kind is SpanKind.INTERNAL
    assert span.attributes["email.backend"] == "asyncmail.testing.outbox.CaptureBackend"
    assert "server.address" not in span.attributes
    mailoutbox.assert_sent(count=1)


def test_the_global_providers_are_used_by_default() -> None:
    # Not instrumented explicitly: the API's global (here: no-op) tracer, and
    # sending works as ever.
    with SMTPTestServer() as server:
        message = EmailMessage("Hi", "x", None, ["ada@example.com"])
        assert backend_for(server).blocking().send_messages([message]) == 1
    assert isinstance(
        trace.get_tracer_provider(),
        trace.ProxyTracerProvider | trace.NoOpTracerProvider,
    )


ABSENT = """
import importlib.abc, sys

class Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "opentelemetry":
            raise ModuleNotFoundError(f"No module named {name!r}")
        return None

sys.meta_path.insert(0, Hide())
import asyncmail
from asyncmail import observability
from asyncmail.backends.base import BaseEmailBackend

assert observability.OTEL_AVAILABLE is False
assert not hasattr(BaseEmailBackend.deliver_or_fail, "__wrapped__")  # not wrapped
asyncmail.configure(EMAIL_BACKEND="asyncmail.backends.locmem.EmailBackend")
assert asyncmail.send_mail("Hi", "x", None, ["ada@example.com"]) == 1
assert not any(name.startswith("opentelemetry") for name in sys.modules)
try:
    observability.instrument()
except RuntimeError as exc:
    assert "asyncmail[otel]" in str(exc)
else:
    raise AssertionError("instrument() without OpenTelemetry")
print("ok")
"""

LAZY = """
import sys
import asyncmail
assert not any(n.startswith("opentelemetry") for n in sys.modules), "imported early"
asyncmail.configure(EMAIL_BACKEND="asyncmail.backends.locmem.EmailBackend")
asyncmail.send_mail("Hi", "x", None, ["ada@example.com"])
assert "opentelemetry.trace" in sys.modules
print("ok")
"""


GLOBAL_PROVIDER_LATER = """
import asyncmail
from asyncmail import observability
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

asyncmail.configure(EMAIL_BACKEND="asyncmail.backends.locmem.EmailBackend")
asyncmail.send_mail("before", "x", None, ["ada@example.com"])
instruments = observability._Loaded.instruments
# Nothing installed yet: spans are skipped, cheaply (the API's globals are
# read directly: this fails if a new OpenTelemetry API renames them).
assert instruments._fast and not instruments.live()

exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)
asyncmail.send_mail("after", "x", None, ["ada@example.com"])
assert instruments.live()
[span] = exporter.get_finished_spans()
assert span.name == "email send"
print("ok")
"""

SDK_DISABLED = """
import os
assert os.environ["OTEL_SDK_DISABLED"] == "true"
from asyncmail import observability
from asyncmail.backends.base import BaseEmailBackend
assert observability.OTEL_AVAILABLE is False
assert not hasattr(BaseEmailBackend.deliver_or_fail, "__wrapped__")
print("ok")
"""


@pytest.mark.parametrize(
    "script",
    [ABSENT, LAZY, GLOBAL_PROVIDER_LATER, SDK_DISABLED],
    ids=["absent", "lazy", "global-provider-later", "sdk-disabled"],
)
def test_no_cost_when_not_installed_and_lazy_when_it_is(script: str) -> None:
    environment = dict(os.environ)
    environment.pop("OTEL_SDK_DISABLED", None)
    if script is SDK_DISABLED:
        environment["OTEL_SDK_DISABLED"] = "true"
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", script],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
