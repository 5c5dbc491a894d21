"""The outbox store: one table of messages, one of results, one of rate slots.

The same SQL (and the same logic deciding what happens to a message after an
attempt) serves SQLite and PostgreSQL; :mod:`.sqlite` and :mod:`.postgres`
say how to connect and what differs in the dialect (placeholders, arrays,
and the one batch write of results each does its own fastest way). The
tables are in :mod:`.schema`, the enqueue statements in :mod:`.inserts`, the
operators' side (listings, retry, purge) in :mod:`.admin`.

Every database call runs on the store's own thread, with group commit (see
:mod:`.engine`); the records and the rule deciding a message's next state
are in :mod:`.model`.

A message moves through these states::

    queued ──claim──> claimed ──mark──> inflight ──result──> sent | partial
      ^                 │                  │                 failed | dead
      └─ lease expired ─┘                  └─ lease expired ─> unknown
      └─ retry (temporary failures, at a backoff-scheduled time)

``inflight`` is written, and committed, just before the end of data goes to
the server: a worker that dies after it leaves the message ``unknown`` (it
may have been delivered), never sent again automatically. A worker that dies
before it leaves only a claim, which expires and is taken by another worker.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from typing import Any

from .admin import OutboxAdmin
from .engine import After
from .inserts import chunks, insert_many
from .model import (
    Job,
    LeaseLostError,
    NewMessage,
    RetryPolicy,
    Settlement,
)

__all__ = ["Store"]


class Store(OutboxAdmin):
    """An outbox: durable messages, claims, results, a shared rate limit.

    Open one with :func:`asyncmail.queue.open_store`. What workers do is
    here; what operators do (counts, listings, retry, purge) is inherited
    from :class:`~asyncmail.queue.admin.OutboxAdmin`. Every method is
    async (the work runs on the store's thread, see :mod:`.engine`) and safe
    to call from any thread and any event loop.
    """

    # -- enqueueing --------------------------------------------------------------------

    async def insert(self, rows: Sequence[NewMessage]) -> list[int]:
        """Store *rows*; return their ids (that of the stored message for a
        key already there). Concurrent callers share the statements."""
        ids: list[int] = await self.run_merged(
            self._insert_many, list(rows), single=self.dialect.insert is not None
        )
        for listener in list(self.listeners):
            listener()
        return ids

    def insert_sync(self, rows: Sequence[NewMessage]) -> list[int]:
        """:meth:`insert` for blocking callers (waits in the calling thread)."""
        ids: list[int] = self.run_merged_sync(
            self._insert_many, list(rows), single=self.dialect.insert is not None
        )
        for listener in list(self.listeners):
            listener()
        return ids

    def _insert_many(self, cursor: Any, calls: list[list[NewMessage]]) -> list[Any]:
        return insert_many(cursor, self.dialect, calls)

    # -- workers --------------------------------------------------------------------

    async def claim(
        self,
        owner: str,
        limit: int,
        lease: float,
        policy: RetryPolicy,
        *,
        held: Iterable[int] = (),
    ) -> list[Job]:
        """Lease up to *limit* due messages to *owner*, most urgent first.

        Expired leases are dealt with first: a claimed message goes back to
        the queue (or dead, after ``max_claims``), an in-flight one becomes
        unknown; except the messages *owner* still holds (*held*: it is
        alive, only late to renew them; another worker's claim may still
        take them, and the owner then finds out at the mark).
        """
        kept = list(held)
        return await self.run(
            lambda cursor: self._claim(cursor, owner, limit, lease, policy, held=kept)
        )

    def _claim(
        self,
        cursor: Any,
        owner: str,
        limit: int,
        lease: float,
        policy: RetryPolicy,
        *,
        held: list[int],
    ) -> list[Job]:
        sql = self.dialect.sql
        now = time.time()
        if self.dialect.claim_setup:
            cursor.execute(self.dialect.claim_setup)
        self._expire(cursor, now, policy, owner, held)
        claim = (
            "UPDATE asyncmail_outbox SET state = 'claimed', lease_owner = ?, "
            "lease_until = ?, claims = claims + 1 WHERE id IN (SELECT id FROM "
            "asyncmail_outbox WHERE state = 'queued' AND due_at <= ? ORDER BY "
            f"priority DESC, due_at, id LIMIT ?{self.dialect.lock_clause}) "
            "RETURNING id, key, sender, recipients, pending, attempts, "
            "priority, outcomes, due_at, message_id"
        )
        params = (owner, now + lease, now, limit)
        data: dict[str, bytes] = {}
        if self.dialect.arrays:  # PostgreSQL: the claim and its data, one statement
            cursor.execute(
                sql(
                    f"WITH c AS ({claim}) SELECT c.*, d.data FROM c JOIN "
                    "asyncmail_data AS d ON d.key = c.key"
                ),
                params,
            )
            rows = cursor.fetchall()
            data = {r[1]: bytes(r[10]) for r in rows}
        else:
            cursor.execute(sql(claim), params)
            rows = cursor.fetchall()
            for keys in chunks([r[1] for r in rows], 500):
                where, keyed = self._among("key", keys)
                cursor.execute(
                    sql(f"SELECT key, data FROM asyncmail_data WHERE {where}"), keyed
                )
                data.update((key, bytes(value)) for key, value in cursor.fetchall())
        rows.sort(key=lambda r: (-int(r[6]), float(r[8]), r[0]))
        return [
            Job(
                int(r[0]),
                r[1],
                r[2],
                recipients := json.loads(r[3]),
                # On a first attempt (the usual claim) every recipient is
                # still pending and there are no outcomes: nothing more to
                # parse.
                recipients.copy() if r[4] == r[3] else json.loads(r[4]),
                data[r[1]],
                int(r[5]),
                int(r[6]),
                {} if r[7] == "{}" else json.loads(r[7]),
                r[9] or "",
            )
            for r in rows
        ]

    def _expire(
        self,
        cursor: Any,
        now: float,
        policy: RetryPolicy,
        owner: str | None = None,
        held: Sequence[int] = (),
    ) -> None:
        """Deal with the expired leases, but those of *held* messages of
        *owner* (see :meth:`claim`)."""
        sql = self.dialect.sql
        spare, spared = "", []
        if owner is not None and held:
            among, ids = self._among("id", held)
            spare = f" AND NOT (lease_owner = ? AND {among})"
            spared = [owner, *ids]
        # Usually no lease has expired: one look (on the lease index, in its
        # order, so that no planner reads the table for it) first.
        cursor.execute(
            sql(
                "SELECT 1 FROM asyncmail_outbox WHERE lease_owner IS NOT NULL AND "
                "lease_until < ? ORDER BY lease_until LIMIT 1"
            ),
            (now,),
        )
        if cursor.fetchone() is None:
            return
        cursor.execute(
            sql(
                "UPDATE asyncmail_outbox SET state = 'dead', lease_owner = NULL, "
                "last_error = 'workers stopped while holding it ' || claims || "
                "' times: a poison message', updated_at = ? WHERE lease_owner IS NOT "
                "NULL AND lease_until < ? AND state = 'claimed' AND claims >= ?" + spare
            ),
            (now, now, policy.max_claims, *spared),
        )
        cursor.execute(
            sql(
                "UPDATE asyncmail_outbox SET state = 'queued', lease_owner = NULL "
                "WHERE lease_owner IS NOT NULL AND lease_until < ? AND state = "
                "'claimed'" + spare
            ),
            (now, *spared),
        )
        cursor.execute(
            sql(
                "SELECT id, pending, outcomes, attempts, lease_owner FROM "
                "asyncmail_outbox WHERE lease_owner IS NOT NULL AND lease_until < ? "
                "AND state = 'inflight'" + spare
            ),
            (now, *spared),
        )
        text = (
            "the worker stopped after the end of data was written; the message "
            "may have been delivered, so it is not resent"
        )
        for ident, pending, outcomes, attempts, worker in cursor.fetchall():
            merged = json.loads(outcomes)
            for address in json.loads(pending):
                merged[address] = "unknown"
                cursor.execute(
                    sql(
                        "INSERT INTO asyncmail_results (message, attempt, at, "
                        "recipient, outcome, code, enhanced_status, text, reply, "
                        "worker) VALUES (?, ?, ?, ?, 'unknown', NULL, NULL, ?, '', ?)"
                    ),
                    (ident, int(attempts) + 1, now, address, text, worker or ""),
                )
            cursor.execute(
                sql(
                    "UPDATE asyncmail_outbox SET state = 'unknown', pending = '[]', "
                    "outcomes = ?, attempts = attempts + 1, lease_owner = NULL, "
                    "last_error = ?, updated_at = ? WHERE id = ?"
                ),
                (json.dumps(merged), text, now, ident),
            )

    async def mark_inflight(self, job: Job, owner: str) -> None:
        """Durably record that *job*'s end of data is about to be written;
        raise :class:`LeaseLostError` if the claim is no longer *owner*'s.
        Concurrent marks share one statement and one commit, and go before
        any other call waiting for the store's thread."""
        if not await self.run_merged(self._mark_many, (job.id, owner), urgent=True):
            raise LeaseLostError(
                f"The claim on outbox message {job.id} expired; not sending it"
            )

    def _mark_many(self, cursor: Any, items: list[tuple[int, str]]) -> Any:
        owners: dict[str, list[int]] = {}
        for ident, owner in items:
            owners.setdefault(owner, []).append(ident)
        sql = self.dialect.sql
        mark = (
            "UPDATE asyncmail_outbox SET state = 'inflight' WHERE lease_owner = ? "
            "AND state IN ('claimed', 'inflight') AND "
        )
        if self.dialect.arrays:
            # PostgreSQL: one statement an owner, returning the ids marked,
            # read after the commit (the batch is then one round trip).
            reads = []
            for owner, idents in owners.items():
                own = cursor.connection.cursor()
                own.execute(sql(mark + "id = ANY(?) RETURNING id"), [owner, idents])
                reads.append((owner, own))

            def read() -> list[Any]:
                marked = {(int(r[0]), o) for o, own in reads for r in own.fetchall()}
                return [item in marked for item in items]

            return After(read)
        marked: set[tuple[int, str]] = set()
        for owner, idents in owners.items():
            for chunk in chunks(idents, 500):
                where, params = self._among("id", chunk)
                # No RETURNING: a row read is a call into the database (on
                # SQLite, a wait for the GIL); all marked is the usual case.
                cursor.execute(sql(mark + where), [owner, *params])
                if cursor.rowcount == len(chunk):
                    marked.update((ident, owner) for ident in chunk)
                    continue
                cursor.execute(  # some claims were lost: which are ours
                    sql(
                        "SELECT id FROM asyncmail_outbox WHERE lease_owner = ? AND "
                        f"state = 'inflight' AND {where}"
                    ),
                    [owner, *params],
                )
                marked.update((int(row[0]), owner) for row in cursor.fetchall())
        return [item in marked for item in items]

    def _among(self, column: str, values: Sequence[Any]) -> tuple[str, list[Any]]:
        """``column IN (...)``, as one array parameter where the database
        has arrays (one statement text for any count: prepared once)."""
        if self.dialect.arrays:
            return f"{column} = ANY(?)", [list(values)]
        return f"{column} IN ({', '.join('?' * len(values))})", list(values)

    async def finish(self, settlement: Settlement, owner: str) -> bool:
        """Write an attempt's results and the message's next state; False if
        the claim was lost meanwhile (nothing written). Concurrent calls
        share the statements and the commit."""
        [written] = await self.finish_many([settlement], owner)
        return written

    async def finish_many(
        self, settlements: Sequence[Settlement], owner: str
    ) -> list[bool]:
        """:meth:`finish` for many messages of *owner* at once: one
        transaction (shared with concurrent calls)."""
        written: list[bool] = await self.run_merged(
            self._finish_merged, [(s, owner) for s in settlements]
        )
        return written

    def _finish_merged(
        self, cursor: Any, calls: list[list[tuple[Settlement, str]]]
    ) -> list[Any]:
        flat = [item for call in calls for item in call]
        done = iter(self._finish_many(cursor, flat))
        return [[next(done) for _ in call] for call in calls]

    def _finish_many(
        self, cursor: Any, items: list[tuple[Settlement, str]]
    ) -> list[bool]:
        now = time.time()
        dumps = json.dumps
        rows = [
            (
                s.job.id,
                owner,
                s.state.value,
                dumps(s.pending) if s.pending else "[]",
                dumps(s.outcomes),
                s.due_at,
                s.attempt,
                s.error,
            )
            for s, owner in items
        ]
        results = [
            (s.job.id, s.attempt, now, *result, s.reply, owner)
            for s, owner in items
            for result in s.results
        ]
        done = self.dialect.write_results(cursor, rows, results, now)
        return [s.job.id in done for s, _ in items]

    async def heartbeat(
        self, owner: str, lease: float, ids: Iterable[int] | None = None
    ) -> int:
        """Extend the leases *owner* holds (those of *ids* only, if given:
        a worker renews the messages it still holds, so that one it let go
        of, e.g. when the store failed at its mark, reaches the end of its
        lease and is taken again); return how many."""
        listed = None if ids is None else list(ids)

        def beat(cursor: Any) -> int:
            statement = (
                "UPDATE asyncmail_outbox SET lease_until = ? WHERE lease_owner "
                "IS NOT NULL AND lease_owner = ? AND state IN ('claimed', "
                "'inflight')"
            )
            params: list[Any] = [time.time() + lease, owner]
            if listed is not None:
                if not listed:
                    return 0
                count = 0
                for chunk in chunks(listed, 500):
                    among, values = self._among("id", chunk)
                    cursor.execute(
                        self.dialect.sql(f"{statement} AND {among}"), [*params, *values]
                    )
                    count += int(cursor.rowcount)
                return count
            cursor.execute(self.dialect.sql(statement), params)
            return int(cursor.rowcount)

        return await self.run(beat)

    async def release(self, owner: str, ids: Iterable[int]) -> None:
        """Give back claims that were not started (a stopping worker)."""
        params = [(owner, ident) for ident in ids]
        if not params:
            return

        def give_back(cursor: Any) -> None:
            cursor.executemany(
                self.dialect.sql(
                    "UPDATE asyncmail_outbox SET state = 'queued', lease_owner = "
                    "NULL, claims = claims - 1 WHERE lease_owner = ? AND id = ? AND "
                    "state = 'claimed'"
                ),
                params,
            )

        await self.run(give_back)

    async def abandon(self, owner: str, ident: int, error: str) -> None:
        """Let go of one claim at once, as if its worker had died (what the
        message becomes is decided at the next claim: queued again, dead
        after ``max_claims``, or unknown if it was in flight)."""

        def drop(cursor: Any) -> None:
            cursor.execute(
                self.dialect.sql(
                    "UPDATE asyncmail_outbox SET lease_until = 0, lease_owner = ?, "
                    "last_error = ? WHERE id = ? AND lease_owner = ? AND state IN "
                    "('claimed', 'inflight')"
                ),
                (f"{owner} (abandoned)", error[:1000], ident, owner),
            )

        await self.run(drop)

    async def recover(self, owner: str, policy: RetryPolicy) -> None:
        """Expire now every lease held by *owner*: a restarted worker that
        reuses its name knows its previous process is gone."""

        def expire(cursor: Any) -> None:
            cursor.execute(
                self.dialect.sql(
                    "UPDATE asyncmail_outbox SET lease_until = 0 WHERE lease_owner "
                    "IS NOT NULL AND lease_owner = ? AND state IN ('claimed', "
                    "'inflight')"
                ),
                (owner,),
            )
            self._expire(cursor, time.time(), policy)

        await self.run(expire)

    async def reserve(self, name: str, rate: float, burst: int, count: int) -> float:
        """Reserve *count* send slots of the shared rate limit *name* (at
        most *rate* a second, bursts of *burst*); return the seconds to wait
        before the first (the others follow every 1/rate seconds).

        One atomic update of one row (a virtual scheduler, GCRA): every
        worker on the store shares it, across processes and machines.
        """
        interval = 1.0 / rate

        def take(cursor: Any) -> float:
            sql = self.dialect.sql
            now = time.time()
            floor = now - (burst - 1) * interval
            cursor.execute(
                sql(
                    "INSERT INTO asyncmail_rate (name, next_at) VALUES (?, ?) "
                    "ON CONFLICT (name) DO NOTHING"
                ),
                (name, floor),
            )
            cursor.execute(
                sql(
                    f"UPDATE asyncmail_rate SET next_at = {self.dialect.greatest}"
                    "(next_at, ?) + ? WHERE name = ? RETURNING next_at"
                ),
                (floor, count * interval, name),
            )
            start = float(cursor.fetchone()[0]) - count * interval
            return max(0.0, start - now)

        return await self.run(take)
