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

import django
from django.conf import settings

from _contender import Stopwatch, emit, parser, split, subject
from _shapes import LOOPBACK_BODY, RECIPIENT, SENDER


def send_share(first: int, n: int, results: list[int]) -> None:
    """Open one connection and send messages first .. first+n-1 over it."""
    from django.core.mail import EmailMessage, get_connection

    connection = get_connection(fail_silently=False)
    messages = [
        EmailMessage(subject(i), LOOPBACK_BODY, SENDER, [RECIPIENT])
        for i in range(first, first + n)
    ]
    results.append(connection.send_messages(messages) or 0)


def main() -> None:
    args = parser(__doc__ or "").parse_args()
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
    with Stopwatch() as watch:
        if args.connections == 1:
            send_share(0, args.count, results)
        else:
            threads = []
            first = 0
            for n in shares:
                t = threading.Thread(target=send_share, args=(first, n, results))
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
        django=django.get_version(),
    )


if __name__ == "__main__":
    main()
