"""asyncmail: peak RSS growth sending one message with a 50 MB attachment,
from bytes already in memory or from a file on disk (scenario 4).

The baseline is taken after the attachment's bytes (or file) exist and the
backend is connected, as in the Django and stdlib scripts.
"""

from __future__ import annotations

import asyncio
import gc
import os
import tempfile

import asyncmail
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
from asyncmail import EmailMessage


async def send(
    host: str, port: int, source: str, size: int
) -> tuple[int, dict[str, object]]:
    data = big_attachment(size)
    path = None
    if source == "file":
        handle, path = tempfile.mkstemp(suffix=".bin")
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        del data
    backend = asyncmail.get_connection(
        "asyncmail.backends.smtp.EmailBackend", host=host, port=port, timeout=120
    )
    try:
        async with backend:
            await asyncio.sleep(0)
            gc.collect()
            peak_was_reset = reset_peak()
            baseline = rss_kb()
            with Stopwatch() as watch:
                msg = EmailMessage("Big attachment", LOOPBACK_BODY, SENDER, [RECIPIENT])
                if path is None:
                    msg.attach(BIG_ATTACHMENT_NAME, data, BIG_ATTACHMENT_MIMETYPE)
                else:
                    await msg.aattach_file(path, BIG_ATTACHMENT_MIMETYPE)
                accepted = await backend.send_messages([msg])
            peak = peak_kb()
    finally:
        if path is not None:
            os.unlink(path)
    return accepted, {
        "watch": watch,
        "baseline_kb": baseline,
        "peak_kb": peak,
        "growth_kb": peak - baseline,
        "peak_was_reset": peak_was_reset,
    }


def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("--size", type=int, default=BIG_ATTACHMENT_SIZE)
    p.add_argument("--source", choices=("bytes", "file"), default="bytes")
    args = p.parse_args()
    accepted, fields = asyncio.run(send(args.host, args.port, args.source, args.size))
    watch = fields.pop("watch")
    emit(
        f"asyncmail memory, from {args.source}",
        watch,  # type: ignore[arg-type]
        sent=1,
        accepted=accepted,
        attachment_bytes=args.size,
        asyncmail=asyncmail.__version__,
        **fields,
    )


if __name__ == "__main__":
    main()
