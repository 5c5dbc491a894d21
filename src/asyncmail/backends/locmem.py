"""An in-memory backend for tests: sent messages land in ``asyncmail.outbox``.

Each message is rendered (so bad headers raise as they would on the wire)
and a deep copy is appended to ``asyncmail.outbox``, so later changes to the
original do not alter what the test sees. Appending is safe from concurrent
tasks and threads. Tests reset it with ``asyncmail.outbox.clear()`` (or by
assigning a new list to ``asyncmail.outbox``, as Django's test runner does).
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

from .base import BaseEmailBackend, accepted_result

if TYPE_CHECKING:
    from ..message import EmailMessage
    from ..results import MessageResult

__all__ = ["EmailBackend"]


class EmailBackend(BaseEmailBackend):
    """Stores deep copies of sent messages in ``asyncmail.outbox``."""

    async def deliver(self, message: EmailMessage) -> MessageResult:
        import asyncmail

        rendered = message.render()
        asyncmail.outbox.append(copy.deepcopy(message))
        return accepted_result(message, rendered.message_id)
