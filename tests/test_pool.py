"""The connection pool: how many sessions, how long each one lives.

Checked on what the scripted server saw: how many sessions were open at
once, how many messages each one carried, where NOOP and RSET came, which
idle connections were closed; and the pool's options and its blocking API.
"""

from __future__ import annotations

import asyncio
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from asyncmail import (
    MailError,
    MessageResult,
    MessageStatus,
    SMTPTimeoutError,
)
from asyncmail.backends.smtp import EmailBackend
from asyncmail.sync import run_blocking
from helpers import (
    PIPELINING,
    hold_each_message,
    mails_per_session,
    make_backend,
    message,
    result_of,
    scripted,
    senders,
)
from scriptserver import CLOSE, SILENCE, reply, settle

# -- the in-flight cap ---------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("max_connections", [2, 4])
async def test_max_connections_caps_the_sessions_open_at_once(
    max_connections: int,
) -> None:
    with scripted() as server:
        hold_each_message(server)
        backend = make_backend(server, max_connections=max_connections)
        messages = [message(n) for n in range(1, 25)]

        assert await backend.send_messages(messages) == 24

    assert senders(server) == {f"sender{n}@example.com": 1 for n in range(1, 25)}
    assert server.max_live == max_connections  # reached, never exceeded
    assert len(server.sessions) == max_connections  # and every one reused
    assert all(m.result is not None and m.result.ok for m in messages)


@pytest.mark.anyio
async def test_one_connection_carries_every_message() -> None:
    with scripted() as server:
        hold_each_message(server, 0.01)
        backend = make_backend(server, max_connections=1)

        assert await backend.send_messages([message(n) for n in range(1, 21)]) == 20

    assert len(server.sessions) == 1
    assert server.max_live == 1
    assert mails_per_session(server) == [20]
    assert server.sessions[0].verbs()[-1] == "QUIT"


# -- retiring connections ------------------------------------------------------


@pytest.mark.anyio
async def test_max_messages_per_connection() -> None:
    with scripted() as server:
        backend = make_backend(server, max_messages_per_connection=3)

        assert await backend.send_messages([message(n) for n in range(1, 11)]) == 10

    assert mails_per_session(server) == [3, 3, 3, 1]
    assert all(session.verbs()[-1] == "QUIT" for session in server.sessions)


@pytest.mark.anyio
async def test_max_messages_per_connection_with_a_pool() -> None:
    with scripted() as server:
        hold_each_message(server, 0.01)
        backend = make_backend(server, max_connections=3, max_messages_per_connection=3)

        assert await backend.send_messages([message(n) for n in range(1, 31)]) == 30

    per_session = mails_per_session(server)
    assert sum(per_session) == 30
    assert max(per_session) == 3
    assert len(server.sessions) >= 10
    assert server.max_live <= 3


@pytest.mark.anyio
@pytest.mark.parametrize("option", ["max_connection_lifetime", "idle_timeout"])
async def test_tiny_lifetime_or_idle_timeout_means_no_reuse(option: str) -> None:
    with scripted() as server:
        backend = make_backend(server, **{option: 1e-9})

        assert await backend.send_messages([message(n) for n in range(1, 6)]) == 5

    # (send_messages connects for the first message, not before it.)
    assert mails_per_session(server) == [1, 1, 1, 1, 1]
    assert server.max_live == 1


@pytest.mark.anyio
async def test_long_idle_timeout_reuses_the_connection() -> None:
    """The counterpart of the test above: the same batch, one session."""
    with scripted() as server:
        backend = make_backend(server, idle_timeout=3600, max_connection_lifetime=3600)

        assert await backend.send_messages([message(n) for n in range(1, 6)]) == 5

    assert mails_per_session(server) == [5]


@pytest.mark.anyio
async def test_probe_after_sends_noop_before_reuse() -> None:
    with scripted() as server:
        backend = make_backend(server, probe_after=1e-9)

        assert await backend.send_messages([message(n) for n in range(1, 4)]) == 3

    (session,) = server.sessions
    verbs = session.verbs()
    assert verbs.count("MAIL") == 3
    mails = [index for index, verb in enumerate(verbs) if verb == "MAIL"]
    assert verbs[mails[0] - 1] == "EHLO", verbs  # a new connection: no probe
    for index in mails[1:]:
        assert verbs[index - 1] == "NOOP", verbs


@pytest.mark.anyio
async def test_no_probe_when_reused_at_once() -> None:
    with scripted() as server:
        backend = make_backend(server, probe_after=3600)

        assert await backend.send_messages([message(n) for n in range(1, 4)]) == 3

    assert server.count("NOOP") == 0


