"""Regression tests for the review's findings (commit "Fix the review's
findings in the send path and lifecycle"), one test or a few per fix.

Each scenario runs against a real server (the scripted one, or nothing
listening at all) and checks both what the server received and what the
caller was told in ``message.result``. Every test here fails on the code
before the fix; where a counterpart guards the fix against going too far,
its docstring says so.
"""

from __future__ import annotations

import gc
import random
import re
import socket
import threading
import uuid
import weakref
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest

import asyncmail
import asyncmail.dnsname
from asyncmail import (
    ConfigurationError,
    DeliveryUnknownError,
    EmailMessage,
    EmailMultiAlternatives,
    InvalidMessageError,
    MessageRefusedError,
    MessageResult,
    MessageStatus,
    Outcome,
    SMTPConnectError,
    SMTPNotSupportedError,
    SMTPResponseError,
    SMTPTimeoutError,
)
from asyncmail.backends.base import BackendState
from asyncmail.backends.smtp import EmailBackend
from asyncmail.message import STREAM_THRESHOLD
from asyncmail.testing import Outbox
from scriptserver import DEFAULT_EXTENSIONS, Act, ScriptServer, reply, settle
from smtpserver import unused_port

pytestmark = pytest.mark.anyio

TEMPORARY, PERMANENT = Outcome.TEMPORARY, Outcome.PERMANENT


# -- helpers -------------------------------------------------------------------


def message(n: int = 1, to: Sequence[str] | None = None, **kwargs: Any) -> EmailMessage:
    """Message *n*: from sender<n>@, to rcpt<n>@, with a unique Message-ID."""
    return EmailMessage(
        f"Message {n}",
        f"Body of message {n}.\n",
        kwargs.pop("from_email", f"sender{n}@example.com"),
        list(to or [f"rcpt{n}@example.com"]),
        headers={
            "Message-ID": f"<{uuid.uuid4().hex}.{n}@regressions.example>",
            **kwargs.pop("headers", {}),
        },
        **kwargs,
    )


def make_backend(server: ScriptServer, **options: Any) -> EmailBackend:
    settings: dict[str, Any] = {
        "timeout": 10.0,
        "retries": 0,
        "retry_backoff": 0.01,
        "local_hostname": "client.example",
    }
    settings.update(options)
    return EmailBackend(host=server.host, port=server.port, **settings)


def scripted(*, pipelining: bool = True, smtputf8: bool = True) -> ScriptServer:
    extensions = tuple(
        e
        for e in DEFAULT_EXTENSIONS
        if (pipelining or e != "PIPELINING") and (smtputf8 or e != "SMTPUTF8")
    )
    return ScriptServer(extensions)


def result_of(msg: EmailMessage) -> MessageResult:
    assert msg.result is not None
    return msg.result


def outcomes(msg: EmailMessage) -> dict[str, Outcome]:
    return {a: r.outcome for a, r in result_of(msg).recipients.items()}


def mail_commands(server: ScriptServer) -> list[str]:
    return [c for c in server.commands if c.upper().startswith("MAIL FROM")]


PIPELINING = pytest.mark.parametrize(
    "pipelining", [True, False], ids=["pipelined", "sequential"]
)


# -- 1. SMTPUTF8 from the envelope ---------------------------------------------

UTF8_CASES = pytest.mark.parametrize(
    "where", ["bcc", "hidden-from"], ids=["non-ascii-bcc", "non-ascii-envelope-from"]
)


def utf8_message(where: str) -> EmailMessage:
    """Only the envelope has a non-ASCII local part: the headers are ASCII."""
    if where == "bcc":
        return message(1, bcc=["jörg@example.com"])
    return message(1, from_email="jörg@example.com", headers={"From": "a@example.com"})


@UTF8_CASES
async def test_non_ascii_envelope_address_uses_smtputf8(where: str) -> None:
    with scripted() as server:
        msg = utf8_message(where)
        assert msg.as_bytes().isascii()  # nothing in the headers needs it

        assert await make_backend(server).send_messages([msg]) == 1

    (command,) = mail_commands(server)
    assert command.endswith(" SMTPUTF8")
    (accepted,) = server.accepted
    if where == "bcc":
        assert accepted.rcpt_tos == ("rcpt1@example.com", "jörg@example.com")
        assert "jörg".encode() not in accepted.data  # Bcc stays hidden
    else:
        assert accepted.mail_from == "jörg@example.com"
        assert b"From: a@example.com\r\n" in accepted.data
    assert result_of(msg).status is MessageStatus.SENT


