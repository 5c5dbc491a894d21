"""The transaction state machine, driven reply by reply with no socket.

A small sans-I/O server answers each command the machine wants written (a
real server's rules: 503 after a refused MAIL, 554 to DATA with no
recipient), with one fault injected per case: every in-session fault of
tests/test_faults.py's table (refusals at MAIL, RCPT, DATA and the final
dot; connections dropped before and after the end of data; timeouts;
malformed conversations), on the pipelined and the sequential path. Each
case asserts the bytes the machine wrote and the outcome it produced.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import pytest

from asyncmail import (
    DeliveryUnknownError,
    MailError,
    MessageRefusedError,
    Outcome,
    RecipientsRefusedError,
    SMTPConnectError,
    SMTPError,
    SMTPResponseError,
    SMTPServerDisconnectedError,
    SMTPTimeoutError,
)
from asyncmail.smtp.parser import Reply
from asyncmail.smtp.transaction import (
    DONE,
    Phase,
    Read,
    SendData,
    Transaction,
    Write,
    plausible,
)

ACCEPTED, TEMPORARY = Outcome.ACCEPTED, Outcome.TEMPORARY
PERMANENT, UNKNOWN = Outcome.PERMANENT, Outcome.UNKNOWN
PAYLOAD = b"Subject: hi\r\n\r\n..dot-stuffed\r\n.\r\n"
SENDER = "from@example.com"

#: Faults: what the server does instead of answering.
DROP = "drop"  # the connection is lost (SMTPServerDisconnectedError)
TIMEOUT = "timeout"  # no reply in time (SMTPTimeoutError)
GARBAGE = "garbage"  # the parser refused the reply (SMTPResponseError)
DROP_IN_BODY = "drop-in-body"  # lost while the data is written, before its end


def _error(fault: str) -> MailError:
    return {
        DROP: SMTPServerDisconnectedError("Connection lost"),
        TIMEOUT: SMTPTimeoutError("Timed out waiting for the server"),
        GARBAGE: SMTPResponseError("The server sent an endless multi-line reply"),
    }[fault]


@dataclass
class Server:
    """Answers commands as a strict server would, with *faults* by verb
    (MAIL, RCPT, DATA, "." for the end of data, RSET): a reply line, or
    one of the fault names above. A fault fires once; after DROP every
    later read fails too."""

    faults: dict[str, str] = field(default_factory=dict)
    unsolicited_before: str | None = None  # a verb: an extra 250 before its reply
    mail_ok: bool = False
    rcpt_ok: int = 0
    dropped: bool = False

    def answer(self, verb: str) -> list[Reply | str]:
        if self.dropped:
            return [DROP]
        extra: list[Reply | str] = []
        if self.unsolicited_before == verb:
            self.unsolicited_before = None
            extra.append(Reply(250, "2.0.0 Unsolicited"))
        fault = self.faults.pop(verb, None)
        if fault in (DROP, TIMEOUT, GARBAGE, DROP_IN_BODY):
            if fault == DROP:
                self.dropped = True
            return [*extra, fault]
        if fault is not None:
            code, text = fault.split(" ", 1)
            reply = Reply(int(code), text)
            if reply.code == 421:
                self.dropped = True
        else:
            reply = self._normal(verb)
        if verb == "MAIL":
            self.mail_ok = reply.positive
        elif verb == "RCPT" and reply.positive:
            self.rcpt_ok += 1
        return [*extra, reply]

    def _normal(self, verb: str) -> Reply:
        if verb == "MAIL":
            return Reply(250, "2.1.0 Sender OK")
        if verb == "RCPT":
            if not self.mail_ok:
                return Reply(503, "5.5.1 Bad sequence of commands")
            return Reply(250, "2.1.5 Recipient OK")
        if verb == "DATA":
            if not self.mail_ok or not self.rcpt_ok:
                return Reply(554, "5.5.1 No valid recipients")
            return Reply(354, "End data with <CR><LF>.<CR><LF>")
        if verb == "EMPTY":
            return Reply(554, "5.6.0 No message")
        return Reply(250, "2.0.0 OK")  # ".", RSET


@dataclass
class Run:
    written: list[bytes]
    transaction: Transaction

    @property
    def commands(self) -> list[bytes]:
        """Every command line written, in order (the data as DATA-BYTES)."""
        lines: list[bytes] = []
        for chunk in self.written:
            if chunk == PAYLOAD:
                lines.append(b"<data>")
            else:
                lines.extend(chunk.split(b"\r\n")[:-1])
        return lines


def drive(
    transaction: Transaction, server: Server, *, flushed_before_drop: bool = True
) -> Run:
    """Do what the machine asks, as smtp/connection.py does, against
    *server*; return what was written."""
    written: list[bytes] = []
    pending: deque[Reply | str] = deque()
    try:
        while (action := transaction.next_action()) is not DONE:
            if isinstance(action, Write):
                written.append(action.data)
                lines = action.data.split(b"\r\n")[:-1]
                assert len(lines) == action.replies
                for line in lines:
                    verb = line.split(b" ", 1)[0].split(b":", 1)[0].decode()
                    if verb == "." and transaction.phase is Phase.EMPTY_DATA:
                        verb = "EMPTY"
                    pending.extend(server.answer(verb))
            elif isinstance(action, Read):
                event = pending.popleft()
                if isinstance(event, str):
                    error = _error(event)
                    if transaction.lost(error):
                        continue
                    raise error
                transaction.receive(event)
            elif isinstance(action, SendData):
                written.append(action.payload)  # type: ignore[arg-type]
                answer = server.answer(".")
                if answer == [DROP_IN_BODY]:
                    raise SMTPServerDisconnectedError("Connection lost mid-body")
                transaction.end_of_data_written()
                pending.extend(answer)
    except MailError as exc:
        transaction.fail(exc)
    return Run(written, transaction)


def run(
    pipelining: bool,
    recipients: tuple[str, ...] = ("a@example.com",),
    **server: object,
) -> Run:
    transaction = Transaction(SENDER, list(recipients), PAYLOAD, pipelining=pipelining)
    return drive(transaction, Server(**server))  # type: ignore[arg-type]


MODES = [pytest.param(True, id="pipelined"), pytest.param(False, id="sequential")]


# -- the bytes ----------------------------------------------------------------


def test_pipelined_envelope_is_one_write() -> None:
    result = run(True, ("a@example.com", "b@example.com"))
    assert result.written == [
        b"MAIL FROM:<from@example.com>\r\n"
        b"RCPT TO:<a@example.com>\r\n"
        b"RCPT TO:<b@example.com>\r\n"
        b"DATA\r\n",
        PAYLOAD,
    ]
    txn = result.transaction
    assert txn.error is None
    assert txn.settled
    assert txn.reusable
    assert txn.end_written
    assert txn.reply == "250 2.0.0 OK"
    assert {a: r.outcome for a, r in txn.recipients.items()} == {
        "a@example.com": ACCEPTED,
        "b@example.com": ACCEPTED,
    }
    assert txn.phase is Phase.DONE


def test_sequential_envelope_waits_for_each_reply() -> None:
    result = run(False, ("a@example.com", "b@example.com"))
    assert result.written == [
        b"MAIL FROM:<from@example.com>\r\n",
        b"RCPT TO:<a@example.com>\r\n",
        b"RCPT TO:<b@example.com>\r\n",
        b"DATA\r\n",
        PAYLOAD,
    ]
    assert result.transaction.error is None


def test_mail_parameters() -> None:
    transaction = Transaction(
        SENDER,
        ["a@example.com"],
        PAYLOAD,
        pipelining=True,
        size=True,
        eight_bit=True,
        smtputf8=True,
    )
    action = transaction.next_action()
    assert isinstance(action, Write)
    assert action.data.startswith(
        f"MAIL FROM:<from@example.com> SIZE={len(PAYLOAD)} BODY=8BITMIME "
        "SMTPUTF8\r\n".encode()
    )
    assert action.replies == 3


def test_non_ascii_command_is_utf8_only_with_smtputf8() -> None:
    transaction = Transaction(
        "j\u00f6rg@example.com", ["a@example.com"], PAYLOAD, pipelining=True
    )
    with pytest.raises(UnicodeEncodeError):
        transaction.next_action()
    transaction = Transaction(
        "j\u00f6rg@example.com",
        ["a@example.com"],
        PAYLOAD,
        pipelining=True,
        smtputf8=True,
    )
    action = transaction.next_action()
    assert isinstance(action, Write)
    assert action.data.startswith("MAIL FROM:<j\u00f6rg@example.com>".encode())


@pytest.mark.parametrize("pipelining", MODES)
@pytest.mark.parametrize("bad", ["a@example.com\r\nRSET", "a\n@x", "a\0@x"])
def test_a_line_break_in_a_command_is_never_written(pipelining: bool, bad: str) -> None:
    result = run(pipelining, ("ok@example.com", bad))
    if pipelining:
        assert result.written == []
    else:  # MAIL and the first RCPT went; the bad one never does
        assert b"\r\n".join(result.commands).count(b"RSET") == 0
        assert all(b"\n" not in line and b"\0" not in line for line in result.commands)
    txn = result.transaction
    assert isinstance(txn.error, SMTPError)
    assert "line break" in str(txn.error)
    assert not txn.reusable


def test_data_accepted_with_no_recipient_is_ended_empty() -> None:
    """RFC 2920: a pipelined DATA may get 354 although every RCPT failed;
    the client ends it with an empty message (never the data). The reply to
    that end of data closes the transaction: no RSET follows (with
    cross-message pipelining the next MAIL may already be on its way)."""
    server = Server(faults={"RCPT": "550 5.1.1 No such user", "DATA": "354 go"})
    txn = Transaction(SENDER, ["a@example.com"], PAYLOAD, pipelining=True)
    result = drive(txn, server)
    assert result.written[1:] == [b".\r\n"]
    assert PAYLOAD not in result.written
    assert isinstance(txn.error, RecipientsRefusedError)
    assert txn.recipients["a@example.com"].code == 550
    assert not txn.end_written
    assert txn.reusable


def test_partly_refused_envelope() -> None:
    server = Server(faults={"RCPT": "550 5.1.1 No such user"})
    txn = Transaction(
        SENDER, ["bad@example.com", "good@example.com"], PAYLOAD, pipelining=True
    )
    result = drive(txn, server)
    # The reply to the end of data ends the transaction: no RSET after it.
    assert result.commands[-1] == b"<data>"
    assert txn.data_recipients == ("good@example.com",)
    assert txn.recipients["good@example.com"].outcome is ACCEPTED
    assert txn.recipients["bad@example.com"].outcome is PERMANENT
    assert isinstance(txn.error, RecipientsRefusedError)
    assert "1 of 2 recipient(s) refused" in str(txn.error)


def test_refused_reset_makes_the_session_unusable() -> None:
    server = Server(faults={"RCPT": "550 5.1.1 No such user", "RSET": "500 huh"})
    txn = Transaction(SENDER, ["a@example.com"], PAYLOAD, pipelining=False)
    drive(txn, server)
    assert txn.settled
    assert not txn.reusable


def test_sender_refused_for_want_of_auth_says_so() -> None:
    server = Server(faults={"MAIL": "530 5.7.0 Authentication required"})
    txn = Transaction(SENDER, ["a@example.com"], PAYLOAD, pipelining=True)
    drive(txn, server)
    assert isinstance(txn.error, MessageRefusedError)
    assert "EMAIL_HOST_USER" in str(txn.error)


def test_out_of_step_replies_are_not_trusted() -> None:
    assert plausible([Reply(250, ""), Reply(250, ""), Reply(354, "")], 1)
    assert not plausible([Reply(354, ""), Reply(250, "")], 1)
    assert not plausible([Reply(250, ""), Reply(250, ""), Reply(250, "")], 1)
    assert not plausible([Reply(250, ""), Reply(199, "")], 1)


# -- every in-session fault of the fault table ---------------------------------


@dataclass(frozen=True)
class Fault:
    name: str
    faults: dict[str, str]
    outcome: Outcome
    error: type[MailError] | tuple[type[MailError], ...]
    code: int | None = None
    #: The session may carry another message afterwards.
    reusable: bool = False
    #: The end of data was handed to the OS (never resent from then on).
    end_written: bool = False
    unsolicited_before: str | None = None


FAULTS = [
    Fault("close-after-MAIL", {"MAIL": DROP}, TEMPORARY, SMTPConnectError),
    Fault("close-after-RCPT", {"RCPT": DROP}, TEMPORARY, SMTPConnectError),
    Fault("close-after-DATA", {"DATA": DROP}, TEMPORARY, SMTPConnectError),
    Fault("close-mid-body", {".": DROP_IN_BODY}, TEMPORARY, SMTPConnectError),
    Fault(
        "close-after-dot",
        {".": DROP},
        UNKNOWN,
        DeliveryUnknownError,
        end_written=True,
    ),
    Fault(
        "MAIL-451",
        {"MAIL": "451 4.3.0 Temporary local problem"},
        TEMPORARY,
        MessageRefusedError,
        code=451,
        reusable=True,
    ),
    Fault(
        "MAIL-421",
        {"MAIL": "421 4.3.2 Shutting down"},
        TEMPORARY,
        MessageRefusedError,
        code=421,
    ),
    Fault(
        "MAIL-550",
        {"MAIL": "550 5.7.1 Sender rejected"},
        PERMANENT,
        MessageRefusedError,
        code=550,
        reusable=True,
    ),
    Fault(
        "RCPT-450",
        {"RCPT": "450 4.2.1 Mailbox busy"},
        TEMPORARY,
        RecipientsRefusedError,
        code=450,
        reusable=True,
    ),
    Fault(
        "RCPT-452",
        {"RCPT": "452 4.5.3 Too many recipients"},
        TEMPORARY,
        RecipientsRefusedError,
        code=452,
        reusable=True,
    ),
    Fault(
        "RCPT-421",
        {"RCPT": "421 4.3.2 Shutting down"},
        TEMPORARY,
        RecipientsRefusedError,
        code=421,
    ),
    Fault(
        "RCPT-550",
        {"RCPT": "550 5.1.1 No such user"},
        PERMANENT,
        RecipientsRefusedError,
        code=550,
        reusable=True,
    ),
    Fault(
        "DATA-451",
        {"DATA": "451 4.3.1 Insufficient system storage"},
        TEMPORARY,
        MessageRefusedError,
        code=451,
        reusable=True,
    ),
    Fault(
        "DATA-554",
        {"DATA": "554 5.3.4 Transaction failed"},
        PERMANENT,
        MessageRefusedError,
        code=554,
        reusable=True,
    ),
    Fault(
        "dot-451",
        {".": "451 4.3.0 Queue full, try later"},
        TEMPORARY,
        MessageRefusedError,
        code=451,
        reusable=True,
        end_written=True,
    ),
    Fault(
        "dot-421",
        {".": "421 4.3.2 Shutting down"},
        TEMPORARY,
        MessageRefusedError,
        code=421,
        end_written=True,
    ),
    Fault(
        "dot-554",
        {".": "554 5.6.0 Content rejected"},
        PERMANENT,
        MessageRefusedError,
        code=554,
        reusable=True,
        end_written=True,
    ),
    Fault(
        "dot-odd-reply",
        {".": "354 again?"},
        UNKNOWN,
        DeliveryUnknownError,
        end_written=True,
    ),
    Fault("MAIL-slower-than-timeout", {"MAIL": TIMEOUT}, TEMPORARY, SMTPTimeoutError),
    Fault("RCPT-slower-than-timeout", {"RCPT": TIMEOUT}, TEMPORARY, SMTPTimeoutError),
    Fault("DATA-slower-than-timeout", {"DATA": TIMEOUT}, TEMPORARY, SMTPTimeoutError),
    Fault(
        "dot-slower-than-timeout",
        {".": TIMEOUT},
        UNKNOWN,
        DeliveryUnknownError,
        end_written=True,
    ),
    Fault(
        "unsolicited-line-before-MAIL-reply",
        {},
        TEMPORARY,
        SMTPResponseError,
        unsolicited_before="MAIL",
    ),
    Fault("endless-reply-to-MAIL", {"MAIL": GARBAGE}, TEMPORARY, SMTPResponseError),
    Fault(
        "endless-reply-to-dot",
        {".": GARBAGE},
        UNKNOWN,
        DeliveryUnknownError,
        end_written=True,
    ),
]


@pytest.mark.parametrize("pipelining", MODES)
@pytest.mark.parametrize("fault", FAULTS, ids=lambda fault: fault.name)
def test_fault(fault: Fault, pipelining: bool) -> None:
    server = Server(dict(fault.faults), unsolicited_before=fault.unsolicited_before)
    txn = Transaction(SENDER, ["rcpt@example.com"], PAYLOAD, pipelining=pipelining)
    result = drive(txn, server)

    assert txn.settled
    assert txn.phase is Phase.DONE
    (outcome,) = txn.recipients.values()
    assert outcome.address == "rcpt@example.com"
    assert outcome.outcome is fault.outcome
    assert isinstance(txn.error, fault.error), txn.error
    if fault.code is not None:
        assert outcome.code == fault.code
        if not isinstance(txn.error, RecipientsRefusedError):  # per recipient
            assert txn.error.code == fault.code  # type: ignore[union-attr]
    assert txn.reusable is fault.reusable
    assert txn.end_written is fault.end_written
    # The data is written only after 354, and at most once.
    commands = result.commands
    assert commands.count(b"<data>") <= 1
    if b"<data>" in commands:
        assert txn.data_recipients == ("rcpt@example.com",)
    else:
        assert not txn.end_written
    # A session left for reuse was reset after a refusal before the data (a
    # reply to the end of data ends the transaction by itself); a broken
    # one gets nothing more.
    if fault.reusable and not txn.end_written:
        assert commands[-1] == b"RSET"
    else:
        assert b"RSET" not in commands


@pytest.mark.parametrize("pipelining", MODES)
def test_refusal_received_before_a_drop_stands(pipelining: bool) -> None:
    """A 550 that arrived is final, whatever happens next; the recipient
    with no reply yet is safe to retry."""
    server = Server(faults={"RCPT": "550 5.1.1 No such user"})
    txn = Transaction(
        SENDER, ["bad@example.com", "other@example.com"], PAYLOAD, pipelining=pipelining
    )
    # The second RCPT's reply never comes.
    original = server.answer
    calls = {"RCPT": 0}

    def answer(verb: str) -> list[Reply | str]:
        if verb == "RCPT":
            calls["RCPT"] += 1
            if calls["RCPT"] == 2:
                server.dropped = True
                return [DROP]
        return original(verb)

    server.answer = answer  # type: ignore[method-assign]
    drive(txn, server)
    assert txn.recipients["bad@example.com"].outcome is PERMANENT
    assert txn.recipients["bad@example.com"].code == 550
    assert txn.recipients["other@example.com"].outcome is TEMPORARY
    assert isinstance(txn.error, SMTPConnectError)
    assert not txn.reusable


def test_421_in_a_pipelined_envelope_settles_the_rest_with_it() -> None:
    server = Server(faults={"RCPT": "421 4.3.2 Shutting down"})
    txn = Transaction(
        SENDER, ["a@example.com", "b@example.com"], PAYLOAD, pipelining=True
    )
    drive(txn, server)
    assert [r.code for r in txn.recipients.values()] == [421, 421]
    assert txn.error is not None
    assert not txn.reusable


def test_fail_after_settled_keeps_the_outcome() -> None:
    txn = Transaction(SENDER, ["a@example.com"], PAYLOAD, pipelining=True)
    server = Server(faults={"RCPT": "550 5.1.1 No", "RSET": DROP})
    drive(txn, server)
    assert isinstance(txn.error, RecipientsRefusedError)
    assert txn.recipients["a@example.com"].code == 550
    assert not txn.reusable


# -- cancellation ----------------------------------------------------------------


def _until_final(pipelining: bool) -> Transaction:
    """A transaction whose end of data was written, final reply pending."""
    txn = Transaction(SENDER, ["a@example.com"], PAYLOAD, pipelining=pipelining)
    server = Server()
    pending: deque[Reply | str] = deque()
    while True:
        action = txn.next_action()
        if isinstance(action, Write):
            for line in action.data.split(b"\r\n")[:-1]:
                pending.extend(
                    server.answer(line.split(b" ")[0].split(b":")[0].decode())
                )
        elif isinstance(action, Read):
            if not pending:
                return txn
            reply = pending.popleft()
            assert isinstance(reply, Reply)
            txn.receive(reply)
        elif isinstance(action, SendData):
            txn.end_of_data_written()
        else:  # pragma: no cover - the final reply is never given
            raise AssertionError(action)


@pytest.mark.parametrize("pipelining", MODES)
def test_cancelled_with_the_final_reply_queued_is_accepted(pipelining: bool) -> None:
    txn = _until_final(pipelining)
    assert txn.awaiting_final
    txn.cancelled([Reply(250, "2.0.0 Queued")])
    assert txn.recipients["a@example.com"].outcome is ACCEPTED
    assert txn.reply == "250 2.0.0 Queued"
    assert not txn.reusable
    assert txn.settled


@pytest.mark.parametrize("pipelining", MODES)
def test_cancelled_after_the_end_of_data_is_unknown(pipelining: bool) -> None:
    txn = _until_final(pipelining)
    txn.cancelled([])
    assert txn.recipients["a@example.com"].outcome is UNKNOWN
    assert "may have been delivered" in txn.recipients["a@example.com"].text
    assert isinstance(txn.error, DeliveryUnknownError)


def test_cancelled_before_anything_is_temporary_and_keeps_queued_refusals() -> None:
    txn = Transaction(
        SENDER, ["a@example.com", "b@example.com"], PAYLOAD, pipelining=True
    )
    assert isinstance(txn.next_action(), Write)
    txn.receive(Reply(250, "ok"))  # MAIL
    txn.cancelled([Reply(550, "5.1.1 no such user")])  # a's reply, not read yet
    assert txn.recipients["a@example.com"].code == 550
    assert txn.recipients["b@example.com"].outcome is TEMPORARY
    assert "interrupted" in str(txn.error)
