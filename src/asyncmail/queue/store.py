"""The outbox store: one table of messages, one of results, one of rate slots.

The same SQL (and the same logic deciding what happens to a message after an
attempt) serves SQLite and PostgreSQL; :mod:`.sqlite` and :mod:`.postgres`
only say how to connect and what differs in the dialect.

Every database call runs on one dedicated thread per store, with its own
connection, so the event loop never blocks and no connection is set up per
call. Calls that arrive while the thread is busy are run together in one
transaction and committed once (group commit): a web process enqueueing
from many requests at once pays for one commit per batch, not per message.
If one call of a batch fails, the batch is rolled back and its calls are run
again one transaction each, so a bad call fails alone.

A message moves through these states::

    queued ──claim──> claimed ──mark──> inflight ──result──> sent | partial
      ^                 │                  │                 failed | dead
      └─ lease expired ─┘                  └─ lease expired ─> unknown
      └─ retry (temporary failures, at a backoff-scheduled time)

``inflight`` is written, and committed, just before the end of data goes to
the server: a worker that dies after it leaves the message ``unknown`` (it
may have been delivered), never sent again automatically. A worker that dies
before it leaves only a claim, which expires and is taken by another worker.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import enum
import json
import random
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from ..exceptions import MailError

__all__ = [
    "FINAL_STATES",
    "Dialect",
    "Job",
    "QueueError",
    "RetryPolicy",
    "State",
    "Store",
    "StoredMessage",
    "StoredResult",
]

T = TypeVar("T")


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


class Connection(Protocol):  # the DB-API 2 subset used here
    def cursor(self) -> Any: ...
    def commit(self) -> None: ...
    def rollback(self) -> None: ...
    def close(self) -> None: ...


@dataclass(frozen=True)
class Dialect:
    """What differs between the databases."""

    name: str
    schema: tuple[str, ...]
    #: The inner SELECT of a claim (picks due messages; SKIP LOCKED on PG).
    lock_clause: str = ""
    placeholder: str = "?"
    greatest: str = "MAX"
    #: Run first in every transaction of the store's thread (None: implicit).
    begin: str | None = None
    #: Run after an insert, in its transaction (PostgreSQL wakes the workers).
    notify: str | None = None

    def sql(self, text: str) -> str:
        return text if self.placeholder == "?" else text.replace("?", self.placeholder)


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

    max_attempts: int = 5
    backoff: float = 30.0
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
            self.data,
            self.message_id,
            self.subject,
        )


def new_key() -> str:
    return uuid.uuid4().hex


INSERT = (
    "INSERT INTO asyncmail_outbox (key, state, priority, due_at, created_at, "
    "sender, recipients, pending, data, message_id, subject, outcomes, attempts, "
    "claims, last_error) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, '{}', 0, 0, '') "
    "ON CONFLICT (key) DO NOTHING"
)

_MESSAGE_COLUMNS = (
    "id, key, state, priority, due_at, created_at, sender, recipients, pending, "
    "outcomes, attempts, claims, message_id, subject, last_error, lease_owner"
)


def insert_rows(cursor: Any, dialect: Dialect, rows: Sequence[NewMessage]) -> None:
    """Insert *rows* on *cursor* (any transaction: the caller's own, for the
    transactional outbox). A key already stored is skipped (idempotency)."""
    cursor.executemany(dialect.sql(INSERT), [row.params() for row in rows])
    if dialect.notify:
        cursor.execute(dialect.notify)


def _stored(row: Sequence[Any]) -> StoredMessage:
    return StoredMessage(
        id=int(row[0]),
        key=row[1],
        state=State(row[2]),
        priority=int(row[3]),
        due_at=float(row[4]),
        created_at=float(row[5]),
        sender=row[6],
        recipients=json.loads(row[7]),
        pending=json.loads(row[8]),
        outcomes=json.loads(row[9]),
        attempts=int(row[10]),
        claims=int(row[11]),
        message_id=row[12] or "",
        subject=row[13] or "",
        last_error=row[14] or "",
        lease_owner=row[15],
    )


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


# -- the store ----------------------------------------------------------------------


class _Call:
    __slots__ = ("function", "future")

    def __init__(
        self, function: Callable[[Any], Any], future: concurrent.futures.Future[Any]
    ) -> None:
        self.function = function
        self.future = future


class Store:
    """An outbox: durable messages, claims, results, a shared rate limit.

    Open one with :func:`asyncmail.queue.open_store`. Every method has an
    async form (for the event loop: the work runs on the store's thread) and
    is safe to call from any thread and any event loop.
    """

    #: Calls run in one transaction at most (group commit).
    MAX_BATCH = 512

    def __init__(
        self,
        url: str,
        dialect: Dialect,
        connect: Callable[[], Connection],
    ) -> None:
        self.url = url
        self.dialect = dialect
        self._connect = connect
        self._calls: deque[_Call] = deque()
        self._ready = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._started = threading.Lock()
        #: Set (from the store's thread) when messages were enqueued here, so
        #: that workers in this process wake at once.
        self.listeners: list[Callable[[], None]] = []

    def __repr__(self) -> str:
        return f"<{type(self).__qualname__} {self.dialect.name} {self.safe_url}>"

    @property
    def safe_url(self) -> str:
        """The URL without a password."""
        head, at, tail = self.url.rpartition("@")
        if not at:
            return self.url
        scheme, _, credentials = head.partition("://")
        user = credentials.split(":", 1)[0]
        return f"{scheme}://{user}:***@{tail}"

    # -- the thread -------------------------------------------------------------------

    def _start(self) -> None:
        with self._started:
            if self._closed:
                raise QueueError(f"{self!r} is closed")
            if self._thread is not None:
                return
            ready: concurrent.futures.Future[None] = concurrent.futures.Future()
            self._thread = threading.Thread(
                target=self._serve,
                args=(ready,),
                name=f"asyncmail-outbox-{self.dialect.name}",
                daemon=True,
            )
            self._thread.start()
        try:
            ready.result()
        except BaseException:
            with self._started:
                self._thread = None
            raise

    def _serve(self, ready: concurrent.futures.Future[None]) -> None:
        try:
            connection = self._connect()
            cursor = connection.cursor()
            for statement in self.dialect.schema:
                cursor.execute(statement)
            connection.commit()
        except Exception as exc:
            ready.set_exception(
                QueueError(f"Cannot open the outbox {self.safe_url}: {exc}")
            )
            return
        ready.set_result(None)
        try:
            while True:
                with self._ready:
                    while not self._calls and not self._closed:
                        self._ready.wait()
                    if not self._calls:
                        return
                    batch = [
                        self._calls.popleft()
                        for _ in range(min(len(self._calls), self.MAX_BATCH))
                    ]
                self._run_batch(connection, batch)
        finally:
            with contextlib.suppress(Exception):
                connection.close()

    def _run_batch(self, connection: Connection, batch: list[_Call]) -> None:
        live = [call for call in batch if call.future.set_running_or_notify_cancel()]
        if not live:
            return
        begin = self.dialect.begin
        try:
            cursor = connection.cursor()
            if begin:
                cursor.execute(begin)
            values = [call.function(cursor) for call in live]
            connection.commit()
        except Exception as exc:
            with contextlib.suppress(Exception):
                connection.rollback()
            if len(live) == 1:
                live[0].future.set_exception(_mapped(exc))
                return
            for call in live:  # each alone, so that a bad call fails alone
                try:
                    cursor = connection.cursor()
                    if begin:
                        cursor.execute(begin)
                    value = call.function(cursor)
                    connection.commit()
                except Exception as single:
                    with contextlib.suppress(Exception):
                        connection.rollback()
                    call.future.set_exception(_mapped(single))
                else:
                    call.future.set_result(value)
            return
        for call, value in zip(live, values, strict=True):
            call.future.set_result(value)

    def submit(self, function: Callable[[Any], T]) -> concurrent.futures.Future[T]:
        """Run ``function(cursor)`` on the store's thread, in a transaction
        (perhaps shared with other calls: it must not commit)."""
        if self._thread is None:
            self._start()
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        with self._ready:
            if self._closed:
                raise QueueError(f"{self!r} is closed")
            self._calls.append(_Call(function, future))
            self._ready.notify()
        return future

    async def run(self, function: Callable[[Any], T]) -> T:
        """:meth:`submit`, awaited without blocking the event loop."""
        future = self.submit(function)
        return await asyncio.wrap_future(future)

    def run_sync(self, function: Callable[[Any], T]) -> T:
        """:meth:`submit`, waiting in the calling thread."""
        return self.submit(function).result()

    def close(self) -> None:
        """Finish the calls already made, then close the connection."""
        with self._ready:
            self._closed = True
            self._ready.notify()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    @property
    def closed(self) -> bool:
        return self._closed

    # -- enqueueing --------------------------------------------------------------------

    async def insert(self, rows: Sequence[NewMessage]) -> list[int]:
        """Store *rows*; return their ids (that of the stored message for a
        key already there)."""
        ids = await self.run(lambda cursor: self._insert(cursor, rows))
        for listener in list(self.listeners):
            listener()
        return ids

    def _insert(self, cursor: Any, rows: Sequence[NewMessage]) -> list[int]:
        insert_rows(cursor, self.dialect, rows)
        ids = []
        select = self.dialect.sql("SELECT id FROM asyncmail_outbox WHERE key = ?")
        for row in rows:
            cursor.execute(select, (row.key,))
            ids.append(int(cursor.fetchone()[0]))
        return ids

    # -- workers ------------------------------------------------------------------------

    async def claim(
        self, owner: str, limit: int, lease: float, policy: RetryPolicy
    ) -> list[Job]:
        """Lease up to *limit* due messages to *owner*, most urgent first.

        Expired leases are dealt with first: a claimed message goes back to
        the queue (or dead, after ``max_claims``), an in-flight one becomes
        unknown.
        """
        return await self.run(
            lambda cursor: self._claim(cursor, owner, limit, lease, policy)
        )

    def _claim(
        self, cursor: Any, owner: str, limit: int, lease: float, policy: RetryPolicy
    ) -> list[Job]:
        sql = self.dialect.sql
        now = time.time()
        self._expire(cursor, now, policy)
        cursor.execute(
            sql(
                "UPDATE asyncmail_outbox SET state = 'claimed', lease_owner = ?, "
                "lease_until = ?, claims = claims + 1 WHERE id IN (SELECT id FROM "
                "asyncmail_outbox WHERE state = 'queued' AND due_at <= ? ORDER BY "
                f"priority DESC, due_at, id LIMIT ?{self.dialect.lock_clause}) "
                "RETURNING id, key, sender, recipients, pending, data, attempts, "
                "priority, outcomes, due_at"
            ),
            (owner, now + lease, now, limit),
        )
        rows = sorted(cursor.fetchall(), key=lambda r: (-int(r[7]), float(r[9]), r[0]))
        return [
            Job(
                id=int(r[0]),
                key=r[1],
                sender=r[2],
                recipients=json.loads(r[3]),
                pending=json.loads(r[4]),
                data=bytes(r[5]),
                attempts=int(r[6]),
                priority=int(r[7]),
                outcomes=json.loads(r[8]),
            )
            for r in rows
        ]

    def _expire(self, cursor: Any, now: float, policy: RetryPolicy) -> None:
        sql = self.dialect.sql
        cursor.execute(
            sql(
                "UPDATE asyncmail_outbox SET state = 'dead', lease_owner = NULL, "
                "last_error = 'workers stopped while holding it ' || claims || "
                "' times: a poison message', updated_at = ? WHERE state = 'claimed' "
                "AND lease_until < ? AND claims >= ?"
            ),
            (now, now, policy.max_claims),
        )
        cursor.execute(
            sql(
                "UPDATE asyncmail_outbox SET state = 'queued', lease_owner = NULL "
                "WHERE state = 'claimed' AND lease_until < ?"
            ),
            (now,),
        )
        cursor.execute(
            sql(
                "SELECT id, pending, outcomes, attempts, lease_owner FROM "
                "asyncmail_outbox WHERE state = 'inflight' AND lease_until < ?"
            ),
            (now,),
        )
        text = (
            "the worker stopped after the end of data was written; the message "
            "may have been delivered, so it is not resent"
        )
        for ident, pending, outcomes, attempts, worker in cursor.fetchall():
            merged = json.loads(outcomes)
            for address in json.loads(pending):
                merged[address] = "unknown"
                cursor.execute(
                    sql(
                        "INSERT INTO asyncmail_results (message, attempt, at, "
                        "recipient, outcome, code, enhanced_status, text, reply, "
                        "worker) VALUES (?, ?, ?, ?, 'unknown', NULL, NULL, ?, '', ?)"
                    ),
                    (ident, int(attempts) + 1, now, address, text, worker or ""),
                )
            cursor.execute(
                sql(
                    "UPDATE asyncmail_outbox SET state = 'unknown', pending = '[]', "
                    "outcomes = ?, attempts = attempts + 1, lease_owner = NULL, "
                    "last_error = ?, updated_at = ? WHERE id = ?"
                ),
                (json.dumps(merged), text, now, ident),
            )

    async def mark_inflight(self, job: Job, owner: str) -> None:
        """Durably record that *job*'s end of data is about to be written;
        raise :class:`LeaseLostError` if the claim is no longer *owner*'s."""
        ok = await self.run(lambda cursor: self._mark(cursor, job.id, owner))
        if not ok:
            raise LeaseLostError(
                f"The claim on outbox message {job.id} expired; not sending it"
            )

    def _mark(self, cursor: Any, ident: int, owner: str) -> bool:
        cursor.execute(
            self.dialect.sql(
                "UPDATE asyncmail_outbox SET state = 'inflight' WHERE id = ? AND "
                "lease_owner = ? AND state IN ('claimed', 'inflight')"
            ),
            (ident, owner),
        )
        return bool(cursor.rowcount == 1)

    async def finish(self, settlement: Settlement, owner: str) -> bool:
        """Write an attempt's results and the message's next state; False if
        the claim was lost meanwhile (nothing written)."""
        return await self.run(lambda cursor: self._finish(cursor, settlement, owner))

    def _finish(self, cursor: Any, s: Settlement, owner: str) -> bool:
        sql = self.dialect.sql
        now = time.time()
        cursor.execute(
            sql(
                "UPDATE asyncmail_outbox SET state = ?, pending = ?, outcomes = ?, "
                "due_at = ?, attempts = ?, last_error = ?, lease_owner = NULL, "
                "updated_at = ? WHERE id = ? AND lease_owner = ?"
            ),
            (
                s.state.value,
                json.dumps(s.pending),
                json.dumps(s.outcomes),
                s.due_at,
                s.attempt,
                s.error,
                now,
                s.job.id,
                owner,
            ),
        )
        if cursor.rowcount != 1:
            return False
        cursor.executemany(
            sql(
                "INSERT INTO asyncmail_results (message, attempt, at, recipient, "
                "outcome, code, enhanced_status, text, reply, worker) VALUES "
                "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            ),
            [
                (s.job.id, s.attempt, now, address, outcome, code, enhanced, text)
                + (s.reply, owner)
                for address, outcome, code, enhanced, text in s.results
            ],
        )
        return True

    async def heartbeat(self, owner: str, lease: float) -> int:
        """Extend every lease *owner* holds; return how many."""

        def beat(cursor: Any) -> int:
            cursor.execute(
                self.dialect.sql(
                    "UPDATE asyncmail_outbox SET lease_until = ? WHERE lease_owner "
                    "= ? AND state IN ('claimed', 'inflight')"
                ),
                (time.time() + lease, owner),
            )
            return int(cursor.rowcount)

        return await self.run(beat)

    async def release(self, owner: str, ids: Iterable[int]) -> None:
        """Give back claims that were not started (a stopping worker)."""
        params = [(owner, ident) for ident in ids]
        if not params:
            return

        def give_back(cursor: Any) -> None:
            cursor.executemany(
                self.dialect.sql(
                    "UPDATE asyncmail_outbox SET state = 'queued', lease_owner = "
                    "NULL, claims = claims - 1 WHERE lease_owner = ? AND id = ? AND "
                    "state = 'claimed'"
                ),
                params,
            )

        await self.run(give_back)

    async def recover(self, owner: str, policy: RetryPolicy) -> None:
        """Expire now every lease held by *owner*: a restarted worker that
        reuses its name knows its previous process is gone."""

        def expire(cursor: Any) -> None:
            cursor.execute(
                self.dialect.sql(
                    "UPDATE asyncmail_outbox SET lease_until = 0 WHERE lease_owner "
                    "= ? AND state IN ('claimed', 'inflight')"
                ),
                (owner,),
            )
            self._expire(cursor, time.time(), policy)

        await self.run(expire)

    async def reserve(self, name: str, rate: float, burst: int, count: int) -> float:
        """Reserve *count* send slots of the shared rate limit *name* (at
        most *rate* a second, bursts of *burst*); return the seconds to wait
        before the first (the others follow every 1/rate seconds).

        One atomic update of one row (a virtual scheduler, GCRA): every
        worker on the store shares it, across processes and machines.
        """
        interval = 1.0 / rate

        def take(cursor: Any) -> float:
            sql = self.dialect.sql
            now = time.time()
            floor = now - (burst - 1) * interval
            cursor.execute(
                sql(
                    "INSERT INTO asyncmail_rate (name, next_at) VALUES (?, ?) "
                    "ON CONFLICT (name) DO NOTHING"
                ),
                (name, floor),
            )
            cursor.execute(
                sql(
                    f"UPDATE asyncmail_rate SET next_at = {self.dialect.greatest}"
                    "(next_at, ?) + ? WHERE name = ? RETURNING next_at"
                ),
                (floor, count * interval, name),
            )
            start = float(cursor.fetchone()[0]) - count * interval
            return max(0.0, start - now)

        return await self.run(take)

    # -- inspection and administration ---------------------------------------------------

    async def counts(self) -> dict[State, int]:
        """How many messages are in each state."""

        def count(cursor: Any) -> dict[State, int]:
            cursor.execute(
                "SELECT state, COUNT(*) FROM asyncmail_outbox GROUP BY state"
            )
            found = {State(state): int(n) for state, n in cursor.fetchall()}
            return {state: found.get(state, 0) for state in State}

        return await self.run(count)

    async def messages(
        self,
        states: Iterable[State] = (),
        *,
        ids: Iterable[int] = (),
        limit: int = 100,
    ) -> list[StoredMessage]:
        """Messages in *states* (or with *ids*; all when neither), oldest first."""
        wanted = [state.value for state in states]
        numbers = [int(i) for i in ids]

        def select(cursor: Any) -> list[StoredMessage]:
            clauses, params = [], []
            if wanted:
                clauses.append(f"state IN ({', '.join('?' * len(wanted))})")
                params += wanted
            if numbers:
                clauses.append(f"id IN ({', '.join('?' * len(numbers))})")
                params += numbers
            where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
            cursor.execute(
                self.dialect.sql(
                    f"SELECT {_MESSAGE_COLUMNS} FROM asyncmail_outbox{where} "
                    "ORDER BY id LIMIT ?"
                ),
                (*params, limit),
            )
            return [_stored(row) for row in cursor.fetchall()]

        return await self.run(select)

    async def get(self, ident: int | str) -> StoredMessage | None:
        """The message with this id or idempotency key."""

        def select(cursor: Any) -> StoredMessage | None:
            column = "id" if isinstance(ident, int) else "key"
            cursor.execute(
                self.dialect.sql(
                    f"SELECT {_MESSAGE_COLUMNS} FROM asyncmail_outbox "
                    f"WHERE {column} = ?"
                ),
                (ident,),
            )
            row = cursor.fetchone()
            return None if row is None else _stored(row)

        return await self.run(select)

    async def results(self, message: int) -> list[StoredResult]:
        """Every recorded per-recipient result of *message*, in order."""

        def select(cursor: Any) -> list[StoredResult]:
            cursor.execute(
                self.dialect.sql(
                    "SELECT message, attempt, at, recipient, outcome, code, "
                    "enhanced_status, text, reply, worker FROM asyncmail_results "
                    "WHERE message = ? ORDER BY attempt, id"
                ),
                (message,),
            )
            return [
                StoredResult(
                    int(r[0]), int(r[1]), float(r[2]), r[3], r[4], r[5], r[6]
                    , r[7] or "", r[8] or "", r[9] or ""
                )
                for r in cursor.fetchall()
            ]

        return await self.run(select)

    async def retry(
        self, *, ids: Iterable[int] = (), states: Iterable[State] = ()
    ) -> int:
        """Queue again, now, the messages with *ids* or in *states* (final
        states only), for their recipients not accepted. Unknown messages are
        retried only when asked for by id or by the ``unknown`` state: they
        may have been delivered already."""
        numbers = [int(i) for i in ids]
        wanted = [state.value for state in states]
        for state in states:
            if state not in FINAL_STATES or state is State.SENT:
                raise QueueError(f"Cannot retry messages that are {state.value}")

        def again(cursor: Any) -> int:
            sql = self.dialect.sql
            clauses, params = [], []
            if numbers:
                clauses.append(f"id IN ({', '.join('?' * len(numbers))})")
                params += numbers
            if wanted:
                clauses.append(f"state IN ({', '.join('?' * len(wanted))})")
                params += wanted
            if not clauses:
                return 0
            cursor.execute(
                sql(
                    "SELECT id, recipients, outcomes, state FROM asyncmail_outbox "
                    f"WHERE ({' OR '.join(clauses)}) AND state NOT IN "
                    "('queued', 'claimed', 'inflight', 'sent')"
                ),
                params,
            )
            updates = []
            now = time.time()
            for ident, recipients, outcomes, _state in cursor.fetchall():
                done = json.loads(outcomes)
                pending = [
                    a for a in json.loads(recipients) if done.get(a) != "accepted"
                ]
                kept = {a: o for a, o in done.items() if o == "accepted"}
                updates.append(
                    (json.dumps(pending), json.dumps(kept), now, int(ident))
                )
            cursor.executemany(
                sql(
                    "UPDATE asyncmail_outbox SET state = 'queued', pending = ?, "
                    "outcomes = ?, due_at = ?, claims = 0, attempts = 0, "
                    "last_error = '' WHERE id = ?"
                ),
                updates,
            )
            return len(updates)

        count = await self.run(again)
        for listener in list(self.listeners):
            listener()
        return count

    async def purge(
        self, states: Iterable[State], *, older_than: float = 0.0
    ) -> int:
        """Delete messages in final *states* (and their results) settled more
        than *older_than* seconds ago; return how many."""
        wanted = [state.value for state in states]
        for state in states:
            if state not in FINAL_STATES:
                raise QueueError(f"Cannot purge messages that are {state.value}")
        if not wanted:
            return 0

        def delete(cursor: Any) -> int:
            sql = self.dialect.sql
            marks = ", ".join("?" * len(wanted))
            params = (*wanted, time.time() - older_than)
            where = f"state IN ({marks}) AND updated_at <= ?"
            cursor.execute(
                sql(
                    "DELETE FROM asyncmail_results WHERE message IN (SELECT id "
                    f"FROM asyncmail_outbox WHERE {where})"
                ),
                params,
            )
            cursor.execute(sql(f"DELETE FROM asyncmail_outbox WHERE {where}"), params)
            return int(cursor.rowcount)

        return await self.run(delete)


def _mapped(exc: Exception) -> Exception:
    if isinstance(exc, MailError):
        return exc
    error = QueueError(f"The outbox database failed: {type(exc).__name__}: {exc}")
    error.__cause__ = exc
    return error
