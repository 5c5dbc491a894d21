"""Blocking calls in forked children: os.fork, multiprocessing, prefork.

Each scenario runs as a script in a subprocess (with a timeout: a hang is a
failure, not a stuck test run) against the real test server in this
process, and the server's records show who sent what over which session:
the children send over sessions of their own, never over the parent's
inherited connection, and the parent's calls (even one in flight at the
fork) are unaffected.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections import defaultdict
from collections.abc import Iterator

import pytest

from smtpserver import SMTPServer

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")

PRELUDE = """
import asyncio, logging, os, sys, threading, time
import asyncmail
from asyncmail import EmailMessage, get_connection, send_mail

logging.getLogger("asyncio").setLevel(logging.ERROR)
asyncmail.configure(EMAIL_HOST="127.0.0.1", EMAIL_PORT={port}, EMAIL_TIMEOUT=10)

def mail(subject):
    return send_mail(subject, "body", "a@example.com", ["b@example.com"])

def wait_child(pid, seconds=20):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    os.kill(pid, 9)
    return "hung"
"""


@pytest.fixture
def server() -> Iterator[SMTPServer]:
    with SMTPServer() as running:
        yield running


def run(server: SMTPServer, body: str, *, no_uvloop: bool = False) -> str:
    """Run PRELUDE + *body* in a fresh interpreter; return its stdout."""
    code = textwrap.dedent(PRELUDE).format(port=server.port) + textwrap.dedent(body)
    if no_uvloop:  # the library loop on asyncio's own event loop
        code = "import sys; sys.modules['uvloop'] = None\n" + code
    process = subprocess.run(
        [
            sys.executable,
            "-X",
            "dev",
            "-W",
            "error",
            # Python 3.12+ warns that forking a threaded process is risky.
            "-W",
            "ignore:This process:DeprecationWarning",
            "-c",
            code,
        ],
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert process.stderr == ""
    assert process.returncode == 0, process.stdout
    return process.stdout


def sessions_by_subject(server: SMTPServer) -> dict[int, list[str]]:
    """The subjects the server accepted, grouped by the session they came in."""
    grouped: dict[int, list[str]] = defaultdict(list)
    for received in server.messages:
        for line in received.data.split(b"\r\n"):
            if line.startswith(b"Subject: "):
                subject = line.removeprefix(b"Subject: ").decode()
                grouped[received.session_id].append(subject)
    return dict(grouped)


def subjects(server: SMTPServer) -> list[str]:
    return sorted(s for group in sessions_by_subject(server).values() for s in group)


UVLOOP = pytest.mark.parametrize("no_uvloop", [False, True], ids=["default", "asyncio"])


@UVLOOP
def test_child_of_os_fork_sends(server: SMTPServer, no_uvloop: bool) -> None:
    out = run(
        server,
        """
        assert mail("parent before") == 1
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = 0 if mail("child") == 1 else 2
            finally:
                os._exit(code)
        print("child exit", wait_child(pid))
        print("parent after", mail("parent after"))
        """,
        no_uvloop=no_uvloop,
    )

    assert out == "child exit 0\nparent after 1\n"
    assert subjects(server) == ["child", "parent after", "parent before"]


def test_parent_call_in_flight_at_the_fork(server: SMTPServer) -> None:
    """A parent thread is waiting for the server when the main thread
    forks: the child sends on a loop of its own, the parent's call ends
    normally."""
    server.recorder.stall["DATA"] = 1.0  # the end of data is answered late
    out = run(
        server,
        """
        mail("warm-up")
        results = []
        sender = threading.Thread(target=lambda: results.append(mail("in flight")))
        sender.start()
        time.sleep(0.3)  # the parent's send is now waiting for its 250
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = 0 if mail("child") == 1 else 2
            finally:
                os._exit(code)
        sender.join(20)
        print("in flight", results)
        print("child exit", wait_child(pid))
        """,
    )

    assert out == "in flight [1]\nchild exit 0\n"
    assert subjects(server) == ["child", "in flight", "warm-up"]


def test_multiprocessing_fork_pool_sends(server: SMTPServer) -> None:
    out = run(
        server,
        """
        import multiprocessing

        def work(number):
            return mail(f"worker {number}")

        if __name__ == "__main__":
            assert mail("parent") == 1
            with multiprocessing.get_context("fork").Pool(3) as pool:
                print("sent", sum(pool.map(work, range(6), chunksize=1)))
        """,
    )

    assert out == "sent 6\n"
    assert subjects(server) == ["parent"] + [f"worker {n}" for n in range(6)]


@UVLOOP
def test_prefork_children_never_use_the_parents_connection(
    server: SMTPServer, no_uvloop: bool
) -> None:
    """Celery's prefork pattern: the parent holds an open connection (made
    before forking, e.g. at import time), then forks workers that send
    through the same backend object. Each child opens sessions of its own;
    nothing of a child's ever appears on the parent's session, which the
    parent keeps using afterwards."""
    out = run(
        server,
        """
        backend = get_connection()
        conn = backend.blocking()
        conn.open()
        conn.send_messages([EmailMessage("parent 1", "b", "a@example.com",
                                         ["b@example.com"])])
        children = []
        for number in range(2):
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    # The inherited, "open" backend: the child's own session.
                    sent = conn.send_messages([EmailMessage(
                        f"child {number} a", "b", "a@example.com", ["b@example.com"])])
                    sent += mail(f"child {number} b")
                    code = 0 if sent == 2 else 2
                finally:
                    if number == 0:
                        os._exit(code)
                # The second child exits normally: its atexit shutdown must
                # not touch (QUIT) the parent's connection either.
                sys.exit(code)
            children.append(pid)
        print("children", [wait_child(pid) for pid in children])
        print("parent 2", conn.send_messages([EmailMessage(
            "parent 2", "b", "a@example.com", ["b@example.com"])]))
        print("parent sessions", backend.pool.opened)
        conn.close()
        """,
        no_uvloop=no_uvloop,
    )

    assert out == "children [0, 0]\nparent 2 1\nparent sessions 1\n"
    grouped = sessions_by_subject(server)
    parent = [group for group in grouped.values() if "parent 1" in group]
    assert parent == [["parent 1", "parent 2"]]  # one session, no child's mail
    assert subjects(server) == sorted(
        ["parent 1", "parent 2", "child 0 a", "child 0 b", "child 1 a", "child 1 b"]
    )
    # The parent's session: one QUIT, at its very end (none from a child).
    parent_raw = next(raw for raw in server.recorder.raw if b"parent 1" in raw)
    assert parent_raw.count(b"QUIT") == 1
    assert parent_raw.endswith(b"QUIT\r\n")
    assert b"child" not in parent_raw


@UVLOOP
def test_child_gets_worker_threads_of_its_own(
    server: SMTPServer, no_uvloop: bool
) -> None:
    """The library loop's worker threads (blocking DNS look-ups and the like)
    are the parent's: a child that forked while they waited for work starts
    its own instead of queueing for threads it does not have."""
    out = run(
        server,
        """
        from asyncmail.sync import run_blocking

        async def in_worker():
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(None, threading.current_thread)

        parent_worker = run_blocking(in_worker)
        assert parent_worker.name == "asyncmail-worker", parent_worker.name
        assert mail("parent before") == 1
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                worker = run_blocking(in_worker)
                code = 0 if worker.name == "asyncmail-worker" else 2
                if code == 0 and mail("child") != 1:
                    code = 3
            finally:
                os._exit(code)
        print("child exit", wait_child(pid))
        print("parent worker", run_blocking(in_worker).name)
        """,
        no_uvloop=no_uvloop,
    )

    assert out == "child exit 0\nparent worker asyncmail-worker\n"
    assert subjects(server) == ["child", "parent before"]
