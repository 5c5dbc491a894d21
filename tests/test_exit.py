"""Blocking sends at interpreter exit: they work or fail at once, and the
process always exits.

Each variant is a script run in a subprocess with a timeout (a hang fails
the test); the server's records say what was sent.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest

from smtpserver import SMTPServer

# Python 3.12.0 and 3.12.1 refuse to start threads once shutdown began: a
# send that needs the loop thread (re)started then fails at once, clearly.
NO_THREADS_AT_SHUTDOWN = (3, 12, 0) <= sys.version_info[:3] < (3, 12, 2)
REFUSED = "failed: RuntimeError asyncmail cannot start its event loop thread"


def late(subject: str) -> str:
    """What a send that must start the loop thread at shutdown prints."""
    return subject + (" " + REFUSED if NO_THREADS_AT_SHUTDOWN else " 1")


SETUP = """
import logging
logging.getLogger("asyncio").setLevel(logging.ERROR)

def configure():
    import asyncmail
    asyncmail.configure(EMAIL_HOST="127.0.0.1", EMAIL_PORT={port}, EMAIL_TIMEOUT=10)

def mail(subject):
    import asyncmail
    try:
        print(subject, asyncmail.send_mail(subject, "body", "a@example.com",
                                           ["b@example.com"]), flush=True)
    except Exception as exc:
        print(subject, "failed:", type(exc).__name__, exc, flush=True)
"""


@pytest.fixture
def server() -> Iterator[SMTPServer]:
    with SMTPServer() as running:
        yield running


def run(server: SMTPServer, body: str, *, no_uvloop: bool = False) -> str:
    code = textwrap.dedent(SETUP).format(port=server.port)
    if no_uvloop:  # asyncio's own loop, default executor and all
        code = "import sys; sys.modules['uvloop'] = None\n" + code
    code += textwrap.dedent(body)
    process = subprocess.run(
        [sys.executable, "-X", "dev", "-W", "error", "-c", code],
        capture_output=True,
        text=True,
        timeout=40,  # the process must exit on its own
        check=False,
    )
    assert process.stderr == ""
    assert process.returncode == 0
    return process.stdout


def subjects(server: SMTPServer) -> list[str]:
    found = []
    for received in server.messages:
        for line in received.data.split(b"\r\n"):
            if line.startswith(b"Subject: "):
                found.append(line.removeprefix(b"Subject: ").decode())
    return found


@pytest.mark.parametrize("first_call_at_exit", [False, True])
def test_atexit_handler_registered_before_import(
    server: SMTPServer, first_call_at_exit: bool
) -> None:
    """atexit runs handlers last-in first-out: this one runs after
    asyncmail's own shutdown, so the send needs the loop started again (and
    stopped again, or the interpreter would wait for it forever)."""
    out = run(
        server,
        f"""
        import atexit
        atexit.register(mail, "at exit")
        configure()
        if not {first_call_at_exit}:
            mail("in main")
        """,
    )

    lines = out.splitlines()
    assert [line.startswith(late("at exit")) for line in lines[-1:]] == [True]
    assert lines[:-1] == ([] if first_call_at_exit else ["in main 1"])
    expected = [] if first_call_at_exit else ["in main"]
    if not NO_THREADS_AT_SHUTDOWN:
        expected.append("at exit")
    assert subjects(server) == expected


@pytest.mark.parametrize("no_uvloop", [False, True], ids=["default", "asyncio"])
def test_atexit_handler_registered_after_import(
    server: SMTPServer, no_uvloop: bool
) -> None:
    """The first blocking call of the process, from an atexit handler that
    runs before asyncmail's shutdown."""
    out = run(
        server,
        """
        import atexit
        configure()
        atexit.register(mail, "at exit")
        """,
        no_uvloop=no_uvloop,
    )

    assert out.startswith(late("at exit"))
    assert subjects(server) == ([] if NO_THREADS_AT_SHUTDOWN else ["at exit"])


@pytest.mark.parametrize("no_uvloop", [False, True], ids=["default", "asyncio"])
def test_non_daemon_thread_after_main_returns(
    server: SMTPServer, no_uvloop: bool
) -> None:
    """The thread's first (and later) sends happen while the interpreter is
    joining non-daemon threads, after the main thread returned. The host
    name ("localhost") makes it resolve a name, which asyncio does in its
    default executor: that must still work at that point."""
    out = run(
        server,
        """
        import threading, time
        import asyncmail
        asyncmail.configure(EMAIL_HOST="localhost", EMAIL_PORT={port}, EMAIL_TIMEOUT=10)

        def late():
            time.sleep(0.5)  # main has returned by now
            mail("thread 1")
            mail("thread 2")

        threading.Thread(target=late).start()
        """.replace("{port}", str(server.port)),
        no_uvloop=no_uvloop,
    )

    first, second = out.splitlines()
    assert first.startswith(late("thread 1"))
    assert second.startswith(late("thread 2"))
    if not NO_THREADS_AT_SHUTDOWN:
        assert subjects(server) == ["thread 1", "thread 2"]


def test_send_from_del_during_finalisation_fails_at_once(server: SMTPServer) -> None:
    """An object alive until the interpreter finalises sends from __del__:
    no thread but the finalising one can run then, so the call fails at
    once with a clear error instead of hanging."""
    out = run(
        server,
        """
        import asyncmail
        configure()
        mail("in main")

        class Notifier:
            # Bound now: at finalisation even "import" no longer works.
            send, out = staticmethod(asyncmail.send_mail), print

            def __del__(self):
                try:
                    self.send("from __del__", "b", "a@example.com", ["b@example.com"])
                except Exception as exc:
                    self.out("from __del__ failed:", type(exc).__name__, exc)

        notifier = Notifier()
        notifier.cycle = notifier  # lives until the interpreter finalises
        """,
    )

    first, second = out.splitlines()
    assert first == "in main 1"
    assert second.startswith("from __del__ failed: RuntimeError")
    assert "finalizing" in second
    assert subjects(server) == ["in main"]


def test_send_from_del_before_exit_works(server: SMTPServer) -> None:
    """The counterpart: __del__ running during the program (not at
    finalisation) sends normally."""
    out = run(
        server,
        """
        import gc
        configure()

        class Notifier:
            def __del__(self):
                mail("from __del__")

        notifier = Notifier()
        del notifier
        gc.collect()
        mail("after")
        """,
    )

    assert out == "from __del__ 1\nafter 1\n"
    assert subjects(server) == ["from __del__", "after"]


def test_connection_left_open_and_a_late_send(server: SMTPServer) -> None:
    """A connection the script never closed, plus a send from an atexit
    handler that runs after asyncmail's shutdown: both sessions end with
    QUIT and the process exits."""
    out = run(
        server,
        """
        import atexit
        atexit.register(mail, "at exit")
        configure()
        from asyncmail import EmailMessage, get_connection
        conn = get_connection().blocking()
        conn.open()
        print("open", conn.send_messages([EmailMessage("kept open", "b",
                                          "a@example.com", ["b@example.com"])]))
        """,
    )

    first, second = out.splitlines()
    assert first == "open 1"
    assert second.startswith(late("at exit"))
    expected = ["kept open"] if NO_THREADS_AT_SHUTDOWN else ["kept open", "at exit"]
    assert subjects(server) == expected
    assert server.sessions == len(expected)
    assert all(raw.endswith(b"QUIT\r\n") for raw in server.recorder.raw)
