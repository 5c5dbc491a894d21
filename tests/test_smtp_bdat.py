"""CHUNKING (RFC 3030): the transaction machine's BDAT path, byte by byte.

A small sans-I/O server parses what the machine writes as a real one
would (BDAT sizes exact, the chunk's octets read before the reply, 554 to
a chunk with no recipient, 503 after a refused chunk) and answers with one
fault injected per case: refusals at MAIL, RCPT, a chunk and the LAST one,
421 at each point, connections lost before and after the LAST chunk was
flushed, timeouts, out-of-step replies. Each case runs for a message in
bytes and a streamed one, with and without PIPELINING, and asserts the
bytes written and the outcome produced.

Then end to end: the SMTP backend against the scripted server offering
CHUNKING, asserting what the server received, byte for byte.
"""

from __future__ import annotations

import base64
import random
import re
from collections import deque
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import default as default_policy
from pathlib import Path

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asyncmail import (
    DeliveryUnknownError,
    EmailMessage,
    MailError,
    MessageRefusedError,
    MessageStatus,
    Outcome,
    RawMessage,
    RecipientsRefusedError,
    SMTPConnectError,
    SMTPError,
    SMTPResponseError,
    SMTPServerDisconnectedError,
    SMTPTimeoutError,
)
from asyncmail.backends.smtp import end_of_data_hook
from asyncmail.message import Base64Payload
from asyncmail.smtp.parser import Reply
from asyncmail.smtp.transaction import (
    DONE,
    Phase,
    Read,
    SendChunks,
    SendData,
    Transaction,
    Write,
)
from asyncmail.smtp.wire import WirePayload
from helpers import make_backend, message
from scriptserver import CLOSE, DEFAULT_EXTENSIONS, Act, ScriptServer, reply

ACCEPTED, TEMPORARY = Outcome.ACCEPTED, Outcome.TEMPORARY
PERMANENT, UNKNOWN = Outcome.PERMANENT, Outcome.UNKNOWN
SENDER = "from@example.com"
#: Not stuffed: under BDAT a line starting with "." goes as it is.
BODY = b"Subject: hi\r\n\r\n.a dot line\r\n.\r\nend\r\n"
ATTACHMENT = bytes(range(256)) * 3
STREAMED: WirePayload = (
    b"Subject: hi\r\n\r\n--b\r\n",
    Base64Payload(ATTACHMENT),
    b"\r\n.tail\r\n--b--\r\n",
)
STREAMED_OCTETS = (
    STREAMED[0] + base64.encodebytes(ATTACHMENT).replace(b"\n", b"\r\n") + STREAMED[2]
)

DROP = "drop"  # the connection is lost (SMTPServerDisconnectedError)
TIMEOUT = "timeout"  # no reply in time (SMTPTimeoutError)
GARBAGE = "garbage"  # the parser refused the reply (SMTPResponseError)
UNFLUSHED = "unflushed"  # lost while the LAST chunk was still in our buffer
EXCESS = "excess"  # the parser saw more replies than announced

_BDAT = re.compile(rb"BDAT ([0-9]+)( LAST)?")


def _error(fault: str) -> MailError:
    return {
        DROP: SMTPServerDisconnectedError("Connection lost"),
        TIMEOUT: SMTPTimeoutError("Timed out waiting for the server"),
        GARBAGE: SMTPResponseError("The server sent an endless multi-line reply"),
        EXCESS: SMTPResponseError("Unsolicited data from the server"),
    }[fault]


def _octets(content: bytes | Base64Payload) -> bytes:
    return content if isinstance(content, bytes) else b"".join(content.blocks())


@dataclass
class Server:
    """Parses the byte stream the machine writes and answers each command
    and chunk as a strict server would, with *faults* by key (MAIL, RCPT,
    BDAT for a chunk that is not the last, LAST, RSET): a reply line or a
    fault name. A fault fires once; after DROP or a 421 every later answer
    is DROP."""

    faults: dict[str, str] = field(default_factory=dict)
    unsolicited_before: str | None = None  # a key: an extra 250 before its reply
    buffer: bytearray = field(default_factory=bytearray)
    mail_ok: bool = False
    rcpt_ok: int = 0
    failed: bool = False  # a chunk was refused
    body: bytearray = field(default_factory=bytearray)
    chunks: list[tuple[int, bool]] = field(default_factory=list)
    messages: list[bytes] = field(default_factory=list)  # accepted at LAST
    dropped: bool = False

    def feed(self, data: bytes) -> list[Reply | str]:
        self.buffer += data
        answers: list[Reply | str] = []
        while (end := self.buffer.find(b"\r\n")) >= 0:
            line = bytes(self.buffer[:end])
            del self.buffer[: end + 2]
            answers.extend(self._command(line))
        assert not self.buffer, "a command line or chunk was cut"
        return answers

    def _command(self, line: bytes) -> list[Reply | str]:
        assert b"\n" not in line
        assert b"\r" not in line
        verb = re.split(rb"[ :]", line, maxsplit=1)[0].decode()
        if verb == "BDAT":
            match = _BDAT.fullmatch(line)
            assert match is not None, line
            size, last = int(match.group(1)), match.group(2) is not None
            assert len(self.buffer) >= size, "chunk shorter than announced"
            octets = bytes(self.buffer[:size])
            del self.buffer[:size]
            self.chunks.append((size, last))
            self.body += octets
            return self._answer("LAST" if last else "BDAT")
        return self._answer(verb)

    def _answer(self, key: str) -> list[Reply | str]:
        if self.dropped:
            return [DROP]
        extra: list[Reply | str] = []
        if self.unsolicited_before == key:
            self.unsolicited_before = None
            extra.append(Reply(250, "2.0.0 Unsolicited"))
        fault = self.faults.pop(key, None)
        if fault in (DROP, TIMEOUT, GARBAGE, UNFLUSHED):
            self.dropped = self.dropped or fault in (DROP, UNFLUSHED)
            if key in ("BDAT", "LAST"):
                self.failed = True
            return [*extra, fault]
        if fault is not None:
            code, text = fault.split(" ", 1)
            reply = Reply(int(code), text)
        else:
            reply = self._normal(key)
        if reply.code == 421:
            self.dropped = True
        if key == "MAIL":
            self.mail_ok = reply.positive
        elif key == "RCPT" and reply.positive:
            self.rcpt_ok += 1
        elif key in ("BDAT", "LAST"):
            if not reply.positive:
                self.failed = True
            elif key == "LAST" and not self.failed:
                self.messages.append(bytes(self.body))
        elif key == "RSET":
            self.mail_ok, self.rcpt_ok, self.failed = False, 0, False
        return [*extra, reply]

    def _normal(self, key: str) -> Reply:
        if key == "MAIL":
            return Reply(250, "2.1.0 Sender OK")
        if key == "RCPT":
            if not self.mail_ok:
                return Reply(503, "5.5.1 Bad sequence of commands")
            return Reply(250, "2.1.5 Recipient OK")
        if key in ("BDAT", "LAST"):
            if self.failed:
                return Reply(503, "5.5.1 An earlier chunk failed")
            if not self.mail_ok or not self.rcpt_ok:
                return Reply(554, "5.5.1 No valid recipients")
            if key == "BDAT":
                return Reply(250, "2.0.0 Chunk received")
            return Reply(250, "2.0.0 Queued as Q1")
        return Reply(250, "2.0.0 OK")  # RSET


