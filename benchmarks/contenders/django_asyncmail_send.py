"""A Django project sending through asyncmail.django.EmailBackend.

Django's own API, as an application uses it: ``get_connection()`` (here
with asyncmail's ``max_connections`` option: the pool size) and one
``send_messages()`` call with every message, built inside the measured part
as the Django reference (django_send.py) builds them. ``--serializer``
chooses how Django's messages become bytes: asyncmail's serialiser (the
default) or Django's own ``message().as_bytes()``. Run it under the
interpreter that has the Django version to compare with.
"""

from __future__ import annotations

import django
from django.conf import settings

from _contender import Stopwatch, emit, parser, subject
from _shapes import LOOPBACK_BODY, SENDER, recipient


def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("--serializer", choices=("asyncmail", "django"), default="asyncmail")
    args = p.parse_args()
    settings.configure(
        EMAIL_BACKEND="asyncmail.django.EmailBackend",
        EMAIL_HOST=args.host,
        EMAIL_PORT=args.port,
        EMAIL_TIMEOUT=60,
        ASYNCMAIL_SERIALIZER=args.serializer,
    )
    django.setup()
    import warnings

    warnings.simplefilter("ignore")  # Django 6.1's deprecation of get_connection
    from django.core.mail import EmailMessage, get_connection

    connection = get_connection(max_connections=args.connections)
    with Stopwatch() as watch:
        messages = [
            EmailMessage(subject(i), LOOPBACK_BODY, SENDER, [recipient(i)])
            for i in range(args.count)
        ]
        accepted = connection.send_messages(messages)
    emit(
        f"asyncmail.django {args.serializer} serializer, {args.connections} conn, "
        f"django {django.get_version()}",
        watch,
        sent=args.count,
        accepted=accepted,
        connections=args.connections,
        django=django.get_version(),
    )


if __name__ == "__main__":
    main()
