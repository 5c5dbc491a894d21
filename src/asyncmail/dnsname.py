"""The local host's fully qualified domain name, looked up once.

Used for the domain of generated Message-IDs and as the default EHLO name.
:func:`socket.getfqdn` can block for seconds on a slow resolver, so async code
calls :func:`aget_fqdn` (which does the lookup in a worker thread) and the
pure message code only ever reads the cached value via :func:`get_fqdn`.
Concurrent first calls share one look-up (one thread, not one each).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import re
import socket
import threading

from .threads import run_sync

__all__ = ["aget_fqdn", "get_fqdn"]

_lock = threading.Lock()
_fqdn: str | None = None
#: The look-up under way: its name, or None if it failed (look up again).
_pending: concurrent.futures.Future[str | None] | None = None
_HOST_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,252}[A-Za-z0-9])?\Z")


def _lookup() -> str:
    name = socket.getfqdn()
    try:
        name = name.encode("idna").decode("ascii")
    except UnicodeError:
        return "localhost"
    # Whatever the resolver says must be safe inside a msg-id and an EHLO.
    return name if _HOST_NAME.match(name) else "localhost"


def get_fqdn() -> str:
    """The cached, IDNA-encoded FQDN (looked up now, blocking, if not yet known)."""
    global _fqdn  # noqa: PLW0603 - a process-wide cache, set once
    if _fqdn is None:
        with _lock:
            if _fqdn is None:
                _fqdn = _lookup()
    return _fqdn


async def aget_fqdn() -> str:
    """The cached FQDN; the first call looks it up in a worker thread, and
    calls made meanwhile (from any loop) wait for that same look-up."""
    global _pending  # noqa: PLW0603 - the one look-up in flight
    if _fqdn is not None:
        return _fqdn
    with _lock:
        pending = _pending
        first = pending is None
        if pending is None:
            pending = _pending = concurrent.futures.Future()
    if not first:
        shared = await asyncio.wrap_future(pending)
        return shared if shared is not None else await run_sync(get_fqdn)
    try:
        name = await run_sync(get_fqdn)
    except BaseException:
        pending.set_result(None)  # e.g. this caller was cancelled
        raise
    finally:
        with _lock:
            _pending = None
    pending.set_result(name)
    return name


def _after_fork_in_child() -> None:
    # A parent thread may have held the lock, or a look-up been under way.
    global _lock, _pending  # noqa: PLW0603
    _lock = threading.Lock()
    _pending = None


os.register_at_fork(after_in_child=_after_fork_in_child)
