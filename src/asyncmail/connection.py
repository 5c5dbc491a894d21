"""What ``connection=`` accepts: the async backend interface, as a Protocol.

``send_mail``, ``send_mass_mail``, ``mail_admins``, ``mail_managers``, their
async twins and :class:`~asyncmail.message.EmailMessage` take an open (or
openable) backend as ``connection=``. Any object with the async backend
interface fits :class:`Connection`: every asyncmail backend (each is a
:class:`~asyncmail.backends.base.BaseEmailBackend`) and a backend of your
own, subclass or not. A type checker refuses anything else (a string, a
Django backend, an object missing ``send_messages``).

Each also takes the blocking view of a backend (what ``with backend as
conn:`` and ``backend.blocking()`` give): that is :data:`ConnectionLike`.
As in Django, a message's ``connection`` stays the object the caller gave;
:func:`async_connection` turns either kind into the backend that does the
work, the one place that unwraps a view.
"""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING, Protocol, Self, TypeAlias

if TYPE_CHECKING:
    from .backends.base import MessageSource
    from .results import ResultCallback
    from .sync import BlockingBackend

__all__ = ["Connection", "ConnectionLike", "async_connection"]


class Connection(Protocol):
    """The async backend interface: ``open``, ``close``, ``send_messages``,
    and ``async with`` (which opens, then closes)."""

    async def open(self) -> bool | None:
        """Open the connection: True if opened now, False if already open,
        None if opening failed silently."""
        ...

    async def close(self) -> None:
        """Close the connection (a no-op when closed)."""
        ...

    async def send_messages(
        self,
        email_messages: MessageSource,
        *,
        fail_silently: bool = False,
        on_result: ResultCallback | None = None,
    ) -> int:
        """Send the messages; return how many were sent."""
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool | None: ...


#: What the blocking calls take as ``connection=``: a backend, or its
#: blocking view (:class:`asyncmail.sync.BlockingBackend`).
ConnectionLike: TypeAlias = "Connection | BlockingBackend"


def async_connection(connection: ConnectionLike) -> Connection:
    """The backend behind *connection* (a blocking view wraps one)."""
    from .sync import BlockingBackend

    if isinstance(connection, BlockingBackend):
        return connection.backend
    return connection