@dataclass
class Run:
    written: list[bytes]
    transaction: Transaction
    server: Server

    @property
    def commands(self) -> list[bytes]:
        """Every command line written, in order (chunks' octets left out)."""
        stream = b"".join(self.written)
        lines: list[bytes] = []
        while stream:
            line, _, stream = stream.partition(b"\r\n")
            lines.append(line)
            if match := _BDAT.fullmatch(line):
                stream = stream[int(match.group(1)) :]
        return lines


def drive(transaction: Transaction, server: Server) -> Run:
    """Do what the machine asks, as smtp/connection.py does, against
    *server*; return what was written. As the reply parser, a reply beyond
    those announced is an error (read in its place, and at the end of a
    pipelined group)."""
    written: list[bytes] = []
    pending: deque[Reply | str] = deque()

    def answered(answers: list[Reply | str], announced: int) -> None:
        pending.extend(answers[:announced])
        if len(answers) > announced:
            pending.append(EXCESS)

    try:
        while (action := transaction.next_action()) is not DONE:
            if isinstance(action, Write):
                written.append(action.data)
                answered(server.feed(action.data), action.replies)
            elif isinstance(action, Read):
                event = pending.popleft()
                if isinstance(event, str):
                    error = _error(event if event != UNFLUSHED else DROP)
                    if transaction.lost(error):
                        continue
                    raise error
                transaction.receive(event)
                if action.group_end and pending and pending[0] == EXCESS:
                    raise _error(EXCESS)
            elif isinstance(action, SendChunks):
                data = action.lead + b"".join(
                    command + _octets(content) for command, content in action.chunks
                )
                written.append(data)
                answers = server.feed(data)
                if UNFLUSHED in answers:
                    # The LAST chunk never left our buffer: nothing is read.
                    raise SMTPServerDisconnectedError("Connection lost mid-write")
                if action.last:
                    transaction.end_of_data_written()
                answered(answers, action.lead_replies + len(action.chunks))
            else:
                assert not isinstance(action, SendData), "DATA under CHUNKING"
    except MailError as exc:
        transaction.fail(exc)
    return Run(written, transaction, server)


def transaction(
    pipelining: bool,
    payload: WirePayload = BODY,
    recipients: tuple[str, ...] = ("a@example.com",),
    **options: bool,
) -> Transaction:
    return Transaction(
        SENDER,
        list(recipients),
        payload,
        pipelining=pipelining,
        chunking=True,
        **options,
    )


def run(
    pipelining: bool,
    payload: WirePayload = BODY,
    recipients: tuple[str, ...] = ("a@example.com",),
    **server: object,
) -> Run:
    return drive(transaction(pipelining, payload, recipients), Server(**server))  # type: ignore[arg-type]


MODES = [pytest.param(True, id="pipelined"), pytest.param(False, id="sequential")]
PAYLOADS = [pytest.param(BODY, id="bytes"), pytest.param(STREAMED, id="streamed")]


# -- the bytes ----------------------------------------------------------------


def test_pipelined_message_in_bytes_is_one_write() -> None:
    result = run(True, recipients=("a@example.com", "b@example.com"))
    assert result.written == [
        b"MAIL FROM:<from@example.com>\r\n"
        b"RCPT TO:<a@example.com>\r\n"
        b"RCPT TO:<b@example.com>\r\n" + f"BDAT {len(BODY)} LAST\r\n".encode() + BODY
    ]
    txn = result.transaction
    assert result.server.messages == [BODY]  # not stuffed, no end-of-data line
    assert txn.error is None
    assert txn.settled
    assert txn.reusable
    assert txn.end_written
    assert txn.reply == "250 2.0.0 Queued as Q1"
    assert txn.data_recipients == ("a@example.com", "b@example.com")
    assert {a: r.outcome for a, r in txn.recipients.items()} == {
        "a@example.com": ACCEPTED,
        "b@example.com": ACCEPTED,
    }
    assert txn.phase is Phase.DONE
    assert b"RSET" not in result.commands


def test_sequential_waits_for_each_reply() -> None:
    result = run(False, recipients=("a@example.com", "b@example.com"))
    assert result.written == [
        b"MAIL FROM:<from@example.com>\r\n",
        b"RCPT TO:<a@example.com>\r\n",
        b"RCPT TO:<b@example.com>\r\n",
        f"BDAT {len(BODY)} LAST\r\n".encode() + BODY,
    ]
    assert result.transaction.error is None
    assert result.server.messages == [BODY]


def test_streamed_pipelined_envelope_first_then_chunks_in_one_go() -> None:
    result = run(True, STREAMED)
    head, encoded, tail = STREAMED[0], _octets(STREAMED[1]), STREAMED[2]
    assert isinstance(head, bytes)
    assert isinstance(tail, bytes)
    assert result.written == [
        b"MAIL FROM:<from@example.com>\r\nRCPT TO:<a@example.com>\r\n",
        f"BDAT {len(head)}\r\n".encode()
        + head
        + f"BDAT {len(encoded)}\r\n".encode()
        + encoded
        + f"BDAT {len(tail)} LAST\r\n".encode()
        + tail,
    ]
    assert result.server.messages == [STREAMED_OCTETS]
    assert result.server.chunks == [
        (len(head), False),
        (len(encoded), False),
        (len(tail), True),
    ]
    assert result.transaction.error is None
    assert result.transaction.reply == "250 2.0.0 Queued as Q1"


