"""The durable outbox on SQLite and PostgreSQL, against a real SMTP server:
what is stored is what the server gets, once; scheduling, priorities,
retries, dead letters, leases, the transactional outbox and the CLI."""

from __future__ import annotations

import base64
import os
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest

import asyncmail
import queuesupport
from asyncmail.backends.queue import EmailBackend as QueueBackend
from asyncmail.backends.smtp import EmailBackend as SMTPBackend
from asyncmail.cli import main
from asyncmail.exceptions import InvalidMessageError
from asyncmail.queue import (
    LeaseLostError,
    QueueError,
    RetryPolicy,
    State,
    Worker,
    enqueue,
    enqueue_in,
    open_store,
)
from smtpserver import SMTPServer

outbox_url = queuesupport.outbox_url  # the fixture: SQLite and PostgreSQL

FAST = RetryPolicy(max_attempts=3, backoff=0.05, backoff_max=0.1)


@pytest.fixture
def anyio_backend() -> object:
    return ("asyncio", {})


@pytest.fixture
def server() -> object:
    with SMTPServer() as running:
        yield running


def smtp(server: SMTPServer, **options: object) -> SMTPBackend:
    return SMTPBackend(
        host="127.0.0.1", port=server.port, timeout=10, max_connections=4, **options
    )


def message(number: int = 0, **options: object) -> asyncmail.EmailMessage:
    return asyncmail.EmailMessage(
        f"Message {number}",
        f"Body {number}\n",
        "sender@example.com",
        [f"user{number}@example.com"],
        **options,
    )


async def drain(url: str, server: SMTPServer, **options: object) -> Worker:
    worker = Worker(url, backend=smtp(server), policy=FAST, **options)
    await worker.run(until_idle=True)
    return worker


async def settled(url: str, ident: int) -> object:
    store = open_store(url)
    with anyio.fail_after(20):
        while True:
            found = await store.get(ident)
            assert found is not None
            if found.state not in (State.QUEUED, State.CLAIMED, State.INFLIGHT):
                return found
            await anyio.sleep(0.02)


def stored_data(url: str, ident: int) -> bytes:
    async def read() -> bytes:
        store = open_store(url)

        def select(cursor: object) -> bytes:
            cursor.execute(  # type: ignore[attr-defined]
                store.dialect.sql(
                    "SELECT d.data FROM asyncmail_data d JOIN asyncmail_outbox o "
                    "ON o.key = d.key WHERE o.id = ?"
                ),
                (ident,),
            )
            return bytes(cursor.fetchone()[0])  # type: ignore[attr-defined]

        return await store.run(select)

    return anyio.run(read)


@pytest.mark.anyio
async def test_the_server_gets_the_stored_bytes_once(
    outbox_url: str, server: SMTPServer
) -> None:
    email = message(1, bcc=["hidden@example.com"], cc=["copy@example.com"])
    email.attach("data.bin", bytes(range(256)) * 4, "application/octet-stream")
    backend = QueueBackend(url=outbox_url)
    assert await backend.send_messages([email]) == 1
    ident = email.outbox_id  # type: ignore[attr-defined]
    assert server.messages == []  # stored, not sent

    worker = await drain(outbox_url, server)

    assert worker.delivered == 1
    [received] = server.messages
    assert received.mail_from == "sender@example.com"
    assert sorted(received.rcpt_tos) == [
        "copy@example.com",
        "hidden@example.com",
        "user1@example.com",
    ]
    stored = await anyio.to_thread.run_sync(stored_data, outbox_url, ident)
    assert received.data == stored
    assert b"hidden@example.com" not in received.data  # Bcc never in the data
    assert base64.b64encode(bytes(range(256)) * 4)[:76] in received.data
    found = await open_store(outbox_url).get(ident)
    assert found is not None
    assert found.state is State.SENT
    assert found.attempts == 1
    results = await open_store(outbox_url).results(ident)
    assert {r.recipient for r in results} == set(received.rcpt_tos)
    assert all(r.outcome == "accepted" and r.code == 250 for r in results)
    assert all("queued" in r.reply for r in results)


@pytest.mark.anyio
async def test_concurrent_deliveries_open_a_closed_backend_once(
    outbox_url: str, server: SMTPServer
) -> None:
    """The worker's deliveries start together on a closed backend: one opens
    it, the others wait for it; none is refused as sent to a closed backend
    (and retried: every message goes on its first attempt)."""
    store = open_store(outbox_url)
    ids = await enqueue(store, [message(n) for n in range(12)])
    backend = smtp(server, retries=0)  # a refused try would show as a retry
    worker = Worker(store, backend=backend, policy=FAST, concurrency=4)
    await worker.run(until_idle=True)
    assert worker.delivered == 12
    assert backend.state.value == "closed"  # opened by the worker, closed by it
    assert len(server.messages) == 12
    for ident in ids:
        found = await store.get(ident)
        assert found is not None
        assert (found.state, found.attempts) == (State.SENT, 1)
        [result] = await store.results(ident)
        assert (result.outcome, result.code) == ("accepted", 250)


def test_a_claimed_message_is_its_stored_bytes_unchecked_again() -> None:
    """What a worker sends: the stored bytes and envelope as they are (they
    were rendered, checked and addressed at enqueue), rendered on the event
    loop unless big, 8-bit content refused for a 7-bit server as a raw
    message's is."""
    from asyncmail.message import RENDER_IN_THREAD, render_is_heavy
    from asyncmail.queue.delivery import ClaimedMessage
    from asyncmail.queue.model import Job

    def job(data: bytes) -> Job:
        return Job(
            1, "k", "a@example.com", ["b@example.com", "c@example.com"],
            ["c@example.com"], data, 1, 0, {}, "<id@example.com>",
        )  # fmt: skip

    data = b"Subject: caf\xc3\xa9\r\nMessage-ID: <id@example.com>\r\n\r\nhi\r\n"
    claimed = ClaimedMessage(job(data))
    rendered = claimed.render()
    assert rendered.data is data
    assert (rendered.eight_bit, rendered.smtputf8) == (False, True)
    assert rendered.message_id == "<id@example.com>"
    assert claimed.envelope() == ("a@example.com", ["c@example.com"])  # pending
    assert not render_is_heavy(claimed)
    assert render_is_heavy(ClaimedMessage(job(b"x" * (RENDER_IN_THREAD + 1))))
    eight_bit = ClaimedMessage(job(b"Subject: x\r\n\r\ncaf\xc3\xa9\r\n"))
    assert eight_bit.render().eight_bit
    with pytest.raises(InvalidMessageError, match="8-bit"):
        eight_bit.render(allow_8bit=False)


