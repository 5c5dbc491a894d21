"""The outbox's tables, defined once for every database.

Three tables: ``asyncmail_outbox`` (a message's envelope, state and lease),
``asyncmail_data`` (its bytes, apart, so that the many updates of a
message's state never rewrite them), ``asyncmail_results`` (every
per-recipient result of every attempt) and ``asyncmail_rate`` (the shared
rate limits). :func:`schema` spells them in a dialect's column types.

The indexes are partial, so that a message's updates touch as little as
possible: the claim index holds only queued messages (an in-flight mark or a
result never moves an entry in it), the lease index only leased ones. Every
index is one more entry to write for each update of a row that moves it, so
there are as few as the queries need: the lease index serves both the
expiry (by time) and a worker's own leases (few rows: all leased ones).
"""

from __future__ import annotations

__all__ = ["schema"]

_TABLES = (
    """CREATE TABLE IF NOT EXISTS asyncmail_outbox (
        id {serial},
        key TEXT NOT NULL UNIQUE,
        state TEXT NOT NULL,
        priority INTEGER NOT NULL,
        due_at {real} NOT NULL,
        created_at {real} NOT NULL,
        updated_at {real},
        sender TEXT NOT NULL,
        recipients TEXT NOT NULL,
        pending TEXT NOT NULL,
        outcomes TEXT NOT NULL,
        message_id TEXT,
        subject TEXT,
        attempts INTEGER NOT NULL,
        claims INTEGER NOT NULL,
        lease_owner TEXT,
        lease_until {real},
        last_error TEXT
    )""",
    # Outboxes made before the indexes were partial: replaced by those below.
    "DROP INDEX IF EXISTS asyncmail_outbox_due",
    "DROP INDEX IF EXISTS asyncmail_outbox_owner",
    "CREATE INDEX IF NOT EXISTS asyncmail_outbox_queued "
    "ON asyncmail_outbox (priority DESC, due_at, id) WHERE state = 'queued'",
    "CREATE INDEX IF NOT EXISTS asyncmail_outbox_lease "
    "ON asyncmail_outbox (lease_until) WHERE lease_owner IS NOT NULL",
    # Outboxes made with an index by owner as well: the lease index does.
    "DROP INDEX IF EXISTS asyncmail_outbox_leased",
    """CREATE TABLE IF NOT EXISTS asyncmail_data (
        key TEXT PRIMARY KEY,
        data {blob} NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS asyncmail_results (
        id {serial},
        message {bigint} NOT NULL,
        attempt INTEGER NOT NULL,
        at {real} NOT NULL,
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
        next_at {real} NOT NULL
    )""",
)

_TYPES = {
    "sqlite": {
        "serial": "INTEGER PRIMARY KEY AUTOINCREMENT",
        "real": "REAL",
        "blob": "BLOB",
        "bigint": "INTEGER",
    },
    "postgresql": {
        "serial": "BIGSERIAL PRIMARY KEY",
        "real": "DOUBLE PRECISION",
        "blob": "BYTEA",
        "bigint": "BIGINT",
    },
}


def schema(dialect: str, *, first: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The statements creating the outbox in *dialect* (``sqlite`` or
    ``postgresql``), after *first* (e.g. a lock serialising set-up)."""
    types = _TYPES[dialect]
    return first + tuple(statement.format(**types) for statement in _TABLES)
