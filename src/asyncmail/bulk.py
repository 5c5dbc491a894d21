"""Mail merge for ``asyncmail send-bulk``: rows in, messages out, results kept.

One row of a CSV or JSON Lines file is one message: its recipient columns
(``to``, and ``cc``/``bcc`` when present) address it, and every column is a
template variable. Templates are :class:`string.Template` strings
(``$name`` or ``${name}``; ``$$`` for a dollar sign): the subject, the text
body and an HTML body. Substituted values are text and nothing else: in the
HTML body they are HTML-escaped, and a value that would put a line break in
the subject (a header) is refused by the message's own header checks, so a
row can never add a header.

The sending itself is the library's: the SMTP backend's pool, rate limit and
retries, through :meth:`~asyncmail.backends.base.BaseEmailBackend.stream_results`.
This module reads the rows (off the event loop, a batch at a time, never the
whole file), builds the messages, writes one results row per recipient, and
draws the progress.
"""

from __future__ import annotations

import csv
import html
import itertools
import json
import math
import string
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import anyio

from .address import parse_address_list
from .backends.base import BaseEmailBackend
from .exceptions import MailError
from .message import EmailMessage, EmailMultiAlternatives
from .results import MessageResult

__all__ = [
    "BulkError",
    "BulkSend",
    "BulkSummary",
    "Progress",
    "ResultsFile",
    "Row",
    "RowReader",
    "Templates",
    "count_rows",
]

#: Rows read from the file per trip to a worker thread.
BATCH = 256
RESULT_FIELDS = (
    "row",
    "recipient",
    "outcome",
    "code",
    "enhanced_status",
    "reply",
    "message_id",
)
RECIPIENT_COLUMNS = ("cc", "bcc")


class BulkError(ValueError):
    """Bad input for a bulk send found before sending (a usage error)."""


@dataclass(frozen=True, slots=True)
class Row:
    """One data row: its number (the first data row is 1) and its values,
    or why it could not be read."""

    number: int
    values: dict[str, str]
    error: str | None = None


def file_format(path: Path, given: str | None) -> str:
    """``"csv"`` or ``"jsonl"``: *given*, or from the file name's suffix."""
    if given:
        return given
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    raise BulkError(f"{path}: say --format csv or jsonl (unknown suffix {suffix!r})")


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return ", ".join(_cell(item) for item in value)
    if isinstance(value, (bool, int, float)):
        return json.dumps(value)
    return json.dumps(value, ensure_ascii=False)


class RowReader:
    """The rows of one file, read lazily and in order (blocking: call
    :meth:`batch` from a worker thread)."""

    def __init__(self, path: Path, fmt: str, *, skip: int = 0) -> None:
        self.path = path
        self.format = fmt
        self._file: TextIO = path.open(encoding="utf-8-sig", newline="")
        self.columns: list[str] | None = None
        try:
            self._rows = self._csv() if fmt == "csv" else self._jsonl()
            self.skipped = sum(1 for _ in itertools.islice(self._rows, skip))
        except BaseException:
            self._file.close()
            raise

    def _csv(self) -> Iterator[Row]:
        reader = csv.DictReader(self._file)
        # The header is read now, not on the first row: it is checked first.
        self.columns = [name.strip() for name in reader.fieldnames or []]
        if not self.columns:
            raise BulkError(f"{self.path}: no header row (the column names)")
        return self._csv_rows(reader)

    def _csv_rows(self, reader: csv.DictReader[str]) -> Iterator[Row]:
        for number, record in enumerate(reader, 1):
            extra = record.pop(None, None)
            if extra:
                yield Row(number, {}, "more cells than columns")
                continue
            yield Row(number, {k.strip(): _cell(v) for k, v in record.items() if k})

    def _jsonl(self) -> Iterator[Row]:
        number = 0
        for line in self._file:
            if not line.strip():
                continue
            number += 1
            try:
                record = json.loads(line)
            except ValueError as exc:
                yield Row(number, {}, f"not JSON ({exc})")
                continue
            if not isinstance(record, dict):
                yield Row(number, {}, "not a JSON object")
                continue
            yield Row(number, {str(k): _cell(v) for k, v in record.items()})

    def batch(self) -> list[Row]:
        """The next rows (at most :data:`BATCH`; empty at the end)."""
        return list(itertools.islice(self._rows, BATCH))

    def close(self) -> None:
        self._file.close()


def count_rows(path: Path, fmt: str) -> int:
    """How many data rows *path* has (blocking: a worker thread's job)."""
    with path.open(encoding="utf-8-sig", newline="") as file:
        if fmt == "csv":
            # As csv.DictReader counts them: blank lines are no rows.
            return max(sum(1 for row in csv.reader(file) if row) - 1, 0)
        return sum(1 for line in file if line.strip())


