"""The library's event loop: one thread per process behind every blocking call.

All I/O logic is async and lives elsewhere; this module only carries calls
from synchronous code to it (:func:`run_blocking`). The first blocking
call starts one long-lived event loop in a daemon thread (an anyio blocking
portal, on uvloop when it is installed); every later call, from any
thread, runs its coroutine there and waits for the result. So blocking calls work

* repeatedly from a plain script, with no "event loop is closed" errors
  (there is no ``asyncio.run`` per call);
* from many threads at once;
* from a thread whose own event loop is running (the call blocks that
  thread, as any blocking call would, but cannot deadlock: the work runs on
  the library's loop, not the caller's);
* after ``os.fork()``: the child starts its own loop thread on its first
  call and never touches the parent's loop or connections (Celery's prefork
  pool, gunicorn ``--preload``, multiprocessing's fork start method);
* at interpreter exit: from an atexit handler (whenever it was registered)
  or a non-daemon thread still running after the main thread returned. A
  call made while the interpreter is *finalizing* (``__del__`` of an object
  that lived until then) fails at once with RuntimeError instead of hanging.

The caller's context variables (e.g. :func:`asyncmail.collect_results`) are
carried into the call. Interrupting the waiting thread (Ctrl-C) cancels the
call. The loop shuts down cleanly at interpreter exit, closing (QUIT) any
connection a script opened through a blocking view and never closed.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import concurrent.futures.thread
import contextlib
import contextvars
import functools
import os
import queue
import sys
import threading
import weakref
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final, ParamSpec, TypeVar

import anyio
from anyio.from_thread import BlockingPortal

from .lazytext import freeze_call
from .threads import SharedLock

if TYPE_CHECKING:
    from .backends.base import BaseEmailBackend

__all__ = ["run_blocking", "shutdown"]

P = ParamSpec("P")
T = TypeVar("T")

#: How long shutdown waits for connections left open to close politely.
CLOSE_TIMEOUT: Final = 5.0
#: How long shutdown waits for the loop thread to end once told to stop.
JOIN_TIMEOUT: Final = 10.0
#: How often a waiting caller checks that the loop thread is still alive.
_WAIT_SLICE: Final = 1.0
#: The name of the library loop's thread.
THREAD_NAME: Final = "asyncmail-event-loop"

# Import uvloop (when installed) and concurrent.futures.thread now, not when
# the first blocking call starts the loop: importing the latter (uvloop does)
# registers a threading exit hook, and that fails once the interpreter began
# shutting down ("can't register atexit after shutdown"), i.e. for a first
# call from an atexit handler or a non-daemon thread running after main.
try:
    import uvloop as _uvloop  # noqa: F401

    _LOOP_OPTIONS: dict[str, Any] = {"use_uvloop": True}
except ImportError:  # pragma: no cover - uvloop is an optional extra
    _LOOP_OPTIONS = {}

# Objects of the parent's loop after os.fork(): kept referenced so that the
# child never finalises them (finalising the parent's portal would wait for a
# loop thread that does not exist in the child).
_inherited: list[object] = []


class _DaemonExecutor(concurrent.futures.ThreadPoolExecutor):
    """The library loop's default executor (blocking DNS look-ups etc.).

    asyncio's default, a plain ThreadPoolExecutor, refuses work once the
    interpreter started shutting down, so a send from an atexit handler or a
    late non-daemon thread would fail to resolve its host. These workers are
    daemon threads of our own, at most ``max_workers``, started on demand
    (a ThreadPoolExecutor only by type: asyncio insists on one).
    """

    def __init__(self, max_workers: int) -> None:
        super().__init__(max_workers)
        self._max_workers = max_workers
        self._calls: queue.SimpleQueue[
            tuple[concurrent.futures.Future[Any], Callable[[], Any]]
        ] = queue.SimpleQueue()
        self._guard = SharedLock()
        self._started = 0
        self._waiting = 0

    def after_fork_in_child(self) -> None:
        """In a forked child the parent's workers do not exist: count none,
        and drop the calls queued for them (their futures are the parent's)."""
        self._calls = queue.SimpleQueue()
        self._started = 0
        self._waiting = 0

    def submit(
        self, fn: Callable[..., T], /, *args: Any, **kwargs: Any
    ) -> concurrent.futures.Future[T]:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._calls.put((future, functools.partial(fn, *args, **kwargs)))
        with self._guard:
            if self._waiting == 0 and self._started < self._max_workers:
                self._started += 1
                threading.Thread(
                    target=self._work, name="asyncmail-worker", daemon=True
                ).start()
        return future

    def _work(self) -> None:
        while True:
            with self._guard:
                self._waiting += 1
            future, call = self._calls.get()
            with self._guard:
                self._waiting -= 1
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = call()
            except BaseException as exc:
                future.set_exception(exc)
            else:
                future.set_result(result)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Nothing to do: the workers are shared by every library loop."""


_executor = _DaemonExecutor(max_workers=4)
os.register_at_fork(after_in_child=_executor.after_fork_in_child)


class _LibraryLoop:
    """The one event loop thread behind every blocking call (per process).

    The thread is a daemon thread of our own running ``anyio.run`` with a
    blocking portal in its main task. Three moments need care:

    * after ``os.fork()`` the child has none of the parent's threads: it
      forgets the parent's loop (never finalising it) and starts its own on
      its first call (:meth:`after_fork_in_child`);
    * at interpreter exit the loop is stopped (:meth:`at_exit`); a call made
      later still (an atexit handler registered before asyncmail was
      imported) starts a loop for that call and stops it again afterwards,
      so the process still exits;
    * during interpreter finalisation (``__del__`` of an object that lived
      until then) daemon threads can no longer run: a call fails at once.
    """

    def __init__(self) -> None:
        self._lock = SharedLock()
        self._portal: BlockingPortal | None = None
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self._thread_id: int | None = None
        self._exited = False  # at_exit ran: every later call stops the loop after
        self._late_calls = 0
        # Backends opened through a blocking view: their connections live on
        # this loop, so shutdown closes them rather than leak open transports.
        self._opened: weakref.WeakSet[BaseEmailBackend] = weakref.WeakSet()

    def portal(self) -> BlockingPortal:
        portal = self._portal
        if portal is not None and self._pid == os.getpid():
            return portal
        with self._lock:
            if self._pid != os.getpid():  # forked without the hook (cannot happen)
                self._forget()
            if self._portal is None:
                self._start()
            assert self._portal is not None
            return self._portal

    def _start(self) -> None:
        ready: concurrent.futures.Future[BlockingPortal] = concurrent.futures.Future()

        async def serve() -> None:
            asyncio.get_running_loop().set_default_executor(_executor)
            async with BlockingPortal() as portal:
                ready.set_result(portal)
                await portal.sleep_until_stopped()

        def run() -> None:
            try:
                anyio.run(serve, backend="asyncio", backend_options=_LOOP_OPTIONS)
            except BaseException as exc:  # reported to the starter
                if not ready.done():
                    ready.set_exception(exc)

        thread = threading.Thread(target=run, name=THREAD_NAME, daemon=True)
        try:
            thread.start()
        except RuntimeError as exc:
            # Python 3.12.0 and 3.12.1 refuse new threads once shutdown began
            # (from threading's join of non-daemon threads on); 3.12.2+ and
            # the others allow them until the interpreter finalises.
            raise RuntimeError(
                f"asyncmail cannot start its event loop thread ({exc}): this "
                "Python does not allow new threads while the interpreter shuts "
                "down. Make a first blocking call before exit, or use Python "
                "3.12.2 or later."
            ) from exc
        portal = ready.result()
        self._thread = thread
        self._portal = portal
        self._thread_id = thread.ident

    def _forget(self) -> None:
        """Drop the loop without stopping it (it is not ours to stop)."""
        _inherited.append((self._portal, self._thread, self._opened))
        self._portal = None
        self._thread = None
        self._thread_id = None
        self._opened = weakref.WeakSet()
        self._pid = os.getpid()

    def after_fork_in_child(self) -> None:
        """In a forked child: the parent's loop thread does not exist here.

        Forget its portal (finalising it would wait forever for that thread)
        and the backends opened on it (their connections are the parent's);
        the child's first call starts a loop of its own. (The lock, which a
        parent thread may have held at the fork, is a SharedLock: free again
        in the child.)
        """
        self._forget()
        self._exited = False
        self._late_calls = 0

    def opened(self, backend: BaseEmailBackend) -> None:
        """Remember a backend opened on this loop, to close it at shutdown."""
        with self._lock:
            self._opened.add(backend)

    def closed(self, backend: BaseEmailBackend) -> None:
        with self._lock:
            self._opened.discard(backend)

    def in_loop_thread(self) -> bool:
        return self._thread_id is not None and threading.get_ident() == self._thread_id

    def alive(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    def call_started(self) -> bool:
        """Count a call made after at_exit (True: stop the loop after it)."""
        if not self._exited:
            return False
        with self._lock:
            self._late_calls += 1
        return True

    def call_finished(self) -> None:
        with self._lock:
            self._late_calls -= 1
            last = self._late_calls == 0
        if last:
            self.shutdown()

    def at_exit(self) -> None:
        self._exited = True
        self.shutdown()

    def shutdown(self) -> None:
        with self._lock:
            portal, self._portal = self._portal, None
            thread, self._thread = self._thread, None
            self._thread_id = None
            left_open, self._opened = list(self._opened), weakref.WeakSet()
            if portal is None or thread is None or self._pid != os.getpid():
                return
            if left_open:
                with contextlib.suppress(Exception):
                    portal.call(_close_all, left_open)
            # Cancel whatever is still running (e.g. a connection a script left
            # open) instead of waiting for it forever, then join the thread.
            with contextlib.suppress(RuntimeError):
                portal.call(portal.stop, True)
            thread.join(JOIN_TIMEOUT)


_loop = _LibraryLoop()
atexit.register(_loop.at_exit)
os.register_at_fork(after_in_child=_loop.after_fork_in_child)


def shutdown() -> None:
    """Stop the library's event loop thread (it restarts on the next call).

    Connections still open through a blocking view are closed first (the
    backend is closed: a later ``send_messages`` on it opens a new
    connection). Called automatically at interpreter exit.
    """
    _loop.shutdown()


async def _close_all(backends: list[BaseEmailBackend]) -> None:
    """Close *backends* concurrently, politely but within CLOSE_TIMEOUT."""

    async def close(backend: BaseEmailBackend) -> None:
        with contextlib.suppress(Exception):
            await backend.close()

    with anyio.move_on_after(CLOSE_TIMEOUT):
        async with anyio.create_task_group() as group:
            for backend in backends:
                group.start_soon(close, backend)


async def _run_in_context(
    context: contextvars.Context,
    function: Callable[..., Awaitable[T]],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> T:
    async def call() -> T:
        return await function(*args, **kwargs)

    task = asyncio.get_running_loop().create_task(call(), context=context)
    try:
        return await task
    finally:
        if not task.done():
            task.cancel()


def run_blocking(
    function: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs
) -> T:
    """Run ``await function(*args, **kwargs)`` on the library loop and wait.

    Raises RuntimeError when called from the library loop's own thread (that
    would deadlock: await the async twin instead), and at once, rather than
    hang, during interpreter finalisation (e.g. from ``__del__`` of an object
    that lived until then), when no thread but the caller's can run.
    """
    if sys.is_finalizing():
        raise RuntimeError(
            "asyncmail cannot make a blocking call while the interpreter is "
            "finalizing (e.g. from __del__ at exit): its event loop thread can "
            "no longer run. Send before exit, e.g. from an atexit handler."
        )
    if _loop.in_loop_thread():
        raise RuntimeError(
            "A blocking asyncmail call was made from asyncmail's own event loop; "
            "await the async twin (e.g. asend_mail) instead."
        )
    late = _loop.call_started()
    try:
        portal = _loop.portal()
        context = contextvars.copy_context()
        # Lazy strings resolve here, in the caller's thread and language.
        call_args, call_kwargs = freeze_call(function, args, kwargs)
        future: concurrent.futures.Future[T] = portal.start_task_soon(
            _run_in_context, context, function, call_args, call_kwargs
        )
        try:
            return _wait(future)
        except BaseException:
            # Interrupted while waiting (KeyboardInterrupt): cancel the work.
            if not future.done():
                future.cancel()
            raise
    finally:
        if late:
            _loop.call_finished()


def _wait(future: concurrent.futures.Future[T]) -> T:
    """The future's result; fails instead of waiting forever if the loop
    thread died (it cannot answer any more)."""
    while True:
        try:
            return future.result(_WAIT_SLICE)
        except concurrent.futures.TimeoutError:
            if future.done():
                raise  # the call itself raised a TimeoutError
            if not _loop.alive():
                raise RuntimeError(
                    "asyncmail's event loop thread stopped before the call finished"
                ) from None
