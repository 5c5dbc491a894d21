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
from urllib.parse import parse_qs

from .schema import schema
from .store import Dialect, QueueError, Store

__all__ = ["SCHEMA", "SQLITE", "open_sqlite", "sqlite_path"]

SCHEMA = schema("sqlite")

SQLITE = Dialect(name="sqlite", schema=SCHEMA, begin="BEGIN IMMEDIATE")

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
