"""Django's messages, sent through asyncmail: the two serialisers.

:class:`DjangoMessage` wraps one ``django.core.mail.EmailMessage`` (or
``EmailMultiAlternatives``) as an asyncmail message, so that asyncmail's
send path (envelope checks, pooling, pipelining, per-recipient results)
handles it like its own. Its bytes come from one of two serialisers:

``"asyncmail"`` (the default)
    The Django message's fields (subject, body, addresses, ``headers``,
    attachments of every kind, alternatives, ``content_subtype``,
    ``encoding``) are copied into an asyncmail message and rendered by
    asyncmail's serialiser: several times faster than Django's, with
    Django 6's structure and encodings (see docs/pages/django.md for the
    byte-level differences: header folding, 7bit/8bit up to 998-octet
    lines, the boundary text, ``MIME-Version`` placement).
``"django"``
    ``message.message()`` serialised by Django itself, byte for byte what
    Django's SMTP backend would send (Django 6: ``policy=email.policy.SMTP``;
    Django 5.2: ``as_bytes(linesep="\\r\\n")``), and sent as a raw message.

A message whose class changes how Django renders it (it overrides
``message()`` or one of the helpers it calls, e.g. to sign it, or sets
``mixed_subtype``/``alternative_subtype``), or that holds something asyncmail
does not model (an RFC 2231 ``(charset, language, filename)`` filename),
always goes through Django's serialiser: what such code relies on is
Django's exact output.
"""

from __future__ import annotations

import contextlib
import email.errors
import email.message
import email.policy
import re
from collections.abc import Iterator
from typing import Any, Final, Literal

import django
from django.core.mail import EmailMessage as DjangoEmailMessage
from django.core.mail import EmailMultiAlternatives as DjangoMultiAlternatives
from django.utils import translation
from django.utils.functional import Promise

from ..address import parse_address
from ..exceptions import (
    BadHeaderError,
    InvalidAddressError,
    InvalidMessageError,
    MailError,
)
from ..headers import check_header_name, check_no_line_separators
from ..message import EmailMessage, EmailMultiAlternatives, RawMessage, RenderedMessage
from ..message.foreign import check_part
from ..message.raw import render_raw

__all__ = ["SERIALISERS", "DjangoMessage", "Serialiser"]

Serialiser = Literal["asyncmail", "django"]
SERIALISERS: Final = ("asyncmail", "django")

_DJANGO_6: Final = django.VERSION >= (6, 0)


def _rendering_names() -> frozenset[str]:
    """The methods by which Django renders a message (``message()`` and its
    private helpers): a subclass that overrides any of them needs Django's
    own serialiser."""
    return frozenset(
        name
        for cls in (DjangoMultiAlternatives, DjangoEmailMessage)
        for name, value in vars(cls).items()
        if callable(value)
        and (name == "message" or (name.startswith("_") and not name.startswith("__")))
    )


_RENDERING: Final = _rendering_names()


def _text(value: Any) -> Any:
    """Lazy strings (gettext_lazy) as str."""
    return str(value) if isinstance(value, Promise) else value


def _texts(values: Any) -> list[Any]:
    return [_text(value) for value in values or ()]


def needs_django_serialiser(message: DjangoEmailMessage) -> bool:
    """True when only Django's serialiser renders *message* as its code means."""
    cls = type(message)
    base = (
        DjangoMultiAlternatives
        if isinstance(message, DjangoMultiAlternatives)
        else DjangoEmailMessage
    )
    if cls is not base and any(
        getattr(cls, name, None) is not getattr(base, name, None) for name in _RENDERING
    ):
        return True
    if getattr(message, "mixed_subtype", "mixed") != "mixed":
        return True
    if getattr(message, "alternative_subtype", "alternative") != "alternative":
        return True
    for attachment in message.attachments:
        if isinstance(attachment, email.message.Message):
            continue
        filename = attachment[0]
        if filename is not None and not isinstance(filename, (str, Promise)):
            return True  # (charset, language, filename): RFC 2231 by Django
    return False