def test_streamed_sequential_waits_for_each_chunk() -> None:
    result = run(False, STREAMED)
    head, encoded, tail = STREAMED[0], _octets(STREAMED[1]), STREAMED[2]
    assert isinstance(head, bytes)
    assert isinstance(tail, bytes)
    assert result.written == [
        b"MAIL FROM:<from@example.com>\r\n",
        b"RCPT TO:<a@example.com>\r\n",
        f"BDAT {len(head)}\r\n".encode() + head,
        f"BDAT {len(encoded)}\r\n".encode() + encoded,
        f"BDAT {len(tail)} LAST\r\n".encode() + tail,
    ]
    assert result.server.messages == [STREAMED_OCTETS]
    assert result.transaction.error is None


def test_streamed_ending_with_an_attachment_ends_with_an_empty_last_chunk() -> None:
    payload: WirePayload = (b"Subject: x\r\n\r\n", Base64Payload(b"abc"))
    result = run(True, payload)
    assert result.commands[-2:] == [b"BDAT 6", b"BDAT 0 LAST"]
    assert result.server.chunks[-1] == (0, True)
    assert result.server.messages == [b"Subject: x\r\n\r\nYWJj\r\n"]
    assert result.transaction.error is None


def test_an_empty_message_is_one_empty_last_chunk() -> None:
    result = run(True, b"")
    assert result.commands[-1] == b"BDAT 0 LAST"
    assert result.transaction.error is None


@pytest.mark.parametrize("payload", PAYLOADS)
def test_size_is_the_exact_unstuffed_octets(payload: WirePayload) -> None:
    txn = transaction(True, payload, size=True, eight_bit=True, smtputf8=True)
    action = txn.next_action()
    octets = len(BODY) if payload is BODY else len(STREAMED_OCTETS)
    lead = action.lead if isinstance(action, SendChunks) else action.data  # type: ignore[union-attr]
    assert lead.startswith(
        f"MAIL FROM:<from@example.com> SIZE={octets} BODY=8BITMIME "
        "SMTPUTF8\r\n".encode()
    )


@pytest.mark.parametrize("pipelining", MODES)
@pytest.mark.parametrize("bad", ["a@example.com\r\nRSET", "a\n@x", "a\0@x"])
def test_a_line_break_in_a_command_is_never_written(pipelining: bool, bad: str) -> None:
    result = run(pipelining, recipients=("ok@example.com", bad))
    assert all(b"\n" not in line and b"\0" not in line for line in result.commands)
    assert not any(line.startswith(b"BDAT") for line in result.commands)
    txn = result.transaction
    assert isinstance(txn.error, SMTPError)
    assert "line break" in str(txn.error)
    assert not txn.end_written
    assert not txn.reusable


# -- refusals -------------------------------------------------------------------


@pytest.mark.parametrize("payload", PAYLOADS)
@pytest.mark.parametrize("pipelining", MODES)
def test_some_recipients_refused(pipelining: bool, payload: WirePayload) -> None:
    """The LAST chunk's reply applies to the accepted ones; after it the
    server's transaction is over: no RSET."""
    server = Server(faults={"RCPT": "550 5.1.1 No such user"})
    txn = transaction(pipelining, payload, ("bad@example.com", "good@example.com"))
    result = drive(txn, server)
    assert txn.recipients["bad@example.com"].code == 550
    assert txn.recipients["bad@example.com"].outcome is PERMANENT
    assert txn.recipients["good@example.com"].outcome is ACCEPTED
    assert txn.recipients["good@example.com"].text == "2.0.0 Queued as Q1"
    assert txn.data_recipients == ("good@example.com",)
    assert isinstance(txn.error, RecipientsRefusedError)
    assert txn.reusable
    assert b"RSET" not in result.commands
    assert len(server.messages) == 1


@pytest.mark.parametrize("payload", PAYLOADS)
@pytest.mark.parametrize("pipelining", MODES)
def test_every_recipient_refused(pipelining: bool, payload: WirePayload) -> None:
    """Pipelined in one write, the LAST chunk goes anyway; the server must
    read and refuse it (RFC 3030: 554 or 503 with no recipient), and its
    state is then indeterminate: RSET. Otherwise no chunk is sent."""
    server = Server(faults={"RCPT": "550 5.1.1 No such user"})
    txn = transaction(pipelining, payload, ("a@example.com",))
    result = drive(txn, server)
    one_write = pipelining and payload is BODY
    assert any(c.startswith(b"BDAT") for c in result.commands) is one_write
    assert txn.recipients["a@example.com"].code == 550
    assert isinstance(txn.error, RecipientsRefusedError)
    assert txn.end_written is one_write
    assert txn.data_recipients == ()  # nothing to keep from a retry
    assert txn.reply == ""
    assert txn.reusable
    assert result.commands[-1] == b"RSET"
    assert server.messages == []


@pytest.mark.parametrize("pipelining", MODES)
def test_refused_chunk_stops_the_message(pipelining: bool) -> None:
    """RFC 3030: after a refused chunk the client sends no more (pipelined,
    those already sent are refused too), the message is refused, RSET."""
    server = Server(faults={"BDAT": "552 5.3.4 Message too big"})
    txn = transaction(pipelining, STREAMED)
    result = drive(txn, server)
    bdat = [c for c in result.commands if c.startswith(b"BDAT")]
    assert len(bdat) == (3 if pipelining else 1)
    outcome = txn.recipients["a@example.com"]
    assert (outcome.outcome, outcome.code) == (PERMANENT, 552)
    assert isinstance(txn.error, MessageRefusedError)
    assert txn.error.code == 552
    assert txn.end_written is pipelining
    assert txn.reusable
    assert result.commands[-1] == b"RSET"
    assert server.messages == []


def test_sender_refused_for_want_of_auth_says_so() -> None:
    txn = transaction(True)
    drive(txn, Server(faults={"MAIL": "530 5.7.0 Authentication required"}))
    assert isinstance(txn.error, MessageRefusedError)
    assert "EMAIL_HOST_USER" in str(txn.error)
    assert txn.data_recipients == ()


