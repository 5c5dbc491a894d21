"""The message model: Django's EmailMessage family, pure (no I/O but files you
ask it to attach).

``EmailMessage`` and ``EmailMultiAlternatives`` keep Django 6.x's constructor,
attributes and behaviour. Serialisation is asyncmail's own: it produces what
Python's modern :mod:`email` policy produces (RFC 2047 headers, RFC 2231
filenames, IDNA domains, proper MIME trees) at several times the speed, and it
enforces the header-safety rules itself (see :mod:`asyncmail.headers`).

* :meth:`EmailMessage.as_bytes` is the exact wire form (CRLF line endings,
  before SMTP dot-stuffing) that the backends send.
* :meth:`EmailMessage.message` returns a stdlib
  :class:`email.message.EmailMessage` parsed from those bytes, for code that
  wants to inspect or tweak it, as Django's does.

MIME tree, as Django builds it::

    text/<content_subtype>                       body only
    multipart/alternative [body, alternatives]   EmailMultiAlternatives
    multipart/mixed [body-or-alternative, attachments...]

plus, with :meth:`EmailMessage.attach_inline`, a ``multipart/related`` of the
HTML (the HTML alternative, or an HTML body) and the inline parts.

Every value that reaches a header goes through the checks of
:mod:`asyncmail.headers` (attributes, settings, mimetypes and parameters,
filenames, Content-IDs); foreign parts (stdlib messages, raw bytes) are
rendered again by :mod:`asyncmail.foreign`.
"""

from __future__ import annotations

import binascii
import email.message
import email.policy
import functools
import mimetypes
import os
import re
import secrets
import stat
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from email.headerregistry import Address
from email.parser import BytesParser
from email.utils import format_datetime
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, NamedTuple, TypeAlias

from .address import (
    AddressLike,
    Mailbox,
    format_address_header,
    is_empty_group,
    parse_address,
    parse_address_list,
)
from .dnsname import ascii_hostname, get_fqdn
from .exceptions import BadHeaderError, InvalidMessageError
from .foreign import check_part, parse_message, render_message, render_part
from .foreign import foreign_bytes as _foreign_bytes
from .headers import (
    ADDRESS_HEADERS,
    HARD_LIMIT,
    MSGID_HEADERS,
    ContentType,
    check_charset,
    check_header_lines,
    check_header_name,
    check_no_line_separators,
    check_parameter_value,
    check_token,
    fold,
    format_content_type,
    format_parameter,
    format_unstructured,
    parse_content_type,
)
from .lazytext import is_lazy_text, resolve_text
from .settings import settings

if TYPE_CHECKING:
    from .connection import ConnectionLike
    from .results import MessageResult

__all__ = [
    "DEFAULT_ATTACHMENT_MIME_TYPE",
    "RENDER_IN_THREAD",
    "STREAM_THRESHOLD",
    "Base64Payload",
    "EmailAlternative",
    "EmailAttachment",
    "EmailMessage",
    "EmailMultiAlternatives",
    "InlineAttachment",
    "RenderedMessage",
    "make_msgid",
    "render_is_heavy",
]

#: Content size (octets) above which a backend renders the message in a worker
#: thread instead of on the event loop: rendering costs about 4 ms per MB, so
#: at this size one render holds the loop for about a millisecond at most.
#: See :func:`render_is_heavy` and benchmarks/worst_case.py.
RENDER_IN_THREAD = 256 * 1024

#: MIME type of attachments whose type is not given and cannot be guessed.
DEFAULT_ATTACHMENT_MIME_TYPE = "application/octet-stream"

AttachmentContent: TypeAlias = (
    "str | bytes | memoryview | Path | Base64Payload | EmailMessage"
    " | email.message.Message"
)


class EmailAlternative(NamedTuple):
    """An alternative representation of the body (e.g. HTML)."""

    content: str | bytes
    mimetype: str


class InlineAttachment(NamedTuple):
    """A part shown inside the HTML body, referenced as ``cid:<cid>``."""

    content: bytes | Base64Payload
    mimetype: str
    cid: str
    filename: str | None


class EmailAttachment(NamedTuple):
    """An attachment given as data: ``(filename, content, mimetype)``."""

    filename: str | None
    content: AttachmentContent
    mimetype: str


# Headers asyncmail writes itself from the message's structure.
_STRUCTURAL_HEADERS = frozenset(
    {"content-type", "content-transfer-encoding", "mime-version"}
)
# Extra headers that replace a generated header in its usual place.
_PLACED_OVERRIDES = frozenset({"subject", "from", "to", "cc", "reply-to"})
_BCC_ERROR = (
    'Bcc is not a valid email header. Use the "bcc" argument to specify '
    "blind carbon copy recipients."
)

_SMTP_POLICY = email.policy.SMTP
_MSGID_CHARS = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    "!#$%&'*+-/=?^_`{|}~.@<>[]"
)


# -- generated headers ---------------------------------------------------------

_date_cache: tuple[int, bool, str] = (0, False, "")


def _date_header() -> str:
    """The Date header value for now, cached for the current second."""
    global _date_cache  # noqa: PLW0603 - a one-entry cache
    now = time.time()
    second = int(now)
    localtime = bool(settings.EMAIL_USE_LOCALTIME)
    cached_second, cached_local, text = _date_cache
    if cached_second != second or cached_local != localtime:
        moment = datetime.fromtimestamp(second, UTC)
        if localtime:
            moment = moment.astimezone()
        text = format_datetime(moment)
        _date_cache = (second, localtime, text)
    return text