def to_asyncmail(message: DjangoEmailMessage) -> EmailMessage:
    """An asyncmail message with *message*'s content (see the module doc)."""
    alternatives = getattr(message, "alternatives", None)
    mail: EmailMessage
    if alternatives:
        mail = EmailMultiAlternatives(
            _text(message.subject),
            _text(message.body),
            _text(message.from_email),
            _texts(message.to),
            bcc=_texts(message.bcc),
            cc=_texts(message.cc),
            reply_to=_texts(message.reply_to),
            headers={
                _text(name): _text(value)
                for name, value in message.extra_headers.items()
            },
            alternatives=[
                (_text(content), mimetype) for content, mimetype in alternatives
            ],
        )
    else:
        mail = EmailMessage(
            _text(message.subject),
            _text(message.body),
            _text(message.from_email),
            _texts(message.to),
            bcc=_texts(message.bcc),
            cc=_texts(message.cc),
            reply_to=_texts(message.reply_to),
            headers={
                _text(name): _text(value)
                for name, value in message.extra_headers.items()
            },
        )
    mail.content_subtype = message.content_subtype
    mail.encoding = message.encoding
    for attachment in message.attachments:
        if isinstance(attachment, email.message.Message):
            mail.attach(attachment)  # a MIMEPart (or Django 5.2's MIMEBase)
            continue
        filename, content, mimetype = attachment
        if isinstance(content, DjangoEmailMessage):  # message/rfc822
            content = to_asyncmail(content)
        mail.attach(_text(filename), _text(content), mimetype)
    return mail


def check_django_fields(message: DjangoEmailMessage) -> None:
    """asyncmail's header checks on everything of *message* that Django's
    serialiser writes into a header, before it writes them: Django refuses
    only CR and LF in values (and does not check header names), so a
    vertical tab, a form feed or a Unicode line separator would otherwise
    reach the wire, where many parsers split a header on it; and a header
    name holding a line break would become a header of the sender's
    choosing. Raises :class:`~asyncmail.exceptions.BadHeaderError` naming
    the header."""
    subject = _text(message.subject)
    if subject is not None:
        check_no_line_separators("Subject", str(subject))
    addresses = (
        ("From", [message.from_email]),
        ("To", message.to),
        ("Cc", message.cc),
        ("Bcc", message.bcc),
        ("Reply-To", message.reply_to),
    )
    for header, values in addresses:
        for value in values or ():
            if value is not None:
                check_no_line_separators(header, str(_text(value)))
    for given, value in message.extra_headers.items():
        name = _text(given)
        check_header_name(name)
        check_no_line_separators(name, str(_text(value)))
    for attachment in message.attachments:
        if isinstance(attachment, email.message.Message):
            check_part(attachment, "an attached MIME part")
            continue
        filename, content, mimetype = attachment
        names = filename if isinstance(filename, tuple) else (filename,)
        for piece in names:
            if piece is not None:
                check_no_line_separators("Content-Disposition", str(_text(piece)))
        if mimetype is not None:
            check_no_line_separators("Content-Type", str(mimetype))
        if isinstance(content, DjangoEmailMessage):  # message/rfc822
            check_django_fields(content)
    for _, mimetype in getattr(message, "alternatives", None) or ():
        check_no_line_separators("Content-Type", str(mimetype))


#: What never goes raw into a header: C0 controls but HTAB (CR and LF only
#: as the CRLF that ends a line), DEL, and the line separators of UTF-8 text.
_UNSAFE_IN_HEAD = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]|\xc2\x85|\xe2\x80[\xa8\xa9]")
_FIELD_LINE = re.compile(rb"[\x21-\x39\x3b-\x7e]+:|[ \t]")


def check_django_head(data: bytes) -> None:
    """The backstop for Django's output: every line of its header block is
    a field or a continuation, with nothing in it that a reader could take
    for a line break or a control (Django writes such characters as given,
    where asyncmail's serialiser would encode them)."""
    head = data.partition(b"\r\n\r\n")[0]
    for line in head.split(b"\r\n"):
        if _UNSAFE_IN_HEAD.search(line) is None and _FIELD_LINE.match(line):
            continue
        name = line.partition(b":")[0][:76].decode("ascii", "replace")
        raise BadHeaderError(
            f"Django's serialiser wrote a header line asyncmail does not send "
            f"({line[:80]!r}): a control character or line break in a header "
            "(serializer='asyncmail' encodes what can be encoded)",
            header=name,
        )


