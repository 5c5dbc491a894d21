"""``asyncmail debug-server``: a local SMTP server that prints (or, with
``--web``, keeps and shows) every message and relays nothing."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add_command(commands: Any) -> None:
    """The ``debug-server`` command and its flags."""
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


async def run(args: argparse.Namespace) -> int:
    from ..server import DebugServer

    if args.web:
        from ..webinbox import run_from_cli

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
