"""What a bulk send writes: the results file (one row per recipient, CSV
or JSON Lines) and the progress (a live bar on a terminal, plain lines
otherwise)."""

from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import anyio

from ..results import MessageResult

RESULT_FIELDS = (
    "row",
    "recipient",
    "outcome",
    "code",
    "enhanced_status",
    "reply",
    "message_id",
)


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
