"""One SMTP transaction (MAIL, RCPT..., DATA, the data, the end of data) as
a state machine: commands out, replies in, a result out. No I/O, no asyncio.

The driver (:mod:`asyncmail.smtp.connection`) loops over
:meth:`Transaction.next_action` and does what each action says:

* :class:`Write`: write these bytes, which produce this many replies;
* :class:`Read`: wait for the next reply and hand it to :meth:`Transaction.receive`;
* :class:`SendData`: write the message data and the end of data, then call
  :meth:`Transaction.end_of_data_written` once the transport has handed it
  to the operating system;
* :class:`SendChunks`: write BDAT chunks (CHUNKING), the same call once the
  LAST chunk reached the operating system;
* :data:`DONE`: the transaction is over; its outcome is on the object.

When the I/O fails the driver calls :meth:`Transaction.fail` (or
:meth:`Transaction.cancelled`): recipients without an outcome become UNKNOWN
if the end of data was written (the message may have been delivered; it is
never resent), TEMPORARY otherwise (safe to retry). Replies received before
the failure are final: a 550 that arrived stands.

With PIPELINING (RFC 2920) the envelope (MAIL, every RCPT, DATA) is one
write and its replies are read in order; without it each command waits for
its reply. Either way the replies are checked for plausibility (a 354 to
RCPT means an unsolicited reply shifted the others, and nothing is trusted).

``receive`` only records; ``next_action`` decides. That split lets the driver
check, between the last reply of a command group and the next decision,
that nothing unsolicited followed it (:attr:`Read.group_end`). It is also
where new phases go without touching the I/O layer: cross-message
pipelining (the next transaction's envelope written right after this one's
end of data, replies matched in order, issue #13) is a driver holding a
queue of these machines and a ``Write`` emitted before the final ``Read``.

With CHUNKING (RFC 3030) the message goes in BDAT chunks instead of DATA:
not dot-stuffed, each chunk's size exact, the end of data being the LAST
chunk. With PIPELINING too, a message held in bytes is one write (MAIL,
every RCPT and ``BDAT <n> LAST`` with its octets) and its replies are read
in order; a streamed one waits for the envelope's replies (its attachments
are big: nothing is read or sent for a refused envelope), then its chunks
go pipelined. Without PIPELINING every command and chunk waits for its
reply. RFC 3030 section 2: after a refused chunk no more are sent, and the
server's state is indeterminate until RSET; after a LAST chunk accepted,
the server's transaction is over (no RSET, even when some RCPT failed).

The module is over the house's ~400 lines (twice that with BDAT) because
the machine is one class whose phases share their state (the BDAT phases
reuse the envelope's replies, refusals and failure handling), and its
docstrings are the protocol's spec.
"""

from __future__ import annotations

import enum
from collections import deque
from typing import Final

from ..exceptions import (
    DeliveryUnknownError,
    MailError,
    SMTPConnectError,
    SMTPError,
    SMTPResponseError,
)
from ..message import Base64Payload
from ..results import Outcome, RecipientResult
from .errors import AUTH_HINT, add_hint, recipients_refused, refused_by, wants_auth
from .parser import Reply
from .wire import WirePayload, check_commands, chunked_size, payload_size

__all__ = [
    "DONE",
    "Action",
    "Done",
    "Phase",
    "Read",
    "SendChunks",
    "SendData",
    "Transaction",
    "Write",
    "plausible",
]


# The actions are plain slotted classes, not dataclasses: a few are made
# for every message, on the send path.


class Write:
    """Write *data*; it produces *replies* replies. *fresh_deadline*: a new
    phase starts here (the per-phase timeout restarts)."""

    __slots__ = ("data", "fresh_deadline", "replies")

    def __init__(self, data: bytes, replies: int, fresh_deadline: bool = False):
        self.data = data
        self.replies = replies
        self.fresh_deadline = fresh_deadline

    def __repr__(self) -> str:
        return f"Write({self.data!r}, {self.replies})"


