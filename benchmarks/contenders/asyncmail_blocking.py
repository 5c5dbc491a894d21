"""asyncmail: blocking send_mail() per call, and the awaited asend_mail()
in one running loop, to the locmem or dummy backend (scenario 5).

The difference between the two is the blocking facade's overhead: handing
the call to the library's event-loop thread and waiting for the result.
"""

from __future__ import annotations

import asyncio

import asyncmail
from _contender import Stopwatch, emit, parser, subject
from _shapes import LOOPBACK_BODY, RECIPIENT, SENDER


def blocking(count: int) -> tuple[int, Stopwatch]:
    asyncmail.send_mail(subject(0), LOOPBACK_BODY, SENDER, [RECIPIENT])  # warm up
    sent = 0
    with Stopwatch() as watch:
        for i in range(count):
            sent += asyncmail.send_mail(subject(i), LOOPBACK_BODY, SENDER, [RECIPIENT])
    return sent, watch


async def awaited(count: int) -> tuple[int, Stopwatch]:
    await asyncmail.asend_mail(subject(0), LOOPBACK_BODY, SENDER, [RECIPIENT])
    sent = 0
    with Stopwatch() as watch:
        for i in range(count):
            sent += await asyncmail.asend_mail(
                subject(i), LOOPBACK_BODY, SENDER, [RECIPIENT]
            )
    return sent, watch


def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("--backend", choices=("locmem", "dummy"), default="locmem")
    p.add_argument("--mode", choices=("blocking", "async"), default="blocking")
    args = p.parse_args()
    asyncmail.configure(EMAIL_BACKEND=f"asyncmail.backends.{args.backend}.EmailBackend")
    if args.mode == "blocking":
        sent, watch = blocking(args.count)
        name = f"asyncmail send_mail, {args.backend}"
    else:
        sent, watch = asyncio.run(awaited(args.count))
        name = f"asyncmail asend_mail (awaited), {args.backend}"
    asyncmail.outbox.clear()
    emit(name, watch, ops=args.count, returned=sent, backend=args.backend)


if __name__ == "__main__":
    main()
