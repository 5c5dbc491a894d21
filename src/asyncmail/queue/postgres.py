"""The PostgreSQL outbox: many workers on many machines (``asyncmail[postgres]``).

Claims lock the rows they take with ``FOR UPDATE SKIP LOCKED``, so concurrent
workers never wait for each other nor take the same message; enqueueing sends
a ``NOTIFY`` (delivered when the transaction commits) that wakes the workers
LISTENing, which otherwise poll. The store's own connection (psycopg 3, on the
store's thread) is opened once and kept; the caller's connections, sync or
async, can enqueue inside their own transaction (the transactional outbox).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .store import Dialect, QueueError, Store

__all__ = ["CHANNEL", "POSTGRES", "SCHEMA", "listen", "open_postgres"]

CHANNEL = "asyncmail_outbox"

SCHEMA = (
    # Concurrent CREATE ... IF NOT EXISTS can still race on the catalog:
    # serialise schema set-up with an advisory lock (released at commit).
    "SELECT pg_advisory_xact_lock(7326021)",
    """CREATE TABLE IF NOT EXISTS asyncmail_outbox (
        id BIGSERIAL PRIMARY KEY,
        key TEXT NOT NULL UNIQUE,
        state TEXT NOT NULL,
        priority INTEGER NOT NULL,
        due_at DOUBLE PRECISION NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION,
        sender TEXT NOT NULL,
        recipients TEXT NOT NULL,
        pending TEXT NOT NULL,
        outcomes TEXT NOT NULL,
        message_id TEXT,
        subject TEXT,
        attempts INTEGER NOT NULL,
        claims INTEGER NOT NULL,
        lease_owner TEXT,
        lease_until DOUBLE PRECISION,
        last_error TEXT
    )""",
    "CREATE INDEX IF NOT EXISTS asyncmail_outbox_due "
    "ON asyncmail_outbox (state, priority DESC, due_at, id)",
    "CREATE INDEX IF NOT EXISTS asyncmail_outbox_owner "
    "ON asyncmail_outbox (lease_owner)",
    """CREATE TABLE IF NOT EXISTS asyncmail_data (
        key TEXT PRIMARY KEY,
        data BYTEA NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS asyncmail_results (
        id BIGSERIAL PRIMARY KEY,
        message BIGINT NOT NULL,
        attempt INTEGER NOT NULL,
        at DOUBLE PRECISION NOT NULL,
        recipient TEXT NOT NULL,
        outcome TEXT NOT NULL,
        code INTEGER,
        enhanced_status TEXT,
        text TEXT,
        reply TEXT,
        worker TEXT
    )""",
    "CREATE INDEX IF NOT EXISTS asyncmail_results_message "
    "ON asyncmail_results (message)",
    """CREATE TABLE IF NOT EXISTS asyncmail_rate (
        name TEXT PRIMARY KEY,
        next_at DOUBLE PRECISION NOT NULL
    )""",
)

POSTGRES = Dialect(
    name="postgresql",
    schema=SCHEMA,
    lock_clause=" FOR UPDATE SKIP LOCKED",
    placeholder="%s",
    greatest="GREATEST",
    notify=f"NOTIFY {CHANNEL}",
)


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError as exc:
        raise QueueError(
            "A PostgreSQL outbox needs psycopg 3: pip install 'asyncmail[postgres]'"
        ) from exc
    return psycopg


def open_postgres(url: str) -> Store:
    """A store on the PostgreSQL database named by *url* (a libpq URL)."""
    psycopg = _psycopg()

    def connect() -> Any:
        return psycopg.connect(url, autocommit=False)

    return Store(url, POSTGRES, connect)


async def listen(url: str, wake: Callable[[], None]) -> None:
    """Call *wake* whenever a message is enqueued (until cancelled)."""
    psycopg = _psycopg()
    connection = await psycopg.AsyncConnection.connect(url, autocommit=True)
    async with connection:
        await connection.execute(f"LISTEN {CHANNEL}")
        async for _ in connection.notifies():
            wake()
