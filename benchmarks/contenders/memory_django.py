"""Peak memory of Django sending one message with a big attachment.

The attachment bytes (50 MB by default) are created first; then the peak
RSS counter is reset and the baseline taken, and the measured part builds
the message with ``attach()`` from those bytes and sends it over Django's
SMTP backend.  ``growth_kb`` is the peak RSS during the send minus that
baseline, i.e. what sending costs on top of holding the attachment.
"""

from __future__ import annotations

import gc

import django
from django.conf import settings

from _contender import Stopwatch, emit, parser, peak_kb, reset_peak, rss_kb
from _shapes import (
    BIG_ATTACHMENT_MIMETYPE,
    BIG_ATTACHMENT_NAME,
    BIG_ATTACHMENT_SIZE,
    LOOPBACK_BODY,
    RECIPIENT,
    SENDER,
    big_attachment,
)


def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("--size", type=int, default=BIG_ATTACHMENT_SIZE)
    args = p.parse_args()
    settings.configure(
        EMAIL_BACKEND="django.core.mail.backends.smtp.EmailBackend",
        EMAIL_HOST=args.host,
        EMAIL_PORT=args.port,
        EMAIL_TIMEOUT=120,
    )
    django.setup()
    from django.core.mail import EmailMessage, get_connection
    from django.core.mail.utils import DNS_NAME

    DNS_NAME.get_fqdn()
    data = big_attachment(args.size)
    gc.collect()
    peak_was_reset = reset_peak()
    baseline = rss_kb()
    with Stopwatch() as watch:
        msg = EmailMessage("Big attachment", LOOPBACK_BODY, SENDER, [RECIPIENT])
        msg.attach(BIG_ATTACHMENT_NAME, data, BIG_ATTACHMENT_MIMETYPE)
        accepted = get_connection(fail_silently=False).send_messages([msg]) or 0
    peak = peak_kb()
    emit(
        f"django {django.get_version()} memory",
        watch,
        sent=1,
        accepted=accepted,
        attachment_bytes=args.size,
        baseline_kb=baseline,
        peak_kb=peak,
        growth_kb=peak - baseline,
        peak_was_reset=peak_was_reset,
        django=django.get_version(),
    )


if __name__ == "__main__":
    main()