@dataclass(frozen=True, slots=True)
class Templates:
    """The subject, text and HTML templates of a bulk send."""

    subject: string.Template
    text: string.Template | None
    html: string.Template | None
    from_email: str | None = None
    to_column: str = "to"

    @classmethod
    def of(
        cls,
        subject: str,
        text: str | None,
        html_body: str | None,
        *,
        from_email: str | None = None,
        to_column: str = "to",
    ) -> Templates:
        """Check and compile the templates (a :class:`BulkError` says which
        one is malformed)."""
        if text is None and html_body is None:
            raise BulkError("Give a body: --text/--text-file or --html/--html-file")
        compiled: dict[str, string.Template | None] = {}
        for name, source in (("subject", subject), ("text", text), ("html", html_body)):
            if source is None:
                compiled[name] = None
                continue
            template = string.Template(source)
            if not template.is_valid():
                raise BulkError(
                    f"The {name} template has a malformed placeholder: use $name, "
                    "${name} or $$ for a dollar sign"
                )
            compiled[name] = template
        subject_template = compiled["subject"]
        assert subject_template is not None
        return cls(
            subject_template,
            compiled["text"],
            compiled["html"],
            from_email=from_email,
            to_column=to_column,
        )

    @property
    def variables(self) -> set[str]:
        """Every variable the templates use."""
        names: set[str] = set()
        for template in (self.subject, self.text, self.html):
            if template is not None:
                names.update(template.get_identifiers())
        return names

    def check_columns(self, columns: list[str], path: Path) -> None:
        """Refuse, before sending, a template variable or recipient column
        that the file's header does not have."""
        missing = sorted(self.variables - set(columns))
        if missing:
            raise BulkError(
                f"{path} has no column for the template variable(s) "
                f"{', '.join(missing)} (its columns: "
                # repr: a column name is data, never terminal control codes
                f"{', '.join(repr(column) for column in columns)})"
            )
        if self.to_column not in columns:
            raise BulkError(
                f"{path} has no {self.to_column!r} column for the recipients "
                "(choose another with --to-column)"
            )

    def message(self, row: Row) -> EmailMessage:
        """The message for *row* (KeyError: a variable missing in the row;
        a :class:`~asyncmail.exceptions.MailError`: a bad address)."""
        values = row.values
        recipients = values.get(self.to_column, "")
        if not recipients.strip():
            raise BulkError(f"no recipient in the {self.to_column!r} column")
        text = self.text.substitute(values) if self.text is not None else None
        message = EmailMultiAlternatives(
            self.subject.substitute(values),
            text if text is not None else "",
            self.from_email,
            _addresses(recipients, "To"),
            cc=_addresses(values.get("cc", ""), "Cc"),
            bcc=_addresses(values.get("bcc", ""), "Bcc"),
        )
        if self.html is not None:
            escaped = {name: html.escape(value) for name, value in values.items()}
            body = self.html.substitute(escaped)
            if text is None:
                message.body = body
                message.content_subtype = "html"
            else:
                message.attach_alternative(body, "text/html")
        return message


def _addresses(cell: str, header: str) -> list[str]:
    """The addresses of one cell: one, or several separated by commas."""
    if not cell.strip():
        return []
    return [mailbox.as_text() for mailbox in parse_address_list(cell, header)]


@dataclass
class ResultsFile:
    """The results file: one row per recipient of every row, in CSV or JSON
    Lines, buffered and written by a worker thread."""

    path: Path
    format: str
    _file: TextIO | None = None
    _pending: list[dict[str, str]] = field(default_factory=list)
    _csv: Any = None

    FLUSH_EVERY = 1000

    @classmethod
    def format_of(cls, path: Path) -> str:
        return "jsonl" if path.suffix.lower() in (".jsonl", ".ndjson") else "csv"

    async def open(self) -> None:
        self._file = await anyio.to_thread.run_sync(self._open)

    def _open(self) -> TextIO:
        file = self.path.open("w", encoding="utf-8", newline="")
        if self.format == "csv":
            self._csv = csv.DictWriter(file, RESULT_FIELDS)
            self._csv.writeheader()
        return file

    def add(
        self,
        row: int,
        recipient: str,
        outcome: str,
        reply: str = "",
        *,
        code: int | None = None,
        enhanced_status: str | None = None,
        message_id: str | None = None,
    ) -> None:
        self._pending.append(
            {
                "row": str(row),
                "recipient": recipient,
                "outcome": outcome,
                "code": "" if code is None else str(code),
                "enhanced_status": enhanced_status or "",
                "reply": reply,
                "message_id": message_id or "",
            }
        )

    def add_result(self, row: int, result: MessageResult) -> None:
        """One results row per recipient of *result*."""
        if not result.recipients:
            reason = str(result.error) if result.error is not None else ""
            self.add(row, "", result.status.value, reason, message_id=result.message_id)
            return
        for address, recipient in result.recipients.items():
            self.add(
                row,
                address,
                recipient.outcome.value,
                recipient.text or (result.reply if recipient.accepted else ""),
                code=recipient.code,
                enhanced_status=recipient.enhanced_status,
                message_id=result.message_id,
            )

    @property
    def due(self) -> bool:
        return len(self._pending) >= self.FLUSH_EVERY

    async def flush(self) -> None:
        rows, self._pending = self._pending, []
        if rows:
            await anyio.to_thread.run_sync(self._write, rows)

    def _write(self, rows: list[dict[str, str]]) -> None:
        assert self._file is not None
        if self._csv is not None:
            self._csv.writerows(rows)
        else:
            self._file.writelines(
                json.dumps(_typed(row), ensure_ascii=False) + "\n" for row in rows
            )
        self._file.flush()

    async def close(self) -> None:
        await self.flush()
        if self._file is not None:
            await anyio.to_thread.run_sync(self._file.close)


