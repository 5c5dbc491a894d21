"""One deadline bounds a send: connecting, TLS, AUTH and retries included.

By default it is the timeout itself, so a send from a web request fails
within about one EMAIL_TIMEOUT (not one per attempt); bulk sends opt into a
longer one. The bounds asserted are generous multiples (the machine is
shared), but far below what the old behaviour took (an attempt's worth of
timeout per retry); the number of sessions the server saw is exact.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import anyio
import pytest

import asyncmail
from asyncmail import EmailMessage, Outcome, SMTPTimeoutError, send_mail
from asyncmail.backends.smtp import EmailBackend
from scriptserver import DEFAULT_EXTENSIONS, SILENCE, ScriptServer, settle

TIMEOUT = 1.0


def message() -> EmailMessage:
    return EmailMessage(
        "Subject",
        "Body.\n",
        "sender@example.com",
        ["rcpt@example.com"],
        headers={"Message-ID": f"<{uuid.uuid4().hex}@deadline.example>"},
    )


def silent_at_auth() -> ScriptServer:
    server = ScriptServer((*DEFAULT_EXTENSIONS, "AUTH PLAIN"))
    server.on("AUTH", SILENCE, times=None)  # the server never answers AUTH
    return server


def backend(server: ScriptServer, **options: Any) -> EmailBackend:
    return EmailBackend(
        host=server.host,
        port=server.port,
        username="user",
        password="secret",
        local_hostname="client.example",
        timeout=TIMEOUT,
        retry_backoff=0.01,
        **options,
    )


@pytest.mark.anyio
async def test_default_deadline_is_one_timeout() -> None:
    """A server silent during AUTH, default retries (2): the send fails
    within about one timeout, after one attempt (the deadline leaves no
    time for another)."""
    with silent_at_auth() as server:
        mail = message()
        started = time.monotonic()
        with pytest.raises(SMTPTimeoutError):
            await backend(server).send_messages([mail])
        elapsed = time.monotonic() - started

    assert len(server.sessions) == 1
    assert elapsed < 2.5 * TIMEOUT  # the old default took 3 x TIMEOUT and more
    (result,) = mail.result.recipients.values()  # type: ignore[union-attr]
    assert result.outcome is Outcome.TEMPORARY  # nothing was sent: retry later


@pytest.mark.anyio
async def test_a_longer_deadline_allows_the_retries() -> None:
    """Bulk sends opt into a longer deadline: then the retries happen (each
    attempt still bounded by the timeout)."""
    with silent_at_auth() as server, pytest.raises(SMTPTimeoutError):
        await backend(server, deadline=10 * TIMEOUT).send_messages([message()])

    assert len(server.sessions) == 3  # 1 + retries


def test_blocking_send_mail_fails_within_about_email_timeout() -> None:
    """The web request case: send_mail with EMAIL_TIMEOUT and nothing else."""
    with silent_at_auth() as server:
        asyncmail.configure(
            EMAIL_HOST=server.host,
            EMAIL_PORT=server.port,
            EMAIL_HOST_USER="user",
            EMAIL_HOST_PASSWORD="secret",
            EMAIL_TIMEOUT=TIMEOUT,
        )
        started = time.monotonic()
        with pytest.raises(SMTPTimeoutError):
            send_mail("s", "b", "a@example.com", ["b@example.com"])
        elapsed = time.monotonic() - started

    assert len(server.sessions) == 1
    assert elapsed < 2.5 * TIMEOUT


@pytest.mark.anyio
async def test_explicit_open_is_bounded_by_the_deadline_too() -> None:
    with silent_at_auth() as server:
        started = time.monotonic()
        with pytest.raises(SMTPTimeoutError):
            await backend(server).open()
        elapsed = time.monotonic() - started

    assert len(server.sessions) == 1
    assert elapsed < 2.5 * TIMEOUT


@pytest.mark.anyio
@pytest.mark.parametrize("chunking", [False, True], ids=["DATA", "BDAT"])
async def test_a_deadline_passed_in_the_end_of_data_hook_sends_no_end(
    chunking: bool,
) -> None:
    """The end-of-data hook (the durable queue's in-flight mark) outlasts the
    message's deadline: the end of data is not written then (the message is
    not sent: temporary, safe to retry), rather than written after the
    deadline and reported "maybe delivered"."""
    from asyncmail.backends.smtp import end_of_data_hook

    async def slow_mark() -> None:
        await anyio.sleep(1.5 * TIMEOUT)

    with ScriptServer(chunking=chunking) as server:
        mail = message()
        token = end_of_data_hook.set(slow_mark)
        try:
            async with EmailBackend(
                host=server.host,
                port=server.port,
                local_hostname="client.example",
                timeout=10 * TIMEOUT,
                deadline=TIMEOUT,
                retries=0,
            ) as connection:
                sent = await connection.send_messages([mail], fail_silently=True)
        finally:
            end_of_data_hook.reset(token)
        await settle(lambda: server.live == 0)

    assert sent == 0
    result = mail.result
    assert result is not None
    (recipient,) = result.recipients.values()
    assert recipient.outcome is Outcome.TEMPORARY
    assert "deadline" in recipient.text
    assert server.accepted == []
    assert len(server.sessions) == 1
