"""The base class of every backend: lifecycle, connection reuse, results.

A backend is async-first. Its lifecycle is an explicit state
(:class:`BackendState`), and it follows Django's connection-reuse rules:

* ``send_messages`` on a closed backend opens it, sends, and closes it again;
  on an open backend it sends and leaves it open;
* ``async with backend:`` opens and closes (a backend that fails to open is
  closed again before the error propagates);
* ``with backend as conn:`` does the same from blocking code and yields a
  :class:`~asyncmail.sync.BlockingBackend` view;
* an empty list returns 0 without connecting; a message with no recipients
  is skipped.

Subclasses implement :meth:`BaseEmailBackend.deliver` (one message) and,
when they hold a connection, :meth:`open` and :meth:`close`. Backends that
send concurrently override :meth:`BaseEmailBackend.dispatch`. A backend may
also override ``send_messages`` wholesale, as Django backends do.

The sync-call trap is in :mod:`.awaited`, the bookkeeping of one
``send_messages`` call (its source, its results, the result builders, the
"no recipients: skipped" rule) in :mod:`.sending`.

``open``, ``close`` and ``send_messages`` are coroutine functions, and they
refuse to be called from synchronous code (see :func:`awaited_only`): there
the call would only create a coroutine that never runs, which code written
for Django's synchronous backends (``django.core.mail.send_mail`` with
``EMAIL_BACKEND`` pointing here) would count as a message sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import inspect
import math
import os
from collections.abc import AsyncIterator
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import anyio

from ..dnsname import aget_fqdn
from ..exceptions import ConfigurationError, MailError
from ..observability import traced_delivery
from ..results import MessageResult, ResultCallback
from ..testing.routing import capturing
from .awaited import AWAITED_METHODS, awaited_only
from .sending import (
    MessageSource,
    Source,
    Tally,
    accepted_result,
    failed_result,
    failure_result,
    skipped,
)

if TYPE_CHECKING:
    from ..message import BaseMessage as EmailMessage  # any sendable message
    from ..sync import BlockingBackend

# The result builders live in .sending; importable from here, where every
# backend finds its base class.
__all__ = [
    "BackendState",
    "BaseEmailBackend",
    "MessageSource",
    "accepted_result",
    "awaited_only",
    "failed_result",
    "failure_result",
]

#: At most this many results wait unread in :meth:`BaseEmailBackend.stream_results`
#: before it stops taking messages from the source (plus those in flight).
RESULTS_BUFFERED = 64


class BackendState(enum.Enum):
    """Where a backend is in its lifecycle. A closed backend may open again."""

    CLOSED = "closed"
    OPENING = "opening"  # open() is connecting
    OPEN = "open"


class BaseEmailBackend:
    """Base class for e-mail backends.

    :param fail_silently: when true, failures are recorded in the results
        but not raised.
    :param alias: the mailer name this backend was created for, if any.

    ``open_error`` is the error that made the last :meth:`open` fail
    silently (None otherwise), so that the results can say why nothing was
    sent.
    """

    def __init__(
        self, *, fail_silently: bool = False, alias: str | None = None, **options: Any
    ) -> None:
        if options:
            raise ConfigurationError(
                f"{type(self).__module__}.{type(self).__qualname__} got unknown "
                f"option(s): {', '.join(sorted(options))}"
            )
        self.fail_silently = fail_silently
        self.alias = alias
        self.state = BackendState.CLOSED
        self.open_error: MailError | None = None
        self._bound_loop: asyncio.AbstractEventLoop | None = None
        self._bound_pid = 0
        self._sending = 0  # send_messages calls under way
        self._close_when_done = False  # one of them opened the backend

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in AWAITED_METHODS:
            method = cls.__dict__.get(name)
            if inspect.iscoroutinefunction(method):
                setattr(cls, name, awaited_only(method))

    @property
    def bound_loop(self) -> asyncio.AbstractEventLoop | None:
        """The event loop the backend's open connections belong to (set by
        backends that hold loop-bound connections, None otherwise)."""
        return self._bound_loop

    @bound_loop.setter
    def bound_loop(self, loop: asyncio.AbstractEventLoop | None) -> None:
        self._bound_loop = loop
        self._bound_pid = os.getpid()

    def forget_inherited(self) -> None:
        """Called in a forked child on a backend the parent had open: its
        connections are the parent's sockets, never to be used here. The
        backend is closed in the child (without a word on those sockets) and
        opens connections of its own when next used. Subclasses holding
        connections extend it."""
        self._bound_loop = None
        self.state = BackendState.CLOSED
        self._sending = 0
        self._close_when_done = False

    # -- lifecycle ---------------------------------------------------------------

    @awaited_only
    async def open(self) -> bool | None:
        """Open the backend's connection, if it has one.

        Returns True when a connection was opened now, False when it was
        already open, and None when opening failed silently.
        """
        if self.state is BackendState.OPEN:
            return False
        self.state = BackendState.OPEN
        return True

    @awaited_only
    async def close(self) -> None:
        """Close the backend's connection; closing a closed backend is a no-op."""
        self.state = BackendState.CLOSED

    async def __aenter__(self) -> Self:
        if capturing(self) is not None:  # a test captures mail: nothing to open
            return self
        try:
            await self.open()
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self.close()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        with anyio.CancelScope(shield=True):
            await self.close()

    def blocking(self) -> BlockingBackend:
        """A blocking view of this backend, for synchronous code."""
        from ..sync import BlockingBackend

        return BlockingBackend(self)

    def __enter__(self) -> BlockingBackend:
        view = self.blocking()
        view.open_for_block()
        return view

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.blocking().close()

    # -- sending -----------------------------------------------------------------

    @awaited_only
    async def send_messages(
        self,
        email_messages: MessageSource,
        *,
        fail_silently: bool = False,
        on_result: ResultCallback | None = None,
    ) -> int:
        """Send messages; return how many the server accepted (Django's count).

        *email_messages* may be a list, any iterable or an async iterable; an
        iterator is consumed lazily, never held in memory as a whole.

        Every message's outcome is recorded (see :mod:`asyncmail.results`).
        Unless *fail_silently* (or the backend's own ``fail_silently``) is
        true, the error of the first message that was not fully delivered is
        raised after every message was attempted.
        """
        if (stand_in := capturing(self)) is not None:  # a test captures mail
            return await stand_in.send_messages(
                email_messages, fail_silently=fail_silently, on_result=on_result
            )
        silent = self.fail_silently or fail_silently
        self.check_loop()
        keep_all = isinstance(email_messages, (list, tuple))
        source = Source(email_messages)
        if not await source.peek():
            return 0
        await aget_fqdn()  # the Message-ID domain: looked up off the event loop

        tally = Tally(keep_all, on_result, source, silent)
        self._sending += 1
        try:
            await self._send_all(source, tally)
        finally:
            self._sending -= 1
            if self._close_when_done and not self._sending:
                # The call that opened the backend, or the last one still
                # sending through it, closes it.
                self._close_when_done = False
                with anyio.CancelScope(shield=True):
                    await self.close()
        return tally.finish(silent)

    def check_loop(self) -> None:
        """Raise RuntimeError if the backend's open connections belong to
        another event loop (e.g. opened through the blocking API, then used
        from the caller's own loop). In a forked child, a backend the parent
        had open is closed first (see :meth:`forget_inherited`)."""
        bound = self._bound_loop
        if bound is not None and self._bound_pid != os.getpid():
            self.forget_inherited()
            return
        if bound is not None and bound is not asyncio.get_running_loop():
            raise RuntimeError(
                f"{self!r} is open on another event loop; use it from the loop "
                "that opened it (or close it there first)"
            )

    async def open_for_sending(self) -> bool | None:
        """What ``send_messages`` calls on a closed backend (same returns as
        :meth:`open`, which it calls); a backend that connects lazily, per
        message, overrides it."""
        return await self.open()

    async def _send_all(self, source: Source, tally: Tally) -> None:
        try:
            opened = await self.open_for_sending()
        except BaseException as exc:
            # As in __aenter__: a backend that failed to open is closed again,
            # so that a half-open one is not taken for open next time.
            with anyio.CancelScope(shield=True):
                await self.close()
            if not isinstance(exc, MailError):
                raise
            opened = None
            await tally.fail_all(source, exc)
        else:
            if opened is None:
                # open() failed silently: nothing can be sent; say why.
                error = self.open_error or MailError("the backend could not be opened")
                await tally.fail_all(source, error)
        if opened is not None:
            if opened:
                self._close_when_done = True
            await self.dispatch(source.deliverable(tally.publish), tally.publish)

    @contextlib.asynccontextmanager
    async def stream_results(
        self, email_messages: MessageSource
    ) -> AsyncIterator[AsyncIterator[MessageResult]]:
        """Send messages in the background and iterate their results as each
        completes (for progress bars, or to log results as they come)::

            async with backend.stream_results(messages) as results:
                async for result in results:
                    print(result.status, result.message_id)

        Failures are in the results, never raised (as with fail_silently);
        leaving the block early cancels the sending that is still under way.
        An error that stops the sending altogether (e.g. the message source
        raising) ends the iteration and is raised, as is, when the block
        exits.

        Memory stays bounded: no new message is taken from the source while
        ``RESULTS_BUFFERED`` results wait to be read, so a slow reader slows
        the sending down instead of piling up results (and their messages).
        """
        send, receive = anyio.create_memory_object_stream[MessageResult](math.inf)
        errors: list[Exception] = []
        room = [anyio.Event()]  # set when a result was read

        async def gated() -> AsyncIterator[EmailMessage]:
            source = Source(email_messages)
            async for message in source:
                while receive.statistics().current_buffer_used >= RESULTS_BUFFERED:
                    room[0] = anyio.Event()
                    await room[0].wait()
                yield message

        async def results() -> AsyncIterator[MessageResult]:
            async for result in receive:
                room[0].set()
                yield result

        async def run() -> None:
            async with send:
                try:
                    await self.send_messages(
                        gated(), fail_silently=True, on_result=send.send_nowait
                    )
                except Exception as exc:  # not wrapped in an exception group
                    errors.append(exc)

        # The receiving end closes after the task group: a message that
        # completes while the sending is being cancelled must still find it
        # open (its result is then dropped, not an error).
        async with receive, anyio.create_task_group() as group:
            group.start_soon(run)
            try:
                yield results()
            finally:
                group.cancel_scope.cancel()
        if errors:
            raise errors[0]

    async def dispatch(
        self,
        messages: AsyncIterator[EmailMessage],
        publish: ResultCallback,
    ) -> None:
        """Send every message and publish each result; one at a time here.

        Backends that send concurrently (SMTP with a pool) override this.
        """
        async for message in messages:
            publish(await self.deliver_or_fail(message))

    @traced_delivery  # with OpenTelemetry installed: a span per message
    async def deliver_or_fail(self, message: EmailMessage) -> MessageResult:
        """Deliver one message, turning what stops it into a failed result:
        one bad message fails alone, with its reason, and the batch goes on."""
        if (result := skipped(message)) is not None:
            return result
        try:
            return await self.deliver(message)
        except Exception as exc:
            result = failure_result(message, exc)
            if result is None:
                raise
            return result

    async def deliver(self, message: EmailMessage) -> MessageResult:
        """Deliver one message that has recipients; subclasses implement it."""
        raise NotImplementedError(
            f"{type(self).__qualname__} must implement deliver() or send_messages()"
        )