@UTF8_CASES
async def test_non_ascii_envelope_address_without_smtputf8(where: str) -> None:
    with scripted(smtputf8=False) as server:
        msg = utf8_message(where)
        backend = make_backend(server, retries=2)

        with pytest.raises(SMTPNotSupportedError, match="SMTPUTF8") as info:
            await backend.send_messages([msg])
        assert not isinstance(info.value, UnicodeError)
        assert await backend.send_messages([msg], fail_silently=True) == 0

    assert info.value.sent == 0
    assert server.count("MAIL") == 0  # refused before anything was sent
    assert server.accepted == []
    result = result_of(msg)
    assert isinstance(result.error, SMTPNotSupportedError)
    assert set(outcomes(msg).values()) == {PERMANENT}
    assert result.attempts == 1


# -- 2. a streamed attachment, the connection lost mid-body ---------------------

STREAMED = random.Random(20261124).randbytes(3 * STREAM_THRESHOLD)


@pytest.fixture
def streamed_file(tmp_path: Path) -> Path:
    path = tmp_path / "big.bin"
    path.write_bytes(STREAMED)
    return path


@pytest.mark.parametrize("source", ["bytes", "attach_file"])
@pytest.mark.parametrize("retries", [0, 1])
async def test_streamed_attachment_connection_lost_mid_body(
    source: str, retries: int, streamed_file: Path
) -> None:
    with scripted() as server:
        server.on(".", Act(body_bytes=1000))  # reads a little, hangs up
        msg = message(1)
        if source == "bytes":
            msg.attach("big.bin", STREAMED, "application/octet-stream")
        else:
            msg.attach_file(streamed_file)
        assert msg.render().streamed
        backend = make_backend(server, retries=retries)

        sent = await backend.send_messages([msg], fail_silently=True)

    result = result_of(msg)
    if retries:
        assert sent == 1
        assert result.status is MessageStatus.SENT
        assert result.attempts == 2
        (accepted,) = server.accepted  # once, over a new session
        assert len(server.sessions) == 2
        assert server.sessions[1].accepted == [accepted]
        assert b'filename="big.bin"' in accepted.data
    else:
        assert sent == 0
        assert server.accepted == []
        assert outcomes(msg) == {"rcpt1@example.com": TEMPORARY}
        assert isinstance(result.error, SMTPConnectError)
        assert "could not be" not in str(result.error)
        assert result.status is MessageStatus.FAILED


# -- 3. content of the wrong type fails its message alone ----------------------

BAD_CONTENT = pytest.mark.parametrize(
    ("kind", "raw_error"),
    [("wrong-type", TypeError), ("undecodable", UnicodeDecodeError)],
)


def bad_message(kind: str) -> EmailMultiAlternatives:
    msg = EmailMultiAlternatives(
        "Message 2", "Body.\n", "sender2@example.com", ["rcpt2@example.com"]
    )
    if kind == "wrong-type":
        msg.attach("x.bin", 12345, "application/octet-stream")  # type: ignore[arg-type]
    else:
        msg.attach_alternative(b"\xff\xfe<p>hi</p>", "text/html")
    return msg


@BAD_CONTENT
def test_bad_content_still_raises_directly_outside_backends(
    kind: str, raw_error: type[Exception]
) -> None:
    """The counterpart: only backends turn the error into an
    InvalidMessageError; the message API raises it as it always did."""
    with pytest.raises(raw_error) as info:
        bad_message(kind).as_bytes()
    assert not isinstance(info.value, InvalidMessageError)


@BAD_CONTENT
@pytest.mark.parametrize("max_connections", [1, 3])
@pytest.mark.parametrize("silent", [True, False], ids=["silent", "raises"])
async def test_message_with_bad_content_fails_alone(
    kind: str, raw_error: type[Exception], max_connections: int, silent: bool
) -> None:
    with scripted() as server:
        messages = [message(1), bad_message(kind), message(3)]
        backend = make_backend(server, max_connections=max_connections)

        if silent:
            assert await backend.send_messages(messages, fail_silently=True) == 2
        else:
            with pytest.raises(InvalidMessageError) as info:
                await backend.send_messages(messages)
            assert info.value.sent == 2
            assert info.value is messages[1].result.error  # type: ignore[union-attr]
            assert list(info.value.results) == [m.result for m in messages]

    assert sorted(item.mail_from for item in server.accepted) == [
        "sender1@example.com",
        "sender3@example.com",
    ]
    assert "sender2@example.com" not in " ".join(server.commands)
    bad = result_of(messages[1])
    assert bad.status is MessageStatus.FAILED
    assert isinstance(bad.error, InvalidMessageError)
    assert isinstance(bad.error.__cause__, raw_error)
    assert outcomes(messages[1]) == {"rcpt2@example.com": PERMANENT}
    assert result_of(messages[0]).ok
    assert result_of(messages[2]).ok


