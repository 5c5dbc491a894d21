"""The bulk send itself: rows to messages to the backend's pooled
``stream_results``, each outcome to the results file and the progress,
and a clean stop (:meth:`BulkSend.stop`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import anyio

from ..backends.base import BaseEmailBackend
from ..exceptions import MailError
from ..message import EmailMessage
from ..results import MessageResult, Outcome
from .output import Progress, ResultsFile
from .rows import Row, RowReader
from .templates import Templates


@dataclass(frozen=True, slots=True)
class BulkSummary:
    """What a bulk send did."""

    rows: int  # data rows in the file after the skipped ones
    sent: int
    failed: int
    invalid: int
    all_accepted: bool  # every recipient of every row accepted
    #: Set when stopped early: the first row not sent and how many were not.
    first_not_sent: int | None = None
    not_sent: int = 0
    #: Messages cut off in flight by a second interrupt: those whose outcome
    #: is unknown (the end of data was written), and those that had not
    #: reached it (not delivered: temporary in the results).
    cut_off: int = 0
    cut_before_sent: int = 0


class BulkSend:
    """One bulk send: rows to messages to the backend, results to the file.

    :meth:`stop` (the first Ctrl-C) stops taking rows and lets the messages
    in flight finish; a second :meth:`stop` cuts them off, each recorded as
    the backend left it (accepted, not sent, or unknown: it may have been
    delivered), or unknown when it left nothing.
    """

    def __init__(
        self,
        reader: RowReader,
        templates: Templates,
        backend: BaseEmailBackend,
        results: ResultsFile,
        progress: Progress,
    ) -> None:
        self.reader = reader
        self.templates = templates
        self.backend = backend
        self.results = results
        self.progress = progress
        self.stopping = False
        self.next_row = reader.skipped + 1  # the first row not yet taken
        self.exhausted = False
        self.all_accepted = True
        self._in_flight: dict[int, tuple[int, EmailMessage]] = {}
        self._scope: anyio.CancelScope | None = None

    def stop(self) -> None:
        """Stop taking rows; called again, cut off the messages in flight."""
        if self.stopping and self._scope is not None:
            self._scope.cancel()
        self.stopping = True

    def _stopped(self) -> bool:
        return self.stopping

    def _invalid(self, row: Row, reason: str) -> None:
        self.results.add(
            row.number, row.values.get(self.templates.to_column, ""), "invalid", reason
        )
        self.progress.invalid += 1
        self.all_accepted = False

    async def _messages(self) -> AsyncIterator[EmailMessage]:
        while not self._stopped():
            batch = await anyio.to_thread.run_sync(self.reader.batch)
            if not batch:
                self.exhausted = True
                return
            for row in batch:
                if self._stopped():  # Ctrl-C while this batch was read
                    return
                self.next_row = row.number + 1
                if row.error is not None:
                    self._invalid(row, row.error)
                    continue
                try:
                    message = self.templates.message(row)
                except KeyError as exc:
                    self._invalid(row, f"no value for the template variable ${exc}")
                    continue
                except (MailError, ValueError) as exc:
                    self._invalid(row, str(exc))
                    continue
                self._in_flight[id(message)] = (row.number, message)
                yield message

    async def _record(self, result: MessageResult) -> None:
        number, _message = self._in_flight.pop(id(result.message))
        self._add(number, result)
        if self.results.due:
            await self.results.flush()

    def _add(self, number: int, result: MessageResult) -> None:
        """Row *number*'s result: to the results file and the counts."""
        self.results.add_result(number, result)
        if result.sent:
            self.progress.sent += 1
        else:
            self.progress.failed += 1
        if not result.ok:
            self.all_accepted = False

    async def _tick(self) -> None:
        while True:
            self.progress.tick()
            await anyio.sleep(0.1)

    async def run(self) -> BulkSummary:
        """Send every row (or until stopped); the results file is complete
        when this returns, whatever happened."""
        await self.results.open()
        try:
            async with anyio.create_task_group() as ticker:
                ticker.start_soon(self._tick)
                with anyio.CancelScope() as scope:
                    self._scope = scope
                    stream = self.backend.stream_results(self._messages())
                    async with stream as results:
                        async for result in results:
                            await self._record(result)
                ticker.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                cut_off, cut_before_sent = self._cut_off()
                self.progress.finish()
                await self.results.close()
                await anyio.to_thread.run_sync(self.reader.close)
        first = None if self.exhausted else self.next_row
        rows = self.progress.total
        not_sent = 0 if first is None else rows - (first - 1 - self.reader.skipped)
        return BulkSummary(
            rows=rows,
            sent=self.progress.sent,
            failed=self.progress.failed,
            invalid=self.progress.invalid,
            all_accepted=self.all_accepted and first is None and not cut_off,
            first_not_sent=first if not_sent else None,
            not_sent=not_sent,
            cut_off=cut_off,
            cut_before_sent=cut_before_sent,
        )

    def _cut_off(self) -> tuple[int, int]:
        """Record the messages still in flight when cut off: each with the
        result its send recorded on it while cancelled (accepted where the
        reply came, unknown where the end of data was written, not sent
        before that), or as unknown if there is none. How many are unknown,
        and how many were cut off before any of their data was delivered."""
        cut = list(self._in_flight.values())
        self._in_flight.clear()
        unknown = before_sent = 0
        for number, message in cut:
            result = message.result
            if result is not None and result.message is message:
                self._add(number, result)
                outcomes = {r.outcome for r in result.recipients.values()}
                if Outcome.UNKNOWN in outcomes:
                    unknown += 1
                elif outcomes <= {Outcome.TEMPORARY}:
                    before_sent += 1
                continue
            for address in message.recipients():
                self.results.add(
                    number,
                    str(address),
                    "unknown",
                    "interrupted while in flight: it may have been delivered",
                )
            self.progress.failed += 1
            self.all_accepted = False
            unknown += 1
        return unknown, before_sent
