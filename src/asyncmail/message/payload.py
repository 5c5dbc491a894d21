"""Streamed payloads: the only file I/O of the message package.

An attached file is checked when it is attached (a regular file, its size
then) and read when the message is sent, here: whole for text and messages
(they are decoded and checked first), block by block for binary types, which
:class:`Base64Payload` encodes as they are written, so a large file never sits
in memory. Every read refuses FIFOs and devices without blocking on them and
refuses a file whose size changed since it was attached.
"""

from __future__ import annotations

import binascii
import functools
import os
import stat
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from ..exceptions import InvalidMessageError

__all__ = [
    "STREAM_THRESHOLD",
    "Base64Payload",
    "acheck_file",
    "afile_content",
    "attached_path",
    "base64_lines",
    "check_file",
    "file_content",
    "streamable",
]


def base64_lines(data: bytes | memoryview) -> bytes:
    """Base64 in lines of 76 characters, each ending in CRLF."""
    encoded = binascii.b2a_base64(data, newline=False)
    if len(encoded) <= 76:
        return encoded + b"\r\n"
    return (
        b"\r\n".join(
            [encoded[index : index + 76] for index in range(0, len(encoded), 76)]
        )
        + b"\r\n"
    )


#: Binary contents larger than this are base64-encoded block by block while
#: they are sent, instead of all at once in memory.
STREAM_THRESHOLD = 1 << 20


def _unreadable(path: Path, exc: OSError) -> InvalidMessageError:
    """The error for an attached file that cannot be read when it is sent."""
    reason = exc.strerror or str(exc)
    return InvalidMessageError(
        f"The attached file {str(path)!r} cannot be read: {reason}"
    )


def _not_regular(path: Path, mode: int) -> InvalidMessageError:
    kind = (
        "a FIFO"
        if stat.S_ISFIFO(mode)
        else "a directory"
        if stat.S_ISDIR(mode)
        else "a device"
        if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
        else "a socket"
        if stat.S_ISSOCK(mode)
        else "not a regular file"
    )
    return InvalidMessageError(
        f"The attached file {str(path)!r} is {kind}: only regular files can be "
        "attached (read other sources yourself and attach the bytes)"
    )


def _regular_size(path: Path, *, map_errors: bool = True) -> int:
    """The size of *path*, which must be a regular file (symlinks followed).
    With ``map_errors=False`` an OSError (a missing file) propagates as is,
    as Django's attach_file() lets it."""
    try:
        status = path.stat()
    except OSError as exc:
        if not map_errors:
            raise
        raise _unreadable(path, exc) from exc
    if not stat.S_ISREG(status.st_mode):
        raise _not_regular(path, status.st_mode)
    return status.st_size


