"""A TCP delay proxy: 50 ms of round trip on 127.0.0.1, in its own process.

    python benchmarks/delay_proxy.py --upstream HOST:PORT [--delay-ms 25]

This machine's kernel has no netem qdisc, so latency is added here: every
chunk of bytes read from either side is written to the other side
``--delay-ms`` after it arrived (25 ms each way: 50 ms of round trip), in
the order it arrived and as a send of its own (chunk boundaries kept;
TCP_NODELAY on both sockets).  Each direction of each connection has a
reader thread and a writer thread: the writer sleeps with the kernel's
nanosecond timer (an event loop's timers take whole milliseconds through
epoll and came out ~1 ms late per hop, too coarse for a +-2 ms check).

It prints ``port=N`` once listening, and on SIGTERM one JSON line with what
it saw and its own CPU time, so a run can show the proxy was not the
bottleneck:

    connections   accepted client connections
    chunks_up     chunks forwarded client -> server (the client's writes,
                  as far as the kernel kept them apart)
    chunks_down   chunks forwarded server -> client
    turns         times the client spoke after the server had (a client
                  chunk arriving after a server chunk): the round trips the
                  client waited for, session set-up included
    cpu_seconds   the proxy's user + system CPU, all threads

Only the standard library is used.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import resource
import signal
import socket
import threading
import time
from collections.abc import Callable


class Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.connections = 0
        self.chunks_up = 0
        self.chunks_down = 0
        self.turns = 0

    def report(self) -> dict[str, float]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        with self.lock:
            return {
                "connections": self.connections,
                "chunks_up": self.chunks_up,
                "chunks_down": self.chunks_down,
                "turns": self.turns,
                "cpu_seconds": usage.ru_utime + usage.ru_stime,
            }


def forward(
    src: socket.socket, dst: socket.socket, delay: float, seen: Callable[[], None]
) -> None:
    """src -> dst, each chunk delay seconds after it arrived, in order."""
    pending: queue.SimpleQueue[tuple[float, bytes]] = queue.SimpleQueue()

    def writer() -> None:
        try:
            while True:
                due, data = pending.get()
                wait = due - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                if not data:
                    dst.shutdown(socket.SHUT_WR)
                    return
                dst.sendall(data)
        except OSError:
            return

    out = threading.Thread(target=writer, daemon=True)
    out.start()
    try:
        while data := src.recv(262144):
            pending.put((time.monotonic() + delay, data))
            seen()
    except OSError:
        pass
    pending.put((time.monotonic() + delay, b""))
    out.join()


def connection(
    client: socket.socket, upstream: tuple[str, int], delay: float, stats: Stats
) -> None:
    server = socket.create_connection(upstream)
    for s in (client, server):
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    last = ["down"]  # the server speaks first (greeting)

    def up() -> None:
        with stats.lock:
            stats.chunks_up += 1
            if last[0] == "down":
                stats.turns += 1
            last[0] = "up"

    def down() -> None:
        with stats.lock:
            stats.chunks_down += 1
            last[0] = "down"

    back = threading.Thread(
        target=forward, args=(server, client, delay, down), daemon=True
    )
    back.start()
    forward(client, server, delay, up)
    back.join()
    client.close()
    server.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--upstream", required=True, help="HOST:PORT to forward to")
    p.add_argument("--delay-ms", type=float, default=25.0, help="each direction")
    args = p.parse_args()
    host, _, port = args.upstream.rpartition(":")
    upstream, delay = (host, int(port)), args.delay_ms / 1000
    stats = Stats()

    def stop(signum: int, frame: object) -> None:
        print(json.dumps(stats.report()), flush=True)
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    listener = socket.create_server(("127.0.0.1", 0), backlog=128)
    print(f"port={listener.getsockname()[1]}", flush=True)
    while True:
        client, _ = listener.accept()
        with stats.lock:
            stats.connections += 1
        threading.Thread(
            target=connection, args=(client, upstream, delay, stats), daemon=True
        ).start()


if __name__ == "__main__":
    main()
