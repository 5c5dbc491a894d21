"""The pure MIME renderer: MIME entities and the wire form of a message.

An entity (:class:`_Part`) is its header lines and a body. This module makes
text parts (choosing each one's transfer encoding), binary parts (base64,
streamed when large), multipart bodies with unguessable boundaries,
Content-Type and Content-Disposition lines, Content-IDs, and joins a tree of
them into a :class:`RenderedMessage`. :mod:`asyncmail.message.tree` maps a
message model onto these entities. Every header line passes the checks of
:mod:`asyncmail.headers`; foreign parts are rendered again by
:mod:`asyncmail.message.foreign`.

No I/O: large binary contents stay :class:`Base64Payload` objects, encoded
block by block when they are sent (:mod:`asyncmail.message.payload`).
"""

from __future__ import annotations

import binascii
import email.message
import re
import secrets
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, TypeAlias

from ..exceptions import BadHeaderError, InvalidMessageError
from ..headers import HARD_LIMIT, check_header_lines, check_no_line_separators, fold
from ..mimeparams import (
    ContentType,
    check_charset,
    check_parameter_value,
    check_token,
    format_content_type,
    format_parameter,
    parse_content_type,
)
from .foreign import render_part
from .payload import STREAM_THRESHOLD, Base64Payload, base64_lines

if TYPE_CHECKING:
    from . import InlineAttachment

__all__ = ["RENDER_IN_THREAD", "RenderedMessage"]

#: Content size (octets) above which a backend renders the message in a worker
#: thread instead of on the event loop: rendering costs about 4 ms per MB, so
#: at this size one render holds the loop for about a millisecond at most.
#: See ``render_is_heavy`` and benchmarks/worst_case.py.
RENDER_IN_THREAD = 256 * 1024


def _normalise_newlines(data: bytes) -> bytes:
    """Turn CRLF and bare CR into LF (the renderer adds CRLF at the end)."""
    if b"\r" in data:
        data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    return data


def _to_crlf(data: bytes) -> bytes:
    return data.replace(b"\n", b"\r\n")


def _longest_line(data: bytes) -> int:
    if len(data) <= HARD_LIMIT:
        return len(data)
    return max(map(len, data.split(b"\n")))