def test_a_claimed_message_is_a_raw_message_of_its_stored_envelope() -> None:
    """ClaimedMessage sets RawMessage's attributes itself (no argument
    checks to repeat): it has every one a RawMessage of the same envelope
    has, its recipients are its own list (not the job's), and the message
    API works on it as on any raw message."""
    import copy

    from asyncmail.queue.delivery import ClaimedMessage
    from asyncmail.queue.model import Job

    data = b"Subject: Hi\r\nMessage-ID: <id@example.com>\r\n\r\nBody\r\n"
    pending = ["b@example.com", "c@example.com"]
    job = Job(1, "k", "a@example.com", pending, pending, data, 0, 0, {}, "<id@x>")
    claimed = ClaimedMessage(job)
    raw = asyncmail.RawMessage(data, "a@example.com", pending)
    own = {"_raw_checked", "_raw_envelope"}  # RawMessage's construction caches
    assert set(raw.__dict__) - own <= set(claimed.__dict__)
    for name in set(raw.__dict__) - own:
        assert getattr(claimed, name) == getattr(raw, name), name
    assert claimed.to is not job.pending
    claimed.to.append("d@example.com")
    assert job.pending == ["b@example.com", "c@example.com"]
    assert claimed.recipients() == [*pending, "d@example.com"]
    assert claimed.subject == "Hi"
    assert claimed.message()["Message-ID"] == "<id@example.com>"
    twin = copy.copy(claimed)
    assert twin.render().data is data
    assert twin.envelope() == ("a@example.com", [*pending, "d@example.com"])


@pytest.mark.anyio
async def test_a_claim_gives_the_stored_envelope_and_state_of_each_attempt(
    outbox_url: str, server: SMTPServer
) -> None:
    """A first claim and a later one (after a partial attempt) give the
    recipients, those still pending and the outcomes so far, as stored; each
    job's lists are its own."""
    from asyncmail.queue.model import settle

    store = open_store(outbox_url)
    email = asyncmail.EmailMessage(
        "Hi", "Body", "sender@example.com", ["ok@example.com", "late@example.com"]
    )
    [ident] = await enqueue(store, [email])
    policy = RetryPolicy(backoff=0.0, backoff_max=0.0)
    [job] = await store.claim("w1", 5, 60.0, policy)
    assert (job.id, job.sender, job.attempts) == (ident, "sender@example.com", 0)
    assert job.recipients == job.pending == ["ok@example.com", "late@example.com"]
    assert job.pending is not job.recipients
    assert job.outcomes == {}
    job.pending.append("changed@example.com")  # the job's own list
    assert job.recipients == ["ok@example.com", "late@example.com"]
    job.pending.pop()
    settlement = settle(
        job,
        recipients={
            "ok@example.com": ("accepted", 250, "2.0.0", "ok"),
            "late@example.com": ("temporary", 451, "4.7.1", "later"),
        },
        reply="",
        error="",
        policy=policy,
        now=time.time(),
    )
    assert await store.finish(settlement, "w1")
    [again] = await store.claim("w1", 5, 60.0, policy)
    assert again.recipients == ["ok@example.com", "late@example.com"]
    assert again.pending == ["late@example.com"]
    assert again.outcomes == {"ok@example.com": "accepted"}
    assert again.attempts == 1


@pytest.mark.anyio
async def test_a_message_waiting_its_turn_has_not_started_its_deadline(
    outbox_url: str, server: SMTPServer
) -> None:
    """The worker carries more messages than it has connections (pipelining),
    but takes one only when it may start (as a direct send does): one behind
    a slow message does not spend its deadline waiting for the connection."""
    server.recorder.stall["RCPT"] = 0.35  # each message takes that long
    store = open_store(outbox_url)
    ids = await enqueue(store, [message(n) for n in range(3)])
    backend = SMTPBackend(
        host="127.0.0.1", port=server.port, max_connections=1, deadline=0.6, retries=0
    )
    worker = Worker(store, backend=backend, policy=FAST, concurrency=1)
    await worker.run(until_idle=True)
    assert len(server.messages) == 3
    for ident in ids:
        found = await store.get(ident)
        assert found is not None
        assert (found.state, found.attempts) == (State.SENT, 1)


@pytest.mark.anyio
async def test_idempotency_key_stores_and_sends_once(
    outbox_url: str, server: SMTPServer
) -> None:
    store = open_store(outbox_url)
    first = await enqueue(store, [message(1)], key="order-17")
    again = message(1)
    again.idempotency_key = "order-17"  # type: ignore[attr-defined]
    second = await QueueBackend(url=outbox_url).send_messages([again])
    assert second == 1
    assert again.outbox_id == first[0]  # type: ignore[attr-defined]

    await drain(outbox_url, server)

    assert len(server.messages) == 1
    assert (await store.counts())[State.SENT] == 1


def timed_messages(server: SMTPServer) -> list[float]:
    """Record the wall-clock time each message reaches *server*."""
    times: list[float] = []

    class Timed(list):  # type: ignore[type-arg]
        def append(self, item: object) -> None:
            times.append(time.time())
            super().append(item)

    server.recorder.messages = Timed()
    return times


@pytest.mark.anyio
async def test_scheduled_messages_wait_for_their_time(
    outbox_url: str, server: SMTPServer
) -> None:
    times = timed_messages(server)
    store = open_store(outbox_url)
    later = datetime.now(UTC) + timedelta(hours=1)
    [ident] = await enqueue(store, [message(1)], send_at=later)
    due = time.time() + 0.5
    [soon] = await enqueue(store, [message(2)], send_at=due)

    async with Worker(store, backend=smtp(server), policy=FAST, poll_interval=0.05):
        await settled(outbox_url, soon)

    assert [m.rcpt_tos for m in server.messages] == [["user2@example.com"]]
    assert times[0] >= due  # not before its time, however fast the worker
    waiting = await store.get(ident)
    assert waiting is not None
    assert waiting.state is State.QUEUED
    assert abs(waiting.due_at - later.timestamp()) < 0.01
    assert (await store.get(soon)).state is State.SENT  # type: ignore[union-attr]


@pytest.mark.anyio
async def test_higher_priority_goes_first(outbox_url: str, server: SMTPServer) -> None:
    store = open_store(outbox_url)
    await enqueue(store, [message(n) for n in range(5)])
    await enqueue(store, [message(9)], priority=10)
    backend = smtp(server)
    backend.limits  # noqa: B018 - one connection, one message at a time:
    worker = Worker(store, backend=backend, concurrency=1, batch=1, policy=FAST)
    await worker.run(until_idle=True)
    order = [m.rcpt_tos[0] for m in server.messages]
    assert order == [
        "user9@example.com",
        *(f"user{n}@example.com" for n in range(5)),
    ]


