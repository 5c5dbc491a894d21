"""The bookkeeping of one ``send_messages`` call: its message source, its
results, and the result builders every backend shares.

:func:`skipped` is the one place that decides "no recipients: skipped";
:class:`Tally` counts, records and orders the results; :class:`Source`
takes the messages one at a time from whatever container they came in.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from typing import TYPE_CHECKING

from ..exceptions import InvalidMessageError, MailError, is_transient
from ..results import MessageResult, Outcome, RecipientResult, ResultCallback, record

if TYPE_CHECKING:
    from ..message import BaseMessage as EmailMessage  # any sendable message

__all__ = [
    "MessageSource",
    "Source",
    "Tally",
    "accepted_result",
    "failed_result",
    "failure_result",
    "skipped",
]

#: What ``send_messages`` accepts: a list, any iterable, or an async iterable.
MessageSource = Iterable["EmailMessage"] | AsyncIterable["EmailMessage"]


def skipped(message: EmailMessage) -> MessageResult | None:
    """The one place that decides "no recipients: skipped": the skipped
    result for a message with no recipients (nothing to send, not a
    failure), None for a message to deliver."""
    if message.recipients():
        return None
    return MessageResult(message)


def failure_result(message: EmailMessage, exc: BaseException) -> MessageResult | None:
    """The failed result for what stopped one message's delivery, or None
    when *exc* is not the message's own failure (cancellation, a bug)."""
    if isinstance(exc, MailError):
        return failed_result(message, exc, Outcome.PERMANENT)
    if isinstance(exc, (TypeError, UnicodeError)):
        # Content of the wrong type, or undecodable bytes, in this message.
        error = InvalidMessageError(f"The message cannot be serialised: {exc}")
        error.__cause__ = exc
        return failed_result(message, error, Outcome.PERMANENT)
    return None


def accepted_result(
    message: EmailMessage, message_id: str | None = None
) -> MessageResult:
    """A result in which every recipient was accepted (for local backends)."""
    recipients = {
        key: RecipientResult(key, Outcome.ACCEPTED) for key in _recipient_keys(message)
    }
    return MessageResult(message, recipients, message_id=message_id, attempts=1)


def failed_result(
    message: EmailMessage, error: MailError, outcome: Outcome
) -> MessageResult:
    """A result in which every recipient got *outcome* because of *error*
    (with the server's reply code, when a reply caused it)."""
    recipients = {
        key: RecipientResult.failure(key, outcome, error)
        for key in _recipient_keys(message)
    }
    return MessageResult(message, recipients, error=error)


def _recipient_keys(message: EmailMessage) -> list[str]:
    from ..address import envelope_address

    keys: list[str] = []
    for address in message.recipients():
        try:
            key = envelope_address(address)
        except (ValueError, TypeError):
            key = str(address)
        if key not in keys:
            keys.append(key)
    return keys


class Tally:
    """Counts, records and remembers results for one send_messages call.

    Messages are numbered as they are taken from the source, so that the
    error raised is that of the first failed message *in the order given*
    and ``exc.results`` follows that order, however concurrently they were
    sent.
    """

    def __init__(
        self,
        keep_all: bool,
        callback: ResultCallback | None,
        source: Source,
        silent: bool,
    ) -> None:
        self.keep_all = keep_all
        self.callback = callback
        self.source = source
        self.silent = silent
        self.results: list[tuple[int, MessageResult]] = []
        self.sent = 0
        self.first_error: tuple[int, MailError] | None = None

    def publish(self, result: MessageResult) -> None:
        position = self.source.position(result.message)
        if result.sent:
            self.sent += 1
        ok = result.ok
        if not ok and (self.first_error is None or position < self.first_error[0]):
            self.first_error = (
                position,
                result.error or MailError("message not delivered"),
            )
        # A generator of a million messages must not pile up here: keep every
        # result only for lists; otherwise the failures, for the error that
        # will be raised (none when silent).
        if self.keep_all or (not ok and not self.silent):
            self.results.append((position, result))
        record(result, self.callback)

    async def fail_all(self, messages: Source, error: MailError) -> None:
        """Nothing could be sent: every message fails with *error*."""
        outcome = Outcome.TEMPORARY if is_transient(error) else Outcome.PERMANENT
        async for message in messages.deliverable(self.publish):
            self.publish(failed_result(message, error, outcome))

    def finish(self, silent: bool) -> int:
        if self.first_error is not None and not silent:
            error = self.first_error[1]
            error.results = tuple(
                result for _, result in sorted(self.results, key=_first)
            )
            error.sent = self.sent
            raise error
        return self.sent


def _first(item: tuple[int, MessageResult]) -> int:
    return item[0]


class Source:
    """The messages of one send_messages call, whatever their container:
    taken one at a time (an iterator is never materialised), numbered as
    they are taken (see :class:`Tally`), with a look at the first."""

    def __init__(self, messages: MessageSource) -> None:
        self._sync: Iterator[EmailMessage] | None = None
        self._async: AsyncIterator[EmailMessage] | None = None
        if isinstance(messages, AsyncIterable):
            self._async = aiter(messages)
        else:
            self._sync = iter(messages)
        self._peeked: EmailMessage | None = None
        self._skipped: ResultCallback | None = None  # see deliverable()
        self._positions: dict[int, list[int]] = {}
        self._taken = 0

    async def peek(self) -> EmailMessage | None:
        """The first message (kept for the iteration), or None if empty."""
        if self._peeked is None:
            self._peeked = await self._next()
        return self._peeked

    async def _next(self) -> EmailMessage | None:
        if self._sync is not None:
            return next(self._sync, None)
        assert self._async is not None
        return await anext(self._async, None)

    def __aiter__(self) -> Source:
        return self

    def deliverable(self, publish: ResultCallback) -> Source:
        """Iterate only the messages to deliver: one without recipients is
        handed to *publish* as skipped instead (see :func:`skipped`), and
        never reaches a backend."""
        self._skipped = publish
        return self

    async def __anext__(self) -> EmailMessage:
        while True:
            message = self._peeked
            if message is not None:
                self._peeked = None
            else:
                message = await self._next()
                if message is None:
                    raise StopAsyncIteration
            if self._taking(message):
                return message

    @property
    def synchronous(self) -> bool:
        """The messages come from a plain iterable: :meth:`take` can have
        them with no await (so workers sharing it need no lock)."""
        return self._sync is not None

    def take(self) -> EmailMessage | None:
        """:meth:`__anext__` for a :attr:`synchronous` source, without a
        coroutine: the next message to deliver, or None at the end."""
        assert self._sync is not None
        while True:
            message = self._peeked
            if message is not None:
                self._peeked = None
            else:
                message = next(self._sync, None)
                if message is None:
                    return None
            if self._taking(message):
                return message

    def _taking(self, message: EmailMessage) -> bool:
        """Number *message* as taken; False when it was skipped instead."""
        self._positions.setdefault(id(message), []).append(self._taken)
        self._taken += 1
        if self._skipped is not None and (result := skipped(message)) is not None:
            self._skipped(result)
            return False
        return True

    def position(self, message: EmailMessage | None) -> int:
        """The position *message* was taken at (each taking is used once)."""
        positions = self._positions.get(id(message))
        if not positions:
            return self._taken
        position = positions.pop(0)
        if not positions:
            del self._positions[id(message)]
        return position
