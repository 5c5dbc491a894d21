"""Workers: claim due messages from the outbox, deliver them, record results.

A :class:`Worker` runs in the app's own event loop (``async with Worker(...)``
for a lifespan, or ``await worker.run()``) or as its own process
(``asyncmail worker``). Any number of them, in any number of processes and
machines, can share one store:

* they claim due messages in batches, most urgent first, under a lease that
  a heartbeat extends while they work; a worker that dies leaves its claims
  to expire, and another takes them;
* each message is delivered through the backend (the pooled SMTP backend
  by default, or any asyncmail backend) over ``concurrency`` connections
  (each carrying the SMTP backend's ``pipeline_depth`` messages at once, as
  a direct send does: one round trip a message); just before the end of
  data is written the message is marked in flight, durably (through
  :data:`asyncmail.backends.smtp.end_of_data_hook`; other backends are
  marked before they are handed the message), so a worker
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

Inside a worker three kinds of task keep the connections busy: the producer
claims the next batch when half of the last one was taken; consumers (one
a message a connection carries at once, see :meth:`Worker._consumers`) each
take the most urgent claimed message, send it, hand its result over and take
the next at once; one settler writes
the results handed over, many per transaction. A result not yet written
leaves its message in flight and leased (the heartbeat extends it), so a
worker dying before the write leaves the message unknown, never resent.
What one message goes through is in :mod:`.delivery`.

This module is over 400 lines because it is one class: the worker's options,
its lifecycle and those three loops share the worker's state (the claimed
queue, the counts that pace claims, the wake-up events) and are read together.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections import deque
from types import TracebackType
from typing import Any, Self

import anyio

from ..backends.base import BaseEmailBackend
from ..backends.turns import Turns
from ..exceptions import ConfigurationError, MailError
from ..results import MessageResult, ResultCallback
from .delivery import SharedRate, deliver, write_results
from .model import Job, LeaseLostError, QueueError, RetryPolicy
from .store import Store

__all__ = ["Worker"]

log = logging.getLogger("asyncmail.queue")

DEFAULT_BACKEND = "asyncmail.backends.smtp.EmailBackend"


class Worker:
    """Delivers the outbox's due messages until stopped.

    :param store: the store, or its URL (see :func:`asyncmail.queue.open_store`).
    :param backend: a backend instance, a dotted path, or None for the pooled
        SMTP backend configured by the EMAIL_* settings.
    :param backend_options: options for a backend given by path.
    :param concurrency: connections at once (the SMTP pool's size by
        default); where the backend pipelines (SMTP's ``pipeline_depth``),
        each carries that many deliveries at once.
    :param batch: messages claimed at once (default: twice the deliveries at
        once, see ``concurrency``).
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

    #: Seconds the result writer waits for more results to write together
    #: (less once half a batch of them is waiting): each write is a
    #: transaction (a commit, on SQLite FULL a sync to disk) that the
    #: in-flight marks may have to wait for, so fewer and larger is better.
    SETTLE_DELAY = 0.02
    #: Seconds between tries at results the store refused (see _settle).
    RESULT_RETRY = 2.0

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
        self._batch_option = batch
        #: Messages claimed at once (set by :meth:`run` unless given).
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
            else SharedRate(
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
        self._opening = anyio.Lock()
        self._woken = False
        #: Claimed jobs not yet taken by a connection (most urgent first).
        self._jobs: deque[Job] = deque()
        self._job_ready = anyio.Event()
        self._producing = False
        #: Delivered messages whose results are not written yet.
        self._unsettled: list[tuple[Job, MessageResult]] = []
        #: The ids of the messages this worker holds: claimed and not yet
        #: settled, let go of or given back. Only their leases are renewed,
        #: and its own claims never expire them (see Store.claim).
        self._held: set[int] = set()
        self._settle_ready = anyio.Event()
        self._settle_full: anyio.Event | None = None
        self._settle_threshold = 0
        self._settler_closing = False

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
        for event in (self._stop_event, self._wake, self._progress, self._job_ready):
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
        consumers = self._consumers(backend)
        # Twice the deliveries at once by default: a new claim is made when
        # half of it was taken, so the consumers never wait for one.
        self.batch = self._batch_option or 2 * consumers
        self._settle_threshold = max(consumers, self.batch // 2)
        self._settle_ready = anyio.Event()
        self._settler_closing = False
        self._job_ready = anyio.Event()
        self._jobs = deque()
        self._producing = True
        unstarted: list[int] = []
        try:
            async with anyio.create_task_group() as outer:
                outer.start_soon(self._heartbeat)
                if self.store.dialect.name == "postgresql":
                    outer.start_soon(self._listen)
                async with anyio.create_task_group() as settling:
                    settling.start_soon(self._settler)
                    async with anyio.create_task_group() as inner:
                        # As in a direct send, only as many messages as
                        # there are connections are before their end of
                        # data at once (see asyncmail.backends.turns).
                        turns = (
                            Turns(self.concurrency)
                            if consumers > self.concurrency
                            else None
                        )
                        for _ in range(consumers):
                            inner.start_soon(self._consume, unstarted, turns)
                        try:
                            await self._produce(until_idle)
                        finally:
                            self._producing = False
                            self._job_ready.set()
                    self._settler_closing = True
                    self._settle_ready.set()
                    if self._settle_full is not None:
                        self._settle_full.set()
                outer.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                with contextlib.suppress(Exception):
                    self.store.listeners.remove(self._poke)
                if self._unsettled:  # cancelled: write what was delivered
                    batch, self._unsettled = self._unsettled, []
                    with contextlib.suppress(Exception):
                        await self._settle(batch, persist=False)
                unstarted += [job.id for job in self._jobs]
                self._jobs.clear()
                self._held.clear()
                with contextlib.suppress(MailError):
                    await self.store.release(self.name, unstarted)
                if self._opened_backend:  # opened here: closed here
                    self._opened_backend = False
                    with contextlib.suppress(Exception):
                        await backend.close()

    def _consumers(self, backend: BaseEmailBackend) -> int:
        """Messages delivered at once: ``concurrency``, times the messages
        one connection carries at once where the backend pipelines them
        (the SMTP backend's ``pipeline_depth``): a message whose end of data
        is written hands its connection to the next while it awaits the
        reply, so the next one's envelope travels with that end of data
        (one round trip a message). The connections stay ``concurrency``:
        the extra deliveries only await their last reply."""
        depth = getattr(backend, "pipeline_depth", 1)
        return self.concurrency * (depth if isinstance(depth, int) and depth > 1 else 1)

    async def _produce(self, until_idle: bool) -> None:
        """Claim due messages while there is room: a new batch is claimed
        when half of the last one was taken, so the connections never wait
        for a claim."""
        assert self._wake is not None
        threshold = max(1, self.batch // 2)
        while not self._stopping:
            room = self.batch - self._outstanding
            if room < threshold:
                await self._wait_progress()
                continue
            self._woken = False
            try:
                jobs = await self.store.claim(
                    self.name, room, self.lease, self.policy, held=self._held
                )
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
            held = self._held
            # A message this worker still holds is never taken twice, even
            # if another worker's claim expired it meanwhile and it came
            # back here: the one in hand goes on (its mark decides).
            jobs = [job for job in jobs if job.id not in held]
            held.update(job.id for job in jobs)
            self._outstanding += len(jobs)
            self._jobs.extend(jobs)
            self._job_ready.set()

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

    async def _heartbeat(self) -> None:
        while True:
            await anyio.sleep(self.lease / 3)
            try:
                await self.store.heartbeat(self.name, self.lease, self._held)
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

    async def _consume(self, unstarted: list[int], turns: Turns | None) -> None:
        """One consumer's loop: take the most urgent claimed job (once it has
        a turn, with *turns*), send it, hand its result to the settler, take
        the next."""
        jobs = self._jobs
        turn = None if turns is None else turns.join()
        while True:
            if self._stopping:
                while jobs:
                    ident = jobs.popleft().id
                    unstarted.append(ident)
                    self._held.discard(ident)
                    self._done()
            if not jobs:
                if not self._producing:
                    return
                event = self._job_ready
                if event.is_set():
                    self._job_ready = event = anyio.Event()
                await event.wait()
                continue
            if turn is not None and not turn.held:
                await turn.take()
                if not jobs or self._stopping:  # taken by another meanwhile
                    turn.give_back()
                    continue
            job = jobs.popleft()
            result: MessageResult | None = None
            try:
                result = await self._deliver(job)
            except Exception as exc:
                # A bug or a misbehaving backend: the message is let go as
                # if this worker had died (taken again, dead after
                # max_claims); the worker and the other deliveries go on.
                log.exception("%s: delivering message %s failed", self.name, job.id)
                with contextlib.suppress(MailError):
                    await self.store.abandon(
                        self.name, job.id, f"{type(exc).__name__}: {exc}"
                    )
                # Let go of (if abandon failed too, its lease, no longer
                # renewed, ends and any claim takes it again).
                self._held.discard(job.id)
            finally:
                if turn is not None:
                    turn.give_back()  # unless its connection was handed on
            if result is None:
                # Left to its lease (the claim was lost, or the store failed
                # before the end of data): no longer renewed here, it
                # expires and is taken again.
                self._held.discard(job.id)
                self._done()
            else:
                # The result is written by the settler while this connection
                # goes on with the next message: the message stays leased
                # (the heartbeat covers it) and in flight until the write
                # commits, so a worker dying meanwhile leaves it unknown,
                # never resent.
                unsettled = self._unsettled
                unsettled.append((job, result))
                if len(unsettled) == 1:
                    self._settle_ready.set()
                elif (
                    len(unsettled) >= self._settle_threshold
                    and self._settle_full is not None
                ):
                    self._settle_full.set()
                self._done()

    async def _settler(self) -> None:
        """Write the results of delivered messages, many per call (one
        transaction): after the first result it waits a moment
        (:attr:`SETTLE_DELAY`, or until half a batch of results is in) for
        the others under way to join it."""
        while True:
            if not self._unsettled:
                if self._settler_closing:
                    return
                self._settle_ready = anyio.Event()
                await self._settle_ready.wait()
                continue
            if (
                len(self._unsettled) < self._settle_threshold
                and not self._settler_closing
            ):
                self._settle_full = full = anyio.Event()
                with anyio.move_on_after(self.SETTLE_DELAY):
                    await full.wait()
                self._settle_full = None
            batch, self._unsettled = self._unsettled, []
            await self._settle(batch)

    def _done(self) -> None:
        self._outstanding -= 1
        # Wake the producer only when it has something to do: room for a
        # new claim, or (until_idle) nothing left.
        progress = self._progress
        if progress is not None and (
            self._outstanding <= self.batch - max(1, self.batch // 2)
            or self._outstanding == 0
        ):
            progress.set()

    # -- one message -------------------------------------------------------------------

    async def _deliver(self, job: Job) -> MessageResult | None:
        """Send *job* (after a rate-limit slot); None when its claim was
        left to its lease (nothing to record)."""
        backend = self.backend
        assert backend is not None
        if self.rate is not None:
            try:
                await self.rate.wait()
            except QueueError as exc:
                log.warning("%s: rate limit unavailable: %s", self.name, exc)
                return None  # the claim expires; the message is taken again
        return await deliver(backend, self.store, job, self.name, self._ensure_open)

    async def _ensure_open(self) -> None:
        """Open the backend if it is closed: one delivery does it, the others
        wait for it (each opening it alone, the ones that found it opening
        would be refused as sent to a closed backend). Opened here, it is
        closed by :meth:`run`."""
        backend = self.backend
        assert backend is not None
        async with self._opening:
            if backend.state.value != "open" and await backend.open():
                self._opened_backend = True

    async def _settle(
        self, batch: list[tuple[Job, MessageResult]], *, persist: bool = True
    ) -> None:
        """Record *batch*'s results (see :func:`.delivery.write_results`).

        While the worker runs (*persist*), a batch the store keeps refusing
        is tried again every few seconds: its messages stay held, their
        leases renewed, so that a result the server gave is not lost to a
        database outage. A stopping worker gives up on it: the messages
        are then left in flight to their leases (unknown, never resent)."""
        while True:
            try:
                self.delivered += await write_results(
                    self.store, batch, self.name, self.policy, self.on_result
                )
            except QueueError as exc:
                if persist and not self._settler_closing:
                    log.warning(
                        "%s: %d result(s) not written yet, trying again: %s",
                        self.name,
                        len(batch),
                        exc,
                    )
                    await anyio.sleep(self.RESULT_RETRY)
                    continue
                log.error(
                    "%s: %d result(s) could not be written; their messages are "
                    "left in flight (unknown once their leases expire): %s",
                    self.name,
                    len(batch),
                    exc,
                )
            break
        self._held.difference_update(job.id for job, _ in batch)


__all__ += ["LeaseLostError"]
