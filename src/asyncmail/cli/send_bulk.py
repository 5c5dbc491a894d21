"""``asyncmail send-bulk``: a mail merge, one message per row, with
progress, a results file and a clean Ctrl-C (:mod:`asyncmail.bulk` does
the work)."""

from __future__ import annotations

import argparse
import asyncio
import inspect
import os
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from ..exceptions import ConfigurationError
from ..settings import settings
from .common import (
    EXIT_INTERRUPTED,
    EXIT_STATUS,
    _connection_flags,
    _connection_options,
    _Formatter,
)

if TYPE_CHECKING:
    from ..bulk import BulkSend, BulkSummary

BULK_DESCRIPTION = """\
Send one message per row of ROWS (mail merge) through the connection pool.

Every column is a template variable; the 'to' column (--to-column) holds the
recipients, one address or several separated by commas (in JSON Lines, a
string or a list). Values are text only: they are HTML-escaped in the HTML
body, and one that would break a header line is refused for its row.

Progress goes to standard error: a live bar with the rate and ETA on a
terminal, plain lines otherwise. The results file gets one row per
recipient: row, recipient, outcome (accepted, temporary, permanent,
unknown, invalid), code, enhanced_status, reply, message_id.

Ctrl-C stops taking rows, lets the messages in flight finish, writes the
results and says which rows were not sent (resume with --skip); a second
Ctrl-C cuts off the messages in flight (unknown once their data was sent,
else temporary: not delivered)."""


def add_command(commands: Any) -> None:
    """The ``send-bulk`` command and its flags."""
    bulk = commands.add_parser(
        "send-bulk",
        help="mail merge: one message per row of a CSV or JSON Lines file",
        description=BULK_DESCRIPTION,
        epilog=EXIT_STATUS,
        formatter_class=_Formatter,
    )
    bulk.add_argument(
        "rows",
        type=Path,
        metavar="ROWS",
        help="a CSV file (with a header row) or a JSON Lines file, one message a row",
    )
    bulk.add_argument(
        "--format",
        choices=("csv", "jsonl"),
        help="the rows' format (default: from the suffix, .csv or .jsonl)",
    )
    templates = bulk.add_argument_group(
        "templates", "$name or ${name} is the row's value of column name; $$ is $."
    )
    subject = templates.add_mutually_exclusive_group()
    subject.add_argument("--subject", default="", help="the subject template")
    subject.add_argument(
        "--subject-file", type=Path, metavar="PATH", help="the subject template's file"
    )
    text = templates.add_mutually_exclusive_group()
    text.add_argument("--text", help="the text body template")
    text.add_argument(
        "--text-file", type=Path, metavar="PATH", help="the text body template's file"
    )
    html_body = templates.add_mutually_exclusive_group()
    html_body.add_argument(
        "--html", help="the HTML body template (values are HTML-escaped)"
    )
    html_body.add_argument(
        "--html-file", type=Path, metavar="PATH", help="the HTML template's file"
    )
    templates.add_argument(
        "--from",
        dest="from_email",
        metavar="ADDRESS",
        help="the sender (default: DEFAULT_FROM_EMAIL)",
    )
    templates.add_argument(
        "--to-column",
        default="to",
        metavar="NAME",
        help="the column of the To addresses (default: %(default)s); columns "
        "cc and bcc, when present, add those recipients",
    )
    sending = bulk.add_argument_group("sending")
    sending.add_argument(
        "--connections",
        type=int,
        default=4,
        metavar="N",
        help="SMTP connections used at once (default: %(default)s)",
    )
    sending.add_argument(
        "--rate-limit",
        type=float,
        metavar="PER_SECOND",
        help="at most this many messages a second (default: no limit)",
    )
    sending.add_argument(
        "--results",
        type=Path,
        metavar="PATH",
        help="the results file, one row per recipient; .jsonl for JSON Lines, "
        "else CSV (default: ROWS with the suffix .results.csv)",
    )
    sending.add_argument(
        "--skip",
        type=int,
        default=0,
        metavar="N",
        help="skip the first N rows, e.g. to resume an interrupted send "
        "(default: %(default)s)",
    )
    sending.add_argument(
        "--progress-interval",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="when standard error is not a terminal, a progress line this "
        "often (default: %(default)s); a terminal gets a live bar",
    )
    _connection_options(bulk)


