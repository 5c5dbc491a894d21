"""The blocking facade: every blocking call runs on one library event loop.

These tests are plain synchronous code, as a script, a thread pool or a
Celery-style worker would call asyncmail, and check what the real SMTP
server received. One runs a whole script in a subprocess to see that it
exits cleanly.
"""

from __future__ import annotations

import asyncio
import importlib.util
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import asyncmail
import asyncmail.sync
from asyncmail import (
    EmailMessage,
    MessageResult,
    MessageStatus,
    get_connection,
    mail_admins,
    send_mail,
    send_mass_mail,
)
from asyncmail.backends.base import BackendState
from smtpserver import SMTPServer

FROM = "sender@example.com"
TO = "to@example.com"
LOOP_THREAD = "asyncmail-event-loop"


@pytest.fixture
def server() -> Iterator[SMTPServer]:
    """A test server, and the settings that send to it by default."""
    with SMTPServer() as running:
        asyncmail.configure(
            EMAIL_HOST="127.0.0.1", EMAIL_PORT=running.port, EMAIL_TIMEOUT=10
        )
        yield running


def subjects(server: SMTPServer) -> list[str]:
    found = []
    for received in server.messages:
        for line in received.data.split(b"\r\n"):
            if line.startswith(b"Subject: "):
                found.append(line.removeprefix(b"Subject: ").decode())
    return found


def loop_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == LOOP_THREAD and t.is_alive()]


def test_repeated_blocking_calls(server: SMTPServer) -> None:
    for number in range(5):
        assert send_mail(f"call {number}", "body", FROM, [TO]) == 1
    assert EmailMessage("message.send", "body", FROM, [TO]).send() == 1
    assert send_mass_mail([("mass 1", "b", FROM, [TO]), ("mass 2", "b", FROM, [TO])])

    assert subjects(server) == [
        *(f"call {number}" for number in range(5)),
        "message.send",
        "mass 1",
        "mass 2",
    ]
    assert server.sessions == 7  # a connection per call; one for the mass mail
    assert len(loop_threads()) == 1  # one library loop, reused by every call


def test_many_threads_at_once(server: SMTPServer) -> None:
    start = threading.Barrier(20)
    errors: list[BaseException] = []
    counts: list[int] = []

    def worker(number: int) -> None:
        try:
            start.wait()
            counts.append(send_mail(f"thread {number}", "body", FROM, [TO]))
            with get_connection() as conn:
                counts.append(
                    conn.send_messages(
                        [EmailMessage(f"thread {number} conn", "b", FROM, [TO])]
                    )
                )
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert errors == []
    assert counts == [1] * 40
    expected = {f"thread {n}" for n in range(20)} | {
        f"thread {n} conn" for n in range(20)
    }
    assert sorted(subjects(server)) == sorted(expected)
    assert server.sessions == 40


def _loop_runners() -> list[Any]:
    runners: list[Any] = [pytest.param(asyncio.run, id="asyncio")]
    if importlib.util.find_spec("uvloop") is not None:
        import uvloop

        runners.append(pytest.param(uvloop.run, id="uvloop"))
    return runners


@pytest.mark.parametrize("run", _loop_runners())
def test_blocking_calls_from_a_running_event_loop(
    server: SMTPServer, run: Callable[[Any], Any]
) -> None:
    async def application(tag: str) -> int:
        # Blocking calls inside a coroutine: they block this loop, as any
        # blocking call would, but must not deadlock or touch this loop.
        sent = send_mail(f"{tag} send_mail", "body", FROM, [TO])
        sent += EmailMessage(f"{tag} send", "body", FROM, [TO]).send()
        with get_connection() as conn:
            sent += conn.send_messages([EmailMessage(f"{tag} conn", "b", FROM, [TO])])
        await asyncio.sleep(0)  # this loop still runs
        return sent

    # Two loops one after the other: nothing may stay bound to the first.
    assert run(application("first")) == 3
    assert run(application("second")) == 3

    assert subjects(server) == [
        "first send_mail",
        "first send",
        "first conn",
        "second send_mail",
        "second send",
        "second conn",
    ]


def test_blocking_connection_stays_open_across_calls(server: SMTPServer) -> None:
    backend = get_connection()

    with backend as conn:
        assert backend.state is BackendState.OPEN
        assert send_mail("one", "b", FROM, [TO], connection=conn) == 1
        assert send_mass_mail([("two", "b", FROM, [TO])], connection=conn) == 1
        assert conn.send_messages([EmailMessage("three", "b", FROM, [TO])]) == 1
        assert EmailMessage("four", "b", FROM, [TO], connection=backend).send() == 1
    assert backend.state is BackendState.CLOSED

    assert subjects(server) == ["one", "two", "three", "four"]
    assert server.sessions == 1
    assert server.recorder.raw[0].endswith(b"QUIT\r\n")


def test_explicit_blocking_open_and_close(server: SMTPServer) -> None:
    backend = get_connection()
    conn = backend.blocking()

    assert conn.open() is True
    try:
        for number in range(3):
            assert conn.send_messages([EmailMessage(f"m{number}", "b", FROM, [TO])])
        assert send_mail("m3", "b", FROM, [TO], connection=conn) == 1
    finally:
        conn.close()

    assert backend.state is BackendState.CLOSED
    assert server.sessions == 1
    assert len(server.messages) == 4


