"""A TCP delay proxy: 50 ms of round trip on 127.0.0.1, in its own process.

    python benchmarks/delay_proxy.py --upstream HOST:PORT [--delay-ms 25]

This machine's kernel has no netem qdisc, so latency is added here: every
chunk of bytes read from either side is written to the other side
``--delay-ms`` after it arrived (25 ms each way: 50 ms of round trip), in
the order it arrived and as a write of its own (chunk boundaries kept;
TCP_NODELAY on both sockets).  It prints ``port=N`` once listening, and on
SIGTERM one JSON line with what it saw and its own CPU time, so a run can
show that the proxy was not the bottleneck:

    connections   accepted client connections
    chunks_up     chunks forwarded client -> server (the client's writes,
                  as far as the kernel kept them apart)
    chunks_down   chunks forwarded server -> client
    turns         times the client spoke after the server had (a client
                  chunk arriving after a server chunk): the round trips the
                  client waited for, session set-up included
    cpu_seconds   the proxy's user + system CPU

Only the standard library is used.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import resource
import signal
import socket
import sys
from collections.abc import Callable


class Stats:
    def __init__(self) -> None:
        self.connections = 0
        self.chunks_up = 0
        self.chunks_down = 0
        self.turns = 0


async def pump(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    delay: float,
    on_chunk: Callable[[], None],
) -> None:
    """Forward reader -> writer, each chunk delay seconds after it arrived."""
    loop = asyncio.get_running_loop()
    queue: collections.deque[tuple[float, bytes | None]] = collections.deque()
    ready = asyncio.Event()

    async def deliver() -> None:
        while True:
            while not queue:
                ready.clear()
                await ready.wait()
            due, data = queue.popleft()
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if data is None:
                if writer.can_write_eof():
                    writer.write_eof()
                return
            writer.write(data)
            await writer.drain()

    sender = asyncio.create_task(deliver())
    try:
        while True:
            data = await reader.read(262144)
            queue.append((loop.time() + delay, data or None))
            ready.set()
            if not data:
                break
            on_chunk()
        await sender
    except (ConnectionError, OSError):
        sender.cancel()


async def serve(upstream: tuple[str, int], delay: float, stats: Stats) -> None:
    async def handle(c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter):
        stats.connections += 1
        s_reader, s_writer = await asyncio.open_connection(*upstream)
        for w in (c_writer, s_writer):
            w.get_extra_info("socket").setsockopt(
                socket.IPPROTO_TCP, socket.TCP_NODELAY, 1
            )
        last = ["down"]  # the server speaks first (greeting)

        def up() -> None:
            stats.chunks_up += 1
            if last[0] == "down":
                stats.turns += 1
            last[0] = "up"

        def down() -> None:
            stats.chunks_down += 1
            last[0] = "down"

        await asyncio.gather(
            pump(c_reader, s_writer, delay, up),
            pump(s_reader, c_writer, delay, down),
        )
        for w in (c_writer, s_writer):
            w.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    print(f"port={port}", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    server.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--upstream", required=True, help="HOST:PORT to forward to")
    p.add_argument("--delay-ms", type=float, default=25.0, help="each direction")
    args = p.parse_args()
    host, _, port = args.upstream.rpartition(":")
    stats = Stats()
    asyncio.run(serve((host, int(port)), args.delay_ms / 1000, stats))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    report = {**vars(stats), "cpu_seconds": usage.ru_utime + usage.ru_stime}
    print(json.dumps(report), flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
