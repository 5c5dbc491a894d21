"""The ``asyncmail`` logger: one record per message outcome, connection
events and retries, quiet at INFO for good mail, never secrets or bodies,
addresses only at DEBUG. Against real servers on 127.0.0.1."""

from __future__ import annotations

import logging

import pytest

import asyncmail
from asyncmail import EmailMessage
from asyncmail.backends.smtp import EmailBackend
from asyncmail.testing import SMTPTestServer
from helpers import unused_port
from scriptserver import CLOSE, ScriptServer, reply

BODY = "The secret body text 7f3a"
PASSWORD = "hunter2-password"


def backend_for(
    server: SMTPTestServer | ScriptServer, **options: object
) -> EmailBackend:
    options.setdefault("retry_backoff", 0.01)
    return EmailBackend(host="127.0.0.1", port=server.port, timeout=10, **options)


def records(
    caplog: pytest.LogCaptureFixture, name: str = "asyncmail"
) -> list[logging.LogRecord]:
    return [
        r for r in caplog.records if r.name == name or r.name.startswith(name + ".")
    ]


def everything_logged(caplog: pytest.LogCaptureFixture) -> str:
    """Every message text and structured field of asyncmail's records."""
    parts = []
    for record in records(caplog):
        parts.append(record.getMessage())
        parts.extend(
            repr(value)
            for key, value in vars(record).items()
            if key.startswith(("mail_", "smtp_"))
        )
    return "\n".join(parts)


def test_good_mail_is_silent_at_info(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="asyncmail")
    with SMTPTestServer() as server:
        messages = [
            EmailMessage(f"n{i}", BODY, None, [f"u{i}@example.com"]) for i in range(30)
        ]
        backend = backend_for(server, max_connections=3)
        assert backend.blocking().send_messages(messages) == 30
        assert len(server.messages) == 30
    assert records(caplog) == []


def test_debug_has_one_record_per_message_and_the_connections(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="asyncmail")
    with SMTPTestServer() as server:
        messages = [
            EmailMessage(f"n{i}", BODY, None, [f"u{i}@example.com", "cc@example.com"])
            for i in range(3)
        ]
        backend_for(server).blocking().send_messages(messages)
    sends = records(caplog, "asyncmail.send")
    assert [r.levelno for r in sends] == [logging.DEBUG] * 3
    for record, message in zip(sends, messages, strict=True):
        assert message.result is not None
        assert record.mail_message_id == message.result.message_id  # type: ignore[attr-defined]
        assert record.mail_status == "sent"  # type: ignore[attr-defined]
        assert record.mail_recipients == 2  # type: ignore[attr-defined]
        assert record.mail_attempts == 1  # type: ignore[attr-defined]
        assert "queued by the asyncmail test server" in record.mail_reply  # type: ignore[attr-defined]
        assert f"{message.result.message_id} sent: 2 accepted" in record.getMessage()
        assert message.to[0] in record.getMessage()  # addresses: at DEBUG only
    smtp = [r.getMessage() for r in records(caplog, "asyncmail.smtp")]
    assert len(smtp) == 2
    assert smtp[0].startswith(f"SMTP connection to 127.0.0.1:{server.port} opened in ")
    assert smtp[0].endswith("(no TLS)")
    assert smtp[1] == f"SMTP connection to 127.0.0.1:{server.port} closed"
    assert BODY not in everything_logged(caplog)


def test_refusals_warn_with_addresses_masked(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="asyncmail")
    refusal = "550 5.1.1 <bob.smith@example.com>: no such user"
    with SMTPTestServer(refuse={"bob.smith@example.com": refusal}) as server:
        message = EmailMessage(
            "Hi", BODY, None, ["ada@example.com", "bob.smith@example.com"]
        )
        assert (
            backend_for(server).blocking().send_messages([message], fail_silently=True)
            == 1
        )
    [record] = records(caplog)
    assert record.levelno == logging.WARNING
    assert record.mail_status == "partial"  # type: ignore[attr-defined]
    assert record.mail_error == "RecipientsRefusedError"  # type: ignore[attr-defined]
    text = record.getMessage()
    assert "1 accepted, 1 permanent" in text
    assert "b***@example.com" in text
    logged = everything_logged(caplog)
    assert "bob.smith" not in logged
    assert "ada@" not in logged
    assert BODY not in logged


