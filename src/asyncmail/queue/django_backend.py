"""Django's ``EMAIL_BACKEND`` that stores mail in the asyncmail outbox.

::

    EMAIL_BACKEND = "asyncmail.queue.django_backend.EmailBackend"
    ASYNCMAIL_QUEUE_URL = "postgresql://app@db/app"   # or sqlite:///path

Django's own messages (``django.core.mail``: ``send_mail``,
``EmailMessage.send()``, ...) are rendered by Django, as its SMTP backend
would send them, and stored for the asyncmail workers to deliver:

* outside a transaction, at once;
* inside ``transaction.atomic()``, when the transaction commits
  (``transaction.on_commit``), and not at all if it rolls back;
* with ``transactional=True`` (``get_connection(transactional=True)``, or the
  ``ASYNCMAIL_QUEUE_TRANSACTIONAL`` setting), through Django's own database
  connection, inside the transaction: the mail exists if and only if the
  transaction committed, even if the process dies right after the commit.
  The outbox's tables then live in Django's database (SQLite or PostgreSQL
  with psycopg 3), and the workers must use that database.

Options (keywords of ``get_connection``, or settings): ``url``
(``ASYNCMAIL_QUEUE_URL``), ``using`` (the database alias, ``"default"``),
``transactional``, ``priority``. Importing this module imports Django; the
rest of asyncmail never does.
"""

from __future__ import annotations

import email.errors
import os
from collections.abc import Sequence
from typing import Any

from django.conf import settings as django_settings
from django.core.mail.backends.base import BaseEmailBackend as DjangoBaseBackend
from django.db import transaction

from ..django.messages import django_bytes
from ..exceptions import InvalidMessageError, MailError
from ..message import RawMessage
from . import enqueue_in, open_store, prepare
from .model import NewMessage

__all__ = ["EmailBackend"]


class EmailBackend(DjangoBaseBackend):  # type: ignore[misc]
    """Queue Django's messages in the asyncmail outbox (see the module)."""

    def __init__(
        self,
        fail_silently: bool = False,
        *,
        url: str | None = None,
        using: str = "default",
        transactional: bool | None = None,
        priority: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(fail_silently=fail_silently, **kwargs)
        from ..backends.queue import DEFAULT_URL

        self.url = (
            url
            or getattr(django_settings, "ASYNCMAIL_QUEUE_URL", None)
            or os.environ.get("ASYNCMAIL_QUEUE_URL")
            or DEFAULT_URL
        )
        self.using = using
        self.transactional = bool(
            getattr(django_settings, "ASYNCMAIL_QUEUE_TRANSACTIONAL", False)
            if transactional is None
            else transactional
        )
        self.priority = priority

    def _row(self, message: Any) -> NewMessage:
        """A Django message as the outbox stores it: Django's rendering,
        checked as asyncmail checks its own headers (see
        :func:`asyncmail.django.messages.django_bytes`), with the envelope
        Django's SMTP backend would use (Bcc in it only)."""
        try:
            data = django_bytes(message)
        except MailError:
            raise
        except (ValueError, email.errors.MessageError) as exc:
            raise InvalidMessageError(str(exc)) from exc
        raw = RawMessage(data, message.from_email, message.recipients())
        return prepare(
            raw,
            key=getattr(message, "idempotency_key", None),
            send_at=getattr(message, "send_at", None),
            priority=getattr(message, "priority", self.priority),
        )

    def send_messages(self, email_messages: Sequence[Any]) -> int:
        """Store the messages (now, on commit, or in the transaction); return
        how many were queued."""
        try:
            rows = [self._row(m) for m in email_messages if m.recipients()]
            if not rows:
                return 0
            if self.transactional:
                connection = transaction.get_connection(self.using)
                connection.ensure_connection()
                enqueue_in(connection.connection, [], rows=rows)
            else:
                store = open_store(self.url)
                connection = transaction.get_connection(self.using)
                if connection.in_atomic_block:
                    transaction.on_commit(
                        lambda: store.insert_sync(rows), using=self.using
                    )
                else:
                    store.insert_sync(rows)
        except (MailError, ValueError, TypeError):
            if self.fail_silently:
                return 0
            raise
        return len(rows)
