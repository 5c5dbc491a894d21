"""The SQLite outbox: one file, no server, WAL mode (the embedded default).

Several processes on one machine may share the file: every write takes the
database's write lock at the start of its transaction (``BEGIN IMMEDIATE``),
so two workers never claim the same message, and waits for a busy lock
instead of failing. ``synchronous=FULL`` (the default) makes every commit
survive a power loss; ``?synchronous=normal`` in the URL survives a crashed
process but not a crashed machine, and commits faster.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from .engine import Dialect
from .model import QueueError
from .schema import schema
from .store import Store

__all__ = ["SCHEMA", "SQLITE", "open_sqlite", "sqlite_path"]

SCHEMA = schema("sqlite")

# Each call into SQLite gives up the GIL and must take it back from a busy
# event loop (up to the interpreter's switch interval, 5 ms): the writes below
# are a few statements for a whole batch, not one (or one row read) per
# message.
_VALUES_ROW = "(?, ?, ?, ?, ?, ?, ?, ?)"
_COUNT_OWNED = (
    "SELECT COUNT(*) FROM asyncmail_outbox AS o JOIN (VALUES {values}) AS v "
    "ON o.id = v.column1 AND o.lease_owner = v.column2"
)
_UPDATE_ALL = (
    "WITH v (id, owner, state, pending, outcomes, due_at, attempts, last_error) AS "
    "(VALUES {values}) UPDATE asyncmail_outbox SET state = v.state, pending = "
    "v.pending, outcomes = v.outcomes, due_at = v.due_at, attempts = v.attempts, "
    "last_error = v.last_error, lease_owner = NULL, updated_at = ? FROM v WHERE "
    "asyncmail_outbox.id = v.id AND asyncmail_outbox.lease_owner = v.owner"
)
_OWNERS = "SELECT id, lease_owner FROM asyncmail_outbox WHERE id IN (?)"
_RESULTS = (
    "INSERT INTO asyncmail_results (message, attempt, at, recipient, outcome, code, "
    "enhanced_status, text, reply, worker) VALUES {values}"
)
_RESULT_ROW = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"


def write_results(
    cursor: Any,
    rows: list[tuple[Any, ...]],
    results: list[tuple[Any, ...]],
    now: float,
) -> set[int]:
    """The store's ``write_results`` for SQLite. The transaction holds the
    write lock (``BEGIN IMMEDIATE``), so the leases counted first cannot
    change before the update: when every message is still its owner's (the
    usual case) one update and one insert write the batch."""
    written: set[int] = set()
    for start in range(0, len(rows), 100):
        chunk = rows[start : start + 100]
        values = ", ".join([_VALUES_ROW] * len(chunk))
        params = [value for row in chunk for value in row]
        owned = ", ".join(["(?, ?)"] * len(chunk))
        cursor.execute(
            _COUNT_OWNED.format(values=owned),
            [value for row in chunk for value in row[:2]],
        )
        if int(cursor.fetchone()[0]) == len(chunk):
            ids = {row[0] for row in chunk}
        else:  # some claims were lost meanwhile: find which
            marks = ", ".join("?" * len(chunk))  # placeholders only
            cursor.execute(_OWNERS.replace("?", marks), [row[0] for row in chunk])
            owners = dict(cursor.fetchall())
            ids = {row[0] for row in chunk if owners.get(row[0]) == row[1]}
            kept = [row for row in chunk if row[0] in ids]
            values = ", ".join([_VALUES_ROW] * len(kept))
            params = [value for row in kept for value in row]
        if ids:
            cursor.execute(_UPDATE_ALL.format(values=values), [*params, now])
        written |= ids
    kept_results = [r for r in results if r[0] in written]
    for start in range(0, len(kept_results), 90):
        chunk = kept_results[start : start + 90]
        cursor.execute(
            _RESULTS.format(values=", ".join([_RESULT_ROW] * len(chunk))),
            [value for row in chunk for value in row],
        )
    return written


SQLITE = Dialect(
    name="sqlite",
    schema=SCHEMA,
    write_results=write_results,
    begin="BEGIN IMMEDIATE",
    urgent_autocommit=True,
)

_SYNCHRONOUS = {"full": "FULL", "normal": "NORMAL", "extra": "EXTRA"}


def sqlite_path(url: str) -> tuple[str, str]:
    """The file and the synchronous mode of ``sqlite:///path?synchronous=...``
    (a plain path works too)."""
    rest = url.removeprefix("sqlite://")
    if rest != url:
        rest = rest.removeprefix("/") if not rest.startswith("//") else rest[1:]
    path, _, query = rest.partition("?")
    options = parse_qs(query)
    mode = options.pop("synchronous", ["full"])[-1].lower()
    if options:
        raise QueueError(f"Unknown SQLite outbox option(s): {', '.join(options)}")
    if mode not in _SYNCHRONOUS:
        raise QueueError(f"synchronous must be full, normal or extra, not {mode!r}")
    if not path:
        raise QueueError(f"No database file in the outbox URL {url!r}")
    return path, _SYNCHRONOUS[mode]


def connect(path: str, synchronous: str = "FULL") -> sqlite3.Connection:
    """A connection set up for the outbox (WAL, waits on a busy lock).

    A new database file is created readable by its owner only (it holds
    every message queued; SQLite gives its -wal and -shm files the same
    permissions).
    """
    if path != ":memory:" and not os.path.exists(path):
        with contextlib.suppress(FileExistsError):
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    connection = sqlite3.connect(path, isolation_level=None, timeout=30.0)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute(f"PRAGMA synchronous={synchronous}")
    connection.execute("PRAGMA busy_timeout=30000")
    return connection


def open_sqlite(url: str) -> Store:
    """A store on the SQLite file named by *url*."""
    path, synchronous = sqlite_path(url)
    parent = Path(path).parent
    if path != ":memory:" and not parent.is_dir():
        raise QueueError(f"The outbox's directory {str(parent)!r} does not exist")
    return Store(url, SQLITE, lambda: connect(path, synchronous))
