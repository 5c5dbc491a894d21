"""Blocking twins of the async API, through one shared library event loop.

All I/O logic is async and lives elsewhere; this module only carries calls
from synchronous code to it. The first blocking call starts one long-lived
event loop in a daemon thread (an anyio blocking portal, on uvloop when it is
installed); every later call, from any thread, runs its coroutine there and
waits for the result. So blocking calls work

* repeatedly from a plain script, with no "event loop is closed" errors
  (there is no ``asyncio.run`` per call);
* from many threads at once;
* from a thread whose own event loop is running (the call blocks that
  thread, as any blocking call would, but cannot deadlock: the work runs on
  the library's loop, not the caller's);
* after ``os.fork()`` (the child starts its own loop thread).

The caller's context variables (e.g. :func:`asyncmail.collect_results`) are
carried into the call. Interrupting the waiting thread (Ctrl-C) cancels the
call. The loop shuts down cleanly at interpreter exit, closing (QUIT) any
connection a script opened through a blocking view and never closed.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import contextvars
import os
import threading
import weakref
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from contextlib import AbstractContextManager
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, ParamSpec, TypeVar

import anyio
from anyio.from_thread import BlockingPortal, start_blocking_portal

from . import api
from .lazytext import freeze_call

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from .address import AddressLike
    from .backends.base import BaseEmailBackend, MessageSource
    from .results import ResultCallback

__all__ = [
    "BlockingBackend",
    "mail_admins",
    "mail_managers",
    "run_blocking",
    "send_mail",
    "send_mass_mail",
    "shutdown",
]

P = ParamSpec("P")
T = TypeVar("T")

#: How long shutdown waits for connections left open to close politely.
CLOSE_TIMEOUT: Final = 5.0


class _LibraryLoop:
    """The one event loop thread behind every blocking call (per process)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._portal: BlockingPortal | None = None
        self._context: AbstractContextManager[BlockingPortal] | None = None
        self._pid = 0
        self._thread_id: int | None = None
        # Backends opened through a blocking view: their connections live on
        # this loop, so shutdown closes them rather than leak open transports.
        self._opened: weakref.WeakSet[BaseEmailBackend] = weakref.WeakSet()

    def portal(self) -> BlockingPortal:
        portal = self._portal
        if portal is not None and self._pid == os.getpid():
            return portal
        with self._lock:
            if self._portal is None or self._pid != os.getpid():
                # After a fork the parent's loop thread does not exist here.
                self._start()
            assert self._portal is not None
            return self._portal

    def _start(self) -> None:
        options: dict[str, Any] = {}
        with contextlib.suppress(ImportError):
            import uvloop  # noqa: F401

            options["use_uvloop"] = True
        if self._pid != os.getpid():
            self._forget_parents_loop()
        context = start_blocking_portal("asyncio", options, name="asyncmail-event-loop")
        portal = context.__enter__()
        self._opened = weakref.WeakSet()  # after a fork: the parent's, not ours
        self._context = context
        self._portal = portal
        self._pid = os.getpid()
        self._thread_id = portal.call(threading.get_ident)

    def _forget_parents_loop(self, portal: BlockingPortal | None = None) -> None:
        """In a forked child: the parent's loop thread does not exist here.
        Mark its portal stopped, so that dropping its context (now, or at
        exit) does not wait forever for that thread to stop it."""
        portal = portal or self._portal
        if portal is not None:
            portal._event_loop_thread_id = None  # anyio's "not running"

    def opened(self, backend: BaseEmailBackend) -> None:
        """Remember a backend opened on this loop, to close it at shutdown."""
        with self._lock:
            self._opened.add(backend)

    def closed(self, backend: BaseEmailBackend) -> None:
        with self._lock:
            self._opened.discard(backend)

    def in_loop_thread(self) -> bool:
        return self._thread_id is not None and threading.get_ident() == self._thread_id

    def shutdown(self) -> None:
        with self._lock:
            context, self._context = self._context, None
            portal, self._portal = self._portal, None
            self._thread_id = None
            left_open, self._opened = list(self._opened), weakref.WeakSet()
            if self._pid != os.getpid():
                self._forget_parents_loop(portal)
            if context is None or portal is None or self._pid != os.getpid():
                return
            if left_open:
                with contextlib.suppress(Exception):
                    portal.call(_close_all, left_open)
            # Cancel whatever is still running (e.g. a connection a script left
            # open) instead of waiting for it forever, then join the thread.
            with contextlib.suppress(RuntimeError):
                portal.call(portal.stop, True)
            context.__exit__(None, None, None)


