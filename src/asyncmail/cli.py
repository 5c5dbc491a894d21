"""The ``asyncmail`` command: send a message or a mail merge, or run the
debug SMTP server.

::

    asyncmail send --to you@example.com --subject Hi --text "Hello"
    asyncmail send --debug-server --to you@example.com --subject Hi --text Hello
    asyncmail send-bulk rows.csv --subject 'Hi $name' --text-file body.txt
    asyncmail debug-server --port 1025
    asyncmail settings

``send`` and ``send-bulk`` take their connection settings from the EMAIL_*
environment variables (Django's names), overridden by flags. With
``--debug-server``, ``send`` starts an embedded debug server on a free local
port, sends the message to it through the real SMTP backend, and prints what
the server received: a full round trip with nothing else installed or
running. Bare ``asyncmail`` prints the help (exit status 2, as for any other
usage error).

Exit status: 0 when every recipient accepted the message(s), 1 when any did
not (the reason is printed, or in the results file), 2 for a usage or
configuration error, 130 when ``send-bulk`` was interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import inspect
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from .address import envelope_address
from .exceptions import ConfigurationError, MailError
from .message import EmailMultiAlternatives
from .results import MessageResult
from .settings import settings

if TYPE_CHECKING:
    from .bulk import BulkSend, BulkSummary

__all__ = ["main"]


EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it

EXIT_STATUS = """\
exit status: 0 every recipient accepted, 1 some did not, 2 usage or
configuration error, 130 interrupted (send-bulk)"""
EPILOG = EXIT_STATUS + "\n\nRun 'asyncmail COMMAND --help' for a command's options."


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Help that keeps the description's and epilog's line breaks."""


def _connection_options(parser: argparse.ArgumentParser) -> None:
    server = parser.add_argument_group(
        "connection", "Each defaults to its EMAIL_* setting (environment variable)."
    )
    server.add_argument(
        "--backend",
        metavar="DOTTED.PATH",
        help="the backend to send through (default: EMAIL_BACKEND, i.e. SMTP)",
    )
    server.add_argument(
        "--host", help="the SMTP server (default: EMAIL_HOST, localhost)"
    )
    server.add_argument(
        "--port", type=int, help="the SMTP server's port (default: EMAIL_PORT, 25)"
    )
    server.add_argument(
        "--username", help="the AUTH user name (default: EMAIL_HOST_USER, none)"
    )
    server.add_argument(
        "--password",
        help="the AUTH password (default: EMAIL_HOST_PASSWORD; prefer that "
        "variable: a flag is visible in the process list)",
    )
    tls = server.add_mutually_exclusive_group()
    tls.add_argument(
        "--tls",
        action="store_true",
        default=None,
        help="STARTTLS, required (default: EMAIL_USE_TLS, off); usually port 587",
    )
    tls.add_argument(
        "--ssl",
        action="store_true",
        default=None,
        help="implicit TLS (default: EMAIL_USE_SSL, off); usually port 465",
    )
    server.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        help="seconds for each wait on the server (default: EMAIL_TIMEOUT, 60)",
    )