@pytest.mark.anyio
async def test_temporary_refusals_retry_then_dead_letter_then_cli_retry(
    outbox_url: str, server: SMTPServer, capsys: pytest.CaptureFixture[str]
) -> None:
    server.recorder.refuse_rcpt["late@example.com"] = "451 4.7.1 Try again later"
    email = asyncmail.EmailMessage(
        "Hi", "Body", "sender@example.com", ["ok@example.com", "late@example.com"]
    )
    [ident] = await enqueue(open_store(outbox_url), [email])

    async with Worker(
        outbox_url, backend=smtp(server, retries=0), policy=FAST, poll_interval=0.05
    ):
        dead = await settled(outbox_url, ident)

    assert dead.state is State.DEAD  # type: ignore[attr-defined]
    assert dead.attempts == 3  # type: ignore[attr-defined]
    # The accepted recipient got it once; the refused one never.
    assert [m.rcpt_tos for m in server.messages] == [["ok@example.com"]]
    results = await open_store(outbox_url).results(ident)
    assert [(r.attempt, r.recipient, r.outcome, r.code) for r in results] == [
        (1, "ok@example.com", "accepted", 250),
        (1, "late@example.com", "temporary", 451),
        (2, "late@example.com", "temporary", 451),
        (3, "late@example.com", "temporary", 451),
    ]

    status = await anyio.to_thread.run_sync(
        main, ["outbox", "--url", outbox_url, "list", "--state", "dead"]
    )
    assert status == 0
    assert f"{ident:>6} dead" in capsys.readouterr().out

    del server.recorder.refuse_rcpt["late@example.com"]
    status = await anyio.to_thread.run_sync(
        main, ["outbox", "--url", outbox_url, "retry", "--state", "dead"]
    )
    assert status == 0
    assert "queued again: 1" in capsys.readouterr().out

    await drain(outbox_url, server)
    assert [m.rcpt_tos for m in server.messages] == [
        ["ok@example.com"],
        ["late@example.com"],  # only the one still owed the message
    ]
    final = await open_store(outbox_url).get(ident)
    assert final is not None
    assert final.state is State.SENT


@pytest.mark.anyio
async def test_permanent_refusal_fails_without_retry(
    outbox_url: str, server: SMTPServer
) -> None:
    server.recorder.refuse_rcpt["user1@example.com"] = "550 5.1.1 No such user"
    [ident] = await enqueue(open_store(outbox_url), [message(1)])
    await drain(outbox_url, server)
    found = await open_store(outbox_url).get(ident)
    assert found is not None
    assert found.state is State.FAILED
    assert found.attempts == 1
    assert "550" in found.last_error
    [result] = await open_store(outbox_url).results(ident)
    assert (result.outcome, result.code, result.enhanced_status) == (
        "permanent",
        550,
        "5.1.1",
    )


@pytest.mark.anyio
async def test_expired_claim_is_delivered_by_another_worker(
    outbox_url: str, server: SMTPServer
) -> None:
    times = timed_messages(server)
    store = open_store(outbox_url)
    [ident] = await enqueue(store, [message(1)])
    # A worker claims it and dies before sending anything.
    claimed = time.time()
    [job] = await store.claim("dead-worker", 10, 0.5, FAST)

    async with Worker(store, backend=smtp(server), policy=FAST, poll_interval=0.05):
        await settled(outbox_url, ident)

    assert len(server.messages) == 1
    assert times[0] >= claimed + 0.5  # only once the dead worker's lease ran out
    found = await store.get(ident)
    assert found is not None
    assert (found.state, found.claims, found.attempts) == (State.SENT, 2, 1)
    # The dead worker cannot send it any more.
    with pytest.raises(LeaseLostError):
        await store.mark_inflight(job, "dead-worker")


@pytest.mark.anyio
async def test_dying_after_the_end_of_data_leaves_it_unknown(
    outbox_url: str, server: SMTPServer, capsys: pytest.CaptureFixture[str]
) -> None:
    store = open_store(outbox_url)
    [ident] = await enqueue(store, [message(1)])
    [job] = await store.claim("dead-worker", 10, 0.1, FAST)
    await store.mark_inflight(job, "dead-worker")  # then it died
    await anyio.sleep(0.15)

    await drain(outbox_url, server)

    assert server.messages == []  # never resent automatically
    found = await store.get(ident)
    assert found is not None
    assert found.state is State.UNKNOWN
    [result] = await store.results(ident)
    assert result.outcome == "unknown"
    assert "may have been delivered" in result.text
    assert result.worker == "dead-worker"

    # Only an explicit retry sends it again.
    cli = ["outbox", "--url", outbox_url]
    assert await anyio.to_thread.run_sync(main, [*cli, "retry", str(ident)]) == 0
    await drain(outbox_url, server)
    assert len(server.messages) == 1
    capsys.readouterr()
    assert await anyio.to_thread.run_sync(main, [*cli, "show", str(ident)]) == 0
    out = capsys.readouterr().out
    assert "state: sent" in out
    assert "attempt 1" in out
    assert "unknown" in out
    assert "accepted (250" in out


@pytest.mark.anyio
async def test_the_mark_happens_before_the_end_of_data(
    outbox_url: str, server: SMTPServer
) -> None:
    """While the server holds the end-of-data reply, the message is already
    marked in flight in the database."""
    server.recorder.stall["DATA"] = 1.0
    store = open_store(outbox_url)
    [ident] = await enqueue(store, [message(1)])
    seen = []

    async with Worker(store, backend=smtp(server), policy=FAST, poll_interval=0.05):
        with anyio.fail_after(10):
            while not seen or seen[-1] is not State.SENT:
                found = await store.get(ident)
                assert found is not None
                seen.append(found.state)
                await anyio.sleep(0.05)
    assert State.INFLIGHT in seen
    assert len(server.messages) == 1


@pytest.mark.anyio
async def test_stopping_gives_back_unstarted_claims(
    outbox_url: str, server: SMTPServer
) -> None:
    server.recorder.stall["DATA"] = 0.3
    store = open_store(outbox_url)
    await enqueue(store, [message(n) for n in range(10)])
    worker = Worker(store, backend=smtp(server), concurrency=1, batch=10)
    async with worker:
        with anyio.fail_after(10):
            while not server.messages:  # noqa: ASYNC110 - another thread's list
                await anyio.sleep(0.02)
    # Stopped: the message being sent finished; the rest are free for others.
    counts = await store.counts()
    assert counts[State.CLAIMED] == counts[State.INFLIGHT] == 0
    assert counts[State.SENT] == len(server.messages) >= 1
    assert counts[State.QUEUED] == 10 - counts[State.SENT]
    queued = await store.messages([State.QUEUED])
    assert all(m.claims == 0 for m in queued)


