"""The rows of a bulk send: CSV or JSON Lines, read a batch at a time (in
a worker thread), never the whole file; one :class:`Row` per data row."""

from __future__ import annotations

import csv
import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

#: Rows read from the file per trip to a worker thread.
BATCH = 256


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


def read_template(text: str | None, path: Path | None) -> str | None:
    """A template given inline or as a file (blocking)."""
    if path is None:
        return text
    return path.read_text(encoding="utf-8")