def test_refused_reset_makes_the_session_unusable() -> None:
    txn = transaction(True)
    drive(txn, Server(faults={"LAST": "451 4.3.0 Later", "RSET": "500 huh"}))
    assert txn.settled
    assert not txn.reusable


# -- every fault, each mode -----------------------------------------------------


@dataclass(frozen=True)
class Fault:
    name: str
    faults: dict[str, str]
    outcome: Outcome
    error: type[MailError] | tuple[type[MailError], ...]
    code: int | None = None
    reusable: bool = False
    #: The LAST chunk reached the OS: "always", "pipelined" (sent without
    #: waiting for the refused chunk's reply) or "one-write" (only when the
    #: whole transaction was one write).
    written: str = "always"
    #: Where the LAST chunk was written before the fault (see *written*),
    #: the failure comes after the end of data: unknown.
    unknown_when_written: bool = False
    streamed_only: bool = False
    unsolicited_before: str | None = None


def _connection(
    name: str, key: str, fault: str, error: type[MailError] = SMTPConnectError
) -> Fault:
    return Fault(
        name,
        {key: fault},
        TEMPORARY,
        error,
        written="one-write",
        unknown_when_written=True,
    )


FAULTS = [
    _connection("close-after-MAIL", "MAIL", DROP),
    _connection("close-after-RCPT", "RCPT", DROP),
    Fault(
        "lost-before-LAST-flushed",
        {"LAST": UNFLUSHED},
        TEMPORARY,
        SMTPConnectError,
        written="never",
    ),
    Fault("close-after-LAST", {"LAST": DROP}, UNKNOWN, DeliveryUnknownError),
    Fault(
        "close-after-chunk",
        {"BDAT": DROP},
        TEMPORARY,
        SMTPConnectError,
        written="pipelined",
        unknown_when_written=True,
        streamed_only=True,
    ),
    Fault(
        "MAIL-451",
        {"MAIL": "451 4.3.0 Temporary local problem"},
        TEMPORARY,
        MessageRefusedError,
        code=451,
        reusable=True,
        written="one-write",
    ),
    Fault(
        "MAIL-421",
        {"MAIL": "421 4.3.2 Shutting down"},
        TEMPORARY,
        MessageRefusedError,
        code=421,
        written="one-write",
    ),
    Fault(
        "MAIL-550",
        {"MAIL": "550 5.7.1 Sender rejected"},
        PERMANENT,
        MessageRefusedError,
        code=550,
        reusable=True,
        written="one-write",
    ),
    Fault(
        "RCPT-450",
        {"RCPT": "450 4.2.1 Mailbox busy"},
        TEMPORARY,
        RecipientsRefusedError,
        code=450,
        reusable=True,
        written="one-write",
    ),
    Fault(
        "RCPT-421",
        {"RCPT": "421 4.3.2 Shutting down"},
        TEMPORARY,
        RecipientsRefusedError,
        code=421,
        written="one-write",
    ),
    Fault(
        "RCPT-550",
        {"RCPT": "550 5.1.1 No such user"},
        PERMANENT,
        RecipientsRefusedError,
        code=550,
        reusable=True,
        written="one-write",
    ),
    Fault(
        "chunk-452",
        {"BDAT": "452 4.3.1 Insufficient system storage"},
        TEMPORARY,
        MessageRefusedError,
        code=452,
        reusable=True,
        written="pipelined",
        streamed_only=True,
    ),
    Fault(
        "chunk-421",
        {"BDAT": "421 4.3.2 Shutting down"},
        TEMPORARY,
        MessageRefusedError,
        code=421,
        written="pipelined",
        streamed_only=True,
    ),
    Fault(
        "LAST-451",
        {"LAST": "451 4.3.0 Queue full, try later"},
        TEMPORARY,
        MessageRefusedError,
        code=451,
        reusable=True,
    ),
    Fault(
        "LAST-421",
        {"LAST": "421 4.3.2 Shutting down"},
        TEMPORARY,
        MessageRefusedError,
        code=421,
    ),
    Fault(
        "LAST-554",
        {"LAST": "554 5.6.0 Content rejected"},
        PERMANENT,
        MessageRefusedError,
        code=554,
        reusable=True,
    ),
    Fault("LAST-odd-reply", {"LAST": "354 again?"}, UNKNOWN, DeliveryUnknownError),
    _connection("MAIL-slower-than-timeout", "MAIL", TIMEOUT, SMTPTimeoutError),
    Fault("LAST-slower-than-timeout", {"LAST": TIMEOUT}, UNKNOWN, DeliveryUnknownError),
    Fault("endless-reply-to-LAST", {"LAST": GARBAGE}, UNKNOWN, DeliveryUnknownError),
    Fault(
        "unsolicited-line-before-MAIL-reply",
        {},
        TEMPORARY,
        SMTPResponseError,
        written="one-write",
        unknown_when_written=True,
        unsolicited_before="MAIL",
    ),
    Fault(
        "unsolicited-line-before-LAST-reply",
        {},
        UNKNOWN,
        DeliveryUnknownError,
        unsolicited_before="LAST",
    ),
]

CASES = [
    pytest.param(fault, pipelining, payload, id=f"{fault.name}-{mode}-{kind}")
    for fault in FAULTS
    for pipelining, mode in ((True, "pipelined"), (False, "sequential"))
    for payload, kind in ((BODY, "bytes"), (STREAMED, "streamed"))
    if not (fault.streamed_only and payload is BODY)
]