def _encode_text(data: bytes, allow_8bit: bool) -> tuple[str, bytes, bool]:
    """Choose the transfer encoding of a text body and apply it.

    *data* uses LF line endings. Returns (encoding, CRLF body, is_8bit).
    7bit or 8bit when the text is line-safe (no NUL, lines <= 998 octets);
    otherwise quoted-printable or base64, whichever is shorter.
    """
    if not data.endswith(b"\n"):
        data += b"\n"
    if b"\0" not in data and _longest_line(data) <= HARD_LIMIT:
        if data.isascii():
            return "7bit", _to_crlf(data), False
        if allow_8bit:
            return "8bit", _to_crlf(data), True
    quoted = binascii.b2a_qp(data, istext=True)
    # Compare the sizes on the wire: CRLF line endings, base64 of the CRLF
    # text in lines of 76 characters.
    base64_size = (len(data) + data.count(b"\n") + 2) // 3 * 4
    base64_size += -(-base64_size // 76) * 2
    if len(quoted) + quoted.count(b"\n") <= base64_size:
        return "quoted-printable", _to_crlf(quoted), False
    return "base64", base64_lines(data.replace(b"\n", b"\r\n")), False


#: A body: bytes, or for large binary contents a sequence mixing bytes with
#: payloads encoded while they are sent.
Body: TypeAlias = "bytes | tuple[bytes | Base64Payload, ...]"


class _Part(NamedTuple):
    """A rendered MIME entity: header lines (str, CRLF-ended) and its body."""

    headers: str
    body: Body
    eight_bit: bool


@lru_cache(maxsize=256)
def _text_content_type(
    subtype: str, charset: str, params: tuple[tuple[str, str], ...] = ()
) -> str:
    """The Content-Type line of a text part (validated; cached, as the same
    few combinations repeat for every message)."""
    return format_content_type("text", subtype, (("charset", charset), *params))


def _text_part(  # noqa: PLR0917 - private, called in three places
    text: str,
    subtype: str,
    charset: str,
    allow_8bit: bool,
    extra: str = "",
    params: tuple[tuple[str, str], ...] = (),
) -> _Part:
    content_type = _text_content_type(subtype, charset, params)
    try:
        data = text.encode(charset)
    except LookupError:
        raise InvalidMessageError(f"Unknown charset {charset!r}") from None
    except UnicodeEncodeError as exc:
        raise InvalidMessageError(
            f"Text can't be encoded as {charset!r}: {exc.reason} "
            f"(character {exc.object[exc.start : exc.end]!r}); "
            "set the message's encoding to 'utf-8'"
        ) from None
    cte, body, eight_bit = _encode_text(_normalise_newlines(data), allow_8bit)
    headers = f"{content_type}Content-Transfer-Encoding: {cte}\r\n{extra}"
    return _Part(headers, body, eight_bit)


def _binary_part(
    data: bytes | memoryview | Path | Base64Payload,
    content_type: ContentType,
    extra: str = "",
) -> _Part:
    headers = (
        f"{_format_type(content_type)}Content-Transfer-Encoding: base64\r\n{extra}"
    )
    if isinstance(data, Base64Payload):
        return _Part(headers, (data,), False)
    if isinstance(data, Path) or len(data) > STREAM_THRESHOLD:
        return _Part(headers, (Base64Payload(data),), False)
    return _Part(headers, base64_lines(data), False)


def _format_type(content_type: ContentType) -> str:
    return format_content_type(
        content_type.maintype, content_type.subtype, content_type.params
    )


def _multipart(subtype: str, parts: Sequence[_Part]) -> _Part:
    # Unpredictable (not the random module), so that no one who sees other
    # messages can guess a boundary and smuggle a MIME part into a body.
    boundary = f"==={secrets.token_hex(16)}==="
    delimiter = f"--{boundary}\r\n".encode("ascii")
    chunks: list[bytes | Base64Payload] = []
    for part in parts:
        check_header_lines(part.headers)  # the backstop, for every part too
        chunks.append(delimiter)
        chunks.append(part.headers.encode("utf-8"))
        chunks.append(b"\r\n")
        if isinstance(part.body, bytes):
            chunks.append(part.body)
        else:
            chunks.extend(part.body)
        # The CRLF before a delimiter belongs to the delimiter, so one more
        # keeps the part's own final line break.
        chunks.append(b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode("ascii"))
    headers = format_content_type("multipart", subtype, (("boundary", boundary),))
    eight_bit = any(part.eight_bit for part in parts)
    return _Part(headers, _join(chunks), eight_bit)


def _join(chunks: Sequence[bytes | Base64Payload]) -> Body:
    """Bytes when every chunk is bytes; else the chunks with runs of bytes
    joined (payloads stay lazy)."""
    data = [chunk for chunk in chunks if isinstance(chunk, bytes)]
    if len(data) == len(chunks):
        return b"".join(data)
    merged: list[bytes | Base64Payload] = []
    run: list[bytes] = []
    for chunk in chunks:
        if isinstance(chunk, bytes):
            run.append(chunk)
            continue
        if run:
            merged.append(b"".join(run))
            run = []
        merged.append(chunk)
    if run:
        merged.append(b"".join(run))
    return tuple(merged)


def _disposition(kind: str, filename: str | None) -> str:
    if filename is None:
        return f"Content-Disposition: {kind}\r\n"
    if not isinstance(filename, str):
        raise TypeError(
            f"Attachment filenames must be str, not {type(filename).__name__}"
        )
    check_no_line_separators("Content-Disposition (filename)", filename)
    check_parameter_value("Content-Disposition", "filename", filename)
    words = format_parameter("filename", filename)
    return fold("Content-Disposition", [(" ", f"{kind};"), *((" ", w) for w in words)])


def _check_mimetype(mimetype: object, field: str = "mimetype") -> ContentType:
    """Parse and validate a MIME type with optional parameters
    (``"text/calendar; method=REQUEST"``); the one check every mimetype
    given to attach(), attach_alternative() or an attachment tuple passes.
    The boundary of multipart types is asyncmail's to choose."""
    content_type = parse_content_type(field, mimetype)
    charset = content_type.param("charset")
    if charset is not None:
        _checked_charset(f"{field} (charset)", charset)
    if content_type.param("boundary") is not None:
        raise BadHeaderError(
            f"Invalid MIME type {mimetype!r} for {field}: asyncmail chooses "
            "MIME boundaries itself (a given one could be guessed)",
            header=field,
        )
    return content_type


def _mime_part(part: email.message.Message) -> _Part:
    """A stdlib MIME part given as an attachment, rendered again and made
    safe (see :mod:`asyncmail.message.foreign`)."""
    headers, body, eight_bit = render_part(part, "a MIME part")
    return _Part(headers, body, eight_bit)


class RenderedMessage:
    """A message serialised for sending.

    ``chunks`` is the whole message, CRLF line endings, not yet dot-stuffed:
    bytes, and for large binary attachments :class:`Base64Payload` objects
    that are encoded while they are sent (``data`` joins everything, reading
    and encoding those too). Every chunk starts at the beginning of a line.
    ``eight_bit`` says a body part uses 8bit transfer encoding (the server
    must offer 8BITMIME, else asyncmail renders again without it);
    ``smtputf8`` says an address needs SMTPUTF8.
    """

    __slots__ = ("chunks", "eight_bit", "message_id", "smtputf8")

    def __init__(
        self,
        chunks: tuple[bytes | Base64Payload, ...],
        eight_bit: bool,
        smtputf8: bool,
        message_id: str,
    ) -> None:
        self.chunks = chunks
        self.eight_bit = eight_bit
        self.smtputf8 = smtputf8
        self.message_id = message_id

    @property
    def streamed(self) -> bool:
        """True when part of the message is encoded only as it is sent."""
        return len(self.chunks) != 1 or not isinstance(self.chunks[0], bytes)

    @property
    def data(self) -> bytes:
        """The whole message as bytes (large payloads encoded now)."""
        if len(self.chunks) == 1 and isinstance(first := self.chunks[0], bytes):
            return first  # not streamed
        return b"".join(
            chunk if isinstance(chunk, bytes) else b"".join(chunk.blocks())
            for chunk in self.chunks
        )


def _text_content(content: str | bytes) -> str | None:
    """Decode text/* bytes as UTF-8, or None when they are not text after all."""
    if isinstance(content, bytes):
        try:
            return content.decode()
        except UnicodeDecodeError:
            return None
    return content


_OCTET_STREAM = ContentType("application", "octet-stream")


@lru_cache(maxsize=64)
def _checked_token(field: str, value: str) -> str:
    """A message attribute that ends up in Content-Type (content_subtype,
    mixed_subtype, alternative_subtype), checked as every MIME token is."""
    return check_token(field, value, "MIME subtype")


@lru_cache(maxsize=64)
def _checked_charset(field: str, value: str) -> str:
    """A charset from the message's encoding, DEFAULT_CHARSET or a mimetype's
    charset parameter, checked as every charset is."""
    return check_charset(field, value)


# What a Content-ID may hold between its angle brackets (RFC 2392: a msg-id).
_CID_CHAR = r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~.]"
_CID = re.compile(rf"{_CID_CHAR}{{1,200}}(?:@(?:{_CID_CHAR}|[\[\]]){{1,255}})?\Z")


def _check_cid(cid: object) -> str:
    """A Content-ID without its angle brackets, validated."""
    if not isinstance(cid, str):
        raise TypeError(f"cid must be a str, not {type(cid).__name__}")
    check_no_line_separators("Content-ID", cid)
    text = cid[1:-1] if cid.startswith("<") and cid.endswith(">") else cid
    if _CID.match(text) is None:
        raise BadHeaderError(
            f"Invalid Content-ID {cid[:80]!r}: use printable ASCII such as "
            "'logo@example.com', without spaces, control characters or '<>'",
            header="Content-ID",
        )
    return text


def _inline_part(item: InlineAttachment) -> _Part:
    content_type = _check_mimetype(item.mimetype)
    extra = _disposition("inline", item.filename) + (
        f"Content-ID: <{_check_cid(item.cid)}>\r\n"
    )
    return _binary_part(item.content, content_type, extra)
