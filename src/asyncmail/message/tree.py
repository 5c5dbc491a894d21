"""The MIME tree of a message model, as Django builds it.

::

    text/<content_subtype>                       body only
    multipart/alternative [body, alternatives]   EmailMultiAlternatives
    multipart/mixed [body-or-alternative, attachments...]

plus, with ``attach_inline()``, a ``multipart/related`` of the HTML (the HTML
alternative, or an HTML body) and the inline parts. The header fields come
from :mod:`asyncmail.message.fields`, the entities from
:mod:`asyncmail.message.mime`. Pure: the text of an attached file is read
through its :class:`~asyncmail.message.payload.Base64Payload`.
"""

from __future__ import annotations

import email.message
import email.policy
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..exceptions import InvalidMessageError
from ..headers import check_header_lines
from ..lazytext import resolve_text
from ..settings import settings
from .base import BaseMessage
from .fields import normalised_extra_headers, standard_headers
from .foreign import parse_message, render_message
from .mime import (
    _OCTET_STREAM,
    RenderedMessage,
    _binary_part,
    _check_mimetype,
    _checked_charset,
    _checked_token,
    _disposition,
    _inline_part,
    _join,
    _mime_part,
    _multipart,
    _Part,
    _text_content,
    _text_part,
)
from .payload import Base64Payload

if TYPE_CHECKING:
    from . import EmailAttachment, EmailMessage, EmailMultiAlternatives

__all__ = ["render_model", "render_through_message"]

_SMTP_POLICY = email.policy.SMTP


def render_model(message: EmailMessage, allow_8bit: bool) -> RenderedMessage:
    """asyncmail's own serialisation of *message*, which ``message()`` parses.

    ``render()`` calls it unless a subclass overrides ``message()``; such an
    override usually calls ``super().message()``, which must not go back
    through the override.
    """
    extra = normalised_extra_headers(message)
    std, message_id, smtputf8 = standard_headers(message, extra)
    root = root_part(message, allow_8bit)
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


def render_through_message(message: EmailMessage) -> RenderedMessage:
    """Compatibility path for subclasses that override :meth:`message`.

    Unless the message needs SMTPUTF8 anyway (a non-ASCII local part),
    the policy does not allow UTF-8 headers, so non-ASCII text the
    override adds is RFC 2047 encoded.
    """
    # A message that needs SMTPUTF8 anyway (a non-ASCII local part) is
    # written with UTF-8 headers: with utf8=False, Python 3.13 re-encodes
    # such a local part as an "unknown-8bit" encoded word, breaking it.
    # Only the addresses decide it: the headers alone, not the bodies.
    needs_utf8 = standard_headers(message, normalised_extra_headers(message))[2]
    msg = message.message(policy=email.policy.SMTPUTF8 if needs_utf8 else _SMTP_POLICY)
    # Rendered again like any foreign message: headers re-validated and
    # re-folded, Bcc removed.
    data, _ = render_message(msg, "the message from message()")
    head, _, body = data.partition(b"\r\n\r\n")
    smtputf8 = not head.isascii()
    eight_bit = not body.isascii()
    return RenderedMessage((data,), eight_bit, smtputf8, str(msg.get("Message-ID", "")))


def text_charset(message: EmailMessage) -> str:
    """The charset of *message*'s text parts, checked."""
    if message.encoding is None:
        return _checked_charset("DEFAULT_CHARSET", settings.DEFAULT_CHARSET)
    return _checked_charset("encoding", message.encoding)


def body_part(message: EmailMessage, allow_8bit: bool) -> _Part:
    body: object = message.body
    if isinstance(body, bytes):
        body = body.decode(text_charset(message))
    elif not isinstance(body, str):
        body = str(body)  # e.g. a lazy translation string
    assert isinstance(body, str)
    subtype = _checked_token("content_subtype", message.content_subtype)
    return _text_part(body, subtype.lower(), text_charset(message), allow_8bit)


