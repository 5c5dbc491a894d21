"""The one lock shared by threads and event loops (asyncmail.threads.SharedLock).

It serialises blocking code and tasks on several loops alike, in the order
they asked, survives cancelled waiters, refuses the one wait that could
never end, and starts free in a forked child even when another thread of
the parent held it at the fork (the settings lock is one of them).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import threading
import time

import anyio.to_thread
import pytest

from asyncmail.threads import SharedLock

#: Long enough for any wait in these tests on a loaded machine.
WAIT = 20.0


def _wait_for(condition: object, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.001)


def test_threads_and_loops_never_overlap() -> None:
    lock = SharedLock()
    inside: list[str] = []
    overlaps: list[list[str]] = []
    done: list[str] = []

    def enter(who: str) -> None:
        inside.append(who)
        if len(inside) > 1:
            overlaps.append(list(inside))

    async def tasks(name: str) -> None:
        async def one(index: int) -> None:
            for _ in range(20):
                async with lock:
                    enter(f"{name}-{index}")
                    await asyncio.sleep(0)  # other tasks run meanwhile
                    inside.pop()
            done.append(f"{name}-{index}")

        await asyncio.gather(*(one(index) for index in range(5)))

    def blocking(name: str) -> None:
        for _ in range(20):
            with lock:
                enter(name)
                time.sleep(0)
                inside.pop()
        done.append(name)

    threads = [
        threading.Thread(target=asyncio.run, args=(tasks("loop1"),)),
        threading.Thread(target=asyncio.run, args=(tasks("loop2"),)),
        threading.Thread(target=blocking, args=("thread1",)),
        threading.Thread(target=blocking, args=("thread2",)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    assert overlaps == []
    assert len(done) == 12
    assert not lock.locked()


def test_waiters_of_both_kinds_get_it_in_the_order_they_asked() -> None:
    lock = SharedLock()
    order: list[str] = []
    lock.acquire()

    def blocking(name: str) -> None:
        with lock:
            order.append(name)

    async def task(name: str) -> None:
        async with lock:
            order.append(name)
            await asyncio.sleep(0)

    threads = []
    for index, name in enumerate(["t1", "a1", "t2", "a2", "t3"]):
        if name.startswith("t"):
            thread = threading.Thread(target=blocking, args=(name,))
        else:
            thread = threading.Thread(target=asyncio.run, args=(task(name),))
        thread.start()
        threads.append(thread)
        _wait_for(lambda count=index + 1: len(lock._waiters) == count, name)
    lock.release()
    for thread in threads:
        thread.join(WAIT)
    assert order == ["t1", "a1", "t2", "a2", "t3"]
    assert not lock.locked()


@pytest.mark.anyio
async def test_a_cancelled_waiter_gives_its_turn_to_the_next() -> None:
    lock = SharedLock()
    got: list[str] = []

    async def wait(name: str) -> None:
        async with lock:
            got.append(name)

    async with lock:
        first = asyncio.get_running_loop().create_task(wait("first"))
        second = asyncio.get_running_loop().create_task(wait("second"))
        await asyncio.sleep(0)
        assert len(lock._waiters) == 2
        first.cancel()  # cancelled before its turn
        await asyncio.sleep(0)
        assert len(lock._waiters) == 1
    await second
    assert first.cancelled()
    assert got == ["second"]
    assert not lock.locked()


@pytest.mark.anyio
async def test_a_waiter_cancelled_after_its_turn_came_passes_it_on() -> None:
    lock = SharedLock()
    got: list[str] = []

    async def wait(name: str) -> None:
        async with lock:
            got.append(name)

    await lock.__aenter__()
    first = asyncio.get_running_loop().create_task(wait("first"))
    second = asyncio.get_running_loop().create_task(wait("second"))
    await asyncio.sleep(0)
    lock.release()  # handed to "first", which has not run yet
    first.cancel()
    await second
    assert first.cancelled()
    assert got == ["second"]
    assert not lock.locked()


@pytest.mark.anyio
async def test_a_blocking_wait_on_the_loop_that_holds_it_is_refused() -> None:
    lock = SharedLock()
    async with lock:
        with pytest.raises(RuntimeError, match="async with"):
            lock.acquire()
    assert lock.acquire(blocking=False)
    lock.release()
    with pytest.raises(RuntimeError, match="not held"):
        lock.release()


def test_blocking_acquire_without_waiting() -> None:
    lock = SharedLock()
    assert lock.acquire(blocking=False)
    assert lock.locked()
    assert not lock.acquire(blocking=False)
    lock.release()
    assert not lock.locked()


FORK_SCRIPT = """
import os, threading, time
import asyncmail
from asyncmail import dnsname
from asyncmail.settings import settings
from asyncmail.threads import SharedLock

