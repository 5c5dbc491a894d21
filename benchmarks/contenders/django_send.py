"""Django's SMTP backend: what users pick today.

With --connections 1, one ``send_messages()`` call over one connection;
with N > 1, N threads each with its own backend connection and its share of
the messages.  Messages are built inside the measured part (Django turns
each EmailMessage into MIME inside send_messages), the way an application
sends them.  Works with Django 5.2 (compat32 MIME classes) and 6.x (modern
email policy): run it under the interpreter that has the version you want.
"""

from __future__ import annotations

import threading
from typing import Any

import django
from django.conf import settings

from _contender import Stopwatch, emit, honest_flags, parser, split, subject
from _shapes import LOOPBACK_BODY, SENDER, recipient


def build(first: int, n: int) -> list[Any]:
    """Messages first .. first+n-1, each to its own recipient."""
    from django.core.mail import EmailMessage

    return [
        EmailMessage(subject(i), LOOPBACK_BODY, SENDER, [recipient(i)])
        for i in range(first, first + n)
    ]


def send_share(
    first: int, n: int, results: list[int], ready: list[Any] | None = None
) -> None:
    """Open one connection and send messages first .. first+n-1 over it
    (built here, inside the timer, unless prebuilt objects are given)."""
    from django.core.mail import get_connection

    connection = get_connection(fail_silently=False)
    messages = build(first, n) if ready is None else ready
    results.append(connection.send_messages(messages) or 0)


def main() -> None:
    p = parser(__doc__ or "")
    honest_flags(p, builds=("fresh", "objects"))
    args = p.parse_args()
    settings.configure(
        EMAIL_BACKEND="django.core.mail.backends.smtp.EmailBackend",
        EMAIL_HOST=args.host,
        EMAIL_PORT=args.port,
        EMAIL_TIMEOUT=60,
    )
    django.setup()
    from django.core.mail.utils import DNS_NAME

    DNS_NAME.get_fqdn()  # resolve the cached host name outside the timing

    results: list[int] = []
    shares = split(args.count, args.connections)
    starts = [sum(shares[:k]) for k in range(len(shares))]
    objects = args.build == "objects"
    pairs = zip(starts, shares, strict=True)
    ready = [build(f, n) if objects else None for f, n in pairs]
    with Stopwatch() as watch:
        if args.connections == 1:
            send_share(0, args.count, results, ready[0])
        else:
            threads = []
            first = 0
            for n, share in zip(shares, ready, strict=True):
                t = threading.Thread(target=send_share, args=(first, n, results, share))
                threads.append(t)
                first += n
            for t in threads:
                t.start()
            for t in threads:
                t.join()
    emit(
        f"django {django.get_version()} {args.connections} conn",
        watch,
        sent=args.count,
        accepted=sum(results),
        connections=args.connections,
        build=args.build,
        django=django.get_version(),
    )


if __name__ == "__main__":
    main()
