"""Raw aiosmtplib: one or N connections fed from a shared asyncio.Queue.

Each message is a stdlib ``email.message.EmailMessage`` (default, i.e.
modern, policy) sent with ``send_message()``.  The honest harness (see
_contender.honest_flags): --build fresh constructs each inside the timer,
--build objects before it (serialised by send_message inside it), --build
bytes (or --prebuilt) serialises before it and sends with ``sendmail()``.
Every message has its own recipient; connections open inside the timer.
--input is accepted for symmetry (the queue is filled from either).
--loop picks asyncio or uvloop.
"""

from __future__ import annotations

import asyncio
import email.message
import email.policy
import email.utils
import socket

import aiosmtplib

from _contender import Stopwatch, emit, honest_flags, parser, run, subject
from _shapes import LOOPBACK_BODY, SENDER, recipient

DOMAIN = socket.getfqdn()  # make_msgid() would look it up on every call
Item = int | email.message.EmailMessage | tuple[str, bytes]


def build(i: int) -> email.message.EmailMessage:
    """The loopback message as a stdlib EmailMessage (Date and Message-ID
    included, as Django and fastapi-mail add them)."""
    msg = email.message.EmailMessage()
    msg["Subject"] = subject(i)
    msg["From"] = SENDER
    msg["To"] = recipient(i)
    msg["Date"] = email.utils.formatdate()
    msg["Message-ID"] = email.utils.make_msgid(domain=DOMAIN)
    msg.set_content(LOOPBACK_BODY)
    return msg


async def worker(host: str, port: int, queue: asyncio.Queue[Item]) -> int:
    """One connection: send queued messages until the queue is empty."""
    smtp = aiosmtplib.SMTP(hostname=host, port=port, start_tls=False, timeout=60)
    await smtp.connect()
    accepted = 0
    while True:
        try:
            item = queue.get_nowait()
        except asyncio.QueueEmpty:
            break
        if isinstance(item, tuple):
            await smtp.sendmail(SENDER, [item[0]], item[1])
        else:
            await smtp.send_message(build(item) if isinstance(item, int) else item)
        accepted += 1  # aiosmtplib raises unless the server said 250
    await smtp.quit()
    return accepted


def ready(kind: str, i: int) -> Item:
    if kind == "objects":
        return build(i)
    return recipient(i), build(i).as_bytes(policy=email.policy.SMTP)


async def main_async(
    host: str, port: int, count: int, conns: int, kind: str
) -> tuple[int, Stopwatch]:
    """Fill the queue (building first unless fresh), then time the sending."""
    queue: asyncio.Queue[Item] = asyncio.Queue()
    for i in range(count):
        queue.put_nowait(i if kind == "fresh" else ready(kind, i))
    with Stopwatch() as watch:
        results = await asyncio.gather(
            *(worker(host, port, queue) for _ in range(conns))
        )
    return sum(results), watch


def main() -> None:
    p = parser(__doc__ or "")
    honest_flags(p, builds=("fresh", "objects", "bytes"))
    args = p.parse_args()
    accepted, watch = run(
        main_async(args.host, args.port, args.count, args.connections, args.build),
        args.loop,
    )
    emit(
        f"aiosmtplib {aiosmtplib.__version__} {args.connections} conn {args.loop}"
        f" {args.build}",
        watch,
        sent=args.count,
        accepted=accepted,
        connections=args.connections,
        loop=args.loop,
        build=args.build,
    )


if __name__ == "__main__":
    main()
