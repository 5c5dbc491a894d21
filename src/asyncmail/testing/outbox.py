"""The test outbox: every message sent while it captures, and assertions on them.

:func:`capture_mail` makes every send in its scope, async or blocking,
through any backend (also one built before the scope began), land in an
:class:`Outbox` instead of going anywhere. The ``mailoutbox`` pytest fixture
is this, for one test.

An :class:`Outbox` is a list of the messages sent (deep copies, as the
locmem backend keeps them: later changes to a message do not change what
the test sees), in the order they were sent, plus assertions that read as
the test's intent and fail with a list of what *was* sent and why each
message did not match::

    outbox.assert_sent(to="ada@example.com", subject="Welcome", body="activate")
    outbox.assert_sent(count=2, attachment="report.pdf")
    outbox.assert_not_sent(to="bob@example.com")
    outbox.assert_nothing_sent()

Bodies, headers and attachments are matched on the message *as rendered*
(the bytes a server would receive, parsed back), so what is asserted is
what recipients get, not what the model held.

The assertions' matching lives in :mod:`.matching`; this module captures.
"""

from __future__ import annotations

import contextlib
import copy
import email.message
import email.policy
from collections.abc import Iterable, Iterator
from email.parser import BytesParser
from typing import TYPE_CHECKING, Any, Unpack

from ..backends.base import BaseEmailBackend, accepted_result
from ..backends.locmem import EmailBackend as _LocmemBackend
from ..backends.locmem import _read_attached_files
from ..threads import SharedLock
from . import routing
from .matching import (
    Criteria,
    _criteria,
    _describe_criteria,
    _mismatches,
    _report,
    _summary,
)

if TYPE_CHECKING:
    from ..message import BaseMessage as EmailMessage  # any sendable message
    from ..results import MessageResult

__all__ = ["CaptureBackend", "Criteria", "Outbox", "capture_mail"]


