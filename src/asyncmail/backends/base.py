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
import functools
import inspect
import math
import os
import sys
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Callable,
    Coroutine,
    Iterable,
    Iterator,
)
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any, ParamSpec, Self, TypeVar

import anyio

from ..dnsname import aget_fqdn
from ..exceptions import (
    ConfigurationError,
    InvalidMessageError,
    MailError,
    is_transient,
)
from ..observability import traced_delivery
from ..results import (
    MessageResult,
    Outcome,
    RecipientResult,
    ResultCallback,
    record,
)
from ..testing.routing import capturing

if TYPE_CHECKING:
    from ..message import EmailMessage
    from ..sync import BlockingBackend

__all__ = ["BackendState", "BaseEmailBackend", "MessageSource", "awaited_only"]

P = ParamSpec("P")
T = TypeVar("T")

#: What ``send_messages`` accepts: a list, any iterable, or an async iterable.
MessageSource = Iterable["EmailMessage"] | AsyncIterable["EmailMessage"]

#: At most this many results wait unread in :meth:`BaseEmailBackend.stream_results`
#: before it stops taking messages from the source (plus those in flight).
RESULTS_BUFFERED = 64


class BackendState(enum.Enum):
    """Where a backend is in its lifecycle. A closed backend may open again."""

    CLOSED = "closed"
    OPENING = "opening"  # open() is connecting
    OPEN = "open"


# -- the sync-call trap -----------------------------------------------------------

#: The backend methods that must be awaited (checked in every subclass too).
AWAITED_METHODS = ("open", "close", "send_messages")


def _called_from_sync_code(frame: FrameType | None) -> bool:
    """True when a coroutine method is being called where its coroutine
    cannot be awaited: in a thread with no running event loop, or by Django
    itself (its mail code calls backends synchronously and never awaits)."""
    if asyncio._get_running_loop() is None:
        return True
    module = frame.f_globals.get("__name__", "") if frame is not None else ""
    return isinstance(module, str) and module.startswith("django.")


def _sync_call_error(backend: object, method: str) -> TypeError:
    name = f"{type(backend).__module__}.{type(backend).__qualname__}"
    return TypeError(
        f"{name}.{method}() is a coroutine function and was called from "
        "synchronous code, where it would only return a coroutine that never "
        "runs (nothing would be sent). In async code, await it (asyncio.run() "
        "needs a coroutine of your own that awaits it). In blocking "
        f"code, use the blocking view: backend.blocking().{method}(...) or "
        f"'with backend as conn: conn.{method}(...)'. As Django's "
        "EMAIL_BACKEND (or a MAILERS BACKEND), use 'asyncmail.django.EmailBackend'."
    )


def awaited_only(
    method: Callable[P, Coroutine[Any, Any, T]],
) -> Callable[P, Coroutine[Any, Any, T]]:
    """Make a backend coroutine method raise TypeError, at call time, when
    it is called from synchronous code (see :func:`_called_from_sync_code`).

    An awaitable that complains only when it is never awaited is too late:
    Django's ``send_mail`` returns whatever ``send_messages`` returned, and
    a coroutine object is truthy, i.e. "1 message sent". Applied to
    ``open``, ``close`` and ``send_messages`` of every backend class,
    including subclasses that override them.
    """
    if getattr(method, "_asyncmail_awaited_only", False):
        return method

    @functools.wraps(method)
    def checked(*args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, T]:
        if _called_from_sync_code(sys._getframe(1)):
            raise _sync_call_error(args[0] if args else None, method.__name__)
        return method(*args, **kwargs)

    checked._asyncmail_awaited_only = True  # type: ignore[attr-defined]
    _mark_coroutine_function(checked)
    return checked


def _mark_coroutine_function(function: Callable[..., Any]) -> None:
    """Let introspection see *function* as the coroutine function it stands
    for: frameworks (Starlette's BackgroundTasks, FastAPI, Celery) look at
    ``inspect.iscoroutinefunction`` / ``asyncio.iscoroutinefunction`` to
    decide whether to await a callable or run it in a worker thread."""
    if sys.version_info >= (3, 12):
        inspect.markcoroutinefunction(function)
    # asyncio.iscoroutinefunction's own marker (what Python 3.11 checks).
    marker = getattr(asyncio.coroutines, "_is_coroutine", None)
    if marker is not None:
        function._is_coroutine = marker  # type: ignore[attr-defined]


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
        source = _Source(email_messages)
        if not await source.peek():
            return 0
        await aget_fqdn()  # the Message-ID domain: looked up off the event loop

        tally = _Tally(keep_all, on_result, source, silent)
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

    async def _send_all(self, source: _Source, tally: _Tally) -> None:
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
            await self.dispatch(tally.deliverable(source), tally.publish)

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
            source = _Source(email_messages)
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


class _Tally:
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
        source: _Source,
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

    async def fail_all(self, messages: _Source, error: MailError) -> None:
        """Nothing could be sent: every message fails with *error*."""
        outcome = Outcome.TEMPORARY if is_transient(error) else Outcome.PERMANENT
        async for message in self.deliverable(messages):
            self.publish(failed_result(message, error, outcome))

    async def deliverable(
        self, messages: AsyncIterator[EmailMessage]
    ) -> AsyncIterator[EmailMessage]:
        """The messages to deliver: one without recipients is published as
        skipped here (see :func:`skipped`) and never reaches a backend."""
        async for message in messages:
            result = skipped(message)
            if result is None:
                yield message
            else:
                self.publish(result)

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


class _Source:
    """The messages of one send_messages call, whatever their container:
    taken one at a time (an iterator is never materialised), numbered as
    they are taken (see :class:`_Tally`), with a look at the first."""

    def __init__(self, messages: MessageSource) -> None:
        self._sync: Iterator[EmailMessage] | None = None
        self._async: AsyncIterator[EmailMessage] | None = None
        if isinstance(messages, AsyncIterable):
            self._async = aiter(messages)
        else:
            self._sync = iter(messages)
        self._peeked: EmailMessage | None = None
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

    def __aiter__(self) -> _Source:
        return self

    async def __anext__(self) -> EmailMessage:
        message = self._peeked
        if message is not None:
            self._peeked = None
        else:
            message = await self._next()
            if message is None:
                raise StopAsyncIteration
        self._positions.setdefault(id(message), []).append(self._taken)
        self._taken += 1
        return message

    def position(self, message: EmailMessage | None) -> int:
        """The position *message* was taken at (each taking is used once)."""
        positions = self._positions.get(id(message))
        if not positions:
            return self._taken
        position = positions.pop(0)
        if not positions:
            del self._positions[id(message)]
        return position
