"""The durable outbox's benchmarks (issue #12), ratios in one run.

1. Enqueue cost from a web-handler-like caller: requests arrive concurrently
   (``--handlers`` tasks, each building one message and awaiting the queue
   backend's ``send_messages``), and one at a time (the latency a lone
   request pays). SQLite (synchronous=FULL, the default, and NORMAL) and
   PostgreSQL. The reference is building and rendering the same message
   without storing it.
2. Delivery throughput to Postfix's smtp-sink: the direct pooled send of
   the same prebuilt bytes (10 connections) vs an in-process worker draining
   an SQLite outbox (10 connections); PostgreSQL with 1 and with 2 worker
   processes (``asyncmail worker``), started idle and woken by the
   enqueue's NOTIFY.
3. Recovery after ``kill -9``: a worker process is killed mid-batch and
   restarted; the time from the restart until the sink counts new messages,
   with the same ``--name`` (its claims are taken back at once) and with a
   new one (they wait for their lease).

Run: ``python benchmarks/queue_bench.py [--count 2000] [--rounds 3]`` (root:
smtp-sink runs as nobody; PostgreSQL from /usr/lib/postgresql as nobody).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(ROOT / "tests"), str(ROOT / "src")]

import asyncmail  # noqa: E402
from _sinks import (  # noqa: E402
    Placement,
    RelaySink,
    SmtpSink,
    ensure_postfix,
)
from asyncmail.backends.queue import EmailBackend as QueueBackend  # noqa: E402
from asyncmail.queue import Worker, enqueue, open_store, prepare  # noqa: E402
from asyncmail.queue.model import NewMessage  # noqa: E402
from queuesupport import PostgresCluster, _binaries, reset_postgres  # noqa: E402

BODY = ("Hello from the outbox benchmark. " * 60)[:2000] + "\n"


def message(n: int) -> asyncmail.EmailMessage:
    return asyncmail.EmailMessage(
        f"Benchmark message {n}", BODY, "bench@example.com", [f"r{n}@example.org"]
    )


def median_range(values: list[float]) -> dict[str, float]:
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
    }


# -- 1. enqueue ------------------------------------------------------------------------


async def enqueue_rate(url: str, count: int, handlers: int) -> dict[str, float]:
    backend = QueueBackend(url=url)
    await backend.send_messages([message(-1)])  # open the store, create tables
    numbers = iter(range(count))
    latencies: list[float] = []

    async def handler() -> None:
        for n in numbers:
            started = time.perf_counter()
            await backend.send_messages([message(n)])
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    cpu = time.process_time()
    async with asyncio.TaskGroup() as group:
        for _ in range(handlers):
            group.create_task(handler())
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu
    serial = []
    for n in range(200):
        one = time.perf_counter()
        await backend.send_messages([message(count + n)])
        serial.append(time.perf_counter() - one)
    return {
        "per_second": count / elapsed,
        "cpu_us_per_message": cpu / count * 1e6,
        "concurrent_p50_ms": statistics.median(latencies) * 1e3,
        "lone_request_p50_ms": statistics.median(serial) * 1e3,
    }


def build_rate(count: int) -> dict[str, float]:
    started = time.perf_counter()
    for n in range(count):
        message(n).render(allow_8bit=False)
    return {"per_second": count / (time.perf_counter() - started)}


# -- 2. delivery -----------------------------------------------------------------------


def prebuilt(count: int) -> list[bytes]:
    return [message(n).render(allow_8bit=False).data for n in range(count)]


async def direct(host: str, port: int, data: list[bytes]) -> float:
    backend = asyncmail.get_connection(
        "asyncmail.backends.smtp.EmailBackend",
        host=host,
        port=port,
        max_connections=10,
        timeout=120,
    )
    raws = (
        asyncmail.RawMessage(d, "bench@example.com", [f"r{n}@example.org"])
        for n, d in enumerate(data)
    )
    async with backend:
        started = time.perf_counter()
        sent = await backend.send_messages(raws)
        elapsed = time.perf_counter() - started
    assert sent == len(data)
    return len(data) / elapsed


async def through_sqlite(
    url: str, host: str, port: int, count: int, connections: int = 10
) -> float:
    store = open_store(url)
    for start in range(0, count, 500):
        await enqueue(
            store, [message(n) for n in range(start, min(count, start + 500))]
        )
    backend = asyncmail.get_connection(
        "asyncmail.backends.smtp.EmailBackend",
        host=host,
        port=port,
        max_connections=connections,
        timeout=120,
    )
    async with backend:
        worker = Worker(store, backend=backend, concurrency=connections, batch=100)
        started = time.perf_counter()
        await worker.run(until_idle=True)
        elapsed = time.perf_counter() - started
    assert worker.delivered == count, worker.delivered
    return count / elapsed


def worker_process(url: str, port: int, *options: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "asyncmail",
            "worker",
            "--url",
            url,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--concurrency",
            "10",
            "--batch",
            "100",
            "--poll-interval",
            "0.2",
            *options,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    assert process.stdout is not None
    process.stdout.readline()
    return process


def wait_for(
    predicate: Callable[[], bool], timeout: float = 300, step: float = 0.01
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("the outbox did not drain")
        time.sleep(step)


def postgres_workers(url: str, port: int, count: int, n: int) -> float:
    """Messages a second through *n* idle worker processes, woken by the
    NOTIFY of one bulk insert, until the outbox is drained.

    The messages are rendered before the timer starts (as the SQLite and
    direct contenders' are); the timer covers the insert (one transaction)
    and the delivery, up to the last result written."""
    watcher = _watchers.pop(url, None)
    if watcher is not None:
        watcher.close()  # type: ignore[attr-defined]
    reset_postgres(url)
    asyncio.run(_touch(url))
    workers = [worker_process(url, port) for _ in range(n)]
    time.sleep(0.5)  # listening
    rows = [prepare(message(i)) for i in range(count)]
    started = time.time()
    asyncio.run(_insert(url, rows))
    _insert_seconds.append(time.time() - started)
    wait_for(lambda: _sent(url) >= count, step=0.05)
    # The end is when the last result was written (its updated_at, from the
    # workers' clock on this machine), not when the 50 ms poll noticed it.
    elapsed = _last_settled(url) - started
    for worker in workers:
        worker.terminate()
        worker.wait()
    return count / elapsed


#: Seconds each timed bulk insert took (inside the PostgreSQL timers).
_insert_seconds: list[float] = []


async def _insert(url: str, rows: list[NewMessage]) -> None:
    await open_store(url).insert(rows)


_watchers: dict[str, object] = {}


def _sent(url: str) -> int:
    """Messages sent so far (one kept connection: no fork per look)."""
    import psycopg

    connection = _watchers.get(url)
    if connection is None or connection.closed:  # type: ignore[attr-defined]
        connection = _watchers[url] = psycopg.connect(url, autocommit=True)
    row = connection.execute(  # type: ignore[attr-defined]
        "SELECT COUNT(*) FROM asyncmail_outbox WHERE state = 'sent'"
    ).fetchone()
    return int(row[0]) if row else 0


def _last_settled(url: str) -> float:
    connection = _watchers[url]
    row = connection.execute(  # type: ignore[attr-defined]
        "SELECT MAX(updated_at) FROM asyncmail_outbox WHERE state = 'sent'"
    ).fetchone()
    return float(row[0])


async def _touch(url: str) -> None:
    await open_store(url).counts()


async def _bulk(url: str, rows: list[asyncmail.EmailMessage]) -> None:
    await enqueue(open_store(url), rows)


# -- 3. recovery ----------------------------------------------------------------------


def recovery(url: str, sink: SmtpSink, port: int, same_name: bool) -> float:
    """Seconds from restarting a killed worker until every message the dead
    one had claimed but not sent is delivered (or reported)."""
    asyncio.run(_bulk(url, [message(i) for i in range(2000)]))
    options = ["--name", "bench-worker", "--lease", "5", "--batch", "2000"]
    first = worker_process(url, port, *options)
    start = sink.count()
    wait_for(lambda: sink.count() - start > 300)
    first.kill()
    first.wait()
    stranded = asyncio.run(_held(url, "bench-worker"))
    restarted = time.perf_counter()
    if not same_name:
        options = ["--name", "bench-worker-2", "--lease", "5", "--batch", "2000"]
    second = worker_process(url, port, *options)
    wait_for(lambda: asyncio.run(_held_any(url, stranded)) == 0)
    resumed = time.perf_counter() - restarted
    second.terminate()
    second.wait()
    return resumed


async def _held(url: str, owner: str) -> list[int]:
    from asyncmail.queue import State

    rows = await open_store(url).messages(
        [State.CLAIMED, State.INFLIGHT], limit=100_000
    )
    return [row.id for row in rows if row.lease_owner == owner]


async def _held_any(url: str, ids: list[int]) -> int:
    from asyncmail.queue import State

    rows = await open_store(url).messages(ids=ids, limit=100_000)
    return sum(row.state in (State.CLAIMED, State.INFLIGHT) for row in rows)


def relay_round(
    cluster: PostgresCluster | None,
    work: Path,
    tag: str,
    add: Callable[[str, float], None],
    count: int,
) -> None:
    """The latency-bound case (each reply 10 ms late, as a real relay)."""
    relay = RelaySink(None)
    host, port = relay.start()
    try:
        data = prebuilt(count)
        add("relay: direct pooled send msg/s", asyncio.run(direct(host, port, data)))
        url = f"sqlite:///{work}/relay-{tag}.db"
        add(
            "relay: queue sqlite FULL msg/s",
            asyncio.run(through_sqlite(url, host, port, count, connections=10)),
        )
        if cluster is not None:
            for n in (1, 2):
                add(
                    f"relay: queue postgres {n} worker process(es) msg/s",
                    postgres_workers(cluster.url, port, count, n),
                )
    finally:
        relay.stop(0)


def shared_rate(url: str, rate: float, total: int) -> dict[str, float]:
    """Two worker processes sharing ``--rate-limit``: the achieved rate and
    the most messages a recording server got in any 1 s window."""
    from smtpserver import SMTPServer

    times: list[float] = []

    class Timed(list):  # type: ignore[type-arg]
        def append(self, item: object) -> None:
            times.append(time.monotonic())
            super().append(item)

    asyncio.run(_bulk(url, [message(i) for i in range(total)]))
    with SMTPServer() as server:
        server.recorder.messages = Timed()
        options = ("--rate-limit", str(rate))
        workers = [worker_process(url, server.port, *options) for _ in range(2)]
        wait_for(lambda: len(times) >= total)
        for worker in workers:
            worker.terminate()
            worker.wait()
    burst = max(sum(1 for t in times if s <= t < s + 1.0) for s in times)
    return {
        "achieved msg/s": (total - 1) / (times[-1] - times[0]),
        "max in 1 s": float(burst),
    }


# -- the run ---------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--handlers", type=int, default=50)
    parser.add_argument("--relay-count", type=int, default=600)
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    ensure_postfix()
    placement = Placement.detect()
    work = Path(tempfile.mkdtemp(prefix="asyncmail-queue-bench-"))
    cluster = None
    if _binaries() is not None:
        # Durable (fsync and synchronous commits on, PostgreSQL's defaults),
        # as SQLite runs with synchronous=FULL: what a production outbox pays.
        cluster = PostgresCluster(_binaries(), durable=True)  # type: ignore[arg-type]
        cluster.start()
    results: dict[str, list[float]] = {}

    def add(name: str, value: float) -> None:
        results.setdefault(name, []).append(value)

    try:
        for round_number in range(args.rounds):
            tag = f"r{round_number}"
            add("build+render msg/s", build_rate(args.count)["per_second"])
            for label, query in (("FULL", ""), ("NORMAL", "?synchronous=normal")):
                url = f"sqlite:///{work}/enqueue-{tag}-{label}.db{query}"
                figures = asyncio.run(enqueue_rate(url, args.count, args.handlers))
                for key, value in figures.items():
                    add(f"enqueue sqlite {label} {key}", value)
            if cluster is not None:
                reset_postgres(cluster.url)
                figures = asyncio.run(
                    enqueue_rate(cluster.url, args.count, args.handlers)
                )
                for key, value in figures.items():
                    add(f"enqueue postgres {key}", value)

            data = prebuilt(args.count)
            sink = SmtpSink(placement.sink_cpu)
            host, port = sink.start()
            try:
                add("direct pooled send msg/s", asyncio.run(direct(host, port, data)))
                url = f"sqlite:///{work}/deliver-{tag}.db?synchronous=normal"
                add(
                    "queue sqlite NORMAL msg/s",
                    asyncio.run(through_sqlite(url, host, port, args.count)),
                )
                url = f"sqlite:///{work}/deliver-full-{tag}.db"
                add(
                    "queue sqlite FULL msg/s",
                    asyncio.run(through_sqlite(url, host, port, args.count)),
                )
                url = f"sqlite:///{work}/deliver-20-{tag}.db"
                add(
                    "queue sqlite FULL, 20 connections msg/s",
                    asyncio.run(
                        through_sqlite(url, host, port, args.count, connections=20)
                    ),
                )
                if cluster is not None:
                    for n in (1, 2):
                        add(
                            f"queue postgres {n} worker process(es) msg/s",
                            postgres_workers(cluster.url, port, args.count, n),
                        )
                        add(
                            "postgres bulk insert, inside those timers, s",
                            _insert_seconds[-1],
                        )
                    for same in (True, False):
                        reset_postgres(cluster.url)
                        asyncio.run(_touch(cluster.url))
                        name = "same name" if same else "new name, lease 5 s"
                        add(
                            f"recovery after kill -9 ({name}) s",
                            recovery(cluster.url, sink, port, same),
                        )
            finally:
                sink.stop(0)
            relay_round(cluster, work, tag, add, args.relay_count)
            url = f"sqlite:///{work}/rate-{tag}.db"
            for key, value in shared_rate(url, 50.0, 200).items():
                add(f"rate limit 50/s, 2 processes, sqlite: {key}", value)
            if cluster is not None:
                reset_postgres(cluster.url)
                for key, value in shared_rate(cluster.url, 50.0, 200).items():
                    add(f"rate limit 50/s, 2 processes, postgres: {key}", value)
    finally:
        if cluster is not None:
            cluster.stop()
    report = {name: median_range(values) for name, values in results.items()}

    def ratio(a: str, b: str) -> float:
        return report[a]["median"] / report[b]["median"]

    def paired(a: str, b: str) -> dict[str, float]:
        # Each round's two figures were taken minutes apart at most: their
        # ratio is less exposed to the host's drifting load than a ratio of
        # medians taken over every round.
        rounds = zip(results[a], results[b], strict=True)
        return median_range([x / y for x, y in rounds])

    pairs = {
        "queue sqlite NORMAL / direct": (
            "queue sqlite NORMAL msg/s",
            "direct pooled send msg/s",
        ),
        "queue sqlite FULL / direct": (
            "queue sqlite FULL msg/s",
            "direct pooled send msg/s",
        ),
        "queue sqlite FULL, 20 conns / direct (10 conns)": (
            "queue sqlite FULL, 20 connections msg/s",
            "direct pooled send msg/s",
        ),
        "relay: queue sqlite / direct": (
            "relay: queue sqlite FULL msg/s",
            "relay: direct pooled send msg/s",
        ),
        "enqueue sqlite FULL / build": (
            "enqueue sqlite FULL per_second",
            "build+render msg/s",
        ),
    }
    if cluster is not None:
        pairs["postgres 2 workers / 1 worker"] = (
            "queue postgres 2 worker process(es) msg/s",
            "queue postgres 1 worker process(es) msg/s",
        )
        pairs["relay: postgres 2 workers / 1 worker"] = (
            "relay: queue postgres 2 worker process(es) msg/s",
            "relay: queue postgres 1 worker process(es) msg/s",
        )
        pairs["enqueue postgres / build"] = (
            "enqueue postgres per_second",
            "build+render msg/s",
        )
    ratios = {name: ratio(a, b) for name, (a, b) in pairs.items()}
    by_round = {name: paired(a, b) for name, (a, b) in pairs.items()}
    print(f"placement: {placement.describe()}; {args.rounds} rounds, median (min-max)")
    for name, figures in report.items():
        print(
            f"  {name:58} {figures['median']:10.2f} "
            f"({figures['min']:.2f}-{figures['max']:.2f})"
        )
    print("ratios (of medians, same run):")
    for name, value in ratios.items():
        print(f"  {name:58} {value:10.2f}")
    print("ratios round by round (both figures of each round), median (min-max):")
    for name, figures in by_round.items():
        print(
            f"  {name:58} {figures['median']:10.2f} "
            f"({figures['min']:.2f}-{figures['max']:.2f})"
        )
    if args.json:
        Path(args.json).write_text(
            json.dumps({"figures": report, "ratios": ratios, "by_round": by_round})
        )


if __name__ == "__main__":
    main()