def django_bytes(message: DjangoEmailMessage) -> bytes:
    """*message* serialised by Django, as Django's SMTP backend sends it,
    checked (:func:`check_django_fields`, :func:`check_django_head`)."""
    check_django_fields(message)
    data = _serialised(message)
    check_django_head(data)
    return data


def _serialised(message: DjangoEmailMessage) -> bytes:
    if _DJANGO_6:
        return bytes(message.message(policy=email.policy.SMTP).as_bytes())
    return bytes(message.message().as_bytes(linesep="\r\n"))


class DjangoMessage(EmailMessage):
    """A Django message on asyncmail's send path (see the module doc).

    The envelope is the Django message's ``from_email`` and
    ``recipients()``. Rendering (and so any error in the message) happens
    when it is sent, per message: one bad message fails alone, with its
    reason, and the others are sent. It happens in the language active
    where the message was handed over (*language*, by default the calling
    thread's): lazy strings are translated as Django's own backend, which
    renders in the caller's thread, translates them, even when asyncmail
    renders on its own loop's thread or a worker thread.
    """

    def __init__(
        self,
        message: DjangoEmailMessage,
        serialiser: Serialiser,
        *,
        language: str | None = None,
    ) -> None:
        super().__init__(
            from_email=_text(message.from_email),
            to=_texts(message.recipients()),
        )
        self.language = language if language is not None else active_language()
        self.django_message = message
        self.serialiser: Serialiser = (
            "django" if needs_django_serialiser(message) else serialiser
        )
        self._converted: EmailMessage | None = None

    def _asyncmail_message(self) -> EmailMessage:
        if self._converted is None:
            self._converted = to_asyncmail(self.django_message)
        return self._converted

    def render(self, *, allow_8bit: bool = True) -> RenderedMessage:
        with self._translated():
            return self._render(allow_8bit)

    @contextlib.contextmanager
    def _translated(self) -> Iterator[None]:
        if self.language is None:
            yield
            return
        with translation.override(self.language):
            yield

    def _render(self, allow_8bit: bool) -> RenderedMessage:
        try:
            if self.serialiser == "django":
                self._check_django_can_write_addresses()
                return render_raw(
                    django_bytes(self.django_message), allow_8bit=allow_8bit
                )
            return self._asyncmail_message().render(allow_8bit=allow_8bit)
        except MailError:
            raise
        except (ValueError, email.errors.MessageError) as exc:
            # Django's, the email package's and the conversion's bad input.
            raise InvalidMessageError(str(exc)) from exc

    def _check_django_can_write_addresses(self) -> None:
        """Python's email package garbles a non-ASCII local part in headers
        (CPython #122476), so Django refuses such addresses; so does this
        serialiser (asyncmail's writes them, and sends them with SMTPUTF8)."""
        for address in (self.from_email, *self.to):
            if parse_address(address).needs_smtputf8:
                raise InvalidAddressError(
                    f"Invalid address {address!r}: local-part contains non-ASCII "
                    "characters (Django's serialiser cannot write it; "
                    "serializer='asyncmail' sends it with SMTPUTF8)"
                )

    def message(
        self, *, policy: email.policy.Policy = email.policy.default
    ) -> email.message.EmailMessage:
        with self._translated():
            if self.serialiser == "django":
                data = django_bytes(self.django_message)
                return RawMessage(data).message(policy=policy)
            return self._asyncmail_message().message(policy=policy)


def active_language() -> str | None:
    """The language active in this thread (None where Django cannot say,
    e.g. before its apps are loaded: nothing is then overridden)."""
    try:
        language = translation.get_language()
    except Exception:
        return None
    return language if isinstance(language, str) else None