def test_blocking_call_from_the_library_loop_is_refused(server: SMTPServer) -> None:
    calls: list[BaseException] = []

    def on_result(result: MessageResult) -> None:
        # Callbacks run on the library's loop thread: a blocking call there
        # would wait for the loop it blocks.
        try:
            send_mail("nested", "b", FROM, [TO])
        except RuntimeError as exc:
            calls.append(exc)
            raise

    conn = get_connection().blocking()
    with pytest.raises(RuntimeError, match=r"own event loop.*await the async twin"):
        conn.send_messages(
            [EmailMessage("outer", "b", FROM, [TO])], on_result=on_result
        )

    assert len(calls) == 1
    assert subjects(server) == ["outer"]  # the nested call sent nothing
    # The loop is not wedged: the next call works.
    assert send_mail("after", "b", FROM, [TO]) == 1


def test_collect_results_across_the_portal(server: SMTPServer) -> None:
    server.recorder.refuse_rcpt["bad@example.com"] = "550 5.1.1 No such user"
    asyncmail.configure(ADMINS=["admin@example.com"])

    with asyncmail.collect_results() as outer:
        send_mail("one", "b", FROM, [TO])
        with asyncmail.collect_results() as inner:
            send_mass_mail([("two", "b", FROM, [TO]), ("three", "b", FROM, [TO])])
            send_mail("partial", "b", FROM, [TO, "bad@example.com"], fail_silently=True)
        mail_admins("four", "b")

    assert [r.status for r in outer] == [
        MessageStatus.SENT,
        MessageStatus.SENT,
        MessageStatus.SENT,
        MessageStatus.PARTIAL,
        MessageStatus.SENT,
    ]
    assert inner == outer[1:4]
    partial = outer[3]
    assert partial.accepted == [TO]
    assert partial.refused["bad@example.com"].code == 550
    assert all(r.message_id for r in outer)


def test_collect_results_per_thread(server: SMTPServer) -> None:
    collected: dict[int, list[str]] = {}
    start = threading.Barrier(5)

    def worker(number: int) -> None:
        start.wait()
        with asyncmail.collect_results() as results:
            for round_ in range(3):
                send_mail(f"t{number} r{round_}", "b", FROM, [TO])
        collected[number] = [
            str(r.message.subject) for r in results if r.message is not None
        ]

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert collected == {n: [f"t{n} r{r}" for r in range(3)] for n in range(5)}


def test_shutdown_then_the_next_call_works(server: SMTPServer) -> None:
    assert send_mail("before", "b", FROM, [TO]) == 1
    assert len(loop_threads()) == 1

    asyncmail.sync.shutdown()
    assert loop_threads() == []
    asyncmail.sync.shutdown()  # twice is harmless

    assert send_mail("after", "b", FROM, [TO]) == 1
    assert len(loop_threads()) == 1
    assert subjects(server) == ["before", "after"]


def test_shutdown_closes_connections_left_open(server: SMTPServer) -> None:
    backend = get_connection()
    conn = backend.blocking()
    conn.open()
    assert conn.send_messages([EmailMessage("kept open", "b", FROM, [TO])]) == 1

    asyncmail.sync.shutdown()

    assert backend.state is BackendState.CLOSED
    assert server.recorder.raw[0].endswith(b"QUIT\r\n")
    # The backend is closed, not broken: a later send opens a new connection.
    assert conn.send_messages([EmailMessage("later", "b", FROM, [TO])]) == 1
    assert server.sessions == 2


SCRIPT = """
import asyncio
import logging
import asyncmail
from asyncmail import EmailMessage, get_connection, send_mail

# asyncio debug mode (-X dev) logs slow callbacks as warnings: timing, not
# a fault. Errors ("Task was destroyed but it is pending!"...) still show.
logging.getLogger("asyncio").setLevel(logging.ERROR)
asyncmail.configure(EMAIL_HOST="127.0.0.1", EMAIL_PORT={port}, EMAIL_TIMEOUT=10)
sent = send_mail("script 1", "body", "a@example.com", ["b@example.com"])
sent += send_mail("script 2", "body", "a@example.com", ["b@example.com"])
with get_connection() as conn:
    sent += conn.send_messages([EmailMessage("script 3", "b", "a@example.com",
                                             ["b@example.com"])])

async def main():
    return send_mail("script 4", "body", "a@example.com", ["b@example.com"])

sent += asyncio.run(main())
# A connection the script never closes: exit must still be clean.
left_open = get_connection().blocking()
left_open.open()
sent += left_open.send_messages([EmailMessage("script 5", "b", "a@example.com",
                                              ["b@example.com"])])
print("sent", sent)
"""


def test_script_exits_cleanly(server: SMTPServer) -> None:
    code = textwrap.dedent(SCRIPT).format(port=server.port)

    # -X dev: ResourceWarnings and asyncio debug on; -W error: any warning
    # (an unclosed transport, "event loop is closed") fails the script.
    process = subprocess.run(
        [sys.executable, "-X", "dev", "-W", "error", "-c", code],
        capture_output=True,
        text=True,
        timeout=45,
        check=False,
    )

    assert process.stderr == ""
    assert process.returncode == 0
    assert process.stdout == "sent 5\n"
    assert subjects(server) == [f"script {n}" for n in range(1, 6)]
    assert server.sessions == 5
    assert all(raw.endswith(b"QUIT\r\n") for raw in server.recorder.raw)
