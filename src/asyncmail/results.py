"""Per-message, per-recipient results: what happened to every message sent.

Every send records one :class:`MessageResult` per message, whatever the
backend and whether the call was async or blocking, and whether or not it
raised. A caller reads them in any of these ways, none of which changes
Django-style code:

* ``message.result`` after ``send()`` / ``asend()`` / ``send_messages()``;
* ``exc.results`` on the exception a failed send raises (with ``exc.sent``);
* :func:`collect_results`, a context manager that gathers the results of every
  send made inside it (for ``send_mail`` and friends, which hide the message);
* ``on_result=`` callbacks on ``send_messages`` (issued as each message
  completes, for progress bars and logs).

Each recipient ends in exactly one of four outcomes (:class:`Outcome`):
accepted, refused temporarily (4xx, or a transient failure before the server
took the message: safe to retry), refused permanently (5xx, or a failure that
retrying will not fix), or unknown (the connection was lost after the end of
the data was sent: it may have been delivered, so it is never resent
automatically). Nothing is reported as sent that the server did not accept.
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from . import observability

if TYPE_CHECKING:
    from .exceptions import MailError
    from .message import BaseMessage as EmailMessage  # any sendable message

__all__ = [
    "MessageResult",
    "MessageStatus",
    "Outcome",
    "RecipientResult",
    "ResultCallback",
    "collect_results",
    "reply_outcome",
]


class Outcome(enum.Enum):
    """What happened to one recipient."""

    ACCEPTED = "accepted"
    """The server accepted the message for this recipient."""
    TEMPORARY = "temporary"
    """Refused for now (4xx, or failed before the server took it): retry later."""
    PERMANENT = "permanent"
    """Refused for good (5xx, or a failure that retrying will not fix)."""
    UNKNOWN = "unknown"
    """Lost after the end of the data: maybe delivered, so never resent."""


def reply_outcome(code: int) -> Outcome:
    """What an SMTP reply code means for the recipient (or message) it
    answers: 2xx and 3xx accepted, 4xx temporary (try again later), anything
    else permanent (5xx, and codes no SMTP server may send).

    The one rule for reply codes: the SMTP backend applies it to every reply
    it reads, and :func:`asyncmail.exceptions.is_transient` to an error's
    ``code``.
    """
    if 200 <= code < 400:
        return Outcome.ACCEPTED
    if 400 <= code < 500:
        return Outcome.TEMPORARY
    return Outcome.PERMANENT


class MessageStatus(enum.Enum):
    """What happened to one message, summarising its recipients."""

    SENT = "sent"
    """Every recipient accepted."""
    PARTIAL = "partial"
    """Some recipients accepted, some refused."""
    FAILED = "failed"
    """Nobody accepted, and it is known not to be delivered."""
    UNKNOWN = "unknown"
    """Lost after the end of the data: maybe delivered."""
    SKIPPED = "skipped"
    """No recipients: nothing to do."""


@dataclass(frozen=True, slots=True)
class RecipientResult:
    """The outcome for one envelope recipient.

    ``code``, ``enhanced_status`` (RFC 3463, e.g. ``"5.1.1"``) and ``text``
    come from the server's reply when there was one; for failures without a
    reply (connection lost, bad address) ``text`` says what went wrong.
    """

    address: str
    """The envelope address (RCPT TO)."""
    outcome: Outcome
    """What happened to it."""
    code: int | None = None
    """The server's reply code, when it replied."""
    enhanced_status: str | None = None
    """The reply's RFC 3463 status (``"5.1.1"``), when it had one."""
    text: str = ""
    """The reply's text, or what went wrong."""

    @property
    def accepted(self) -> bool:
        """True when the server accepted the message for this recipient."""
        return self.outcome is Outcome.ACCEPTED

    @classmethod
    def failure(
        cls, address: str, outcome: Outcome, error: BaseException
    ) -> RecipientResult:
        """*address* not delivered because of *error* (with the server's
        reply code and enhanced status when the error carries them)."""
        return cls(
            address,
            outcome,
            getattr(error, "code", None),
            getattr(error, "enhanced_status", None),
            str(error),
        )


