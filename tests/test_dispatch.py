"""Bulk dispatch: lazy sources, rate limits, progress, errors, the breaker.

Sources of messages are instrumented to prove they are read lazily; results
arrive once per message, in a bounded buffer; the first error in input
order is raised; a dead server trips the breaker for the rest of a batch.
The rate limiter itself is tested in test_ratelimit.py, the pool in
test_pool.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass

import anyio
import anyio.lowlevel
import pytest

import asyncmail
from asyncmail import (
    EmailMessage,
    InvalidMessageError,
    MessageResult,
    MessageStatus,
    Outcome,
    RecipientsRefusedError,
    SMTPConnectError,
)
from helpers import (
    hold_each_message,
    make_backend,
    message,
    scripted,
    senders,
)
from scriptserver import ScriptServer, reply, settle

# -- lazy sources --------------------------------------------------------------


@dataclass
class Meter:
    """Counts messages taken from a source and results published."""

    total: int
    refused_every: int
    pulled: int = 0
    completed: int = 0
    worst: int = 0  # the most messages ever taken but not finished

    def message(self, n: int) -> EmailMessage:
        to = "bad@example.com" if n % self.refused_every == 0 else None
        return message(n, [to] if to else None)

    def observe(self) -> None:
        self.worst = max(self.worst, self.pulled - self.completed)

    def on_result(self, result: MessageResult) -> None:
        self.completed += 1
        self.observe()

    def generator(self) -> Iterator[EmailMessage]:
        for n in range(1, self.total + 1):
            self.pulled += 1
            self.observe()
            yield self.message(n)

    async def agenerator(self) -> AsyncIterator[EmailMessage]:
        for n in range(1, self.total + 1):
            self.pulled += 1
            self.observe()
            yield self.message(n)
            await anyio.lowlevel.checkpoint()


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["generator", "async generator"])
async def test_iterators_are_consumed_lazily(kind: str) -> None:
    total, every, connections = 500, 100, 4
    meter = Meter(total, every)
    at_delivery: list[int] = []

    def check_at_delivery() -> None:  # runs in the server's thread
        at_delivery.append(meter.pulled - meter.completed)

    with scripted() as server:
        server.on("RCPT", reply("550 5.1.1 No such user"), match="bad@", times=None)
        server.on(".", reply("250 2.0.0 OK", hook=check_at_delivery), times=None)
        backend = make_backend(server, max_connections=connections)
        source = meter.generator() if kind == "generator" else meter.agenerator()

        with pytest.raises(RecipientsRefusedError) as info:
            await backend.send_messages(source, on_result=meter.on_result)

    assert meter.pulled == meter.completed == total
    assert len(at_delivery) == total - total // every
    # Taken from the source: at most one message per worker (connections x
    # pipeline depth) and the next one being taken.
    in_flight = connections * backend.pipeline_depth
    assert max(at_delivery) <= in_flight + 1
    assert meter.worst <= in_flight + 1
    refused = [n for n in range(1, total + 1) if n % every == 0]
    assert senders(server) == {
        f"sender{n}@example.com": 1 for n in range(1, total + 1) if n not in refused
    }
    error = info.value
    assert error.sent == total - len(refused)
    # An iterator's results are not all kept: only the failures, in order.
    assert [r.message.from_email for r in error.results] == [  # type: ignore[union-attr]
        f"sender{n}@example.com" for n in refused
    ]
    assert error is error.results[0].error
    assert all(r.status is MessageStatus.FAILED for r in error.results)


@pytest.mark.anyio
async def test_lists_keep_every_result() -> None:
    with scripted() as server:
        server.on("RCPT", reply("550 5.1.1 No such user"), match="bad@", times=None)
        backend = make_backend(server, max_connections=3)
        meter = Meter(30, 10)
        messages = [meter.message(n) for n in range(1, 31)]

        with pytest.raises(RecipientsRefusedError) as info:
            await backend.send_messages(messages)

    assert info.value.sent == 27
    assert list(info.value.results) == [m.result for m in messages]
    assert len(senders(server)) == 27


# -- rate limiting -------------------------------------------------------------


# (The limiter's own rules are tested in test_ratelimit.py.)


@pytest.mark.anyio
async def test_rate_limited_backend_sends_everything() -> None:
    with scripted() as server:
        backend = make_backend(server, max_connections=3, rate_limit=200)
        messages = [message(n) for n in range(1, 31)]

        assert await backend.send_messages(messages) == 30

    assert senders(server) == {f"sender{n}@example.com": 1 for n in range(1, 31)}
    assert backend.rate_limiter is not None


@pytest.mark.anyio
async def test_waiting_for_the_rate_limit_is_not_the_message_deadline() -> None:
    """Senders queue for tokens longer than a message's deadline (2 a
    second for 4 connections, deadline 0.5 s): none of them fails for it."""
    with scripted() as server:
        backend = make_backend(
            server, max_connections=4, rate_limit=2, timeout=0.5, deadline=0.5
        )
        messages = [message(n) for n in range(1, 7)]

        assert await backend.send_messages(messages) == 6

    assert len(senders(server)) == 6
    assert all(m.result is not None and m.result.attempts == 1 for m in messages)


def test_rate_limited_backend_on_two_event_loops() -> None:
    """The limiter's lock belongs to no one loop: a backend used from the
    blocking API (the library's loop) works on another loop afterwards, even
    when its senders queued for tokens on both."""
    with scripted() as server:
        backend = make_backend(server, max_connections=4, rate_limit=40)
        first = [message(n) for n in range(1, 51)]  # 40 at once, 10 queue
        second = [message(n) for n in range(51, 71)]  # the bucket is empty

        assert backend.blocking().send_messages(first) == 50

        async def on_a_new_loop() -> int:
            return await backend.send_messages(second)

        assert asyncio.run(on_a_new_loop()) == 20
        assert backend.blocking().send_messages([message(71)]) == 1

    assert len(senders(server)) == 71


@pytest.mark.anyio
async def test_the_rate_limit_paces_a_pooled_send() -> None:
    """Nothing checked that the backend's limiter is used: at 20 a second
    (a burst of 20), 30 messages take at least half a second."""
    with scripted() as server:
        backend = make_backend(server, max_connections=4, rate_limit=20)
        started = anyio.current_time()
        assert await backend.send_messages([message(n) for n in range(30)]) == 30
        elapsed = anyio.current_time() - started
    assert elapsed >= 0.45
    assert len(server.accepted) == 30


# -- progress: on_result and stream_results ------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("max_connections", [1, 3])
async def test_on_result_once_per_message_as_it_completes(
    max_connections: int,
) -> None:
    seen: list[tuple[MessageResult, int]] = []
    with scripted() as server:
        hold_each_message(server, 0.01)
        server.on("RCPT", reply("550 5.1.1 No such user"), match="rcpt5@")

        def on_result(result: MessageResult) -> None:
            seen.append((result, len(server.accepted)))

        backend = make_backend(server, max_connections=max_connections)
        messages = [message(n) for n in range(1, 13)]

        with pytest.raises(RecipientsRefusedError):
            await backend.send_messages(messages, on_result=on_result)

    results = [result for result, _ in seen]
    assert sorted(map(id, results)) == sorted(id(m.result) for m in messages)
    for number, (result, accepted_then) in enumerate(seen, 1):
        assert result.message is not None
        assert result.message.result is result  # recorded before the callback
        # Published as each completes: never far behind the server.
        assert accepted_then <= number - 1 + max_connections
        if result.ok:  # and never ahead of it
            marker = result.message.extra_headers["Message-ID"].encode()
            assert any(marker in item.data for item in server.accepted)
    if max_connections == 1:
        assert results == [m.result for m in messages]


@pytest.mark.anyio
async def test_stream_results_yields_every_result_without_raising() -> None:
    with scripted() as server:
        server.on("RCPT", reply("550 5.1.1 No such user"), match="rcpt3@")
        server.on("RCPT", reply("451 4.3.0 Try later"), match="rcpt7@")
        backend = make_backend(server, max_connections=3)
        messages = [message(n) for n in range(1, 11)]

        async with backend.stream_results(messages) as results:
            got = [result async for result in results]

    assert sorted(map(id, got)) == sorted(id(m.result) for m in messages)
    by_number = {int(r.message.subject.split()[1]): r for r in got}  # type: ignore[union-attr]
    assert by_number[3].recipients["rcpt3@example.com"].outcome is Outcome.PERMANENT
    assert by_number[7].recipients["rcpt7@example.com"].outcome is Outcome.TEMPORARY
    assert all(r.ok for n, r in by_number.items() if n not in (3, 7))
    assert len(server.accepted) == 8
    assert backend.pool is None  # closed again


@pytest.mark.anyio
async def test_leaving_stream_results_early_cancels_the_rest() -> None:
    total = 200
    with scripted() as server:
        hold_each_message(server, 0.01)
        backend = make_backend(server, max_connections=2)
        source = (message(n) for n in range(1, total + 1))

        got = []
        async with backend.stream_results(source) as results:
            async for result in results:
                got.append(result)
                if len(got) == 3:
                    break
        at_exit = len(server.accepted)
        await anyio.sleep(0.5)  # whatever was still going has had its chance
        after = len(server.accepted)
        assert await settle(lambda: server.live == 0), "a connection leaked"

    assert all(r.ok for r in got)
    assert after < total
    assert after <= at_exit + 2  # at most what was in flight
    assert backend.pool is None


@pytest.mark.anyio
async def test_stream_results_stops_taking_messages_while_results_wait() -> None:
    """It buffered every result (and its message) for a slow reader."""
    from asyncmail.backends.base import RESULTS_BUFFERED

    pulled = 0

    def source() -> Iterator[EmailMessage]:
        nonlocal pulled
        for n in range(20_000):
            pulled += 1
            yield message(n)

    backend = asyncmail.get_connection("asyncmail.backends.dummy.EmailBackend")
    seen = []
    async with backend.stream_results(source()) as results:
        async for result in results:
            seen.append(result)
            if len(seen) == 1:
                await anyio.sleep(0.3)  # a slow reader: the sender must wait
                assert pulled <= RESULTS_BUFFERED + 2
    assert len(seen) == 20_000
    assert all(r.status is MessageStatus.SENT for r in seen)


# -- which error is raised -----------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("source", ["list", "generator"])
async def test_first_error_in_input_order(source: str) -> None:
    with scripted() as server:
        # Message 1 fails slowly, message 2 fast: 2 completes first.
        server.on("RCPT", reply("550 5.1.1 Slow no", delay=1.0), match="rcpt1@")
        server.on("RCPT", reply("550 5.1.1 Fast no"), match="rcpt2@")
        backend = make_backend(server, max_connections=2)
        messages = [message(n) for n in range(1, 6)]
        order: list[MessageResult] = []
        given: Iterable[EmailMessage] = (
            messages if source == "list" else (m for m in messages)
        )

        with pytest.raises(RecipientsRefusedError) as info:
            await backend.send_messages(given, on_result=order.append)

    assert order.index(messages[1].result) < order.index(messages[0].result)  # type: ignore[arg-type]
    error = info.value
    assert error is messages[0].result.error  # type: ignore[union-attr]
    assert "Slow no" in str(error)
    assert error.sent == 3
    if source == "list":
        assert list(error.results) == [m.result for m in messages]
    else:
        assert list(error.results) == [messages[0].result, messages[1].result]


@pytest.mark.anyio
@pytest.mark.parametrize("max_connections", [1, 3])
async def test_message_that_cannot_be_rendered_fails_alone(
    max_connections: int,
) -> None:
    """Nothing is lost: the bad message fails with its reason (an
    InvalidMessageError, still a ValueError), the others are all sent, and
    the error is raised after the batch (not as an exception group)."""
    with scripted() as server:
        hold_each_message(server, 0.02)
        backend = make_backend(server, max_connections=max_connections)
        messages = [message(n) for n in range(1, 9)]
        messages[4].body = "Grüße"
        messages[4].encoding = "ascii"

        with pytest.raises(InvalidMessageError, match="can't be encoded") as caught:
            await backend.send_messages(messages)

    assert isinstance(caught.value, ValueError)
    assert caught.value.sent == 7
    bad = messages[4].result
    assert bad is not None
    assert bad.status is MessageStatus.FAILED
    assert all(r.outcome is Outcome.PERMANENT for r in bad.recipients.values())
    assert all(
        m.result is not None and m.result.ok for i, m in enumerate(messages) if i != 4
    )
    accepted = senders(server)
    for msg in messages:  # nothing sent that is not reported sent, nor the reverse
        assert msg.result is not None
        assert accepted[str(msg.from_email)] == msg.result.ok


@pytest.mark.anyio
@pytest.mark.parametrize("max_connections", [1, 3])
async def test_source_that_raises(max_connections: int) -> None:
    messages = [message(n) for n in range(1, 6)]

    async def source() -> AsyncIterator[EmailMessage]:
        for msg in messages:
            yield msg
        raise RuntimeError("the source broke")

    with scripted() as server:
        hold_each_message(server, 0.02)
        backend = make_backend(server, max_connections=max_connections)

        with pytest.raises(RuntimeError, match="the source broke"):
            await backend.send_messages(source())

    assert all(m.result is not None and m.result.ok for m in messages)
    assert len(senders(server)) == 5


@pytest.mark.anyio
@pytest.mark.parametrize("max_connections", [1, 3])
async def test_stream_results_reports_a_bad_message_and_goes_on(
    max_connections: int,
) -> None:
    with scripted() as server:
        backend = make_backend(server, max_connections=max_connections)
        messages = [message(n) for n in range(1, 6)]
        messages[2].body = "Grüße"
        messages[2].encoding = "ascii"
        got: list[MessageResult] = []
        async with backend.stream_results(messages) as results:
            async for result in results:
                got.append(result)

    assert {id(r) for r in got} == {id(m.result) for m in messages}
    failed = [r for r in got if not r.ok]
    assert [r.message for r in failed] == [messages[2]]
    assert isinstance(failed[0].error, InvalidMessageError)
    assert len(server.accepted) == 4


@pytest.mark.anyio
@pytest.mark.parametrize("max_connections", [1, 3])
async def test_stream_results_raises_what_stopped_the_sending(
    max_connections: int,
) -> None:
    messages = [message(n) for n in range(1, 4)]

    async def source() -> AsyncIterator[EmailMessage]:
        for msg in messages:
            yield msg
        raise RuntimeError("the source broke")

    with scripted() as server:
        backend = make_backend(server, max_connections=max_connections)
        got: list[MessageResult] = []

        async def collect() -> None:
            async with backend.stream_results(source()) as results:
                async for result in results:
                    got.append(result)

        with pytest.raises(RuntimeError, match="the source broke"):
            await collect()

    assert all(r.ok for r in got)
    assert len(got) == len(server.accepted)


# -- connecting: open() retries, the breaker -----------------------------------


@pytest.mark.anyio
async def test_open_retries_a_transient_connect_failure() -> None:
    with scripted() as server:
        server.on("CONNECT", reply("421 4.3.2 Not now", close=True))
        backend = make_backend(server, retries=2)

        assert await backend.open() is True
        assert await backend.send_messages([message(1)]) == 1
        await backend.close()

    assert len(server.sessions) == 2
    assert server.sessions[0].commands == []
    assert senders(server) == {"sender1@example.com": 1}


@pytest.mark.anyio
async def test_open_without_retries_raises_the_connect_error() -> None:
    with scripted() as server:
        server.on("CONNECT", reply("421 4.3.2 Not now", close=True), times=2)
        backend = make_backend(server, retries=0)

        with pytest.raises(SMTPConnectError) as info:
            await backend.open()
        assert isinstance(info.value, ConnectionError)
        assert info.value.code == 421
        assert backend.pool is None
        assert backend.open_error is None  # raised: the caller has it

        msg = message(1)
        with pytest.raises(SMTPConnectError) as sent:
            await backend.send_messages([msg])

    assert len(server.sessions) == 2
    assert sent.value.sent == 0
    assert list(sent.value.results) == [msg.result]
    (result,) = msg.result.recipients.values()  # type: ignore[union-attr]
    assert result.outcome is Outcome.TEMPORARY
    assert result.code == 421
    assert "Not now" in result.text


def server_goes_away(server: ScriptServer) -> None:
    """The first session works; every later one is refused at the greeting."""
    server.on("CONNECT", reply("421 4.3.2 Going away", close=True), skip=1, times=None)


@pytest.mark.anyio
async def test_breaker_fails_the_rest_of_the_batch_fast() -> None:
    retries = 2
    with scripted() as server:
        server_goes_away(server)
        backend = make_backend(server, retries=retries, max_messages_per_connection=1)
        messages = [message(n) for n in range(1, 11)]

        with pytest.raises(SMTPConnectError) as info:
            await backend.send_messages(messages)

    # One session for message 1; message 2 tried 1 + retries times; no more.
    assert len(server.sessions) == 1 + (1 + retries)
    assert senders(server) == {"sender1@example.com": 1}
    assert info.value is messages[1].result.error  # type: ignore[union-attr]
    assert messages[1].result.attempts == 1 + retries  # type: ignore[union-attr]
    for msg in messages[1:]:
        assert msg.result is not None
        (result,) = msg.result.recipients.values()
        assert result.outcome is Outcome.TEMPORARY
        assert result.code == 421
        assert "Going away" in result.text
        assert isinstance(msg.result.error, SMTPConnectError)
    for msg in messages[2:]:
        assert msg.result.attempts == 1  # type: ignore[union-attr]  # no backoff


@pytest.mark.anyio
async def test_breaker_error_does_not_grow_with_the_batch() -> None:
    """Many messages fail fast with the same error; it must not collect a
    traceback (or anything else) per message."""
    with scripted() as server:
        server_goes_away(server)
        backend = make_backend(server, max_messages_per_connection=1)
        messages = [message(n) for n in range(1, 301)]

        with pytest.raises(SMTPConnectError) as info:
            await backend.send_messages(messages)

    # Message 1, then one refused try for each of the next three (no
    # retries): three consecutive connect failures open the breaker.
    assert len(server.sessions) == 1 + backend._breaker.threshold
    depth, tb = 0, info.value.__traceback__
    while tb is not None:
        depth, tb = depth + 1, tb.tb_next
    assert depth < 50


@pytest.mark.anyio
async def test_breaker_with_a_pool() -> None:
    retries, connections, threshold = 1, 3, 3
    with scripted() as server:
        server_goes_away(server)
        backend = make_backend(
            server,
            retries=retries,
            max_connections=connections,
            max_messages_per_connection=1,
            breaker_threshold=threshold,
        )
        messages = [message(n) for n in range(1, 41)]

        with pytest.raises(SMTPConnectError):
            await backend.send_messages(messages)

    # The breaker trips after `threshold` counted connect failures. A 421
    # that arrives while another of our connects is in flight is
    # back-pressure, not a failure, so each counted failure can come with up
    # to `connections - 1` such refusals, and `connections - 1` connects may
    # still be in flight when it trips. However the connects interleave
    # (they do differently under load), that bounds the sessions far below
    # the 1 + 39 * (1 + retries) a batch without a breaker would open.
    assert len(server.sessions) <= 1 + threshold * connections + (connections - 1)
    assert len(server.sessions) < 1 + (len(messages) - 1) * (1 + retries) // 4
    assert senders(server) == {"sender1@example.com": 1}
    for msg in messages[1:]:
        assert msg.result is not None
        assert {r.outcome for r in msg.result.recipients.values()} == {
            Outcome.TEMPORARY
        }


@pytest.mark.anyio
async def test_breaker_resets_for_the_next_batch() -> None:
    retries = 1
    with scripted() as server:
        refused = reply("421 4.3.2 Going away", close=True)
        server.on("CONNECT", refused, skip=1, times=1 + retries)  # then it is back
        backend = make_backend(
            server,
            retries=retries,
            max_messages_per_connection=1,
            breaker_threshold=1 + retries,  # message 2's tries open it
        )
        messages = [message(n) for n in range(1, 5)]

        async with backend:
            with pytest.raises(SMTPConnectError):
                await backend.send_messages(messages[:3])
            assert messages[2].result is not None
            assert messages[2].result.attempts == 1  # failed fast
            assert await backend.send_messages(messages[3:]) == 1

    assert senders(server) == {"sender1@example.com": 1, "sender4@example.com": 1}
    assert len(server.sessions) == 1 + (1 + retries) + 1
