"""The outbox's records and the one rule deciding a message's next state.

No I/O here: what a message, a claim and a result are, the states a message
goes through (see :mod:`asyncmail.queue.store`), and :func:`settle`, which
turns one attempt's per-recipient results into the message's next state.
"""

from __future__ import annotations

import enum
import json
import random
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from ..exceptions import MailError

__all__ = [
    "FINAL_STATES",
    "Job",
    "LeaseLostError",
    "NewMessage",
    "QueueError",
    "RetryPolicy",
    "Settlement",
    "State",
    "StoredMessage",
    "StoredResult",
    "new_key",
    "settle",
]


class QueueError(MailError):
    """The outbox store could not do what was asked (the database failed,
    or a claim was lost to another worker)."""


class LeaseLostError(QueueError):
    """This worker's claim on a message expired and may be another's now."""


class State(enum.Enum):
    """Where a message is in the outbox."""

    QUEUED = "queued"  # waiting for its due time and a worker
    CLAIMED = "claimed"  # leased by a worker, nothing written yet
    INFLIGHT = "inflight"  # the end of data is being (or was) written
    SENT = "sent"  # every recipient accepted
    PARTIAL = "partial"  # some accepted, the others refused for good
    FAILED = "failed"  # refused for good, nobody accepted
    UNKNOWN = "unknown"  # lost after the end of data: maybe delivered
    DEAD = "dead"  # transient failures until the attempt limit


FINAL_STATES = frozenset(
    {State.SENT, State.PARTIAL, State.FAILED, State.UNKNOWN, State.DEAD}
)


@dataclass(frozen=True)
class RetryPolicy:
    """When transient failures are tried again, and when they stop.

    :param max_attempts: attempts (not counting crashed workers) before a
        message with recipients still refused temporarily is dead-lettered.
    :param backoff: seconds before the second attempt, doubled each time,
        capped by ``backoff_max``, with jitter (50-100 %).
    :param max_claims: claims (crashed workers included) before a message
        is dead-lettered as poison.
    """

    max_attempts: int = 10
    backoff: float = 60.0
    backoff_max: float = 3600.0
    max_claims: int = 10

    def delay(self, attempt: int) -> float:
        return min(self.backoff * 2.0 ** (attempt - 1), self.backoff_max) * (
            random.uniform(0.5, 1.0)
        )


@dataclass(slots=True)
class Job:
    """A claimed message: what a worker needs to deliver it."""

    id: int
    key: str
    sender: str
    recipients: list[str]
    pending: list[str]
    data: bytes
    attempts: int
    priority: int
    outcomes: dict[str, str]
    message_id: str = ""  # that of the stored data (found in it at enqueue)


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """A message's row in the outbox (without its data)."""

    id: int
    key: str
    state: State
    priority: int
    due_at: float
    created_at: float
    sender: str
    recipients: list[str]
    pending: list[str]
    outcomes: dict[str, str]
    attempts: int
    claims: int
    message_id: str
    subject: str
    last_error: str
    lease_owner: str | None


@dataclass(frozen=True, slots=True)
class StoredResult:
    """One recipient's result in one attempt."""

    message: int
    attempt: int
    at: float
    recipient: str
    outcome: str
    code: int | None
    enhanced_status: str | None
    text: str
    reply: str
    worker: str


@dataclass(slots=True)
class NewMessage:
    """A row to insert (built by the enqueueing side)."""

    key: str
    sender: str
    recipients: list[str]
    data: bytes
    due_at: float
    priority: int
    message_id: str
    subject: str
    created_at: float = field(default_factory=time.time)
    #: Set while *data* waits for streamed attachments to be read.
    rendered: Any = None

    def params(self) -> tuple[Any, ...]:
        listed = json.dumps(self.recipients)
        return (
            self.key,
            State.QUEUED.value,
            self.priority,
            self.due_at,
            self.created_at,
            self.sender,
            listed,
            listed,
            self.message_id,
            self.subject,
        )


def new_key() -> str:
    return uuid.uuid4().hex


@dataclass(slots=True)
class Settlement:
    """What a worker's attempt decided for one message (computed by
    :func:`settle`, written by :meth:`Store.finish`)."""

    job: Job
    attempt: int
    results: list[tuple[str, str, int | None, str | None, str]]
    reply: str
    state: State
    pending: list[str]
    due_at: float
    outcomes: dict[str, str]
    error: str


def settle(
    job: Job,
    *,
    recipients: dict[str, tuple[str, int | None, str | None, str]],
    reply: str,
    error: str,
    policy: RetryPolicy,
    now: float,
) -> Settlement:
    """Decide a message's next state from one attempt's per-recipient results
    (``address -> (outcome, code, enhanced status, text)``).

    Accepted, permanent and unknown outcomes are final for their recipient;
    temporary ones are tried again after a backoff, until the attempt limit
    makes the message dead. A pending recipient the backend reported nothing
    for counts as temporary.
    """
    attempt = job.attempts + 1
    outcomes = dict(job.outcomes)
    results = []
    retry = []
    for address in job.pending:
        outcome, code, enhanced, text = recipients.get(
            address, ("temporary", None, None, "no result from the backend")
        )
        results.append((address, outcome, code, enhanced, text))
        if outcome == "temporary":
            retry.append(address)
        else:
            outcomes[address] = outcome
    due_at = now
    if retry and attempt < policy.max_attempts:
        state = State.QUEUED
        due_at = now + policy.delay(attempt)
    else:
        for address in retry:
            outcomes[address] = "temporary"
        values = set(outcomes.values())
        if values == {"accepted"}:
            state = State.SENT
        elif "unknown" in values:
            state = State.UNKNOWN
        elif retry:
            state = State.DEAD
        elif "accepted" in values:
            state = State.PARTIAL
        else:
            state = State.FAILED
        retry = []
    return Settlement(
        job, attempt, results, reply, state, retry, due_at, outcomes, error
    )
