"""A backend that does nothing: for when mail must be switched off."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import BaseEmailBackend, accepted_result

if TYPE_CHECKING:
    from ..message import BaseMessage as EmailMessage  # any sendable message
    from ..results import MessageResult, ResultCallback
    from .base import MessageSource

__all__ = ["EmailBackend"]


class EmailBackend(BaseEmailBackend):
    """Accepts every message and sends nothing.

    Like Django's dummy backend, ``send_messages`` returns the number of
    messages it was given, counting those without recipients too (their
    results still say SKIPPED: nothing would have been sent).
    """

    async def send_messages(
        self,
        email_messages: MessageSource,
        *,
        fail_silently: bool = False,
        on_result: ResultCallback | None = None,
    ) -> int:
        given = 0

        def count(result: MessageResult) -> None:
            nonlocal given
            given += 1
            if on_result is not None:
                on_result(result)

        await super().send_messages(
            email_messages, fail_silently=fail_silently, on_result=count
        )
        return given

    async def deliver(self, message: EmailMessage) -> MessageResult:
        return accepted_result(message)
