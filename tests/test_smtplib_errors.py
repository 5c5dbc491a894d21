"""SMTP failures are smtplib's exceptions too (Django's promise), and keep
asyncmail's classes and the builtins they had.

Django documents that ``send_mail`` raises ``smtplib.SMTPException``; code
written against it catches that, or ``SMTPRecipientsRefused``,
``SMTPAuthenticationError``... Every failure below is provoked by a real send
to the scripted server on 127.0.0.1 (or to nothing listening, or a TLS
handshake with a plain server), the way a Django project would send: the
blocking ``send_mail``, and the async twin for each too.
"""

from __future__ import annotations

import copy
import pickle
import smtplib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

import asyncmail
from asyncmail import (
    BadHeaderError,
    ConfigurationError,
    DataRefusedError,
    DeliveryUnknownError,
    InsecureAuthError,
    InvalidAddressError,
    InvalidMailer,
    InvalidMessageError,
    MailerDoesNotExist,
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
from asyncmail.exceptions import is_transient
from asyncmail.results import Outcome, RecipientResult
from helpers import unused_port
from scriptserver import CLOSE, DEFAULT_EXTENSIONS, SILENCE, Act, ScriptServer, reply

FROM = "sender@example.com"

# -- the classes ------------------------------------------------------------------

#: asyncmail class -> (smtplib classes it is, builtins it keeps)
MAPPING: dict[
    type[MailError], tuple[tuple[type[BaseException], ...], tuple[type, ...]]
] = {
    SMTPError: ((smtplib.SMTPException,), ()),
    SMTPConnectError: ((smtplib.SMTPConnectError,), (ConnectionError,)),
    SMTPServerDisconnectedError: (
        (smtplib.SMTPServerDisconnected, smtplib.SMTPConnectError),
        (ConnectionError,),
    ),
    SMTPTimeoutError: ((smtplib.SMTPException,), (TimeoutError,)),
    SMTPConnectTimeoutError: ((smtplib.SMTPException,), (TimeoutError,)),
    SMTPReadTimeoutError: ((smtplib.SMTPException,), (TimeoutError,)),
    SMTPPoolTimeoutError: ((smtplib.SMTPException,), (TimeoutError,)),
    SMTPDeadlineExceededError: ((smtplib.SMTPException,), (TimeoutError,)),
    TLSError: ((smtplib.SMTPException,), ()),
    SMTPAuthenticationError: ((smtplib.SMTPAuthenticationError,), ()),
    InsecureAuthError: ((smtplib.SMTPException,), ()),
    SMTPNotSupportedError: ((smtplib.SMTPNotSupportedError,), ()),
    SMTPResponseError: ((smtplib.SMTPResponseException,), ()),
    SendError: ((smtplib.SMTPException,), ()),
    RecipientsRefusedError: ((smtplib.SMTPRecipientsRefused,), ()),
    MessageRefusedError: ((smtplib.SMTPResponseException,), ()),
    SenderRefusedError: ((smtplib.SMTPSenderRefused,), ()),
    DataRefusedError: ((smtplib.SMTPDataError,), ()),
    DeliveryUnknownError: ((smtplib.SMTPServerDisconnected,), ()),
}


@pytest.mark.parametrize("cls", list(MAPPING), ids=lambda cls: cls.__name__)
def test_each_smtp_error_is_its_smtplib_class_and_keeps_its_builtin(
    cls: type[MailError],
) -> None:
    smtplib_classes, builtins = MAPPING[cls]
    assert issubclass(cls, MailError)
    assert issubclass(cls, smtplib.SMTPException)
    assert issubclass(cls, OSError)  # as smtplib's are
    for base in (*smtplib_classes, *builtins):
        assert issubclass(cls, base), base
    # Its family in asyncmail's tree is unchanged.
    assert issubclass(cls, (SMTPError, SendError))


@pytest.mark.parametrize(
    "cls",
    [BadHeaderError, InvalidAddressError, InvalidMessageError, ConfigurationError],
)
def test_bad_input_is_not_an_smtp_failure(cls: type[MailError]) -> None:
    # As in Django: bad headers and settings are ValueErrors, not SMTP errors.
    assert issubclass(cls, ValueError)
    assert not issubclass(cls, smtplib.SMTPException)


def test_every_exported_error_is_in_the_mapping_or_not_smtp() -> None:
    exported = [
        getattr(asyncmail, name)
        for name in asyncmail.__all__
        if isinstance(getattr(asyncmail, name), type)
        and issubclass(getattr(asyncmail, name), MailError)
    ]
    for cls in exported:
        if issubclass(cls, smtplib.SMTPException):
            assert cls in MAPPING, cls
        else:
            assert cls in (
                MailError,
                BadHeaderError,
                InvalidAddressError,
                InvalidMessageError,
                ConfigurationError,
                InvalidMailer,
                MailerDoesNotExist,
            ), cls


def _samples() -> list[MailError]:
    refused = {
        "a@example.com": RecipientResult(
            "a@example.com", Outcome.PERMANENT, 550, "5.1.1", "No such user"
        ),
        "b@example.com": RecipientResult("b@example.com", Outcome.TEMPORARY),
    }
    reply_args: dict[str, Any] = {
        "code": 451,
        "text": "Try later",
        "enhanced_status": "4.3.0",
    }
    samples: list[MailError] = [
        cls("something failed", **reply_args)
        for cls in MAPPING
        if cls not in (RecipientsRefusedError, SenderRefusedError)
    ]
    samples.append(RecipientsRefusedError("2 refused", refused=refused))
    samples.append(SenderRefusedError("sender refused", sender=FROM, **reply_args))
    samples.append(MailerDoesNotExist("The mailer 'x' is not configured.", alias="x"))
    samples.append(InvalidMailer("OPTIONS must define 'host'.", alias="x"))
    return samples


@pytest.mark.parametrize("error", _samples(), ids=lambda error: type(error).__name__)
@pytest.mark.parametrize(
    "clone",
    [
        lambda error: pickle.loads(pickle.dumps(error)),  # noqa: S301 - our own
        copy.copy,
        copy.deepcopy,
    ],
    ids=["pickle", "copy", "deepcopy"],
)
def test_errors_pickle_and_copy_with_their_smtplib_attributes(
    error: MailError, clone: Callable[[MailError], MailError]
) -> None:
    again = clone(error)
    assert type(again) is type(error)
    assert str(again) == str(error)
    assert again.args == error.args
    assert again.__dict__ == error.__dict__
    for name in ("smtp_code", "smtp_error", "recipients", "sender", "alias"):
        assert getattr(again, name, None) == getattr(error, name, None), name


def test_smtplib_attributes_are_smtplibs_shapes() -> None:
    error = SenderRefusedError(
        "Sender refused", sender=FROM, code=550, text="Not you", enhanced_status="5.7.1"
    )
    assert (error.smtp_code, error.smtp_error, error.sender) == (550, b"Not you", FROM)
    assert str(error) == "Sender refused"
    no_reply = SMTPServerDisconnectedError("Connection lost")
    assert (no_reply.smtp_code, no_reply.smtp_error) == (-1, b"Connection lost")
    refused = RecipientsRefusedError(
        "refused",
        refused={
            "a@example.com": RecipientResult(
                "a@example.com", Outcome.PERMANENT, 550, None, "No"
            )
        },
    )
    assert refused.recipients == {"a@example.com": (550, b"No")}


def test_mailer_does_not_exist_reads_like_a_message_and_is_a_key_error() -> None:
    error = MailerDoesNotExist("The mailer 'bulk' is not configured.", alias="bulk")
    assert isinstance(error, KeyError)
    assert isinstance(error, InvalidMailer)
    assert isinstance(error, ConfigurationError)
    assert str(error) == "The mailer 'bulk' is not configured."  # not quoted
    assert str(InvalidMailer("bad", alias="bulk")) == "MAILERS['bulk']: bad"


def test_transience_is_unchanged_by_the_smtplib_bases() -> None:
    # smtplib's bases must not change what is retried.
    assert is_transient(SMTPServerDisconnectedError("lost"))
    assert is_transient(SMTPConnectError("refused"))
    assert is_transient(SMTPTimeoutError("slow"))
    assert not is_transient(DeliveryUnknownError("maybe delivered"))
    assert not is_transient(TLSError("bad certificate"))
    assert not is_transient(SMTPAuthenticationError("535", code=535))
    assert not is_transient(SMTPConnectError("554 at greeting", code=554))


# -- real sends -------------------------------------------------------------------


@dataclass
class Case:
    """One failure: how to provoke it, and what must catch it."""

    name: str
    script: Callable[[ScriptServer], object] = lambda server: None
    extensions: tuple[str, ...] = DEFAULT_EXTENSIONS
    options: dict[str, Any] = field(default_factory=dict)
    recipients: tuple[str, ...] = ("rcpt@example.com",)
    sender: str = FROM
    no_server: bool = False
    raises: type[MailError] = SMTPError
    smtplib_class: type[smtplib.SMTPException] = smtplib.SMTPException
    builtin: type[BaseException] | None = None
    check: Callable[[Any], object] = lambda error: None
    accepted: int = 0  # messages the server accepted all the same
    #: The asyncmail class this failure raised before the smtplib bases were
    #: added (when it was a different, more general one).
    was: type[MailError] | None = None


def _on(verb: str, act: Act, **options: Any) -> Callable[[ScriptServer], object]:
    return lambda server: server.on(verb, act, **options)


CASES = [
    Case(
        "connection refused",
        no_server=True,
        raises=SMTPConnectError,
        smtplib_class=smtplib.SMTPConnectError,
        builtin=ConnectionError,
    ),
    Case(
        "554 at the greeting",
        script=_on("CONNECT", reply("554 5.7.1 Go away")),
        raises=SMTPConnectError,
        smtplib_class=smtplib.SMTPConnectError,
        builtin=ConnectionError,
        check=lambda error: error.smtp_code == 554,
    ),
    Case(
        "421 at the greeting",
        script=_on("CONNECT", reply("421 4.3.2 Busy, try later")),
        raises=SMTPConnectError,
        smtplib_class=smtplib.SMTPConnectError,
        builtin=ConnectionError,
        check=lambda error: error.smtp_code == 421,
    ),
    Case(
        "greeting never sent",
        script=_on("CONNECT", SILENCE),
        options={"timeout": 0.5, "deadline": 5.0},
        raises=SMTPConnectTimeoutError,
        builtin=TimeoutError,
    ),
    Case(
        "a server that trickles past the deadline",
        script=_on("MAIL", reply("250 2.1.0 Sender OK", trickle=0.4)),
        options={"timeout": 2.0, "deadline": 1.0},
        raises=SMTPDeadlineExceededError,
        builtin=TimeoutError,
    ),
    Case(
        "closed after EHLO",
        was=SMTPConnectError,
        script=_on("EHLO", CLOSE),
        raises=SMTPServerDisconnectedError,
        smtplib_class=smtplib.SMTPServerDisconnected,
        builtin=ConnectionError,
    ),
    Case(
        "closed after MAIL",
        was=SMTPConnectError,
        script=_on("MAIL", CLOSE),
        raises=SMTPServerDisconnectedError,
        smtplib_class=smtplib.SMTPServerDisconnected,
        builtin=ConnectionError,
    ),
    Case(
        "closed after DATA",
        was=SMTPConnectError,
        script=_on("DATA", CLOSE),
        raises=SMTPServerDisconnectedError,
        smtplib_class=smtplib.SMTPServerDisconnected,
        builtin=ConnectionError,
    ),
    Case(
        "closed after the final dot",
        script=_on(".", CLOSE),
        raises=DeliveryUnknownError,
        smtplib_class=smtplib.SMTPServerDisconnected,
    ),
    Case(
        "535 on AUTH",
        script=_on("AUTH", reply("535 5.7.8 Bad credentials")),
        extensions=(*DEFAULT_EXTENSIONS, "AUTH PLAIN"),
        options={"username": "user", "password": "secret"},
        raises=SMTPAuthenticationError,
        smtplib_class=smtplib.SMTPAuthenticationError,
        check=lambda error: (
            (error.smtp_code, error.smtp_error) == (535, b"5.7.8 Bad credentials")
        ),
    ),
    Case(
        "no AUTH offered",
        options={"username": "user", "password": "secret"},
        raises=SMTPAuthenticationError,
        smtplib_class=smtplib.SMTPAuthenticationError,
    ),
    Case(
        "STARTTLS required but not offered",
        options={"use_tls": True},
        raises=TLSError,
    ),
    Case(
        "TLS handshake with a plain server",
        options={"use_ssl": True},
        raises=TLSError,
    ),
    Case(
        "550 at MAIL",
        was=MessageRefusedError,
        script=_on("MAIL", reply("550 5.7.1 Sender rejected")),
        raises=SenderRefusedError,
        smtplib_class=smtplib.SMTPSenderRefused,
        check=lambda error: (error.sender, error.smtp_code) == (FROM, 550),
    ),
    Case(
        "451 at MAIL",
        was=MessageRefusedError,
        script=_on("MAIL", reply("451 4.3.0 Try later")),
        raises=SenderRefusedError,
        smtplib_class=smtplib.SMTPSenderRefused,
    ),
    Case(
        "550 at RCPT for every recipient",
        script=_on("RCPT", reply("550 5.1.1 No such user"), times=None),
        recipients=("a@example.com", "b@example.com"),
        raises=RecipientsRefusedError,
        smtplib_class=smtplib.SMTPRecipientsRefused,
        check=lambda error: (
            error.recipients
            == {
                # smtplib's shape: the code, and the reply's text after it.
                "a@example.com": (550, b"5.1.1 No such user"),
                "b@example.com": (550, b"5.1.1 No such user"),
            }
        ),
    ),
    Case(
        "one of two recipients refused",
        script=_on("RCPT", reply("452 4.2.2 Mailbox full"), match="b@example.com"),
        recipients=("a@example.com", "b@example.com"),
        raises=RecipientsRefusedError,
        smtplib_class=smtplib.SMTPRecipientsRefused,
        check=lambda error: list(error.recipients) == ["b@example.com"],
        accepted=1,
    ),
    Case(
        "554 to DATA",
        was=MessageRefusedError,
        script=_on("DATA", reply("554 5.5.1 No valid recipients")),
        raises=DataRefusedError,
        smtplib_class=smtplib.SMTPDataError,
    ),
    Case(
        "554 after the data",
        was=MessageRefusedError,
        script=_on(".", reply("554 5.7.1 Spam")),
        raises=DataRefusedError,
        smtplib_class=smtplib.SMTPDataError,
        check=lambda error: error.smtp_error == b"5.7.1 Spam",
    ),
    Case(
        "451 after the data",
        was=MessageRefusedError,
        script=_on(".", reply("451 4.3.0 Queue full")),
        raises=DataRefusedError,
        smtplib_class=smtplib.SMTPDataError,
    ),
    Case(
        "a reply slower than the timeout",
        script=_on("MAIL", reply("250 OK", delay=3.0)),
        options={"timeout": 0.5, "deadline": 5.0},
        raises=SMTPReadTimeoutError,
        builtin=TimeoutError,
    ),
    Case(
        "unsolicited data",
        script=_on("MAIL", reply("250 OK", after=("250 Unsolicited",))),
        raises=SMTPResponseError,
        smtplib_class=smtplib.SMTPResponseException,
    ),
    Case(
        "SMTPUTF8 needed but not offered",
        extensions=("PIPELINING", "8BITMIME"),
        recipients=("jörg@example.com",),
        raises=SMTPNotSupportedError,
        smtplib_class=smtplib.SMTPNotSupportedError,
    ),
    Case(
        "over the server's SIZE limit",
        extensions=("PIPELINING", "8BITMIME", "SMTPUTF8", "SIZE 100"),
        raises=MessageRefusedError,
        smtplib_class=smtplib.SMTPResponseException,
    ),
]


def _backend(port: int, case: Case) -> EmailBackend:
    options: dict[str, Any] = {
        "timeout": 5.0,
        "retries": 0,
        "local_hostname": "client.example",
    }
    options.update(case.options)
    return EmailBackend(host="127.0.0.1", port=port, **options)


def _check_caught(
    case: Case, send: Callable[[EmailBackend], object], port: int
) -> None:
    backend = _backend(port, case)
    # Django-era code: catching smtplib's base class.
    with pytest.raises(smtplib.SMTPException) as caught:
        send(backend)
    error = caught.value
    assert type(error) is case.raises, repr(error)
    assert isinstance(error, case.smtplib_class)
    assert isinstance(error, MailError)
    if case.builtin is not None:
        assert isinstance(error, case.builtin)
    if case.was is not None:
        assert isinstance(error, case.was)  # what caught it before still does
    assert case.check(error) in (None, True), repr(error)
    assert error.results  # asyncmail's results are there too
    assert error.sent == case.accepted


def _run(case: Case, send: Callable[[EmailBackend], object]) -> None:
    if case.no_server:
        _check_caught(case, send, unused_port())
        return
    with ScriptServer(case.extensions) as server:
        case.script(server)
        _check_caught(case, send, server.port)
        # Nothing was reported sent that the server did not accept.
        assert len(server.accepted) == case.accepted


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_blocking_send_mail_failures_are_smtplib_exceptions(case: Case) -> None:
    _run(
        case,
        lambda backend: asyncmail.send_mail(
            "Subject", "Body\n", case.sender, list(case.recipients), connection=backend
        ),
    )


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_async_send_failures_are_smtplib_exceptions(case: Case) -> None:
    import asyncio

    async def send(backend: EmailBackend) -> int:
        return await asyncmail.asend_mail(
            "Subject", "Body\n", case.sender, list(case.recipients), connection=backend
        )

    _run(case, lambda backend: asyncio.run(send(backend)))


def test_except_clauses_written_for_django_still_work() -> None:
    """The shape of real Django-era handlers: the specific smtplib class
    first, the base class last, and OSError (Django lets socket errors
    through) as a catch-all."""
    with ScriptServer() as server:
        server.on("RCPT", reply("550 5.1.1 No such user"), times=None)
        backend = _backend(server.port, Case("x"))
        try:
            asyncmail.send_mail(
                "s", "b", FROM, ["gone@example.com"], connection=backend
            )
        except smtplib.SMTPRecipientsRefused as exc:
            bad = exc.recipients
        except smtplib.SMTPException:  # pragma: no cover - the wrong branch
            pytest.fail("SMTPRecipientsRefused expected")
    assert bad == {"gone@example.com": (550, b"5.1.1 No such user")}
    port = unused_port()
    try:
        asyncmail.send_mail(
            "s", "b", FROM, ["a@example.com"], connection=_backend(port, Case("x"))
        )
    except OSError as exc:
        caught: OSError = exc
    else:  # pragma: no cover
        pytest.fail("a refused connection must raise")
    assert isinstance(caught, ConnectionError)
