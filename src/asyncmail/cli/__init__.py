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

One module per command (:mod:`.send`, :mod:`.send_bulk`,
:mod:`.debug_server`; the queue's commands are :mod:`asyncmail.queue.cli`),
each adding its parser and running it; :mod:`.common` holds what they
share. This module builds the parser and dispatches.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Sequence
from typing import Any

import anyio

from ..exceptions import ConfigurationError
from ..settings import settings
from . import debug_server, send, send_bulk
from .common import EPILOG, EXIT_INTERRUPTED, _Formatter, _print

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    from .. import __version__

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
    send.add_command(commands)
    send_bulk.add_command(commands)
    debug_server.add_command(commands)
    commands.add_parser(
        "settings",
        help="print the effective settings",
        description="Print the effective settings (the password masked).",
    )
    from ..queue.cli import add_commands  # the worker and outbox commands

    add_commands(commands)
    return parser


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
    from ..bulk import BulkError

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
                return _run(debug_server.run, args)
            except KeyboardInterrupt:
                return 0
        if args.command == "send-bulk":
            send_bulk.check_args(args)
            try:
                return _run(send_bulk.run, args)
            except KeyboardInterrupt:
                print("asyncmail: interrupted before sending", file=sys.stderr)
                return EXIT_INTERRUPTED
        return _run(send.run, args)
    except (ConfigurationError, BulkError, ValueError, OSError) as exc:
        _print(f"asyncmail: {exc}", file=sys.stderr)
        return 2
