"""What every ``asyncmail`` command shares: help formatting, exit statuses,
the connection flags, and printing text that came from the network."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..results import MessageResult

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


def _print(text: str, *, file: Any = None) -> None:
    """Print text that may hold data from the network (server replies,
    addresses, error messages) with control characters escaped, so no
    terminal escape sequence reaches the user's terminal (on a pipe too)."""
    from ..server import escape_controls

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
