"""A backend's life: open, used, closed, on which event loop.

A backend belongs to the loop (or blocking view) that opened it: used or
closed from another one it refuses, changing nothing; concurrent automatic
opens leave it closed; a cancelled open leaves it closed.
"""

from __future__ import annotations

import anyio
import anyio.to_thread
import pytest

import asyncmail
import asyncmail.dnsname
from asyncmail import (
    EmailMessage,
    MessageStatus,
    Outcome,
)
from asyncmail.backends.base import BackendState
from helpers import (
    make_backend,
    message,
    result_of,
    scripted,
)
from scriptserver import reply, settle

pytestmark = pytest.mark.anyio

TEMPORARY, PERMANENT = Outcome.TEMPORARY, Outcome.PERMANENT


# -- a backend open on one event loop, used from another ---------------------


async def test_opened_through_the_blocking_view_then_used_from_this_loop() -> None:
    with scripted() as server:
        backend = make_backend(server)
        view = backend.blocking()
        assert await anyio.to_thread.run_sync(view.open) is True
        msg = message(1)

        try:
            with pytest.raises(RuntimeError, match="another event loop"):
                await backend.send_messages([msg])
        finally:
            await anyio.to_thread.run_sync(view.close)

        assert msg.result is None  # not attempted
        assert server.count("MAIL") == 0
        assert backend.state is BackendState.CLOSED
        assert backend.pool is None
        assert await settle(lambda: server.live == 0), "a connection leaked"
        assert server.sessions[0].verbs()[-1] == "QUIT"
        # Closed, it may be used from this loop.
        assert await backend.send_messages([msg]) == 1

    assert [item.mail_from for item in server.accepted] == ["sender1@example.com"]
    assert result_of(msg).status is MessageStatus.SENT


async def test_opened_on_this_loop_then_used_from_a_thread() -> None:
    with scripted() as server:
        backend = make_backend(server)
        first, second = message(1), message(2)

        async with backend:
            assert await backend.send_messages([first]) == 1
            with pytest.raises(RuntimeError, match="another event loop"):
                await anyio.to_thread.run_sync(
                    lambda: asyncmail.send_mail(
                        "Subject",
                        "Body",
                        "sender3@example.com",
                        ["rcpt3@example.com"],
                        connection=backend,
                    )
                )
            with pytest.raises(RuntimeError, match="another event loop"):
                await anyio.to_thread.run_sync(
                    backend.blocking().send_messages, [second]
                )
            assert backend.state is BackendState.OPEN  # still usable here

        assert await settle(lambda: server.live == 0), "a connection leaked"

    assert [item.mail_from for item in server.accepted] == ["sender1@example.com"]
    assert server.count("MAIL") == 1
    (session,) = server.sessions
    assert session.verbs()[-1] == "QUIT"
    assert result_of(first).status is MessageStatus.SENT
    assert second.result is None


# -- concurrent automatic opens: the last one closes -------------------------


async def test_concurrent_sends_on_a_closed_backend_leave_it_closed() -> None:
    with scripted() as server:
        server.on("RCPT", reply("450 4.2.0 Try later"), match="slow@")
        backend = make_backend(server, retries=1, retry_backoff=0.2)
        fast = message(1, ["fast@example.com"])
        slow = message(2, ["slow@example.com"])
        counts: list[int] = []

        async def send(msg: EmailMessage) -> None:
            counts.append(await backend.send_messages([msg]))

        async with anyio.create_task_group() as group:
            group.start_soon(send, fast)
            group.start_soon(send, slow)

        assert counts == [1, 1]
        assert backend.state is BackendState.CLOSED
        assert backend.pool is None
        assert await settle(lambda: server.live == 0), "a connection leaked"

    assert sorted(item.rcpt_tos for item in server.accepted) == [
        ("fast@example.com",),
        ("slow@example.com",),
    ]
    assert all(session.verbs()[-1] == "QUIT" for session in server.sessions)
    assert result_of(fast).status is MessageStatus.SENT
    assert result_of(slow).status is MessageStatus.SENT
    assert result_of(slow).attempts == 2


# -- close() belongs to the loop that opened ---------------------------------------


async def test_close_from_another_loop_is_refused_and_changes_nothing() -> None:
    with scripted() as server:
        backend = make_backend(server)
        view = backend.blocking()
        assert await anyio.to_thread.run_sync(view.open) is True
        try:
            with pytest.raises(RuntimeError, match="another event loop"):
                await backend.close()
            assert backend.state is BackendState.OPEN
            assert backend.pool is not None
        finally:
            await anyio.to_thread.run_sync(view.close)
        assert backend.state is BackendState.CLOSED
        assert backend.bound_loop is None
        assert await settle(lambda: server.live == 0), "a connection leaked"
        # Closed properly, it may be used from this loop now.
        assert await backend.send_messages([message(1)]) == 1


# -- a cancelled open() leaves the backend closed ----------------------------------


async def test_cancelled_open_leaves_the_backend_closed() -> None:
    with scripted() as server:
        server.on("CONNECT", reply("421 4.3.2 Busy", close=True))  # every time
        backend = make_backend(server, retries=5, retry_backoff=30.0, deadline=300)
        with anyio.move_on_after(1.0) as scope:
            await backend.open()  # retrying, cancelled during the backoff
        assert scope.cancelled_caught
        assert backend.pool is None
        assert backend.bound_loop is None
        assert backend.state is BackendState.CLOSED
