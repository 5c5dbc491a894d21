"""Where the web inbox keeps received mail: in memory or in a SQLite file.

Both stores are bounded (a number of messages and a number of octets; the
oldest go first), so a debug server left running for days, or flooded by a
test, never grows without limit. Their methods are async: SQLite's file I/O
runs in a worker thread, off the event loop.
"""

from __future__ import annotations

import sqlite3
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import anyio.to_thread

from ..options import check_count
from ..threads import SharedLock

__all__ = ["MemoryStore", "SQLiteStore", "Store", "StoredMessage"]


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """One received message: its envelope and the raw bytes."""

    id: int
    received: float  # seconds since the epoch
    peer: str
    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes


class Store:
    """The interface of both stores (and a bounded in-memory implementation
    of the bookkeeping they share). ``version`` changes whenever the
    content does, for cheap polling."""

    def __init__(self, *, max_messages: int = 1000, max_bytes: int = 200 << 20) -> None:
        # ConfigurationError is a ValueError, as this raised before.
        check_count("max_messages", max_messages, minimum=1)
        check_count("max_bytes", max_bytes, minimum=1)
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.version = 0

    async def add(
        self, peer: str, mail_from: str, rcpt_tos: tuple[str, ...], data: bytes
    ) -> StoredMessage:
        raise NotImplementedError

    async def list(self) -> list[StoredMessage]:
        """Every message, newest first."""
        raise NotImplementedError

    async def get(self, message_id: int) -> StoredMessage | None:
        raise NotImplementedError

    async def delete(self, message_id: int) -> bool:
        raise NotImplementedError

    async def clear(self) -> None:
        raise NotImplementedError


class MemoryStore(Store):
    """Messages in memory, oldest dropped beyond the bounds."""

    def __init__(self, *, max_messages: int = 1000, max_bytes: int = 200 << 20) -> None:
        super().__init__(max_messages=max_messages, max_bytes=max_bytes)
        self._messages: OrderedDict[int, StoredMessage] = OrderedDict()
        self._bytes = 0
        self._next = 1

    async def add(
        self, peer: str, mail_from: str, rcpt_tos: tuple[str, ...], data: bytes
    ) -> StoredMessage:
        message = StoredMessage(
            self._next, time.time(), peer, mail_from, tuple(rcpt_tos), data
        )
        self._next += 1
        self._messages[message.id] = message
        self._bytes += len(data)
        while self._messages and (
            len(self._messages) > self.max_messages or self._bytes > self.max_bytes
        ):
            _, oldest = self._messages.popitem(last=False)
            self._bytes -= len(oldest.data)
        self.version += 1
        return message

    async def list(self) -> list[StoredMessage]:
        return list(reversed(self._messages.values()))

    async def get(self, message_id: int) -> StoredMessage | None:
        return self._messages.get(message_id)

    async def delete(self, message_id: int) -> bool:
        message = self._messages.pop(message_id, None)
        if message is None:
            return False
        self._bytes -= len(message.data)
        self.version += 1
        return True

    async def clear(self) -> None:
        self._messages.clear()
        self._bytes = 0
        self.version += 1


class SQLiteStore(Store):
    """Messages in a SQLite file (kept across restarts), bounded likewise."""

    def __init__(
        self,
        path: str | Path,
        *,
        max_messages: int = 1000,
        max_bytes: int = 200 << 20,
    ) -> None:
        super().__init__(max_messages=max_messages, max_bytes=max_bytes)
        self.path = Path(path)
        self._lock = SharedLock()
        self._db = sqlite3.connect(self.path, check_same_thread=False)
        with self._lock, self._db:
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS messages (id INTEGER PRIMARY KEY "
                "AUTOINCREMENT, received REAL, peer TEXT, mail_from TEXT, "
                "rcpt_tos TEXT, data BLOB)"
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()

    async def _run(self, sql: str, *args: object) -> list[tuple[object, ...]]:
        def work() -> list[tuple[object, ...]]:
            with self._lock, self._db:
                return self._db.execute(sql, args).fetchall()

        return await anyio.to_thread.run_sync(work)

    @staticmethod
    def _row(row: tuple[object, ...]) -> StoredMessage:
        id_, received, peer, mail_from, rcpt_tos, data = row
        assert isinstance(id_, int)
        assert isinstance(data, bytes)
        return StoredMessage(
            id_,
            float(received),  # type: ignore[arg-type]
            str(peer),
            str(mail_from),
            tuple(str(rcpt_tos).split("\n")) if rcpt_tos else (),
            data,
        )

    async def add(
        self, peer: str, mail_from: str, rcpt_tos: tuple[str, ...], data: bytes
    ) -> StoredMessage:
        received = time.time()
        ((id_,),) = await self._run(
            "INSERT INTO messages (received, peer, mail_from, rcpt_tos, data) "
            "VALUES (?, ?, ?, ?, ?) RETURNING id",
            received,
            peer,
            mail_from,
            "\n".join(rcpt_tos),
            data,
        )
        # Beyond the bounds, the oldest go (the newest always stays).
        await self._run(
            "DELETE FROM messages WHERE id NOT IN (SELECT id FROM messages "
            "ORDER BY id DESC LIMIT ?)",
            self.max_messages,
        )
        await self._run(
            "DELETE FROM messages WHERE id != ? AND id IN (SELECT id FROM "
            "(SELECT id, SUM(LENGTH(data)) OVER (ORDER BY id DESC) AS total "
            "FROM messages) WHERE total > ?)",
            id_,
            self.max_bytes,
        )
        self.version += 1
        assert isinstance(id_, int)
        return StoredMessage(id_, received, peer, mail_from, tuple(rcpt_tos), data)

    async def list(self) -> list[StoredMessage]:
        rows = await self._run("SELECT * FROM messages ORDER BY id DESC")
        return [self._row(row) for row in rows]

    async def get(self, message_id: int) -> StoredMessage | None:
        rows = await self._run("SELECT * FROM messages WHERE id = ?", message_id)
        return self._row(rows[0]) if rows else None

    async def delete(self, message_id: int) -> bool:
        rows = await self._run(
            "DELETE FROM messages WHERE id = ? RETURNING id", message_id
        )
        self.version += 1
        return bool(rows)

    async def clear(self) -> None:
        await self._run("DELETE FROM messages")
        self.version += 1
