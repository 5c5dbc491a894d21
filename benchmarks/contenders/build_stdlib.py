"""The standard library's message build cost (modern ``email.policy``).

Builds --count messages of one shape from _shapes with
``email.message.EmailMessage`` (set_content / add_alternative /
add_attachment) and serialises each with ``policy.SMTP``: the path an
aiosmtplib user takes.  One untimed warm-up build comes first.
"""

from __future__ import annotations

import email.message
import email.policy
import email.utils
import socket

from _contender import Stopwatch, emit, parser
from _shapes import SHAPES, Shape

DOMAIN = socket.getfqdn()  # make_msgid() would look it up on every call


def build(shape: Shape) -> bytes:
    """One message of this shape (with Date and Message-ID, as Django adds)."""
    msg = email.message.EmailMessage()
    msg["Subject"] = shape.subject
    msg["From"] = shape.from_email
    msg["To"] = ", ".join(shape.to)
    msg["Date"] = email.utils.formatdate()
    msg["Message-ID"] = email.utils.make_msgid(domain=DOMAIN)
    msg.set_content(shape.body)
    if shape.html is not None:
        msg.add_alternative(shape.html, subtype="html")
    for a in shape.attachments:
        maintype, subtype = a.mimetype.split("/")
        msg.add_attachment(
            a.content, maintype=maintype, subtype=subtype, filename=a.filename
        )
    return msg.as_bytes(policy=email.policy.SMTP)


def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("--shape", choices=sorted(SHAPES), required=True)
    args = p.parse_args()
    shape = SHAPES[args.shape]
    size = len(build(shape))
    with Stopwatch() as watch:
        for _ in range(args.count):
            build(shape)
    emit(
        f"stdlib build {shape.name}",
        watch,
        ops=args.count,
        shape=shape.name,
        message_bytes=size,
    )


if __name__ == "__main__":
    main()
