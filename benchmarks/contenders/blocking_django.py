"""Django's blocking ``send_mail()`` per call, to the locmem or dummy backend.

The reference for scenario 5 (blocking-call overhead): what one plain,
synchronous ``send_mail()`` costs when no network is involved.  locmem
builds the message (it calls ``message()`` to validate it) and keeps it in
``mail.outbox``; dummy only counts.  One untimed warm-up call comes first.
"""

from __future__ import annotations

import django
from django.conf import settings

from _contender import Stopwatch, emit, parser, subject
from _shapes import LOOPBACK_BODY, RECIPIENT, SENDER


def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("--backend", choices=("locmem", "dummy"), default="locmem")
    args = p.parse_args()
    settings.configure(
        EMAIL_BACKEND=f"django.core.mail.backends.{args.backend}.EmailBackend"
    )
    django.setup()
    from django.core import mail

    mail.send_mail(subject(0), LOOPBACK_BODY, SENDER, [RECIPIENT])
    sent = 0
    with Stopwatch() as watch:
        for i in range(args.count):
            sent += mail.send_mail(subject(i), LOOPBACK_BODY, SENDER, [RECIPIENT])
    emit(
        f"django {django.get_version()} send_mail {args.backend}",
        watch,
        ops=args.count,
        returned=sent,
        backend=args.backend,
        django=django.get_version(),
    )


if __name__ == "__main__":
    main()
