"""An asyncmail backend that stores sent messages in ``django.core.mail.outbox``.

The settings bridge (:mod:`asyncmail.django.bridge`) uses it where Django's
settings name Django's locmem backend, as Django's test runner and
pytest-django do: asyncmail's own sends (``asyncmail.send_mail``,
``asend_mail``, ``EmailMessage.asend`` ...) then land in the same
``django.core.mail.outbox`` as Django's, and tests check them the same way.

Like asyncmail's locmem backend, each message is rendered first (so a bad
header fails as it would on the wire) and a deep copy is stored: an
asyncmail :class:`~asyncmail.EmailMessage`, which has the attributes tests
read on Django's (``subject``, ``body``, ``to``, ``cc``, ``bcc``,
``from_email``, ``reply_to``, ``extra_headers``, ``attachments``,
``alternatives``, ``message()``), plus ``sent_using`` (the mailer alias, as
Django 6.1's locmem backend sets it).
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

from ..backends.base import accepted_result
from ..backends.locmem import EmailBackend as LocmemBackend
from ..backends.locmem import _read_attached_files

if TYPE_CHECKING:
    from ..message import BaseMessage as EmailMessage  # any sendable message
    from ..results import MessageResult

__all__ = ["EmailBackend"]


class EmailBackend(LocmemBackend):
    """Appends deep copies of sent messages to ``django.core.mail.outbox``."""

    async def deliver(self, message: EmailMessage) -> MessageResult:
        from django.core import mail

        rendered = message.render()
        stored = copy.deepcopy(message)
        await _read_attached_files(stored)
        stored.sent_using = self.alias
        outbox = getattr(mail, "outbox", None)
        if outbox is None:  # as Django's locmem backend: created on first use
            outbox = mail.outbox = []
        outbox.append(stored)
        return accepted_result(message, rendered.message_id)