def test_transactional_outbox_with_sqlite3(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    url = f"sqlite:///{path}"
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY)")

    connection.execute("BEGIN")
    connection.execute("INSERT INTO orders DEFAULT VALUES")
    enqueue_in(connection, [message(1)])
    connection.execute("ROLLBACK")  # the order failed: no mail

    connection.execute("BEGIN")
    connection.execute("INSERT INTO orders DEFAULT VALUES")
    enqueue_in(connection, [message(2)], key="order-2")
    connection.execute("COMMIT")
    connection.close()

    async def check() -> None:
        store = open_store(url)
        [stored] = await store.messages()
        assert stored.recipients == ["user2@example.com"]
        assert stored.key == "order-2"
        store.close()

    anyio.run(check)


def test_transactional_outbox_with_psycopg(request: pytest.FixtureRequest) -> None:
    from queuesupport import postgres_cluster, reset_postgres

    url = postgres_cluster(request.config).url
    reset_postgres(url)
    import psycopg

    open_store(url).run_sync(lambda cursor: None)  # the tables exist
    with psycopg.connect(url) as connection:
        with connection.transaction(force_rollback=True):
            enqueue_in(connection, [message(1)])
        with connection.transaction():
            enqueue_in(connection, [message(2)])

    async def with_async() -> None:
        async with await psycopg.AsyncConnection.connect(url) as connection:
            async with connection.transaction(force_rollback=True):
                await asyncmail.queue.aenqueue_in(connection, [message(3)])
            async with connection.transaction():
                await asyncmail.queue.aenqueue_in(connection, [message(4)])
        stored = await open_store(url).messages()
        assert [m.recipients for m in stored] == [
            ["user2@example.com"],
            ["user4@example.com"],
        ]

    anyio.run(with_async)
    reset_postgres(url)


@pytest.mark.anyio
async def test_rate_limit_is_shared_by_workers(
    outbox_url: str, server: SMTPServer
) -> None:
    times: list[float] = []

    class Timed(list):  # type: ignore[type-arg]
        def append(self, item: object) -> None:
            times.append(time.monotonic())
            super().append(item)

    server.recorder.messages = Timed()
    store = open_store(outbox_url)
    total, rate = 30, 20.0
    await enqueue(store, [message(n) for n in range(total)])
    started = time.monotonic()
    async with anyio.create_task_group() as group:
        for _ in range(2):
            worker = Worker(store, backend=smtp(server), rate_limit=rate, policy=FAST)
            group.start_soon(lambda w=worker: w.run(until_idle=True))
    elapsed = time.monotonic() - started
    assert len(server.messages) == total
    burst = max(sum(1 for t in times if s <= t < s + 1.0) for s in times)
    # One limit for both workers: two limits would let ~2 x rate through.
    # (Not rate + 1 exactly: a loaded machine delays some sends more than
    # others, which bunches arrivals a little.)
    assert burst < 1.5 * rate
    assert elapsed >= (total - 1) / rate * 0.9  # both workers shared one limit


@pytest.mark.anyio
async def test_streamed_attachment_is_stored_and_sent(
    outbox_url: str, server: SMTPServer, tmp_path: Path
) -> None:
    blob = os.urandom((1 << 20) + 12345)
    path = tmp_path / "big.bin"
    path.write_bytes(blob)
    email = message(1)
    await email.aattach_file(path)
    assert email.render().streamed
    [ident] = await enqueue(open_store(outbox_url), [email])
    path.unlink()  # stored: the file is no longer needed
    await drain(outbox_url, server)
    [received] = server.messages
    assert base64.b64encode(blob[: 57 * 100]) in received.data.replace(b"\r\n", b"")
    assert (await open_store(outbox_url).get(ident)).state is State.SENT  # type: ignore[union-attr]


@pytest.mark.anyio
async def test_bad_input_is_refused_at_enqueue(outbox_url: str) -> None:
    store = open_store(outbox_url)
    with pytest.raises(InvalidMessageError, match="no recipients"):
        await enqueue(store, [asyncmail.EmailMessage("s", "b", "a@example.com", [])])
    with pytest.raises(InvalidMessageError, match="timezone-aware"):
        await enqueue(store, [message(1)], send_at=datetime(2030, 1, 1))
    with pytest.raises(InvalidMessageError, match="over the outbox's limit"):
        await enqueue(store, [message(1)], max_size=10)
    with pytest.raises(InvalidMessageError, match="idempotency key"):
        await enqueue(store, [message(1)], key="")
    with pytest.raises(ValueError, match=r"newline|line break|header"):
        await enqueue(store, [message(1, headers={"X-A": "a\r\nBcc: x@example.com"})])
    with pytest.raises(QueueError, match="Unknown outbox URL"):
        open_store("mysql://localhost/x")
    assert sum((await store.counts()).values()) == 0


def test_blocking_send_through_the_queue_backend(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'outbox.db'}"
    with QueueBackend(url=url) as connection:
        assert connection.send_messages([message(1), message(2)]) == 2
    assert (
        asyncmail.send_mail(
            "Hi",
            "Body",
            "a@example.com",
            ["b@example.com"],
            connection=QueueBackend(url=url),
        )
        == 1
    )

    async def count() -> int:
        return (await open_store(url).counts())[State.QUEUED]

    assert anyio.run(count) == 3


@pytest.mark.anyio
async def test_status_and_purge_from_the_cli(
    outbox_url: str, server: SMTPServer, capsys: pytest.CaptureFixture[str]
) -> None:
    await enqueue(open_store(outbox_url), [message(n) for n in range(3)])
    await drain(outbox_url, server)
    capsys.readouterr()
    assert (
        await anyio.to_thread.run_sync(main, ["outbox", "--url", outbox_url, "status"])
        == 0
    )
    assert "sent      3" in capsys.readouterr().out
    assert (
        await anyio.to_thread.run_sync(
            main, ["outbox", "--url", outbox_url, "purge", "--state", "sent"]
        )
        == 0
    )
    assert "purged: 3" in capsys.readouterr().out
    assert sum((await open_store(outbox_url).counts()).values()) == 0
    assert (
        await anyio.to_thread.run_sync(
            main, ["outbox", "--url", outbox_url, "purge", "--state", "queued"]
        )
        == 2
    )


class _BrokenSMTP(SMTPBackend):
    """The SMTP backend with a bug before anything is written."""

    async def deliver(self, message: asyncmail.EmailMessage) -> object:
        raise RuntimeError("backend bug")


class _BrokenOther(asyncmail.backends.base.BaseEmailBackend):
    """A backend without the end-of-data hook, failing with a bug."""

    async def deliver(self, message: asyncmail.EmailMessage) -> object:
        raise RuntimeError("backend bug")


