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

import email.message
import email.policy
from typing import Any, Final, Literal

import django
from django.core.mail import EmailMessage as DjangoEmailMessage
from django.core.mail import EmailMultiAlternatives as DjangoMultiAlternatives
from django.utils.functional import Promise

from ..address import parse_address
from ..exceptions import InvalidAddressError, InvalidMessageError, MailError
from ..message import EmailMessage, EmailMultiAlternatives, RawMessage, RenderedMessage
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


def django_bytes(message: DjangoEmailMessage) -> bytes:
    """*message* serialised by Django, as Django's SMTP backend sends it."""
    if _DJANGO_6:
        return bytes(message.message(policy=email.policy.SMTP).as_bytes())
    return bytes(message.message().as_bytes(linesep="\r\n"))


class DjangoMessage(EmailMessage):
    """A Django message on asyncmail's send path (see the module doc).

    The envelope is the Django message's ``from_email`` and
    ``recipients()``. Rendering (and so any error in the message) happens
    when it is sent, per message: one bad message fails alone, with its
    reason, and the others are sent.
    """

    def __init__(self, message: DjangoEmailMessage, serialiser: Serialiser) -> None:
        super().__init__(
            from_email=_text(message.from_email),
            to=_texts(message.recipients()),
        )
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
        try:
            if self.serialiser == "django":
                self._check_django_can_write_addresses()
                return render_raw(
                    django_bytes(self.django_message), allow_8bit=allow_8bit
                )
            return self._asyncmail_message().render(allow_8bit=allow_8bit)
        except MailError:
            raise
        except ValueError as exc:  # Django's and the conversion's bad input
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
        if self.serialiser == "django":
            return RawMessage(django_bytes(self.django_message)).message(policy=policy)
        return self._asyncmail_message().message(policy=policy)
