"""What is retried, what is never resent, and how long the retries wait.

A failure before the end of data is temporary and retried (on a new
session when the connection broke); once the end of data was written the
outcome stands (a 4xx to the final dot is not resent, a recipient refused at
RCPT alone is). The deadline bounds every wait of a retry (for a connection
slot, for connecting), and the backoff doubles, is capped and jittered.
"""

from __future__ import annotations

import random
from pathlib import Path

import anyio
import anyio.to_thread
import pytest

from asyncmail import (
    DeliveryUnknownError,
    MessageRefusedError,
    MessageStatus,
    Outcome,
    SMTPConnectError,
    SMTPResponseError,
    SMTPTimeoutError,
)
from asyncmail.backends.smtp import EmailBackend
from asyncmail.message import STREAM_THRESHOLD
from helpers import (
    PIPELINING,
    mail_commands,
    make_backend,
    message,
    outcomes,
    result_of,
    scripted,
)
from scriptserver import Act, reply, settle

pytestmark = pytest.mark.anyio

TEMPORARY, PERMANENT = Outcome.TEMPORARY, Outcome.PERMANENT


# -- a streamed attachment, the connection lost mid-body ---------------------

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


# -- the connection breaks after 354, before the data is written ------------


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


# -- no DATA after a 421 to RCPT (sequential) -------------------------------


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


# -- the deadline bounds waiting for a connection and connecting ------------


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


# -- no resend once the end of data was written -----------------------------


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


# -- the backoff between tries --------------------------------------------------


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