@dataclass(slots=True)
class MessageResult:
    """The outcome of sending one message.

    ``recipients`` maps every envelope address to its
    :class:`RecipientResult`. ``error`` is the exception describing why the
    message was not fully delivered (None when it was). ``reply`` is the
    server's final reply to the message (its text often carries a queue id).
    """

    message: EmailMessage | None
    """The message sent (the same object the caller gave)."""
    recipients: Mapping[str, RecipientResult] = field(default_factory=dict)
    """Every envelope address and its outcome."""
    error: MailError | None = None
    """Why the message was not fully delivered (None when it was)."""
    message_id: str | None = None
    """The Message-ID header of the copy sent."""
    reply: str = ""
    """The server's final reply to the message (often with a queue id)."""
    attempts: int = 0
    """How many tries the message took (retries included)."""

    @property
    def status(self) -> MessageStatus:
        """The message's outcome, summarising its recipients'."""
        outcomes = [result.outcome for result in self.recipients.values()]
        if not outcomes:
            return (
                MessageStatus.FAILED
                if self.error is not None
                else MessageStatus.SKIPPED
            )
        if all(outcome is Outcome.ACCEPTED for outcome in outcomes):
            return MessageStatus.SENT
        if any(outcome is Outcome.UNKNOWN for outcome in outcomes):
            return MessageStatus.UNKNOWN
        if any(outcome is Outcome.ACCEPTED for outcome in outcomes):
            return MessageStatus.PARTIAL
        return MessageStatus.FAILED

    @property
    def sent(self) -> bool:
        """True when the server accepted the message for at least one recipient
        (what Django's return count counts)."""
        return any(result.accepted for result in self.recipients.values())

    @property
    def ok(self) -> bool:
        """True when nothing went wrong (all accepted, or nothing to send)."""
        return self.status in (MessageStatus.SENT, MessageStatus.SKIPPED)

    @property
    def accepted(self) -> list[str]:
        """The recipients that accepted the message."""
        return [a for a, r in self.recipients.items() if r.outcome is Outcome.ACCEPTED]

    @property
    def refused(self) -> dict[str, RecipientResult]:
        """Recipients refused temporarily or permanently."""
        return {
            address: result
            for address, result in self.recipients.items()
            if result.outcome in (Outcome.TEMPORARY, Outcome.PERMANENT)
        }

    @property
    def unknown(self) -> list[str]:
        """The recipients whose outcome is unknown (maybe delivered)."""
        return [a for a, r in self.recipients.items() if r.outcome is Outcome.UNKNOWN]


#: Signature of ``on_result`` callbacks: called once per message as it completes.
ResultCallback = Callable[[MessageResult], object]

_collectors: ContextVar[tuple[list[MessageResult], ...]] = ContextVar(
    "asyncmail_result_collectors", default=()
)


@contextlib.contextmanager
def collect_results() -> Iterator[list[MessageResult]]:
    """Gather the result of every message sent inside the block, in order of
    completion; works for async and blocking sends, and nests.

    Example::

        with asyncmail.collect_results() as results:
            send_mass_mail(datatuple, fail_silently=True)
        failed = [r for r in results if not r.ok]
    """
    results: list[MessageResult] = []
    token = _collectors.set((*_collectors.get(), results))
    try:
        yield results
    finally:
        _collectors.reset(token)


def record(result: MessageResult, callback: ResultCallback | None = None) -> None:
    """Publish one message's result: on the message, to the collectors in
    scope, and to the caller's callback."""
    if result.message is not None:
        result.message.result = result
    observability.message_outcome(result)  # logging, metrics
    for collector in _collectors.get():
        collector.append(result)
    if callback is not None:
        callback(result)
