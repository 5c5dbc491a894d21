"""An in-memory backend for tests: sent messages land in ``asyncmail.outbox``.

Each message is rendered (so bad headers raise as they would on the wire)
and a deep copy is appended to ``asyncmail.outbox``, so later changes to the
original do not alter what the test sees. Files attached by reference (large
``attach_file`` attachments) are read as they would be when sent, so a file
that vanished or changed size fails the message as it would over SMTP, and
the copy holds their bytes as they were then. Appending is safe from
concurrent tasks and threads. Tests reset it with ``asyncmail.outbox.clear()``
(or by assigning a new list to ``asyncmail.outbox``, as Django's test runner
does). Each copy's ``sent_using`` is the alias of the mailer that sent it
(None for a backend not created from MAILERS), as in Django 6.1.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import TYPE_CHECKING

from ..message import Base64Payload, EmailAttachment, EmailMessage
from .base import BaseEmailBackend, accepted_result

if TYPE_CHECKING:
    from ..message import BaseMessage
    from ..results import MessageResult

__all__ = ["EmailBackend"]


class EmailBackend(BaseEmailBackend):
    """Stores deep copies of sent messages in ``asyncmail.outbox``."""

    async def deliver(self, message: BaseMessage) -> MessageResult:
        import asyncmail

        rendered = message.render()
        stored = copy.deepcopy(message)
        # As Django's locmem backend: the mailer that sent it (None without
        # MAILERS), so tests can check that ``using=`` chose the right one.
        stored.sent_using = self.alias
        await _read_attached_files(stored)
        asyncmail.outbox.append(stored)
        return accepted_result(message, rendered.message_id)


async def _read_attached_files(message: BaseMessage) -> None:
    """Replace *message*'s attachments by reference with their bytes, read
    (off the event loop) and checked as sending would read them."""
    if not isinstance(message, EmailMessage):
        return  # a RawMessage: its bytes are all it holds
    for index, attachment in enumerate(message.attachments):
        if not isinstance(attachment, EmailAttachment):
            continue
        content = attachment.content
        if isinstance(content, Path):
            content = Base64Payload(content)  # its size: now
        if isinstance(content, Base64Payload) and isinstance(content.source, Path):
            data = await content.aread()
        else:
            continue
        message.attachments[index] = attachment._replace(content=data)
