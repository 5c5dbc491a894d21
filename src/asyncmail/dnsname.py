"""Host names: IDNA 2008 conversion, and the local host's FQDN looked up once.

:func:`ascii_hostname` is the one place a domain becomes ASCII, for message
headers and the SMTP envelope alike: IDNA 2008 with the UTS 46 mapping
(through the ``idna`` package; the stdlib's ``"idna"`` codec is IDNA 2003,
which maps ``faß.de`` to another domain, ``fass.de``). Invalid labels and
A-labels (``xn--...``) that do not decode are refused.

Used for the domain of generated Message-IDs and as the default EHLO name.
:func:`socket.getfqdn` can block for seconds on a slow resolver, so async code
calls :func:`aget_fqdn` (which does the lookup in a worker thread) and the
pure message code only ever reads the cached value via :func:`get_fqdn`.
Concurrent first calls share one look-up (one thread, not one each):
the others await :data:`_lock`, the process's one cross-loop lock.
"""

from __future__ import annotations

import re
import socket

import idna

from .threads import SharedLock, run_sync

__all__ = ["aget_fqdn", "ascii_hostname", "get_fqdn"]

#: Held while the FQDN is looked up (reset in a forked child, as every
#: SharedLock is): concurrent first calls share one look-up.
_lock = SharedLock()
_fqdn: str | None = None
_HOST_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,252}[A-Za-z0-9])?\Z")


_LDH_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\Z")
MAX_HOSTNAME = 253


def ascii_hostname(name: str) -> str | None:
    """The ASCII form of host name *name*, or None when it is not a valid one.

    ASCII names must be LDH labels (letters, digits, inner hyphens, at most
    63 characters each); a label starting ``xn--`` must be a valid A-label.
    Other names go through IDNA 2008 with UTS 46 mapping (non-transitional:
    ``ß`` stays ``ß``), then must meet the same rules. At most 253 octets.
    """
    if len(name) > 4 * MAX_HOSTNAME:  # a length guard before any work
        return None
    if name.isascii():
        labels = name.split(".")
        if not all(_LDH_LABEL.match(label) for label in labels):
            return None
        if not any(label[:4].lower() == "xn--" for label in labels):
            return name if len(name) <= MAX_HOSTNAME else None
    try:
        ascii_name = idna.encode(
            name, uts46=True, std3_rules=True, transitional=False
        ).decode("ascii")
    except (idna.IDNAError, UnicodeError, ValueError):
        return None
    labels = ascii_name.split(".")
    if len(ascii_name) > MAX_HOSTNAME or not all(
        _LDH_LABEL.match(label) for label in labels
    ):
        return None
    return ascii_name


def _lookup() -> str:
    name = ascii_hostname(socket.getfqdn())
    # Whatever the resolver says must be safe inside a msg-id and an EHLO.
    return name if name is not None and _HOST_NAME.match(name) else "localhost"


def get_fqdn() -> str:
    """The cached, IDNA-encoded FQDN (looked up now, blocking, if not yet known)."""
    global _fqdn  # noqa: PLW0603 - a process-wide cache, set once
    if _fqdn is None:
        try:
            _lock.acquire()
        except RuntimeError:
            # This thread's own loop is awaiting the look-up (waiting for it
            # here could never end): look up too; the answer is the same.
            return _lookup()
        try:
            if _fqdn is None:
                _fqdn = _lookup()
        finally:
            _lock.release()
    return _fqdn


async def aget_fqdn() -> str:
    """The cached FQDN; the first call looks it up in a worker thread, and
    calls made meanwhile (from any loop) wait for that same look-up."""
    global _fqdn  # noqa: PLW0603 - a process-wide cache, set once
    if _fqdn is None:
        async with _lock:  # a caller cancelled meanwhile leaves it to the next
            if _fqdn is None:
                _fqdn = await run_sync(_lookup)
    return _fqdn
