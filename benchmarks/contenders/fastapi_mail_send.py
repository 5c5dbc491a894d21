"""fastapi-mail: one list of messages sent over one connection.

``FastMail.send_message()`` accepts a list and sends it over a single
aiosmtplib connection; building the MessageSchema objects is inside the
measured part, as in an application.  It raises on any refusal, so
``accepted`` is the whole list when it returns.
"""

from __future__ import annotations

from importlib.metadata import version

from fastapi_mail import ConnectionConfig, FastMail, MessageSchema, MessageType

from _contender import Stopwatch, emit, parser, run, subject
from _shapes import LOOPBACK_BODY, SENDER, recipient


async def send_all(host: str, port: int, count: int) -> Stopwatch:
    config = ConnectionConfig(
        MAIL_USERNAME="",
        MAIL_PASSWORD="",
        MAIL_FROM=SENDER,
        MAIL_PORT=port,
        MAIL_SERVER=host,
        MAIL_STARTTLS=False,
        MAIL_SSL_TLS=False,
        USE_CREDENTIALS=False,
        VALIDATE_CERTS=False,
        TIMEOUT=60,
    )
    mailer = FastMail(config)
    with Stopwatch() as watch:
        messages = [
            MessageSchema(
                subject=subject(i),
                recipients=[recipient(i)],
                body=LOOPBACK_BODY,
                subtype=MessageType.plain,
            )
            for i in range(count)
        ]
        await mailer.send_message(messages)
    return watch


def main() -> None:
    args = parser(__doc__ or "").parse_args()
    watch = run(send_all(args.host, args.port, args.count), args.loop)
    emit(
        f"fastapi-mail {version('fastapi-mail')} 1 conn {args.loop}",
        watch,
        sent=args.count,
        accepted=args.count,
        connections=1,
        loop=args.loop,
    )


if __name__ == "__main__":
    main()
