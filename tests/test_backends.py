"""One behaviour suite, run against every built-in backend.

Each case runs against smtp (a real aiosmtpd server), console (a StringIO),
filebased (a temporary directory), locmem and dummy, and in two flavours: the
async API (on asyncio and on uvloop) and the blocking API (``send_mail``,
``with backend as conn:``, ``backend.blocking()``), called from a worker
thread as synchronous code would call it. What a backend delivered is read
back from where it went: the server's envelopes, the stream, the files, the
outbox. Backend-specific behaviour (locmem copies, console and file output,
filebased configuration errors) follows the shared suite.
"""

from __future__ import annotations

import email.message
import email.policy
import functools
import gc
import importlib
import importlib.util
import io
import os
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from email.parser import BytesParser, Parser
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest

import asyncmail
from asyncmail import (
    BadHeaderError,
    ConfigurationError,
    EmailMessage,
    MailError,
    MessageStatus,
    Outcome,
    SMTPConnectError,
    get_connection,
)
from asyncmail.backends import filebased, locmem, smtp
from asyncmail.backends.base import BackendState, BaseEmailBackend
from asyncmail.backends.console import SEPARATOR
from asyncmail.sync import BlockingBackend
from helpers import unused_port
from smtpserver import SMTPServer

FROM = "sender@example.com"
TO = "to@example.com"
KINDS = ["smtp", "console", "filebased", "locmem", "dummy"]
PATHS = {kind: f"asyncmail.backends.{kind}.EmailBackend" for kind in KINDS}

# -- flavours: async on each event loop, and blocking ------------------------------

_FLAVOURS = [pytest.param(("async", ("asyncio", {})), id="async-asyncio")]
if importlib.util.find_spec("uvloop") is not None:
    _FLAVOURS.append(
        pytest.param(("async", ("asyncio", {"use_uvloop": True})), id="async-uvloop")
    )
# The blocking API runs on the library's own loop: the test's loop is immaterial.
_FLAVOURS.append(pytest.param(("blocking", ("asyncio", {})), id="blocking"))


@pytest.fixture(params=_FLAVOURS)
def flavour(request: pytest.FixtureRequest) -> tuple[str, object]:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def anyio_backend(flavour: tuple[str, object]) -> object:
    """Overrides conftest's: the async flavours choose the loop."""
    return flavour[1]


