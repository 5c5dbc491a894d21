"""asyncmail: the loopback/relay message over N pooled, pipelined connections.

The honest harness (see _contender.honest_flags): --build fresh constructs
each EmailMessage inside the timer, --build objects constructs them before
it (rendered by the send), --build bytes (or --prebuilt) serialises them
before it and sends RawMessages.  --input list hands send_messages() a list,
--input generator a generator.  Every message has its own recipient, and the
backend is opened inside the timer, as every other contender connects inside
it.  --loop picks asyncio or uvloop.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import asyncmail
from _contender import Stopwatch, drain, emit, honest_flags, parser, run, subject
from _shapes import LOOPBACK_BODY, SENDER, recipient
from asyncmail import EmailMessage, RawMessage


def build(i: int) -> EmailMessage:
    return EmailMessage(subject(i), LOOPBACK_BODY, SENDER, [recipient(i)])


def built(count: int) -> Iterator[EmailMessage]:
    return (build(i) for i in range(count))


def prebuilt(kind: str, count: int) -> list[EmailMessage] | list[RawMessage]:
    """What exists before the timer starts, for --build objects / bytes."""
    if kind == "objects":
        return [build(i) for i in range(count)]
    return [
        RawMessage(build(i).as_bytes(), SENDER, [recipient(i)]) for i in range(count)
    ]


async def send(args: object) -> tuple[int, Stopwatch]:
    backend = asyncmail.get_connection(
        "asyncmail.backends.smtp.EmailBackend",
        host=args.host,  # type: ignore[attr-defined]
        port=args.port,  # type: ignore[attr-defined]
        max_connections=args.connections,  # type: ignore[attr-defined]
        timeout=120,
    )
    count: int = args.count  # type: ignore[attr-defined]
    kind: str = args.build  # type: ignore[attr-defined]
    as_list = args.input == "list"  # type: ignore[attr-defined]
    ready = None if kind == "fresh" else prebuilt(kind, count)
    with Stopwatch() as watch:
        messages: Iterable[EmailMessage | RawMessage]
        if ready is None:
            messages = list(built(count)) if as_list else built(count)
        else:
            messages = ready if as_list else drain(ready)  # type: ignore[arg-type]
        async with backend:  # opened inside the timer, like every contender
            accepted = await backend.send_messages(messages)
    return accepted, watch


def main() -> None:
    p = parser(__doc__ or "")
    honest_flags(p, builds=("fresh", "objects", "bytes"))
    args = p.parse_args()
    accepted, watch = run(send(args), args.loop)
    emit(
        f"asyncmail, {args.connections} conn, {args.loop}, {args.build}, {args.input}",
        watch,
        sent=args.count,
        accepted=accepted,
        asyncmail=asyncmail.__version__,
        build=args.build,
        input=args.input,
    )


if __name__ == "__main__":
    main()