@pytest.mark.anyio
@pytest.mark.parametrize(
    "act",
    [
        reply("421 4.4.2 Idle too long", close=True),
        reply("500 5.5.1 What?"),
        CLOSE,
    ],
    ids=["421", "500", "closed"],
)
async def test_failed_probe_opens_a_new_session(act: Any) -> None:
    with scripted() as server:
        server.on("NOOP", act)
        backend = make_backend(server, probe_after=1e-9)
        messages = [message(1), message(2)]

        assert await backend.send_messages(messages) == 2

    assert senders(server) == {"sender1@example.com": 1, "sender2@example.com": 1}
    first, second = server.sessions
    assert first.verbs().count("MAIL") == 1  # abandoned after its NOOP failed
    assert first.verbs()[-1] in ("NOOP", "QUIT")
    assert second.verbs().count("MAIL") == 1


@pytest.mark.anyio
async def test_cancelled_probe_does_not_leak_the_connection() -> None:
    with scripted() as server:
        server.on("NOOP", SILENCE)  # the probe never gets its answer
        backend = make_backend(server, probe_after=1e-9)

        async with backend:
            with anyio.move_on_after(0.5) as scope:
                await backend.send_messages([message(1)])
            assert scope.cancelled_caught
            assert backend.pool is not None
            assert (backend.pool.idle, backend.pool.in_use) == (0, 0)
        assert await settle(lambda: server.live == 0), "a connection leaked"

    assert server.count("MAIL") == 0
    assert server.count("QUIT") == 0  # aborted: a QUIT would be out of step


@pytest.mark.anyio
async def test_connection_released_after_close_is_closed() -> None:
    with scripted() as server:
        backend = make_backend(server)
        await backend.open()
        pool = backend.pool
        assert pool is not None
        entry = await pool.acquire()

        await backend.close()  # while the connection is in use
        await pool.release(entry, reusable=True)

        assert (pool.idle, pool.in_use) == (0, 0)
        assert not entry.connection.usable
        assert await settle(lambda: server.live == 0), "a connection leaked"

    assert server.sessions[0].verbs()[-1] == "QUIT"


@pytest.mark.anyio
@PIPELINING
async def test_rset_after_a_refused_envelope_keeps_the_connection(
    pipelining: bool,
) -> None:
    with scripted(pipelining) as server:
        server.on("RCPT", reply("550 5.1.1 No such user"), match="rcpt2@")
        server.on("MAIL", reply("553 5.1.8 Bad sender"), match="sender4@")
        backend = make_backend(server)
        messages = [message(n) for n in range(1, 7)]

        with pytest.raises(MailError) as info:
            await backend.send_messages(messages)

    assert info.value.sent == 4
    assert [m.result.status for m in messages] == [  # type: ignore[union-attr]
        MessageStatus.SENT,
        MessageStatus.FAILED,
        MessageStatus.SENT,
        MessageStatus.FAILED,
        MessageStatus.SENT,
        MessageStatus.SENT,
    ]
    (session,) = server.sessions
    verbs = session.verbs()
    mails = [i for i, verb in enumerate(verbs) if verb == "MAIL"]
    assert len(mails) == 6
    # RSET right after each refused envelope (messages 2 and 4), nowhere else.
    assert verbs.count("RSET") == 2
    assert [verbs[i - 1] for i in mails[1:]] == [
        "DATA",
        "RSET",
        "DATA",
        "RSET",
        "DATA",
    ]


# -- idle connections expire oldest first -----------------------------------


@pytest.mark.anyio
async def test_buried_idle_connections_expire() -> None:
    """Three connections go idle; then one message at a time reuses the most
    recent one (last in, first out) more often than idle_timeout: the two
    buried under it must still be closed when their idle time is up."""
    with scripted() as server:
        server.on(".", reply("250 2.0.0 OK", delay=0.1), times=3)  # overlap
        backend = make_backend(
            server, max_connections=3, idle_timeout=0.3, probe_after=None
        )
        burst = [message(n) for n in range(1, 4)]
        trickle = [message(n) for n in range(4, 12)]

        async with backend:
            assert await backend.send_messages(burst) == 3
            assert server.max_live == 3
            assert backend.pool is not None
            assert backend.pool.idle == 3
            for msg in trickle:
                await anyio.sleep(0.2)
                assert await backend.send_messages([msg]) == 1
            assert await settle(lambda: server.live <= 1), (
                f"{server.live} sessions still open"
            )
            assert backend.pool.idle == 1

    assert len(server.accepted) == 11
    assert all(result_of(m).status is MessageStatus.SENT for m in burst + trickle)
    assert all(session.verbs()[-1] == "QUIT" for session in server.sessions)


# -- waiting for a busy pool does not trip the breaker --------------------------