class Api:
    """The sending API in one flavour. Every method is awaited by the test;
    in the blocking flavour it calls the blocking twin in a worker thread."""

    def __init__(self, blocking: bool) -> None:
        self.blocking = blocking

    async def _call(
        self,
        async_function: Callable[..., Any],
        blocking_function: Callable[..., Any],
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        if self.blocking:
            call = functools.partial(blocking_function, *args, **kwargs)
            return await anyio.to_thread.run_sync(call)
        return await async_function(*args, **kwargs)

    async def send_messages(
        self, backend: BaseEmailBackend | BlockingBackend, messages: Any, **kwargs: Any
    ) -> int:
        if self.blocking:
            view = (
                backend if isinstance(backend, BlockingBackend) else backend.blocking()
            )
            call = functools.partial(view.send_messages, messages, **kwargs)
            return await anyio.to_thread.run_sync(call)
        assert isinstance(backend, BaseEmailBackend)
        return await backend.send_messages(messages, **kwargs)

    async def open(self, backend: BaseEmailBackend) -> bool | None:
        opened: bool | None = await self._call(backend.open, backend.blocking().open)
        return opened

    async def close(self, backend: BaseEmailBackend) -> None:
        await self._call(backend.close, backend.blocking().close)

    @asynccontextmanager
    async def connection(
        self, backend: BaseEmailBackend
    ) -> AsyncIterator[BaseEmailBackend | BlockingBackend]:
        """``async with backend`` or, blocking, ``with backend as conn``."""
        if not self.blocking:
            async with backend:
                yield backend
            return
        conn = await anyio.to_thread.run_sync(backend.__enter__)
        try:
            yield conn
        finally:
            await anyio.to_thread.run_sync(backend.__exit__, None, None, None)

    async def send_mail(self, *args: Any, **kwargs: Any) -> int:
        result: int = await self._call(
            asyncmail.asend_mail, asyncmail.send_mail, *args, **kwargs
        )
        return result

    async def send_mass_mail(self, *args: Any, **kwargs: Any) -> int:
        result: int = await self._call(
            asyncmail.asend_mass_mail, asyncmail.send_mass_mail, *args, **kwargs
        )
        return result

    async def mail_admins(self, *args: Any, **kwargs: Any) -> None:
        await self._call(asyncmail.amail_admins, asyncmail.mail_admins, *args, **kwargs)

    async def mail_managers(self, *args: Any, **kwargs: Any) -> None:
        await self._call(
            asyncmail.amail_managers, asyncmail.mail_managers, *args, **kwargs
        )

    async def send(self, message: EmailMessage, **kwargs: Any) -> int:
        result: int = await self._call(message.asend, message.send, **kwargs)
        return result


@pytest.fixture
def api(flavour: tuple[str, object]) -> Api:
    return Api(blocking=flavour[0] == "blocking")


# -- sinks: where each backend delivers, read back -----------------------------------


@dataclass
class Delivered:
    """One delivered message, parsed; ``envelope`` where the backend has one."""

    message: email.message.EmailMessage
    envelope: list[str] | None

    @property
    def subject(self) -> str:
        return str(self.message["Subject"])


def _parse_text(text: str) -> email.message.EmailMessage:
    parsed = Parser(policy=email.policy.default).parsestr(text)
    assert isinstance(parsed, email.message.EmailMessage)
    return parsed


def _split_console(text: str) -> list[Delivered]:
    """Messages in console/file output: each followed by the separator line."""
    chunks = text.split(f"\n{SEPARATOR}\n")
    assert chunks[-1] == "", "output must end with a separator line"
    return [Delivered(_parse_text(chunk), None) for chunk in chunks[:-1]]


class Sink:
    """A backend kind and where its messages go."""

    kind: str
    shows_content = True  # False for dummy: it delivers nowhere

    @property
    def path(self) -> str:
        return PATHS[self.kind]

    def options(self) -> dict[str, Any]:
        return {}

    def make(self, **extra: Any) -> BaseEmailBackend:
        return get_connection(self.path, **{**self.options(), **extra})

    def mailer(self) -> dict[str, Any]:
        return {"BACKEND": self.path, "OPTIONS": self.options()}

    def install(self, alias: str = "default") -> None:
        """Make this backend the one send_mail & co use (or the named mailer)."""
        asyncmail.configure(MAILERS={alias: self.mailer()})

    def delivered(self) -> list[Delivered]:
        return []

    def subjects(self) -> list[str]:
        return [item.subject for item in self.delivered()]

    def connections(self) -> int | None:
        """Connections opened so far, where the backend has real ones."""
        return None

    def expected_count(self, messages: int, without_recipients: int = 0) -> int:
        """What send_messages returns: dummy counts everything, like Django."""
        return messages - without_recipients


class SMTPSink(Sink):
    kind = "smtp"

    def __init__(self, server: SMTPServer) -> None:
        self.server = server

    def options(self) -> dict[str, Any]:
        return {"host": "127.0.0.1", "port": self.server.port, "timeout": 10}

    def delivered(self) -> list[Delivered]:
        parser = BytesParser(policy=email.policy.default)
        items = []
        for received in self.server.messages:
            # CRLF on the wire (test_smtp checks it); "\n" for the parser.
            parsed = parser.parsebytes(received.data.replace(b"\r\n", b"\n"))
            assert isinstance(parsed, email.message.EmailMessage)
            items.append(Delivered(parsed, list(received.rcpt_tos)))
        return items

    def connections(self) -> int:
        return self.server.sessions


class ConsoleSink(Sink):
    kind = "console"

    def __init__(self) -> None:
        self.stream = io.StringIO()

    def options(self) -> dict[str, Any]:
        return {"stream": self.stream}

    def delivered(self) -> list[Delivered]:
        return _split_console(self.stream.getvalue())


class FileSink(Sink):
    kind = "filebased"

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def options(self) -> dict[str, Any]:
        return {"file_path": str(self.directory)}

    def files(self) -> list[Path]:
        if not self.directory.exists():
            return []
        return sorted(self.directory.iterdir())

    def delivered(self) -> list[Delivered]:
        items: list[Delivered] = []
        for path in self.files():
            items += _split_console(path.read_text(encoding="utf-8"))
        return items


class LocmemSink(Sink):
    kind = "locmem"

    def delivered(self) -> list[Delivered]:
        return [
            Delivered(message.message(), [str(a) for a in message.recipients()])
            for message in asyncmail.outbox
        ]


class DummySink(Sink):
    kind = "dummy"
    shows_content = False

    def expected_count(self, messages: int, without_recipients: int = 0) -> int:
        return messages


@pytest.fixture(params=KINDS)
def sink(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Sink]:
    kind = request.param
    if kind == "smtp":
        with SMTPServer() as server:
            yield SMTPSink(server)
    elif kind == "console":
        yield ConsoleSink()
    elif kind == "filebased":
        yield FileSink(tmp_path / "mail")
    elif kind == "locmem":
        yield LocmemSink()
    else:
        yield DummySink()


def message(subject: str = "Hello", **kwargs: Any) -> EmailMessage:
    kwargs.setdefault("to", [TO])
    return EmailMessage(subject, f"Body of {subject}", FROM, **kwargs)


# -- the shared suite ----------------------------------------------------------------


@pytest.mark.anyio
async def test_send_messages_returns_the_count(api: Api, sink: Sink) -> None:
    messages = [message(f"m{n}") for n in range(3)]
    backend = sink.make()

    assert await api.send_messages(backend, messages) == 3

    for item in messages:
        assert item.result is not None
        assert item.result.status is MessageStatus.SENT
        assert item.result.accepted == [TO]
    if sink.shows_content:
        assert sink.subjects() == ["m0", "m1", "m2"]
        for delivered in sink.delivered():
            assert delivered.message["From"] == FROM
            assert delivered.message["To"] == TO
            assert delivered.message.get_content() == f"Body of {delivered.subject}\n"
    if sink.connections() is not None:
        assert sink.connections() == 1


@pytest.mark.anyio
@pytest.mark.parametrize("source", ["list", "iterator"])
async def test_nothing_to_send_returns_zero_and_opens_nothing(
    api: Api, sink: Sink, source: str
) -> None:
    backend = sink.make()
    messages: Any = [] if source == "list" else iter([])

    assert await api.send_messages(backend, messages) == 0

    assert backend.state is BackendState.CLOSED
    assert sink.delivered() == []
    if sink.connections() is not None:
        assert sink.connections() == 0
    if isinstance(sink, FileSink):
        assert sink.files() == []
    if isinstance(sink, ConsoleSink):
        assert sink.stream.getvalue() == ""


@pytest.mark.anyio
async def test_messages_without_recipients_are_skipped(api: Api, sink: Sink) -> None:
    nobody = message("nobody", to=[])
    blank = message("blank", to=[""], cc=[], bcc=[])  # empty entries don't count
    good = message("good")
    backend = sink.make()

    count = await api.send_messages(backend, [nobody, blank, good])

    assert count == sink.expected_count(3, without_recipients=2)
    for skipped in (nobody, blank):
        assert skipped.result is not None
        assert skipped.result.status is MessageStatus.SKIPPED
        assert skipped.result.ok
        assert not skipped.result.sent
    assert good.result is not None
    assert good.result.status is MessageStatus.SENT
    if sink.shows_content:
        assert sink.subjects() == ["good"]


@pytest.mark.anyio
async def test_send_of_a_message_without_recipients_opens_nothing(
    api: Api, sink: Sink
) -> None:
    # Django's EmailMessage.send(): no recipients, nothing to do, return 0.
    nobody = message("nobody", to=[], connection=sink.make())

    assert await api.send(nobody) == 0

    assert sink.delivered() == []
    if sink.connections() is not None:
        assert sink.connections() == 0


@pytest.mark.anyio
async def test_send_mail_without_recipients_opens_nothing(api: Api, sink: Sink) -> None:
    # Django's send_mail() goes through EmailMessage.send(): 0, even for dummy.
    sink.install()

    assert await api.send_mail("nobody", "body", FROM, []) == 0

    assert sink.delivered() == []
    if sink.connections() is not None:
        assert sink.connections() == 0


@pytest.mark.anyio
async def test_closed_backend_opens_sends_and_closes_each_time(
    api: Api, sink: Sink
) -> None:
    backend = sink.make()

    for n in range(3):
        assert await api.send_messages(backend, [message(f"m{n}")]) == 1
        assert backend.state is BackendState.CLOSED

    if sink.shows_content:
        assert sink.subjects() == ["m0", "m1", "m2"]
    if isinstance(sink, SMTPSink):
        assert sink.connections() == 3
        assert all(raw.endswith(b"QUIT\r\n") for raw in sink.server.recorder.raw)
    if isinstance(sink, FileSink):
        assert len(sink.files()) == 1  # one file per backend instance


@pytest.mark.anyio
async def test_open_backend_stays_open_across_sends(api: Api, sink: Sink) -> None:
    backend = sink.make()

    async with api.connection(backend) as conn:
        assert backend.state is BackendState.OPEN
        assert await api.send_messages(conn, [message("m0")]) == 1
        assert backend.state is BackendState.OPEN
        assert await api.send_messages(conn, [message("m1"), message("m2")]) == 2
        assert await api.send_mail("m3", "b", FROM, [TO], connection=conn) == 1
        assert await api.send_mass_mail([("m4", "b", FROM, [TO])], connection=conn) == 1
        assert backend.state is BackendState.OPEN
    assert backend.state is BackendState.CLOSED

    if sink.shows_content:
        assert sink.subjects() == ["m0", "m1", "m2", "m3", "m4"]
    if isinstance(sink, SMTPSink):
        assert sink.connections() == 1
        assert sink.server.recorder.raw[0].endswith(b"QUIT\r\n")


@pytest.mark.anyio
async def test_explicit_open_and_close(api: Api, sink: Sink) -> None:
    backend = sink.make()

    assert await api.open(backend) is True
    assert await api.open(backend) is False  # already open
    try:
        for n in range(2):
            assert await api.send_messages(backend, [message(f"m{n}")]) == 1
        assert backend.state is BackendState.OPEN
    finally:
        await api.close(backend)
    assert backend.state is BackendState.CLOSED
    await api.close(backend)  # closing a closed backend is a no-op

    if isinstance(sink, SMTPSink):
        assert sink.connections() == 1


@pytest.mark.anyio
async def test_connection_block_closes_on_error(api: Api, sink: Sink) -> None:
    backend = sink.make()

    async def send_then_fail() -> None:
        async with api.connection(backend) as conn:
            await api.send_messages(conn, [message("before the error")])
            raise LookupError("raised in the block")

    with pytest.raises(LookupError, match="raised in the block"):
        await send_then_fail()

    assert backend.state is BackendState.CLOSED
    if sink.shows_content:
        assert sink.subjects() == ["before the error"]
    if isinstance(sink, SMTPSink):
        assert sink.connections() == 1
        assert sink.server.recorder.raw[0].endswith(b"QUIT\r\n")


@pytest.mark.anyio
async def test_send_mail(api: Api, sink: Sink) -> None:
    sink.install()

    with asyncmail.collect_results() as results:
        count = await api.send_mail(
            "Subject", "The body", FROM, [TO, "two@example.com"]
        )

    assert count == 1
    assert len(results) == 1
    assert results[0].status is MessageStatus.SENT
    assert results[0].accepted == [TO, "two@example.com"]
    if sink.shows_content:
        (delivered,) = sink.delivered()
        assert delivered.subject == "Subject"
        assert delivered.message["From"] == FROM
        assert delivered.message["To"] == f"{TO}, two@example.com"
        assert delivered.message.get_content_type() == "text/plain"
        assert delivered.message.get_content() == "The body\n"
        if delivered.envelope is not None:
            assert delivered.envelope == [TO, "two@example.com"]


@pytest.mark.anyio
async def test_send_mail_defaults_the_sender(api: Api, sink: Sink) -> None:
    sink.install()
    asyncmail.configure(DEFAULT_FROM_EMAIL="Site <site@example.com>")

    assert await api.send_mail("Subject", "Body", None, [TO]) == 1

    if sink.shows_content:
        (delivered,) = sink.delivered()
        assert delivered.message["From"] == "Site <site@example.com>"
    if isinstance(sink, SMTPSink):
        assert sink.server.messages[0].mail_from == "site@example.com"


@pytest.mark.anyio
async def test_send_mail_with_html_alternative(api: Api, sink: Sink) -> None:
    sink.install()

    count = await api.send_mail(
        "Subject", "Plain text", FROM, [TO], html_message="<p>HTML text</p>"
    )

    assert count == 1
    if sink.shows_content:
        (delivered,) = sink.delivered()
        assert delivered.message.get_content_type() == "multipart/alternative"
        parts = list(delivered.message.iter_parts())
        assert [part.get_content_type() for part in parts] == [
            "text/plain",
            "text/html",
        ]
        assert parts[0].get_content() == "Plain text\n"
        assert parts[1].get_content() == "<p>HTML text</p>\n"


@pytest.mark.anyio
async def test_send_mass_mail_uses_one_connection(api: Api, sink: Sink) -> None:
    sink.install()
    datatuple = [
        ("First", "one", FROM, [TO]),
        ("Second", "two", "other@example.com", ["a@example.com", "b@example.com"]),
        ("Third", "three", None, ["c@example.com"]),
    ]

    assert await api.send_mass_mail(datatuple) == 3

    if sink.shows_content:
        assert sink.subjects() == ["First", "Second", "Third"]
        senders = [str(item.message["From"]) for item in sink.delivered()]
        assert senders == [FROM, "other@example.com", "webmaster@localhost"]
    if isinstance(sink, SMTPSink):
        assert sink.connections() == 1
        assert len(sink.server.messages) == 3


@pytest.mark.anyio
@pytest.mark.parametrize("setting", ["ADMINS", "MANAGERS"])
async def test_mail_admins_and_managers(api: Api, sink: Sink, setting: str) -> None:
    sink.install()
    asyncmail.configure(
        SERVER_EMAIL="server@example.com",
        EMAIL_SUBJECT_PREFIX="[Site] ",
        **{setting: ["Ada <ada@example.com>", "bob@example.com"]},
    )
    function = api.mail_admins if setting == "ADMINS" else api.mail_managers

    with asyncmail.collect_results() as results:
        returned = await function("Broken", "Traceback", html_message="<b>Trace</b>")

    assert returned is None
    assert [result.status for result in results] == [MessageStatus.SENT]
    assert results[0].accepted == ["ada@example.com", "bob@example.com"]
    if sink.shows_content:
        (delivered,) = sink.delivered()
        assert delivered.subject == "[Site] Broken"
        assert delivered.message["From"] == "server@example.com"
        assert delivered.message["To"] == "Ada <ada@example.com>, bob@example.com"
        assert delivered.message.get_content_type() == "multipart/alternative"
        html = delivered.message.get_body(preferencelist=("html",))
        assert html is not None
        assert html.get_content() == "<b>Trace</b>\n"
    if isinstance(sink, SMTPSink):
        assert sink.server.messages[0].mail_from == "server@example.com"


@pytest.mark.anyio
@pytest.mark.parametrize("setting", ["ADMINS", "MANAGERS"])
async def test_mail_admins_and_managers_without_recipients_send_nothing(
    api: Api, sink: Sink, setting: str
) -> None:
    sink.install()
    function = api.mail_admins if setting == "ADMINS" else api.mail_managers

    with asyncmail.collect_results() as results:
        assert await function("Broken", "Traceback") is None

    assert results == []
    assert sink.delivered() == []
    if sink.connections() is not None:
        assert sink.connections() == 0
    if isinstance(sink, FileSink):
        assert sink.files() == []


@pytest.mark.anyio
async def test_message_send_through_the_default_mailer(api: Api, sink: Sink) -> None:
    sink.install()
    mail = message("via send", cc=["cc@example.com"], bcc=["bcc@example.com"])

    assert await api.send(mail) == 1

    assert mail.result is not None
    assert mail.result.status is MessageStatus.SENT
    assert mail.result.accepted == [TO, "cc@example.com", "bcc@example.com"]
    if sink.shows_content:
        (delivered,) = sink.delivered()
        assert delivered.subject == "via send"
        assert delivered.message["Cc"] == "cc@example.com"
        assert "Bcc" not in delivered.message
        if delivered.envelope is not None:
            assert delivered.envelope == [TO, "cc@example.com", "bcc@example.com"]


@pytest.mark.anyio
async def test_message_send_through_its_connection(api: Api, sink: Sink) -> None:
    # The default backend is SMTP to localhost:25: if the message's own
    # connection were ignored, this would fail or go elsewhere.
    asyncmail.configure(EMAIL_PORT=unused_port(), EMAIL_HOST="127.0.0.1")
    mail = message("own connection", connection=sink.make())

    assert await api.send(mail) == 1

    if sink.shows_content:
        assert sink.subjects() == ["own connection"]


@pytest.mark.anyio
async def test_named_mailers(api: Api, sink: Sink, tmp_path: Path) -> None:
    decoy = io.StringIO()
    default = (
        {"BACKEND": PATHS["console"], "OPTIONS": {"stream": decoy}}
        if isinstance(sink, LocmemSink)
        else {"BACKEND": PATHS["locmem"]}
    )
    asyncmail.configure(MAILERS={"default": default, "alt": sink.mailer()})
    asyncmail.configure(ADMINS=["admin@example.com"])

    assert await api.send_mail("one", "b", FROM, [TO], using="alt") == 1
    assert await api.send_mass_mail([("two", "b", FROM, [TO])], using="alt") == 1
    assert await api.send(message("three"), using="alt") == 1
    await api.mail_admins("four", "b", using="alt")

    if sink.shows_content:
        # (filebased: four backends, four files: order across them is not kept)
        assert sorted(sink.subjects()) == ["four", "one", "three", "two"]
    # Nothing went to the default mailer.
    assert decoy.getvalue() == ""
    if not isinstance(sink, LocmemSink):
        assert asyncmail.outbox == []
    backend = get_connection(using="alt")
    assert backend.alias == "alt"
    assert type(backend).__module__ == f"asyncmail.backends.{sink.kind}"


@pytest.mark.anyio
async def test_failures_are_raised_after_every_message_was_tried(
    api: Api, sink: Sink
) -> None:
    bad = message("bad", headers={"X-Injected": "evil\r\nBcc: victim@example.com"})
    good = message("good")
    backend = sink.make()

    if isinstance(sink, DummySink):
        # The dummy backend renders nothing, so nothing can fail.
        assert await api.send_messages(backend, [bad, good]) == 2
        return
    with pytest.raises(BadHeaderError, match="X-Injected") as info:
        await api.send_messages(backend, [bad, good])

    error = info.value
    assert error.sent == 1
    assert [result.message for result in error.results] == [bad, good]
    assert bad.result is not None
    assert bad.result.status is MessageStatus.FAILED
    assert bad.result.error is error
    assert bad.result.recipients[TO].outcome is Outcome.PERMANENT
    assert good.result is not None
    assert good.result.status is MessageStatus.SENT
    assert sink.subjects() == ["good"]
    if isinstance(sink, SMTPSink):
        assert b"evil" not in sink.server.recorder.wire
        assert b"victim" not in sink.server.recorder.wire


@pytest.mark.anyio
@pytest.mark.parametrize("where", ["call", "backend"])
async def test_fail_silently_returns_the_count_and_records_why(
    api: Api, sink: Sink, where: str
) -> None:
    bad = message("bad", to=["Bad <not an address>"])
    good = message("good")
    backend = sink.make(fail_silently=where == "backend")
    kwargs = {"fail_silently": True} if where == "call" else {}

    with asyncmail.collect_results() as results:
        count = await api.send_messages(backend, [bad, good], **kwargs)

    assert [result.message for result in results] == [bad, good]
    if isinstance(sink, DummySink):
        assert count == 2
        return
    assert count == 1
    assert bad.result is not None
    assert bad.result.status is MessageStatus.FAILED
    assert isinstance(bad.result.error, BadHeaderError)
    assert good.result is not None
    assert good.result.ok
    assert sink.subjects() == ["good"]


@pytest.mark.anyio
async def test_send_mail_fail_silently(api: Api, sink: Sink) -> None:
    sink.install()

    with asyncmail.collect_results() as results:
        count = await api.send_mail("a\nb", "body", FROM, [TO], fail_silently=True)

    (result,) = results
    if isinstance(sink, DummySink):
        assert count == 1
        return
    assert count == 0
    assert isinstance(result.error, BadHeaderError)
    assert result.status is MessageStatus.FAILED
    assert sink.delivered() == []
    with pytest.raises(BadHeaderError, match="Subject"):
        await api.send_mail("a\nb", "body", FROM, [TO])


@pytest.mark.anyio
async def test_results_reach_callbacks_and_collectors(api: Api, sink: Sink) -> None:
    messages = [message(f"m{n}") for n in range(3)]
    seen: list[asyncmail.MessageResult] = []
    backend = sink.make()

    with asyncmail.collect_results() as outer, asyncmail.collect_results() as inner:
        count = await api.send_messages(backend, messages, on_result=seen.append)

    assert count == 3
    assert [result.message for result in seen] == messages
    assert outer == inner == seen
    assert [item.result for item in messages] == seen
    for result in seen:
        assert result.recipients[TO].outcome is Outcome.ACCEPTED
        assert result.attempts == 1


@pytest.mark.anyio
async def test_lazy_sources_of_messages(api: Api, sink: Sink) -> None:
    async def produce() -> AsyncIterator[EmailMessage]:
        for n in range(3):
            yield message(f"m{n}")

    backend = sink.make()
    # (blocking: the async generator is iterated on the library's loop)
    assert await api.send_messages(backend, produce()) == 3
    assert await api.send_messages(backend, (message(f"m{n}") for n in (3, 4))) == 2
    if sink.shows_content:
        assert sink.subjects() == ["m0", "m1", "m2", "m3", "m4"]


# -- configuration (no I/O: not per flavour) -----------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_get_connection_with_dotted_path(kind: str, tmp_path: Path) -> None:
    options: dict[str, Any] = (
        {"file_path": str(tmp_path)} if kind == "filebased" else {}
    )

    backend = get_connection(PATHS[kind], **options)

    module = importlib.import_module(f"asyncmail.backends.{kind}")
    assert type(backend) is module.EmailBackend
    assert backend.state is BackendState.CLOSED
    assert backend.fail_silently is False
    assert get_connection(PATHS[kind], fail_silently=True, **options).fail_silently


@pytest.mark.parametrize("kind", KINDS)
def test_email_backend_setting_chooses_the_default(kind: str, tmp_path: Path) -> None:
    asyncmail.configure(EMAIL_BACKEND=PATHS[kind], EMAIL_FILE_PATH=str(tmp_path))

    assert type(get_connection()).__module__ == f"asyncmail.backends.{kind}"


@pytest.mark.parametrize("kind", KINDS)
def test_unknown_backend_option_is_an_error(kind: str, tmp_path: Path) -> None:
    options: dict[str, Any] = (
        {"file_path": str(tmp_path)} if kind == "filebased" else {}
    )

    with pytest.raises(ConfigurationError, match=r"unknown option.*hots"):
        get_connection(PATHS[kind], hots="smtp.example.com", **options)


@pytest.mark.parametrize(
    ("path", "why"),
    [
        ("EmailBackend", "not a dotted path"),
        ("asyncmail.backends.nosuch.EmailBackend", "Could not import"),
        ("asyncmail.backends.smtp.NoSuchBackend", "Could not import"),
        ("no_such_package_anywhere.EmailBackend", "Could not import"),
        ("asyncmail.message.EmailMessage", "not an asyncmail backend"),
        ("asyncmail.backends.smtp.NOT_GIVEN", "not an asyncmail backend"),
    ],
)
def test_bad_backend_paths(path: str, why: str) -> None:
    with pytest.raises(ConfigurationError, match=why) as info:
        get_connection(path)
    assert isinstance(info.value, ValueError)
    # As a setting it fails at once, when configured (not at the first send).
    with (
        pytest.raises(ConfigurationError, match=why),
        asyncmail.settings.override(EMAIL_BACKEND=path),
    ):
        get_connection()


def test_unknown_mailer_is_an_error() -> None:
    asyncmail.configure(MAILERS={"bulk": {"BACKEND": PATHS["dummy"]}})

    with pytest.raises(ConfigurationError, match=r"'nope'.*known: bulk"):
        get_connection(using="nope")
    with pytest.raises(ConfigurationError, match="not both"):
        get_connection(PATHS["dummy"], using="bulk")
    with pytest.raises(ConfigurationError, match="'nope'"):
        asyncmail.send_mail("s", "b", FROM, [TO], using="nope")


def test_mailer_options_and_call_options() -> None:
    asyncmail.configure(
        EMAIL_HOST="settings.example.com",
        MAILERS={
            "relay": {
                "BACKEND": PATHS["smtp"],
                "OPTIONS": {"host": "mailer.example.com", "port": 2525},
            }
        },
    )

    backend = get_connection(using="relay", port=2626)

    assert isinstance(backend, smtp.EmailBackend)
    assert (backend.host, backend.port) == ("mailer.example.com", 2626)


# -- failing to open -----------------------------------------------------------------


class HalfOpenBackend(locmem.EmailBackend):
    """Marks itself open, then fails: what a backend whose connect fails
    halfway through looks like."""

    async def open(self) -> bool | None:
        await super().open()
        raise SMTPConnectError("failed halfway")


@pytest.mark.anyio
async def test_backend_that_fails_to_open_is_closed(api: Api) -> None:
    backend = HalfOpenBackend()

    with pytest.raises(SMTPConnectError, match="halfway"):
        async with api.connection(backend):
            pytest.fail("the block must not run")
    assert backend.state is BackendState.CLOSED

    mail = message("never")
    with pytest.raises(SMTPConnectError, match="halfway") as info:
        await api.send_messages(backend, [mail])
    assert backend.state is BackendState.CLOSED
    assert info.value.sent == 0
    assert mail.result is not None
    assert mail.result.recipients[TO].outcome is Outcome.TEMPORARY
    assert asyncmail.outbox == []


@pytest.mark.anyio
async def test_smtp_backend_that_cannot_connect_is_closed(api: Api) -> None:
    backend = smtp.EmailBackend(host="127.0.0.1", port=unused_port())

    with pytest.raises(SMTPConnectError) as info:
        async with api.connection(backend):
            pytest.fail("the block must not run")

    assert isinstance(info.value, ConnectionError)
    assert backend.state is BackendState.CLOSED
    assert backend.pool is None


@pytest.mark.anyio
async def test_filebased_backend_that_cannot_open_is_closed(
    api: Api, tmp_path: Path
) -> None:
    not_a_directory = tmp_path / "file"
    not_a_directory.write_text("in the way")
    backend = get_connection(PATHS["filebased"], file_path=not_a_directory)

    with pytest.raises(ConfigurationError, match="not a directory"):
        async with api.connection(backend):
            pytest.fail("the block must not run")

    assert backend.state is BackendState.CLOSED
    assert not_a_directory.read_text() == "in the way"


# -- locmem --------------------------------------------------------------------------


@pytest.mark.anyio
async def test_locmem_keeps_deep_copies(api: Api) -> None:
    mail = message("original", cc=["cc@example.com"], headers={"X-Tag": "one"})
    mail.attach("notes.txt", "first version", "text/plain")
    backend = get_connection(PATHS["locmem"])

    assert await api.send_messages(backend, [mail]) == 1
    mail.subject = "changed"
    mail.to.append("late@example.com")
    mail.extra_headers["X-Tag"] = "two"
    mail.attachments.clear()
    mail.body = "changed"

    (kept,) = asyncmail.outbox
    assert kept is not mail
    assert kept.subject == "original"
    assert kept.to == [TO]
    assert kept.extra_headers == {"X-Tag": "one"}
    assert kept.body == "Body of original"
    assert kept.attachments == [("notes.txt", "first version", "text/plain")]
    assert kept.message()["X-Tag"] == "one"


@pytest.mark.anyio
@pytest.mark.parametrize(
    "flavour", [p for p in _FLAVOURS if p.values[0][0] == "async"], indirect=True
)
async def test_locmem_outbox_under_concurrent_tasks(flavour: Any) -> None:
    asyncmail.configure(EMAIL_BACKEND=PATHS["locmem"])
    subjects = {f"task {n}" for n in range(100)}

    async with anyio.create_task_group() as group:
        for subject in subjects:
            group.start_soon(asyncmail.asend_mail, subject, "b", FROM, [TO])

    assert len(asyncmail.outbox) == 100
    assert {mail.subject for mail in asyncmail.outbox} == subjects


def test_locmem_outbox_under_threads() -> None:
    asyncmail.configure(EMAIL_BACKEND=PATHS["locmem"])
    errors: list[BaseException] = []
    start = threading.Barrier(20)

    def worker(number: int) -> None:
        try:
            start.wait()
            for round_ in range(5):
                subject = f"thread {number} round {round_}"
                assert asyncmail.send_mail(subject, "b", FROM, [TO]) == 1
            with get_connection() as conn:
                conn.send_messages([message(f"thread {number} block")])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert errors == []
    expected = {f"thread {n} round {r}" for n in range(20) for r in range(5)}
    expected |= {f"thread {n} block" for n in range(20)}
    assert len(asyncmail.outbox) == len(expected)
    assert {mail.subject for mail in asyncmail.outbox} == expected


def test_locmem_outbox_may_be_replaced() -> None:
    # Django's test runner assigns a fresh list; the backend must follow it.
    old = asyncmail.outbox
    asyncmail.outbox = []
    try:
        asyncmail.send_mail("s", "b", FROM, [TO], connection=locmem.EmailBackend())
        assert [mail.subject for mail in asyncmail.outbox] == ["s"]
        assert old == []
    finally:
        asyncmail.outbox = old


# -- console -------------------------------------------------------------------------


@pytest.mark.anyio
async def test_console_output(api: Api) -> None:
    stream = io.StringIO()
    backend = get_connection(PATHS["console"], stream=stream)
    mail = EmailMessage(
        "Grüße",
        "Grüße aus Köln\n.leading dot\n",
        "Ada <ada@example.com>",
        [TO],
        bcc=["hidden@example.com"],
        headers={"Message-ID": "<fixed@example.com>", "Date": "Mon, 1 Jan 2024"},
    )

    assert await api.send_messages(backend, [mail, message("second")]) == 2

    text = stream.getvalue()
    first, second, rest = text.split(SEPARATOR + "\n")
    assert rest == ""
    # What would go on the wire, with "\n" line endings, nothing dot-stuffed.
    expected = mail.as_bytes().decode().replace("\r\n", "\n")
    assert first == expected + "\n"
    assert "Grüße aus Köln\n.leading dot\n" in first
    assert "\r" not in text
    assert "hidden@example.com" not in text
    assert "Subject: second" in second


@pytest.mark.anyio
async def test_console_writes_to_stdout_by_default(
    api: Api, capsys: pytest.CaptureFixture[str]
) -> None:
    backend = get_connection(PATHS["console"])

    assert await api.send_messages(backend, [message("to stdout")]) == 1

    out = capsys.readouterr().out
    assert "Subject: to stdout\n" in out
    assert out.endswith(SEPARATOR + "\n")


@pytest.mark.anyio
async def test_console_stream_failure_is_a_mail_error(api: Api) -> None:
    stream = io.StringIO()
    stream.close()
    backend = get_connection(PATHS["console"], stream=stream)

    with pytest.raises(MailError, match="console stream") as info:
        await api.send_messages(backend, [message("lost")])
    assert info.value.sent == 0


# -- filebased -----------------------------------------------------------------------


@pytest.mark.anyio
async def test_filebased_one_file_per_backend_instance(
    api: Api, tmp_path: Path
) -> None:
    first = filebased.EmailBackend(file_path=tmp_path)
    second = filebased.EmailBackend(file_path=tmp_path)
    assert first.filename is None

    await api.send_messages(first, [message("a1")])
    await api.send_messages(first, [message("a2"), message("a3")])
    async with api.connection(first) as conn:
        await api.send_messages(conn, [message("a4")])
    await api.send_messages(second, [message("b1")])

    files = FileSink(tmp_path).files()
    assert first.filename is not None
    assert second.filename is not None
    assert files == sorted([first.filename, second.filename])
    assert _subjects_in(first.filename) == ["a1", "a2", "a3", "a4"]
    assert _subjects_in(second.filename) == ["b1"]


@pytest.mark.anyio
async def test_filebased_backends_never_share_a_file(api: Api, tmp_path: Path) -> None:
    # Backends made and dropped one after another: Python reuses the ids of
    # freed objects, so a file named after id(backend) would be shared.
    for number in range(30):
        backend = get_connection(PATHS["filebased"], file_path=tmp_path)
        await api.send_messages(backend, [message(f"m{number:02}")])
        del backend
        gc.collect()

    files = FileSink(tmp_path).files()
    assert len(files) == 30
    assert sorted(subject for path in files for subject in _subjects_in(path)) == [
        f"m{number:02}" for number in range(30)
    ]


def _subjects_in(path: Path) -> list[str]:
    return [item.subject for item in _split_console(path.read_text("utf-8"))]


@pytest.mark.anyio
async def test_filebased_content_is_the_console_format(
    api: Api, tmp_path: Path
) -> None:
    backend = filebased.EmailBackend(file_path=tmp_path / "new" / "dir")
    mail = message(
        "content",
        headers={"Date": "Mon, 1 Jan 2024 00:00:00 +0000", "Message-ID": "<c@x.y>"},
    )
    mail.body = "Grüße\n.dot\n"

    assert await api.send_messages(backend, [mail]) == 1

    assert backend.filename is not None
    assert backend.filename.parent == tmp_path / "new" / "dir"
    content = backend.filename.read_text(encoding="utf-8")
    assert content == backend.format(mail)
    assert content.startswith("Content-Type: text/plain")
    assert "Grüße\n.dot\n" in content


def test_filebased_uses_the_setting(tmp_path: Path) -> None:
    asyncmail.configure(EMAIL_FILE_PATH=str(tmp_path / "from-setting"))

    backend = filebased.EmailBackend()
    asyncmail.send_mail("s", "b", FROM, [TO], connection=backend)

    assert backend.file_path == tmp_path / "from-setting"
    (written,) = (tmp_path / "from-setting").iterdir()
    assert "Subject: s\n" in written.read_text()


def test_filebased_needs_a_path() -> None:
    with pytest.raises(ConfigurationError, match=r"needs a directory.*EMAIL_FILE_PATH"):
        get_connection(PATHS["filebased"])
    with pytest.raises(ConfigurationError, match="must be a str or path"):
        get_connection(PATHS["filebased"], file_path=42)


@pytest.mark.anyio
async def test_filebased_path_that_is_a_file(api: Api, tmp_path: Path) -> None:
    in_the_way = tmp_path / "mail.log"
    in_the_way.write_text("not a directory")
    backend = get_connection(PATHS["filebased"], file_path=in_the_way)
    mail = message("lost")

    with pytest.raises(ConfigurationError, match="exists and is not a directory"):
        await api.send_messages(backend, [mail])
    assert mail.result is not None
    assert mail.result.status is MessageStatus.FAILED
    # fail_silently records the reason instead of raising it
    assert await api.send_messages(backend, [mail], fail_silently=True) == 0
    assert isinstance(mail.result.error, ConfigurationError)
    assert in_the_way.read_text() == "not a directory"


@pytest.mark.anyio
async def test_filebased_path_that_cannot_be_created(api: Api, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    backend = get_connection(PATHS["filebased"], file_path=tmp_path / "file" / "sub")

    with pytest.raises(ConfigurationError, match="Could not create"):
        await api.send_messages(backend, [message("lost")])


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0,
    reason="file permissions do not bind root",
)
@pytest.mark.anyio
async def test_filebased_path_that_is_not_writable(api: Api, tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        backend = get_connection(PATHS["filebased"], file_path=locked)
        with pytest.raises(ConfigurationError, match="not writable"):
            await api.send_messages(backend, [message("lost")])
    finally:
        locked.chmod(0o700)
    assert list(locked.iterdir()) == []
