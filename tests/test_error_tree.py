"""The error tree, exercised by class: every refusal and timeout a real send
to the scripted server provokes is caught by ``except SMTPError``, is its
closest smtplib class and its builtin, carries the reply on the public
attributes, pickles, and follows the one transience rule
(:func:`asyncmail.exceptions.is_transient` built on
:func:`asyncmail.results.reply_outcome`).
"""

from __future__ import annotations

import pickle
import smtplib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

import asyncmail
from asyncmail import (
    DataRefusedError,
    DeliveryUnknownError,
    MailError,
    MessageRefusedError,
    RecipientsRefusedError,
    SenderRefusedError,
    SendError,
    SMTPAuthenticationError,
    SMTPConnectError,
    SMTPConnectTimeoutError,
    SMTPDeadlineExceededError,
    SMTPError,
    SMTPNotSupportedError,
    SMTPPoolTimeoutError,
    SMTPReadTimeoutError,
    SMTPResponseError,
    SMTPServerDisconnectedError,
    SMTPTimeoutError,
    TLSError,
)
from asyncmail.backends.smtp import EmailBackend
from asyncmail.exceptions import InsecureAuthError, is_transient
from asyncmail.results import MessageStatus, Outcome, RecipientResult, reply_outcome
from asyncmail.smtp.parser import Reply
from scriptserver import CLOSE, SILENCE, Act, ScriptServer, reply

pytestmark = pytest.mark.anyio

FROM = "sender@example.com"
TO = "rcpt@example.com"

# -- the shape of the tree ---------------------------------------------------------

REFUSALS = [
    SendError,
    RecipientsRefusedError,
    MessageRefusedError,
    SenderRefusedError,
    DataRefusedError,
    DeliveryUnknownError,
]
TIMEOUTS = [
    SMTPConnectTimeoutError,
    SMTPReadTimeoutError,
    SMTPPoolTimeoutError,
    SMTPDeadlineExceededError,
]


@pytest.mark.parametrize("cls", REFUSALS, ids=lambda cls: cls.__name__)
def test_every_refusal_is_in_the_smtp_family(cls: type[MailError]) -> None:
    assert issubclass(cls, SMTPError)
    assert issubclass(cls, smtplib.SMTPException)


@pytest.mark.parametrize("cls", TIMEOUTS, ids=lambda cls: cls.__name__)
def test_every_phase_timeout_is_an_smtp_timeout_and_a_builtin_one(
    cls: type[MailError],
) -> None:
    assert issubclass(cls, SMTPTimeoutError)
    assert issubclass(cls, SMTPError)
    assert issubclass(cls, TimeoutError)
    assert not issubclass(cls, ConnectionError)  # a timeout is not a refusal
    assert cls.__name__ in asyncmail.__all__


def test_the_reply_attributes_are_on_the_public_base() -> None:
    for cls in (SMTPError, *REFUSALS, *TIMEOUTS, SMTPConnectError):
        sample = (
            cls("x", refused={})
            if cls is RecipientsRefusedError
            else cls("x", code=451)
        )
        assert isinstance(sample, SMTPError)
        assert hasattr(sample, "code")
        assert hasattr(sample, "text")
        assert hasattr(sample, "enhanced_status")
    assert "SMTPError" in asyncmail.__all__
    assert not hasattr(asyncmail.exceptions, "_ReplyError")


def test_smtplib_attribute_types_need_no_ignores() -> None:
    """smtplib.SMTPSenderRefused types smtp_error as bytes: ours is bytes."""
    error = SenderRefusedError("refused", sender=FROM, code=553, text="No")
    assert error.smtp_error == b"No"
    assert isinstance(error, smtplib.SMTPSenderRefused)
    assert isinstance(error, smtplib.SMTPResponseException)


# -- the one transience rule -------------------------------------------------------