@pytest.mark.parametrize(("fault", "pipelining", "payload"), CASES)
def test_fault(fault: Fault, pipelining: bool, payload: WirePayload) -> None:
    server = Server(dict(fault.faults), unsolicited_before=fault.unsolicited_before)
    txn = transaction(pipelining, payload, ("rcpt@example.com",))
    result = drive(txn, server)
    one_write = pipelining and payload is BODY
    written = {
        "always": True,
        "never": False,
        "pipelined": pipelining,
        "one-write": one_write,
    }[fault.written]
    expected, error = fault.outcome, fault.error
    if written and fault.unknown_when_written:
        expected, error = UNKNOWN, DeliveryUnknownError

    assert txn.settled
    assert txn.phase is Phase.DONE
    (outcome,) = txn.recipients.values()
    assert outcome.address == "rcpt@example.com"
    assert outcome.outcome is expected
    assert isinstance(txn.error, error), txn.error
    if fault.code is not None:
        assert outcome.code == fault.code
        if not isinstance(txn.error, RecipientsRefusedError):
            assert txn.error.code == fault.code  # type: ignore[union-attr]
    assert txn.end_written is written
    assert txn.reusable is fault.reusable
    commands = result.commands
    assert sum(c.endswith(b" LAST") for c in commands) <= 1, "sent twice"
    if not any(c.endswith(b" LAST") for c in commands):
        assert not txn.end_written
    # Only a refusal for the message leaves data_recipients for the
    # backend's "never resend" rule; an envelope refusal leaves none.
    if fault.code is not None and not isinstance(txn.error, MessageRefusedError):
        assert txn.data_recipients == ()
    # Nothing the server accepted is reported refused.
    if server.messages:
        assert outcome.outcome in (ACCEPTED, UNKNOWN)
    # A session kept was reset (the refused transaction's state is
    # indeterminate); a broken one gets nothing more.
    if fault.reusable:
        assert commands[-1] == b"RSET"
    else:
        assert b"RSET" not in commands


@pytest.mark.parametrize("payload", PAYLOADS)
@pytest.mark.parametrize("pipelining", MODES)
def test_421_settles_the_rest_with_it(pipelining: bool, payload: WirePayload) -> None:
    server = Server(faults={"RCPT": "421 4.3.2 Shutting down"})
    txn = transaction(pipelining, payload, ("a@example.com", "b@example.com"))
    drive(txn, server)
    assert [r.code for r in txn.recipients.values()] == [421, 421]
    assert [r.outcome for r in txn.recipients.values()] == [TEMPORARY, TEMPORARY]
    assert txn.data_recipients == ()  # the server closed before the chunk
    assert isinstance(txn.error, RecipientsRefusedError)
    assert not txn.reusable


def test_421_after_one_accepted_recipient_refuses_it_too() -> None:
    """One RCPT accepted, the next answered 421: the server closed before
    the LAST chunk, so the accepted one did not get it (safe to retry)."""
    server = Server()
    txn = transaction(True, BODY, ("a@example.com", "b@example.com"))
    original = server._answer
    calls = {"RCPT": 0}

    def answer(key: str) -> list[Reply | str]:
        if key == "RCPT":
            calls["RCPT"] += 1
            if calls["RCPT"] == 2:
                server.dropped = True
                return [Reply(421, "4.3.2 Shutting down")]
        return original(key)

    server._answer = answer  # type: ignore[method-assign]
    drive(txn, server)
    assert {a: (r.outcome, r.code) for a, r in txn.recipients.items()} == {
        "a@example.com": (TEMPORARY, 421),
        "b@example.com": (TEMPORARY, 421),
    }
    assert txn.end_written
    assert txn.data_recipients == ()
    assert not txn.reusable


# -- out of step ------------------------------------------------------------------


def test_last_accepted_with_no_recipient_is_out_of_step() -> None:
    """A 250 to the LAST chunk although every RCPT was refused is not the
    reply to it: nothing after it is trusted, the session is dropped."""
    server = Server(
        faults={"RCPT": "550 5.1.1 No such user", "LAST": "250 2.0.0 Queued"}
    )
    txn = transaction(True, BODY, ("a@example.com",))
    drive(txn, server)
    assert isinstance(txn.error, SMTPResponseError)
    assert "out of step" in str(txn.error)
    assert txn.recipients["a@example.com"].code == 550  # it arrived: it stands
    assert not txn.reusable


def test_last_accepted_after_a_refused_chunk_is_out_of_step() -> None:
    server = Server(faults={"BDAT": "452 4.3.1 Full", "LAST": "250 2.0.0 Queued"})
    txn = transaction(True, STREAMED, ("a@example.com",))
    drive(txn, server)
    assert isinstance(txn.error, DeliveryUnknownError)
    assert txn.recipients["a@example.com"].outcome is UNKNOWN
    assert not txn.reusable


def test_a_354_to_a_chunk_is_out_of_step() -> None:
    server = Server(faults={"BDAT": "354 go ahead"})
    txn = transaction(True, STREAMED, ("a@example.com",))
    drive(txn, server)
    assert isinstance(txn.error, DeliveryUnknownError)
    assert "out of step" in str(txn.error)
    assert not txn.reusable


# -- failures with some replies in ---------------------------------------------


def test_refusals_received_before_a_drop_stand_and_narrow_the_written() -> None:
    """One write: a's 550 arrived, then the connection was lost before b's
    reply: a is refused, b unknown (the data may have reached it)."""
    server = Server()
    txn = transaction(True, BODY, ("a@example.com", "b@example.com"))
    original = server._answer
    calls = {"RCPT": 0}

    def answer(key: str) -> list[Reply | str]:
        if key == "RCPT":
            calls["RCPT"] += 1
            if calls["RCPT"] == 1:
                return [Reply(550, "5.1.1 No such user")]
            server.dropped = True
            return [DROP]
        return original(key)

    server._answer = answer  # type: ignore[method-assign]
    drive(txn, server)
    assert txn.recipients["a@example.com"].outcome is PERMANENT
    assert txn.recipients["b@example.com"].outcome is UNKNOWN
    assert txn.data_recipients == ("b@example.com",)
    assert isinstance(txn.error, DeliveryUnknownError)


def test_a_refused_chunk_before_a_drop_refuses_the_message() -> None:
    """Streamed, pipelined: the first chunk refused, then the connection
    lost before the LAST chunk's reply: the transaction had failed, the
    recipient is refused, not unknown."""
    server = Server(faults={"BDAT": "452 4.3.1 Full", "LAST": DROP})
    txn = transaction(True, STREAMED, ("a@example.com",))
    drive(txn, server)
    outcome = txn.recipients["a@example.com"]
    assert (outcome.outcome, outcome.code) == (TEMPORARY, 452)
    assert not isinstance(txn.error, DeliveryUnknownError)
    assert not txn.reusable


# -- cancellation ---------------------------------------------------------------


