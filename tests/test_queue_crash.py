"""Worker processes against a recording SMTP server: ``kill -9`` at random
(seeded) points of a batch of thousands, several workers on one store, a
rate limit shared across processes.

Reconciliation: every message ends sent (the server got it exactly once) or
unknown (reported: the server got it at most once); none is lost, none is
sent twice, no message is claimed by two workers at once.
"""

from __future__ import annotations

import random
import time
from collections import Counter

import anyio
import pytest

import asyncmail
import queuesupport
from asyncmail.queue import State, enqueue, open_store
from queuesupport import (
    counts,
    kill_worker,
    start_worker,
    stop_worker,
    wait_until,
)
from smtpserver import SMTPServer

outbox_url = queuesupport.outbox_url  # the fixture: SQLite and PostgreSQL

SEED = 20261201


def messages(total: int) -> list[asyncmail.EmailMessage]:
    return [
        asyncmail.EmailMessage(
            f"Message {n}", f"Body {n}\n", "sender@example.com", [f"u{n}@example.com"]
        )
        for n in range(total)
    ]


def fill(url: str, total: int) -> None:
    async def put() -> None:
        store = open_store(url)
        batch = messages(total)
        for start in range(0, total, 500):
            await enqueue(store, batch[start : start + 500])

    anyio.run(put)


def unfinished(url: str) -> int:
    found = counts(url)
    return sum(found.get(s, 0) for s in ("queued", "claimed", "inflight"))


def final_states(url: str) -> dict[str, str]:
    async def read() -> dict[str, str]:
        rows = await open_store(url).messages(limit=100_000)
        return {row.recipients[0]: row.state.value for row in rows}

    return anyio.run(read)


def test_kill_minus_9_at_random_points_loses_and_duplicates_nothing(
    outbox_url: str,
) -> None:
    total = 3000
    rng = random.Random(SEED)
    fill(outbox_url, total)
    options = ("--lease", "1", "--poll-interval", "0.1", "--concurrency", "8")
    with SMTPServer() as server:
        kills = 0
        while kills < 5 and unfinished(outbox_url):
            worker = start_worker(outbox_url, server.port, *options)
            time.sleep(rng.uniform(0.1, 0.7))
            kill_worker(worker)
            kills += 1
        survivor = start_worker(outbox_url, server.port, *options)
        try:
            wait_until(lambda: unfinished(outbox_url) == 0, timeout=50)
        finally:
            stop_worker(survivor)
        received = Counter(m.rcpt_tos[0] for m in server.messages)

    states = final_states(outbox_url)
    assert len(states) == total
    assert kills >= 1
    duplicates = {a: n for a, n in received.items() if n > 1}
    assert not duplicates
    for address, state in states.items():
        if state == "sent":
            assert received[address] == 1, address
        else:
            # Killed after the end of data was marked: reported, not resent.
            assert state == "unknown", (address, state)
            assert received[address] <= 1
    assert set(received) <= set(states)

    async def claims() -> int:
        rows = await open_store(outbox_url).messages(limit=total)
        return max(row.claims for row in rows)

    assert anyio.run(claims) >= 2  # the kills did interrupt claimed work


def test_several_worker_processes_never_claim_a_message_twice(
    outbox_url: str,
) -> None:
    total = 900
    fill(outbox_url, total)
    with SMTPServer() as server:
        workers = [
            start_worker(outbox_url, server.port, "--poll-interval", "0.1")
            for _ in range(3)
        ]
        try:
            wait_until(lambda: unfinished(outbox_url) == 0)
        finally:
            outputs = [stop_worker(worker) for worker in workers]
        received = Counter(m.rcpt_tos[0] for m in server.messages)

    assert len(received) == total
    assert set(received.values()) == {1}

    async def claims() -> list[tuple[int, int, State]]:
        rows = await open_store(outbox_url).messages(limit=total)
        return [(row.claims, row.attempts, row.state) for row in rows]

    assert set(anyio.run(claims)) == {(1, 1, State.SENT)}
    delivered = [int(out.rsplit("delivered ", 1)[1].split(",")[0]) for out in outputs]
    assert sum(delivered) == total


def test_rate_limit_holds_across_processes(outbox_url: str) -> None:
    total, rate = 40, 20
    fill(outbox_url, total)
    times: list[float] = []

    class Timed(list):  # type: ignore[type-arg]
        def append(self, item: object) -> None:
            times.append(time.monotonic())
            super().append(item)

    with SMTPServer() as server:
        server.recorder.messages = Timed()
        options = ("--poll-interval", "0.1", "--rate-limit", str(rate))
        workers = [start_worker(outbox_url, server.port, *options) for _ in range(2)]
        try:
            wait_until(lambda: unfinished(outbox_url) == 0)
        finally:
            for worker in workers:
                stop_worker(worker)
    assert len(times) == total
    burst = max(sum(1 for t in times if s <= t < s + 1.0) for s in times)
    assert burst < 1.5 * rate  # one shared limit; two would allow ~2 x rate
    assert times[-1] - times[0] >= (total - 1) / rate * 0.8


@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGINT"])
def test_worker_stops_gracefully_on_signals(tmp_path: object, signal_name: str) -> None:
    import signal

    url = f"sqlite:///{tmp_path}/outbox.db"
    fill(url, 5)
    with SMTPServer() as server:
        server.recorder.stall["DATA"] = 0.5
        worker = start_worker(url, server.port, "--concurrency", "1", "--batch", "5")
        wait_until(lambda: counts(url).get("inflight", 0) == 1)
        worker.send_signal(getattr(signal, signal_name))
        out, err = worker.communicate(timeout=30)
        assert worker.returncode == 0, err
        assert "stopped" in out
    found = counts(url)
    # The message being sent finished; the others went back to the queue.
    assert found.get("sent") == len(server.messages) >= 1
    assert found.get("queued", 0) == 5 - found["sent"]
    assert found.get("claimed", 0) == found.get("inflight", 0) == 0
    store = open_store(url)
    store.close()
