"""The sync-call trap: backend coroutine methods that refuse to be called
from synchronous code.

``open``, ``close`` and ``send_messages`` are coroutine functions; called
from synchronous code they would only create a coroutine that never runs,
which code written for Django's synchronous backends
(``django.core.mail.send_mail`` with ``EMAIL_BACKEND`` pointing here) would
count as a message sent. :func:`awaited_only` makes such a call raise
TypeError at once, saying what to do instead.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import sys
from collections.abc import Callable, Coroutine
from types import FrameType
from typing import Any, ParamSpec, TypeVar

__all__ = ["AWAITED_METHODS", "awaited_only"]

P = ParamSpec("P")
T = TypeVar("T")

#: The backend methods that must be awaited (checked in every subclass too).
AWAITED_METHODS = ("open", "close", "send_messages")


def _called_from_sync_code(frame: FrameType | None) -> bool:
    """True when a coroutine method is being called where its coroutine
    cannot be awaited: in a thread with no running event loop, or by Django
    itself (its mail code calls backends synchronously and never awaits)."""
    if asyncio._get_running_loop() is None:
        return True
    module = frame.f_globals.get("__name__", "") if frame is not None else ""
    return isinstance(module, str) and module.startswith("django.")


def _sync_call_error(backend: object, method: str) -> TypeError:
    name = f"{type(backend).__module__}.{type(backend).__qualname__}"
    return TypeError(
        f"{name}.{method}() is a coroutine function and was called from "
        "synchronous code, where it would only return a coroutine that never "
        "runs (nothing would be sent). In async code, await it (asyncio.run() "
        "needs a coroutine of your own that awaits it). In blocking "
        f"code, use the blocking view: backend.blocking().{method}(...) or "
        f"'with backend as conn: conn.{method}(...)'. As Django's "
        "EMAIL_BACKEND (or a MAILERS BACKEND), use 'asyncmail.django.EmailBackend'."
    )


def awaited_only(
    method: Callable[P, Coroutine[Any, Any, T]],
) -> Callable[P, Coroutine[Any, Any, T]]:
    """Make a backend coroutine method raise TypeError, at call time, when
    it is called from synchronous code (see :func:`_called_from_sync_code`).

    An awaitable that complains only when it is never awaited is too late:
    Django's ``send_mail`` returns whatever ``send_messages`` returned, and
    a coroutine object is truthy, i.e. "1 message sent". Applied to
    ``open``, ``close`` and ``send_messages`` of every backend class,
    including subclasses that override them.
    """
    if getattr(method, "_asyncmail_awaited_only", False):
        return method

    @functools.wraps(method)
    def checked(*args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, T]:
        if _called_from_sync_code(sys._getframe(1)):
            raise _sync_call_error(args[0] if args else None, method.__name__)
        return method(*args, **kwargs)

    checked._asyncmail_awaited_only = True  # type: ignore[attr-defined]
    _mark_coroutine_function(checked)
    return checked


def _mark_coroutine_function(function: Callable[..., Any]) -> None:
    """Let introspection see *function* as the coroutine function it stands
    for: frameworks (Starlette's BackgroundTasks, FastAPI, Celery) look at
    ``inspect.iscoroutinefunction`` / ``asyncio.iscoroutinefunction`` to
    decide whether to await a callable or run it in a worker thread."""
    if sys.version_info >= (3, 12):
        inspect.markcoroutinefunction(function)
    # asyncio.iscoroutinefunction's own marker (what Python 3.11 checks).
    marker = getattr(asyncio.coroutines, "_is_coroutine", None)
    if marker is not None:
        function._is_coroutine = marker  # type: ignore[attr-defined]
