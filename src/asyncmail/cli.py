"""The ``asyncmail`` command: send a message, or run the debug SMTP server.

::

    asyncmail send --to you@example.com --subject Hi --body "Hello"
    asyncmail send --debug-server --to you@example.com --subject Hi --body Hello
    asyncmail debug-server --port 1025
    asyncmail settings

``send`` takes its connection settings from the EMAIL_* environment
variables (Django's names), overridden by flags. With ``--debug-server`` it
starts an embedded debug server on a free local port, sends the message to it
through the real SMTP backend, and prints what the server received: a full
round trip with nothing else installed or running.

Exit status: 0 when every recipient accepted the message, 1 when any did not
(the reason is printed), 2 for a usage or configuration error.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio

from .address import envelope_address
from .exceptions import ConfigurationError, MailError
from .message import EmailMultiAlternatives
from .results import MessageResult
from .settings import settings

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="asyncmail", description="Send e-mail, or run a debug SMTP server."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    send = commands.add_parser("send", help="send one message")
    send.add_argument("--to", action="append", default=[], metavar="ADDRESS")
    send.add_argument("--cc", action="append", default=[], metavar="ADDRESS")
    send.add_argument("--bcc", action="append", default=[], metavar="ADDRESS")
    send.add_argument("--reply-to", action="append", default=[], metavar="ADDRESS")
    send.add_argument(
        "--from",
        dest="from_email",
        metavar="ADDRESS",
        help="sender (default: DEFAULT_FROM_EMAIL)",
    )
    send.add_argument("--subject", default="")
    body = send.add_mutually_exclusive_group()
    body.add_argument("--body", default=None, help="the text body")
    body.add_argument(
        "--body-file",
        type=Path,
        metavar="PATH",
        help="read the text body from a file ('-': standard input)",
    )
    send.add_argument("--html", default=None, help="an HTML alternative of the body")
    send.add_argument(
        "--attach", action="append", default=[], type=Path, metavar="PATH"
    )
    send.add_argument("--header", action="append", default=[], metavar="'NAME: VALUE'")
    server = send.add_argument_group("connection (default: EMAIL_* settings)")
    server.add_argument(
        "--debug-server",
        action="store_true",
        help="send to an embedded debug server and print what it got",
    )
    server.add_argument(
        "--backend", help="dotted path of a backend (default EMAIL_BACKEND)"
    )
    server.add_argument("--host")
    server.add_argument("--port", type=int)
    server.add_argument("--username")
    server.add_argument("--password", help="prefer the EMAIL_HOST_PASSWORD variable")
    tls = server.add_mutually_exclusive_group()
    tls.add_argument("--tls", action="store_true", default=None, help="STARTTLS")
    tls.add_argument("--ssl", action="store_true", default=None, help="implicit TLS")
    server.add_argument("--timeout", type=float)

    debug = commands.add_parser(
        "debug-server", help="run a local SMTP server that prints mail"
    )
    debug.add_argument("--host", default="127.0.0.1")
    debug.add_argument("--port", type=int, default=1025)

    commands.add_parser("settings", help="print the effective settings")
    from .queue.cli import add_commands  # the worker and outbox commands

    add_commands(commands)
    return parser


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
    if args.html:
        message.attach_alternative(args.html, "text/html")
    for path in args.attach:
        await message.aattach_file(path)
    if not message.recipients():
        raise ConfigurationError("Give at least one recipient (--to, --cc or --bcc)")
    # Bad input is a usage error (exit status 2), found before connecting.
    for address in message.recipients():
        envelope_address(address)
    message.render()

    options: dict[str, Any] = {
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
            print(f"Not delivered: {exc}", file=sys.stderr)
    if message.result is not None:
        print(_describe(message.result))
    return 0 if message.result is not None and message.result.ok else 1


async def _debug_server(args: argparse.Namespace) -> int:
    from .server import DebugServer

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


def _run(function: Any, args: argparse.Namespace) -> int:
    options: dict[str, Any] = {}
    with contextlib.suppress(ImportError):
        import uvloop  # noqa: F401

        options["use_uvloop"] = True
    result: int = anyio.run(function, args, backend="asyncio", backend_options=options)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        if getattr(args, "run", None) is not None:
            return int(args.run(args))
        if args.command == "settings":
            for name, value in settings.as_dict().items():
                print(f"{name} = {value!r}")
            return 0
        if args.command == "debug-server":
            try:
                return _run(_debug_server, args)
            except KeyboardInterrupt:
                return 0
        return _run(_send, args)
    except (ConfigurationError, ValueError, OSError) as exc:
        print(f"asyncmail: {exc}", file=sys.stderr)
        return 2
