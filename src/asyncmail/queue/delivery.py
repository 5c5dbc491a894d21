"""One claimed message through a backend, its results, the shared rate limit.

:func:`deliver` sends one :class:`~asyncmail.queue.model.Job` and returns its
result, or None when the claim was left to its lease. Just before the end of
data is written the message is marked in flight, durably (through
:data:`asyncmail.backends.smtp.end_of_data_hook`; other backends are marked
before they are handed the message), so a worker that dies after that point
leaves it unknown, never resent. :func:`write_results` records what
attempts decided, many messages at once. :class:`SharedRate` hands out send slots
reserved in the store, so a rate limit holds across every worker on it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable

import anyio

from ..backends import smtp
from ..backends.base import BaseEmailBackend, failed_result
from ..exceptions import InvalidMessageError, MailError, is_transient
from ..message import RawMessage, RenderedMessage
from ..results import MessageResult, Outcome, ResultCallback, record
from .model import Job, QueueError, RetryPolicy, settle
from .store import Store

__all__ = ["ClaimedMessage", "SharedRate", "deliver", "write_results"]

log = logging.getLogger("asyncmail.queue")


class ClaimedMessage(RawMessage):
    """A claimed message's stored bytes and envelope, sent as a RawMessage
    is. They are what asyncmail rendered, checked and addressed when the
    message was enqueued, so they are not checked again on every attempt:
    :meth:`render` and :meth:`envelope` give them as stored."""

    light_render = True
    _stored: RenderedMessage

    def __init__(self, job: Job) -> None:
        # What RawMessage's constructor sets, set at once (one message a
        # delivery: its argument checks and construction-time check are
        # what the stored form replaces).
        data = job.data
        head, _, body = data.partition(b"\r\n\r\n")
        self.__dict__.update(
            to=list(job.pending),
            cc=[],
            bcc=[],
            from_email=job.sender,
            connection=None,
            result=None,
            data=data,
            _stored=RenderedMessage(
                (data,), not body.isascii(), not head.isascii(), job.message_id
            ),
        )

    def render(self, *, allow_8bit: bool = True) -> RenderedMessage:
        rendered = self._stored
        if rendered.eight_bit and not allow_8bit:
            raise InvalidMessageError(
                "The queued message has 8-bit content and cannot be re-encoded "
                "for a server without 8BITMIME"
            )
        return rendered

    def envelope(self) -> tuple[str, list[str]]:
        sender = self.from_email
        assert isinstance(sender, str)  # as stored: addr-specs
        return sender, [str(address) for address in self.to]


class _Mark:
    """The end-of-data hook for one message: mark it in flight, once; a
    failure (the claim was lost, the store is down) is kept, and raised so
    that the end of data is never written."""

    __slots__ = ("error", "job", "marked", "owner", "store")

    def __init__(self, store: Store, job: Job, owner: str) -> None:
        self.store = store
        self.job = job
        self.owner = owner
        self.marked = False
        self.error: MailError | None = None

    async def __call__(self) -> None:
        if self.marked:
            return
        try:
            await self.store.mark_inflight(self.job, self.owner)
        except MailError as exc:
            self.error = exc
            raise
        self.marked = True


async def deliver(
    backend: BaseEmailBackend,
    store: Store,
    job: Job,
    owner: str,
    ensure_open: Callable[[], Awaitable[None]],
) -> MessageResult | None:
    """Send *job* through *backend*; return its result (None when the claim
    was left to its lease: nothing to record). *ensure_open* opens the
    backend if it is closed (once for all the worker's deliveries)."""
    message = ClaimedMessage(job)
    mark = _Mark(store, job, owner)
    result: MessageResult | None = None
    token = smtp.end_of_data_hook.set(mark)
    try:
        if backend.state.value != "open":
            try:
                await ensure_open()
            except MailError as exc:
                outcome = Outcome.TEMPORARY if is_transient(exc) else Outcome.PERMANENT
                result = failed_result(message, exc, outcome)
        if result is None:
            if not isinstance(backend, smtp.EmailBackend):
                await mark()  # no end-of-data hook: in flight from now on
            result = await backend.deliver_or_fail(message)
    except MailError as exc:
        if mark.error is None:
            raise
        result = None
        log.warning("%s: message %s not sent: %s", owner, job.id, exc)
    finally:
        smtp.end_of_data_hook.reset(token)
    if mark.error is not None:
        # Lost the claim, or the store failed before the end of data:
        # nothing was delivered; whoever holds the message now decides.
        log.warning("%s: message %s left to its lease: %s", owner, job.id, mark.error)
        return None
    return result


async def write_results(
    store: Store,
    batch: list[tuple[Job, MessageResult]],
    owner: str,
    policy: RetryPolicy,
    on_result: ResultCallback | None,
) -> int:
    """Write *batch*'s results and their messages' next states (one call,
    one transaction), then publish each result; return how many were
    written. A message whose claim was lost meanwhile is not written (its
    new holder decides). If the store keeps failing (five tries, about 3
    s), the last :class:`QueueError` is raised: the caller tries again
    later, or leaves the messages in flight to their leases (unknown,
    never resent)."""
    now = time.time()
    settlements = [
        settle(
            job,
            recipients={
                address: (r.outcome.value, r.code, r.enhanced_status, r.text)
                for address, r in result.recipients.items()
            },
            reply=result.reply,
            error=str(result.error) if result.error is not None else "",
            policy=policy,
            now=now,
        )
        for job, result in batch
    ]
    for attempt in range(5):
        try:
            written = await store.finish_many(settlements, owner)
        except QueueError as exc:
            log.warning("%s: recording %d result(s) failed: %s", owner, len(batch), exc)
            if attempt == 4:
                raise
            await anyio.sleep(0.2 * (attempt + 1))
            continue
        break
    count = 0
    for (job, result), ok in zip(batch, written, strict=True):
        if not ok:
            log.warning(
                "%s: message %s was claimed by another worker meanwhile", owner, job.id
            )
            continue
        count += 1
        try:
            record(result, on_result)
        except Exception:
            log.exception("%s: on_result callback failed", owner)
    return count


class SharedRate:
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