def _typed(row: dict[str, str]) -> dict[str, object]:
    """A results row for JSON: numbers as numbers, no value as null."""
    code = row["code"]
    return {
        **row,
        "row": int(row["row"]),
        "code": int(code) if code else None,
        "enhanced_status": row["enhanced_status"] or None,
        "message_id": row["message_id"] or None,
    }


@dataclass
class Progress:
    """Counts of a bulk send, drawn as a bar on a terminal or as plain lines.

    On a terminal the bar is redrawn in place (carriage return); elsewhere
    (a log, a pipe) a plain line is written every *interval* seconds.
    """

    total: int
    stream: TextIO
    tty: bool
    interval: float = 10.0
    sent: int = 0  # messages accepted for at least one recipient
    failed: int = 0  # messages not delivered to anyone (or maybe: unknown)
    invalid: int = 0  # rows that made no message
    started: float = field(default_factory=time.monotonic)
    _last: float = 0.0
    _width: int = 0

    @property
    def done(self) -> int:
        return self.sent + self.failed + self.invalid

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        rate = self.done / elapsed
        remaining = max(self.total - self.done, 0)
        eta = _clock(remaining / rate) if rate > 0 else "--:--"
        share = self.done / self.total if self.total else 1.0
        counts = f"{self.done:,}/{self.total:,}"
        tail = (
            f"{rate:,.0f} msg/s  ETA {eta}  "
            f"(sent {self.sent:,}, failed {self.failed:,}, invalid {self.invalid:,})"
        )
        if not self.tty:
            return f"progress: {counts} rows ({share:.0%})  {tail}"
        filled = math.floor(share * 24)
        bar = "#" * filled + "." * (24 - filled)
        return f"[{bar}] {counts} {share:4.0%}  {tail}"

    def tick(self, *, force: bool = False) -> None:
        """Redraw if it is time (or *force*)."""
        now = time.monotonic()
        every = 0.1 if self.tty else self.interval
        if not force and now - self._last < every:
            return
        self._last = now
        text = self.line()
        if self.tty:
            padding = " " * max(self._width - len(text), 0)
            self._width = len(text)
            self.stream.write(f"\r{text}{padding}")
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def finish(self) -> None:
        self.tick(force=True)
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def _clock(seconds: float) -> str:
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def read_template(text: str | None, path: Path | None) -> str | None:
    """A template given inline or as a file (blocking)."""
    if path is None:
        return text
    return path.read_text(encoding="utf-8")


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
    #: Messages cut off in flight by a second interrupt (outcome unknown).
    cut_off: int = 0


class BulkSend:
    """One bulk send: rows to messages to the backend, results to the file.

    :meth:`stop` (the first Ctrl-C) stops taking rows and lets the messages
    in flight finish; a second :meth:`stop` cuts them off (recorded as
    unknown: they may have been delivered).
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
        self.results.add_result(number, result)
        if result.sent:
            self.progress.sent += 1
        else:
            self.progress.failed += 1
        if not result.ok:
            self.all_accepted = False
        if self.results.due:
            await self.results.flush()

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
                cut_off = self._cut_off()
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
        )

    def _cut_off(self) -> int:
        """Record the messages still in flight (cut off) as unknown."""
        cut = list(self._in_flight.values())
        self._in_flight.clear()
        for number, message in cut:
            for address in message.recipients():
                self.results.add(
                    number,
                    str(address),
                    "unknown",
                    "interrupted while in flight: it may have been delivered",
                )
        self.progress.failed += len(cut)
        return len(cut)