def make_msgid(idstring: str | None = None, domain: str | None = None) -> str:
    """Return a new globally unique Message-ID, ``<...@domain>``.

    The domain defaults to this host's cached, IDNA-encoded FQDN. The left part
    joins the time in nanoseconds, the process id and 64 bits from the
    operating system's secure random source.
    """
    left = f"{time.time_ns()}.{os.getpid()}.{secrets.randbits(64)}"
    if idstring:
        left += f".{idstring}"
    if domain and not domain.isascii():
        # The same IDNA 2008 conversion as every other domain.
        domain = ascii_hostname(domain) or domain  # else refused just below
    msgid = f"<{left}@{domain or get_fqdn()}>"
    if idstring or domain:  # the rest is built from trusted parts
        _check_msgid_text("Message-ID", msgid)
    return msgid


def _check_msgid_text(header: str, value: str) -> None:
    check_no_line_separators(header, value)
    words = value.split()
    if not words or any(not set(word) <= _MSGID_CHARS for word in words):
        raise BadHeaderError(
            f"Invalid {header} {value!r}: use <id@domain> with printable ASCII "
            "and no control characters",
            header=header,
        )
    if any(len(word) > HARD_LIMIT - len(header) - 2 for word in words):
        raise BadHeaderError(f"{header} has an overlong id", header=header)


# -- bodies ----------------------------------------------------------------------


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
    return "base64", _base64_lines(data.replace(b"\n", b"\r\n")), False


