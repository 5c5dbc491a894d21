"""The local host's fully qualified domain name, looked up once.

Used for the domain of generated Message-IDs and as the default EHLO name.
:func:`socket.getfqdn` can block for seconds on a slow resolver, so async code
calls :func:`aget_fqdn` (which does the lookup in a worker thread) and the
pure message code only ever reads the cached value via :func:`get_fqdn`.
"""

from __future__ import annotations

import re
import socket
import threading

import anyio.to_thread

__all__ = ["aget_fqdn", "get_fqdn"]

_lock = threading.Lock()
_fqdn: str | None = None
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
    """The cached FQDN; the first call looks it up in a worker thread."""
    if _fqdn is not None:
        return _fqdn
    return await anyio.to_thread.run_sync(get_fqdn)
