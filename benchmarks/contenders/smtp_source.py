"""Postfix's smtp-source (C): the physical limit of the loopback benchmark.

Sends --count messages over --connections parallel sessions (``-s``), each
session keeping its connection open between messages (``-d``), with a
payload sized so the message is about 2 KB like the Python contenders'.
``-N`` numbers each recipient (a distinct one per message).  smtp-source
speaks plain SMTP (HELO) and does no pipelining.  Its ``-c`` counter (one
number per completed DATA, separated by carriage returns) is
the client-side accepted count.
"""

from __future__ import annotations

import re
import shutil
import subprocess

from _contender import Stopwatch, emit, parser
from _shapes import LOOPBACK_SUBJECT, RECIPIENT, SENDER

SMTP_SOURCE = shutil.which("smtp-source") or "/usr/sbin/smtp-source"


def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("--payload", type=int, default=1900, help="-l bytes (~2 KB message)")
    args = p.parse_args()
    argv = [
        SMTP_SOURCE,
        "-c",
        "-d",
        "-N",  # a distinct recipient per message, like the Python contenders
        "-s",
        str(args.connections),
        "-m",
        str(args.count),
        "-l",
        str(args.payload),
        "-f",
        SENDER,
        "-t",
        RECIPIENT,
        "-S",
        LOOPBACK_SUBJECT,
        f"{args.host}:{args.port}",
    ]
    with Stopwatch() as watch:
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    counts = re.findall(r"\d+", proc.stdout)
    accepted = int(counts[-1]) if counts else 0
    extra = {} if proc.returncode == 0 else {"error": proc.stderr.strip()[-500:]}
    emit(
        f"smtp-source (C) {args.connections} sess",
        watch,
        sent=args.count,
        accepted=accepted,
        connections=args.connections,
        **extra,
    )


if __name__ == "__main__":
    main()
