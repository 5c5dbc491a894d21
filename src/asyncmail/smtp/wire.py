"""What goes on the wire: the DATA-phase payload (or the BDAT one), its
size, command checks.

Pure functions over bytes and strings; nothing here does I/O.
"""

from __future__ import annotations

import re
from typing import Final

from ..exceptions import SMTPError
from ..message import Base64Payload, RenderedMessage

__all__ = [
    "WRITE_CHUNK",
    "WirePayload",
    "check_commands",
    "chunked_payload",
    "chunked_size",
    "payload_size",
    "stuff_dots",
    "valid_ehlo_name",
    "wire_payload",
]

#: Bodies are written in slices of this size (see the connection's data phase).
WRITE_CHUNK: Final = 64 * 1024

#: What a transaction writes after DATA: bytes ready for the wire (stuffed,
#: with the end-of-data line), or for messages with streamed attachments the
#: chunks (bytes already stuffed, payloads encoded as they are written; the
#: end-of-data line is written after them). Under CHUNKING (BDAT) the same
#: shapes hold the message as it is: neither stuffed nor ended.
WirePayload = bytes | tuple[bytes | Base64Payload, ...]

# Dot-separated labels (each unambiguous, so a bad name fails in linear
# time), or an address literal; at most 255 characters (checked first).
_EHLO_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_EHLO_NAME = re.compile(
    rf"{_EHLO_LABEL}(?:\.{_EHLO_LABEL})*\.?|\[(?:IPv6:)?[0-9A-Fa-f:.]{{1,253}}\]"
)


def wire_payload(rendered: RenderedMessage) -> WirePayload:
    """The DATA-phase form of a rendered message.

    A RenderedMessage holds CRLF line endings only, every chunk starting a
    line and ending with CRLF (asyncmail's serialiser writes nothing else,
    and foreign bytes are normalised on the way in), so only the dots need
    stuffing here.
    """
    if not rendered.streamed:
        return stuff_dots(rendered.data) + b".\r\n"
    # Base64 blocks never start a line with ".".
    return tuple(
        stuff_dots(chunk) if isinstance(chunk, bytes) else chunk
        for chunk in rendered.chunks
    )


def chunked_payload(rendered: RenderedMessage) -> WirePayload:
    """The BDAT form of a rendered message: its chunks as they are (BDAT
    frames the data by size, so nothing is stuffed and no line ends it)."""
    chunks = rendered.chunks
    if len(chunks) == 1 and isinstance(first := chunks[0], bytes):
        return first
    return chunks


def chunked_size(payload: WirePayload) -> int:
    """Octets of a BDAT payload: exactly the message's."""
    if isinstance(payload, bytes):
        return len(payload)
    return sum(
        len(chunk) if isinstance(chunk, bytes) else chunk.encoded_size
        for chunk in payload
    )


def stuff_dots(data: bytes) -> bytes:
    """Double the dot starting any line of clean CRLF *data*."""
    if data.startswith(b"."):
        data = b"." + data
    return data.replace(b"\r\n.", b"\r\n..")


def payload_size(payload: WirePayload) -> int:
    """Octets the payload puts on the wire (end-of-data line included)."""
    if isinstance(payload, bytes):
        return len(payload)
    return 3 + sum(
        len(chunk) if isinstance(chunk, bytes) else chunk.encoded_size
        for chunk in payload
    )


def check_commands(wire: str, count: int) -> None:
    """*wire* holds exactly *count* CRLF-ended command lines: no CR, LF or NUL
    inside a command (defence in depth: the arguments are validated
    addresses already)."""
    if wire.count("\r") != count or wire.count("\n") != count or "\0" in wire:
        raise SMTPError(f"Refusing to send a command with a line break: {wire!r}")


def valid_ehlo_name(name: object) -> bool:
    """Whether *name* can be sent as the EHLO argument: a host name or an
    address literal such as ``[192.0.2.1]``, at most 255 characters."""
    return (
        isinstance(name, str)
        and len(name) <= 255
        and _EHLO_NAME.fullmatch(name) is not None
    )