def _written_unread(recipients: tuple[str, ...]) -> Transaction:
    """A one-write transaction whose LAST chunk was written, nothing read."""
    txn = transaction(True, BODY, recipients)
    action = txn.next_action()
    assert isinstance(action, SendChunks)
    assert action.last
    assert action.lead_replies == 1 + len(recipients)
    txn.end_of_data_written()
    assert txn.awaiting_final
    return txn


def test_cancelled_with_every_reply_queued_is_settled_from_them() -> None:
    txn = _written_unread(("a@example.com", "b@example.com"))
    txn.cancelled(
        [
            Reply(250, "2.1.0 ok"),
            Reply(550, "5.1.1 no such user"),
            Reply(250, "2.1.5 ok"),
            Reply(250, "2.0.0 Queued"),
        ]
    )
    assert txn.recipients["a@example.com"].outcome is PERMANENT
    assert txn.recipients["b@example.com"].outcome is ACCEPTED
    assert txn.reply == "250 2.0.0 Queued"
    assert not txn.reusable
    assert txn.settled


def test_cancelled_with_the_last_reply_missing_is_unknown() -> None:
    txn = _written_unread(("a@example.com", "b@example.com"))
    txn.cancelled([Reply(250, "2.1.0 ok"), Reply(550, "5.1.1 no")])
    assert txn.recipients["a@example.com"].code == 550
    assert txn.recipients["b@example.com"].outcome is UNKNOWN
    assert isinstance(txn.error, DeliveryUnknownError)


def test_cancelled_with_the_sender_refused_queued_is_refused() -> None:
    txn = _written_unread(("a@example.com",))
    txn.cancelled([Reply(451, "4.3.0 later")])
    assert txn.recipients["a@example.com"].outcome is TEMPORARY
    assert txn.data_recipients == ()
    assert not isinstance(txn.error, DeliveryUnknownError)


def test_cancelled_before_the_last_chunk_is_temporary() -> None:
    txn = transaction(False, BODY, ("a@example.com",))
    assert isinstance(txn.next_action(), Write)  # MAIL
    txn.cancelled([])
    assert txn.recipients["a@example.com"].outcome is TEMPORARY
    assert not txn.end_written


# -- any sequence of replies -----------------------------------------------------


@dataclass
class ScriptedServer(Server):
    """Answers each command and chunk with the next event of *script*
    (then as a strict server would), recording every answer by key."""

    script: list[Reply | str] = field(default_factory=list)
    answers: list[tuple[str, Reply | str]] = field(default_factory=list)

    def _answer(self, key: str) -> list[Reply | str]:
        if self.script and not self.dropped:
            event = self.script.pop(0)
            if isinstance(event, str):
                self.faults[key] = event
            else:
                self.faults[key] = f"{event.code} {event.text}"
        answer = super()._answer(key)
        self.answers.extend((key, a) for a in answer)
        return answer


EVENTS = st.one_of(
    st.sampled_from([250, 251, 354, 421, 450, 452, 503, 550, 554]).map(
        lambda code: Reply(code, "scripted")
    ),
    st.sampled_from([DROP, TIMEOUT, GARBAGE, UNFLUSHED]),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    script=st.lists(EVENTS, max_size=8),
    recipients=st.integers(1, 3),
    pipelining=st.booleans(),
    streamed=st.booleans(),
)
def test_any_replies_keep_the_guarantees(
    script: list[Reply | str], recipients: int, pipelining: bool, streamed: bool
) -> None:
    """Whatever the server answers: the machine fails only with a MailError,
    settles every recipient, reports accepted only what the server accepted
    (MAIL, its RCPT and the LAST chunk 2xx), unknown only after the LAST
    chunk was written, writes LAST at most once, and sends no chunk after
    one was refused when it waits for each."""
    addresses = tuple(f"r{n}@example.com" for n in range(recipients))
    server = ScriptedServer(script=list(script))
    txn = transaction(pipelining, STREAMED if streamed else BODY, addresses)
    result = drive(txn, server)

    assert txn.settled
    assert txn.phase is Phase.DONE
    assert set(txn.recipients) == set(addresses)
    assert sum(last for _, last in server.chunks) <= 1
    commands = result.commands
    assert sum(c.endswith(b" LAST") for c in commands) <= 1
    mail = [a for k, a in server.answers if k == "MAIL"]
    rcpt = [a for k, a in server.answers if k == "RCPT"]
    last = [a for k, a in server.answers if k == "LAST"]
    for index, address in enumerate(addresses):
        outcome = txn.recipients[address].outcome
        if outcome is ACCEPTED:
            assert isinstance(mail[0], Reply)
            assert mail[0].positive
            assert isinstance(rcpt[index], Reply)
            assert rcpt[index].positive
            assert len(last) == 1
            assert isinstance(last[0], Reply)
            assert last[0].positive
            assert txn.end_written
        if outcome is UNKNOWN:
            assert txn.end_written
    if not pipelining:
        chunk_answers = [a for k, a in server.answers if k in ("BDAT", "LAST")]
        refused = [
            i
            for i, a in enumerate(chunk_answers)
            if not (isinstance(a, Reply) and a.positive)
        ]
        if refused:
            assert len(server.chunks) == refused[0] + 1  # nothing after it
    if txn.error is None:
        assert all(r.outcome is ACCEPTED for r in txn.recipients.values())


# -- end to end: the SMTP backend against a CHUNKING server ----------------------

PINNED = {"Date": "Tue, 02 Jan 2024 03:04:05 +0000", "Message-ID": "<pin@example.com>"}
BIG = random.Random(3030).randbytes(3 * 1024 * 1024)


def chunking_server(pipelining: bool) -> ScriptServer:
    extensions = tuple(e for e in DEFAULT_EXTENSIONS if pipelining or e != "PIPELINING")
    return ScriptServer(extensions, chunking=True)


def pinned(body: str = "Body.\n.A line starting with a dot.\n..two\n") -> EmailMessage:
    return EmailMessage(
        "Hello", body, "sender@example.com", ["to@example.com"], headers=PINNED
    )


def attachment_of(data: bytes) -> bytes:
    parsed = BytesParser(policy=default_policy).parsebytes(data)
    (part,) = parsed.iter_attachments()  # type: ignore[attr-defined]
    payload = part.get_payload(decode=True)
    assert isinstance(payload, bytes)
    return payload


