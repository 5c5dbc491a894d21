"""A backend that writes each message to a stream (stdout by default).

For development: the message is written as it would go on the wire (headers
and MIME structure, line endings shown as ``\n``), with a separator line
after each, like Django's console backend. Bcc recipients are not shown:
they never appear in a message.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, TextIO

import anyio.to_thread

from ..exceptions import MailError
from ..threads import SharedLock
from .base import BaseEmailBackend, accepted_result

if TYPE_CHECKING:
    from ..message import BaseMessage as EmailMessage  # any sendable message
    from ..results import MessageResult

__all__ = ["EmailBackend"]

SEPARATOR = "-" * 79


class EmailBackend(BaseEmailBackend):
    """Writes messages to *stream* (default: ``sys.stdout`` at send time)."""

    def __init__(self, *, stream: TextIO | None = None, **options: Any) -> None:
        super().__init__(**options)
        self.stream = stream
        # Writes run in worker threads, from whichever event loop sends: one
        # lock keeps concurrent messages from interleaving (and is free again
        # in a forked child).
        self._write_lock = SharedLock()

    def format(self, message: EmailMessage) -> str:
        """The text written for one message (blocking: it may read files
        attached by reference)."""
        text = message.render().data.decode("utf-8", "replace").replace("\r\n", "\n")
        return f"{text}\n{SEPARATOR}\n"

    async def deliver(self, message: EmailMessage) -> MessageResult:
        text = await anyio.to_thread.run_sync(self.format, message)
        try:
            await anyio.to_thread.run_sync(self._write, self.stream or sys.stdout, text)
        except (OSError, ValueError) as exc:
            raise MailError(f"Could not write to the console stream: {exc}") from exc
        return accepted_result(message)

    def _write(self, stream: TextIO, text: str) -> None:
        with self._write_lock:
            stream.write(text)
            stream.flush()