def _open_regular(path: Path) -> BinaryIO:
    """Open *path* for reading without ever blocking on a FIFO or device: it
    is opened non-blocking and checked (fstat) to be a regular file, so a
    file swapped for a FIFO after it was attached is refused too."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | _O_CLOEXEC)
    except OSError as exc:
        raise _unreadable(path, exc) from exc
    try:
        mode = os.fstat(fd).st_mode
    except OSError as exc:
        os.close(fd)
        raise _unreadable(path, exc) from exc
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise _not_regular(path, mode)
    return os.fdopen(fd, "rb")


_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def _read_regular(path: Path, size: int | None = None) -> bytes:
    """Read a whole regular file, at most *size* octets (the size recorded
    when it was attached; None: its size now): a file that grew is refused
    once it passes that size, without reading the rest."""
    with _open_regular(path) as file:
        if size is None:
            size = os.fstat(file.fileno()).st_size
        try:
            data = file.read(size + 1)
        except OSError as exc:
            raise _unreadable(path, exc) from exc
    if len(data) != size:
        raise _changed_size(path, size, len(data))
    return data


def _changed_size(what: object, then: int, now: int) -> InvalidMessageError:
    more = " or more" if now > then else ""
    return InvalidMessageError(
        f"{what} changed size since it was attached ({then} octets then, "
        f"{now}{more} now)"
    )


def _regular_opener(path: str, flags: int) -> int:
    """An ``opener`` for open(): never blocks on a FIFO, refuses non-files."""
    fd = os.open(path, flags | getattr(os, "O_NONBLOCK", 0))
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        os.close(fd)
        raise
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise _not_regular(Path(path), mode)
    return fd


class Base64Payload:
    """A binary body that is base64-encoded block by block as it is written.

    The source is bytes (kept as a memoryview, never copied) or a file path
    (read in blocks when the message is sent, so a large file never sits in
    memory). Blocks are whole base64 lines, so they concatenate to exactly
    what :func:`base64_lines` gives for the whole source.
    """

    BLOCK = 57 * 4096  # raw octets per block: 4096 lines of 76 characters

    __slots__ = ("size", "source")

    def __init__(
        self, source: bytes | memoryview | Path, size: int | None = None
    ) -> None:
        self.source = source
        if size is None:
            size = _regular_size(source) if isinstance(source, Path) else len(source)
        self.size = size

    @property
    def encoded_size(self) -> int:
        """Octets on the wire: base64 characters plus a CRLF per line."""
        characters = (self.size + 2) // 3 * 4
        return characters + 2 * max(1, -(-characters // 76))

    def blocks(self) -> Iterator[bytes]:
        """The encoded body, block by block (reading the file if any)."""
        if isinstance(self.source, Path):
            with _open_regular(self.source) as file:
                try:
                    yield from self._encode(self._bounded(file.read))
                except OSError as exc:
                    raise _unreadable(self.source, exc) from exc
        else:
            view = memoryview(self.source)
            yield from self._encode(
                view[start : start + self.BLOCK]
                for start in range(0, len(view), self.BLOCK)
            )

    async def ablocks(self) -> AsyncIterator[bytes]:
        """The encoded body, block by block, reading a file off the event loop."""
        if not isinstance(self.source, Path):
            for encoded in self.blocks():
                yield encoded
            return
        import aiofiles

        total = 0
        source = self.source
        try:
            async with aiofiles.open(source, "rb", opener=_regular_opener) as file:
                while raw := await file.read(min(self.BLOCK, self.size + 1 - total)):
                    total, block = self._step(total, raw)
                    if block is None:
                        break  # it grew: stop reading now
                    yield block
        except OSError as exc:
            raise _unreadable(source, exc) from exc
        if last := self._end(total):
            yield last

    async def aread(self) -> bytes:
        """The raw (unencoded) content, reading the file off the event loop,
        with the same checks as sending (the file exists, same size)."""
        if not isinstance(self.source, Path):
            return bytes(self.source)
        import aiofiles

        try:
            async with aiofiles.open(self.source, "rb", opener=_regular_opener) as file:
                data = await file.read(self.size + 1)
        except OSError as exc:
            raise _unreadable(self.source, exc) from exc
        self._check_size(len(data))
        return data

    def read(self) -> bytes:
        """The raw content (blocking), with the same checks as sending."""
        if not isinstance(self.source, Path):
            return bytes(self.source)
        return _read_regular(self.source, self.size)

    def _bounded(self, read: Callable[[int], bytes]) -> Iterator[bytes]:
        """Blocks from *read*, stopping once past the recorded size."""
        total = 0
        while raw := read(min(self.BLOCK, self.size + 1 - total)):
            total += len(raw)
            yield raw
            if total > self.size:
                return

    def _encode(self, raw_blocks: Iterable[bytes | memoryview]) -> Iterator[bytes]:
        total = 0
        for raw in raw_blocks:
            total, block = self._step(total, raw)
            if block is None:
                break  # it grew: refuse it below, without sending the excess
            yield block
        if last := self._end(total):
            yield last

    # The one encoding path, shared by blocks() and ablocks().
    def _step(self, total: int, raw: bytes | memoryview) -> tuple[int, bytes | None]:
        """Count *raw* in; its base64 lines, or None once past the size."""
        total += len(raw)
        return total, None if total > self.size else base64_lines(raw)

    def _end(self, total: int) -> bytes:
        """After the last block: refuse a changed size; an empty source is
        one empty line."""
        self._check_size(total)
        return b"\r\n" if total == 0 else b""

    def _check_size(self, total: int) -> None:
        if total != self.size:
            what = self.source if isinstance(self.source, Path) else "the content"
            raise _changed_size(what, self.size, total)

    def __reduce__(self) -> tuple[Any, ...]:
        return (Base64Payload, (self.source, self.size))

    def __repr__(self) -> str:
        what = self.source if isinstance(self.source, Path) else "bytes"
        return f"<Base64Payload {what} ({self.size} octets)>"


#: A body: bytes, or for large binary contents a sequence mixing bytes with


def streamable(mimetype: str) -> bool:
    """Whether a file of this type can be sent from disk as it is read:
    binary types are base64-encoded block by block; text and messages are
    decoded and checked first."""
    return mimetype.split("/", 1)[0].lower() not in ("text", "message")


def check_file(path: Path) -> None:
    """Refuse *path* now unless it is a readable regular file (blocking)."""
    _regular_size(path)


def attached_path(path: Path) -> Path | Base64Payload:
    """A path given as attachment content: an existing one becomes a payload
    that must keep its size now; a missing one stays a path, to fail when
    the message is sent, as it did (blocking: one stat)."""
    return Base64Payload(path) if path.exists() else path


def file_content(path: Path, mimetype: str) -> bytes | Base64Payload:
    """The content of attach_file(): read now, except a binary file over
    STREAM_THRESHOLD, attached by reference (its size now) and streamed when
    sent. A missing file raises the OSError as is, as Django lets it."""
    size = _regular_size(path, map_errors=False)  # FIFOs, devices: refused
    if streamable(mimetype) and size > STREAM_THRESHOLD:
        return Base64Payload(path, size)
    return _read_regular(path, size)


async def afile_content(path: Path, mimetype: str) -> bytes | Base64Payload:
    """:func:`file_content` with its I/O in a worker thread."""
    import anyio.to_thread

    size = await anyio.to_thread.run_sync(
        functools.partial(_regular_size, path, map_errors=False)
    )
    if streamable(mimetype) and size > STREAM_THRESHOLD:
        return Base64Payload(path, size)
    return await anyio.to_thread.run_sync(_read_regular, path, size)


async def acheck_file(path: Path) -> None:
    """:func:`check_file` off the event loop."""
    import anyio.to_thread

    await anyio.to_thread.run_sync(_regular_size, path)
