"""asyncmail's outbox: messages queued in SQLite (synchronous=FULL), then
delivered by a Worker over N pooled, pipelined connections.

The messages are built and enqueued before the timer (the enqueue has its
own figures in queue_bench.py); inside it the worker claims them, marks each
in flight durably before its end of data, sends it and records its result,
until the outbox is drained. Every message has its own recipient.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import asyncmail
from _contender import Stopwatch, emit, parser, run, subject
from _shapes import LOOPBACK_BODY, SENDER, recipient
from asyncmail.queue import Worker, enqueue, open_store


async def send(args: object) -> tuple[int, Stopwatch]:
    count: int = args.count  # type: ignore[attr-defined]
    connections: int = args.connections  # type: ignore[attr-defined]
    with tempfile.TemporaryDirectory() as work:
        store = open_store(f"sqlite:///{Path(work) / 'outbox.db'}")
        messages = [
            asyncmail.EmailMessage(subject(i), LOOPBACK_BODY, SENDER, [recipient(i)])
            for i in range(count)
        ]
        for start in range(0, count, 500):
            await enqueue(store, messages[start : start + 500])
        backend = asyncmail.get_connection(
            "asyncmail.backends.smtp.EmailBackend",
            host=args.host,  # type: ignore[attr-defined]
            port=args.port,  # type: ignore[attr-defined]
            max_connections=connections,
            timeout=120,
        )
        worker = Worker(store, backend=backend, concurrency=connections)
        with Stopwatch() as watch:
            await worker.run(until_idle=True)  # opens the backend, closes it
        await asyncio.to_thread(store.close)
    return worker.delivered, watch


def main() -> None:
    args = parser(__doc__ or "").parse_args()
    accepted, watch = run(send(args), args.loop)
    emit(
        f"asyncmail outbox worker, {args.connections} conn, {args.loop}",
        watch,
        sent=args.count,
        accepted=accepted,
        asyncmail=asyncmail.__version__,
    )


if __name__ == "__main__":
    main()