class Read:
    """Wait for the next reply. *group_end*: the last reply of a pipelined
    command group (anything unsolicited after it puts the session out of
    step). *fresh_deadline*: a new phase starts here."""

    __slots__ = ("fresh_deadline", "group_end")

    def __init__(self, group_end: bool = False, fresh_deadline: bool = False):
        self.group_end = group_end
        self.fresh_deadline = fresh_deadline

    def __repr__(self) -> str:
        return f"Read(group_end={self.group_end})"


class SendData:
    """Write the message data, then the end of data (already in *payload*
    for bytes, after the chunks for a streamed payload)."""

    __slots__ = ("payload",)

    def __init__(self, payload: WirePayload):
        self.payload = payload

    def __repr__(self) -> str:
        return "SendData(...)"


#: One BDAT chunk: its command line, and its octets (bytes, or a streamed
#: attachment encoded as it is written, its size known beforehand).
Chunk = tuple[bytes, bytes | Base64Payload]


class SendChunks:
    """Write *lead* (commands producing *lead_replies* replies, e.g. the
    pipelined MAIL and RCPTs, or nothing), then each of *chunks*: its BDAT
    line and its octets, one reply each, in as few writes as the sizes
    allow. *last*: the final chunk is the LAST one, so it carries the end
    of data: the end-of-data hook is awaited before the write that carries
    it, and :meth:`Transaction.end_of_data_written` is called once it
    reached the operating system."""

    __slots__ = ("chunks", "last", "lead", "lead_replies")

    def __init__(
        self, lead: bytes, lead_replies: int, chunks: tuple[Chunk, ...], last: bool
    ):
        self.lead = lead
        self.lead_replies = lead_replies
        self.chunks = chunks
        self.last = last

    def __repr__(self) -> str:
        return f"SendChunks({[c for c, _ in self.chunks]!r}, last={self.last})"