# -- 4. a missing ssl_certfile --------------------------------------------------

TLS_MODES = pytest.mark.parametrize("mode", ["use_tls", "use_ssl"])


def tls_backend(
    server: ScriptServer, mode: str, tmp_path: Path, **options: Any
) -> EmailBackend:
    return make_backend(
        server, ssl_certfile=str(tmp_path / "missing.pem"), **{mode: True}, **options
    )


@TLS_MODES
async def test_missing_certfile_is_a_configuration_error(
    mode: str, tmp_path: Path
) -> None:
    with ScriptServer((*DEFAULT_EXTENSIONS, "STARTTLS")) as server:
        backend = tls_backend(server, mode, tmp_path)
        msg = message(1)

        with pytest.raises(ConfigurationError, match="ssl_certfile") as info:
            await backend.send_messages([msg])
        assert not isinstance(info.value, OSError)
        assert backend.pool is None
        assert backend.state is BackendState.CLOSED
        assert backend.open_error is None  # raised: the caller has it
        # Not stuck half-open: opening again tries again, and fails again.
        with pytest.raises(ConfigurationError):
            await backend.open()
        assert backend.pool is None

    assert server.sessions == []  # the context fails before connecting
    assert info.value.sent == 0
    assert result_of(msg).error is info.value
    assert outcomes(msg) == {"rcpt1@example.com": PERMANENT}


@TLS_MODES
async def test_missing_certfile_fails_silently(mode: str, tmp_path: Path) -> None:
    with ScriptServer((*DEFAULT_EXTENSIONS, "STARTTLS")) as server:
        backend = tls_backend(server, mode, tmp_path, fail_silently=True)
        msg = message(1)

        assert await backend.send_messages([msg]) == 0
        error = result_of(msg).error  # send_messages connects per message
        assert isinstance(error, ConfigurationError)
        assert backend.pool is None
        assert await backend.open() is None  # tried again, failed again
        assert isinstance(backend.open_error, ConfigurationError)
        assert backend.pool is None

    assert server.sessions == []
    assert result_of(msg).error is error
    assert outcomes(msg) == {"rcpt1@example.com": PERMANENT}


# -- 5. the connection breaks after 354, before the data is written ------------


@pytest.mark.parametrize("retries", [0, 1])
async def test_broken_after_354_before_the_data_is_temporary(retries: int) -> None:
    """The reply to DATA is a 354 followed by an unsolicited line, then the
    server hangs up without reading: the client sees the stream broken
    before it writes a byte of the message (sequential path: the pipelined
    one rejects the extra reply before DATA). Not delivered: temporary, and
    resent on a new session.

    (A bare close after the 354 cannot be shown here: the client always
    writes the data before the event loop reports the close, and that is
    rightly "unknown".)"""
    with scripted(pipelining=False) as server:
        server.on(
            "DATA",
            reply("354 End data with .", after=("250 2.0.0 Unsolicited",), close=True),
        )
        msg = message(1)
        backend = make_backend(server, retries=retries)

        sent = await backend.send_messages([msg], fail_silently=True)

    first = server.sessions[0]
    assert first.verbs()[-1] == "DATA"
    assert first.data == []  # no body was received
    result = result_of(msg)
    assert not isinstance(result.error, DeliveryUnknownError)
    if retries:
        assert sent == 1
        assert result.status is MessageStatus.SENT
        assert result.attempts == 2
        assert [item.rcpt_tos for item in server.accepted] == [("rcpt1@example.com",)]
        assert len(server.sessions) == 2
    else:
        assert sent == 0
        assert outcomes(msg) == {"rcpt1@example.com": TEMPORARY}
        assert isinstance(result.error, SMTPResponseError)
        assert server.accepted == []


# -- 6. a backend open on one event loop, used from another ---------------------