@pytest.mark.anyio
async def test_a_crashing_backend_dead_letters_the_message_as_poison(
    outbox_url: str, server: SMTPServer
) -> None:
    store = open_store(outbox_url)
    [ident] = await enqueue(store, [message(1)])
    policy = RetryPolicy(max_attempts=3, backoff=0.01, max_claims=2)
    backend = _BrokenSMTP(host="127.0.0.1", port=server.port)
    worker = Worker(store, backend=backend, policy=policy, poll_interval=0.02)
    async with worker:
        found = await settled(outbox_url, ident)
    assert found.state is State.DEAD  # type: ignore[attr-defined]
    assert "poison" in found.last_error  # type: ignore[attr-defined]
    assert found.claims == 2  # type: ignore[attr-defined]
    assert server.messages == []


@pytest.mark.anyio
async def test_a_crash_inside_a_backend_without_the_hook_is_unknown(
    outbox_url: str,
) -> None:
    """Such a backend is marked in flight before it gets the message: a bug
    in it may come after it delivered, so the message is never resent."""
    store = open_store(outbox_url)
    [ident] = await enqueue(store, [message(1)])
    worker = Worker(store, backend=_BrokenOther(), poll_interval=0.02)
    async with worker:
        found = await settled(outbox_url, ident)
    assert found.state is State.UNKNOWN  # type: ignore[attr-defined]
    [result] = await store.results(ident)
    assert result.outcome == "unknown"
    assert result.worker.endswith("(abandoned)")


@pytest.mark.anyio
async def test_partial_delivery_and_a_backend_by_dotted_path(
    outbox_url: str, server: SMTPServer
) -> None:
    server.recorder.refuse_rcpt["gone@example.com"] = "550 5.1.1 Gone"
    email = asyncmail.EmailMessage(
        "Hi", "Body", "sender@example.com", ["here@example.com", "gone@example.com"]
    )
    [ident] = await enqueue(open_store(outbox_url), [email])
    worker = Worker(
        outbox_url,
        backend="asyncmail.backends.smtp.EmailBackend",
        backend_options={"host": "127.0.0.1", "port": server.port, "timeout": 10},
        policy=FAST,
    )
    await worker.run(until_idle=True)
    found = await open_store(outbox_url).get(ident)
    assert found is not None
    assert found.state is State.PARTIAL
    assert found.outcomes == {
        "here@example.com": "accepted",
        "gone@example.com": "permanent",
    }
    assert [m.rcpt_tos for m in server.messages] == [["here@example.com"]]
    assert worker.backend is not None
    assert worker.backend.state.value == "closed"  # opened by the worker, closed


@pytest.mark.anyio
async def test_results_are_published_like_any_send(
    outbox_url: str, server: SMTPServer
) -> None:
    await enqueue(open_store(outbox_url), [message(n) for n in range(3)])
    seen: list[asyncmail.MessageResult] = []
    with asyncmail.collect_results() as collected:
        await drain(outbox_url, server, on_result=seen.append)
    assert len(seen) == len(collected) == 3
    assert all(result.ok and result.status.value == "sent" for result in seen)


def test_cli_refusals_and_json_listing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    url = f"sqlite:///{tmp_path / 'outbox.db'}"
    with QueueBackend(url=url) as connection:
        connection.send_messages([message(1)])
    capsys.readouterr()
    cli = ["outbox", "--url", url]
    assert main([*cli, "list", "--json"]) == 0
    [line] = capsys.readouterr().out.splitlines()
    listed = json.loads(line)
    assert listed["state"] == "queued"
    assert listed["recipients"] == ["user1@example.com"]
    assert main([*cli, "purge"]) == 2  # what to delete must be named
    assert "give --state" in capsys.readouterr().err
    assert main([*cli, "retry"]) == 2
    assert main([*cli, "show", "999"]) == 1
    assert "no message 999" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*cli, "list", "--state", "lost"])
    assert "unknown state 'lost'" in capsys.readouterr().err
    assert main(["outbox", "--url", "mysql://x/y", "status"]) == 2
    assert "Unknown outbox URL" in capsys.readouterr().err


def test_the_store_reconnects_after_losing_postgresql(
    request: pytest.FixtureRequest,
) -> None:
    import psycopg

    from queuesupport import postgres_cluster, reset_postgres

    url = postgres_cluster(request.config).url
    reset_postgres(url)

    async def scenario() -> None:
        store = open_store(url)
        await enqueue(store, [message(1)])
        with psycopg.connect(url, autocommit=True) as admin:
            killed = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE pid <> pg_backend_pid() AND datname = current_database()"
            ).fetchall()
        assert killed  # the store's connection was cut
        outcomes = []
        for n in range(2, 5):
            try:
                await enqueue(store, [message(n)])
                outcomes.append("stored")
            except QueueError as exc:
                outcomes.append(str(exc))
        assert outcomes[-2:] == ["stored", "stored"]  # connected again
        assert outcomes[0] == "stored" or "outbox" in outcomes[0]
        assert (await store.counts())[State.QUEUED] == outcomes.count("stored") + 1

    anyio.run(scenario)
    reset_postgres(url)


def test_a_forked_child_gets_a_store_of_its_own(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'outbox.db'}"
    store = open_store(url)
    store.insert_sync([asyncmail.queue.prepare(message(1))])  # parent's thread
    import warnings

    with warnings.catch_warnings():
        # 3.12+: "multi-threaded, fork() may deadlock": the very case tested.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: the parent's store thread does not exist here
        code = 1
        try:
            store.insert_sync([asyncmail.queue.prepare(message(2))])
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0

    async def queued() -> int:
        return (await store.counts())[State.QUEUED]

    assert anyio.run(queued) == 2