def content_parts(message: EmailMessage, allow_8bit: bool) -> list[_Part]:
    """The parts before the attachments: the body (if any), with the
    inline attachments in a multipart/related around it."""
    if message.body or not (message.attachments or message.inline_attachments):
        return [related(message, body_part(message, allow_8bit))]
    if message.inline_attachments:
        return [related(message, None)]
    return []


def related(message: EmailMessage, root: _Part | None) -> _Part:
    """*root* and the inline attachments in a multipart/related (RFC 2387:
    the root, usually the HTML, comes first); *root* alone without them."""
    if not message.inline_attachments:
        assert root is not None
        return root
    parts = [] if root is None else [root]
    parts += [_inline_part(item) for item in message.inline_attachments]
    return _multipart("related", parts)


def root_part(message: EmailMessage, allow_8bit: bool) -> _Part:
    parts = message._content_parts(allow_8bit)
    if not message.attachments:
        return parts[0]
    parts += [
        attachment_part(message, item, allow_8bit) for item in message.attachments
    ]
    return _multipart(_checked_token("mixed_subtype", message.mixed_subtype), parts)


def attachment_part(
    message: EmailMessage,
    attachment: EmailAttachment | email.message.Message,
    allow_8bit: bool,
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
            raise TypeError(f"Content of a {mimetype} attachment must be str or bytes")
        charset = content_type.param("charset")
        return _text_part(
            text,
            subtype,
            text_charset(message)
            if charset is None
            else _checked_charset("mimetype (charset)", charset),
            allow_8bit,
            _disposition("attachment", filename),
            content_type.without("charset"),
        )
    if maintype == "message":
        return message_attachment(filename, content, maintype, subtype, allow_8bit)
    if maintype == "multipart":
        raise InvalidMessageError(
            "multipart/* attachments must be given as an email.message.MIMEPart"
        )
    if isinstance(content, str):
        content = content.encode(text_charset(message))
    elif isinstance(content, bytearray):
        content = bytes(content)  # a snapshot: the caller may change it
    if not isinstance(content, (bytes, memoryview, Path, Base64Payload)):
        raise TypeError(
            f"Content of a {mimetype} attachment must be bytes or a Path, "
            f"not {type(content).__name__}"
        )
    return _binary_part(content, content_type, _disposition("attachment", filename))


def message_attachment(
    filename: str | None,
    content: Any,
    maintype: str,
    subtype: str,
    allow_8bit: bool,
) -> _Part:
    # RFC 2046 5.2.1: message/rfc822 is never base64 or quoted-printable,
    # so an attached EmailMessage must itself avoid 8bit when we must.
    if isinstance(content, BaseMessage):
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


def alternative_parts(message: EmailMultiAlternatives, allow_8bit: bool) -> list[_Part]:
    """The body and its alternatives in a multipart/alternative, with the
    inline parts related to the HTML (or to the whole without HTML)."""
    if not message.alternatives:
        return content_parts(message, allow_8bit)
    parts = [body_part(message, allow_8bit)] if message.body else []
    html: int | None = None
    if message.body and message.content_subtype == "html":
        html = 0
    for given, mimetype in message.alternatives:
        content = resolve_text(given)
        content_type = _check_mimetype(mimetype)
        if content_type.maintype == "text":
            text = content.decode() if isinstance(content, bytes) else content
            charset = content_type.param("charset")
            parts.append(
                _text_part(
                    text,
                    content_type.subtype,
                    text_charset(message)
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
                f"An alternative can't be {content_type.mimetype}; attach it instead"
            )
        else:
            data = (
                content.encode(text_charset(message))
                if isinstance(content, str)
                else content
            )
            parts.append(_binary_part(bytes(data), content_type))
    subtype = _checked_token("alternative_subtype", message.alternative_subtype)
    if not message.inline_attachments:
        return [_multipart(subtype, parts)]
    if html is None:
        # No HTML to hold the images: they relate to the whole.
        return [related(message, _multipart(subtype, parts))]
    parts[html] = related(message, parts[html])
    return [_multipart(subtype, parts)]
