"""asyncmail's blocking send_mail() per call inside a configured Django
project (the settings bridge reading Django's settings on every call), and
the awaited asend_mail() in one running loop: the difference is the
blocking facade's overhead per call.

The project's EMAIL_BACKEND is Django's dummy (or locmem) backend, which
the bridge maps to asyncmail's: no network, only the call path.
"""

from __future__ import annotations

import asyncio

import django
from django.conf import settings

from _contender import Stopwatch, emit, parser, subject
from _shapes import LOOPBACK_BODY, RECIPIENT, SENDER


def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("--backend", choices=("locmem", "dummy"), default="dummy")
    p.add_argument("--mode", choices=("blocking", "async"), default="blocking")
    args = p.parse_args()
    settings.configure(
        EMAIL_BACKEND=f"django.core.mail.backends.{args.backend}.EmailBackend",
        DEFAULT_FROM_EMAIL=SENDER,
    )
    django.setup()
    from django.core import mail

    import asyncmail

    def blocking() -> tuple[int, Stopwatch]:
        asyncmail.send_mail(subject(0), LOOPBACK_BODY, None, [RECIPIENT])  # warm up
        sent = 0
        with Stopwatch() as watch:
            for i in range(args.count):
                sent += asyncmail.send_mail(
                    subject(i), LOOPBACK_BODY, None, [RECIPIENT]
                )
        return sent, watch

    async def awaited() -> tuple[int, Stopwatch]:
        await asyncmail.asend_mail(subject(0), LOOPBACK_BODY, None, [RECIPIENT])
        sent = 0
        with Stopwatch() as watch:
            for i in range(args.count):
                sent += await asyncmail.asend_mail(
                    subject(i), LOOPBACK_BODY, None, [RECIPIENT]
                )
        return sent, watch

    if args.mode == "blocking":
        sent, watch = blocking()
        name = f"django project: asyncmail send_mail, {args.backend}"
    else:
        sent, watch = asyncio.run(awaited())
        name = f"django project: asyncmail asend_mail (awaited), {args.backend}"
    outbox = getattr(mail, "outbox", [])
    emit(
        name,
        watch,
        ops=args.count,
        returned=sent,
        backend=args.backend,
        stored=len(outbox),
        django=django.get_version(),
    )


if __name__ == "__main__":
    main()