@pytest.mark.parametrize("code", range(100, 700))
def test_replies_and_errors_follow_one_rule_for_every_code(code: int) -> None:
    outcome = reply_outcome(code)
    # What the backend decides from a reply...
    assert Reply(code, "text").outcome is outcome
    # ...and what is_transient decides from an error carrying that reply.
    for error in (
        SMTPResponseError("x", code=code),
        SMTPConnectError("x", code=code),
        SenderRefusedError("x", code=code),
        DataRefusedError("x", code=code),
        SMTPTimeoutError("x", code=code),
    ):
        assert is_transient(error) is (outcome is Outcome.TEMPORARY), error
    expected = {2: Outcome.ACCEPTED, 3: Outcome.ACCEPTED, 4: Outcome.TEMPORARY}
    assert outcome is expected.get(code // 100, Outcome.PERMANENT)


def test_recipients_refused_is_transient_only_when_every_refusal_is() -> None:
    def refused(*codes: int) -> RecipientsRefusedError:
        return RecipientsRefusedError(
            "refused",
            refused={
                f"r{i}@example.com": RecipientResult(
                    f"r{i}@example.com", reply_outcome(code), code
                )
                for i, code in enumerate(codes)
            },
        )

    assert is_transient(refused(450, 451))
    assert not is_transient(refused(450, 550))
    assert not is_transient(refused(550))


@pytest.mark.parametrize(
    "error",
    [
        TimeoutError("someone else's"),
        TimeoutError(),
        ConnectionRefusedError(),
        ConnectionResetError(),
        OSError("disk"),
        ValueError("bad"),
    ],
    ids=lambda error: type(error).__name__,
)
def test_a_foreign_error_is_not_transient(error: BaseException) -> None:
    """A foreign error does not say whether the data had reached the server:
    retrying it could deliver twice."""
    assert not is_transient(error)


@pytest.mark.parametrize(
    "error",
    [
        DeliveryUnknownError("maybe delivered"),
        TLSError("bad certificate"),
        SMTPAuthenticationError("refused", code=454),  # even a 4xx AUTH reply
        InsecureAuthError("clear text"),
        SMTPNotSupportedError("no SMTPUTF8"),
        SMTPError("no reply, no phase"),
        MessageRefusedError("over the SIZE limit"),
    ],
    ids=lambda error: type(error).__name__,
)
def test_failures_that_retrying_will_not_fix(error: MailError) -> None:
    assert not is_transient(error)


@pytest.mark.parametrize(
    "error",
    [cls("no reply") for cls in (*TIMEOUTS, SMTPConnectError)]
    + [SMTPServerDisconnectedError("lost before the end of data")],
    ids=lambda error: type(error).__name__,
)
def test_our_own_timeouts_and_lost_connections_are_transient(error: MailError) -> None:
    assert is_transient(error)


# -- real sends ---------------------------------------------------------------------


@dataclass
class Case:
    name: str
    script: Callable[[ScriptServer], object]
    raises: type[SMTPError]
    smtplib_class: type[smtplib.SMTPException]
    builtin: type[BaseException] | None = None
    transient: bool = False
    code: int | None = None
    text: str | None = None
    enhanced_status: str | None = None
    outcome: Outcome | None = None  # the recipient's
    options: dict[str, Any] = field(default_factory=dict)


def _on(verb: str, act: Act) -> Callable[[ScriptServer], object]:
    return lambda server: server.on(verb, act, times=None)


CASES = [
    Case(
        "RCPT 550",
        _on("RCPT", reply("550 5.1.1 No such user")),
        RecipientsRefusedError,
        smtplib.SMTPRecipientsRefused,
        outcome=Outcome.PERMANENT,
    ),
    Case(
        "RCPT 450",
        _on("RCPT", reply("450 4.2.1 Mailbox busy")),
        RecipientsRefusedError,
        smtplib.SMTPRecipientsRefused,
        transient=True,
        outcome=Outcome.TEMPORARY,
    ),
    Case(
        "MAIL 553",
        _on("MAIL", reply("553 5.1.8 Bad sender domain")),
        SenderRefusedError,
        smtplib.SMTPSenderRefused,
        code=553,
        text="5.1.8 Bad sender domain",
        enhanced_status="5.1.8",
        outcome=Outcome.PERMANENT,
    ),
    Case(
        "MAIL 451",
        _on("MAIL", reply("451 4.3.0 Try later")),
        SenderRefusedError,
        smtplib.SMTPSenderRefused,
        transient=True,
        code=451,
        text="4.3.0 Try later",
        enhanced_status="4.3.0",
        outcome=Outcome.TEMPORARY,
    ),
    Case(
        "DATA 554",
        _on("DATA", reply("554 5.3.4 No data today")),
        DataRefusedError,
        smtplib.SMTPDataError,
        code=554,
        text="5.3.4 No data today",
        enhanced_status="5.3.4",
        outcome=Outcome.PERMANENT,
    ),
    Case(
        "452 after the data",
        _on(".", reply("452 4.3.1 Queue full")),
        DataRefusedError,
        smtplib.SMTPDataError,
        transient=True,
        code=452,
        text="4.3.1 Queue full",
        enhanced_status="4.3.1",
        outcome=Outcome.TEMPORARY,
    ),
    Case(
        "421 at the greeting",
        _on("CONNECT", reply("421 4.3.2 Busy")),
        SMTPConnectError,
        smtplib.SMTPConnectError,
        builtin=ConnectionError,
        transient=True,
        code=421,
        text="4.3.2 Busy",
        enhanced_status="4.3.2",
        outcome=Outcome.TEMPORARY,
    ),
    Case(
        "lost after the end of data",
        _on(".", CLOSE),
        DeliveryUnknownError,
        smtplib.SMTPServerDisconnected,
        outcome=Outcome.UNKNOWN,
    ),
    Case(
        "connect: no greeting within the timeout",
        _on("CONNECT", SILENCE),
        SMTPConnectTimeoutError,
        smtplib.SMTPException,
        builtin=TimeoutError,
        transient=True,
        outcome=Outcome.TEMPORARY,
        options={"timeout": 0.3, "deadline": 10.0},
    ),
    Case(
        "read: a reply slower than the timeout",
        _on("RCPT", reply("250 OK", delay=3.0)),
        SMTPReadTimeoutError,
        smtplib.SMTPException,
        builtin=TimeoutError,
        transient=True,
        outcome=Outcome.TEMPORARY,
        options={"timeout": 0.3, "deadline": 10.0},
    ),
    Case(
        "deadline: replies trickling past the message's deadline",
        _on("MAIL", reply("250 2.1.0 Sender OK", trickle=0.2)),
        SMTPDeadlineExceededError,
        smtplib.SMTPException,
        builtin=TimeoutError,
        transient=True,
        outcome=Outcome.TEMPORARY,
        options={"timeout": 5.0, "deadline": 0.6},
    ),
    Case(
        "deadline: silence after the end of data",
        _on(".", SILENCE),
        DeliveryUnknownError,
        smtplib.SMTPServerDisconnected,
        outcome=Outcome.UNKNOWN,  # the UNKNOWN rule holds after the data
        options={"timeout": 0.3, "deadline": 10.0},
    ),
]


def _backend(port: int, **options: Any) -> EmailBackend:
    settings: dict[str, Any] = {
        "timeout": 5.0,
        "retries": 0,
        "local_hostname": "client.example",
    }
    settings.update(options)
    return EmailBackend(host="127.0.0.1", port=port, **settings)


def _check_class(case: Case, error: SMTPError) -> None:
    assert type(error) is case.raises, repr(error)
    assert isinstance(error, SMTPError)
    assert isinstance(error, case.smtplib_class)
    if case.builtin is not None:
        assert isinstance(error, case.builtin)
    if case.code is not None:
        assert (error.code, error.smtp_code) == (case.code, case.code)
        assert error.text == case.text
        assert error.smtp_error == (case.text or "").encode()
        assert error.enhanced_status == case.enhanced_status
    assert is_transient(error) is case.transient
    again = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own
    assert type(again) is type(error)
    assert str(again) == str(error)
    for name in ("code", "text", "enhanced_status", "smtp_code", "smtp_error"):
        assert getattr(again, name) == getattr(error, name), name
    assert is_transient(again) is case.transient


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
async def test_except_smtp_error_catches_every_failure_of_a_real_send(
    case: Case,
) -> None:
    with ScriptServer() as server:
        case.script(server)
        backend = _backend(server.port, **case.options)
        message = asyncmail.EmailMessage("s", "b\n", FROM, [TO], connection=backend)
        try:
            await message.asend()
        except SMTPError as exc:  # the one clause every failure reaches
            error = exc
        else:  # pragma: no cover - the failure must raise
            pytest.fail(f"{case.name}: nothing raised")
    _check_class(case, error)
    result = message.result
    assert result is not None
    assert result.error is error
    recipient = result.recipients[TO]
    assert recipient.outcome is case.outcome
    if case.outcome is not Outcome.UNKNOWN and recipient.code is not None:
        # The recipient's outcome and the error's transience are one rule.
        assert recipient.outcome is reply_outcome(recipient.code)
    if case.outcome is Outcome.UNKNOWN:
        assert result.status is MessageStatus.UNKNOWN
    elif case.transient:
        assert recipient.outcome is Outcome.TEMPORARY
    else:
        assert recipient.outcome is Outcome.PERMANENT


def test_blocking_sends_raise_the_same_classes() -> None:
    case = CASES[0]
    with ScriptServer() as server:
        case.script(server)
        backend = _backend(server.port)
        with pytest.raises(SMTPError) as caught:
            asyncmail.send_mail("s", "b\n", FROM, [TO], connection=backend)
    _check_class(case, caught.value)
    assert caught.value.refused[TO].code == 550


async def test_pool_wait_timeout_names_its_phase() -> None:
    """Waiting for the only connection slot past the deadline is a pool
    timeout: the server had nothing to do with it."""
    with ScriptServer() as server:
        backend = _backend(server.port, max_connections=1, deadline=0.3)
        first = asyncmail.EmailMessage("1", "b\n", FROM, [TO])
        second = asyncmail.EmailMessage("2", "b\n", FROM, [TO])
        async with backend:
            pool = backend.pool
            assert pool is not None
            held = await pool.acquire()

            async def messages() -> AsyncIterator[asyncmail.EmailMessage]:
                yield first
                await pool.release(held, reusable=False)
                yield second

            with pytest.raises(SMTPError) as caught:
                await backend.send_messages(messages())
    case = Case(
        "pool",
        lambda server: None,
        SMTPPoolTimeoutError,
        smtplib.SMTPException,
        builtin=TimeoutError,
        transient=True,
    )
    _check_class(case, caught.value)
    assert first.result is not None
    assert first.result.recipients[TO].outcome is Outcome.TEMPORARY
    assert second.result is not None
    assert second.result.status is MessageStatus.SENT
    assert len(server.accepted) == 1


async def test_connect_deadline_names_its_phase() -> None:
    """A deadline shorter than the timeout ends a silent greeting: the
    deadline is what passed."""
    with ScriptServer() as server:
        server.on("CONNECT", SILENCE)
        backend = _backend(server.port, timeout=10.0, deadline=0.3)
        with pytest.raises(SMTPError) as caught:
            await backend.open()
    case = Case(
        "deadline at connect",
        lambda server: None,
        SMTPDeadlineExceededError,
        smtplib.SMTPException,
        builtin=TimeoutError,
        transient=True,
    )
    _check_class(case, caught.value)