def _parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="asyncmail",
        description="Send e-mail or a mail merge, or run a debug SMTP server.",
        epilog=EPILOG,
        formatter_class=_Formatter,
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {__version__}"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    send = commands.add_parser(
        "send",
        help="send one message",
        description="Send one message and print every recipient's outcome.",
        epilog=EXIT_STATUS,
        formatter_class=_Formatter,
    )
    message = send.add_argument_group("message")
    message.add_argument(
        "--to",
        action="append",
        default=[],
        metavar="ADDRESS",
        help="a To recipient, e.g. 'Ada <ada@example.com>' (repeatable)",
    )
    message.add_argument(
        "--cc", action="append", default=[], metavar="ADDRESS",
        help="a Cc recipient (repeatable)",
    )  # fmt: skip
    message.add_argument(
        "--bcc", action="append", default=[], metavar="ADDRESS",
        help="a Bcc recipient: in the envelope only, never a header (repeatable)",
    )  # fmt: skip
    message.add_argument(
        "--reply-to", action="append", default=[], metavar="ADDRESS",
        help="a Reply-To address (repeatable)",
    )  # fmt: skip
    message.add_argument(
        "--from",
        dest="from_email",
        metavar="ADDRESS",
        help="the sender (default: DEFAULT_FROM_EMAIL)",
    )
    message.add_argument("--subject", default="", help="the subject (default: none)")
    body = message.add_mutually_exclusive_group()
    body.add_argument(
        "--text", "--body", dest="body", default=None, help="the text body"
    )
    body.add_argument(
        "--text-file",
        "--body-file",
        dest="body_file",
        type=Path,
        metavar="PATH",
        help="read the text body from a UTF-8 file ('-': standard input)",
    )
    html = message.add_mutually_exclusive_group()
    html.add_argument("--html", default=None, help="an HTML alternative of the body")
    html.add_argument(
        "--html-file",
        type=Path,
        metavar="PATH",
        help="read the HTML alternative from a UTF-8 file",
    )
    message.add_argument(
        "--attach", action="append", default=[], type=Path, metavar="PATH",
        help="attach a file, its type guessed from its name (repeatable)",
    )  # fmt: skip
    message.add_argument(
        "--header", action="append", default=[], metavar="'NAME: VALUE'",
        help="an extra header, e.g. 'X-Campaign: spring' (repeatable)",
    )  # fmt: skip
    send.add_argument(
        "--debug-server",
        action="store_true",
        help="send to an embedded debug server and print what it received "
        "(ignores the connection settings)",
    )
    _connection_options(send)

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

    debug = commands.add_parser(
        "debug-server",
        help="run a local SMTP server that prints mail",
        description="A local SMTP server that prints every message it "
        "receives and relays nothing (Ctrl-C stops it).",
    )
    debug.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default: %(default)s)",
    )
    debug.add_argument(
        "--port",
        type=int,
        default=1025,
        help="port to listen on; 0 picks a free one (default: %(default)s)",
    )
    # The web inbox (asyncmail/webinbox, the "web" extra).
    debug.add_argument(
        "--web",
        action="store_true",
        help="keep received mail and show it in a web inbox (needs asyncmail[web])",
    )
    debug.add_argument(
        "--web-port",
        type=int,
        default=8025,
        help="the web inbox's HTTP port; 0 picks a free one (default: %(default)s)",
    )
    debug.add_argument(
        "--store",
        metavar="PATH",
        help="keep mail in this SQLite file (default: in memory)",
    )
    debug.add_argument(
        "--max-messages",
        type=int,
        default=1000,
        help="keep at most this many messages, oldest dropped (default: %(default)s)",
    )

    commands.add_parser(
        "settings",
        help="print the effective settings",
        description="Print the effective settings (the password masked).",
    )
    from .queue.cli import add_commands  # the worker and outbox commands

    add_commands(commands)
    return parser


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
Ctrl-C cuts off the messages in flight (their outcome: unknown)."""


def _read_body(args: argparse.Namespace) -> str:
    if args.body_file is None:
        return args.body or ""
    if str(args.body_file) == "-":
        return sys.stdin.read()
    return Path(args.body_file).read_text(encoding="utf-8")


def _headers(values: Sequence[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for value in values:
        name, colon, text = value.partition(":")
        if not colon:
            raise ConfigurationError(f"--header {value!r}: use 'Name: value'")
        headers[name.strip()] = text.strip()
    return headers


def _print(text: str, *, file: Any = None) -> None:
    """Print text that may hold data from the network (server replies,
    addresses, error messages) with control characters escaped, so no
    terminal escape sequence reaches the user's terminal (on a pipe too)."""
    from .server import escape_controls

    print(escape_controls(text), file=file or sys.stdout)


def _describe(result: MessageResult) -> str:
    lines = [f"{result.status.value}: {result.message_id or ''}".rstrip()]
    for address, recipient in result.recipients.items():
        detail = f"{recipient.code or ''} {recipient.text}".strip()
        lines.append(
            f"  {address}: {recipient.outcome.value}"
            + (f" ({detail})" if detail else "")
        )
    return "\n".join(lines)