class Done:
    """The transaction is over."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "DONE"


DONE: Final = Done()

Action = Write | Read | SendData | SendChunks | Done


class Phase(enum.Enum):
    """Where the transaction is."""

    ENVELOPE = "envelope"  # MAIL, RCPT..., DATA and their replies
    EMPTY_DATA = "empty data"  # 354 with no recipient accepted: end it empty
    DATA = "data"  # the data being written
    FINAL = "final"  # the end of data written; its reply awaited
    CHUNKS = "chunks"  # BDAT: chunks handed out, their replies awaited
    RESET = "reset"  # RSET after a refusal, to leave the session clean
    DONE = "done"


_READ: Final = Read()
_READ_GROUP_END: Final = Read(group_end=True)
_READ_FINAL: Final = Read(fresh_deadline=True)
_READ_LAST: Final = Read(group_end=True, fresh_deadline=True)  # to BDAT LAST
_ENVELOPE, _EMPTY_DATA, _DATA = Phase.ENVELOPE, Phase.EMPTY_DATA, Phase.DATA
_CHUNKS = Phase.CHUNKS
_FINAL, _RESET, _DONE = Phase.FINAL, Phase.RESET, Phase.DONE
_ACCEPTED: Final = Outcome.ACCEPTED
_NO_REPLY: Final = Reply(0, "")


def plausible(replies: list[Reply], recipients: int) -> bool:
    """Whether replies can belong to MAIL, RCPT x *recipients*, DATA: 2xx,
    4xx or 5xx to MAIL and RCPT, 354, 4xx or 5xx to DATA. Anything else
    means an unsolicited reply shifted them."""
    for index, reply in enumerate(replies):
        code = reply.code
        if index <= recipients:
            if not (200 <= code < 300 or 400 <= code < 600):
                return False
        elif code != 354 and not 400 <= code < 600:
            return False
    return True


def _open(envelope: list[Reply], recipients: int) -> bool:
    """Whether the envelope's replies (MAIL, RCPT x *recipients*) leave a
    transaction open for the data: MAIL and at least one RCPT accepted, no
    421 (closing), nothing out of step."""
    return (
        len(envelope) == recipients + 1
        and envelope[0].positive
        and any(r.positive for r in envelope[1:])
        and not any(r.code == 421 for r in envelope)
        and plausible(envelope, recipients)
    )


def _refusal(address: str, reply: Reply) -> RecipientResult:
    return RecipientResult(
        address, reply.outcome, reply.code, reply.enhanced_status, reply.text
    )


class Transaction:
    """One message to *recipients* from *sender*, *payload* already stuffed
    (with *chunking*: the message as it is, neither stuffed nor ended).

    :param pipelining: the server offers PIPELINING: one write for the envelope.
    :param chunking: the server offers CHUNKING: BDAT instead of DATA.
    :param size: announce ``SIZE=`` (the server offers SIZE).
    :param eight_bit: announce ``BODY=8BITMIME``.
    :param smtputf8: announce ``SMTPUTF8`` (commands are then UTF-8).

    The outcome, once :attr:`settled`: :attr:`recipients` (one
    :class:`~asyncmail.results.RecipientResult` each), :attr:`error` (None
    when all were accepted), :attr:`reply` (the reply to the end of data),
    :attr:`reusable` (whether the session may carry another message),
    :attr:`end_written` and :attr:`data_recipients` (the recipients the data
    was written for: never to be retried once the end of data was written).
    """

    __slots__ = (
        "_actions",
        "_chunking",
        "_chunks",
        "_chunks_sent",
        "_commands",
        "_encoding",
        "_final",
        "_pipelining",
        "awaiting_final",
        "data_recipients",
        "end_written",
        "envelope_done",
        "error",
        "payload",
        "phase",
        "recipient_list",
        "recipients",
        "replies",
        "reply",
        "reusable",
        "sender",
        "settled",
    )

    def __init__(
        self,
        sender: str,
        recipients: list[str],
        payload: WirePayload,
        *,
        pipelining: bool,
        chunking: bool = False,
        size: bool = False,
        eight_bit: bool = False,
        smtputf8: bool = False,
    ) -> None:
        self.sender = sender
        self.recipient_list = recipients
        self.payload = payload
        self._pipelining = pipelining
        self._chunking = chunking
        self._chunks: list[Chunk] = []  # BDAT: the chunks, once planned
        self._chunks_sent = 0  # BDAT: how many were handed out
        self._encoding = "utf-8" if smtputf8 else "ascii"
        params = ""
        if size:
            octets = chunked_size(payload) if chunking else payload_size(payload)
            params += f" SIZE={octets}"
        if eight_bit:
            params += " BODY=8BITMIME"
        if smtputf8:
            params += " SMTPUTF8"
        self._commands = [f"MAIL FROM:<{sender}>{params}"]
        self._commands += [f"RCPT TO:<{r}>" for r in recipients]
        self._actions: deque[Action] | None = None  # decided, not handed out
        #: The reply to the end of data (the final dot, the LAST chunk), once read.
        self._final = _NO_REPLY
        self.phase = Phase.ENVELOPE
        # -- the outcome --
        self.recipients: dict[str, RecipientResult] = {}
        self.error: MailError | None = None
        self.reply = ""
        self.reusable = True
        #: Turns true once the end of data was handed to the operating system:
        #: from then on a failure leaves the outcome unknown.
        self.end_written = False
        self.data_recipients: tuple[str, ...] = ()
        self.settled = False  # every recipient has its outcome
        #: The replies to MAIL, RCPT... and DATA (or each BDAT chunk) received
        #: so far: final even if the connection is lost before the rest arrive.
        self.replies: list[Reply] = []
        self.envelope_done = False  # the envelope replies were applied
        self.awaiting_final = False  # waiting for the reply to the end of data

    # -- driving ------------------------------------------------------------------

    def next_action(self) -> Action:
        """What the driver must do next. Raises a MailError when the
        exchange cannot go on (a command that would inject a line, replies
        out of step); the driver then calls :meth:`fail` with it."""
        actions = self._actions
        if actions is None:
            actions = self._actions = self._start()
        if not actions:
            self._decide()
        return actions.popleft() if actions else DONE

    def receive(self, reply: Reply) -> None:
        """The reply the last :class:`Read` waited for."""
        phase = self.phase
        if phase is _ENVELOPE:
            self.replies.append(reply)
        elif phase is _FINAL:
            self._final = reply
        elif phase is _CHUNKS:
            self.replies.append(reply)
        elif phase is _RESET and not 200 <= reply.code < 300:
            self.reusable = False
        # EMPTY_DATA: the server must reject the empty message; nothing to keep.

    def end_of_data_written(self) -> None:
        """The end of data reached the operating system: maybe delivered."""
        self.end_written = True
        self.awaiting_final = True
        if self._chunking:
            # The replies to read are queued already (with the chunks); the
            # data went to every recipient not refused so far (pipelined:
            # all of them; narrowed once their replies are read).
            self.data_recipients = tuple(
                a for a in self.recipient_list if a not in self.recipients
            )
            return
        self.phase = Phase.FINAL
        assert self._actions is not None
        self._actions.append(_READ_FINAL)

    def end_of_data_unsent(self) -> None:
        """Take back :meth:`end_of_data_written` (DATA only): the session
        failed before the end of data's bytes left. Only before
        :meth:`fail` or :meth:`cancelled`, which decide the recipients."""
        assert not self._chunking
        self.end_written = False
        self.awaiting_final = False
        self.phase = Phase.DATA

    def lost(self, error: MailError) -> bool:
        """The connection failed while a reply was awaited. True when the
        transaction can still be decided from the replies it has: the
        server said 421 (closing) in the pipelined envelope, and its
        refusal stands for the rest. False: the driver fails it."""
        if (
            self._chunking
            and isinstance(error, SMTPConnectError)
            and self.replies
            and self.replies[-1].code == 421
            and (self.phase is _ENVELOPE or self.phase is _CHUNKS)
        ):
            assert self._actions is not None
            self._actions.clear()
            return True
        if (
            self._pipelining
            and self.phase is Phase.ENVELOPE
            and isinstance(error, SMTPConnectError)
            and self.replies
            and self.replies[-1].code == 421
        ):
            assert self._actions is not None
            self._actions.clear()  # no more replies are coming
            return True
        return False

    # -- the phases ------------------------------------------------------------------

    def _wire(self, commands: list[str]) -> bytes:
        wire = "\r\n".join(commands) + "\r\n"
        check_commands(wire, len(commands))
        return wire.encode(self._encoding)

    def _write(self, commands: list[str]) -> Write:
        return Write(self._wire(commands), len(commands))

    def _start(self) -> deque[Action]:
        actions: deque[Action]
        if self._chunking and self._pipelining:
            return self._start_chunked()
        if self._pipelining:
            commands = [*self._commands, "DATA"]
            actions = deque((self._write(commands),))
            actions.extend([_READ] * (len(commands) - 1))
            actions.append(_READ_GROUP_END)
            return actions
        return deque((self._write(self._commands[:1]), _READ))

    def _decide(self) -> None:
        """Called when the actions decided so far are done: decide the next."""
        phase = self.phase
        if self._chunking and (phase is _ENVELOPE or phase is _CHUNKS):
            self._decide_chunked()
            return
        if phase is _ENVELOPE:
            if not self._pipelining and self._sequential_next():
                return
            self._apply_envelope_replies()
        elif phase is _EMPTY_DATA:
            self._conclude()
        elif phase is _FINAL:
            final = self._final
            if not final.positive and not 400 <= final.code < 600:
                raise SMTPResponseError(f"Unexpected reply to the end of data: {final}")
            self._apply_final(final)
            self._conclude()
        elif phase is _RESET:
            self.phase = _DONE

    def _sequential_next(self) -> bool:
        """Without PIPELINING: queue the next command, if there is one to
        send (True), else the envelope is complete (False)."""
        assert self._actions is not None
        replies = self.replies
        if not replies[0].positive or replies[-1].code == 421:
            return False
        sent = len(replies)
        if sent < len(self._commands):
            self._actions.extend((self._write(self._commands[sent : sent + 1]), _READ))
            return True
        if sent == len(self._commands) and any(r.positive for r in replies[1:]):
            self._actions.extend((self._write(["DATA"]), _READ))
            return True
        return False

    def _apply_envelope_replies(self) -> None:
        recipients = self.recipient_list
        replies = self.replies
        assert self._actions is not None
        commands = len(recipients) + 1  # MAIL and the RCPTs, before DATA
        positive = 0
        if len(replies) == commands + 1 and replies[commands].code == 354:
            while positive < commands and 200 <= replies[positive].code < 300:
                positive += 1
        if positive == commands:
            # The common case in one step: MAIL and every RCPT accepted, DATA
            # answered 354 (plausible by construction; nothing refused, no
            # 421 among them): the data goes to every recipient.
            self.envelope_done = True
            self.phase = _DATA
            self.data_recipients = tuple(recipients)
            self._actions.append(SendData(self.payload))
            return
        if not plausible(replies, len(recipients)):
            # A 354 to MAIL/RCPT, a 250 to DATA...: an unsolicited reply shifted
            # the others; none of them can be trusted.
            raise SMTPResponseError(
                "Replies out of step with commands: "
                + ", ".join(str(r.code) for r in replies)
            )
        mail_reply = replies[0]
        rcpt_replies = replies[1 : 1 + len(recipients)]
        data_reply = (
            replies[1 + len(recipients)] if len(replies) > len(recipients) + 1 else None
        )
        closing = next((r for r in replies if r.code == 421), None)
        if closing is not None:
            self.reusable = False
        self.envelope_done = True
        outcome = self.recipients
        if not 200 <= mail_reply.code < 300:
            for address in recipients:
                outcome[address] = _refusal(address, mail_reply)
            self.error = refused_by(
                f"Sender <{self.sender}> refused", mail_reply, self.sender
            )
            if wants_auth(mail_reply):
                add_hint(self.error, AUTH_HINT)
        else:
            for address, reply in zip(recipients, rcpt_replies, strict=False):
                if not 200 <= reply.code < 300:
                    outcome[address] = _refusal(address, reply)
            for address in recipients[len(rcpt_replies) :]:
                # No reply (the session stopped early, or closed with 421).
                outcome[address] = (
                    _refusal(address, closing)
                    if closing is not None
                    else RecipientResult(
                        address, Outcome.TEMPORARY, text="not attempted"
                    )
                )
        accepted = [a for a in recipients if a not in outcome]
        if data_reply is not None and data_reply.code == 354:
            if not accepted:
                # RFC 2920: DATA accepted although every RCPT failed; end it
                # with an empty message, which the server must reject.
                self.phase = Phase.EMPTY_DATA
                self._actions.extend((Write(b".\r\n", 1, fresh_deadline=True), _READ))
            else:
                self.phase = Phase.DATA
                self.data_recipients = tuple(accepted)
                self._actions.append(SendData(self.payload))
            return
        if accepted:
            # DATA refused (or never sent): nobody got the message.
            reply = data_reply or closing or Reply(503, "DATA not sent")
            for address in accepted:
                outcome[address] = _refusal(address, reply)
            self.error = refused_by("DATA refused", reply)
        self._conclude()

    def _apply_final(self, final: Reply) -> None:
        """Record the reply to the end of data for the recipients it was for."""
        self.awaiting_final = False
        self.reply = str(final)
        if final.code == 421:
            self.reusable = False
        if 200 <= final.code < 300:
            code, status, text = final.code, final.enhanced_status, final.text
            recipients = self.recipients
            for address in self.data_recipients:
                recipients[address] = RecipientResult(
                    address, _ACCEPTED, code, status, text
                )
        else:
            for address in self.data_recipients:
                self.recipients[address] = _refusal(address, final)
            self.error = refused_by("Message refused after DATA", final)

    def _conclude(self) -> None:
        """Every recipient has its outcome: the error, and RSET if needed."""
        refused = {
            a: r for a, r in self.recipients.items() if r.outcome is not _ACCEPTED
        }
        if refused and self.error is None:
            self.error = recipients_refused(refused, len(self.recipient_list))
        self.settled = True
        if refused and self.reusable and self.phase is _ENVELOPE:
            # Leave the session clean for the next message. Only needed when
            # the transaction ended before its data: a reply to the end of
            # data (or to the empty data) closes it on the server's side
            # (RFC 5321 4.1.1.4), and with cross-message pipelining the next
            # message's MAIL may already follow it, which an RSET would undo.
            self.phase = Phase.RESET
            assert self._actions is not None
            self._actions.extend((Write(b"RSET\r\n", 1), _READ))
        else:
            self.phase = Phase.DONE

    # -- BDAT (CHUNKING) -----------------------------------------------------------

    def _plan(self) -> list[Chunk]:
        """The payload's BDAT chunks (made once): bytes are one LAST chunk;
        a streamed payload is one chunk per part, the last part carrying
        LAST (or, after a final attachment, an empty ``BDAT 0 LAST``)."""
        chunks = self._chunks
        if chunks:
            return chunks
        payload = self.payload
        if isinstance(payload, bytes):
            chunks.append((b"BDAT %d LAST\r\n" % len(payload), payload))
            return chunks
        for part in payload:
            size = len(part) if isinstance(part, bytes) else part.encoded_size
            if size:
                chunks.append((b"BDAT %d\r\n" % size, part))
        last = chunks[-1][1] if chunks else None
        if isinstance(last, bytes):
            chunks[-1] = (b"BDAT %d LAST\r\n" % len(last), last)
        else:
            chunks.append((b"BDAT 0 LAST\r\n", b""))
        return chunks

    def _start_chunked(self) -> deque[Action]:
        """With PIPELINING and CHUNKING: a message held in bytes is one write
        (MAIL, RCPT..., its LAST chunk) and one group of replies; a
        streamed one sends its envelope first (see the module docstring)."""
        commands = self._commands
        count = len(commands)
        actions: deque[Action]
        if isinstance(self.payload, bytes):
            self.phase = _CHUNKS
            self._chunks_sent = 1
            lead = self._wire(commands)
            actions = deque((SendChunks(lead, count, tuple(self._plan()), True),))
            actions.extend([_READ] * count)
            actions.append(_READ_LAST)
            return actions
        actions = deque((self._write(commands),))
        actions.extend([_READ] * (count - 1))
        actions.append(_READ_GROUP_END)
        return actions

    def _decide_chunked(self) -> None:
        """The next step under CHUNKING, once the actions so far are done."""
        actions = self._actions
        assert actions is not None
        replies = self.replies
        commands = self._commands
        if self.phase is _ENVELOPE:
            sent = len(replies)
            if (
                not self._pipelining
                and sent < len(commands)
                and replies[0].positive
                and replies[-1].code != 421
            ):
                actions.extend((self._write(commands[sent : sent + 1]), _READ))
                return
            if _open(replies, len(self.recipient_list)):
                self.phase = _CHUNKS
                self._queue_chunks()
                return
            self._settle_chunked()
            return
        # Without PIPELINING each chunk waits for the previous one's reply.
        if (
            self._chunks_sent < len(self._chunks)
            and len(replies) == len(commands) + self._chunks_sent
            and replies[-1].positive
        ):
            self._queue_chunks()
            return
        self._settle_chunked()

    def _queue_chunks(self) -> None:
        """Hand out the next chunks: all that are left with PIPELINING (their
        replies read as one group), else one."""
        actions = self._actions
        assert actions is not None
        plan = self._plan()
        start = self._chunks_sent
        end = len(plan) if self._pipelining else start + 1
        self._chunks_sent = end
        last = end == len(plan)
        actions.append(SendChunks(b"", 0, tuple(plan[start:end]), last))
        actions.extend([_READ] * (end - start - 1))
        actions.append(_READ_LAST if last else _READ)

    def _plausible_chunked(self) -> bool:
        """Whether the replies can be those of MAIL, RCPT... and the chunks
        sent: besides :func:`plausible` for the envelope, 2xx, 4xx or 5xx to
        each chunk, and never a LAST chunk accepted where no transaction was
        open (sender or every recipient refused) or after a refused chunk."""
        count = len(self.recipient_list)
        envelope = self.replies[: count + 1]
        chunks = self.replies[count + 1 :]
        if not plausible(envelope, count):
            return False
        if not all(200 <= r.code < 300 or 400 <= r.code < 600 for r in chunks):
            return False
        if chunks and len(chunks) == len(self._chunks) and chunks[-1].positive:
            return _open(envelope, count) and all(r.positive for r in chunks)
        return True

    def _settle_chunked(self) -> None:
        """Every reply that will come is in: record the outcome, as with DATA
        (the LAST chunk's reply in the place of the final dot's; a refused
        chunk refuses the message)."""
        recipients = self.recipient_list
        count = len(recipients)
        replies = self.replies
        chunks = replies[count + 1 :]
        answered = len(self._chunks) == len(chunks) > 0  # LAST has its reply
        outcome = self.recipients
        if answered and all(200 <= r.code < 300 for r in replies):
            # The common case: everything accepted.
            self.envelope_done = True
            self.awaiting_final = False
            final = self._final = chunks[-1]
            self.reply = str(final)
            self.data_recipients = tuple(recipients)
            code, status, text = final.code, final.enhanced_status, final.text
            for address in recipients:
                outcome[address] = RecipientResult(
                    address, _ACCEPTED, code, status, text
                )
            self._conclude_chunked()
            return
        if not self._plausible_chunked():
            raise SMTPResponseError(
                "Replies out of step with commands: "
                + ", ".join(str(r.code) for r in replies)
            )
        self.envelope_done = True
        self.awaiting_final = False
        if answered:
            self._final = chunks[-1]
        closing = next((r for r in replies if r.code == 421), None)
        if closing is not None:
            self.reusable = False
        mail_reply = replies[0]
        if not mail_reply.positive:
            for address in recipients:
                outcome[address] = _refusal(address, mail_reply)
            self.error = refused_by(
                f"Sender <{self.sender}> refused", mail_reply, self.sender
            )
            if wants_auth(mail_reply):
                add_hint(self.error, AUTH_HINT)
        else:
            for address, reply in zip(recipients, replies[1 : count + 1], strict=False):
                if not reply.positive:
                    outcome[address] = _refusal(address, reply)
            for address in recipients[len(replies) - 1 :]:
                outcome[address] = (
                    _refusal(address, closing)
                    if closing is not None
                    else RecipientResult(
                        address, Outcome.TEMPORARY, text="not attempted"
                    )
                )
        accepted = [a for a in recipients if a not in outcome]
        # The data reached the server's transaction only if a chunk was answered.
        self.data_recipients = tuple(accepted) if chunks else ()
        if accepted:
            refused = next((r for r in chunks if not r.positive), None)
            if refused is None and answered:
                final = chunks[-1]
                self.reply = str(final)
                for address in accepted:
                    outcome[address] = RecipientResult(
                        address,
                        _ACCEPTED,
                        final.code,
                        final.enhanced_status,
                        final.text,
                    )
            else:
                # A chunk refused (RFC 3030: the transaction failed, nothing
                # was delivered), or the server closed before the chunks.
                reply = refused or closing or Reply(503, "BDAT not answered")
                if answered:
                    self.reply = str(chunks[-1])
                for address in accepted:
                    outcome[address] = _refusal(address, reply)
                self.error = refused_by("Message refused at BDAT", reply)
        self._conclude_chunked()

    def _conclude_chunked(self) -> None:
        """Every recipient has its outcome: the error, and RSET unless the
        server accepted a LAST chunk (RFC 3030 section 2: only that ends
        its transaction; after a refused chunk, or none sent, its state is
        indeterminate and RSET is required before the next MAIL)."""
        refused = {
            a: r for a, r in self.recipients.items() if r.outcome is not _ACCEPTED
        }
        if refused and self.error is None:
            self.error = recipients_refused(refused, len(self.recipient_list))
        self.settled = True
        if self.reusable and not self._final.positive:
            self.phase = Phase.RESET
            assert self._actions is not None
            self._actions.extend((Write(b"RSET\r\n", 1), _READ))
        else:
            self.phase = Phase.DONE

    def _apply_received_chunks(self) -> None:
        """After a failure under CHUNKING: the data went only to recipients
        the envelope did not refuse, and a refused chunk that arrived
        settles those with it (the transaction failed: nothing delivered)."""
        recipients = self.recipient_list
        outcome = self.recipients
        self.data_recipients = tuple(
            a for a in self.data_recipients if a not in outcome
        )
        count = len(recipients)
        if len(self.replies) <= count + 1 or not self._plausible_chunked():
            return
        chunks = self.replies[count + 1 :]
        refused = next((r for r in chunks if not r.positive), None)
        if refused is not None:
            for address in recipients:
                outcome.setdefault(address, _refusal(address, refused))

    # -- failures ----------------------------------------------------------------

    def fail(self, error: MailError) -> None:
        """The exchange failed (I/O, time, a protocol fault): the session is
        not reusable, and recipients still open are decided: unknown once
        the end of data was written (maybe delivered), else temporary (safe
        to retry; permanent for our own side's failure, e.g. an unreadable
        attachment). Replies already received stand."""
        self.reusable = False
        self.phase = Phase.DONE
        if self._actions is not None:
            self._actions.clear()
        if self.settled:
            return
        self._apply_received_envelope()
        still_open = True
        if self._chunking and not self.envelope_done:
            self._apply_received_chunks()
            # Under BDAT the end of data may be written for recipients whose
            # refusals then arrived: unknown only if one is left open.
            still_open = any(a not in self.recipients for a in self.recipient_list)
        unknown = self.end_written and still_open
        if unknown:
            outcome = Outcome.UNKNOWN
        elif isinstance(error, SMTPError):
            outcome = Outcome.TEMPORARY  # the session failed: safe to retry
        else:
            outcome = Outcome.PERMANENT  # our side (e.g. an unreadable attachment)
        for address in self.recipient_list:
            if address not in self.recipients:
                self.recipients[address] = RecipientResult(
                    address, outcome, text=str(error)
                )
        if unknown:
            self.error = DeliveryUnknownError(
                f"Connection failed after the end of data was sent ({error}); the "
                "message may have been delivered, so it is not resent"
            )
        else:
            self.error = error
        self.settled = True

    def cancelled(self, queued: list[Reply]) -> None:
        """The send was cancelled mid-exchange: record what is known, taking
        the replies that arrived but were not read yet (*queued*)."""
        if self.settled:
            self.reusable = False
            self.phase = Phase.DONE
            return
        if self._chunking:
            if not self.envelope_done:
                self.replies.extend(queued)
            if self._cancelled_chunked():
                return
        elif self.awaiting_final and queued:
            self._apply_final(queued[0])
        elif not self.envelope_done:
            self.replies.extend(queued)
        self.fail(
            SMTPError(
                "The send was interrupted after the end of data was written; "
                "the message may have been delivered"
                if self.end_written
                else "The send was interrupted before this message was completed"
            )
        )

    def _cancelled_chunked(self) -> bool:
        """Cancelled under CHUNKING with every reply in (the LAST chunk's
        too): settle from them (True); else the caller fails it."""
        expected = len(self._commands) + len(self._chunks)
        if not (
            self.end_written
            and self._chunks_sent == len(self._chunks)
            and len(self.replies) == expected
        ):
            return False
        try:
            self._settle_chunked()
        except MailError:
            return False
        self.reusable = False
        self.phase = Phase.DONE
        if self._actions is not None:
            self._actions.clear()
        return True

    def _apply_received_envelope(self) -> None:
        """Record the refusals among the envelope replies received before an
        exchange failed: a 550 that arrived is final, whatever happened next."""
        recipients = self.recipient_list
        replies = self.replies[: 1 + len(recipients)]
        if self.envelope_done or not replies or not plausible(replies, len(recipients)):
            return
        mail_reply = replies[0]
        if not mail_reply.positive:
            for address in recipients:
                self.recipients.setdefault(address, _refusal(address, mail_reply))
            return
        for address, reply in zip(recipients, replies[1:], strict=False):
            if not reply.positive:
                self.recipients.setdefault(address, _refusal(address, reply))
