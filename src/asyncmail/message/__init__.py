"""The message model: Django's EmailMessage family.

``EmailMessage`` and ``EmailMultiAlternatives`` keep Django 6.x's constructor,
attributes and behaviour: this module is that model (its attributes, the
``attach`` family, alternatives, lazy text) and is as long as Django's API
and its documentation make it. Serialisation is asyncmail's own: it produces
what Python's modern :mod:`email` policy produces (RFC 2047 headers, RFC 2231
filenames, IDNA domains, proper MIME trees) at several times the speed, and
it enforces the header-safety rules itself (see :mod:`asyncmail.headers`).

* :meth:`EmailMessage.as_bytes` is the exact wire form (CRLF line endings,
  before SMTP dot-stuffing) that the backends send.
* :meth:`EmailMessage.message` returns a stdlib
  :class:`email.message.EmailMessage` parsed from those bytes, for code that
  wants to inspect or tweak it, as Django's does.

The package, one job a module:

* :mod:`.base`: :class:`BaseMessage`, what every sendable message has (the
  envelope, ``render()``, ``message()``, ``send()``);
* :mod:`.raw`: :class:`RawMessage`, bytes sent as given (not an EmailMessage);
* :mod:`.tree`: the MIME tree Django builds for a model;
* :mod:`.fields`: the generated header fields (Subject... Date, Message-ID);
* :mod:`.mime`: MIME entities and :class:`RenderedMessage`, the pure renderer;
* :mod:`.payload`: streamed payloads, the only file I/O;
* :mod:`.foreign`: stdlib parts and messages, and raw bytes, rendered again
  and re-validated.
"""

from __future__ import annotations

import email.message
import mimetypes
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, TypeAlias

from ..address import AddressLike
from ..exceptions import InvalidMessageError
from ..lazytext import is_lazy_text, resolve_text
from ..mimeparams import check_parameter_value
from . import payload, tree
from .base import BaseMessage, _address_list_argument
from .fields import make_msgid
from .foreign import check_part
from .mime import (
    RENDER_IN_THREAD,
    RenderedMessage,
    _check_cid,
    _check_mimetype,
    _Part,
    _text_content,
)
from .payload import STREAM_THRESHOLD, Base64Payload
from .raw import RawMessage

if TYPE_CHECKING:
    from ..connection import ConnectionLike

__all__ = [
    "DEFAULT_ATTACHMENT_MIME_TYPE",
    "RENDER_IN_THREAD",
    "STREAM_THRESHOLD",
    "Base64Payload",
    "BaseMessage",
    "EmailAlternative",
    "EmailAttachment",
    "EmailMessage",
    "EmailMultiAlternatives",
    "InlineAttachment",
    "RawMessage",
    "RenderedMessage",
    "make_msgid",
    "render_is_heavy",
]

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


def _guess_mimetype(filename: str | None, mimetype: str | None) -> str:
    return (
        mimetype
        or (mimetypes.guess_type(filename)[0] if filename else None)
        or DEFAULT_ATTACHMENT_MIME_TYPE
    )


def _content_size(content: object) -> int:
    """Octets render() encodes now for one content (streamed payloads: 0)."""
    if isinstance(content, (str, bytes, bytearray, memoryview)):
        return len(content)
    if isinstance(content, BaseMessage):
        return _render_size(content)
    if isinstance(content, email.message.Message):
        return RENDER_IN_THREAD  # foreign content: re-rendered part by part
    return 0  # a Path or Base64Payload: binary ones stream as they are sent


def _render_size(message: BaseMessage) -> int:
    if isinstance(message, RawMessage):
        return len(message.data)
    if not isinstance(message, EmailMessage):
        return RENDER_IN_THREAD  # another kind of message: unknown work
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
        if isinstance(content, (Path, Base64Payload)) and not payload.streamable(
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
            and payload.streamable(attachment.mimetype)
        ):
            continue  # base64-encoded block by block while it is sent
        else:
            size += _content_size(content)
    for inline in message.inline_attachments:
        size += _content_size(inline.content)
    return size