async def test_opened_through_the_blocking_view_then_used_from_this_loop() -> None:
    with scripted() as server:
        backend = make_backend(server)
        view = backend.blocking()
        assert await anyio.to_thread.run_sync(view.open) is True
        msg = message(1)

        try:
            with pytest.raises(RuntimeError, match="another event loop"):
                await backend.send_messages([msg])
        finally:
            await anyio.to_thread.run_sync(view.close)

        assert msg.result is None  # not attempted
        assert server.count("MAIL") == 0
        assert backend.state is BackendState.CLOSED
        assert backend.pool is None
        assert await settle(lambda: server.live == 0), "a connection leaked"
        assert server.sessions[0].verbs()[-1] == "QUIT"
        # Closed, it may be used from this loop.
        assert await backend.send_messages([msg]) == 1

    assert [item.mail_from for item in server.accepted] == ["sender1@example.com"]
    assert result_of(msg).status is MessageStatus.SENT


async def test_opened_on_this_loop_then_used_from_a_thread() -> None:
    with scripted() as server:
        backend = make_backend(server)
        first, second = message(1), message(2)

        async with backend:
            assert await backend.send_messages([first]) == 1
            with pytest.raises(RuntimeError, match="another event loop"):
                await anyio.to_thread.run_sync(
                    lambda: asyncmail.send_mail(
                        "Subject",
                        "Body",
                        "sender3@example.com",
                        ["rcpt3@example.com"],
                        connection=backend,
                    )
                )
            with pytest.raises(RuntimeError, match="another event loop"):
                await anyio.to_thread.run_sync(
                    backend.blocking().send_messages, [second]
                )
            assert backend.state is BackendState.OPEN  # still usable here

        assert await settle(lambda: server.live == 0), "a connection leaked"

    assert [item.mail_from for item in server.accepted] == ["sender1@example.com"]
    assert server.count("MAIL") == 1
    (session,) = server.sessions
    assert session.verbs()[-1] == "QUIT"
    assert result_of(first).status is MessageStatus.SENT
    assert second.result is None


# -- 7. concurrent automatic opens: the last one closes -------------------------


async def test_concurrent_sends_on_a_closed_backend_leave_it_closed() -> None:
    with scripted() as server:
        server.on("RCPT", reply("450 4.2.0 Try later"), match="slow@")
        backend = make_backend(server, retries=1, retry_backoff=0.2)
        fast = message(1, ["fast@example.com"])
        slow = message(2, ["slow@example.com"])
        counts: list[int] = []

        async def send(msg: EmailMessage) -> None:
            counts.append(await backend.send_messages([msg]))

        async with anyio.create_task_group() as group:
            group.start_soon(send, fast)
            group.start_soon(send, slow)

        assert counts == [1, 1]
        assert backend.state is BackendState.CLOSED
        assert backend.pool is None
        assert await settle(lambda: server.live == 0), "a connection leaked"

    assert sorted(item.rcpt_tos for item in server.accepted) == [
        ("fast@example.com",),
        ("slow@example.com",),
    ]
    assert all(session.verbs()[-1] == "QUIT" for session in server.sessions)
    assert result_of(fast).status is MessageStatus.SENT
    assert result_of(slow).status is MessageStatus.SENT
    assert result_of(slow).attempts == 2


# -- 8. the FQDN is looked up off the event loop --------------------------------


async def test_fqdn_is_looked_up_off_the_event_loop(
    monkeypatch: pytest.MonkeyPatch, mailoutbox: Outbox
) -> None:
    callers: list[threading.Thread] = []

    def getfqdn(name: str = "") -> str:
        callers.append(threading.current_thread())
        return "host.regressions.example"

    monkeypatch.setattr(asyncmail.dnsname, "_fqdn", None)
    monkeypatch.setattr(socket, "getfqdn", getfqdn)
    with asyncmail.collect_results() as results:
        assert await asyncmail.asend_mail(
            "Subject", "Body", "sender@example.com", ["rcpt@example.com"]
        )

    assert callers, "socket.getfqdn was not called"
    assert threading.current_thread() not in callers
    [sent] = mailoutbox.assert_sent(count=1, to="rcpt@example.com")
    (result,) = results
    assert result.status is MessageStatus.SENT
    assert result.message_id is not None
    assert result.message_id.endswith("@host.regressions.example>")
    assert mailoutbox.parsed(sent)["Message-ID"] == result.message_id
    assert result.message_id.endswith("@host.regressions.example>")


# -- 9. a silent failure keeps no message alive ---------------------------------


