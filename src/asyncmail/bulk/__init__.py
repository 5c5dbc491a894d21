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
This package reads the rows (off the event loop, a batch at a time, never the
whole file), builds the messages, writes one results row per recipient, and
draws the progress.

The package's modules, one job each: :mod:`.rows` (reading),
:mod:`.templates` (rows to messages), :mod:`.output` (results file and
progress), :mod:`.sending` (the send). Every name is importable from
``asyncmail.bulk`` itself.
"""

from __future__ import annotations

from .output import RESULT_FIELDS, Progress, ResultsFile
from .rows import (
    BATCH,
    BulkError,
    Row,
    RowReader,
    count_rows,
    file_format,
    read_template,
)
from .sending import BulkSend, BulkSummary
from .templates import RECIPIENT_COLUMNS, Templates

__all__ = [
    "BATCH",
    "RECIPIENT_COLUMNS",
    "RESULT_FIELDS",
    "BulkError",
    "BulkSend",
    "BulkSummary",
    "Progress",
    "ResultsFile",
    "Row",
    "RowReader",
    "Templates",
    "count_rows",
    "file_format",
    "read_template",
]
