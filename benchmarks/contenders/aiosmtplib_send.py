"""Raw aiosmtplib: one or N connections fed from a shared asyncio.Queue.

Each message is a freshly built stdlib ``email.message.EmailMessage``
(default, i.e. modern, policy) sent with ``send_message()``; with
--prebuilt the messages are serialised to bytes before the clock starts and
sent with ``sendmail()``, which measures the transport alone.  --loop picks
asyncio or uvloop.
"""

from __future__ import annotations

import asyncio
import email.message
import email.policy
import email.utils
import socket

import aiosmtplib

from _contender import Stopwatch, emit, parser, run, subject
from _shapes import LOOPBACK_BODY, RECIPIENT, SENDER

DOMAIN = socket.getfqdn()  # make_msgid() would look it up on every call


def build(i: int) -> email.message.EmailMessage:
    """The loopback message as a stdlib EmailMessage (Date and Message-ID
    included, as Django and fastapi-mail add them)."""
    msg = email.message.EmailMessage()
    msg["Subject"] = subject(i)
    msg["From"] = SENDER
    msg["To"] = RECIPIENT
    msg["Date"] = email.utils.formatdate()
    msg["Message-ID"] = email.utils.make_msgid(domain=DOMAIN)
    msg.set_content(LOOPBACK_BODY)
    return msg


async def worker(
    host: str, port: int, queue: asyncio.Queue[int | bytes], prebuilt: bool
) -> int:
    """One connection: send queued messages until the queue is empty."""
    smtp = aiosmtplib.SMTP(hostname=host, port=port, start_tls=False, timeout=60)
    await smtp.connect()
    accepted = 0
    while True:
        try:
            item = queue.get_nowait()
        except asyncio.QueueEmpty:
            break
        if prebuilt:
            assert isinstance(item, bytes)
            await smtp.sendmail(SENDER, [RECIPIENT], item)
        else:
            assert isinstance(item, int)
            await smtp.send_message(build(item))
        accepted += 1  # aiosmtplib raises unless the server said 250
    await smtp.quit()
    return accepted


async def main_async(
    host: str, port: int, count: int, conns: int, prebuilt: bool
) -> tuple[int, Stopwatch]:
    """Fill the queue (serialising first if prebuilt), then time the sending."""
    queue: asyncio.Queue[int | bytes] = asyncio.Queue()
    for i in range(count):
        queue.put_nowait(build(i).as_bytes(policy=email.policy.SMTP) if prebuilt else i)
    with Stopwatch() as watch:
        results = await asyncio.gather(
            *(worker(host, port, queue, prebuilt) for _ in range(conns))
        )
    return sum(results), watch


def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("--prebuilt", action="store_true")
    args = p.parse_args()
    accepted, watch = run(
        main_async(args.host, args.port, args.count, args.connections, args.prebuilt),
        args.loop,
    )
    emit(
        f"aiosmtplib {aiosmtplib.__version__} {args.connections} conn {args.loop}"
        + (" prebuilt" if args.prebuilt else ""),
        watch,
        sent=args.count,
        accepted=accepted,
        connections=args.connections,
        loop=args.loop,
    )


if __name__ == "__main__":
    main()
