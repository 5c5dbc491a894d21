"""Peak memory of stdlib EmailMessage + aiosmtplib sending a big attachment.

Same protocol as memory_django.py: create the attachment bytes, reset the
peak RSS counter, take the baseline, then build the message with
``add_attachment()`` and send it with ``aiosmtplib.send_message()``.
"""

from __future__ import annotations

import email.message
import gc

import aiosmtplib

from _contender import Stopwatch, emit, parser, peak_kb, reset_peak, rss_kb, run
from _shapes import (
    BIG_ATTACHMENT_MIMETYPE,
    BIG_ATTACHMENT_NAME,
    BIG_ATTACHMENT_SIZE,
    LOOPBACK_BODY,
    RECIPIENT,
    SENDER,
    big_attachment,
)


async def send(host: str, port: int, data: bytes) -> int:
    msg = email.message.EmailMessage()
    msg["Subject"] = "Big attachment"
    msg["From"] = SENDER
    msg["To"] = RECIPIENT
    msg.set_content(LOOPBACK_BODY)
    maintype, subtype = BIG_ATTACHMENT_MIMETYPE.split("/")
    msg.add_attachment(
        data, maintype=maintype, subtype=subtype, filename=BIG_ATTACHMENT_NAME
    )
    async with aiosmtplib.SMTP(
        hostname=host, port=port, start_tls=False, timeout=120
    ) as smtp:
        await smtp.send_message(msg)
    return 1  # send_message raises unless the server accepted it


def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("--size", type=int, default=BIG_ATTACHMENT_SIZE)
    args = p.parse_args()
    data = big_attachment(args.size)
    gc.collect()
    peak_was_reset = reset_peak()
    baseline = rss_kb()
    with Stopwatch() as watch:
        accepted = run(send(args.host, args.port, data), args.loop)
    peak = peak_kb()
    emit(
        f"stdlib+aiosmtplib {aiosmtplib.__version__} memory",
        watch,
        sent=1,
        accepted=accepted,
        attachment_bytes=args.size,
        baseline_kb=baseline,
        peak_kb=peak,
        growth_kb=peak - baseline,
        peak_was_reset=peak_was_reset,
    )


if __name__ == "__main__":
    main()
