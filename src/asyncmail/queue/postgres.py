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

from .engine import Dialect
from .inserts import chunks
from .model import QueueError
from .schema import schema
from .store import Store

__all__ = ["CHANNEL", "POSTGRES", "SCHEMA", "listen", "open_postgres"]

CHANNEL = "asyncmail_outbox"

SCHEMA = schema(
    "postgresql",
    # Concurrent CREATE ... IF NOT EXISTS can still race on the catalog:
    # serialise schema set-up with an advisory lock (released at commit).
    first=("SELECT pg_advisory_xact_lock(7326021)",),
)

# One statement, one round trip, one text whatever the count (prepared once
# by psycopg): the rows come as arrays, the updates return the messages still
# leased to their owner, and only those get their results inserted.
_WRITE_RESULTS = """
WITH v AS (
    SELECT * FROM unnest(
        %s::bigint[], %s::text[], %s::text[], %s::text[], %s::text[],
        %s::double precision[], %s::integer[], %s::text[]
    ) AS v (id, owner, state, pending, outcomes, due_at, attempts, last_error)
), done AS (
    UPDATE asyncmail_outbox AS o SET state = v.state, pending = v.pending,
        outcomes = v.outcomes, due_at = v.due_at, attempts = v.attempts,
        last_error = v.last_error, lease_owner = NULL, updated_at = %s
    FROM v WHERE o.id = v.id AND o.lease_owner = v.owner
    RETURNING o.id
), added AS (
    INSERT INTO asyncmail_results (message, attempt, at, recipient, outcome,
        code, enhanced_status, text, reply, worker)
    SELECT r.message, r.attempt, r.at, r.recipient, r.outcome, r.code,
        r.enhanced_status, r.text, r.reply, r.worker
    FROM unnest(
        %s::bigint[], %s::integer[], %s::double precision[], %s::text[],
        %s::text[], %s::integer[], %s::text[], %s::text[], %s::text[], %s::text[]
    ) WITH ORDINALITY AS r (message, attempt, at, recipient, outcome, code,
        enhanced_status, text, reply, worker, n)
    WHERE r.message IN (SELECT id FROM done)
    ORDER BY r.n
)
SELECT id FROM done
"""


def write_results(
    cursor: Any,
    rows: list[tuple[Any, ...]],
    results: list[tuple[Any, ...]],
    now: float,
) -> set[int]:
    """The store's ``write_results`` for PostgreSQL (one statement)."""
    columns = [list(column) for column in zip(*rows, strict=True)] or [[]] * 8
    values = [list(column) for column in zip(*results, strict=True)] or [[]] * 10
    cursor.execute(_WRITE_RESULTS, [*columns, now, *values])
    return {int(row[0]) for row in cursor.fetchall()}


# Enqueueing in one statement: the messages, their data and the NOTIFY
# waking the workers (sent when it commits), returning the id of each key,
# inserted now or stored before (a key already there is skipped: enqueueing
# is idempotent). Alone, it is its own transaction: a lone enqueue is one
# round trip. (Rows as VALUES: the same statement with arrays and unnest()
# took twice as long for one message.)
_INSERT = """
WITH v (key, state, priority, due_at, created_at, sender, recipients, pending,
        message_id, subject, data) AS (
    VALUES {values}
), added AS (
    INSERT INTO asyncmail_outbox (key, state, priority, due_at, created_at,
        sender, recipients, pending, message_id, subject, outcomes, attempts,
        claims, last_error)
    SELECT key, state, priority, due_at, created_at, sender, recipients,
        pending, message_id, subject, '{{}}', 0, 0, '' FROM v
    ON CONFLICT (key) DO NOTHING
    RETURNING key, id
), stored AS (
    INSERT INTO asyncmail_data (key, data) SELECT key, data FROM v
    ON CONFLICT (key) DO NOTHING
), woken AS (
    SELECT pg_notify('asyncmail_outbox', '')
)
SELECT found.key, found.id FROM (
    SELECT key, id FROM added
    UNION ALL
    SELECT key, id FROM asyncmail_outbox WHERE key IN (SELECT key FROM v)
) AS found, woken
"""
_ROW = (
    "(%s, %s, %s::integer, %s::double precision, %s::double precision, %s, %s, "
    "%s, %s, %s, %s::bytea)"
)
#: Rows a statement (11 parameters each, of PostgreSQL's 65535 at most).
_ROWS = 2000
assert f"pg_notify('{CHANNEL}'" in _INSERT
_IDS = "SELECT key, id FROM asyncmail_outbox WHERE key = ANY(%s)"


def insert_statements(
    rows: list[tuple[tuple[Any, ...], bytes]],
) -> list[tuple[str, list[Any]]]:
    """The statements (and their parameters) storing *rows* (each row's
    ``NewMessage.params()`` and data): one for up to :data:`_ROWS` rows."""
    return [
        (
            _INSERT.format(values=", ".join([_ROW] * len(chunk))),
            [value for params, data in chunk for value in (*params, data)],
        )
        for chunk in chunks(rows, _ROWS)
    ]


def insert(cursor: Any, rows: list[tuple[tuple[Any, ...], bytes]]) -> dict[str, int]:
    """The dialect's insert (see :data:`_INSERT`): one statement for up to
    :data:`_ROWS` rows; more, and they are written in one transaction (begun
    here when the connection is in autocommit mode)."""
    if len(rows) > _ROWS and getattr(cursor.connection, "autocommit", False):
        with cursor.connection.transaction():
            return _insert_all(cursor, rows)
    return _insert_all(cursor, rows)


def _insert_all(
    cursor: Any, rows: list[tuple[tuple[Any, ...], bytes]]
) -> dict[str, int]:
    found: dict[str, int] = {}
    for statement, params in insert_statements(rows):
        cursor.execute(statement, params)
        found.update((key, int(ident)) for key, ident in cursor.fetchall())
    missing = list({params[0] for params, _ in rows} - found.keys())
    if missing:
        # Stored meanwhile by a concurrent transaction, after the
        # statement's snapshot: its id is read once that one committed (the
        # insert waited for it).
        cursor.execute(_IDS, [missing])
        found.update((key, int(ident)) for key, ident in cursor.fetchall())
    return found


POSTGRES = Dialect(
    name="postgresql",
    schema=SCHEMA,
    write_results=write_results,
    insert=insert,
    arrays=True,
    pipeline=True,
    urgent_autocommit=True,
    autocommit_switch=True,
    lock_clause=" FOR UPDATE SKIP LOCKED",
    # The claim takes the first due messages in the claim index's order and
    # stops there. Without statistics (a new or freshly filled table) the
    # planner may instead read every queued row and sort them all, at each
    # claim: milliseconds, growing with the backlog.
    claim_setup="SET LOCAL enable_bitmapscan = off; SET LOCAL enable_sort = off",
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
