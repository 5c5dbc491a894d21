"""``asyncmail send``: one message, every recipient's outcome printed."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio

from ..address import envelope_address
from ..exceptions import ConfigurationError, MailError
from ..message import EmailMultiAlternatives
from .common import (
    EXIT_STATUS,
    _connection_flags,
    _connection_options,
    _describe,
    _Formatter,
    _print,
)


def add_command(commands: Any) -> None:
    """The ``send`` command and its flags."""
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


async def run(args: argparse.Namespace) -> int:
    from ..api import get_connection
    from ..server import DebugServer

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