def test_a_new_sqlite_outbox_is_private_to_its_owner(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    with QueueBackend(url=f"sqlite:///{path}") as connection:
        connection.send_messages([message(1)])
    for name in ("outbox.db", "outbox.db-wal"):
        mode = (tmp_path / name).stat().st_mode & 0o777
        assert mode == 0o600, (name, oct(mode))


@pytest.mark.anyio
@pytest.mark.parametrize("streamed", [False, True], ids=["bytes", "streamed"])
async def test_the_end_of_data_hook_runs_before_the_final_dot(
    server: SMTPServer, tmp_path: Path, streamed: bool
) -> None:
    from asyncmail.backends.smtp import end_of_data_hook

    email = message(1)
    if streamed:
        path = tmp_path / "big.bin"
        path.write_bytes(os.urandom((1 << 20) + 1))
        await email.aattach_file(path)
        assert email.render().streamed
    seen: list[int] = []

    async def hook() -> None:
        await anyio.sleep(0.2)  # the server would have it by now if it could
        seen.append(len(server.messages))

    token = end_of_data_hook.set(hook)
    try:
        async with smtp(server) as backend:
            assert await backend.send_messages([email]) == 1
    finally:
        end_of_data_hook.reset(token)
    assert seen == [0]  # called once, before the server could accept
    assert len(server.messages) == 1


@pytest.mark.anyio
async def test_a_claim_lost_before_the_end_of_data_sends_nothing(
    outbox_url: str, server: SMTPServer
) -> None:
    """Another worker took the message (this one's lease expired) while this
    one was in the SMTP transaction: the mark fails, the data is never
    completed, the server gets nothing from this worker."""
    store = open_store(outbox_url)
    [ident] = await enqueue(store, [message(1)])
    original = store.mark_inflight

    async def stolen(job: object, owner: str) -> None:
        def take(cursor: object) -> None:
            cursor.execute(  # type: ignore[attr-defined]
                store.dialect.sql(
                    "UPDATE asyncmail_outbox SET lease_owner = 'thief' WHERE id = ?"
                ),
                (ident,),
            )

        await store.run(take)
        await original(job, owner)  # type: ignore[arg-type]

    store.mark_inflight = stolen  # type: ignore[method-assign]
    try:
        await Worker(store, backend=smtp(server), policy=FAST).run(until_idle=True)
    finally:
        del store.mark_inflight
    assert server.messages == []
    found = await store.get(ident)
    assert found is not None
    assert (found.state, found.lease_owner) == (State.CLAIMED, "thief")
    assert await store.results(ident) == []


@pytest.mark.anyio
async def test_postgresql_notify_wakes_an_idle_worker(
    request: pytest.FixtureRequest, server: SMTPServer
) -> None:
    """A worker polling only every 60 s delivers a message enqueued through
    another connection at once: the enqueue's NOTIFY woke it."""
    import psycopg

    from queuesupport import postgres_cluster, reset_postgres

    url = postgres_cluster(request.config).url
    reset_postgres(url)
    store = open_store(url)
    await store.counts()  # the tables exist
    async with Worker(store, backend=smtp(server), poll_interval=60):
        await anyio.sleep(0.5)  # idle: claimed nothing, LISTENing
        connection = await psycopg.AsyncConnection.connect(url)
        async with connection, connection.transaction():
            await asyncmail.queue.aenqueue_in(connection, [message(1)])
        with anyio.fail_after(20):  # far below the 60 s poll
            while not server.messages:  # noqa: ASYNC110 - another thread's list
                await anyio.sleep(0.02)
    assert [m.rcpt_tos for m in server.messages] == [["user1@example.com"]]
    reset_postgres(url)


@pytest.mark.anyio
async def test_an_enqueue_returns_each_keys_id_new_repeated_or_stored_before(
    outbox_url: str,
) -> None:
    """One insert for the whole batch (on PostgreSQL, one statement): a key
    given twice in it is stored once, a key stored before keeps its message
    and data, and every row gets its message's id."""
    from asyncmail.queue import prepare

    store = open_store(outbox_url)
    [before] = await enqueue(store, [message(1)], key="stored-before")
    rows = [
        prepare(message(2), key="twice"),
        prepare(message(3), key="stored-before"),
        prepare(message(4), key="twice"),
        prepare(message(5), key="new"),
    ]
    ids = await store.insert(rows)
    assert ids[1] == before
    assert ids[0] == ids[2]
    assert len({ids[0], ids[1], ids[3]}) == 3
    kept = await store.get("stored-before")
    assert kept is not None
    assert kept.recipients == ["user1@example.com"]
    twice = await store.get("twice")
    assert twice is not None
    assert twice.recipients == ["user2@example.com"]
    assert (await store.counts())[State.QUEUED] == 3
    jobs = {job.key: job for job in await store.claim("w", 5, 60.0, FAST)}
    assert jobs["stored-before"].id == before
    assert b"Subject: Message 1\r\n" in jobs["stored-before"].data  # the first
    assert b"Subject: Message 2\r\n" in jobs["twice"].data
    assert b"Subject: Message 5\r\n" in jobs["new"].data


@pytest.mark.anyio
async def test_a_lone_enqueue_is_its_own_transaction_and_a_mixed_batch_is_one(
    outbox_url: str,
) -> None:
    """Calls to a merge that writes in one statement run with no BEGIN and
    COMMIT when nothing else shares their batch; with another call in the
    batch they share one transaction again."""
    import asyncio
    import threading

    store = open_store(outbox_url)
    await store.counts()
    seen: list[bool] = []

    def in_transaction(cursor: Any) -> bool:
        connection = cursor.connection
        if isinstance(connection, sqlite3.Connection):
            return connection.in_transaction
        return not connection.autocommit

    def merge(cursor: Any, items: list[int]) -> list[int]:
        seen.append(in_transaction(cursor))
        return items

    assert await store.run_merged(merge, 1, single=True) == 1
    assert await store.run_merged(merge, 2) == 2
    assert seen == [False, True]
    gate = threading.Event()
    blocker = store.submit(lambda cursor: gate.wait(30))
    queued = [
        asyncio.ensure_future(store.run_merged(merge, 3, single=True)),
        asyncio.ensure_future(store.run(in_transaction)),
    ]
    await asyncio.sleep(0)
    gate.set()
    assert await asyncio.gather(*queued) == [3, True]
    assert blocker.result() is True
    assert seen[2:] == [True]


@pytest.mark.anyio
async def test_postgresql_enqueue_notifies_and_waits_for_a_concurrent_same_key(
    request: pytest.FixtureRequest,
) -> None:
    """The store's enqueue wakes LISTENing workers, and a key being stored
    by another transaction meanwhile gets that transaction's message once it
    commits (not a second message, not an error)."""
    import asyncio

    import psycopg

    from queuesupport import postgres_cluster, reset_postgres

    url = postgres_cluster(request.config).url
    reset_postgres(url)
    store = open_store(url)
    await store.counts()
    listener = await psycopg.AsyncConnection.connect(url, autocommit=True)
    async with listener:
        await listener.execute("LISTEN asyncmail_outbox")
        [first] = await enqueue(store, [message(1)])
        with anyio.fail_after(10):
            async for note in listener.notifies():
                assert note.channel == "asyncmail_outbox"
                break
    other = await psycopg.AsyncConnection.connect(url)
    async with other:
        await asyncmail.queue.aenqueue_in(other, [message(2)], key="race")
        racing = asyncio.ensure_future(enqueue(store, [message(3)], key="race"))
        await asyncio.sleep(0.5)
        assert not racing.done()  # waits for the other transaction
        await other.commit()
        [raced] = await racing
    stored = await store.get("race")
    assert stored is not None
    assert (raced, stored.recipients) == (stored.id, ["user2@example.com"])
    assert raced != first
    assert (await store.counts())[State.QUEUED] == 2
    reset_postgres(url)


@pytest.mark.anyio
async def test_batched_marks_and_results_write_only_what_is_still_leased(
    outbox_url: str,
) -> None:
    """Marks and results are written many per statement; within one batch a
    message whose claim was lost meanwhile is neither marked nor settled,
    and the others are."""
    import asyncio

    from asyncmail.queue.model import settle

    store = open_store(outbox_url)
    await enqueue(store, [message(n) for n in range(4)])
    policy = RetryPolicy()
    jobs = sorted(await store.claim("w1", 4, 60.0, policy), key=lambda j: j.id)
    for job in jobs[:2]:  # lost: the next claim hands them to another worker
        await store.abandon("w1", job.id, "paused too long")
    taken = await store.claim("w2", 4, 60.0, policy)
    assert {job.id for job in taken} == {job.id for job in jobs[:2]}
    marks = await asyncio.gather(
        *(store.mark_inflight(job, "w1") for job in jobs), return_exceptions=True
    )
    assert [isinstance(m, LeaseLostError) for m in marks] == [True, True, False, False]
    settlements = [
        settle(
            job,
            recipients={job.pending[0]: ("accepted", 250, "2.0.0", "queued")},
            reply="250 2.0.0 queued",
            error="",
            policy=policy,
            now=time.time(),
        )
        for job in jobs
    ]
    assert await store.finish_many(settlements, "w1") == [False, False, True, True]
    rows = {row.id: row for row in await store.messages(ids=[j.id for j in jobs])}
    assert [rows[job.id].state for job in jobs] == [
        State.CLAIMED,
        State.CLAIMED,
        State.SENT,
        State.SENT,
    ]
    assert [rows[job.id].lease_owner for job in jobs] == ["w2", "w2", None, None]
    results = [await store.results(job.id) for job in jobs]
    assert [len(found) for found in results] == [0, 0, 1, 1]
    assert results[2][0].code == 250
    assert results[2][0].worker == "w1"
    # All still leased (the usual case): one batch writes every one of them.
    settlements = [
        settle(
            job,
            recipients={job.pending[0]: ("permanent", 550, "5.1.1", "no such user")},
            reply="550 5.1.1 no such user",
            error="",
            policy=policy,
            now=time.time(),
        )
        for job in taken
    ]
    assert await store.finish_many(settlements, "w2") == [True, True]
    assert (await store.counts())[State.FAILED] == 2


@pytest.mark.anyio
async def test_marks_go_before_calls_already_waiting(outbox_url: str) -> None:
    """An in-flight mark (an urgent call) waits for no claim or results
    batch queued before it: the store's thread runs it first."""
    import asyncio
    import threading

    store = open_store(outbox_url)
    await store.counts()  # the thread is running
    order: list[str] = []
    gate = threading.Event()
    blocker = store.submit(lambda cursor: gate.wait(30))

    def ordinary(cursor: object) -> None:
        order.append("ordinary")

    def urgent(cursor: object, items: list[object]) -> list[None]:
        order.extend("urgent" for _ in items)
        return [None for _ in items]

    queued = [
        asyncio.ensure_future(store.run(ordinary)),
        asyncio.ensure_future(store.run_merged(urgent, 1, urgent=True)),
        asyncio.ensure_future(store.run_merged(urgent, 2, urgent=True)),
    ]
    await asyncio.sleep(0)  # every call is queued behind the blocker
    gate.set()
    await asyncio.gather(*queued)
    assert blocker.result() is True
    assert order == ["urgent", "urgent", "ordinary"]


def test_an_outbox_made_with_the_owner_index_loses_it_when_opened(
    outbox_url: str,
) -> None:
    """Every update of a leased row wrote an entry in the index by owner as
    well; an existing outbox is migrated (the index dropped) on open."""
    from asyncmail import queue

    anyio.run(open_store(outbox_url).counts)
    queue._stores.pop(outbox_url).close()
    old_index = (
        "CREATE INDEX asyncmail_outbox_leased ON asyncmail_outbox (lease_owner) "
        "WHERE lease_owner IS NOT NULL"
    )
    if outbox_url.startswith("postgresql"):
        import psycopg

        def indexes() -> set[str]:
            with psycopg.connect(outbox_url, autocommit=True) as connection:
                rows = connection.execute(
                    "SELECT indexname FROM pg_indexes WHERE tablename = "
                    "'asyncmail_outbox'"
                ).fetchall()
            return {row[0] for row in rows}

        with psycopg.connect(outbox_url, autocommit=True) as connection:
            connection.execute(old_index)
    else:
        path = outbox_url.removeprefix("sqlite:///")

        def indexes() -> set[str]:
            connection = sqlite3.connect(path)
            try:
                rows = connection.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'index' AND "
                    "tbl_name = 'asyncmail_outbox'"
                ).fetchall()
            finally:
                connection.close()
            return {row[0] for row in rows}

        connection = sqlite3.connect(path)
        connection.execute(old_index)
        connection.commit()
        connection.close()
    assert "asyncmail_outbox_leased" in indexes()

    async def use() -> None:
        store = open_store(outbox_url)
        await enqueue(store, [message(1)])
        [job] = await store.claim("w1", 5, 60.0, RetryPolicy())
        assert await store.heartbeat("w1", 60.0) == 1
        await store.mark_inflight(job, "w1")

    anyio.run(use)
    assert "asyncmail_outbox_leased" not in indexes()
    assert {"asyncmail_outbox_queued", "asyncmail_outbox_lease"} <= indexes()


