"""Queue backend: ``send_messages`` stores the messages in a durable outbox.

Messages are rendered and stored (SQLite or PostgreSQL, see
:mod:`asyncmail.queue`) and the call returns once they are committed; workers
(``asyncmail worker``, or :class:`asyncmail.queue.Worker` in the app) deliver
them later. The count returned is the number of messages stored (a message
whose idempotency key is already stored counts: it is queued).

Options: ``url`` (default: the ``ASYNCMAIL_QUEUE_URL`` environment variable,
else ``sqlite:///asyncmail-outbox.db`` in the working directory),
``priority`` and ``send_at`` (defaults for every message; a message's own
``priority``, ``send_at`` and ``idempotency_key`` attributes win) and
``max_size`` (the largest rendered message stored). Every backend on one URL
shares one store: no connection is set up per call.

Each message gets ``message.outbox_id``, its id in the outbox, for
:meth:`asyncmail.queue.Store.get` and ``asyncmail outbox list``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..exceptions import MailError
from ..queue import DEFAULT_MAX_SIZE, Store, enqueue, open_store
from .base import BaseEmailBackend, MessageSource
from .sending import skipped

if TYPE_CHECKING:
    from ..results import ResultCallback

__all__ = ["DEFAULT_URL", "EmailBackend"]

DEFAULT_URL = "sqlite:///asyncmail-outbox.db"


class EmailBackend(BaseEmailBackend):
    """Store messages in the outbox for the workers to deliver."""

    def __init__(
        self,
        *,
        url: str | None = None,
        priority: int = 0,
        send_at: datetime | float | None = None,
        max_size: int = DEFAULT_MAX_SIZE,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self.url = url or os.environ.get("ASYNCMAIL_QUEUE_URL") or DEFAULT_URL
        self.priority = priority
        self.send_at = send_at
        self.max_size = max_size
        self._store: Store | None = None

    def __repr__(self) -> str:
        store = self._store
        where = store.safe_url if store is not None else self.url.split("@")[-1]
        return f"<asyncmail.backends.queue.EmailBackend {where}>"

    @property
    def store(self) -> Store:
        """The outbox this backend writes to."""
        if self._store is None or self._store.closed:
            self._store = open_store(self.url)
        return self._store

    async def send_messages(
        self,
        email_messages: MessageSource,
        *,
        fail_silently: bool = False,
        on_result: ResultCallback | None = None,
    ) -> int:
        """Store the messages; return how many were stored (all of them, or
        raise: nothing is stored when one is invalid)."""
        messages: list[Any]
        if isinstance(email_messages, AsyncIterable):
            messages = [message async for message in email_messages]
        else:
            messages = list(email_messages)
        messages = [m for m in messages if skipped(m) is None]
        if not messages:
            return 0
        for message in messages:
            if getattr(message, "priority", None) is None:
                message.priority = self.priority
            if getattr(message, "send_at", None) is None and self.send_at is not None:
                message.send_at = self.send_at
        try:
            ids = await enqueue(self.store, messages, max_size=self.max_size)
        except MailError:
            if self.fail_silently or fail_silently:
                return 0
            raise
        for message, ident in zip(messages, ids, strict=True):
            message.outbox_id = ident
        return len(ids)