@pytest.mark.parametrize("via", ["call", "backend"])
async def test_silent_failure_keeps_no_message_alive(via: str) -> None:
    """Nothing listening: every message fails. Afterwards none of them is
    still referenced (not by the backend's open_error, nor by a traceback).
    The "backend" case (the backend's own fail_silently) is the counterpart:
    its open_error is kept, with no results."""
    samples: list[weakref.ref[EmailMessage]] = []
    seen: Counter[tuple[MessageStatus, str]] = Counter()

    def source() -> Iterator[EmailMessage]:
        for n in range(2000):
            msg = message(n)
            if n % 100 == 0:
                samples.append(weakref.ref(msg))
            yield msg

    def on_result(result: MessageResult) -> None:
        seen[result.status, type(result.error).__name__] += 1

    backend = EmailBackend(
        host="127.0.0.1",
        port=unused_port(),
        timeout=2.0,
        retries=0,
        local_hostname="client.example",
        fail_silently=via == "backend",
    )

    count = await backend.send_messages(
        source(), fail_silently=via == "call", on_result=on_result
    )
    gc.collect()

    assert count == 0
    assert seen == {(MessageStatus.FAILED, "SMTPConnectError"): 2000}
    assert len(samples) == 20
    assert [ref for ref in samples if ref() is not None] == []
    # send_messages connects per message (open_error is for open() alone).
    assert backend.open_error is None


# -- 10. idle connections expire oldest first -----------------------------------


async def test_buried_idle_connections_expire() -> None:
    """Three connections go idle; then one message at a time reuses the most
    recent one (last in, first out) more often than idle_timeout: the two
    buried under it must still be closed when their idle time is up."""
    with scripted() as server:
        server.on(".", reply("250 2.0.0 OK", delay=0.1), times=3)  # overlap
        backend = make_backend(
            server, max_connections=3, idle_timeout=0.3, probe_after=None
        )
        burst = [message(n) for n in range(1, 4)]
        trickle = [message(n) for n in range(4, 12)]

        async with backend:
            assert await backend.send_messages(burst) == 3
            assert server.max_live == 3
            assert backend.pool is not None
            assert backend.pool.idle == 3
            for msg in trickle:
                await anyio.sleep(0.2)
                assert await backend.send_messages([msg]) == 1
            assert await settle(lambda: server.live <= 1), (
                f"{server.live} sessions still open"
            )
            assert backend.pool.idle == 1

    assert len(server.accepted) == 11
    assert all(result_of(m).status is MessageStatus.SENT for m in burst + trickle)
    assert all(session.verbs()[-1] == "QUIT" for session in server.sessions)


# -- 11. no DATA after a 421 to RCPT (sequential) -------------------------------


@pytest.mark.parametrize("close", [True, False], ids=["closes", "stays"])
async def test_no_data_after_421_to_rcpt(close: bool) -> None:
    with scripted(pipelining=False) as server:
        server.on("RCPT", reply("421 4.3.2 Shutting down", close=close), match="rcpt2@")
        msg = message(1, ["rcpt1@example.com", "rcpt2@example.com"])

        sent = await make_backend(server).send_messages([msg], fail_silently=True)

    assert sent == 0
    assert "DATA" not in server.sessions[0].verbs()
    assert server.count("DATA") == 0
    assert server.accepted == []
    result = result_of(msg)
    assert result.status is MessageStatus.FAILED
    assert isinstance(result.error, MessageRefusedError)
    for address in ("rcpt1@example.com", "rcpt2@example.com"):
        recipient = result.recipients[address]
        assert recipient.outcome is TEMPORARY
        assert recipient.code == 421
        assert recipient.enhanced_status == "4.3.2"


# -- 12. the deadline bounds waiting for a connection and connecting ------------


async def test_deadline_bounds_waiting_for_a_connection_slot() -> None:
    """The only connection slot is taken (by another user of the pool) for
    longer than the message's deadline: the message fails with a timeout
    while it is still taken, instead of waiting as long as it takes (and
    then connecting anew: the connection is released unusable)."""
    with scripted() as server:
        backend = make_backend(server, deadline=1.0, retries=2)
        msg = message(1)

        async def send() -> None:
            await backend.send_messages([msg], fail_silently=True)

        async with backend:
            pool = backend.pool
            assert pool is not None
            held = await pool.acquire()
            async with anyio.create_task_group() as group:
                group.start_soon(send)
                # Bounded (the old code waited here until the release).
                done = await settle(lambda: msg.result is not None, seconds=5.0)
                await pool.release(held, reusable=False)

    assert done, "the message waited for a connection past its deadline"
    result = result_of(msg)
    assert result.status is MessageStatus.FAILED
    assert isinstance(result.error, SMTPTimeoutError)
    assert outcomes(msg) == {"rcpt1@example.com": TEMPORARY}
    assert server.count("MAIL") == 0
    assert server.accepted == []
    assert len(server.sessions) == 1