@pytest.mark.anyio
async def test_a_transaction_after_a_batch_of_marks_is_still_one(
    outbox_url: str,
) -> None:
    """Marks run without a transaction of their own (one statement each);
    the calls after them are transactions again: one that fails midway
    leaves nothing written."""
    store = open_store(outbox_url)
    await enqueue(store, [message(1)])
    [job] = await store.claim("w1", 5, 60.0, RetryPolicy())
    await store.mark_inflight(job, "w1")

    def half_done(cursor: object) -> None:
        cursor.execute(  # type: ignore[attr-defined]
            store.dialect.sql("UPDATE asyncmail_outbox SET subject = ?"), ("changed",)
        )
        raise RuntimeError("failed after a write")

    with pytest.raises(QueueError, match="failed after a write"):
        await store.run(half_done)
    [row] = await store.messages(ids=[job.id])
    assert row.subject == "Message 1"
    assert row.state is State.INFLIGHT


# -- a live worker late to renew its leases, a store that fails for a while ----------


@pytest.mark.anyio
async def test_a_claim_never_expires_what_its_owner_still_holds(
    outbox_url: str,
) -> None:
    """A worker whose leases ran out while it was alive (a blocked event
    loop, a database outage at the heartbeat) does not take its own messages
    back with its next claim: it would hold them twice and send them twice.
    What it no longer holds is expired by its claims as by anyone's."""
    store = open_store(outbox_url)
    await enqueue(store, [message(n) for n in range(2)])
    kept, dropped = sorted(await store.claim("w1", 5, 0.05, FAST), key=lambda j: j.id)
    await anyio.sleep(0.3)  # both leases expired
    taken = await store.claim("w1", 5, 60.0, FAST, held=[kept.id])
    assert [job.id for job in taken] == [dropped.id]  # let go of: taken anew
    rows = {row.id: row for row in await store.messages(ids=[kept.id, dropped.id])}
    assert (rows[kept.id].state, rows[kept.id].lease_owner) == (State.CLAIMED, "w1")
    assert (rows[kept.id].claims, rows[dropped.id].claims) == (1, 2)
    await store.mark_inflight(kept, "w1")  # still its own: it may send it
    # Another worker's claim does expire it (in flight: unknown, not resent).
    assert await store.claim("w2", 5, 60.0, FAST) == []
    found = await store.get(kept.id)
    assert found is not None
    assert found.state is State.UNKNOWN


