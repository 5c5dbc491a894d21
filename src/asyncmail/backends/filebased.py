"""A backend that appends messages to a file: one file per backend instance.

The file is ``<file_path>/<timestamp>-<random hex>.log``, created on first
open under ``file_path`` (or the EMAIL_FILE_PATH setting); the directory is
created if missing. A path that exists but is not a directory, or that cannot be
written, is a :class:`~asyncmail.exceptions.ConfigurationError` that says so.
Writes go through aiofiles, off the event loop.
"""

from __future__ import annotations

import os
import uuid
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiofiles
import anyio
import anyio.to_thread

from ..exceptions import ConfigurationError, MailError
from ..settings import settings
from ..threads import SharedLock
from .base import accepted_result
from .console import EmailBackend as ConsoleBackend

if TYPE_CHECKING:
    from ..message import BaseMessage as EmailMessage  # any sendable message
    from ..results import MessageResult

__all__ = ["EmailBackend"]


class EmailBackend(ConsoleBackend):
    """Appends each message, formatted as the console backend does, to a file."""

    def __init__(
        self, *, file_path: str | os.PathLike[str] | None = None, **options: Any
    ) -> None:
        super().__init__(**options)
        path = file_path if file_path is not None else settings.EMAIL_FILE_PATH
        if path is None:
            raise ConfigurationError(
                "The filebased backend needs a directory: pass file_path= or set "
                "EMAIL_FILE_PATH"
            )
        if not isinstance(path, (str, os.PathLike)):
            raise ConfigurationError(
                f"file_path must be a str or path, not {type(path).__name__}"
            )
        self.file_path = Path(path).absolute()
        self._filename: Path | None = None
        # One lock for every loop and thread that sends through this backend,
        # so that concurrent messages are appended whole, one after the other.
        self._append_lock = SharedLock()

    @property
    def filename(self) -> Path | None:
        """The file this backend writes to (None until first opened)."""
        return self._filename

    async def open(self) -> bool | None:
        if self._filename is None:
            self._filename = await anyio.to_thread.run_sync(self._prepare)
        return await super().open()

    def _prepare(self) -> Path:
        directory = self.file_path
        if directory.exists() and not directory.is_dir():
            raise ConfigurationError(
                f"EMAIL_FILE_PATH {str(directory)!r} exists and is not a directory"
            )
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigurationError(
                f"Could not create EMAIL_FILE_PATH {str(directory)!r}: {exc.strerror}"
            ) from exc
        if not os.access(directory, os.W_OK | os.X_OK):
            raise ConfigurationError(
                f"EMAIL_FILE_PATH {str(directory)!r} is not writable"
            )
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        # Not id(self), as Django does: ids are reused once an object is
        # freed, and two backends would then share one file.
        return directory / f"{stamp}-{uuid.uuid4().hex}.log"

    async def deliver(self, message: EmailMessage) -> MessageResult:
        text = await anyio.to_thread.run_sync(self.format, message)
        assert self._filename is not None
        async with self._append_lock:
            try:
                async with aiofiles.open(self._filename, "a", encoding="utf-8") as file:
                    await file.write(text)
            except OSError as exc:
                raise MailError(
                    f"Could not write to {str(self._filename)!r}: {exc}"
                ) from exc
        return accepted_result(message)
