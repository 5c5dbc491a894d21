"""Blocking twins of the async API, through one shared library event loop.

``send_mail`` and friends, and :class:`BlockingBackend` (the blocking view
of a backend), run the async API's coroutines on the library's event loop
(:mod:`asyncmail.portal`, which says where blocking calls work: any thread,
after a fork, at exit). :func:`run_blocking` and :func:`shutdown` are
importable from here too.
"""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING

from . import api
from .portal import _loop, run_blocking, shutdown

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from .address import AddressLike
    from .backends.base import BaseEmailBackend, MessageSource
    from .connection import ConnectionLike
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
# Each has its async twin's signature; ``connection=`` is a ConnectionLike
# (a backend or its blocking view) in both, passed on as it is: as in
# Django, each message's ``connection`` is the object the caller gave.


def send_mail(
    subject: str,
    message: str,
    from_email: AddressLike | None,
    recipient_list: Sequence[AddressLike],
    *,
    fail_silently: bool = False,
    auth_user: str | None = None,
    auth_password: str | None = None,
    connection: ConnectionLike | None = None,
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
        connection=connection,
        html_message=html_message,
        using=using,
    )


def send_mass_mail(
    datatuple: Iterable[tuple[str, str, AddressLike | None, Sequence[AddressLike]]],
    *,
    fail_silently: bool = False,
    auth_user: str | None = None,
    auth_password: str | None = None,
    connection: ConnectionLike | None = None,
    using: str | None = None,
) -> int:
    """Blocking :func:`asyncmail.asend_mass_mail`; one connection for all."""
    return run_blocking(
        api.asend_mass_mail,
        datatuple,
        fail_silently=fail_silently,
        auth_user=auth_user,
        auth_password=auth_password,
        connection=connection,
        using=using,
    )


def mail_admins(
    subject: str,
    message: str,
    *,
    fail_silently: bool = False,
    connection: ConnectionLike | None = None,
    html_message: str | None = None,
    using: str | None = None,
) -> None:
    """Blocking :func:`asyncmail.amail_admins`."""
    run_blocking(
        api.amail_admins,
        subject,
        message,
        fail_silently=fail_silently,
        connection=connection,
        html_message=html_message,
        using=using,
    )


def mail_managers(
    subject: str,
    message: str,
    *,
    fail_silently: bool = False,
    connection: ConnectionLike | None = None,
    html_message: str | None = None,
    using: str | None = None,
) -> None:
    """Blocking :func:`asyncmail.amail_managers`."""
    run_blocking(
        api.amail_managers,
        subject,
        message,
        fail_silently=fail_silently,
        connection=connection,
        html_message=html_message,
        using=using,
    )