async def _send(args: argparse.Namespace) -> int:
    from .api import get_connection
    from .server import DebugServer

    message = EmailMultiAlternatives(
        args.subject,
        _read_body(args),
        args.from_email,
        args.to,
        cc=args.cc,
        bcc=args.bcc,
        reply_to=args.reply_to,
        headers=_headers(args.header),
    )
    html = args.html
    if args.html_file is not None:
        html = await anyio.to_thread.run_sync(Path(args.html_file).read_text, "utf-8")
    if html:
        message.attach_alternative(html, "text/html")
    for path in args.attach:
        await message.aattach_file(path)
    if not message.recipients():
        raise ConfigurationError("Give at least one recipient (--to, --cc or --bcc)")
    # Bad input is a usage error (exit status 2), found before connecting.
    for address in message.recipients():
        envelope_address(address)
    message.render()

    options = _connection_flags(args)
    async with contextlib.AsyncExitStack() as stack:
        backend_path = args.backend
        if args.debug_server:
            server = await stack.enter_async_context(DebugServer(port=0))
            print(f"Embedded debug server listening on {server.host}:{server.port}")
            backend_path = "asyncmail.backends.smtp.EmailBackend"
            # A plain local SMTP server: whatever EMAIL_USE_TLS or the
            # credentials in the environment say is for the real relay.
            options.update(
                host=server.host,
                port=server.port,
                use_tls=False,
                use_ssl=False,
                username="",
                password="",
            )
        backend = (
            get_connection(backend_path, **options)
            if (backend_path or options)
            else get_connection()
        )
        try:
            await backend.send_messages([message])
        except MailError as exc:
            _print(f"Not delivered: {exc}", file=sys.stderr)
    if message.result is not None:
        _print(_describe(message.result))
    return 0 if message.result is not None and message.result.ok else 1


async def _debug_server(args: argparse.Namespace) -> int:
    from .server import DebugServer

    if args.web:
        from .webinbox import run_from_cli

        return await run_from_cli(args)

    server = DebugServer(args.host, args.port)
    await server.start()
    where = f"{server.host}:{server.port}"
    print(f"asyncmail debug server listening on {where} (Ctrl-C stops)")
    sys.stdout.flush()
    try:
        await server.serve_forever()
    finally:
        await server.stop()
    return 0


async def _send_bulk(args: argparse.Namespace) -> int:
    from .api import _import_backend, get_connection
    from .bulk import (
        BulkSend,
        Progress,
        ResultsFile,
        RowReader,
        Templates,
        count_rows,
        file_format,
        read_template,
    )

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
        parameters = inspect.signature(_import_backend(backend_path)).parameters
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


def _check_bulk_args(args: argparse.Namespace) -> None:
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


def _connection_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The connection options given as flags (the others: EMAIL_* settings)."""
    return {
        key: value
        for key, value in {
            "host": args.host,
            "port": args.port,
            "username": args.username,
            "password": args.password,
            "use_tls": args.tls,
            "use_ssl": args.ssl,
            "timeout": args.timeout,
        }.items()
        if value is not None
    }


def _run(function: Any, args: argparse.Namespace) -> int:
    options: dict[str, Any] = {}
    with contextlib.suppress(ImportError):
        import uvloop  # noqa: F401

        options["use_uvloop"] = True
    result: int = anyio.run(function, args, backend="asyncio", backend_options=options)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status.

    Bare ``asyncmail`` prints the help and returns 2 (a usage error, as
    argparse reports a missing argument).
    """
    from .bulk import BulkError

    parser = _parser()
    args = parser.parse_args(argv)
    try:
        if args.command is None:
            parser.print_help()
            return 2
        if getattr(args, "run", None) is not None:
            return int(args.run(args))
        if args.command == "settings":
            for name, value in settings.as_dict().items():
                _print(f"{name} = {value!r}")
            return 0
        if args.command == "debug-server":
            try:
                return _run(_debug_server, args)
            except KeyboardInterrupt:
                return 0
        if args.command == "send-bulk":
            _check_bulk_args(args)
            try:
                return _run(_send_bulk, args)
            except KeyboardInterrupt:
                print("asyncmail: interrupted before sending", file=sys.stderr)
                return EXIT_INTERRUPTED
        return _run(_send, args)
    except (ConfigurationError, BulkError, ValueError, OSError) as exc:
        _print(f"asyncmail: {exc}", file=sys.stderr)
        return 2