class Outbox(list["EmailMessage"]):
    """The messages sent while this outbox captured, oldest first.

    It is a plain list of :class:`~asyncmail.EmailMessage` copies (index it,
    ``len()`` it, clear it) with assertion helpers. :meth:`sent_bytes` and
    :meth:`parsed` give a message as it would have gone on the wire.
    """

    def __init__(self, messages: Iterable[EmailMessage] = ()) -> None:
        super().__init__(messages)
        self._lock = SharedLock()
        self._wire: dict[int, bytes] = {}
        #: The result of every send captured (one per message, in order).
        self.results: list[MessageResult] = []

    # -- recording -----------------------------------------------------------------

    def _record(self, message: EmailMessage, data: bytes) -> None:
        with self._lock:
            self.append(message)
            self._wire[id(message)] = data

    def clear(self) -> None:
        """Forget every message sent so far."""
        with self._lock:
            super().clear()
            self._wire.clear()
            self.results.clear()

    @property
    def last(self) -> EmailMessage:
        """The message sent last (AssertionError when none was)."""
        __tracebackhide__ = True
        if not self:
            raise AssertionError("No e-mail was sent")
        return self[-1]

    def sent_bytes(self, message: EmailMessage) -> bytes:
        """*message* as the server would have received it (CRLF endings)."""
        data = self._wire.get(id(message))
        if data is None:  # appended by hand: render it now
            data = message.render().data
        return data

    def parsed(self, message: EmailMessage) -> email.message.EmailMessage:
        """*message* as rendered, parsed back with the modern email policy."""
        parsed = BytesParser(
            email.message.EmailMessage, policy=email.policy.default
        ).parsebytes(self.sent_bytes(message).replace(b"\r\n", b"\n"))
        assert isinstance(parsed, email.message.EmailMessage)
        return parsed

    # -- queries and assertions ----------------------------------------------------

    def filter(self, **criteria: Unpack[Criteria]) -> list[EmailMessage]:
        """The messages matching every criterion (see :meth:`assert_sent`)."""
        checks = _criteria(criteria)
        return [m for m in list(self) if not _mismatches(self, m, checks)]

    def assert_sent(
        self, count: int | None = None, **criteria: Unpack[Criteria]
    ) -> list[EmailMessage]:
        """Assert that messages matching every criterion were sent; return them.

        With *count*, exactly that many must match; without, at least one.
        With no criteria, this checks how many messages were sent at all.

        Criteria (each optional; all given must hold for a message to match):

        ``to``, ``cc``, ``bcc``, ``reply_to``, ``recipients``
            an address or a list of them, each of which must be among that
            field's (``recipients``: the envelope, to + cc + bcc). Addresses
            compare by mailbox: display names are ignored, and so is the case
            of the domain (``"Ada <ada@Example.COM>"`` matches
            ``"ada@example.com"``; the local part is compared exactly).
        ``from_email``
            the sender's address.
        ``subject``
            a string (equal), a compiled regular expression (searched) or a
            predicate.
        ``body``
            a string that some text part (plain or HTML, not an attachment)
            contains; or a pattern / predicate tried on each part.
        ``html``
            the same, on the HTML parts only (the message must have one).
        ``attachment``
            a file name, a ``(filename, mimetype)`` pair, a predicate on
            ``(filename, content, mimetype)``, or a list of those, each of
            which some attachment must satisfy.
        ``headers``
            a mapping of header name to expected value (string or pattern),
            read from the rendered message.
        ``where``
            a predicate on the :class:`~asyncmail.EmailMessage` itself.
        """
        __tracebackhide__ = True
        checks = _criteria(criteria)
        messages = list(self)
        verdicts = [(m, _mismatches(self, m, checks)) for m in messages]
        matched = [m for m, reasons in verdicts if not reasons]
        if count is None:
            if matched:
                return matched
            expected = "at least one message"
        else:
            if count < 0:
                raise ValueError("count must be 0 or more")
            if len(matched) == count:
                return matched
            expected = f"{count} message{'s' if count != 1 else ''}"
        wanted = f" matching {_describe_criteria(criteria)}" if criteria else ""
        raise AssertionError(
            f"Expected {expected}{wanted} to be sent; "
            f"{len(matched)} matched.\n{_report(self, verdicts, bool(criteria))}"
        )

    def assert_not_sent(self, **criteria: Unpack[Criteria]) -> None:
        """Assert that no message matching every criterion was sent."""
        __tracebackhide__ = True
        if not criteria:
            raise TypeError(
                "assert_not_sent() needs criteria; use assert_nothing_sent()"
            )
        checks = _criteria(criteria)
        matched = [m for m in list(self) if not _mismatches(self, m, checks)]
        if matched:
            listing = "\n".join(
                f"  #{self.index(m) + 1}: {_summary(self, m)}" for m in matched
            )
            raise AssertionError(
                f"Expected no message matching {_describe_criteria(criteria)}; "
                f"{len(matched)} did:\n{listing}"
            )

    def assert_nothing_sent(self) -> None:
        """Assert that no message at all was sent."""
        __tracebackhide__ = True
        if self:
            raise AssertionError(
                f"Expected no e-mail to be sent; {len(self)} "
                f"{'was' if len(self) == 1 else 'were'}:\n"
                + "\n".join(
                    f"  #{i}: {_summary(self, m)}" for i, m in enumerate(self, 1)
                )
            )

    # -- capturing -----------------------------------------------------------------

    @contextlib.contextmanager
    def capturing(self) -> Iterator[Outbox]:
        """Capture into this outbox for the duration of the block (it nests;
        the innermost outbox of the current context wins)."""
        previous = routing._current.get()
        token = routing._current.set(self)
        with routing._lock:
            routing._active.append(self)
        try:
            yield self
        finally:
            with routing._lock:
                # By identity: lists compare equal by content.
                for index, outbox in enumerate(routing._active):
                    if outbox is self:
                        del routing._active[index]
                        break
            try:
                routing._current.reset(token)
            except ValueError:  # left in another context (e.g. a fixture runner)
                routing._current.set(previous)

    def __repr__(self) -> str:
        return f"<Outbox of {len(self)} message{'s' if len(self) != 1 else ''}>"


def capture_mail() -> contextlib.AbstractContextManager[Outbox]:
    """Capture every send in the block into a new :class:`Outbox`::

        with capture_mail() as outbox:
            await signup("ada@example.com")
        outbox.assert_sent(to="ada@example.com")

    Scoped by context variables: concurrent tasks each inside their own
    ``capture_mail()`` get their own outbox. A send made outside any
    capturing context (a thread that does not carry it) goes to the only
    outbox capturing in the process, and is an error when there are several.
    """
    return Outbox().capturing()


class CaptureBackend(_LocmemBackend):
    """Stands in for the real backend while an outbox captures.

    It keeps, as the locmem backend does, a deep copy of every message
    (rendered first, so that a bad header fails as it would on the wire) and
    the bytes it rendered to. ``replaces`` is the class of the backend it
    stands in for.
    """

    def __init__(
        self,
        outbox: Outbox,
        *,
        replaces: type[BaseEmailBackend] | None = None,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self.outbox = outbox
        self.replaces = replaces

    async def deliver(self, message: EmailMessage) -> MessageResult:
        rendered = message.render()
        data = rendered.data
        stored = copy.deepcopy(message)
        await _read_attached_files(stored)
        self.outbox._record(stored, data)
        result = accepted_result(message, rendered.message_id)
        stored.result = result  # the copy tells its outcome too
        self.outbox.results.append(result)
        return result
