"""A backend that does nothing: for when mail must be switched off."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import BaseEmailBackend, accepted_result

if TYPE_CHECKING:
    from ..message import EmailMessage
    from ..results import MessageResult

__all__ = ["EmailBackend"]


class EmailBackend(BaseEmailBackend):
    """Accepts every message and sends nothing; counts them as sent."""

    async def deliver(self, message: EmailMessage) -> MessageResult:
        return accepted_result(message)