async def test_deadline_bounds_connecting_on_a_retry() -> None:
    """The first try fails transiently late in the message's deadline; the
    retry's new session only greets after the deadline: the retry ends at
    the deadline, before the greeting, and never says a word on it (it used
    to get the whole connection timeout, and start the transaction)."""
    with scripted() as server:
        server.on("RCPT", reply("421 4.3.2 Closing", delay=0.4, close=True))
        server.on("CONNECT", reply("220 late.example", delay=0.8), skip=1, times=None)
        backend = make_backend(server, deadline=1.0, retries=2)
        msg = message(1)

        with pytest.raises(SMTPTimeoutError) as info:
            await backend.send_messages([msg])

    assert info.value.sent == 0
    result = result_of(msg)
    assert result.error is info.value
    assert outcomes(msg) == {"rcpt1@example.com": TEMPORARY}
    assert result.attempts == 2
    first, second = server.sessions  # no third attempt
    assert first.verbs()[-1] == "RCPT"
    assert second.commands == []  # gave up before the greeting
    assert server.accepted == []


# -- 13. no resend once the end of data was written -----------------------------


@PIPELINING
async def test_4xx_after_the_end_of_data_is_not_resent(pipelining: bool) -> None:
    with scripted(pipelining=pipelining) as server:
        server.on(".", reply("451 4.3.0 Try again later"))
        msg = message(1)

        with pytest.raises(MessageRefusedError) as info:
            await make_backend(server, retries=3).send_messages([msg])

    assert server.count("DATA") == 1
    assert len(server.data) == 1  # the body went once
    assert server.accepted == []
    result = result_of(msg)
    assert result.error is info.value
    assert result.attempts == 1
    (recipient,) = result.recipients.values()
    assert (recipient.outcome, recipient.code) == (TEMPORARY, 451)
    assert recipient.enhanced_status == "4.3.0"


@PIPELINING
async def test_4xx_to_one_rcpt_is_retried_for_that_recipient(pipelining: bool) -> None:
    """The counterpart: a recipient refused at RCPT never got the data, so it
    alone is tried again (a fix too broad would stop this)."""
    with scripted(pipelining=pipelining) as server:
        server.on("RCPT", reply("450 4.2.1 Mailbox busy"), match="rcpt2@")
        msg = message(1, ["rcpt1@example.com", "rcpt2@example.com"])

        assert await make_backend(server, retries=3).send_messages([msg]) == 1

    assert [item.rcpt_tos for item in server.accepted] == [
        ("rcpt1@example.com",),
        ("rcpt2@example.com",),
    ]
    rcpts = [c for c in server.commands if c.upper().startswith("RCPT")]
    assert rcpts == [
        "RCPT TO:<rcpt1@example.com>",
        "RCPT TO:<rcpt2@example.com>",
        "RCPT TO:<rcpt2@example.com>",
    ]
    assert server.count("DATA") == 2
    result = result_of(msg)
    assert result.status is MessageStatus.SENT
    assert result.attempts == 2


# -- 14. boundaries and Message-IDs from the secure random source ---------------

BOUNDARY = re.compile(rb'boundary="===([0-9a-f]+)==="')


def test_boundaries_and_message_ids_do_not_come_from_random() -> None:
    msg = EmailMessage("Subject", "Body\n", "sender@example.com", ["rcpt@example.com"])
    msg.attach("notes.txt", "some notes\n", "text/plain")
    state = random.getstate()
    try:
        random.seed(0)
        first = msg.render()
        random.seed(0)
        second = msg.render()
    finally:
        random.setstate(state)

    boundaries = [BOUNDARY.findall(r.data) for r in (first, second)]
    assert all(len(found) == 1 for found in boundaries)
    (one,), (two,) = boundaries
    assert len(one) == len(two) == 32
    assert one != two
    # <time.pid.random@domain>: the random parts differ too.
    assert first.message_id is not None
    assert second.message_id is not None
    left = [
        m.strip("<>").split("@")[0].split(".")
        for m in (first.message_id, second.message_id)
    ]
    assert left[0][2] != left[1][2]


