"""asyncmail: build and serialise one message of a shape (scenario 3).

The same shapes as the Django and stdlib builders; the output is the wire
form (as_bytes()), which the message-model tests check against the modern
email policy's structure and encodings.
"""

from __future__ import annotations

import asyncmail
from _contender import Stopwatch, emit, parser
from _shapes import SHAPES, Shape
from asyncmail import EmailMultiAlternatives


def build(shape: Shape) -> bytes:
    msg = EmailMultiAlternatives(
        shape.subject, shape.body, shape.from_email, list(shape.to)
    )
    if shape.html is not None:
        msg.attach_alternative(shape.html, "text/html")
    for a in shape.attachments:
        msg.attach(a.filename, a.content, a.mimetype)
    return msg.as_bytes()


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
        f"asyncmail build {shape.name}",
        watch,
        ops=args.count,
        shape=shape.name,
        message_bytes=size,
        asyncmail=asyncmail.__version__,
    )


if __name__ == "__main__":
    main()