@pytest.mark.anyio
@pytest.mark.parametrize("pipelining", MODES)
async def test_fresh_message_goes_in_one_bdat_chunk_unstuffed(pipelining: bool) -> None:
    mail = pinned()
    with chunking_server(pipelining) as server:
        assert await make_backend(server).send_messages([mail]) == 1
    (accepted,) = server.accepted
    sent = mail.as_bytes()
    assert accepted.data == sent  # byte for byte: no stuffing, no end line
    assert b"\r\n.A line starting with a dot.\r\n..two\r\n" in accepted.data
    assert server.commands[1:] == [
        f"MAIL FROM:<sender@example.com> SIZE={len(sent)}",
        "RCPT TO:<to@example.com>",
        f"BDAT {len(sent)} LAST",
        "QUIT",
    ]
    assert server.sessions[0].chunks == [(len(sent), True)]


@pytest.mark.anyio
async def test_8bit_body_is_announced() -> None:
    mail = pinned("Gr\u00fc\u00dfe, \u00e9t\u00e9\n.dot\n")
    with chunking_server(True) as server:
        assert await make_backend(server).send_messages([mail]) == 1
    (accepted,) = server.accepted
    assert accepted.data == mail.as_bytes()
    assert " BODY=8BITMIME" in server.commands[1]


@pytest.mark.anyio
@pytest.mark.parametrize("pipelining", MODES)
async def test_raw_message_goes_as_given(pipelining: bool) -> None:
    raw = RawMessage(
        b"Subject: raw\n\n.dot\nbody\n", "sender@example.com", ["to@example.com"]
    )
    with chunking_server(pipelining) as server:
        assert await make_backend(server).send_messages([raw]) == 1
    (accepted,) = server.accepted
    assert accepted.data == b"Subject: raw\r\n\r\n.dot\r\nbody\r\n"
    assert "BDAT 28 LAST" in server.commands


@pytest.mark.anyio
@pytest.mark.parametrize("pipelining", MODES)
async def test_streamed_attachment_goes_in_chunks(
    pipelining: bool, tmp_path: Path
) -> None:
    path = tmp_path / "big.bin"
    path.write_bytes(BIG)
    mail = pinned()
    mail.attach_file(path)
    assert mail.render().streamed
    with chunking_server(pipelining) as server:
        assert await make_backend(server).send_messages([mail]) == 1
    (accepted,) = server.accepted
    assert attachment_of(accepted.data) == BIG
    chunks = server.sessions[0].chunks
    assert len(chunks) == 3  # the text part, the attachment, the closing part
    assert [last for _, last in chunks] == [False, False, True]
    assert sum(size for size, _ in chunks) == len(accepted.data)
    announced = re.search(r" SIZE=(\d+)", server.commands[1])
    assert announced is not None
    assert int(announced.group(1)) == len(accepted.data)
    assert b"\r\n.A line starting with a dot.\r\n" in accepted.data


@pytest.mark.anyio
@pytest.mark.parametrize("pipelining", MODES)
async def test_partly_refused_then_next_message_on_the_same_session(
    pipelining: bool,
) -> None:
    """The LAST chunk accepted ends the server's transaction: the next MAIL
    follows with no RSET (the strict server would refuse a MAIL after a
    failed chunk until RSET)."""
    with chunking_server(pipelining) as server:
        server.on("RCPT", reply("550 5.1.1 No such user"), match="bad@")
        first = message(1, ["ok@example.com", "bad@example.com"])
        second = message(2)
        backend = make_backend(server)
        async with backend:
            with pytest.raises(RecipientsRefusedError):
                await backend.send_messages([first])
            assert await backend.send_messages([second]) == 1
    assert len(server.sessions) == 1
    assert server.sessions[0].verbs()[1:] == [
        "MAIL",
        "RCPT",
        "RCPT",
        "BDAT",
        "MAIL",
        "RCPT",
        "BDAT",
        "QUIT",
    ]
    assert [a.rcpt_tos for a in server.accepted] == [
        ("ok@example.com",),
        ("rcpt2@example.com",),
    ]


@pytest.mark.anyio
@pytest.mark.parametrize("pipelining", MODES)
async def test_every_recipient_refused_then_rset_then_next(pipelining: bool) -> None:
    with chunking_server(pipelining) as server:
        server.on("RCPT", reply("550 5.1.1 No such user"), match="rcpt1@")
        first, second = message(1), message(2)
        backend = make_backend(server)
        async with backend:
            with pytest.raises(RecipientsRefusedError):
                await backend.send_messages([first])
            assert await backend.send_messages([second]) == 1
    verbs = server.sessions[0].verbs()
    second_mail = [i for i, v in enumerate(verbs) if v == "MAIL"][1]
    assert verbs[second_mail - 1] == "RSET"
    # Pipelined, the LAST chunk went in the same write and was refused.
    assert verbs[:second_mail].count("BDAT") == (1 if pipelining else 0)
    assert [a.rcpt_tos for a in server.accepted] == [("rcpt2@example.com",)]
    assert first.result is not None
    assert first.result.recipients["rcpt1@example.com"].code == 550


LARGE = b"Subject: large\r\n\r\n" + b".a line of a large body\r\n" * 12000


@pytest.mark.anyio
@pytest.mark.parametrize("pipelining", MODES)
async def test_large_message_in_bytes_is_one_chunk_written_in_slices(
    pipelining: bool,
) -> None:
    assert len(LARGE) > 4 * 64 * 1024
    raw = RawMessage(LARGE, "sender@example.com", ["to@example.com"])
    with chunking_server(pipelining) as server:
        assert await make_backend(server).send_messages([raw]) == 1
    assert server.accepted[0].data == LARGE
    assert server.sessions[0].chunks == [(len(LARGE), True)]


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["bytes", "large", "streamed"])
async def test_the_end_of_data_hook_runs_before_the_last_chunk(
    kind: str, tmp_path: Path
) -> None:
    mail: EmailMessage | RawMessage = pinned()
    if kind == "large":
        mail = RawMessage(LARGE, "sender@example.com", ["to@example.com"])
    streamed = kind == "streamed"
    if streamed:
        path = tmp_path / "big.bin"
        path.write_bytes(BIG)
        assert isinstance(mail, EmailMessage)
        mail.attach_file(path)
    with chunking_server(True) as server:
        seen: list[int] = []

        async def hook() -> None:
            await anyio.sleep(0.2)  # the server would have it by now if it could
            seen.append(len(server.accepted))

        token = end_of_data_hook.set(hook)
        try:
            assert await make_backend(server).send_messages([mail]) == 1
        finally:
            end_of_data_hook.reset(token)
    assert seen == [0]  # called once, before the server could accept
    assert len(server.accepted) == 1