def render_is_heavy(message: BaseMessage) -> bool:
    """Whether rendering *message* could hold an event loop for more than a
    millisecond or so (more than :data:`RENDER_IN_THREAD` octets of content
    to encode now, or foreign parts to re-render): backends then render it
    in a worker thread. Rendering is pure, so that is safe."""
    if isinstance(message, RawMessage) and (
        type(message).render is RawMessage.render or type(message).light_render
    ):
        # Its own bytes, checked and normalised in one linear pass: heavy only
        # when they are many (a thread hop per small message costs more).
        return len(message.data) > RENDER_IN_THREAD
    if not isinstance(message, EmailMessage) or _overrides_message(message):
        return True  # an override of render() or message(): unknown work
    return _render_size(message) > RENDER_IN_THREAD


class EmailMessage(BaseMessage):
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
        super().__init__(from_email, to, cc=cc, bcc=bcc, connection=connection)
        self.reply_to: list[AddressLike] = _address_list_argument("reply_to", reply_to)
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

    # -- Django API -------------------------------------------------------------

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
        if isinstance(content, Path):
            # Only a regular file, and its size now is the size it must have
            # (a missing file fails when the message is sent, as it did).
            content = payload.attached_path(content)
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
            inline: bytes | Base64Payload = Base64Payload(content)
        elif isinstance(content, (bytes, bytearray, memoryview)):
            inline = bytes(content)
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
            InlineAttachment(inline, mimetype, cid, filename)
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
        payload.check_file(path)
        return self.attach_inline(path, mimetype, filename=path.name, cid=cid)

    async def aattach_inline_file(
        self,
        path: str | os.PathLike[str],
        mimetype: str | None = None,
        *,
        cid: str | None = None,
    ) -> str:
        """:meth:`attach_inline_file` with its file check off the event loop."""
        path = Path(path)
        await payload.acheck_file(path)
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
        self.attach(path.name, payload.file_content(path, mimetype), mimetype)

    async def aattach_file(
        self, path: str | os.PathLike[str], mimetype: str | None = None
    ) -> None:
        """Attach a file from the filesystem, as :meth:`attach_file` does,
        reading it with aiofiles (large binary files are streamed at send)."""
        path = Path(path)
        mimetype = _guess_mimetype(path.name, mimetype)
        content = await payload.afile_content(path, mimetype)
        self.attach(path.name, content, mimetype)

    def freeze_lazy_text(self) -> None:
        """Replace lazy strings (``gettext_lazy`` and the like) in the
        message's text, addresses, headers, attachments and alternatives by
        their text, in the active language of the calling thread.

        The blocking calls do it before handing the message to the library's
        event loop thread, where the caller's translation is not active.
        """
        super().freeze_lazy_text()  # the addresses
        self.subject = resolve_text(self.subject)
        self.body = resolve_text(self.body)
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

    # -- rendering ---------------------------------------------------------------

    def render(self, *, allow_8bit: bool = True) -> RenderedMessage:
        """Serialise the message for sending (see :class:`RenderedMessage`).

        Raises :class:`~asyncmail.exceptions.BadHeaderError` for unsafe
        headers, :class:`~asyncmail.exceptions.InvalidMessageError` (a
        ValueError) for other bad content and TypeError for values of the
        wrong type, before anything could reach a server (a backend fails
        that message alone, with the reason, and sends the others).

        A subclass that overrides :meth:`message` (the Django pattern: tweak
        the stdlib message from ``super().message()``) is sent as its
        override returns it, rendered again like foreign content.
        """
        if _overrides_message(self):
            return tree.render_through_message(self)
        return tree.render_model(self, allow_8bit)

    def _message_source(self, allow_8bit: bool) -> bytes:
        # asyncmail's own serialisation, never through a message() override
        # (which usually calls super().message(), i.e. this).
        return tree.render_model(self, allow_8bit).data

    def _content_parts(self, allow_8bit: bool) -> list[_Part]:
        """The parts before the attachments (the body, the alternatives)."""
        return tree.content_parts(self, allow_8bit)


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
        return tree.alternative_parts(self, allow_8bit)


def _overrides_message(message: BaseMessage) -> bool:
    """Whether *message*'s class overrides :meth:`BaseMessage.message` (then
    rendering goes through the override, whose work is unknown)."""
    return type(message).message is not BaseMessage.message
