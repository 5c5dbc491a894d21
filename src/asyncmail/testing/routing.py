"""Which outbox, if any, captures the sends made right now.

This is the only part of :mod:`asyncmail.testing` the core imports: the
backend base asks :func:`capturing` on every ``send_messages`` call and on
``async with backend`` / ``with backend``, so it must stay cheap and import
nothing heavy. With no outbox active it is one context-variable read and
one empty-list test.

Resolution, in order:

1. the outbox bound to the current context (a test, a task, a thread that
   carries the test's context: blocking calls do);
2. else the only outbox active in the process, for code that runs outside
   the test's context (a thread the application started, a portal thread);
3. else, when several outboxes are active and the context names none,
   :class:`AmbiguousCaptureError`: the send cannot be attributed to a test,
   and guessing would put one test's mail in another's outbox.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING

from ..threads import SharedLock

if TYPE_CHECKING:
    from ..backends.base import BaseEmailBackend
    from .outbox import Outbox

__all__ = ["AmbiguousCaptureError", "active_outbox", "capturing"]

_current: ContextVar[Outbox | None] = ContextVar("asyncmail_outbox", default=None)
_active: list[Outbox] = []  # every outbox capturing now, in any context
_lock = SharedLock()


class AmbiguousCaptureError(RuntimeError):
    """A send outside any test's context while several outboxes capture."""


def active_outbox() -> Outbox | None:
    """The outbox that captures a send made now, or None (send for real)."""
    outbox = _current.get()
    if outbox is not None or not _active:
        return outbox
    with _lock:
        if len(_active) == 1:
            return _active[0]
        if not _active:
            return None
        count = len(_active)
    raise AmbiguousCaptureError(
        f"An e-mail was sent from outside any test's context while {count} "
        "mailoutbox captures are active (concurrent tests), so it cannot be "
        "attributed to one of them. Send from the test's own task or thread, "
        "or carry its context (contextvars.copy_context().run) into the "
        "thread you start."
    )


def capturing(backend: BaseEmailBackend) -> BaseEmailBackend | None:
    """The backend that stands in for *backend* while an outbox captures
    (None: no capture, or *backend* already is the stand-in)."""
    if _current.get() is None and not _active:
        return None
    from .outbox import CaptureBackend

    if isinstance(backend, CaptureBackend):
        return None
    outbox = active_outbox()
    if outbox is None:
        return None
    return CaptureBackend(
        outbox,
        fail_silently=backend.fail_silently,
        alias=backend.alias,
        replaces=type(backend),
    )