async def run(args: argparse.Namespace) -> int:
    from ..api import get_connection
    from ..bulk import (
        BulkSend,
        Progress,
        ResultsFile,
        RowReader,
        Templates,
        count_rows,
        file_format,
        read_template,
    )
    from ..mailers import import_backend

    read = read_template
    path: Path = args.rows
    fmt = file_format(path, args.format)
    results_path: Path = args.results or path.with_suffix(".results.csv")
    subject = await anyio.to_thread.run_sync(read, args.subject, args.subject_file)
    text = await anyio.to_thread.run_sync(read, args.text, args.text_file)
    html = await anyio.to_thread.run_sync(read, args.html, args.html_file)
    templates = Templates.of(
        (subject or "").strip("\r\n"),
        text,
        html,
        from_email=args.from_email,
        to_column=args.to_column,
    )
    rows = await anyio.to_thread.run_sync(count_rows, path, fmt)
    reader = await anyio.to_thread.run_sync(
        lambda: RowReader(path, fmt, skip=args.skip)
    )
    try:
        if reader.columns is not None:
            templates.check_columns(reader.columns, path)
        options = _connection_flags(args)
        backend_path = args.backend or settings.EMAIL_BACKEND
        parameters = inspect.signature(import_backend(backend_path)).parameters
        if "max_connections" in parameters:
            options["max_connections"] = args.connections
        if args.rate_limit is not None:
            options["rate_limit"] = args.rate_limit
        backend = get_connection(backend_path, **options)

        results = ResultsFile(results_path, ResultsFile.format_of(results_path))
        progress = Progress(
            max(rows - reader.skipped, 0),
            sys.stderr,
            sys.stderr.isatty(),
            interval=args.progress_interval,
        )
        job = BulkSend(reader, templates, backend, results, progress)
        summary: BulkSummary = await _interruptible(job)
    finally:
        reader.close()

    messages = summary.sent + summary.failed
    print(
        f"Sent {summary.sent:,} of {messages:,} messages "
        f"({summary.failed:,} not delivered, {summary.invalid:,} invalid rows). "
        f"Results: {results_path}"
    )
    if summary.cut_off:
        print(
            f"{summary.cut_off:,} messages were cut off in flight: their outcome "
            "is unknown (they may have been delivered)."
        )
    if summary.cut_before_sent:
        print(
            f"{summary.cut_before_sent:,} messages were cut off before their data "
            "was sent: not delivered (temporary in the results)."
        )
    if summary.first_not_sent is not None:
        last = summary.first_not_sent + summary.not_sent - 1
        print(
            f"Interrupted: {summary.not_sent:,} rows not sent (rows "
            f"{summary.first_not_sent:,} to {last:,}); resume with "
            f"--skip {summary.first_not_sent - 1}"
        )
        return EXIT_INTERRUPTED
    if job.stopping:
        return EXIT_INTERRUPTED
    return 0 if summary.all_accepted else 1


def check_args(args: argparse.Namespace) -> None:
    """Usage errors of send-bulk that need no file read."""
    if args.skip < 0 or args.connections < 1:
        raise ConfigurationError("--skip must be 0 or more, --connections 1 or more")
    rows = os.path.abspath(args.rows)
    if args.results is not None and os.path.abspath(args.results) == rows:
        raise ConfigurationError("--results must not be the rows file itself")


async def _interruptible(job: BulkSend) -> BulkSummary:
    """Run *job*; Ctrl-C (SIGINT) stops it cleanly instead of killing it.

    Signal handlers belong to the main thread: run elsewhere (e.g. ``main()``
    called from a worker thread), the job runs without one.
    """

    def interrupted() -> None:
        if not job.stopping:
            print(
                "\nStopping: no new messages; finishing those in flight "
                "(Ctrl-C again to cut them off)",
                file=sys.stderr,
                flush=True,
            )
        job.stop()

    if threading.current_thread() is not threading.main_thread():
        return await job.run()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, interrupted)
    try:
        return await job.run()
    finally:
        loop.remove_signal_handler(signal.SIGINT)