extra = SharedLock()
held = threading.Event()
release = threading.Event()

def hold():
    with settings._lock, extra, dnsname._lock:
        held.set()
        release.wait()

thread = threading.Thread(target=hold)
thread.start()
held.wait()
pid = os.fork()
if pid == 0:
    # The holder thread does not exist here: every lock must be free.
    asyncmail.configure(EMAIL_HOST="child.example")
    with settings.override(EMAIL_PORT=2525):
        assert settings.EMAIL_PORT == 2525
    with extra:
        pass
    assert dnsname.get_fqdn()
    print("child", settings.EMAIL_HOST, flush=True)
    os._exit(0)
deadline = time.monotonic() + 20
while time.monotonic() < deadline:
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        break
    time.sleep(0.01)
else:
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    status = "hung"
release.set()
thread.join()
asyncmail.configure(EMAIL_HOST="parent.example")  # the parent's lock works on
print("parent", status, settings.EMAIL_HOST)
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_locks_held_by_another_thread_are_free_in_a_forked_child() -> None:
    process = subprocess.run(
        [
            *(sys.executable, "-X", "dev", "-W", "error"),
            # Python 3.12+ warns that forking a threaded process is risky.
            *("-W", "ignore:This process:DeprecationWarning"),
            *("-c", textwrap.dedent(FORK_SCRIPT)),
        ],
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert process.stderr == ""
    assert process.returncode == 0, process.stdout
    assert process.stdout.splitlines() == [
        "child child.example",
        "parent 0 parent.example",
    ]


def test_the_fqdn_is_looked_up_once_for_every_loop_and_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Concurrent first look-ups from two event loops and a blocking caller
    share one: the others wait for the lock (the loops without blocking)."""
    import socket

    from asyncmail import dnsname

    lookups: list[str] = []
    release = threading.Event()

    def getfqdn(name: str = "") -> str:
        lookups.append(threading.current_thread().name)
        assert release.wait(WAIT)
        return "shared.example"

    monkeypatch.setattr(dnsname, "_fqdn", None)
    monkeypatch.setattr(socket, "getfqdn", getfqdn)
    found: list[str] = []

    async def on_a_loop() -> None:
        found.append(await dnsname.aget_fqdn())

    threads = [
        threading.Thread(target=asyncio.run, args=(on_a_loop(),)),
        threading.Thread(target=asyncio.run, args=(on_a_loop(),)),
        threading.Thread(target=lambda: found.append(dnsname.get_fqdn())),
    ]
    threads[0].start()
    _wait_for(lambda: lookups, "the first look-up")
    for thread in threads[1:]:
        thread.start()
    _wait_for(lambda: len(dnsname._lock._waiters) == 2, "two waiters")
    release.set()
    for thread in threads:
        thread.join(WAIT)
    assert found == ["shared.example"] * 3
    assert len(lookups) == 1
    assert not dnsname._lock.locked()


@pytest.mark.anyio
async def test_a_blocking_fqdn_read_on_the_loop_awaiting_it_does_not_hang(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """get_fqdn() called on the loop whose task holds the look-up (e.g. a
    message rendered there meanwhile) looks up by itself instead of waiting
    for a task that cannot resume."""
    import socket

    from asyncmail import dnsname

    release = threading.Event()
    started = threading.Event()
    calls: list[int] = []

    def getfqdn(name: str = "") -> str:
        calls.append(1)
        if len(calls) == 1:
            started.set()
            assert release.wait(WAIT)
        return "own.example"

    monkeypatch.setattr(dnsname, "_fqdn", None)
    monkeypatch.setattr(socket, "getfqdn", getfqdn)
    first = asyncio.get_running_loop().create_task(dnsname.aget_fqdn())
    assert await anyio.to_thread.run_sync(started.wait, WAIT)
    assert dnsname.get_fqdn() == "own.example"  # not blocked by the holder
    release.set()
    assert await first == "own.example"
    assert len(calls) == 2
