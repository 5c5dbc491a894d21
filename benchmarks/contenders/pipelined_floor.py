"""The pure-Python floor: a minimal pipelined asyncio SMTP client.

It sends the same prebuilt ~2 KB bytes as asyncmail's ``--build bytes``
rows (serialised by asyncmail before the timer, dot-stuffed and framed
here, also before it), each to its own recipient, over N connections that
open inside the timer: per message one write of MAIL+RCPT+DATA, three
replies, one write of the data and its final dot, one reply.  That is all a
client must do for PIPELINING (two round trips per message), with no
timeouts, results or checks beyond the reply codes, so its client CPU per
message is the floor asyncmail's send path is compared with.
"""

from __future__ import annotations

import asyncio

from _contender import Stopwatch, drain, emit, parser, run, split, subject
from _shapes import LOOPBACK_BODY, SENDER, recipient

Job = tuple[bytes, bytes]  # (MAIL+RCPT+DATA, data + final dot)


async def reply(reader: asyncio.StreamReader) -> bytes:
    """One (possibly multi-line) reply; its three-digit code."""
    while True:
        line = await reader.readline()
        if len(line) < 4:
            raise ConnectionError(f"bad reply {line!r}")
        if line[3:4] != b"-":
            return line[:3]


async def connection(host: str, port: int, jobs: list[Job]) -> int:
    reader, writer = await asyncio.open_connection(host, port)
    await reply(reader)
    writer.write(b"EHLO floor.example\r\n")
    await reply(reader)
    accepted = 0
    for envelope, data in drain(jobs):
        writer.write(envelope)
        codes = (await reply(reader), await reply(reader), await reply(reader))
        if codes != (b"250", b"250", b"354"):
            raise ConnectionError(f"envelope refused: {codes}")
        writer.write(data)
        if await reply(reader) == b"250":
            accepted += 1
    writer.write(b"QUIT\r\n")
    await reply(reader)
    writer.close()
    await writer.wait_closed()
    return accepted


def jobs(count: int) -> list[Job]:
    """Prebuilt bytes, as asyncmail renders the message, framed for SMTP."""
    from asyncmail import EmailMessage

    out = []
    for i in range(count):
        rcpt = recipient(i)
        raw = EmailMessage(subject(i), LOOPBACK_BODY, SENDER, [rcpt]).as_bytes()
        lines = raw.replace(b"\r\n", b"\n").split(b"\n")
        body = b"\r\n".join(b"." + ln if ln.startswith(b".") else ln for ln in lines)
        envelope = f"MAIL FROM:<{SENDER}>\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n".encode()
        out.append((envelope, body.rstrip(b"\r\n") + b"\r\n.\r\n"))
    return out


async def main_async(args: object) -> tuple[int, Stopwatch]:
    count: int = args.count  # type: ignore[attr-defined]
    ready = jobs(count)
    shares, first = [], 0
    for n in split(count, args.connections):  # type: ignore[attr-defined]
        shares.append(ready[first : first + n])
        first += n
    del ready
    host, port = args.host, args.port  # type: ignore[attr-defined]
    with Stopwatch() as watch:
        done = await asyncio.gather(*(connection(host, port, s) for s in shares))
    return sum(done), watch


def main() -> None:
    args = parser(__doc__ or "").parse_args()
    accepted, watch = run(main_async(args), args.loop)
    emit(
        f"pipelined floor, {args.connections} conn, {args.loop}",
        watch,
        sent=args.count,
        accepted=accepted,
        connections=args.connections,
        loop=args.loop,
    )


if __name__ == "__main__":
    main()
