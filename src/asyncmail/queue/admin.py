"""Inspecting and administering an outbox: counts, listings, results, and
the operator's retry and purge (the API behind ``asyncmail outbox``).

:class:`OutboxAdmin` is the part of :class:`~asyncmail.queue.store.Store`
that workers never use; every method runs on the store's thread (see
:mod:`.engine`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from typing import Any

from .engine import Engine
from .model import FINAL_STATES, QueueError, State, StoredMessage, StoredResult

__all__ = ["OutboxAdmin"]

_MESSAGE_COLUMNS = (
    "id, key, state, priority, due_at, created_at, sender, recipients, pending, "
    "outcomes, attempts, claims, message_id, subject, last_error, lease_owner"
)


def _stored(row: Sequence[Any]) -> StoredMessage:
    return StoredMessage(
        id=int(row[0]),
        key=row[1],
        state=State(row[2]),
        priority=int(row[3]),
        due_at=float(row[4]),
        created_at=float(row[5]),
        sender=row[6],
        recipients=json.loads(row[7]),
        pending=json.loads(row[8]),
        outcomes=json.loads(row[9]),
        attempts=int(row[10]),
        claims=int(row[11]),
        message_id=row[12] or "",
        subject=row[13] or "",
        last_error=row[14] or "",
        lease_owner=row[15],
    )


class OutboxAdmin(Engine):
    """Counts, listings, results, retry and purge of an outbox."""

    async def counts(self) -> dict[State, int]:
        """How many messages are in each state."""

        def count(cursor: Any) -> dict[State, int]:
            cursor.execute(
                "SELECT state, COUNT(*) FROM asyncmail_outbox GROUP BY state"
            )
            found = {State(state): int(n) for state, n in cursor.fetchall()}
            return {state: found.get(state, 0) for state in State}

        return await self.run(count)

    async def messages(
        self,
        states: Iterable[State] = (),
        *,
        ids: Iterable[int] = (),
        limit: int = 100,
    ) -> list[StoredMessage]:
        """Messages in *states* (or with *ids*; all when neither), oldest first."""
        wanted = [state.value for state in states]
        numbers = [int(i) for i in ids]

        def select(cursor: Any) -> list[StoredMessage]:
            clauses: list[str] = []
            params: list[Any] = []
            if wanted:
                clauses.append(f"state IN ({', '.join('?' * len(wanted))})")
                params += wanted
            if numbers:
                clauses.append(f"id IN ({', '.join('?' * len(numbers))})")
                params += numbers
            where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
            cursor.execute(
                self.dialect.sql(
                    f"SELECT {_MESSAGE_COLUMNS} FROM asyncmail_outbox{where} "
                    "ORDER BY id LIMIT ?"
                ),
                (*params, limit),
            )
            return [_stored(row) for row in cursor.fetchall()]

        return await self.run(select)

    async def get(self, ident: int | str) -> StoredMessage | None:
        """The message with this id or idempotency key."""

        def select(cursor: Any) -> StoredMessage | None:
            column = "id" if isinstance(ident, int) else "key"
            cursor.execute(
                self.dialect.sql(
                    f"SELECT {_MESSAGE_COLUMNS} FROM asyncmail_outbox "
                    f"WHERE {column} = ?"
                ),
                (ident,),
            )
            row = cursor.fetchone()
            return None if row is None else _stored(row)

        return await self.run(select)

    async def results(self, message: int) -> list[StoredResult]:
        """Every recorded per-recipient result of *message*, in order."""

        def select(cursor: Any) -> list[StoredResult]:
            cursor.execute(
                self.dialect.sql(
                    "SELECT message, attempt, at, recipient, outcome, code, "
                    "enhanced_status, text, reply, worker FROM asyncmail_results "
                    "WHERE message = ? ORDER BY attempt, id"
                ),
                (message,),
            )
            return [
                StoredResult(
                    int(r[0]),
                    int(r[1]),
                    float(r[2]),
                    r[3],
                    r[4],
                    r[5],
                    r[6],
                    r[7] or "",
                    r[8] or "",
                    r[9] or "",
                )
                for r in cursor.fetchall()
            ]

        return await self.run(select)

    async def retry(
        self, *, ids: Iterable[int] = (), states: Iterable[State] = ()
    ) -> int:
        """Queue again, now, the messages with *ids* or in *states* (final
        states only), for their recipients not accepted. Unknown messages are
        retried only when asked for by id or by the ``unknown`` state: they
        may have been delivered already."""
        numbers = [int(i) for i in ids]
        wanted = [state.value for state in states]
        for state in states:
            if state not in FINAL_STATES or state is State.SENT:
                raise QueueError(f"Cannot retry messages that are {state.value}")

        def again(cursor: Any) -> int:
            sql = self.dialect.sql
            clauses: list[str] = []
            params: list[Any] = []
            if numbers:
                clauses.append(f"id IN ({', '.join('?' * len(numbers))})")
                params += numbers
            if wanted:
                clauses.append(f"state IN ({', '.join('?' * len(wanted))})")
                params += wanted
            if not clauses:
                return 0
            cursor.execute(
                sql(
                    "SELECT id, recipients, outcomes, state FROM asyncmail_outbox "
                    f"WHERE ({' OR '.join(clauses)}) AND state NOT IN "
                    "('queued', 'claimed', 'inflight', 'sent')"
                ),
                params,
            )
            updates = []
            now = time.time()
            for ident, recipients, outcomes, _state in cursor.fetchall():
                done = json.loads(outcomes)
                pending = [
                    a for a in json.loads(recipients) if done.get(a) != "accepted"
                ]
                kept = {a: o for a, o in done.items() if o == "accepted"}
                updates.append((json.dumps(pending), json.dumps(kept), now, int(ident)))
            cursor.executemany(
                sql(
                    "UPDATE asyncmail_outbox SET state = 'queued', pending = ?, "
                    "outcomes = ?, due_at = ?, claims = 0, attempts = 0, "
                    "last_error = '' WHERE id = ?"
                ),
                updates,
            )
            return len(updates)

        count = await self.run(again)
        for listener in list(self.listeners):
            listener()
        return count

    async def purge(self, states: Iterable[State], *, older_than: float = 0.0) -> int:
        """Delete messages in final *states* (and their results) settled more
        than *older_than* seconds ago; return how many."""
        wanted = [state.value for state in states]
        for state in states:
            if state not in FINAL_STATES:
                raise QueueError(f"Cannot purge messages that are {state.value}")
        if not wanted:
            return 0

        def delete(cursor: Any) -> int:
            sql = self.dialect.sql
            marks = ", ".join("?" * len(wanted))
            params = (*wanted, time.time() - older_than)
            where = f"state IN ({marks}) AND updated_at <= ?"
            cursor.execute(
                sql(
                    "DELETE FROM asyncmail_results WHERE message IN (SELECT id "
                    f"FROM asyncmail_outbox WHERE {where})"
                ),
                params,
            )
            cursor.execute(
                sql(
                    "DELETE FROM asyncmail_data WHERE key IN (SELECT key "
                    f"FROM asyncmail_outbox WHERE {where})"
                ),
                params,
            )
            cursor.execute(sql(f"DELETE FROM asyncmail_outbox WHERE {where}"), params)
            return int(cursor.rowcount)

        return await self.run(delete)