_loop = _LibraryLoop()
atexit.register(_loop.shutdown)


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
    would deadlock: await the async twin instead).
    """
    if _loop.in_loop_thread():
        raise RuntimeError(
            "A blocking asyncmail call was made from asyncmail's own event loop; "
            "await the async twin (e.g. asend_mail) instead."
        )
    portal = _loop.portal()
    context = contextvars.copy_context()
    # Lazy strings resolve here, in the caller's thread and language.
    call_args, call_kwargs = freeze_call(function, args, kwargs)
    future: Future[T] = portal.start_task_soon(
        _run_in_context, context, function, call_args, call_kwargs
    )
    try:
        return future.result()
    except BaseException:
        # Interrupted while waiting (KeyboardInterrupt): cancel the work.
        if not future.done():
            future.cancel()
        raise


class BlockingBackend:
    """A blocking view of an async backend, for synchronous code.

    Its ``open``, ``close`` and ``send_messages`` are ordinary methods that run
    on the library loop; a connection opened through the view stays open
    across calls until it is closed, exactly like the async backend.
    ``with backend as conn:`` yields one, as does ``backend.blocking()``.
    """

    def __init__(self, backend: BaseEmailBackend) -> None:
        self.backend = backend

    def open(self) -> bool | None:
        """Open the backend's connection (see BaseEmailBackend.open)."""
        _loop.opened(self.backend)
        return run_blocking(self.backend.open)

    def close(self) -> None:
        """Close the backend's connection."""
        run_blocking(self.backend.close)
        _loop.closed(self.backend)

    def open_for_block(self) -> None:
        """Open for a ``with`` block: close again if opening fails."""
        _loop.opened(self.backend)
        run_blocking(self.backend.__aenter__)

    def send_messages(
        self,
        email_messages: MessageSource,
        *,
        fail_silently: bool = False,
        on_result: ResultCallback | None = None,
    ) -> int:
        """Send messages; see BaseEmailBackend.send_messages."""
        return run_blocking(
            self.backend.send_messages,
            email_messages,
            fail_silently=fail_silently,
            on_result=on_result,
        )

    @property
    def fail_silently(self) -> bool:
        return self.backend.fail_silently

    def __enter__(self) -> BlockingBackend:
        self.open_for_block()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<BlockingBackend of {self.backend!r}>"


# -- the blocking twins of asyncmail.api ----------------------------------------


def send_mail(
    subject: str,
    message: str,
    from_email: AddressLike | None,
    recipient_list: Sequence[AddressLike],
    *,
    fail_silently: bool = False,
    auth_user: str | None = None,
    auth_password: str | None = None,
    connection: BaseEmailBackend | BlockingBackend | None = None,
    html_message: str | None = None,
    using: str | None = None,
) -> int:
    """Blocking :func:`asyncmail.asend_mail`; returns the number sent (0 or 1)."""
    return run_blocking(
        api.asend_mail,
        subject,
        message,
        from_email,
        recipient_list,
        fail_silently=fail_silently,
        auth_user=auth_user,
        auth_password=auth_password,
        connection=connection,  # type: ignore[arg-type]
        html_message=html_message,
        using=using,
    )


def send_mass_mail(
    datatuple: Iterable[tuple[str, str, AddressLike | None, Sequence[AddressLike]]],
    *,
    fail_silently: bool = False,
    auth_user: str | None = None,
    auth_password: str | None = None,
    connection: BaseEmailBackend | BlockingBackend | None = None,
    using: str | None = None,
) -> int:
    """Blocking :func:`asyncmail.asend_mass_mail`; one connection for all."""
    return run_blocking(
        api.asend_mass_mail,
        datatuple,
        fail_silently=fail_silently,
        auth_user=auth_user,
        auth_password=auth_password,
        connection=connection,  # type: ignore[arg-type]
        using=using,
    )


def mail_admins(
    subject: str,
    message: str,
    *,
    fail_silently: bool = False,
    connection: BaseEmailBackend | BlockingBackend | None = None,
    html_message: str | None = None,
    using: str | None = None,
) -> None:
    """Blocking :func:`asyncmail.amail_admins`."""
    run_blocking(
        api.amail_admins,
        subject,
        message,
        fail_silently=fail_silently,
        connection=connection,  # type: ignore[arg-type]
        html_message=html_message,
        using=using,
    )


def mail_managers(
    subject: str,
    message: str,
    *,
    fail_silently: bool = False,
    connection: BaseEmailBackend | BlockingBackend | None = None,
    html_message: str | None = None,
    using: str | None = None,
) -> None:
    """Blocking :func:`asyncmail.amail_managers`."""
    run_blocking(
        api.amail_managers,
        subject,
        message,
        fail_silently=fail_silently,
        connection=connection,  # type: ignore[arg-type]
        html_message=html_message,
        using=using,
    )
