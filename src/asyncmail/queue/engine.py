"""One thread per store running every database call, with group commit.

Every call runs on the store's own thread and connection, so the event loop
never blocks and no connection is set up per call. Calls that arrive while
the thread is busy run together in one transaction, committed once: a web
process enqueueing from many requests at once pays one commit per batch, not
per message. If one call of a batch fails, the batch is rolled back and its
calls run again one transaction each, so a bad call fails alone.

Urgent calls (the in-flight marks, each awaited by a connection just before
its end of data) have a lane of their own: the thread runs the urgent calls
waiting before anything else, alone (and in autocommit mode where the
dialect allows: one statement, no BEGIN and COMMIT), so that a mark never
waits behind a claim or a batch of results (those wait at most
:attr:`Engine.MAX_DEFER` seconds for a gap between marks).

This module is over 400 lines because it is one mechanism: the thread, its
batching of calls, their one transaction and the retry of a failed batch
call by call only make sense read together.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from ..exceptions import MailError
from .model import QueueError

__all__ = [
    "After",
    "Connection",
    "Dialect",
    "Engine",
    "InsertAll",
    "Merge",
    "WriteResults",
]

T = TypeVar("T")


class Connection(Protocol):  # the DB-API 2 subset used here
    def cursor(self) -> Any: ...
    def commit(self) -> None: ...
    def rollback(self) -> None: ...
    def close(self) -> None: ...


WriteResults = Callable[
    [Any, list[tuple[Any, ...]], list[tuple[Any, ...]], float], set[int]
]
#: ``insert(cursor, rows)``: store every row's ``NewMessage.params()`` and
#: data, in one statement; return the id of each key.
InsertAll = Callable[[Any, list[tuple[tuple[Any, ...], bytes]]], dict[str, int]]


@dataclass(frozen=True)
class Dialect:
    """What differs between the databases."""

    name: str
    schema: tuple[str, ...]
    #: ``write_results(cursor, rows, results, now)``: write the attempts'
    #: next states (``(id, owner, state, pending, outcomes, due_at,
    #: attempts, last_error)``) of the messages still leased to that owner,
    #: and those messages' per-recipient results (``(message, attempt, at,
    #: recipient, outcome, code, enhanced_status, text, reply, worker)``);
    #: return the ids written.
    write_results: WriteResults
    #: An insert of any number of messages in one statement (atomic alone:
    #: a lone enqueue then needs no BEGIN and COMMIT), or None.
    insert: InsertAll | None = None
    #: The inner SELECT of a claim (picks due messages; SKIP LOCKED on PG).
    lock_clause: str = ""
    #: Run before a claim, in its transaction (e.g. planner settings).
    claim_setup: str | None = None
    placeholder: str = "?"
    greatest: str = "MAX"
    #: Run first in every transaction of the store's thread (None: implicit).
    begin: str | None = None
    #: Run after an insert, in its transaction (PostgreSQL wakes the workers).
    notify: str | None = None
    #: Whether a list can be one (array) parameter: ``id = ANY(?)``.
    arrays: bool = False
    #: Whether a transaction's statements are pipelined (psycopg 3).
    pipeline: bool = False
    #: Whether a batch of urgent calls (or of one-statement merges, see
    #: :meth:`Engine.run_merged`) runs without BEGIN and COMMIT, each
    #: statement its own transaction (SQLite: one call into the database
    #: for a batch of marks, instead of three, each a wait for the GIL;
    #: PostgreSQL: one round trip and one statement for the server).
    urgent_autocommit: bool = False
    #: Whether the connection's ``autocommit`` is switched on for that
    #: (psycopg; an SQLite connection of the store is always in it).
    autocommit_switch: bool = False

    def sql(self, text: str) -> str:
        return text if self.placeholder == "?" else text.replace("?", self.placeholder)


#: A call merged with the others of its kind in a batch: ``merge(cursor,
#: items)`` returns one value per item (one statement for many callers),
#: or an :class:`After` that reads them once the transaction committed.
Merge = Callable[[Any, list[Any]], "list[Any] | After"]


class After:
    """A merge's answers read after the commit: ``read()`` returns one value
    per item. With a pipelining driver the statement's rows are then
    already in (the commit waited for every reply), so the batch costs one
    round trip, not one for the rows and one for the commit."""

    __slots__ = ("read",)

    def __init__(self, read: Callable[[], list[Any]]) -> None:
        self.read = read


class _Call:
    """One caller's request: a function of the cursor, or an item for a
    merge function; answered through a concurrent future (blocking callers)
    or an asyncio future of *loop* (resolved in one loop callback a batch)."""

    __slots__ = (
        "function",
        "future",
        "item",
        "loop",
        "merge",
        "queued_at",
        "single",
        "urgent",
    )

    def __init__(
        self,
        function: Callable[[Any], Any] | None,
        future: concurrent.futures.Future[Any] | asyncio.Future[Any],
        loop: asyncio.AbstractEventLoop | None = None,
        merge: Merge | None = None,
        item: Any = None,
    ) -> None:
        self.function = function
        self.future = future
        self.loop = loop
        self.merge = merge
        self.item = item
        self.queued_at = 0.0
        self.urgent = False
        #: Its merge writes all the items of a batch in one statement.
        self.single = False

    def live(self) -> bool:
        future = self.future
        if isinstance(future, concurrent.futures.Future):
            return future.set_running_or_notify_cancel()
        return not future.cancelled()  # a benign read from another thread


def _settle_futures(outcomes: list[tuple[asyncio.Future[Any], Any, bool]]) -> None:
    for future, value, failed in outcomes:
        if future.done():
            continue
        if failed:
            future.set_exception(value)
        else:
            future.set_result(value)


class Engine:
    """A database connection owned by one thread, driven from any thread or
    event loop: :meth:`run` (awaited), :meth:`run_sync` (blocking)."""

    #: Calls run in one transaction at most (group commit).
    MAX_BATCH = 512
    #: Seconds an ordinary call waits at most while urgent calls go first.
    MAX_DEFER = 0.05

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
        self._urgent: deque[_Call] = deque()
        self._ready = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._started = threading.Lock()
        self._pid = os.getpid()
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

    def _after_fork(self) -> None:
        """In a forked child the parent's thread does not exist: start anew
        (the parent's connection is never used here)."""
        self._pid = os.getpid()
        self._calls = deque()
        self._urgent = deque()
        self._ready = threading.Condition()
        self._started = threading.Lock()
        self._thread = None

    def _open(self) -> Connection:
        connection = self._connect()
        try:
            cursor = connection.cursor()
            for statement in self.dialect.schema:
                cursor.execute(statement)
            connection.commit()
        except BaseException:
            with contextlib.suppress(Exception):
                connection.close()
            raise
        return connection

    def _serve(self, ready: concurrent.futures.Future[None]) -> None:
        connection: Connection | None
        try:
            connection = self._open()
        except Exception as exc:
            ready.set_exception(
                QueueError(f"Cannot open the outbox {self.safe_url}: {exc}")
            )
            return
        ready.set_result(None)
        try:
            while True:
                with self._ready:
                    while not self._calls and not self._urgent and not self._closed:
                        self._ready.wait()
                    batch = self._next_batch()
                    if not batch:
                        return
                if connection is None:
                    # Lost earlier (the database restarted, the network...):
                    # connect again, or fail this batch and try next time.
                    try:
                        connection = self._open()
                    except Exception as exc:
                        error = QueueError(
                            f"Cannot reach the outbox {self.safe_url}: {exc}"
                        )
                        self._answer([(c, error, True) for c in batch if c.live()])
                        continue
                if not self._run_batch(connection, batch):
                    with contextlib.suppress(Exception):
                        connection.close()
                    connection = None
        finally:
            if connection is not None:
                with contextlib.suppress(Exception):
                    connection.close()

    def _next_batch(self) -> list[_Call]:
        """The urgent calls waiting, alone; else (or when an ordinary call
        has waited :attr:`MAX_DEFER`) everything waiting. Called holding
        the condition's lock."""
        urgent, calls = self._urgent, self._calls
        if urgent and not (
            calls and time.monotonic() - calls[0].queued_at > self.MAX_DEFER
        ):
            lane = urgent
        else:
            lane = calls
            while urgent:
                calls.append(urgent.popleft())
        return [lane.popleft() for _ in range(min(len(lane), self.MAX_BATCH))]

    def _run_batch(self, connection: Connection, batch: list[_Call]) -> bool:
        """Run and answer *batch*; False if the connection is broken."""
        live = [call for call in batch if call.live()]
        if not live:
            return True
        outcomes: list[tuple[_Call, Any, bool]] = []
        healthy = True
        try:
            outcomes = [(c, v, False) for c, v in self._run_calls(connection, live)]
        except Exception as exc:
            healthy = _rolled_back(connection)
            if len(live) == 1 or not healthy:
                outcomes = [(call, _mapped(exc), True) for call in live]
            else:
                outcomes = []
                for call in live:  # each alone, so that a bad call fails alone
                    try:
                        [(_, value)] = self._run_calls(connection, [call])
                    except Exception as single:
                        outcomes.append((call, _mapped(single), True))
                        if not _rolled_back(connection):
                            healthy = False
                            break
                    else:
                        outcomes.append((call, value, False))
                answered = {id(call) for call, _, _ in outcomes}
                error = QueueError(f"The connection to {self.safe_url} was lost")
                outcomes += [(c, error, True) for c in live if id(c) not in answered]
        self._answer(outcomes)
        return healthy

    def _run_calls(
        self, connection: Connection, calls: list[_Call]
    ) -> list[tuple[_Call, Any]]:
        """Run *calls* in one transaction and commit: plain calls in order,
        merged ones together, at the place of the first of their kind; the
        answers of a merge that returned an :class:`After` are read after
        the commit.

        A batch of merged calls only (the hot path: marks, results,
        inserts) is pipelined where the driver can (psycopg's pipeline
        mode): statements go out without waiting for the previous one's
        answer, the server is waited for only where a result is read and at
        the commit. Plain calls may read ``rowcount``, which a pipeline
        leaves unknown, so a batch with one runs unpipelined. A batch of
        urgent calls, or of calls to one merge that writes them in one
        statement (see :meth:`run_merged`), runs in autocommit mode where
        the dialect allows (:attr:`Dialect.urgent_autocommit`): one
        statement, no BEGIN, no COMMIT, no pipeline."""
        pipeline = getattr(connection, "pipeline", None)
        autocommit = self.dialect.urgent_autocommit and (
            all(c.urgent for c in calls) or _one_statement(calls)
        )
        if autocommit and self.dialect.autocommit_switch:
            driver: Any = connection
            driver.autocommit = True
            try:
                values = self._run_in(connection, calls, autocommit)
            finally:
                try:
                    driver.autocommit = False
                except Exception:
                    # Never leave a connection in autocommit mode: the next
                    # transaction would not be one.
                    connection.close()
                    raise
        elif (
            pipeline is None
            or not self.dialect.pipeline
            or any(call.merge is None for call in calls)
        ):
            values = self._run_in(connection, calls, autocommit)
        else:
            with pipeline():
                values = self._run_in(connection, calls, autocommit)
        for key, later in list(values.items()):
            if isinstance(later, _Later):
                group, answers = later.group, later.after.read()
                for call, answer in zip(group, answers, strict=True):
                    values[id(call)] = answer
                del values[key]
        return [(call, values[id(call)]) for call in calls]

    def _run_in(
        self, connection: Connection, calls: list[_Call], autocommit: bool
    ) -> dict[int, Any]:
        """Run *calls* in one transaction (or, *autocommit*, each statement
        its own: urgent calls are idempotent writes, the marks; a
        one-statement merge is atomic alone)."""
        cursor = connection.cursor()
        if self.dialect.begin and not autocommit:
            cursor.execute(self.dialect.begin)
        values: dict[int, Any] = {}
        merged: dict[Merge, list[_Call]] = {}
        order: list[_Call | Merge] = []
        for call in calls:
            if call.merge is None:
                order.append(call)
            else:
                if call.merge not in merged:
                    merged[call.merge] = []
                    order.append(call.merge)
                merged[call.merge].append(call)
        for step in order:
            if isinstance(step, _Call):
                assert step.function is not None
                values[id(step)] = step.function(cursor)
            else:
                group = merged[step]
                answers = step(cursor, [call.item for call in group])
                if isinstance(answers, After):
                    values[id(step)] = _Later(group, answers)
                    continue
                for call, answer in zip(group, answers, strict=True):
                    values[id(call)] = answer
        if not autocommit:
            connection.commit()
        return values

    def _answer(self, outcomes: list[tuple[_Call, Any, bool]]) -> None:
        """Resolve the futures: one callback per event loop for the batch
        (not one wake-up per call)."""
        per_loop: dict[
            asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Any, bool]]
        ] = {}
        for call, value, failed in outcomes:
            future = call.future
            if isinstance(future, concurrent.futures.Future):
                if failed:
                    future.set_exception(value)
                else:
                    future.set_result(value)
            else:
                assert call.loop is not None
                per_loop.setdefault(call.loop, []).append((future, value, failed))
        for loop, answers in per_loop.items():
            with contextlib.suppress(RuntimeError):  # that loop is closed
                loop.call_soon_threadsafe(_settle_futures, answers)

    def _enqueue(self, call: _Call, urgent: bool = False) -> None:
        if self._pid != os.getpid():
            self._after_fork()
        if self._thread is None:
            self._start()
        with self._ready:
            if self._closed:
                raise QueueError(f"{self!r} is closed")
            if urgent:
                call.urgent = True
                self._urgent.append(call)
            else:
                call.queued_at = time.monotonic()
                self._calls.append(call)
            if len(self._calls) + len(self._urgent) == 1:
                self._ready.notify()

    def submit(self, function: Callable[[Any], T]) -> concurrent.futures.Future[T]:
        """Run ``function(cursor)`` on the store's thread, in a transaction
        (perhaps shared with other calls: it must not commit)."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._enqueue(_Call(function, future))
        return future

    async def run(self, function: Callable[[Any], T]) -> T:
        """:meth:`submit`, awaited without blocking the event loop."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._enqueue(_Call(function, future, loop))
        return await future

    async def run_merged(
        self, merge: Merge, item: Any, *, urgent: bool = False, single: bool = False
    ) -> Any:
        """Have *item* handled by ``merge(cursor, items)`` together with the
        other items given to the same *merge* in the batch (one statement
        for many callers). *urgent* calls go first (see the module).
        *single*: *merge* writes whatever items it is given in one statement
        (atomic alone), so a batch of such calls only, all to this merge,
        runs with no BEGIN and COMMIT where the dialect allows (a lone
        enqueue: one round trip)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        call = _Call(None, future, loop, merge, item)
        call.single = single
        self._enqueue(call, urgent)
        return await future

    def run_merged_sync(self, merge: Merge, item: Any, *, single: bool = False) -> Any:
        """:meth:`run_merged`, waiting in the calling thread."""
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        call = _Call(None, future, None, merge, item)
        call.single = single
        self._enqueue(call)
        return future.result()

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


class _Later:
    """A merge's :class:`After`, with the calls it answers."""

    __slots__ = ("after", "group")

    def __init__(self, group: list[_Call], after: After) -> None:
        self.group = group
        self.after = after


def _one_statement(calls: list[_Call]) -> bool:
    """Whether *calls* are all written by one merge in one statement."""
    first = calls[0].merge
    return all(call.single and call.merge is first for call in calls)


def _rolled_back(connection: Connection) -> bool:
    """Roll back after a failure; False when the connection itself is gone
    (it is then replaced before the next batch)."""
    try:
        connection.rollback()
    except Exception:
        return False
    return not getattr(connection, "closed", False) and not getattr(
        connection, "broken", False
    )


def _mapped(exc: Exception) -> Exception:
    if isinstance(exc, MailError):
        return exc
    error = QueueError(f"The outbox database failed: {type(exc).__name__}: {exc}")
    error.__cause__ = exc
    return error