# -- waiting for a busy pool does not trip the breaker --------------------------


async def test_waiting_for_a_busy_pool_does_not_trip_the_breaker() -> None:
    """Message 1 times out waiting for the only connection slot (held by
    someone else): that says nothing about the server, so message 2, sent
    once the slot is free, connects and goes through."""
    with scripted() as server:
        backend = make_backend(server, max_connections=1, deadline=0.5)
        first, second = message(1), message(2)
        async with backend:
            pool = backend.pool
            assert pool is not None
            held = await pool.acquire()

            async def messages() -> Any:
                yield first
                # Message 1 has timed out by now: free the slot.
                await pool.release(held, reusable=False)
                yield second

            sent = await backend.send_messages(messages(), fail_silently=True)

    assert isinstance(result_of(first).error, SMTPTimeoutError)
    assert sent == 1
    assert result_of(second).status is MessageStatus.SENT
    assert [item.mail_from for item in server.accepted] == ["sender2@example.com"]


# -- close() belongs to the loop that opened ---------------------------------------


async def test_close_from_another_loop_is_refused_and_changes_nothing() -> None:
    with scripted() as server:
        backend = make_backend(server)
        view = backend.blocking()
        assert await anyio.to_thread.run_sync(view.open) is True
        try:
            with pytest.raises(RuntimeError, match="another event loop"):
                await backend.close()
            assert backend.state is BackendState.OPEN
            assert backend.pool is not None
        finally:
            await anyio.to_thread.run_sync(view.close)
        assert backend.state is BackendState.CLOSED
        assert backend.bound_loop is None
        assert await settle(lambda: server.live == 0), "a connection leaked"
        # Closed properly, it may be used from this loop now.
        assert await backend.send_messages([message(1)]) == 1


# -- a cancelled open() leaves the backend closed ----------------------------------


async def test_cancelled_open_leaves_the_backend_closed() -> None:
    with scripted() as server:
        server.on("CONNECT", reply("421 4.3.2 Busy", close=True))  # every time
        backend = make_backend(server, retries=5, retry_backoff=30.0, deadline=300)
        with anyio.move_on_after(1.0) as scope:
            await backend.open()  # retrying, cancelled during the backoff
        assert scope.cancelled_caught
        assert backend.pool is None
        assert backend.bound_loop is None
        assert backend.state is BackendState.CLOSED


# -- the requirements audit (final review) -----------------------------------------