@pytest.mark.anyio
@pytest.mark.parametrize("streamed", [False, True], ids=["bytes", "streamed"])
async def test_a_failing_hook_sends_no_last_chunk(
    streamed: bool, tmp_path: Path
) -> None:
    mail = pinned()
    if streamed:
        path = tmp_path / "big.bin"
        path.write_bytes(BIG)
        mail.attach_file(path)

    async def hook() -> None:
        raise SMTPError("the claim on this message was lost")

    with chunking_server(True) as server:
        token = end_of_data_hook.set(hook)
        try:
            backend = make_backend(server, fail_silently=True)
            assert await backend.send_messages([mail]) == 0
        finally:
            end_of_data_hook.reset(token)
    assert server.accepted == []
    assert not any(last for session in server.sessions for _, last in session.chunks)
    if not streamed:  # one write, after the hook: nothing at all was written
        assert server.count("MAIL") == 0
    assert mail.result is not None
    (result,) = mail.result.recipients.values()
    assert result.outcome is TEMPORARY  # the end of data was never written


@pytest.mark.anyio
@pytest.mark.parametrize("change", ["grows", "shrinks"])
async def test_file_changing_while_its_chunk_is_sent(
    change: str, tmp_path: Path
) -> None:
    """The attachment's chunk size was announced: a file that changed is
    caught, the session dropped mid-chunk, nothing delivered."""
    path = tmp_path / "big.bin"
    path.write_bytes(BIG)

    def change_the_file() -> None:  # at RCPT: after the message was prepared
        if change == "grows":
            with path.open("ab") as file:
                file.write(b"more")
        else:
            path.write_bytes(BIG[:1000])

    mail = pinned()
    mail.attach_file(path)
    with chunking_server(True) as server:
        server.on("RCPT", reply("250 2.1.5 OK", hook=change_the_file))
        backend = make_backend(server, fail_silently=True)
        assert await backend.send_messages([mail]) == 0
    assert server.accepted == []
    assert [last for _, last in server.sessions[0].chunks] in ([], [False])
    assert mail.result is not None
    assert mail.result.status is MessageStatus.FAILED
    (result,) = mail.result.recipients.values()
    assert result.outcome is PERMANENT
    assert "changed size" in result.text


@pytest.mark.anyio
async def test_size_limit_counts_the_unstuffed_octets() -> None:
    """SIZE is exact under BDAT: a message of exactly the limit fits."""
    mail = pinned("." * 50 + "\n")  # stuffed, it would be one octet more
    size = len(mail.as_bytes())
    extensions = tuple(e for e in DEFAULT_EXTENSIONS if not e.startswith("SIZE"))
    with ScriptServer((*extensions, f"SIZE {size}"), chunking=True) as server:
        assert await make_backend(server).send_messages([mail]) == 1
    assert server.accepted[0].data == mail.as_bytes()


#: Faults a batch draws from (verb, act), at MAIL, RCPT and BDAT.
BATCH_FAULTS = [
    ("MAIL", reply("451 4.3.0 Later")),
    ("MAIL", reply("550 5.7.1 No")),
    ("MAIL", CLOSE),
    ("RCPT", reply("450 4.2.1 Busy")),
    ("RCPT", reply("550 5.1.1 No such user")),
    ("RCPT", reply("421 4.3.2 Closing", close=True)),
    ("BDAT", reply("451 4.3.0 Queue full")),
    ("BDAT", reply("554 5.6.0 Rejected")),
    ("BDAT", reply("421 4.3.2 Closing", close=True)),
    ("BDAT", CLOSE),
    ("BDAT", Act(body_bytes=40)),
    # Stored, but the reply comes after the client's timeout: unknown.
    ("BDAT", reply("250 2.0.0 Queued", delay=0.6)),
]


@pytest.mark.anyio
@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("pipelining", MODES)
async def test_a_batch_with_seeded_faults_agrees_with_the_server(
    pipelining: bool, seed: int
) -> None:
    """Sixty messages of one to three recipients over four connections with
    retries, a third of them hit by a fault at MAIL, RCPT or BDAT: every
    result agrees with what the server stored (accepted: stored once;
    refused: not stored; unknown: either), and nothing is stored twice."""
    rng = random.Random(seed)
    messages = []
    with chunking_server(pipelining) as server:
        for n in range(60):
            to = [f"m{n}r{i}@example.com" for i in range(rng.randint(1, 3))]
            messages.append(message(n, to))
            if rng.random() < 1 / 3:
                verb, act = rng.choice(BATCH_FAULTS)
                server.on(verb, act, match=f"m{n}r{rng.randrange(len(to))}@")
        backend = make_backend(server, retries=2, max_connections=4, timeout=0.3)
        sent = await backend.send_messages(messages, fail_silently=True)
    assert 0 < sent < len(messages)
    assert sum(rule.times == 0 for rule in server.rules) >= 5, "faults not hit"
    assert len(server.sessions) > 4  # some faults broke connections
    stored: dict[tuple[str, str], int] = {}
    for item in server.accepted:
        marker = re.search(rb"Message-ID: <([^>]+)>", item.data)
        assert marker is not None
        for address in item.rcpt_tos:
            key = (marker.group(1).decode(), address)
            stored[key] = stored.get(key, 0) + 1
    assert all(count == 1 for count in stored.values()), "stored twice"
    for msg in messages:
        assert msg.result is not None
        ident = msg.extra_headers["Message-ID"].strip("<>")
        for address, result in msg.result.recipients.items():
            got = stored.get((ident, address), 0)
            if result.outcome is ACCEPTED:
                assert got == 1, f"{address} reported sent, not stored"
            elif result.outcome in (TEMPORARY, PERMANENT):
                assert got == 0, f"{address} reported refused, stored"
