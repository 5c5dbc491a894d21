"""Workers: claim due messages from the outbox, deliver them, record results.

A :class:`Worker` runs in the app's own event loop (``async with Worker(...)``
for a lifespan, or ``await worker.run()``) or as its own process
(``asyncmail worker``). Any number of them, in any number of processes and
machines, can share one store:

* they claim due messages in batches, most urgent first, under a lease that
  a heartbeat extends while they work; a worker that dies leaves its claims
  to expire, and another takes them;
* each message is delivered through the backend (the pooled SMTP backend
  by default, or any asyncmail backend) with ``concurrency`` deliveries at
  once; just before the end of data is written the message is marked in
  flight, durably (through :data:`asyncmail.backends.smtp.end_of_data_hook`;
  other backends are marked before they are handed the message), so a worker
  that dies after that point leaves it unknown, never resent;
* every per-recipient result is stored, and published as the results of any
  send are (:mod:`asyncmail.results`); recipients refused temporarily are
  tried again at a backoff-scheduled time, until the policy's attempt limit
  dead-letters the message;
* ``rate_limit`` is shared by every worker using the same ``rate_name`` on
  the store: send slots are reserved in the database, atomically, so the
  limit holds across processes and machines.

:meth:`Worker.stop` (SIGTERM/SIGINT for the command) stops claiming, finishes
the deliveries under way, gives back the claims not started, and returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections import deque
from types import TracebackType
from typing import Any, Self

import anyio

from ..backends.base import BaseEmailBackend, failed_result
from ..exceptions import ConfigurationError, MailError, is_transient
from ..message import RawMessage, RenderedMessage
from ..results import MessageResult, Outcome, ResultCallback, record
from .store import (
    Job,
    LeaseLostError,
    QueueError,
    RetryPolicy,
    Store,
    settle,
)

__all__ = ["Worker"]

log = logging.getLogger("asyncmail.queue")

DEFAULT_BACKEND = "asyncmail.backends.smtp.EmailBackend"


class _Queued(RawMessage):
    """A message from the outbox: its bytes were rendered and checked by
    asyncmail when it was enqueued, so they are sent as they are, without
    being checked again."""

    def render(self, *, allow_8bit: bool = True) -> RenderedMessage:
        data = self.data
        head = data[: data.find(b"\r\n\r\n") + 1]
        eight_bit = not data.isascii()
        if eight_bit and not allow_8bit:
            return super().render(allow_8bit=allow_8bit)  # the clear error
        return RenderedMessage((data,), eight_bit, not head.isascii(), "")


class _SharedRate:
    """Send slots reserved from the store, a few at a time."""

    def __init__(
        self, store: Store, name: str, rate: float, burst: int, chunk: int
    ) -> None:
        self.store = store
        self.name = name
        self.rate = rate
        self.burst = burst
        self.chunk = chunk
        self._slots: deque[float] = deque()
        self._lock: asyncio.Lock | None = None

    async def wait(self) -> None:
        if self._lock is None:
            self._lock = asyncio.Lock()
        interval = 1.0 / self.rate
        async with self._lock:
            while True:
                if not self._slots:
                    delay = await self.store.reserve(
                        self.name, self.rate, self.burst, self.chunk
                    )
                    start = time.monotonic() + delay
                    self._slots.extend(start + i * interval for i in range(self.chunk))
                at = self._slots.popleft()
                # A slot missed by more than one interval (this process was
                # busy or paused) is dropped, never used late: late slots
                # used together would be a burst the limit does not allow.
                if time.monotonic() - at <= interval:
                    break
        await anyio.sleep(max(0.0, at - time.monotonic()))


class Worker:
    """Delivers the outbox's due messages until stopped.

    :param store: the store, or its URL (see :func:`asyncmail.queue.open_store`).
    :param backend: a backend instance, a dotted path, or None for the pooled
        SMTP backend configured by the EMAIL_* settings.
    :param backend_options: options for a backend given by path.
    :param concurrency: deliveries at once (the SMTP pool's size by default).
    :param batch: messages claimed at once (default 2 x concurrency).
    :param lease: seconds a claim lasts without a heartbeat; a dead worker's
        messages wait this long before another worker takes them.
    :param poll_interval: seconds between looks at an idle store (enqueues in
        this process and PostgreSQL notifications wake the worker at once).
    :param policy: retries and dead-lettering (:class:`RetryPolicy`).
    :param rate_limit: at most this many messages a second, shared by every
        worker with the same ``rate_name`` on the store; ``burst`` allows
        that many at once after an idle spell (default 1).
    :param name: this worker's identity in the store. A worker started with
        the same name as a dead one takes back that one's claims at once
        (names must then be unique among live workers); by default a unique
        name is made up, and a dead worker's claims wait for their lease.
    :param on_result: called with each message's result.
    """

    def __init__(
        self,
        store: Store | str,
        *,
        backend: BaseEmailBackend | str | None = None,
        backend_options: dict[str, Any] | None = None,
        concurrency: int = 10,
        batch: int | None = None,
        lease: float = 60.0,
        poll_interval: float = 1.0,
        policy: RetryPolicy | None = None,
        rate_limit: float | None = None,
        burst: int = 1,
        rate_name: str = "default",
        name: str | None = None,
        on_result: ResultCallback | None = None,
    ) -> None:
        from . import open_store

        self.store = open_store(store) if isinstance(store, str) else store
        if concurrency < 1:
            raise ConfigurationError("concurrency must be 1 or more")
        if lease <= 0 or poll_interval <= 0:
            raise ConfigurationError("lease and poll_interval must be positive")
        if rate_limit is not None and rate_limit <= 0:
            raise ConfigurationError("rate_limit must be positive")
        if burst < 1:
            raise ConfigurationError("burst must be 1 or more")
        self.concurrency = concurrency
        self.batch = batch or 2 * concurrency
        self.lease = lease
        self.poll_interval = poll_interval
        self.policy = policy or RetryPolicy()
        self.recover_own = name is not None
        self.name = name or (
            f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        )
        self.on_result = on_result
        self._backend_spec = backend
        self._backend_options = dict(backend_options or {})
        self.backend: BaseEmailBackend | None = (
            backend if isinstance(backend, BaseEmailBackend) else None
        )
        self.rate = (
            None
            if rate_limit is None
            else _SharedRate(
                self.store,
                rate_name,
                float(rate_limit),
                burst,
                max(1, min(concurrency, int(rate_limit // 4) or 1)),
            )
        )
        #: Messages delivered (a result recorded) since the worker started.
        self.delivered = 0
        self._stopping = False
        self._stop_event: anyio.Event | None = None
        self._wake: anyio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._outstanding = 0
        self._progress: anyio.Event | None = None
        self._group: anyio.abc.TaskGroup | None = None
        self._opened_backend = False
        self._woken = False

    def __repr__(self) -> str:
        return f"<Worker {self.name} on {self.store!r}>"

    # -- lifecycle --------------------------------------------------------------------

    def stop(self) -> None:
        """Stop gracefully: claim nothing more, finish what is being sent,
        give back the rest. Safe to call from a signal handler or another
        thread."""
        self._stopping = True
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._set_events)

    def _set_events(self) -> None:
        for event in (self._stop_event, self._wake, self._progress):
            if event is not None:
                event.set()

    def _poke(self) -> None:
        """Wake the worker (from any thread): messages were enqueued."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._wake_up)

    def _wake_up(self) -> None:
        self._woken = True
        if self._wake is not None:
            self._wake.set()

    async def __aenter__(self) -> Self:
        group = anyio.create_task_group()
        await group.__aenter__()
        self._group = group
        group.start_soon(self.run)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
        group, self._group = self._group, None
        if group is not None:
            await group.__aexit__(exc_type, exc, traceback)

    def _make_backend(self) -> BaseEmailBackend:
        if self.backend is not None:
            return self.backend
        from ..api import get_connection

        spec = self._backend_spec
        path = spec if isinstance(spec, str) else DEFAULT_BACKEND
        options = dict(self._backend_options)
        if path == DEFAULT_BACKEND:
            options.setdefault("max_connections", self.concurrency)
        if path == "asyncmail.backends.queue.EmailBackend":
            raise ConfigurationError("A worker cannot deliver through the queue itself")
        self.backend = get_connection(path, **options)
        return self.backend

    # -- the loop ---------------------------------------------------------------------

    async def run(self, *, until_idle: bool = False) -> None:
        """Deliver until :meth:`stop` (or, with *until_idle*, until no message
        is due and none is being sent)."""
        self._loop = asyncio.get_running_loop()
        self._stop_event = anyio.Event()
        self._wake = anyio.Event()
        self._progress = anyio.Event()
        if self._stopping:
            self._set_events()
        backend = self._make_backend()
        self.store.listeners.append(self._poke)
        if self.recover_own:
            await self.store.recover(self.name, self.policy)
        send, receive = anyio.create_memory_object_stream[Job](self.batch)
        unstarted: list[int] = []
        try:
            async with anyio.create_task_group() as outer:
                outer.start_soon(self._heartbeat)
                if self.store.dialect.name == "postgresql":
                    outer.start_soon(self._listen)
                async with anyio.create_task_group() as inner:
                    for _ in range(self.concurrency):
                        inner.start_soon(self._consume, receive.clone(), unstarted)
                    receive.close()
                    async with send:
                        await self._produce(send, until_idle)
                outer.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                with contextlib.suppress(Exception):
                    self.store.listeners.remove(self._poke)
                with contextlib.suppress(MailError):
                    await self.store.release(self.name, unstarted)
                if self._opened_backend:  # opened here: closed here
                    self._opened_backend = False
                    with contextlib.suppress(Exception):
                        await backend.close()

    async def _produce(
        self, send: anyio.abc.ObjectSendStream[Job], until_idle: bool
    ) -> None:
        assert self._wake is not None
        while not self._stopping:
            room = self.batch - self._outstanding
            if room < max(1, self.batch // 2):
                await self._wait_progress()
                continue
            self._woken = False
            try:
                jobs = await self.store.claim(self.name, room, self.lease, self.policy)
            except QueueError as exc:
                log.warning("%s: claiming failed, trying again: %s", self.name, exc)
                await self._sleep_or_wake(self.poll_interval)
                continue
            if not jobs:
                if until_idle and self._outstanding == 0:
                    return
                await self._sleep_or_wake(
                    self.poll_interval if self._outstanding == 0 else 0.05
                )
                continue
            self._reset_breaker()
            self._outstanding += len(jobs)
            for job in jobs:
                await send.send(job)

    async def _wait_progress(self) -> None:
        self._progress = anyio.Event()
        if self._stopping:
            return
        with anyio.move_on_after(self.poll_interval):
            await self._progress.wait()

    async def _sleep_or_wake(self, seconds: float) -> None:
        self._wake = anyio.Event()
        if self._stopping or self._woken:  # woken while claiming: look again
            return
        with anyio.move_on_after(seconds):
            await self._wake.wait()

    def _reset_breaker(self) -> None:
        # The SMTP backend fails the rest of a send_messages call fast once a
        # message could not connect; for a worker, each claimed batch is a
        # fresh call (the attribute is the backend's own; absent elsewhere).
        if self.backend is not None and hasattr(self.backend, "_unreachable"):
            self.backend._unreachable = None

    async def _heartbeat(self) -> None:
        while True:
            await anyio.sleep(self.lease / 3)
            try:
                await self.store.heartbeat(self.name, self.lease)
            except QueueError as exc:
                log.warning("%s: heartbeat failed: %s", self.name, exc)

    async def _listen(self) -> None:
        from .postgres import listen

        while True:
            try:
                await listen(self.store.url, self._wake_up)
            except Exception as exc:  # the database went away: poll meanwhile
                log.warning("%s: LISTEN failed, retrying: %s", self.name, exc)
            await anyio.sleep(self.poll_interval)

    async def _consume(
        self, receive: anyio.abc.ObjectReceiveStream[Job], unstarted: list[int]
    ) -> None:
        async with receive:
            async for job in receive:
                if self._stopping:
                    unstarted.append(job.id)
                    self._done()
                    continue
                try:
                    await self._deliver(job)
                except Exception as exc:
                    # A bug or a misbehaving backend: the message is let go as
                    # if this worker had died (taken again, dead after
                    # max_claims); the worker and the other deliveries go on.
                    log.exception("%s: delivering message %s failed", self.name, job.id)
                    with contextlib.suppress(MailError):
                        await self.store.abandon(
                            self.name, job.id, f"{type(exc).__name__}: {exc}"
                        )
                finally:
                    self._done()

    def _done(self) -> None:
        self._outstanding -= 1
        if self._progress is not None:
            self._progress.set()

    # -- one message -------------------------------------------------------------------

    async def _deliver(self, job: Job) -> None:
        from ..backends import smtp

        backend = self.backend
        assert backend is not None
        if self.rate is not None:
            try:
                await self.rate.wait()
            except QueueError as exc:
                log.warning("%s: rate limit unavailable: %s", self.name, exc)
                return  # the claim expires; the message is taken again
        message = _Queued(job.data, job.sender, job.pending)
        marked = False
        abandoned: list[MailError] = []

        async def mark() -> None:
            nonlocal marked
            if marked:
                return
            try:
                await self.store.mark_inflight(job, self.name)
            except MailError as exc:
                abandoned.append(exc)
                raise
            marked = True

        result: MessageResult | None = None
        token = smtp.end_of_data_hook.set(mark)
        try:
            if backend.state.value == "closed":
                try:
                    if await backend.open():
                        self._opened_backend = True
                except MailError as exc:
                    outcome = (
                        Outcome.TEMPORARY if is_transient(exc) else Outcome.PERMANENT
                    )
                    result = failed_result(message, exc, outcome)
            if result is None:
                if not isinstance(backend, smtp.EmailBackend):
                    await mark()  # no end-of-data hook: in flight from now on
                result = await backend.deliver_or_fail(message)
        except MailError as exc:
            if not abandoned:
                raise
            result = None
            log.warning("%s: message %s not sent: %s", self.name, job.id, exc)
        finally:
            smtp.end_of_data_hook.reset(token)
        if abandoned:
            # Lost the claim, or the store failed before the end of data:
            # nothing was delivered; whoever holds the message now decides.
            log.warning(
                "%s: message %s left to its lease: %s", self.name, job.id, abandoned[0]
            )
            return
        assert result is not None
        await self._settle(job, result)

    async def _settle(self, job: Job, result: MessageResult) -> None:
        recipients = {
            address: (r.outcome.value, r.code, r.enhanced_status, r.text)
            for address, r in result.recipients.items()
        }
        settlement = settle(
            job,
            recipients=recipients,
            reply=result.reply,
            error=str(result.error) if result.error is not None else "",
            policy=self.policy,
            now=time.time(),
        )
        for attempt in range(5):
            try:
                written = await self.store.finish(settlement, self.name)
            except QueueError as exc:
                log.warning(
                    "%s: recording message %s failed: %s", self.name, job.id, exc
                )
                await anyio.sleep(0.2 * (attempt + 1))
                continue
            if not written:
                log.warning(
                    "%s: message %s was claimed by another worker meanwhile",
                    self.name,
                    job.id,
                )
                return
            break
        else:
            return  # in flight or claimed: its lease decides (unknown or again)
        self.delivered += 1
        try:
            record(result, self.on_result)
        except Exception:
            log.exception("%s: on_result callback failed", self.name)


__all__ += ["LeaseLostError"]