@pytest.mark.anyio
async def test_a_heartbeat_renews_only_the_messages_named(outbox_url: str) -> None:
    store = open_store(outbox_url)
    await enqueue(store, [message(n) for n in range(3)])
    jobs = sorted(await store.claim("w1", 5, 0.05, FAST), key=lambda j: j.id)
    assert await store.heartbeat("w1", 60.0, [jobs[0].id, jobs[2].id]) == 2
    assert await store.heartbeat("w1", 60.0, []) == 0
    await anyio.sleep(0.1)
    [again] = await store.claim("w2", 5, 60.0, FAST)  # the one not renewed
    assert again.id == jobs[1].id
    assert await store.heartbeat("w1", 60.0) == 2  # all of its own, by default


@pytest.mark.anyio
async def test_a_worker_stalled_past_its_leases_sends_each_message_once(
    outbox_url: str, server: SMTPServer
) -> None:
    """The event loop blocked for longer than the lease while messages were
    claimed and waiting: afterwards each is delivered once."""
    store = open_store(outbox_url)
    ids = await enqueue(store, [message(n) for n in range(6)])
    server.recorder.stall["RCPT"] = 0.2
    worker = Worker(
        store,
        backend=smtp(server),
        concurrency=1,
        batch=20,
        lease=1.0,
        poll_interval=0.1,
        policy=FAST,
    )

    async def app() -> None:
        await anyio.sleep(0.3)
        time.sleep(2.0)  # noqa: ASYNC251 - the point: a blocked loop

    async with anyio.create_task_group() as group:
        group.start_soon(app)
        with anyio.fail_after(60):
            await worker.run(until_idle=True)
    assert sorted(m.rcpt_tos[0] for m in server.messages) == sorted(
        f"user{n}@example.com" for n in range(6)
    )
    rows = await store.messages(ids=ids)
    assert {row.state for row in rows} == {State.SENT}


@pytest.mark.anyio
async def test_a_message_let_go_at_its_mark_is_delivered_while_the_worker_runs(
    outbox_url: str, server: SMTPServer
) -> None:
    """The store failed at the in-flight mark, so nothing was sent and the
    message was left to its lease: the worker no longer renews it, so it
    expires and is delivered, by this same worker, while it runs."""
    store = open_store(outbox_url)
    [ident] = await enqueue(store, [message(1)])
    real = store.mark_inflight
    calls = 0

    async def flaky(job: object, owner: str) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise QueueError("simulated: database is locked")
        await real(job, owner)  # type: ignore[arg-type]

    store.mark_inflight = flaky  # type: ignore[method-assign]
    try:
        async with Worker(
            store, backend=smtp(server), lease=0.5, poll_interval=0.05, policy=FAST
        ):
            found = await settled(outbox_url, ident)
    finally:
        del store.mark_inflight
    assert found.state is State.SENT  # type: ignore[attr-defined]
    assert calls == 2
    assert [m.rcpt_tos for m in server.messages] == [["user1@example.com"]]


@pytest.mark.anyio
async def test_results_the_store_refuses_for_a_while_are_written_once_it_is_back(
    outbox_url: str, server: SMTPServer
) -> None:
    """The server accepted the message, then the store refused the result
    for longer than one write's tries: the worker keeps the message (its
    lease renewed) and writes the result once the store is back."""
    store = open_store(outbox_url)
    [ident] = await enqueue(store, [message(1)])
    real = store.finish_many
    refusals = 0

    async def down_for_a_while(settlements: Any, owner: str) -> list[bool]:
        nonlocal refusals
        if refusals < 7:  # more than write_results' five tries
            refusals += 1
            raise QueueError("simulated: the database is down")
        return await real(settlements, owner)

    store.finish_many = down_for_a_while  # type: ignore[method-assign]
    seen: list[asyncmail.MessageResult] = []
    worker = Worker(
        store, backend=smtp(server), lease=1.0, policy=FAST, on_result=seen.append
    )
    worker.RESULT_RETRY = 0.1
    try:
        async with worker:
            found = await settled(outbox_url, ident)
    finally:
        del store.finish_many
    assert found.state is State.SENT  # type: ignore[attr-defined]
    assert refusals == 7
    assert len(server.messages) == 1
    assert [result.ok for result in seen] == [True]
    assert worker.delivered == 1


@pytest.mark.anyio
async def test_postgresql_enqueue_of_many_statements_is_one_transaction(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """More rows than one statement takes are written in one transaction,
    even by a lone call (run in autocommit mode): all are stored, or none."""
    from dataclasses import replace

    from asyncmail.queue import postgres, prepare
    from queuesupport import postgres_cluster, reset_postgres

    monkeypatch.setattr(postgres, "_ROWS", 3)
    url = postgres_cluster(request.config).url
    reset_postgres(url)
    store = open_store(url)
    rows = [prepare(message(n)) for n in range(7)]
    ids = await store.insert(rows)
    assert len(set(ids)) == 7
    stored = {m.id: m.recipients for m in await store.messages()}
    assert [stored[i] for i in ids] == [[f"user{n}@example.com"] for n in range(7)]
    failing = [prepare(message(n)) for n in range(10, 17)]
    failing[6] = replace(failing[6], subject="no NUL in a text column\x00")
    with pytest.raises(QueueError):
        await store.insert(failing)
    assert len(await store.messages()) == 7  # the first two statements undone
    reset_postgres(url)
