"""The latency scenario: 50 ms of round trip between client and sink.

    python benchmarks/latency.py [--rounds 3] [--count-1 40] [--count-20 400]
        [--delay-ms 25] [--json out.json]

Every run starts Postfix's smtp-sink and, in front of it, delay_proxy.py
(its own process, 25 ms each way), then runs one contender through the
proxy: smtp-source (C) with 1 and 20 sessions, asyncmail with 1 and 20
connections (fresh messages, a list, asyncio), and an outbox worker with 1
and 20 connections draining messages queued in SQLite before its timer
(each message marked in flight durably before its end of data, its result
recorded).  Before the runs, a
ping-pong through the proxy to an echo server checks that the round trip
really is 50 ms +- 2 ms, and the run stops if it is not.

The rate table is run.py's (median, min-max over interleaved rounds, ratio
to smtp-source 1 session, sink's own count checked against the client's);
a second table gives round trips per message (the proxy's count of times
the client spoke after the server, session set-up included, divided by
the messages) and the proxy's CPU as a share of the run's wall time.
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from _harness import THROUGHPUT, Contender, Measured, run_round, table, write_json
from _sinks import Placement, SinkReport, SmtpSink, ensure_postfix, pinned

HERE = Path(__file__).resolve().parent
PROXY = HERE / "delay_proxy.py"


class Proxy:
    """delay_proxy.py in front of host:port, on the given CPU."""

    def __init__(self, upstream: tuple[str, int], delay_ms: float, cpu: int | None):
        where = f"{upstream[0]}:{upstream[1]}"
        argv = [sys.executable, str(PROXY), "--upstream", where]
        argv += ["--delay-ms", str(delay_ms)]
        self.proc = subprocess.Popen(
            pinned(cpu, argv), stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("port="):
            self.proc.kill()
            raise RuntimeError(f"delay proxy did not start: {line!r}")
        self.port = int(line.split("=")[1])

    def stop(self) -> dict[str, Any]:
        self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=10)
        return dict(json.loads(out.strip().splitlines()[-1]))


class ProxiedSink:
    """smtp-sink behind the delay proxy; keeps each run's proxy report."""

    reports: list[dict[str, Any]] = []  # noqa: RUF012 (one list for the run)

    def __init__(self, placement: Placement, delay_ms: float) -> None:
        self.sink = SmtpSink(placement.sink_cpu)
        self.delay_ms = delay_ms
        self.cpu = placement.sink_cpu
        self.proxy: Proxy | None = None

    def start(self) -> tuple[str, int]:
        upstream = self.sink.start()
        self.proxy = Proxy(upstream, self.delay_ms, self.cpu)
        return "127.0.0.1", self.proxy.port

    def stop(self, expected: int) -> SinkReport:
        assert self.proxy is not None
        ProxiedSink.reports.append(self.proxy.stop())
        return self.sink.stop(expected)


def ping_pong(delay_ms: float, cpu: int | None, pings: int = 20) -> list[float]:
    """Round trips (ms) of one byte through the proxy to an echo server."""
    listener = socket.create_server(("127.0.0.1", 0))

    def echo() -> None:
        conn, _ = listener.accept()
        with conn:
            while data := conn.recv(64):
                conn.sendall(data)

    thread = threading.Thread(target=echo, daemon=True)
    thread.start()
    proxy = Proxy(listener.getsockname()[:2], delay_ms, cpu)
    rtts = []
    with socket.create_connection(("127.0.0.1", proxy.port)) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(pings):
            t0 = time.perf_counter()
            s.sendall(b"x")
            s.recv(64)
            rtts.append((time.perf_counter() - t0) * 1000)
    proxy.stop()
    listener.close()
    return rtts


def contenders(args: argparse.Namespace) -> list[Contender]:
    def script(name: str) -> str:
        return str(HERE / "contenders" / name)

    out = []
    for n, count in ((1, args.count_1), (20, args.count_20)):
        for name, argv in (
            (f"smtp-source (C), {n} sess", (sys.executable, script("smtp_source.py"))),
            (
                f"asyncmail, {n} conn, fresh, list",
                (args.python, script("asyncmail_send.py")),
            ),
            (
                f"asyncmail outbox worker (SQLite), {n} conn",
                (args.python, script("asyncmail_outbox.py")),
            ),
        ):
            out.append(
                Contender(
                    name,
                    (*argv, "--connections", str(n)),
                    "latency",
                    THROUGHPUT,
                    count,
                    "proxied",
                )
            )
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--count-1", type=int, default=40, help="messages, 1 conn")
    p.add_argument("--count-20", type=int, default=400, help="messages, 20 conn")
    p.add_argument("--delay-ms", type=float, default=25.0, help="each direction")
    p.add_argument("--python", default=sys.executable, help="has asyncmail")
    p.add_argument("--json", metavar="PATH")
    args = p.parse_args()
    ensure_postfix()
    placement = Placement.detect()

    rtts = ping_pong(args.delay_ms, placement.sink_cpu)
    rtt = statistics.median(rtts)
    want = 2 * args.delay_ms
    print(
        f"ping-pong through the proxy: median {rtt:.2f} ms, "
        f"min {min(rtts):.2f}, max {max(rtts):.2f} (want {want:g} +- 2)"
    )
    if abs(rtt - want) > 2:
        sys.exit("the delay proxy is off by more than 2 ms: results would lie")

    def sink() -> ProxiedSink:
        return ProxiedSink(placement, args.delay_ms)

    measured = [Measured(c) for c in contenders(args)]
    proxy: dict[str, list[dict[str, Any]]] = {m.contender.name: [] for m in measured}
    for r in range(1, args.rounds + 1):
        for m in measured:
            rnd = run_round(m.contender, {"proxied": sink}, placement)
            m.rounds.append(rnd)
            report = ProxiedSink.reports.pop()
            if rnd.result:
                report["messages"] = rnd.result["accepted"]
                report["seconds"] = rnd.result["seconds"]
            proxy[m.contender.name].append(report)
            rate = THROUGHPUT.value(rnd.result) if rnd.result else None
            shown = f"{rate:,.1f} msg/s" if rate else "FAILED"
            print(f"[round {r}/{args.rounds}] {m.contender.name}: {shown}", flush=True)

    data = table(
        f"latency: {want:g} ms RTT via delay proxy",
        measured,
        "smtp-source (C), 1 sess",
    )
    print("\n| contender | round trips/msg | client writes/msg | proxy CPU % |")
    print("|---|---|---|---|")
    extra = {}
    for name, reports in proxy.items():
        done = [x for x in reports if x.get("messages")]
        turns = [x["turns"] / x["messages"] for x in done]
        writes = [x["chunks_up"] / x["messages"] for x in done]
        cpu = [100 * x["cpu_seconds"] / x["seconds"] for x in done]
        extra[name] = {"turns_per_msg": turns, "writes_per_msg": writes, "cpu": cpu}

        def cell(v: list[float]) -> str:
            return f"{statistics.median(v):.2f}" if v else "-"

        print(f"| {name} | {cell(turns)} | {cell(writes)} | {cell(cpu)} |")
    if args.json:
        meta = {"command": sys.argv, "ping_pong_ms": rtts, "proxy": extra}
        write_json(args.json, meta, [data])
    bad = [p for m in measured for r in m.rounds for p in r.problems]
    if bad:
        sys.exit(f"{len(bad)} bad runs: {bad}")


if __name__ == "__main__":
    main()
