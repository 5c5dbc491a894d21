"""asyncmail: the loopback/relay message over N pooled, pipelined connections.

Messages are built inside the timed part, one at a time as the pool takes
them (an EmailMessage each, like Django's loop); with --prebuilt they are
serialised to bytes before the clock starts (as a queue of ready messages
would hold them) and each is wrapped in a RawMessage as the pool takes it,
which measures the send path alone. --loop picks asyncio or uvloop.
"""

from __future__ import annotations

from collections.abc import Iterator

import asyncmail
from _contender import Stopwatch, emit, parser, run, subject
from _shapes import LOOPBACK_BODY, RECIPIENT, SENDER
from asyncmail import EmailMessage, RawMessage


def fresh(count: int) -> Iterator[EmailMessage]:
    for i in range(count):
        yield EmailMessage(subject(i), LOOPBACK_BODY, SENDER, [RECIPIENT])


async def send(args: object, prebuilt: bool) -> tuple[int, Stopwatch]:
    backend = asyncmail.get_connection(
        "asyncmail.backends.smtp.EmailBackend",
        host=args.host,  # type: ignore[attr-defined]
        port=args.port,  # type: ignore[attr-defined]
        max_connections=args.connections,  # type: ignore[attr-defined]
        timeout=120,
    )
    count: int = args.count  # type: ignore[attr-defined]
    messages: Iterator[EmailMessage]
    if prebuilt:
        ready = [message.as_bytes() for message in fresh(count)]
        messages = (RawMessage(data, SENDER, [RECIPIENT]) for data in ready)
    else:
        messages = fresh(count)
    async with backend:  # connect before the clock starts, as the others do
        with Stopwatch() as watch:
            accepted = await backend.send_messages(messages)
    return accepted, watch


def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("--prebuilt", action="store_true")
    args = p.parse_args()
    accepted, watch = run(send(args, args.prebuilt), args.loop)
    kind = ", prebuilt bytes" if args.prebuilt else ""
    emit(
        f"asyncmail, {args.connections} conn, {args.loop}{kind}",
        watch,
        sent=args.count,
        accepted=accepted,
        asyncmail=asyncmail.__version__,
    )


if __name__ == "__main__":
    main()
