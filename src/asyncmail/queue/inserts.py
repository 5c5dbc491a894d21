"""Enqueueing: the statements storing new messages, for the store's thread
and for a caller's own transaction (the transactional outbox).

The message bytes live in a table of their own (``asyncmail_data``): the
many updates of a message's state then never rewrite them. A key already
stored is skipped, so an enqueue is idempotent.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from .engine import Dialect
from .model import NewMessage

__all__ = ["INSERT", "INSERT_DATA", "chunks", "insert_many", "insert_rows"]

T = TypeVar("T")

INSERT = (
    "INSERT INTO asyncmail_outbox (key, state, priority, due_at, created_at, "
    "sender, recipients, pending, message_id, subject, outcomes, attempts, "
    "claims, last_error) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, '{}', 0, 0, '') "
    "ON CONFLICT (key) DO NOTHING"
)
INSERT_DATA = (
    "INSERT INTO asyncmail_data (key, data) VALUES (?, ?) ON CONFLICT (key) DO NOTHING"
)

_ONE_ROW = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, '{}', 0, 0, '')"
assert _ONE_ROW in INSERT


def chunks(items: Sequence[T], size: int) -> list[Sequence[T]]:
    """*items* in slices of at most *size* (statements have a parameter limit)."""
    return [items[start : start + size] for start in range(0, len(items), size)]


def insert_rows(cursor: Any, dialect: Dialect, rows: Sequence[NewMessage]) -> None:
    """Insert *rows* on *cursor* (any transaction: the caller's own, for the
    transactional outbox). A key already stored is skipped (idempotency)."""
    if dialect.insert is not None:  # one statement
        dialect.insert(cursor, [(row.params(), row.data) for row in rows])
        return
    cursor.executemany(dialect.sql(INSERT), [row.params() for row in rows])
    cursor.executemany(dialect.sql(INSERT_DATA), [(row.key, row.data) for row in rows])
    if dialect.notify:
        cursor.execute(dialect.notify)


def insert_many(
    cursor: Any, dialect: Dialect, calls: list[list[NewMessage]]
) -> list[list[int]]:
    """Insert the rows of every call in *calls* (multi-row statements);
    return each call's ids (that of the stored message for a key already
    there)."""
    rows = [row for call in calls for row in call]
    if dialect.insert is not None:  # one statement
        ids = dialect.insert(cursor, [(row.params(), row.data) for row in rows])
        return [[ids[row.key] for row in call] for call in calls]
    sql = dialect.sql
    for chunk in chunks(rows, 256):
        values = ", ".join([_ONE_ROW] * len(chunk))
        cursor.execute(
            sql(INSERT.replace(_ONE_ROW, values)),
            [value for row in chunk for value in row.params()],
        )
        cursor.execute(
            sql(INSERT_DATA.replace("(?, ?)", ", ".join(["(?, ?)"] * len(chunk)))),
            [value for row in chunk for value in (row.key, row.data)],
        )
    if dialect.notify:
        cursor.execute(dialect.notify)
    found: dict[str, int] = {}
    keys = list(dict.fromkeys(row.key for row in rows))
    for some in chunks(keys, 500):
        cursor.execute(
            sql(
                "SELECT key, id FROM asyncmail_outbox WHERE key IN "
                f"({', '.join('?' * len(some))})"
            ),
            list(some),
        )
        found.update((key, int(ident)) for key, ident in cursor.fetchall())
    return [[found[row.key] for row in call] for call in calls]
