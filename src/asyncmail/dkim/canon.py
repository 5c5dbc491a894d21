"""DKIM canonicalisation (RFC 6376 section 3.4): the body hash, computed
block by block over what will be written, and the header fields as signed.

"simple" keeps the octets; "relaxed" unfolds header fields, lower-cases their
names and compresses whitespace, and compresses whitespace in the body. The
body hash works on whole lines of each block, holding back trailing empty
lines (which both algorithms ignore at the end), so memory stays bounded
whatever the message's size.
"""

from __future__ import annotations

import hashlib
import re

from ..exceptions import InvalidMessageError
from ..message import Base64Payload

__all__ = ["CRLF", "BodyHash", "header_fields", "relaxed_field", "split_message"]

_WSP_RUN = re.compile(rb"[ \t]+")
_TRAILING_WSP = re.compile(rb"[ \t]+\r\n")
_UNFOLD = re.compile(rb"\r\n(?=[ \t])")
CRLF = b"\r\n"


class BodyHash:
    """SHA-256 of a body's canonical form, fed in pieces of any size.

    Only whole lines are canonicalised (a piece's unfinished last line waits
    for the next), so a whitespace run or a CRLF split between two pieces is
    seen whole. Empty lines are counted rather than hashed until a non-empty
    line follows them: the canonical body ends at its last non-empty line.
    """

    __slots__ = ("_blank", "_hash", "_relaxed", "_started", "_tail")

    def __init__(self, *, relaxed: bool) -> None:
        self._hash = hashlib.sha256()
        self._relaxed = relaxed
        self._tail = b""
        self._blank = 0  # empty lines seen but not hashed yet
        self._started = False  # a non-empty line was hashed

    def update(self, data: bytes) -> None:
        if self._tail:
            data = self._tail + data
        end = data.rfind(CRLF) + 2
        if end == 1:  # no complete line yet
            self._tail = data
            return
        self._tail = data[end:]
        self._lines(data[:end] if end != len(data) else data)

    def _lines(self, lines: bytes) -> None:
        """Hash *lines*, complete lines each ending with CRLF."""
        if self._relaxed:
            lines = relax(lines)
        content = len(lines.rstrip(b"\r\n"))
        suffix = lines[content:]
        if len(suffix) % 2 or suffix != CRLF * (len(suffix) // 2):
            # rstrip also took a bare CR or LF ending the last non-empty
            # line: keep only the whole CRLF pairs at the end as the suffix.
            end = len(suffix)
            while end >= 2 and suffix[end - 2 : end] == CRLF:
                end -= 2
            content += end
        if content == 0:  # only empty lines
            self._blank += len(lines) // 2
            return
        self._flush_blank()
        with memoryview(lines) as view:
            self._hash.update(view[: content + 2])
        self._started = True
        self._blank = (len(lines) - content) // 2 - 1

    def _flush_blank(self) -> None:
        while self._blank:
            count = min(self._blank, 32768)
            self._hash.update(CRLF * count)
            self._blank -= count

    def digest(self) -> bytes:
        if self._tail:  # a last line without its CRLF: RFC 6376 adds one
            tail, self._tail = self._tail, b""
            self._lines(tail + CRLF)
        if not self._started and not self._relaxed:
            self._hash.update(CRLF)  # simple: an empty body is one CRLF
        return self._hash.digest()


def needs_relaxing(lines: bytes) -> bool:
    """Whether relaxed canonicalisation changes *lines* (memchr-fast scans)."""
    return b"\t" in lines or b"  " in lines or b" \r\n" in lines


def relax(lines: bytes) -> bytes:
    """Relaxed body canonicalisation of whole lines: whitespace runs become
    one space, whitespace ending a line goes. Done in line-aligned pieces of
    about 8 KB, so that base64 and other clean stretches are passed over at
    C speed and only the pieces that change go through the regexes."""
    if not needs_relaxing(lines):
        return lines
    if len(lines) <= 16384:
        return _WSP_RUN.sub(b" ", _TRAILING_WSP.sub(CRLF, lines))
    parts: list[bytes] = []
    start = 0
    while start < len(lines):
        end = lines.find(CRLF, start + 8192)
        end = len(lines) if end == -1 else end + 2
        part = lines[start:end]
        if needs_relaxing(part):
            part = _WSP_RUN.sub(b" ", _TRAILING_WSP.sub(CRLF, part))
        parts.append(part)
        start = end
    return b"".join(parts)


def header_fields(head: bytes) -> list[tuple[bytes, bytes]]:
    """The header block's fields as (name, whole field with its CRLF), in order."""
    fields: list[tuple[bytes, bytes]] = []
    for line in head.split(CRLF)[:-1] if head.endswith(CRLF) else head.split(CRLF):
        if line[:1] in (b" ", b"\t") and fields:
            name, field = fields[-1]
            fields[-1] = (name, field + line + CRLF)
            continue
        name, colon, _ = line.partition(b":")
        if not colon or not name.strip():
            raise InvalidMessageError(
                "Cannot DKIM-sign a message with a malformed header line: "
                f"{line[:80]!r}"
            )
        fields.append((name.strip().lower(), line + CRLF))
    return fields


def relaxed_field(field: bytes) -> bytes:
    name, _, value = field.partition(b":")
    value = _WSP_RUN.sub(b" ", _UNFOLD.sub(b"", value[:-2])).strip(b" \t")
    return name.rstrip(b" \t").lower() + b":" + value + CRLF


def split_message(
    chunks: tuple[bytes | Base64Payload, ...],
) -> tuple[bytes, bytes, int]:
    """(header block with its last CRLF, start of the body, index of the
    first chunk after that start) of a rendered message."""
    head = b""
    for index, chunk in enumerate(chunks):
        if not isinstance(chunk, bytes):
            break
        head += chunk
        end = head.find(b"\r\n\r\n")
        if head.startswith(CRLF):
            end = -2
        if end != -1:
            return head[: end + 2], head[end + 4 :], index + 1
    if head.endswith(CRLF) and not any(
        not isinstance(chunk, bytes) for chunk in chunks
    ):
        return head, b"", len(chunks)  # headers only, no body
    raise InvalidMessageError("Cannot DKIM-sign a message without a header block")
