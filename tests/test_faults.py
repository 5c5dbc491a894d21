"""Fault injection: every fault of SECURITY.md's "Faults" list, scripted.

For each fault the caller must learn, per message and per recipient, whether
the server accepted, refused temporarily, refused permanently, or whether the
outcome is unknown (lost after the final dot: never resent). Nothing may be
reported sent that the scripted server did not accept, and a broken
connection is never reused. Transaction faults run on the pipelined path
(the server offers PIPELINING) and on the sequential one; every row runs in
clear text and inside STARTTLS (the scripted server's trustme certificate,
the client's ordinary ``use_tls``) with the same outcome, and the TLS faults
of the STARTTLS step run over STARTTLS only. The BDAT rows run the same
tests against a server offering CHUNKING (RFC 3030), their faults at the
LAST chunk in the place of the final dot's.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

import asyncmail
from asyncmail import (
    DeliveryUnknownError,
    EmailMessage,
    MailError,
    MessageRefusedError,
    MessageStatus,
    Outcome,
    RecipientsRefusedError,
    SMTPAuthenticationError,
    SMTPConnectError,
    SMTPResponseError,
    SMTPTimeoutError,
    TLSError,
)
from asyncmail.backends.smtp import EmailBackend
from helpers import make_backend, message, outcomes, scripted, unused_port
from scriptserver import CLOSE, SILENCE, Act, ScriptServer, reply

ACCEPTED, TEMPORARY = Outcome.ACCEPTED, Outcome.TEMPORARY
PERMANENT, UNKNOWN = Outcome.PERMANENT, Outcome.UNKNOWN
SLOW = 3.0  # a reply this late misses the short timeouts used below
TRICKLE = 1.0  # seconds per byte


# -- helpers -------------------------------------------------------------------


def accepted_copies(server: ScriptServer, msg: EmailMessage) -> list[tuple[str, ...]]:
    """The recipient lists of every copy of *msg* the server accepted."""
    marker = msg.extra_headers["Message-ID"].encode()
    return [item.rcpt_tos for item in server.accepted if marker in item.data]


def check_truth(server: ScriptServer, messages: Sequence[EmailMessage]) -> None:
    """Every reported outcome agrees with what the server recorded: accepted
    means accepted exactly once; refused means not accepted; unknown may be
    either. No message reached any recipient twice."""
    for msg in messages:
        assert msg.result is not None
        copies = Counter(a for rcpts in accepted_copies(server, msg) for a in rcpts)
        assert all(n == 1 for n in copies.values()), f"delivered twice: {copies}"
        for address, result in msg.result.recipients.items():
            if result.outcome is ACCEPTED:
                assert copies[address] == 1, f"{address} reported sent, not accepted"
            elif result.outcome in (TEMPORARY, PERMANENT):
                assert copies[address] == 0, f"{address} reported refused, accepted"
    # Over STARTTLS, no transaction travelled in clear text.
    tls = server.client_context is not None
    for session in server.sessions:
        if "MAIL" in session.verbs():
            assert session.tls is tls, "a transaction on the wrong transport"


async def send(
    backend: EmailBackend, messages: list[EmailMessage], *, silent: bool
) -> tuple[int, MailError | None]:
    """send_messages: (count, None) or, when it raised, (exc.sent, exc)."""
    if silent:
        return await backend.send_messages(messages, fail_silently=True), None
    try:
        return await backend.send_messages(messages), None
    except MailError as exc:
        return exc.sent, exc


# -- the faults ----------------------------------------------------------------


@dataclass(frozen=True)
class Fault:
    """One scripted fault and what the caller must learn (with retries=0).

    *verb*/*act* is the rule (it fires once). *retried*: a retry must happen
    and succeed (nothing was delivered and the failure is transient).
    *breaks*: the connection must not be used again. *in_session*: the fault
    hits an established session (the transaction), not the connection set-up.
    *transports*: where the row runs, in clear text ("plain") and inside
    STARTTLS ("starttls"); every row runs on both and must give the same
    outcome, except the TLS faults, which only exist over STARTTLS.
    """

    name: str
    verb: str
    act: Act
    outcome: Outcome
    error: type[MailError] | tuple[type[MailError], ...]
    code: int | None = None
    enhanced: str | None = None
    retried: bool = False
    breaks: bool = True
    in_session: bool = True
    options: dict[str, Any] = field(default_factory=dict)
    auth: bool = False
    transports: tuple[str, ...] = ("plain", "starttls")
    chunking: bool = False  # the server offers CHUNKING: BDAT, not DATA

    def __str__(self) -> str:
        return self.name


# A reply slower than the timeout; the deadline leaves room for a retry (by
# default it is one timeout: a send fails within about EMAIL_TIMEOUT).
QUICK = {"timeout": 0.5, "deadline": 5.0}
DEADLINE = {"timeout": None, "deadline": 1.0}  # only the overall deadline can fire

FAULTS = [
    # Connection set-up.
    Fault(
        "greeting-421",
        "CONNECT",
        reply("421 4.3.2 Service not available", close=True),
        TEMPORARY,
        SMTPConnectError,
        code=421,
        retried=True,
        in_session=False,
    ),
    Fault(
        "greeting-554",
        "CONNECT",
        reply("554 5.7.1 No SMTP service here", close=True),
        PERMANENT,
        SMTPConnectError,
        code=554,
        in_session=False,
    ),
    Fault(
        "greeting-never-sent",
        "CONNECT",
        SILENCE,
        TEMPORARY,
        SMTPTimeoutError,
        retried=True,
        in_session=False,
        options=QUICK,
    ),
    Fault(
        "greeting-trickled",
        "CONNECT",
        reply("220 " + "x" * 40, trickle=TRICKLE),
        TEMPORARY,
        SMTPTimeoutError,
        in_session=False,
        options=DEADLINE,
    ),
    Fault(
        "close-after-EHLO",
        "EHLO",
        CLOSE,
        TEMPORARY,
        SMTPConnectError,
        retried=True,
        in_session=False,
    ),
    Fault(
        "auth-535",
        "AUTH",
        reply("535 5.7.8 Authentication credentials invalid"),
        PERMANENT,
        SMTPAuthenticationError,
        code=535,
        enhanced="5.7.8",
        in_session=False,
        options={"username": "user", "password": "secret"},
        auth=True,
    ),
    # The transaction: connection lost before the end of data (retry-safe).
    Fault("close-after-MAIL", "MAIL", CLOSE, TEMPORARY, SMTPConnectError, retried=True),
    Fault("close-after-RCPT", "RCPT", CLOSE, TEMPORARY, SMTPConnectError, retried=True),
    Fault("close-after-DATA", "DATA", CLOSE, TEMPORARY, SMTPConnectError, retried=True),
    # ... and after the end of data was written: unknown, never resent.
    Fault("close-mid-body", ".", Act(body_bytes=60), UNKNOWN, DeliveryUnknownError),
    Fault("close-after-dot", ".", CLOSE, UNKNOWN, DeliveryUnknownError),
    # Replies.
    Fault(
        "MAIL-451",
        "MAIL",
        reply("451 4.3.0 Temporary local problem"),
        TEMPORARY,
        MessageRefusedError,
        code=451,
        enhanced="4.3.0",
        retried=True,
        breaks=False,
    ),
    Fault(
        "MAIL-421",
        "MAIL",
        reply("421 4.3.2 Shutting down", close=True),
        TEMPORARY,
        (MessageRefusedError, SMTPConnectError),
        code=421,
        enhanced="4.3.2",
        retried=True,
    ),
    Fault(
        "MAIL-550",
        "MAIL",
        reply("550 5.7.1 Sender rejected"),
        PERMANENT,
        MessageRefusedError,
        code=550,
        enhanced="5.7.1",
        breaks=False,
    ),
    Fault(
        "RCPT-450",
        "RCPT",
        reply("450 4.2.1 Mailbox busy"),
        TEMPORARY,
        RecipientsRefusedError,
        code=450,
        enhanced="4.2.1",
        retried=True,
        breaks=False,
    ),
    Fault(
        "RCPT-452",
        "RCPT",
        reply("452 4.5.3 Too many recipients"),
        TEMPORARY,
        RecipientsRefusedError,
        code=452,
        enhanced="4.5.3",
        retried=True,
        breaks=False,
    ),
    Fault(
        "RCPT-550",
        "RCPT",
        reply("550 5.1.1 No such user"),
        PERMANENT,
        RecipientsRefusedError,
        code=550,
        enhanced="5.1.1",
        breaks=False,
    ),
    Fault(
        "DATA-451",
        "DATA",
        reply("451 4.3.1 Insufficient system storage"),
        TEMPORARY,
        MessageRefusedError,
        code=451,
        enhanced="4.3.1",
        retried=True,
        breaks=False,
    ),
    Fault(
        "DATA-554",
        "DATA",
        reply("554 5.3.4 Transaction failed"),
        PERMANENT,
        MessageRefusedError,
        code=554,
        enhanced="5.3.4",
        breaks=False,
    ),
    Fault(
        "dot-451",
        ".",
        reply("451 4.3.0 Queue full, try later"),
        TEMPORARY,
        MessageRefusedError,
        code=451,
        enhanced="4.3.0",
        # Refused, so TEMPORARY (the caller may send it again), but asyncmail
        # never resends once the end of data was written.
        retried=False,
        breaks=False,
    ),
    Fault(
        "dot-554",
        ".",
        reply("554 5.6.0 Content rejected"),
        PERMANENT,
        MessageRefusedError,
        code=554,
        enhanced="5.6.0",
        breaks=False,
    ),
    # Slow servers.
    Fault(
        "MAIL-slower-than-timeout",
        "MAIL",
        reply("250 2.1.0 Sender OK", delay=SLOW),
        TEMPORARY,
        SMTPTimeoutError,
        retried=True,
        options=QUICK,
    ),
    Fault(
        "dot-slower-than-timeout",
        ".",
        reply("250 2.0.0 Queued", delay=SLOW),
        UNKNOWN,
        DeliveryUnknownError,
        options=QUICK,
    ),
    Fault(
        "MAIL-trickled",
        "MAIL",
        reply("250 2.1.0 Sender OK", trickle=TRICKLE),
        TEMPORARY,
        SMTPTimeoutError,
        options=DEADLINE,
    ),
    Fault(
        "dot-trickled",
        ".",
        reply("250 2.0.0 Queued", trickle=TRICKLE),
        UNKNOWN,
        DeliveryUnknownError,
        options=DEADLINE,
    ),
    # Malformed conversations.
    Fault(
        "unsolicited-line-before-MAIL-reply",
        "MAIL",
        reply("250 2.1.0 Sender OK", before=("250 2.0.0 Unsolicited",)),
        TEMPORARY,
        SMTPResponseError,
        retried=True,
    ),
    Fault(
        "endless-reply-to-MAIL",
        "MAIL",
        Act(endless=True),
        TEMPORARY,
        SMTPResponseError,
        retried=True,
    ),
    Fault(
        "endless-reply-to-dot", ".", Act(endless=True), UNKNOWN, DeliveryUnknownError
    ),
    # TLS: the STARTTLS step itself (only over STARTTLS; the handshake reset
    # by the peer and an old TLS version are in test_tls_failures.py, on a
    # raw socket, for implicit TLS too; a certificate for another host is in
    # test_smtp.py).
    Fault(
        "close-at-handshake",
        "STARTTLS",
        reply("220 2.0.0 Ready to start TLS", handshake=False, close=True),
        PERMANENT,  # a broken handshake is a TLS failure: never retried
        TLSError,
        in_session=False,
        transports=("starttls",),
    ),
    Fault(
        "handshake-stalled",
        "STARTTLS",
        reply("220 2.0.0 Ready to start TLS", handshake=False),
        TEMPORARY,  # a timeout, like a reply that never comes
        SMTPTimeoutError,
        retried=True,
        in_session=False,
        options=QUICK,
        transports=("starttls",),
    ),
    Fault(
        "close-after-STARTTLS",
        "STARTTLS",
        CLOSE,  # no 220: the client's handshake meets the end of the stream
        PERMANENT,
        TLSError,
        in_session=False,
        transports=("starttls",),
    ),
    Fault(
        "STARTTLS-454",
        "STARTTLS",
        reply("454 4.7.0 TLS not available due to temporary reason"),
        TEMPORARY,  # RFC 3207: 454 is a temporary refusal; the one rule retries it
        SMTPResponseError,
        code=454,
        enhanced="4.7.0",
        retried=True,
        in_session=False,
        transports=("starttls",),
    ),
]


# The same faults under CHUNKING: the message goes as one BDAT LAST chunk
# (pipelined: in one write with MAIL and RCPT, so a refused MAIL or RCPT
# comes back after the end of data was written, yet nothing was delivered).
FAULTS += [
    Fault(
        "close-mid-chunk",
        "BDAT",
        Act(body_bytes=60),
        UNKNOWN,
        DeliveryUnknownError,
        chunking=True,
    ),
    Fault(
        "close-after-LAST", "BDAT", CLOSE, UNKNOWN, DeliveryUnknownError, chunking=True
    ),
    Fault(
        "MAIL-451-bdat",
        "MAIL",
        reply("451 4.3.0 Temporary local problem"),
        TEMPORARY,
        MessageRefusedError,
        code=451,
        enhanced="4.3.0",
        retried=True,
        breaks=False,
        chunking=True,
    ),
    Fault(
        "RCPT-450-bdat",
        "RCPT",
        reply("450 4.2.1 Mailbox busy"),
        TEMPORARY,
        RecipientsRefusedError,
        code=450,
        enhanced="4.2.1",
        retried=True,
        breaks=False,
        chunking=True,
    ),
    Fault(
        "LAST-451",
        "BDAT",
        reply("451 4.3.0 Queue full, try later"),
        TEMPORARY,
        MessageRefusedError,
        code=451,
        enhanced="4.3.0",
        breaks=False,  # refused after the end of data: not resent
        chunking=True,
    ),
    Fault(
        "LAST-554",
        "BDAT",
        reply("554 5.6.0 Content rejected"),
        PERMANENT,
        MessageRefusedError,
        code=554,
        enhanced="5.6.0",
        breaks=False,
        chunking=True,
    ),
    Fault(
        "LAST-slower-than-timeout",
        "BDAT",
        reply("250 2.0.0 Queued", delay=SLOW),
        UNKNOWN,
        DeliveryUnknownError,
        options=QUICK,
        chunking=True,
    ),
    Fault(
        "LAST-trickled",
        "BDAT",
        reply("250 2.0.0 Queued", trickle=TRICKLE),
        UNKNOWN,
        DeliveryUnknownError,
        options=DEADLINE,
        chunking=True,
    ),
    Fault(
        "endless-reply-to-LAST",
        "BDAT",
        Act(endless=True),
        UNKNOWN,
        DeliveryUnknownError,
        chunking=True,
    ),
]


def served(
    fault: Fault, pipelining: bool = True, auth: bool = False, *, starttls: bool
) -> ScriptServer:
    """The scripted server for *fault*'s row (offering CHUNKING for BDAT's)."""
    server = scripted(pipelining, auth, starttls=starttls)
    if fault.chunking:
        server.extensions.append("CHUNKING")
    return server


def _transport_id(transport: str) -> str:
    """The id suffix: none in clear text (the table's original ids)."""
    return "" if transport == "plain" else f"-{transport}"


def _cases(faults: list[Fault], *, session_only: bool = False) -> list[Any]:
    """(fault, pipelining, starttls) for every row, path and transport."""
    cases = []
    for fault in faults:
        if session_only and not fault.in_session:
            continue
        modes = ("pipelined", "sequential") if fault.in_session else ("pipelined",)
        cases.extend(
            pytest.param(
                fault,
                mode == "pipelined",
                transport == "starttls",
                id=f"{fault}-{mode}{_transport_id(transport)}",
            )
            for transport in fault.transports
            for mode in modes
        )
    return cases


CASES = _cases(FAULTS)
SESSION_CASES = _cases(FAULTS, session_only=True)


def attempts_seen(server: ScriptServer, fault: Fault) -> int:
    """How many times the server saw the message attempted."""
    return len(server.sessions) if not fault.in_session else server.count("MAIL")


def check_refusal(msg: EmailMessage, fault: Fault, address: str) -> None:
    assert msg.result is not None
    result = msg.result.recipients[address]
    assert result.outcome is fault.outcome
    assert result.code == fault.code
    if fault.enhanced is not None:
        assert result.enhanced_status == fault.enhanced
    assert isinstance(msg.result.error, fault.error)
    expected_status = MessageStatus.UNKNOWN if fault.outcome is UNKNOWN else None
    assert msg.result.status is (expected_status or MessageStatus.FAILED)
    assert not msg.result.sent


# -- one message, each fault ---------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(("fault", "pipelining", "starttls"), CASES)
async def test_fault_without_retries(
    fault: Fault, pipelining: bool, starttls: bool
) -> None:
    with served(fault, pipelining, fault.auth, starttls=starttls) as server:
        server.on(fault.verb, fault.act)
        backend = make_backend(server, **fault.options)
        msg = message()
        with pytest.raises(fault.error) as info:
            await backend.send_messages([msg])
        exc = info.value
        assert server.rules[0].times == 0, "the fault was not hit"
        # One attempt, and nothing the client did not report.
        assert len(server.sessions) == 1
        assert server.count("MAIL") <= 1
        assert server.count("DATA") <= 1
        if not fault.in_session:
            assert server.count("MAIL") == 0, "MAIL sent over a failed set-up"
        if fault.outcome is not UNKNOWN:
            assert server.accepted == []
        check_truth(server, [msg])
        exc = info.value
        if isinstance(exc, SMTPConnectError):
            assert isinstance(exc, ConnectionError)
        if isinstance(exc, SMTPTimeoutError):
            assert isinstance(exc, TimeoutError)
        assert exc.sent == 0
        assert list(exc.results) == [msg.result]
        check_refusal(msg, fault, "rcpt1@example.com")


@pytest.mark.anyio
@pytest.mark.parametrize(("fault", "pipelining", "starttls"), CASES)
async def test_fault_with_retries(
    fault: Fault, pipelining: bool, starttls: bool
) -> None:
    """Transient failures before the end of data are retried (and succeed the
    second time, as the fault fires once); the rest are not."""
    with served(fault, pipelining, fault.auth, starttls=starttls) as server:
        server.on(fault.verb, fault.act)
        backend = make_backend(server, retries=2, **fault.options)
        msg = message()
        count, error = await send(backend, [msg], silent=False)
        assert msg.result is not None
        assert server.rules[0].times == 0, "the fault was not hit"
        check_truth(server, [msg])
        if fault.retried:
            assert error is None
            assert count == 1
            assert outcomes(msg) == {"rcpt1@example.com": ACCEPTED}
            assert attempts_seen(server, fault) == 2, "the retry did not happen"
            assert accepted_copies(server, msg) == [("rcpt1@example.com",)]
            if fault.in_session:
                assert msg.result.attempts == 2
            if fault.breaks:
                assert len(server.sessions) == 2, "a broken connection was reused"
            else:
                assert len(server.sessions) == 1
        else:
            assert len(server.sessions) == 1, "retried"
            assert server.count("MAIL") <= 1, "retried"
            assert server.count("DATA") <= 1, "resent"
            if fault.outcome is UNKNOWN:
                assert server.count("BDAT" if fault.chunking else "DATA") == 1
                assert msg.result.attempts == 1
            assert isinstance(error, fault.error)
            assert count == 0
            check_refusal(msg, fault, "rcpt1@example.com")


@pytest.mark.anyio
@pytest.mark.parametrize(("fault", "pipelining", "starttls"), CASES)
async def test_fault_fail_silently(
    fault: Fault, pipelining: bool, starttls: bool
) -> None:
    with served(fault, pipelining, fault.auth, starttls=starttls) as server:
        server.on(fault.verb, fault.act)
        backend = make_backend(server, fail_silently=True, **fault.options)
        msg = message()
        with asyncmail.collect_results() as collected:
            assert await backend.send_messages([msg]) == 0
        assert collected == [msg.result]
        check_refusal(msg, fault, "rcpt1@example.com")
        check_truth(server, [msg])


@pytest.mark.anyio
@pytest.mark.parametrize(("fault", "pipelining", "starttls"), SESSION_CASES)
async def test_broken_connection_is_never_reused(
    fault: Fault, pipelining: bool, starttls: bool
) -> None:
    """The next message of an open backend goes over a new session when the
    fault broke the connection, and over the same one when the server merely
    refused: after an RSET when the refusal came before the data, with
    nothing in between when it answered the end of data (that reply ends
    the transaction)."""
    with served(fault, pipelining, starttls=starttls) as server:
        server.on(fault.verb, fault.act)
        backend = make_backend(server, **fault.options)
        first, second = message(1), message(2)
        async with backend:
            _, error = await send(backend, [first], silent=False)
            assert isinstance(error, fault.error)
            assert await backend.send_messages([second]) == 1
        check_refusal(first, fault, "rcpt1@example.com")
        assert outcomes(second) == {"rcpt2@example.com": ACCEPTED}
        check_truth(server, [first, second])
        last = server.sessions[-1]
        assert "MAIL FROM:<sender2@example.com>" in " ".join(last.commands)
        if fault.breaks:
            assert len(server.sessions) == 2, "a broken connection was reused"
            assert not any("sender2" in c for c in server.sessions[0].commands)
        else:
            assert len(server.sessions) == 1
            second_mail = next(
                i for i, c in enumerate(last.commands) if "sender2@" in c
            )
            before = last.verbs()[:second_mail]
            if fault.verb == ".":
                assert "RSET" not in before, "an RSET after a completed DATA"
            else:
                assert "RSET" in before, "no RSET after a refusal"


RECONNECT_CASES = [
    pytest.param(
        fault, transport == "starttls", id=f"{fault}{_transport_id(transport)}"
    )
    for fault in FAULTS
    if not fault.in_session and fault.retried
    for transport in fault.transports
]


@pytest.mark.anyio
@pytest.mark.parametrize(("fault", "starttls"), RECONNECT_CASES)
async def test_fault_while_reconnecting_is_retried(
    fault: Fault, starttls: bool
) -> None:
    """An open backend whose connection broke reconnects for the next
    message; a transient fault while reconnecting is retried like any other."""
    with scripted(starttls=starttls) as server:
        server.on(fault.verb, fault.act, skip=1)  # the first session is fine
        server.on(".", CLOSE, match="rcpt1@")  # breaks the first session
        backend = make_backend(server, retries=2, **fault.options)
        first, second = message(1), message(2)
        async with backend:
            _, error = await send(backend, [first], silent=False)
            assert isinstance(error, DeliveryUnknownError)
            count, error = await send(backend, [second], silent=False)
        assert server.rules[0].times == 0, "the fault was not hit"
        assert error is None
        assert count == 1
        assert outcomes(second) == {"rcpt2@example.com": ACCEPTED}
        assert len(server.sessions) == 3
        check_truth(server, [first, second])


# -- a batch of five, the third one hit ----------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("silent", [False, True], ids=["raises", "silent"])
@pytest.mark.parametrize(("fault", "pipelining", "starttls"), SESSION_CASES)
async def test_batch_third_message_faulty(
    fault: Fault, pipelining: bool, starttls: bool, silent: bool
) -> None:
    with served(fault, pipelining, starttls=starttls) as server:
        server.on(fault.verb, fault.act, match="3@example.com")
        backend = make_backend(server, **fault.options)
        messages = [message(n) for n in range(1, 6)]
        with asyncmail.collect_results() as collected:
            count, error = await send(backend, messages, silent=silent)
        assert count == 4
        assert collected == [m.result for m in messages]
        for n, msg in enumerate(messages, 1):
            if n == 3:
                check_refusal(msg, fault, "rcpt3@example.com")
            else:
                assert outcomes(msg) == {f"rcpt{n}@example.com": ACCEPTED}
                assert accepted_copies(server, msg) == [(f"rcpt{n}@example.com",)]
        if silent:
            assert error is None
        else:
            assert isinstance(error, fault.error)
            assert error is messages[2].result.error  # type: ignore[union-attr]
            assert error.sent == 4
            assert list(error.results) == [m.result for m in messages]
        check_truth(server, messages)
        assert len(server.sessions) == (2 if fault.breaks else 1)
        marker = messages[2].extra_headers["Message-ID"].encode()
        assert sum(marker in body for body in server.data) <= 1, "resent"


# -- recipients: mixes of 250/450/452/550 --------------------------------------

MIX = ["ok@example.com", "busy@example.com", "full@example.com", "bad@example.com"]


def script_mix(server: ScriptServer) -> None:
    server.on("RCPT", reply("450 4.2.1 Mailbox busy"), match="busy@")
    server.on("RCPT", reply("452 4.5.3 Too many recipients"), match="full@")
    server.on("RCPT", reply("550 5.1.1 No such user"), match="bad@", times=None)


@pytest.mark.anyio
@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "sequential"])
async def test_recipient_mix_without_retries(pipelining: bool) -> None:
    with scripted(pipelining) as server:
        script_mix(server)
        msg = message(1, MIX)
        count, error = await send(make_backend(server), [msg], silent=False)
        assert count == 1
        assert isinstance(error, RecipientsRefusedError)
        assert set(error.refused) == set(MIX[1:])
        assert error.sent == 1
        assert msg.result is not None
        assert msg.result.status is MessageStatus.PARTIAL
        got = {
            a: (r.outcome, r.code, r.enhanced_status)
            for a, r in msg.result.recipients.items()
        }
        assert got == {
            "ok@example.com": (ACCEPTED, 250, "2.0.0"),
            "busy@example.com": (TEMPORARY, 450, "4.2.1"),
            "full@example.com": (TEMPORARY, 452, "4.5.3"),
            "bad@example.com": (PERMANENT, 550, "5.1.1"),
        }
        assert list(msg.result.recipients) == MIX  # the caller's order
        assert accepted_copies(server, msg) == [("ok@example.com",)]
        assert b"\r\n..A line starting with a dot.\r\n" in server.data[0]
        check_truth(server, [msg])


@pytest.mark.anyio
@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "sequential"])
async def test_recipient_mix_retries_the_temporary_ones(pipelining: bool) -> None:
    with scripted(pipelining) as server:
        script_mix(server)
        msg = message(1, MIX)
        backend = make_backend(server, retries=2)
        count, error = await send(backend, [msg], silent=False)
        assert count == 1
        assert isinstance(error, RecipientsRefusedError)
        assert set(error.refused) == {"bad@example.com"}
        assert outcomes(msg) == {
            "ok@example.com": ACCEPTED,
            "busy@example.com": ACCEPTED,
            "full@example.com": ACCEPTED,
            "bad@example.com": PERMANENT,
        }
        # The retry went to the temporarily refused recipients only.
        assert accepted_copies(server, msg) == [
            ("ok@example.com",),
            ("busy@example.com", "full@example.com"),
        ]
        assert sum("bad@" in c for c in server.commands) == 1, "5xx retried"
        assert len(server.sessions) == 1
        check_truth(server, [msg])


@pytest.mark.anyio
@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "sequential"])
async def test_every_recipient_refused(pipelining: bool) -> None:
    with scripted(pipelining) as server:
        server.on("RCPT", reply("550 5.1.1 No such user"), times=None)
        msg = message(1, ["a@example.com", "b@example.com"])
        count, error = await send(make_backend(server, retries=2), [msg], silent=False)
        assert count == 0
        assert isinstance(error, RecipientsRefusedError)
        assert outcomes(msg) == {"a@example.com": PERMANENT, "b@example.com": PERMANENT}
        assert server.data == []  # no message body was sent
        assert server.count("RCPT") == 2
        check_truth(server, [msg])


@pytest.mark.anyio
async def test_data_accepted_although_every_recipient_refused() -> None:
    """RFC 2920: a pipelining server may answer DATA with 354 after refusing
    every RCPT; the client must send an empty body, not the message."""
    with scripted(pipelining=True) as server:
        server.on("RCPT", reply("550 5.1.1 No such user"))
        server.on("DATA", reply("354 Go ahead"))
        first, second = message(1), message(2)
        backend = make_backend(server)
        async with backend:
            _, error = await send(backend, [first], silent=False)
            assert isinstance(error, RecipientsRefusedError)
            assert await backend.send_messages([second]) == 1
        assert outcomes(first) == {"rcpt1@example.com": PERMANENT}
        assert server.data[0] == b""
        assert len(server.data) == 2
        check_truth(server, [first, second])
        assert len(server.sessions) == 1


@pytest.mark.anyio
@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "sequential"])
async def test_connection_lost_on_rset_after_a_refusal(pipelining: bool) -> None:
    """The message was settled (its only recipient refused, so DATA was
    refused too) before the RSET that cleans up the session failed: the
    outcome stands, the error is the refusal (nothing is unknown), and the
    connection is not reused. (A partly refused message has its data sent,
    and the reply to it ends the transaction: no RSET then.)"""
    with scripted(pipelining) as server:
        server.on("RCPT", reply("550 5.1.1 No such user"), match="bad@")
        server.on("RSET", CLOSE)
        first = message(1, ["bad@example.com"])
        second = message(2)
        count, error = await send(
            make_backend(server, retries=2), [first, second], silent=False
        )
        assert count == 1
        assert outcomes(first) == {"bad@example.com": PERMANENT}
        assert outcomes(second) == {"rcpt2@example.com": ACCEPTED}
        check_truth(server, [first, second])
        assert len(server.sessions) == 2
        assert server.count("RSET") == 1
        assert first.result is not None
        assert first.result.status is MessageStatus.FAILED
        assert isinstance(error, RecipientsRefusedError)
        assert not isinstance(error, DeliveryUnknownError)
        assert set(error.refused) == {"bad@example.com"}


# -- unsolicited lines, endless replies, slow set-up ---------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "sequential"])
async def test_unsolicited_line_between_transactions(pipelining: bool) -> None:
    """A line nobody asked for after a message was accepted: that message
    stands, and the next one goes over a new connection."""
    with scripted(pipelining) as server:
        server.on(".", reply("250 2.0.0 Queued", after=("250 2.0.0 Unsolicited",)))
        messages = [message(1), message(2)]
        backend = make_backend(server)
        async with backend:
            assert await backend.send_messages(messages[:1]) == 1
            assert await backend.send_messages(messages[1:]) == 1
        assert [outcomes(m) for m in messages] == [
            {"rcpt1@example.com": ACCEPTED},
            {"rcpt2@example.com": ACCEPTED},
        ]
        check_truth(server, messages)
        assert len(server.sessions) == 2, "a desynchronised connection was reused"


@pytest.mark.anyio
async def test_endless_reply_to_ehlo() -> None:
    with scripted() as server:
        server.on("EHLO", Act(endless=True))
        msg = message()
        backend = make_backend(server, timeout=2.0)
        count, error = await send(backend, [msg], silent=False)
        assert count == 0
        assert isinstance(error, SMTPResponseError | SMTPTimeoutError)
        assert outcomes(msg)["rcpt1@example.com"] in (TEMPORARY, PERMANENT)
        assert server.count("MAIL") == 0
        assert server.accepted == []


@pytest.mark.anyio
async def test_deadline_bounds_retries_of_slow_replies() -> None:
    """Each reply comes within the timeout, but the retries together would
    take far longer than the deadline: the deadline ends them."""
    with scripted() as server:
        server.on("RCPT", reply("450 4.2.1 Busy", delay=0.6), times=None)
        msg = message()
        backend = make_backend(server, timeout=1.0, deadline=2.0, retries=50)
        count, error = await send(backend, [msg], silent=False)
        assert count == 0
        assert isinstance(error, RecipientsRefusedError | SMTPTimeoutError)
        assert outcomes(msg) == {"rcpt1@example.com": TEMPORARY}
        assert server.accepted == []
        # 51 attempts would take 30 s; the deadline stopped far earlier.
        assert server.count("MAIL") < 51


# -- no server at all ----------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("silent", [False, True], ids=["raises", "silent"])
async def test_connection_refused(silent: bool) -> None:
    backend = EmailBackend(
        host="127.0.0.1",
        port=unused_port(),
        timeout=2.0,
        retries=1,
        retry_backoff=0.01,
        local_hostname="client.example",
    )
    messages = [message(1), message(2)]
    count, error = await send(backend, messages, silent=silent)
    assert count == 0
    if silent:
        assert error is None
    else:
        assert isinstance(error, SMTPConnectError)
        assert isinstance(error, ConnectionError)
        assert list(error.results) == [m.result for m in messages]
        assert error.sent == 0
    for n, msg in enumerate(messages, 1):
        assert outcomes(msg) == {f"rcpt{n}@example.com": TEMPORARY}
        assert msg.result is not None
        assert isinstance(msg.result.error, SMTPConnectError)


# -- blocking callers ----------------------------------------------------------


def test_blocking_lost_after_dot_is_unknown_and_not_resent() -> None:
    with scripted() as server:
        server.on(".", CLOSE, match="rcpt1@")
        backend = make_backend(server, retries=3)
        messages = [message(1), message(2)]
        with backend as conn, pytest.raises(DeliveryUnknownError) as info:
            conn.send_messages(messages)
        assert info.value.sent == 1
        assert [outcomes(m) for m in messages] == [
            {"rcpt1@example.com": UNKNOWN},
            {"rcpt2@example.com": ACCEPTED},
        ]
        assert server.count("DATA") == 2
        assert len(server.sessions) == 2
        check_truth(server, messages)


def test_blocking_send_mail_fail_silently() -> None:
    with scripted() as server:
        server.on("MAIL", reply("550 5.7.1 Sender rejected"))
        with asyncmail.collect_results() as collected:
            sent = asyncmail.send_mail(
                "Subject",
                "Body",
                "sender@example.com",
                ["rcpt@example.com"],
                fail_silently=True,
                connection=make_backend(server),
            )
        assert sent == 0
        [result] = collected
        recipient = result.recipients["rcpt@example.com"]
        assert (recipient.outcome, recipient.code) == (PERMANENT, 550)
        assert server.accepted == []