def streamed_attachment(tmp_path: Path, n: int = 1) -> tuple[EmailMessage, Path]:
    """Message *n* with a file attached by reference (over the threshold)."""
    path = tmp_path / f"big{n}.bin"
    path.write_bytes(bytes(range(256)) * (STREAM_THRESHOLD // 256 + 1))
    mail = message(n)
    mail.attach_file(path, "application/octet-stream")
    return mail, path


def local_backend(kind: str, tmp_path: Path, **options: Any) -> Any:
    import io

    if kind == "console":
        options["stream"] = io.StringIO()
    elif kind == "filebased":
        options["file_path"] = tmp_path / "outbox"
    return asyncmail.get_connection(
        f"asyncmail.backends.{kind}.EmailBackend", **options
    )


@pytest.mark.parametrize("kind", ["console", "filebased", "locmem"])
async def test_a_vanished_attachment_fails_its_message_alone(
    kind: str, tmp_path: Path
) -> None:
    """Not a raw FileNotFoundError (which even fail_silently let through,
    stopping the batch): that message fails with the reason, the next is sent."""
    asyncmail.outbox.clear()
    gone, path = streamed_attachment(tmp_path)
    path.unlink()
    second = message(2)

    backend = local_backend(kind, tmp_path)
    assert await backend.send_messages([gone, second], fail_silently=True) == 1
    failed = result_of(gone)
    assert failed.status is MessageStatus.FAILED
    assert isinstance(failed.error, InvalidMessageError)
    assert str(path) in str(failed.error)
    assert result_of(second).status is MessageStatus.SENT
    if kind == "locmem":
        assert [m.subject for m in asyncmail.outbox] == ["Message 2"]

    gone.result = None
    with pytest.raises(InvalidMessageError, match="cannot be read"):
        await local_backend(kind, tmp_path).send_messages([gone])


async def test_an_attachment_given_as_a_missing_path_fails_cleanly(
    tmp_path: Path,
) -> None:
    mail = message(1)
    mail.attach("x.bin", tmp_path / "missing.bin", "application/octet-stream")
    backend = local_backend("locmem", tmp_path)
    assert await backend.send_messages([mail], fail_silently=True) == 0
    assert isinstance(result_of(mail).error, InvalidMessageError)


async def test_locmem_keeps_the_attached_file_as_it_was_when_sent(
    tmp_path: Path,
) -> None:
    asyncmail.outbox.clear()
    mail, path = streamed_attachment(tmp_path)
    sent_bytes = path.read_bytes()
    assert await local_backend("locmem", tmp_path).send_messages([mail]) == 1
    path.write_bytes(b"changed afterwards")

    (stored,) = asyncmail.outbox
    (attachment,) = stored.attachments
    assert attachment.content == sent_bytes
    parsed = stored.message()
    (part,) = list(parsed.iter_attachments())
    assert part.get_content() == sent_bytes


async def test_locmem_fails_a_file_that_changed_size_since_attached(
    tmp_path: Path,
) -> None:
    asyncmail.outbox.clear()
    mail, path = streamed_attachment(tmp_path)
    with path.open("ab") as file:
        file.write(b"more")
    assert (
        await local_backend("locmem", tmp_path).send_messages(
            [mail], fail_silently=True
        )
        == 0
    )
    assert "changed size" in str(result_of(mail).error)
    assert asyncmail.outbox == []


async def test_stream_results_stops_taking_messages_while_results_wait() -> None:
    """It buffered every result (and its message) for a slow reader."""
    from asyncmail.backends.base import RESULTS_BUFFERED

    pulled = 0

    def source() -> Iterator[EmailMessage]:
        nonlocal pulled
        for n in range(20_000):
            pulled += 1
            yield message(n)

    backend = asyncmail.get_connection("asyncmail.backends.dummy.EmailBackend")
    seen = []
    async with backend.stream_results(source()) as results:
        async for result in results:
            seen.append(result)
            if len(seen) == 1:
                await anyio.sleep(0.3)  # a slow reader: the sender must wait
                assert pulled <= RESULTS_BUFFERED + 2
    assert len(seen) == 20_000
    assert all(r.status is MessageStatus.SENT for r in seen)


async def test_a_send_with_nobody_to_send_to_records_skipped() -> None:
    """asend() and asend_mail() returned 0 early and left no (or a stale)
    result, though every send records one."""
    asyncmail.configure(EMAIL_BACKEND="asyncmail.backends.locmem.EmailBackend")
    mail = message(1)
    assert await mail.asend() == 1
    assert result_of(mail).status is MessageStatus.SENT
    mail.to = []
    assert await mail.asend() == 0
    assert result_of(mail).status is MessageStatus.SKIPPED

    with asyncmail.collect_results() as collected:
        assert await asyncmail.asend_mail("s", "b", "from@example.com", []) == 0
    assert [r.status for r in collected] == [MessageStatus.SKIPPED]


async def test_the_rate_limit_paces_a_pooled_send() -> None:
    """Nothing checked that the backend's limiter is used: at 20 a second
    (a burst of 20), 30 messages take at least half a second."""
    with scripted() as server:
        backend = make_backend(server, max_connections=4, rate_limit=20)
        started = anyio.current_time()
        assert await backend.send_messages([message(n) for n in range(30)]) == 30
        elapsed = anyio.current_time() - started
    assert elapsed >= 0.45
    assert len(server.accepted) == 30


def test_backoff_doubles_is_capped_and_jittered() -> None:
    backend = EmailBackend(retry_backoff=0.5, retry_backoff_max=3.0)
    random.seed(4)
    for attempt, full in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 3.0), (9, 3.0)]:
        delays = {backend.retry.delay(attempt) for _ in range(50)}
        assert all(full / 2 <= d <= full for d in delays), (attempt, delays)
        assert len(delays) > 40  # jittered, not one fixed value


async def test_retries_wait_the_backoff() -> None:
    with scripted() as server:
        server.on("MAIL", reply("451 4.3.0 Try later"), times=2)
        backend = make_backend(server, retries=2, retry_backoff=0.2)
        mail = message(1)
        started = anyio.current_time()
        assert await backend.send_messages([mail]) == 1
        elapsed = anyio.current_time() - started
    # Jitter keeps at least half of each backoff: 0.1 + 0.2.
    assert elapsed >= 0.3
    assert len(mail_commands(server)) == 3
    assert result_of(mail).status is MessageStatus.SENT