def _base64_lines(data: bytes | memoryview) -> bytes:
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
    what :func:`_base64_lines` gives for the whole source.
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
            for block in self.blocks():
                yield block
            return
        import aiofiles

        total = 0
        source = self.source
        try:
            async with aiofiles.open(source, "rb", opener=_regular_opener) as file:
                while raw := await file.read(min(self.BLOCK, self.size + 1 - total)):
                    total += len(raw)
                    if total > self.size:
                        break  # it grew: stop reading now
                    yield _base64_lines(raw)
        except OSError as exc:
            raise _unreadable(source, exc) from exc
        self._check_size(total)
        if total == 0:
            yield b"\r\n"

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
            total += len(raw)
            if total > self.size:
                break  # it grew: refuse it below, without sending the excess
            yield _base64_lines(raw)
        self._check_size(total)
        if total == 0:
            yield b"\r\n"

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
    return _Part(headers, _base64_lines(data), False)


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
    if all(isinstance(chunk, bytes) for chunk in chunks):
        return b"".join(chunks)  # type: ignore[arg-type]
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
    safe (see :mod:`asyncmail.foreign`)."""
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
        if not self.streamed:
            return self.chunks[0]  # type: ignore[return-value]
        return b"".join(
            chunk if isinstance(chunk, bytes) else b"".join(chunk.blocks())
            for chunk in self.chunks
        )


def _guess_mimetype(filename: str | None, mimetype: str | None) -> str:
    return (
        mimetype
        or (mimetypes.guess_type(filename)[0] if filename else None)
        or DEFAULT_ATTACHMENT_MIME_TYPE
    )


def _streamable(mimetype: str) -> bool:
    """Whether a file of this type can be sent from disk as it is read:
    binary types are base64-encoded block by block; text and messages are
    decoded and checked first."""
    return mimetype.split("/", 1)[0].lower() not in ("text", "message")


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


def _content_size(content: object) -> int:
    """Octets render() encodes now for one content (streamed payloads: 0)."""
    if isinstance(content, (str, bytes, bytearray, memoryview)):
        return len(content)
    if isinstance(content, EmailMessage):
        return _render_size(content)
    if isinstance(content, email.message.Message):
        return RENDER_IN_THREAD  # foreign content: re-rendered part by part
    return 0  # a Path or Base64Payload: binary ones stream as they are sent


def _render_size(message: EmailMessage) -> int:
    if isinstance(message, RawMessage):
        return len(message.data)
    size = _content_size(message.body)
    # Long header values cost more per octet (encoded words): weigh them x100,
    # so headers of more than ~2,600 characters are rendered in a thread.
    header_text = _content_size(message.subject) + sum(
        _content_size(value) for value in message.extra_headers.values()
    )
    size += 100 * header_text if header_text > 2000 else header_text
    for alternative in getattr(message, "alternatives", ()):
        size += _content_size(alternative[0])
    for attachment in message.attachments:
        if isinstance(attachment, email.message.Message):
            size += RENDER_IN_THREAD
            continue
        content = attachment.content
        if isinstance(content, (Path, Base64Payload)) and not _streamable(
            attachment.mimetype
        ):
            # Text and messages from files are read and encoded at render.
            if isinstance(content, Base64Payload):
                size += content.size
            else:
                size += RENDER_IN_THREAD  # a Path whose size is not known yet
        elif (
            isinstance(content, (bytes, memoryview))
            and len(content) > STREAM_THRESHOLD
            and _streamable(attachment.mimetype)
        ):
            continue  # base64-encoded block by block while it is sent
        else:
            size += _content_size(content)
    for inline in message.inline_attachments:
        size += _content_size(inline.content)
    return size


def render_is_heavy(message: EmailMessage) -> bool:
    """Whether rendering *message* could hold an event loop for more than a
    millisecond or so (more than :data:`RENDER_IN_THREAD` octets of content
    to encode now, or foreign parts to re-render): backends then render it
    in a worker thread. Rendering is pure, so that is safe."""
    if isinstance(message, RawMessage) and type(message).render is RawMessage.render:
        # Its own bytes, checked and normalised in one linear pass: heavy only
        # when they are many (a thread hop per small message costs more).
        return len(message.data) > RENDER_IN_THREAD
    if type(message).message is not EmailMessage.message:
        return True  # a message() override: unknown work
    return _render_size(message) > RENDER_IN_THREAD


class EmailMessage:
    """A single e-mail message, Django's API (6.x semantics).

    ``to``, ``cc``, ``bcc`` and ``reply_to`` are lists (a bare string is a
    ``TypeError``: it would be iterated character by character); their items
    are address strings, ``(name, address)`` pairs or
    :class:`email.headerregistry.Address` objects. ``headers`` adds or
    overrides header fields (``From``, ``To``, ``Cc``, ``Reply-To`` and
    ``Subject`` change only what recipients see, never the envelope); ``Bcc``
    there is an error, as Bcc recipients never appear in any header.
    """

    #: Subtype of the body's MIME type: "plain" or e.g. "html".
    content_subtype = "plain"
    #: Charset of text bodies and text attachments; None means DEFAULT_CHARSET.
    encoding: str | None = None
    #: Subtype of the multipart holding the body and the attachments.
    mixed_subtype = "mixed"
    #: On the copies in ``asyncmail.outbox``: the alias of the mailer that
    #: sent it (None without MAILERS), as Django 6.1's locmem backend sets it.
    sent_using: str | None = None

    def __init__(
        self,
        subject: str = "",
        body: str = "",
        from_email: AddressLike | None = None,
        to: Iterable[AddressLike] | None = None,
        *,
        bcc: Iterable[AddressLike] | None = None,
        connection: ConnectionLike | None = None,
        attachments: Iterable[EmailAttachment | tuple[Any, ...] | email.message.Message]
        | None = None,
        headers: dict[str, Any] | None = None,
        cc: Iterable[AddressLike] | None = None,
        reply_to: Iterable[AddressLike] | None = None,
    ) -> None:
        self.to: list[AddressLike] = _address_list_argument("to", to)
        self.cc: list[AddressLike] = _address_list_argument("cc", cc)
        self.bcc: list[AddressLike] = _address_list_argument("bcc", bcc)
        self.reply_to: list[AddressLike] = _address_list_argument("reply_to", reply_to)
        self.from_email: AddressLike = from_email or settings.DEFAULT_FROM_EMAIL
        self.subject = subject
        self.body = body or ""
        self.attachments: list[EmailAttachment | email.message.Message] = []
        #: Parts shown inside the HTML (``cid:`` URLs); see attach_inline().
        self.inline_attachments: list[InlineAttachment] = []
        for attachment in attachments or ():
            if isinstance(attachment, email.message.Message):
                self.attach(attachment)
            else:
                self.attach(*attachment)
        self.extra_headers: dict[str, Any] = headers or {}
        self.connection = connection
        #: The outcome of the last send of this message (None before any).
        self.result: MessageResult | None = None

    # -- Django API -------------------------------------------------------------

    def recipients(self) -> list[AddressLike]:
        """Every envelope recipient: to + cc + bcc, without empty entries."""
        return [address for address in (*self.to, *self.cc, *self.bcc) if address]

    def attach(
        self,
        filename: str | email.message.Message | None = None,
        content: AttachmentContent | None = None,
        mimetype: str | None = None,
    ) -> None:
        """Attach data as a file, or a ready-made stdlib MIME part.

        The MIME type is guessed from *filename* when not given. For text/*
        types, bytes content is decoded as UTF-8; when that fails the
        attachment becomes application/octet-stream, as in Django.
        """
        if isinstance(filename, email.message.Message):
            if content is not None or mimetype is not None:
                raise ValueError(
                    "content and mimetype must not be given when a MIMEPart "
                    "instance is provided."
                )
            check_part(filename, "a MIME part")  # refuse bad headers now
            self.attachments.append(filename)
            return
        if content is None:
            raise ValueError("content must be provided.")
        filename, content = resolve_text(filename), resolve_text(content)
        if filename is not None and not isinstance(filename, str):
            raise TypeError(
                f"Attachment filenames must be str, not {type(filename).__name__}"
            )
        mimetype = _guess_mimetype(filename, mimetype)
        maintype = _check_mimetype(mimetype).maintype
        if filename is not None:
            check_parameter_value("Content-Disposition", "filename", filename)
        if isinstance(content, Path) and content.exists():
            # Only a regular file, and its size now is the size it must have
            # (a missing file fails when the message is sent, as it did).
            content = Base64Payload(content)
        if maintype == "text" and isinstance(content, bytes):
            text = _text_content(content)
            if text is None:
                mimetype = DEFAULT_ATTACHMENT_MIME_TYPE
            else:
                content = text
        self.attachments.append(EmailAttachment(filename, content, mimetype))

    def attach_inline(
        self,
        content: bytes | Path,
        mimetype: str | None = None,
        *,
        filename: str | None = None,
        cid: str | None = None,
    ) -> str:
        """Attach an image (or any part) to show inside the HTML body; return
        its Content-ID, to use as ``<img src="cid:{cid}">``.

        The part goes in a ``multipart/related`` with the HTML (the HTML
        alternative of an :class:`EmailMultiAlternatives`, or an HTML body),
        with ``Content-Disposition: inline``. *content* is bytes or a
        :class:`~pathlib.Path` to a regular file (read when sent; it must
        keep its size). *mimetype* is guessed from *filename* (or the path's
        name) when not given; *cid* defaults to a new unique id.
        """
        if isinstance(content, Path):
            if filename is None:
                filename = content.name
            payload: bytes | Base64Payload = Base64Payload(content)
        elif isinstance(content, (bytes, bytearray, memoryview)):
            payload = bytes(content)
        else:
            raise TypeError(
                f"Inline content must be bytes or a Path, not {type(content).__name__}"
            )
        mimetype = _guess_mimetype(filename, mimetype)
        content_type = _check_mimetype(mimetype)
        if content_type.maintype in ("multipart", "message"):
            raise InvalidMessageError(
                f"An inline part can't be {content_type.mimetype}; attach it instead"
            )
        if filename is not None:
            check_parameter_value("Content-Disposition", "filename", filename)
        if cid is None:
            cid = make_msgid()[1:-1]
        cid = _check_cid(cid)
        if any(item.cid == cid for item in self.inline_attachments):
            raise ValueError(f"Content-ID {cid!r} is already used in this message")
        self.inline_attachments.append(
            InlineAttachment(payload, mimetype, cid, filename)
        )
        return cid

    def attach_inline_file(
        self,
        path: str | os.PathLike[str],
        mimetype: str | None = None,
        *,
        cid: str | None = None,
    ) -> str:
        """Attach a regular file to show inside the HTML (see
        :meth:`attach_inline`); return its Content-ID. Streamed from disk
        when the message is sent."""
        path = Path(path)
        _regular_size(path)
        return self.attach_inline(path, mimetype, filename=path.name, cid=cid)

    async def aattach_inline_file(
        self,
        path: str | os.PathLike[str],
        mimetype: str | None = None,
        *,
        cid: str | None = None,
    ) -> str:
        """:meth:`attach_inline_file` with its file check off the event loop."""
        import anyio.to_thread

        path = Path(path)
        await anyio.to_thread.run_sync(_regular_size, path)
        return self.attach_inline(path, mimetype, filename=path.name, cid=cid)

    def attach_file(
        self, path: str | os.PathLike[str], mimetype: str | None = None
    ) -> None:
        """Attach a file from the filesystem (blocking).

        The file is read now, as in Django, except a binary file larger than
        STREAM_THRESHOLD (1 MiB): that one is attached by reference (the
        content is a :class:`Base64Payload` holding the path and the size it
        has now) and streamed from disk when the message is sent, so it never
        sits in memory whole; if its size changes before then, sending that
        message fails. In async code prefer :meth:`aattach_file`, which does
        its I/O off the event loop.
        """
        path = Path(path)
        mimetype = _guess_mimetype(path.name, mimetype)
        size = _regular_size(path, map_errors=False)  # FIFOs, devices: refused
        if _streamable(mimetype) and size > STREAM_THRESHOLD:
            self.attach(path.name, Base64Payload(path, size), mimetype)
        else:
            self.attach(path.name, _read_regular(path, size), mimetype)

    async def aattach_file(
        self, path: str | os.PathLike[str], mimetype: str | None = None
    ) -> None:
        """Attach a file from the filesystem, as :meth:`attach_file` does,
        reading it with aiofiles (large binary files are streamed at send)."""
        import anyio.to_thread

        path = Path(path)
        mimetype = _guess_mimetype(path.name, mimetype)
        size = await anyio.to_thread.run_sync(
            functools.partial(_regular_size, path, map_errors=False)
        )
        if _streamable(mimetype) and size > STREAM_THRESHOLD:
            self.attach(path.name, Base64Payload(path, size), mimetype)
            return
        content = await anyio.to_thread.run_sync(_read_regular, path, size)
        self.attach(path.name, content, mimetype)

    def message(
        self, *, policy: email.policy.Policy = email.policy.default
    ) -> email.message.EmailMessage:
        """The message as a stdlib :class:`email.message.EmailMessage`.

        It is parsed from asyncmail's serialisation, so it is exactly what
        :meth:`as_bytes` gives (unless a subclass overrides this method); as
        in Django, its line endings are ``\n`` (the serialisation holds only
        CRLF, so the conversion is exact).

        *policy* is honoured as Django 6 honours it: the message carries it
        (its ``linesep``, ``max_line_length``... apply to ``as_bytes()``);
        with ``cte_type="7bit"`` no part is ``8bit`` (text is
        quoted-printable or base64 instead); with ``utf8=True``
        (``email.policy.SMTPUTF8``) header text is plain UTF-8 instead of
        RFC 2047 encoded words. Any policy works, ``compat32`` included.
        """
        allow_8bit = getattr(policy, "cte_type", "8bit") != "7bit"
        data = self._render(allow_8bit=allow_8bit).data.replace(b"\r\n", b"\n")
        parsed = BytesParser(email.message.EmailMessage, policy=policy).parsebytes(data)
        assert isinstance(parsed, email.message.EmailMessage)
        if getattr(policy, "utf8", False):
            _decode_encoded_headers(parsed)
        return parsed

    def as_bytes(self) -> bytes:
        """The message as sent: RFC 5322 bytes with CRLF line endings."""
        return self.render().data

    def send(self, fail_silently: bool = False, *, using: str | None = None) -> int:
        """Send the message (blocking); return the number sent (0 or 1)."""
        from .sync import run_blocking

        return run_blocking(self.asend, fail_silently, using=using)

    async def asend(
        self, fail_silently: bool = False, *, using: str | None = None
    ) -> int:
        """Send the message; return the number sent (0 or 1).

        Uses ``self.connection`` if set, else the mailer named by *using*, else
        the default backend. The per-recipient outcome is in :attr:`result`.
        """
        if not self.recipients():
            # Nobody to send to: don't even open a connection (the result
            # still says so).
            from .results import MessageResult, record

            record(MessageResult(self))
            return 0
        from .api import connection_for_call, send_options

        backend = connection_for_call(self.connection, using, None, None, fail_silently)
        return await backend.send_messages(
            [self], **send_options(self.connection, fail_silently)
        )

    def freeze_lazy_text(self) -> None:
        """Replace lazy strings (``gettext_lazy`` and the like) in the
        message's text, addresses, headers, attachments and alternatives by
        their text, in the active language of the calling thread.

        The blocking calls do it before handing the message to the library's
        event loop thread, where the caller's translation is not active.
        """
        self.subject = resolve_text(self.subject)
        self.body = resolve_text(self.body)
        self.from_email = _freeze_address(self.from_email)
        for name in ("to", "cc", "bcc", "reply_to"):
            addresses = getattr(self, name)
            if any(_holds_lazy_text(item) for item in addresses):
                setattr(self, name, [_freeze_address(item) for item in addresses])
        headers = self.extra_headers
        if any(is_lazy_text(k) or is_lazy_text(v) for k, v in headers.items()):
            self.extra_headers = {
                resolve_text(name): resolve_text(value)
                for name, value in headers.items()
            }
        for index, attachment in enumerate(self.attachments):
            if isinstance(attachment, EmailAttachment) and (
                is_lazy_text(attachment.filename) or is_lazy_text(attachment.content)
            ):
                self.attachments[index] = attachment._replace(
                    filename=resolve_text(attachment.filename),
                    content=resolve_text(attachment.content),
                )
        alternatives = getattr(self, "alternatives", None)
        if isinstance(alternatives, list):
            for index, (content, mimetype) in enumerate(alternatives):
                if is_lazy_text(content):
                    alternatives[index] = EmailAlternative(str(content), mimetype)

    def __getstate__(self) -> dict[str, Any]:
        # A live connection belongs to the process that opened it.
        state = self.__dict__.copy()
        state["connection"] = None
        return state

    # -- rendering ---------------------------------------------------------------

    def render(self, *, allow_8bit: bool = True) -> RenderedMessage:
        """Serialise the message for sending (see :class:`RenderedMessage`).

        Raises :class:`~asyncmail.exceptions.BadHeaderError` for unsafe
        headers, :class:`~asyncmail.exceptions.InvalidMessageError` (a
        ValueError) for other bad content and TypeError for values of the
        wrong type, before anything could reach a server (a backend fails
        that message alone, with the reason, and sends the others).
        """
        if type(self).message is not EmailMessage.message:
            return self._render_through_message()
        return self._render(allow_8bit)

    def _render(self, allow_8bit: bool) -> RenderedMessage:
        """asyncmail's own serialisation, which :meth:`message` parses.

        :meth:`render` calls it unless a subclass overrides :meth:`message`;
        such an override usually calls ``super().message()``, which must not
        go back through the override.
        """
        extra = self._normalised_extra_headers()
        std, message_id, smtputf8 = self._standard_headers(extra)
        root = self._root_part(allow_8bit)
        if root.headers.startswith("Content-Type: multipart/"):
            head = "MIME-Version: 1.0\r\n" + root.headers + std
        else:
            head = root.headers + "MIME-Version: 1.0\r\n" + std
        # Every formatter keeps lines short; this backstop makes sure of it.
        check_header_lines(head)
        top = head.encode("utf-8") + b"\r\n"
        body = root.body
        chunks = (top + body,) if isinstance(body, bytes) else _join((top, *body))
        assert isinstance(chunks, tuple)
        return RenderedMessage(chunks, root.eight_bit, smtputf8, message_id)

    def _render_through_message(self) -> RenderedMessage:
        """Compatibility path for subclasses that override :meth:`message`.

        Unless the message needs SMTPUTF8 anyway (a non-ASCII local part),
        the policy does not allow UTF-8 headers, so non-ASCII text the
        override adds is RFC 2047 encoded.
        """
        # A message that needs SMTPUTF8 anyway (a non-ASCII local part) is
        # written with UTF-8 headers: with utf8=False, Python 3.13 re-encodes
        # such a local part as an "unknown-8bit" encoded word, breaking it.
        # Only the addresses decide it: the headers alone, not the bodies.
        needs_utf8 = self._standard_headers(self._normalised_extra_headers())[2]
        msg = self.message(policy=email.policy.SMTPUTF8 if needs_utf8 else _SMTP_POLICY)
        # Rendered again like any foreign message: headers re-validated and
        # re-folded, Bcc removed.
        data, _ = render_message(msg, "the message from message()")
        head, _, body = data.partition(b"\r\n\r\n")
        smtputf8 = not head.isascii()
        eight_bit = not body.isascii()
        return RenderedMessage(
            (data,), eight_bit, smtputf8, str(msg.get("Message-ID", ""))
        )

    def _normalised_extra_headers(self) -> dict[str, tuple[str, Any]]:
        """Extra headers keyed by lower-cased name: (name as given, value)."""
        extra: dict[str, tuple[str, Any]] = {}
        for given, value in self.extra_headers.items():
            name = resolve_text(given)
            check_header_name(name)
            lowered = name.lower()
            if lowered in ("bcc", "resent-bcc"):
                raise BadHeaderError(_BCC_ERROR, header=name)
            if lowered in _STRUCTURAL_HEADERS:
                raise BadHeaderError(
                    f"The {name} header is set by asyncmail from the message's "
                    "structure; use content_subtype, encoding, alternatives or "
                    "attachments instead",
                    header=name,
                )
            if lowered in extra:
                raise BadHeaderError(
                    f"Header {name!r} is given twice (header names ignore case)",
                    header=name,
                )
            extra[lowered] = (name, value)
        return extra

    def _standard_headers(
        self, extra: dict[str, tuple[str, Any]]
    ) -> tuple[str, str, bool]:
        """Subject, From, To, Cc, Reply-To, Date, Message-ID, then the extra
        headers in their given order (Django 6's order)."""
        lines: list[str] = []
        smtputf8 = False

        def addresses(header: str, default: Sequence[AddressLike]) -> None:
            nonlocal smtputf8
            given = extra.get(header.lower())
            if given is not None:
                text = _header_text(given[0], given[1])
                if is_empty_group(text):
                    lines.append(format_unstructured(header, text.strip()))
                    return
                mailboxes = parse_address_list(text, header)
            else:
                mailboxes = [
                    _parse_for_header(header, item) for item in default if item
                ]
            if mailboxes:
                smtputf8 = smtputf8 or any(m.needs_smtputf8 for m in mailboxes)
                lines.append(format_address_header(header, mailboxes))

        # str() like Django: subjects are often lazy translation strings.
        subject = extra["subject"][1] if "subject" in extra else self.subject
        lines.append(format_unstructured("Subject", str(subject)))
        addresses("From", [self.from_email])
        addresses("To", self.to)
        addresses("Cc", self.cc)
        addresses("Reply-To", self.reply_to)
        if "date" not in extra:
            lines.append(f"Date: {_date_header()}\r\n")
        if "message-id" in extra:
            message_id = _header_text("Message-ID", extra["message-id"][1])
        else:
            message_id = make_msgid()
            lines.append(f"Message-ID: {message_id}\r\n")
        for lowered, (name, value) in extra.items():
            if lowered in _PLACED_OVERRIDES:
                continue
            text = _header_text(name, value)
            if lowered in ADDRESS_HEADERS:
                mailboxes = parse_address_list(text, name)
                smtputf8 = smtputf8 or any(m.needs_smtputf8 for m in mailboxes)
                lines.append(format_address_header(name, mailboxes))
            elif lowered in MSGID_HEADERS:
                _check_msgid_text(name, text)
                lines.append(fold(name, [(" ", word) for word in text.split()]))
            else:
                lines.append(format_unstructured(name, text))
        return "".join(lines), message_id, smtputf8

    def _charset(self) -> str:
        if self.encoding is None:
            return _checked_charset("DEFAULT_CHARSET", settings.DEFAULT_CHARSET)
        return _checked_charset("encoding", self.encoding)

    def _body_part(self, allow_8bit: bool) -> _Part:
        body: object = self.body
        if isinstance(body, bytes):
            body = body.decode(self._charset())
        elif not isinstance(body, str):
            body = str(body)  # e.g. a lazy translation string
        assert isinstance(body, str)
        subtype = _checked_token("content_subtype", self.content_subtype)
        return _text_part(body, subtype.lower(), self._charset(), allow_8bit)

    def _content_parts(self, allow_8bit: bool) -> list[_Part]:
        """The parts before the attachments: the body (if any), with the
        inline attachments in a multipart/related around it."""
        if self.body or not (self.attachments or self.inline_attachments):
            return [self._related(self._body_part(allow_8bit))]
        if self.inline_attachments:
            return [self._related(None)]
        return []

    def _related(self, root: _Part | None) -> _Part:
        """*root* and the inline attachments in a multipart/related (RFC 2387:
        the root, usually the HTML, comes first); *root* alone without them."""
        if not self.inline_attachments:
            assert root is not None
            return root
        parts = [] if root is None else [root]
        parts += [_inline_part(item) for item in self.inline_attachments]
        return _multipart("related", parts)

    def _root_part(self, allow_8bit: bool) -> _Part:
        parts = self._content_parts(allow_8bit)
        if not self.attachments:
            return parts[0]
        parts += [self._attachment_part(item, allow_8bit) for item in self.attachments]
        return _multipart(_checked_token("mixed_subtype", self.mixed_subtype), parts)

    def _attachment_part(
        self, attachment: EmailAttachment | email.message.Message, allow_8bit: bool
    ) -> _Part:
        if isinstance(attachment, email.message.Message):
            return _mime_part(attachment)
        filename, content, mimetype = attachment
        filename, content = resolve_text(filename), resolve_text(content)
        content_type = _check_mimetype(mimetype)
        maintype, subtype = content_type.maintype, content_type.subtype
        if maintype in ("text", "message"):
            # Text is decoded and messages checked: they need their bytes.
            if isinstance(content, Path):
                content = Base64Payload(content)
            if isinstance(content, Base64Payload):
                content = content.read()
            elif isinstance(content, memoryview):
                content = bytes(content)
        if maintype == "text":
            text = _text_content(content) if isinstance(content, (str, bytes)) else None
            if text is None and isinstance(content, (bytes, bytearray, memoryview)):
                # Attached as text/* but it is not UTF-8: send it as binary.
                return _binary_part(
                    bytes(content),
                    _OCTET_STREAM,
                    _disposition("attachment", filename),
                )
            if text is None:
                raise TypeError(
                    f"Content of a {mimetype} attachment must be str or bytes"
                )
            charset = content_type.param("charset")
            return _text_part(
                text,
                subtype,
                self._charset()
                if charset is None
                else _checked_charset("mimetype (charset)", charset),
                allow_8bit,
                _disposition("attachment", filename),
                content_type.without("charset"),
            )
        if maintype == "message":
            return self._message_attachment(
                filename, content, maintype, subtype, allow_8bit
            )
        if maintype == "multipart":
            raise InvalidMessageError(
                "multipart/* attachments must be given as an email.message.MIMEPart"
            )
        if isinstance(content, str):
            content = content.encode(self._charset())
        elif isinstance(content, bytearray):
            content = bytes(content)  # a snapshot: the caller may change it
        if not isinstance(content, (bytes, memoryview, Path, Base64Payload)):
            raise TypeError(
                f"Content of a {mimetype} attachment must be bytes or a Path, "
                f"not {type(content).__name__}"
            )
        return _binary_part(content, content_type, _disposition("attachment", filename))

    def _message_attachment(
        self,
        filename: str | None,
        content: Any,
        maintype: str,
        subtype: str,
        allow_8bit: bool,
    ) -> _Part:
        # RFC 2046 5.2.1: message/rfc822 is never base64 or quoted-printable,
        # so an attached EmailMessage must itself avoid 8bit when we must.
        if isinstance(content, EmailMessage):
            rendered = content.render(allow_8bit=allow_8bit)
            data, eight_bit = rendered.data, rendered.eight_bit
        elif isinstance(content, email.message.Message):
            data, eight_bit = render_message(content)
        elif isinstance(content, (str, bytes)):
            # Raw bytes are parsed and rendered again too: their headers
            # get the same checks, and a Bcc header is removed.
            data, eight_bit = render_message(parse_message(content))
        else:
            raise TypeError(
                f"Content of a {maintype}/{subtype} attachment must be an "
                "EmailMessage, an email.message.Message, str or bytes"
            )
        headers = (
            f"Content-Type: {maintype}/{subtype}\r\n"
            f"Content-Transfer-Encoding: {'8bit' if eight_bit else '7bit'}\r\n"
            + _disposition("attachment", filename)
        )
        return _Part(headers, data, eight_bit)


class EmailMultiAlternatives(EmailMessage):
    """A message with alternative renderings of the body, e.g. text and HTML."""

    #: Subtype of the multipart holding the body and its alternatives.
    alternative_subtype = "alternative"

    def __init__(
        self,
        subject: str = "",
        body: str = "",
        from_email: AddressLike | None = None,
        to: Iterable[AddressLike] | None = None,
        *,
        bcc: Iterable[AddressLike] | None = None,
        connection: ConnectionLike | None = None,
        attachments: Iterable[EmailAttachment | tuple[Any, ...] | email.message.Message]
        | None = None,
        headers: dict[str, Any] | None = None,
        alternatives: Iterable[EmailAlternative | tuple[str | bytes, str]]
        | None = None,
        cc: Iterable[AddressLike] | None = None,
        reply_to: Iterable[AddressLike] | None = None,
    ) -> None:
        super().__init__(
            subject,
            body,
            from_email,
            to,
            bcc=bcc,
            connection=connection,
            attachments=attachments,
            headers=headers,
            cc=cc,
            reply_to=reply_to,
        )
        self.alternatives: list[EmailAlternative] = [
            EmailAlternative(*alternative) for alternative in (alternatives or ())
        ]

    def attach_alternative(self, content: str | bytes, mimetype: str) -> None:
        """Add an alternative rendering of the body (e.g. ``"text/html"``)."""
        if content is None or mimetype is None:
            raise ValueError("Both content and mimetype must be provided.")
        content_type = _check_mimetype(mimetype)
        if content_type.maintype in ("multipart", "message"):
            raise InvalidMessageError(
                f"An alternative can't be {content_type.mimetype}; attach it instead"
            )
        self.alternatives.append(EmailAlternative(content, mimetype))

    def body_contains(self, text: str) -> bool:
        """True if *text* is in the body and in every text/* alternative."""
        if text not in str(self.body):
            return False
        for given, mimetype in self.alternatives:
            if mimetype.startswith("text/"):
                content = resolve_text(given)
                haystack = content.decode() if isinstance(content, bytes) else content
                if text not in haystack:
                    return False
        return True

    def _content_parts(self, allow_8bit: bool) -> list[_Part]:
        if not self.alternatives:
            return super()._content_parts(allow_8bit)
        parts = [self._body_part(allow_8bit)] if self.body else []
        html: int | None = None
        if self.body and self.content_subtype == "html":
            html = 0
        for given, mimetype in self.alternatives:
            content = resolve_text(given)
            content_type = _check_mimetype(mimetype)
            if content_type.maintype == "text":
                text = content.decode() if isinstance(content, bytes) else content
                charset = content_type.param("charset")
                parts.append(
                    _text_part(
                        text,
                        content_type.subtype,
                        self._charset()
                        if charset is None
                        else _checked_charset("mimetype (charset)", charset),
                        allow_8bit,
                        params=content_type.without("charset"),
                    )
                )
                if html is None and content_type.subtype == "html":
                    html = len(parts) - 1
            elif content_type.maintype in ("multipart", "message"):
                raise InvalidMessageError(
                    f"An alternative can't be {content_type.mimetype}; attach "
                    "it instead"
                )
            else:
                data = (
                    content.encode(self._charset())
                    if isinstance(content, str)
                    else content
                )
                parts.append(_binary_part(bytes(data), content_type))
        subtype = _checked_token("alternative_subtype", self.alternative_subtype)
        if not self.inline_attachments:
            return [_multipart(subtype, parts)]
        if html is None:
            # No HTML to hold the images: they relate to the whole.
            return [self._related(_multipart(subtype, parts))]
        parts[html] = self._related(parts[html])
        return [_multipart(subtype, parts)]


def _holds_lazy_text(address: object) -> bool:
    if isinstance(address, tuple):
        return any(is_lazy_text(item) for item in address)
    return is_lazy_text(address)


def _freeze_address(address: Any) -> Any:
    if isinstance(address, tuple) and len(address) == 2:
        return (resolve_text(address[0]), resolve_text(address[1]))
    return resolve_text(address)


def _decode_encoded_headers(msg: email.message.EmailMessage) -> None:
    """Rewrite *msg*'s RFC 2047 / RFC 2231 encoded header fields as plain
    text, for a policy that allows UTF-8 headers (SMTPUTF8): what Django 6
    gives for such a policy. Domains stay IDNA-encoded (ASCII is valid under
    SMTPUTF8 too)."""
    for part in msg.walk():
        raw = list(part.raw_items())
        counts: dict[str, int] = {}
        for name, _ in raw:
            counts[name.lower()] = counts.get(name.lower(), 0) + 1
        for name, value in raw:
            if ("=?" in value or "*=" in value) and counts[name.lower()] == 1:
                part.replace_header(name, str(part[name]))


def _address_list_argument(
    name: str, value: Iterable[AddressLike] | None
) -> list[AddressLike]:
    if not value:
        return []
    if isinstance(value, str):
        raise TypeError(f'"{name}" argument must be a list or tuple')
    if isinstance(value, Address):
        raise TypeError(f'"{name}" argument must be a list or tuple of addresses')
    return list(value)


def _parse_for_header(header: str, value: AddressLike) -> Mailbox:
    try:
        return parse_address(value)
    except BadHeaderError as exc:
        exc.header = header
        raise


def _header_text(name: str, value: Any) -> str:
    """The text of a header value given as str (or a lazy string), int or
    datetime."""
    value = resolve_text(value)
    if isinstance(value, str):
        return value
    if isinstance(value, datetime):
        return format_datetime(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, (Address, tuple)) and name.lower() in ADDRESS_HEADERS:
        return parse_address(value).as_text()
    raise TypeError(
        f"Header {name!r} must be a str, int or datetime, not {type(value).__name__}"
    )


# The header lines a raw message is checked for: Bcc (refused) and
# Message-ID (reported in the result), in one pass.
_RAW_HEADER = re.compile(
    rb"(?:^|\r\n)(bcc|resent-bcc|message-id)[ \t]*:[ \t]*([^\r\n]*)", re.IGNORECASE
)


class RawMessage(EmailMessage):
    """A message that is already serialised, sent exactly as given.

    For messages built elsewhere, queued as bytes, or signed (DKIM) so that
    they must not change. *data* is the whole message, headers and body;
    *from_email* and *to* (plus *bcc*) are the SMTP envelope only: nothing is
    added to the headers. Line endings become CRLF; a line over 998 octets,
    a NUL or a ``Bcc`` header is an error (nothing Bcc'd may leak).
    """

    def __init__(
        self,
        data: bytes,
        from_email: AddressLike | None = None,
        to: Iterable[AddressLike] | None = None,
        *,
        bcc: Iterable[AddressLike] | None = None,
        connection: ConnectionLike | None = None,
    ) -> None:
        super().__init__(from_email=from_email, to=to, bcc=bcc, connection=connection)
        if not isinstance(data, bytes):
            raise TypeError(f"RawMessage data must be bytes, not {type(data).__name__}")
        self.data = data

    def render(self, *, allow_8bit: bool = True) -> RenderedMessage:
        data, _ = _foreign_bytes(self.data, "The raw message")
        head, _, body = data.partition(b"\r\n\r\n")
        message_id = ""
        for match in _RAW_HEADER.finditer(head):
            if match.group(1).lower() != b"message-id":
                raise BadHeaderError(
                    "A raw message must not carry a Bcc header; give Bcc "
                    "recipients with bcc= (they go in the envelope only)",
                    header="Bcc",
                )
            message_id = match.group(2).decode("ascii", "replace").strip()
        eight_bit = not body.isascii()
        if eight_bit and not allow_8bit:
            raise InvalidMessageError(
                "The raw message has 8-bit content and cannot be re-encoded "
                "for a server without 8BITMIME"
            )
        return RenderedMessage((data,), eight_bit, not head.isascii(), message_id)

    def message(
        self, *, policy: email.policy.Policy = email.policy.default
    ) -> email.message.EmailMessage:
        data = self.render().data.replace(b"\r\n", b"\n")
        parsed = BytesParser(email.message.EmailMessage, policy=policy).parsebytes(data)
        assert isinstance(parsed, email.message.EmailMessage)
        return parsed
