"""Django's message build cost: ``EmailMessage(...).message().as_bytes()``.

Builds --count messages of one shape from _shapes (plain, html, attachment,
unicode) and serialises each to bytes, the work Django's SMTP backend does
per message.  One untimed warm-up build comes first.  Django 5.2 builds with
its compat32 MIME classes, Django 6.x with the modern email policy: run it
under the interpreter that has the version you want.
"""

from __future__ import annotations

import django
from django.conf import settings

from _contender import Stopwatch, emit, parser
from _shapes import SHAPES, Shape


def build(shape: Shape) -> bytes:
    """One message of this shape, serialised."""
    from django.core.mail import EmailMultiAlternatives

    msg = EmailMultiAlternatives(
        shape.subject, shape.body, shape.from_email, list(shape.to)
    )
    if shape.html is not None:
        msg.attach_alternative(shape.html, "text/html")
    for a in shape.attachments:
        msg.attach(a.filename, a.content, a.mimetype)
    data: bytes = msg.message().as_bytes()
    return data


def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("--shape", choices=sorted(SHAPES), required=True)
    args = p.parse_args()
    settings.configure()
    django.setup()
    shape = SHAPES[args.shape]
    size = len(build(shape))
    with Stopwatch() as watch:
        for _ in range(args.count):
            build(shape)
    emit(
        f"django {django.get_version()} build {shape.name}",
        watch,
        ops=args.count,
        shape=shape.name,
        message_bytes=size,
        django=django.get_version(),
    )


if __name__ == "__main__":
    main()