@pytest.mark.anyio
async def test_waiting_for_a_busy_pool_does_not_trip_the_breaker() -> None:
    """Message 1 times out waiting for the only connection slot (held by
    someone else): that says nothing about the server, so message 2, sent
    once the slot is free, connects and goes through."""
    with scripted() as server:
        backend = make_backend(server, max_connections=1, deadline=0.5)
        first, second = message(1), message(2)
        async with backend:
            pool = backend.pool
            assert pool is not None
            held = await pool.acquire()

            async def messages() -> Any:
                yield first
                # Message 1 has timed out by now: free the slot.
                await pool.release(held, reusable=False)
                yield second

            sent = await backend.send_messages(messages(), fail_silently=True)

    assert isinstance(result_of(first).error, SMTPTimeoutError)
    assert sent == 1
    assert result_of(second).status is MessageStatus.SENT
    assert [item.mail_from for item in server.accepted] == ["sender2@example.com"]


@pytest.mark.anyio
async def test_slots_go_to_waiters_in_order_and_time_out_alone() -> None:
    """The pool's slots: a released one goes to the first waiter still
    waiting; a waiter past its deadline gets TimeoutError and takes no slot;
    one cancelled just after being handed a slot passes it on."""
    from asyncmail.pool import _Slots

    slots = _Slots(1)
    assert slots.take_nowait()
    assert not slots.take_nowait()
    loop = asyncio.get_running_loop()
    got: list[str] = []

    async def wait(name: str, deadline: float | None = None) -> None:
        try:
            await slots.take(deadline)
        except TimeoutError:
            got.append(f"{name} timed out")
        else:
            got.append(name)

    async with anyio.create_task_group() as group:
        group.start_soon(wait, "late", loop.time() + 0.05)
        group.start_soon(wait, "first")
        group.start_soon(wait, "second")
        await anyio.sleep(0.2)
        assert got == ["late timed out"]
        slots.give()  # to "first" (the timed-out one is skipped)
        await anyio.lowlevel.checkpoint()
        assert got == ["late timed out", "first"]

        cancelled = loop.create_task(slots.take(None))  # behind "second"
        await anyio.lowlevel.checkpoint()
        slots.give()  # to "second"
        await anyio.lowlevel.checkpoint()
        slots.give()  # to the waiting task, cancelled before it runs
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled
    assert got == ["late timed out", "first", "second"]
    assert slots.take_nowait()  # the cancelled one's slot came back
    assert not slots.take_nowait()


# -- the blocking API over the pool --------------------------------------------


def test_blocking_send_messages_over_a_pool() -> None:
    with scripted() as server:
        hold_each_message(server, 0.01)
        backend = make_backend(server, max_connections=4)
        messages = [message(n) for n in range(1, 41)]
        seen: list[MessageResult] = []

        count = backend.blocking().send_messages(messages, on_result=seen.append)

    assert count == 40
    assert senders(server) == {f"sender{n}@example.com": 1 for n in range(1, 41)}
    assert server.max_live == len(server.sessions) == 4
    assert sorted(map(id, seen)) == sorted(id(m.result) for m in messages)


def test_library_loop_is_uvloop_when_installed() -> None:
    uvloop = pytest.importorskip("uvloop")

    async def loop_type() -> type[asyncio.AbstractEventLoop]:
        return type(asyncio.get_running_loop())

    assert run_blocking(loop_type) is uvloop.Loop


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("rate_limit", 0, "rate must be a positive"),
        ("rate_limit", -5, "rate must be a positive"),
        ("idle_timeout", -1, "idle_timeout must be 0 or more"),
        ("probe_after", -1, "probe_after must be 0 or more"),
        ("max_connection_lifetime", -1, "max_lifetime must be 0 or more"),
        ("max_connections", 0, "max_connections must be at least 1"),
    ],
)
def test_bad_pool_options_are_configuration_errors(
    option: str, value: float, message: str
) -> None:
    from asyncmail import ConfigurationError

    with pytest.raises(ConfigurationError, match=message):
        EmailBackend(host="127.0.0.1", port=25, **{option: value})


@pytest.mark.anyio
async def test_close_quits_every_idle_connection_at_once() -> None:
    """Closing the pool sends QUIT on every idle connection together: each
    QUIT waits a round trip for its reply, which one after another would
    cost a round trip per connection. The server holds each reply 1 s, so
    one QUIT after another would arrive at least 1 s apart."""
    import time

    arrived: list[float] = []
    with scripted() as server:
        hold_each_message(server, 0.2)  # the four connections overlap
        server.on(
            "QUIT",
            reply(
                "221 2.0.0 Bye",
                delay=1.0,
                close=True,
                hook=lambda: arrived.append(time.monotonic()),
            ),
            times=None,
        )
        backend = make_backend(server, max_connections=4, pipeline_depth=1)
        async with backend:
            assert await backend.send_messages([message(n) for n in range(8)]) == 8
        assert len(server.sessions) == 4
    assert len(arrived) == 4
    assert arrived[-1] - arrived[0] < 1.0, arrived
