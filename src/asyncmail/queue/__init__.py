"""Durable delivery: an outbox in a database, and workers that drain it.

::

    store = asyncmail.queue.open_store("sqlite:///var/lib/app/outbox.db")
    await asyncmail.queue.enqueue(store, [message], priority=5)

    async with asyncmail.queue.Worker(store, backend=smtp_backend):
        ...  # the app runs; the worker delivers in the background

Messages are rendered once, when they are enqueued (the stored bytes are
what is sent, to every recipient, on every attempt), and stored with their
envelope, an idempotency key (a second enqueue with the same key is a
no-op), a due time and a priority. See :mod:`.store` for the states a message
goes through and :mod:`.worker` for delivery.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread

from ..exceptions import InvalidMessageError
from ..threads import SharedLock
from .inserts import insert_rows
from .model import (
    FINAL_STATES,
    Job,
    LeaseLostError,
    NewMessage,
    QueueError,
    RetryPolicy,
    State,
    StoredMessage,
    StoredResult,
    new_key,
)
from .store import Store

if TYPE_CHECKING:
    from ..message import BaseMessage as EmailMessage  # any sendable message
    from ..message import RenderedMessage
    from .engine import Dialect
    from .worker import Worker

__all__ = [
    "DEFAULT_MAX_SIZE",
    "FINAL_STATES",
    "Job",
    "LeaseLostError",
    "QueueError",
    "RetryPolicy",
    "State",
    "Store",
    "StoredMessage",
    "StoredResult",
    "Worker",
    "aenqueue_in",
    "enqueue",
    "enqueue_in",
    "open_store",
    "prepare",
]

#: Largest message (rendered, attachments included) the outbox stores: the
#: stored form holds the whole message, so a huge attachment costs its size
#: in the database. Pass ``max_size=`` to change it.
DEFAULT_MAX_SIZE = 50 * 1024 * 1024

_stores: dict[str, Store] = {}
# Whether the outbox's tables exist, seen from a caller's connection.
_EXISTS = {
    "sqlite": "SELECT COUNT(*) FROM sqlite_master WHERE name = 'asyncmail_outbox'",
    "postgresql": "SELECT to_regclass('asyncmail_outbox') IS NOT NULL",
}
_stores_lock = SharedLock()


def open_store(url: str) -> Store:
    """The store for *url*, shared by every caller in this process.

    ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db`` (or a
    plain file path) for SQLite; ``postgresql://user@host/db`` for PostgreSQL
    (needs ``asyncmail[postgres]``). The database's tables are created on
    first use.
    """
    if not isinstance(url, str) or not url:
        raise QueueError(f"The outbox URL must be a non-empty string, not {url!r}")
    with _stores_lock:
        store = _stores.get(url)
        if store is None or store.closed:
            if url.startswith(("postgresql://", "postgres://")):
                from .postgres import open_postgres

                store = open_postgres(url)
            elif "://" in url and not url.startswith("sqlite://"):
                raise QueueError(
                    f"Unknown outbox URL {url!r}: use sqlite:///path or "
                    "postgresql://..."
                )
            else:
                from .sqlite import open_sqlite

                store = open_sqlite(url)
            _stores[url] = store
        return store


def _timestamp(send_at: datetime | float | None) -> float:
    if send_at is None:
        return time.time()
    if isinstance(send_at, datetime):
        if send_at.tzinfo is None:
            raise InvalidMessageError(
                "send_at must be timezone-aware (e.g. datetime.now(timezone.utc))"
            )
        return send_at.timestamp()
    if isinstance(send_at, (int, float)) and not isinstance(send_at, bool):
        return float(send_at)
    raise InvalidMessageError(
        f"send_at must be a datetime or a Unix time, not {type(send_at).__name__}"
    )


def prepare(
    message: EmailMessage,
    *,
    key: str | None = None,
    send_at: datetime | float | None = None,
    priority: int | None = None,
    max_size: int = DEFAULT_MAX_SIZE,
    defer_streamed: bool = False,
) -> NewMessage:
    """Render *message* into the row the outbox stores (CPU only: no I/O,
    except reading the files of streamed attachments, which are stored).

    Per-message options can also be set on the message as attributes:
    ``message.idempotency_key``, ``message.send_at``, ``message.priority``;
    the keywords win. The message is rendered 7-bit clean when it can be, so
    any server takes it; Bcc recipients are in the envelope only.
    """
    key = key if key is not None else getattr(message, "idempotency_key", None)
    if key is None:
        key = new_key()
    if not isinstance(key, str) or not key or len(key) > 255:
        raise InvalidMessageError("An idempotency key is a string of 1-255 characters")
    if send_at is None:
        send_at = getattr(message, "send_at", None)
    if priority is None:
        priority = getattr(message, "priority", 0)
    if not isinstance(priority, int) or isinstance(priority, bool):
        raise InvalidMessageError(f"priority must be an int, not {priority!r}")
    sender, recipients = message.envelope()
    if not recipients:
        raise InvalidMessageError("The message has no recipients to queue it for")
    try:
        rendered = message.render(allow_8bit=False)
    except ValueError:
        rendered = message.render()  # e.g. a raw 8-bit message: kept as it is
    size = sum(
        len(chunk) if isinstance(chunk, bytes) else chunk.encoded_size
        for chunk in rendered.chunks
    )
    if size > max_size:
        raise InvalidMessageError(
            f"The message is {size} octets rendered, over the outbox's limit of "
            f"{max_size} (max_size=)"
        )
    # Streamed attachments are read here and stored whole (async callers
    # read them off the event loop: see enqueue).
    data = b"" if (defer_streamed and rendered.streamed) else rendered.data
    subject = str(getattr(message, "subject", "") or "")[:200]
    row = NewMessage(
        key=key,
        sender=sender,
        recipients=recipients,
        data=data,
        due_at=_timestamp(send_at),
        priority=priority,
        message_id=rendered.message_id,
        subject=subject,
    )
    if not data:
        row.rendered = rendered
    return row


async def enqueue(
    store: Store,
    messages: Iterable[EmailMessage],
    *,
    key: str | None = None,
    send_at: datetime | float | None = None,
    priority: int | None = None,
    max_size: int = DEFAULT_MAX_SIZE,
) -> list[int]:
    """Store *messages* durably; return their outbox ids once committed.

    *key* (for a single message) is the idempotency key; see :func:`prepare`
    for the other options. A message whose key is already stored is not
    stored again: its existing id is returned.
    """
    listed = list(messages)
    if key is not None and len(listed) != 1:
        raise InvalidMessageError("key= names one message; set idempotency_key on each")
    rows = [
        prepare(
            m,
            key=key,
            send_at=send_at,
            priority=priority,
            max_size=max_size,
            defer_streamed=True,
        )
        for m in listed
    ]
    if not rows:
        return []
    for row in rows:
        rendered = row.rendered
        if rendered is not None:  # files to read: off the event loop
            row.data = await anyio.to_thread.run_sync(_read_all, rendered)
            row.rendered = None
    return await store.insert(rows)


def _read_all(rendered: RenderedMessage) -> bytes:
    return rendered.data


def _dialect_of(connection: Any) -> tuple[Dialect, tuple[str, ...]]:
    module = type(connection).__module__
    if module.startswith("sqlite3"):
        from . import sqlite

        return sqlite.SQLITE, sqlite.SCHEMA
    if module.startswith("psycopg"):
        from . import postgres

        return postgres.POSTGRES, postgres.SCHEMA
    raise QueueError(
        f"Cannot enqueue through a {type(connection).__qualname__}: give a "
        "sqlite3 or psycopg connection"
    )


def enqueue_in(
    connection: Any,
    messages: Sequence[EmailMessage],
    *,
    rows: Sequence[NewMessage] = (),
    **options: Any,
) -> None:
    """Insert *messages* through the caller's own database *connection*
    (sqlite3 or psycopg), inside its open transaction: they are sent if and
    only if that transaction commits (the transactional outbox). Nothing is
    committed here. Options as :func:`enqueue`; *rows* are messages already
    prepared (:func:`prepare`).

    The connection must be to the database the workers use; its tables are
    created if missing.
    """
    dialect, schema = _dialect_of(connection)
    rows = [*rows, *(prepare(message, **options) for message in messages)]
    cursor = connection.cursor()
    try:
        cursor.execute(_EXISTS[dialect.name])
        if not cursor.fetchone()[0]:
            for statement in schema:
                if not statement.startswith("SELECT"):
                    cursor.execute(statement)
        insert_rows(cursor, dialect, rows)
    finally:
        cursor.close()


async def aenqueue_in(
    connection: Any,
    messages: Sequence[EmailMessage],
    **options: Any,
) -> None:
    """:func:`enqueue_in` for a psycopg ``AsyncConnection``."""
    from .postgres import SCHEMA, insert_statements

    rows = [prepare(message, defer_streamed=True, **options) for message in messages]
    for row in rows:
        rendered = row.rendered
        if rendered is not None:
            row.data = await anyio.to_thread.run_sync(_read_all, rendered)
    async with connection.cursor() as cursor:
        await cursor.execute(_EXISTS["postgresql"])
        row = await cursor.fetchone()
        if not row[0]:
            for statement in SCHEMA:
                if not statement.startswith("SELECT"):
                    await cursor.execute(statement)
        stored = [(row.params(), row.data) for row in rows]
        for statement, params in insert_statements(stored):  # NOTIFY included
            await cursor.execute(statement, params)


def __getattr__(name: str) -> Any:
    if name == "Worker":
        from .worker import Worker

        return Worker
    raise AttributeError(name)
