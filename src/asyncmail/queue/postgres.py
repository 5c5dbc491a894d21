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

from .schema import schema
from .store import Dialect, QueueError, Store

__all__ = ["CHANNEL", "POSTGRES", "SCHEMA", "listen", "open_postgres"]

CHANNEL = "asyncmail_outbox"

SCHEMA = schema(
    "postgresql",
    # Concurrent CREATE ... IF NOT EXISTS can still race on the catalog:
    # serialise schema set-up with an advisory lock (released at commit).
    first=("SELECT pg_advisory_xact_lock(7326021)",),
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