def test_credentials_never_logged_even_at_debug(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="asyncmail")
    with SMTPTestServer(credentials=("mailer", PASSWORD)) as server:
        good = backend_for(server, username="mailer", password=PASSWORD)
        good.blocking().send_messages(
            [EmailMessage("Hi", BODY, None, ["ada@example.com"])]
        )
        bad = backend_for(server, username="mailer", password=PASSWORD + "x", retries=0)
        with pytest.raises(asyncmail.SMTPAuthenticationError):
            bad.blocking().send_messages(
                [EmailMessage("Hi", BODY, None, ["ada@example.com"])]
            )
        assert len(server.messages) == 1
    logged = everything_logged(caplog)
    assert PASSWORD not in logged
    assert BODY not in logged
    failures = [
        r for r in records(caplog, "asyncmail.smtp") if r.levelno == logging.WARNING
    ]
    assert len(failures) == 1
    assert "SMTPAuthenticationError" in failures[0].getMessage()


def test_retries_are_logged_at_info(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="asyncmail")
    with ScriptServer() as server:
        server.on("RCPT", reply("451 4.2.0 <ada@example.com> busy, try later"), times=1)
        message = EmailMessage("Hi", BODY, None, ["ada@example.com"])
        assert backend_for(server, retries=2).blocking().send_messages([message]) == 1
        assert len(server.accepted) == 1
    [retry] = records(caplog)  # the final success is DEBUG: not here
    assert retry.levelno == logging.INFO
    assert retry.mail_attempts == 1  # type: ignore[attr-defined]
    text = retry.getMessage()
    assert text.startswith(f"message {message.result.message_id}: attempt 1 failed: ")  # type: ignore[union-attr]
    assert "a***@example.com" in text
    assert "retrying in" in text


def test_a_broken_connection_is_discarded_and_the_unknown_outcome_warned(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="asyncmail")
    with ScriptServer() as server:
        server.on(".", CLOSE)
        message = EmailMessage("Hi", BODY, None, ["ada@example.com"])
        backend_for(server).blocking().send_messages([message], fail_silently=True)
    assert message.result is not None
    assert message.result.status.value == "unknown"
    levels = {r.getMessage(): r.levelno for r in records(caplog)}
    assert (
        levels[f"SMTP connection to 127.0.0.1:{server.port} discarded (broken)"]
        == logging.INFO
    )
    [outcome] = list(records(caplog, "asyncmail.send"))
    assert outcome.levelno == logging.WARNING
    assert outcome.mail_status == "unknown"  # type: ignore[attr-defined]


def test_connection_failures_warn(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="asyncmail")
    port = unused_port()
    backend = EmailBackend(host="127.0.0.1", port=port, retries=0, timeout=5)
    message = EmailMessage("Hi", BODY, None, ["ada@example.com"])
    assert backend.blocking().send_messages([message], fail_silently=True) == 0
    smtp = records(caplog, "asyncmail.smtp")
    assert len(smtp) == 1
    assert (
        smtp[0]
        .getMessage()
        .startswith(f"SMTP connection to 127.0.0.1:{port} failed: SMTPConnectError")
    )
    [outcome] = records(caplog, "asyncmail.send")
    assert outcome.mail_status == "failed"  # type: ignore[attr-defined]
    assert outcome.mail_error == "SMTPConnectError"  # type: ignore[attr-defined]


def test_local_backends_log_outcomes_too(
    caplog: pytest.LogCaptureFixture, mailoutbox: asyncmail.testing.Outbox
) -> None:
    caplog.set_level(logging.DEBUG, logger="asyncmail.send")
    asyncmail.send_mail("Hi", BODY, None, ["ada@example.com"])
    asyncmail.send_mail("None", BODY, None, [])  # skipped: no recipients
    statuses = [r.mail_status for r in records(caplog)]  # type: ignore[attr-defined]
    assert statuses == ["sent", "skipped"]
    mailoutbox.assert_sent(count=1)


def test_a_batch_failing_with_one_error_warns_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="asyncmail.send")
    backend = EmailBackend(host="127.0.0.1", port=unused_port(), retries=0, timeout=5)
    messages = [
        EmailMessage(f"n{i}", BODY, None, [f"u{i}@example.com"]) for i in range(40)
    ]
    assert backend.blocking().send_messages(messages, fail_silently=True) == 0
    outcomes = records(caplog, "asyncmail.send")
    assert len(outcomes) == 40  # one record per message, still
    assert all(r.mail_status == "failed" for r in outcomes)  # type: ignore[attr-defined]
    assert [r.levelno for r in outcomes] == [logging.WARNING] + [logging.DEBUG] * 39
    # A different failure afterwards warns again.
    with SMTPTestServer(refuse={"x@example.com": "550 5.1.1 no"}) as server:
        refused = EmailMessage("r", BODY, None, ["x@example.com"])
        backend_for(server).blocking().send_messages([refused], fail_silently=True)
    assert records(caplog, "asyncmail.send")[-1].levelno == logging.WARNING
