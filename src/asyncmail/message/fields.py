"""The header fields of a built message: Subject, From, To, Cc, Reply-To,
Date, Message-ID, then the extra headers, as Django 6 orders them.

Every value goes through :mod:`asyncmail.headers` (names, line separators,
encoded words, folding) and the address parser; Bcc and the structural
headers (Content-Type...) are refused here, as asyncmail writes the latter
from the message's structure. Pure: no I/O (the host's FQDN for Message-ID
is cached by :mod:`asyncmail.dnsname`).
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from email.headerregistry import Address
from email.utils import format_datetime
from typing import TYPE_CHECKING, Any

from ..address import (
    AddressLike,
    Mailbox,
    format_address_header,
    is_empty_group,
    parse_address,
    parse_address_list,
)
from ..dnsname import ascii_hostname, get_fqdn
from ..exceptions import BadHeaderError
from ..headers import (
    ADDRESS_HEADERS,
    HARD_LIMIT,
    MSGID_HEADERS,
    check_header_name,
    check_no_line_separators,
    fold,
    format_unstructured,
)
from ..lazytext import resolve_text
from ..settings import settings
from .base import address_list

if TYPE_CHECKING:
    from . import EmailMessage

__all__ = ["make_msgid"]

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


def normalised_extra_headers(message: EmailMessage) -> dict[str, tuple[str, Any]]:
    """Extra headers keyed by lower-cased name: (name as given, value)."""
    extra: dict[str, tuple[str, Any]] = {}
    for given, value in message.extra_headers.items():
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


def standard_headers(
    message: EmailMessage, extra: dict[str, tuple[str, Any]]
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
            mailboxes = [_parse_for_header(header, item) for item in default if item]
        if mailboxes:
            smtputf8 = smtputf8 or any(m.needs_smtputf8 for m in mailboxes)
            lines.append(format_address_header(header, mailboxes))

    # str() like Django: subjects are often lazy translation strings.
    subject = extra["subject"][1] if "subject" in extra else message.subject
    lines.append(format_unstructured("Subject", str(subject)))
    addresses("From", [message.from_email])
    addresses("To", address_list("to", message.to))
    addresses("Cc", address_list("cc", message.cc))
    addresses("Reply-To", address_list("reply_to", message.reply_to))
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
