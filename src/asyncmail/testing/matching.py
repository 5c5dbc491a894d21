"""Matching sent messages against a test's criteria, and saying why not.

What :meth:`~asyncmail.testing.Outbox.assert_sent` and its friends use:
the criteria (:class:`Criteria`), checked on each message *as rendered*,
and the failure report listing every message sent and why each one did
not match. Kept apart from the capture (:mod:`.outbox`), which only
records.
"""

from __future__ import annotations

import email.message
import email.policy
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeAlias, TypedDict

if TYPE_CHECKING:
    from ..message import BaseMessage as EmailMessage  # any sendable message

if TYPE_CHECKING:
    from .outbox import Outbox

__all__ = ["AddressCriterion", "AttachmentCriterion", "Criteria", "TextCriterion"]


_SNIPPET = 120  # characters of a body shown in a failure message

#: A text criterion: a string, a compiled pattern (searched), or a predicate.
TextCriterion: TypeAlias = str | re.Pattern[str] | Callable[[str], bool]
#: One address (string, ``(name, address)`` pair, Address) or several.
AddressCriterion: TypeAlias = Any
#: An attachment criterion: a file name, a ``(filename, mimetype)`` pair, a
#: predicate on ``(filename, content, mimetype)``, or a list of those.
AttachmentCriterion: TypeAlias = (
    str
    | tuple[str, str]
    | Callable[[str | None, bytes, str], bool]
    | list[str | tuple[str, str] | Callable[[str | None, bytes, str], bool]]
)


class Criteria(TypedDict, total=False):
    """The criteria of :meth:`Outbox.assert_sent` and friends (all optional)."""

    to: AddressCriterion
    cc: AddressCriterion
    bcc: AddressCriterion
    reply_to: AddressCriterion
    recipients: AddressCriterion
    from_email: AddressCriterion
    subject: TextCriterion
    body: TextCriterion
    html: TextCriterion
    attachment: AttachmentCriterion
    headers: Mapping[str, str | re.Pattern[str]]
    where: Callable[[EmailMessage], object]


_ADDRESS_FIELDS = ("to", "cc", "bcc", "reply_to", "recipients")
_KNOWN = frozenset(
    {
        *_ADDRESS_FIELDS,
        "from_email",
        "subject",
        "body",
        "html",
        "attachment",
        "headers",
        "where",
    }
)

Check = tuple[str, Any]


def _criteria(criteria: Mapping[str, Any]) -> list[Check]:
    unknown = set(criteria) - _KNOWN
    if unknown:
        raise TypeError(
            f"Unknown criteria {sorted(unknown)}; use {', '.join(sorted(_KNOWN))}"
        )
    return [(name, value) for name, value in criteria.items() if value is not None]


def _mailbox(value: Any) -> str:
    """A comparable form of an address: its addr-spec, domain lower-cased."""
    from ..address import envelope_address

    try:
        spec = envelope_address(value)
    except (ValueError, TypeError):
        spec = str(value)
    local, at, domain = spec.rpartition("@")
    return f"{local}{at}{domain.lower()}" if at else spec


def _address_list(value: Any) -> list[Any]:
    """One address (a string, a ``(name, address)`` pair, an Address) or
    several, as a list."""
    pair = (
        isinstance(value, tuple)
        and len(value) == 2
        and all(isinstance(item, str) for item in value)
        and "@" not in value[0]
    )
    if isinstance(value, str) or pair:
        return [value]
    if isinstance(value, (list, tuple, set, frozenset)):
        return list(value)
    return [value]


def _field(message: EmailMessage, name: str) -> list[str]:
    items = message.recipients() if name == "recipients" else getattr(message, name)
    return [_mailbox(item) for item in items]


def _text_ok(value: str, expected: Any, *, exact: bool) -> bool:
    if isinstance(expected, re.Pattern):
        return expected.search(value) is not None
    if callable(expected):
        return bool(expected(value))
    return value == expected if exact else expected in value


def _show(expected: Any) -> str:
    if isinstance(expected, re.Pattern):
        return f"/{expected.pattern}/"
    if callable(expected):
        return getattr(expected, "__name__", repr(expected))
    return repr(expected)


def _text_parts(
    parsed: email.message.EmailMessage, html_only: bool
) -> list[tuple[str, str]]:
    parts = []
    for part in parsed.walk():
        if part.is_multipart() or part.get_content_disposition() == "attachment":
            continue
        kind = part.get_content_type()
        if kind == "text/html" or (kind == "text/plain" and not html_only):
            content = part.get_content()
            parts.append((kind, content if isinstance(content, str) else ""))
    return parts


def _attachments(
    parsed: email.message.EmailMessage,
) -> list[tuple[str | None, bytes, str]]:
    found = []
    for part in parsed.walk():
        if part.is_multipart():
            continue
        disposition = part.get_content_disposition()
        filename = part.get_filename()
        if disposition == "attachment" or (disposition == "inline" and filename):
            payload = part.get_payload(decode=True)
            content = payload if isinstance(payload, bytes) else b""
            found.append((filename, content, part.get_content_type()))
    return found


def _attachment_ok(found: list[tuple[str | None, bytes, str]], expected: Any) -> bool:
    for filename, content, mimetype in found:
        if isinstance(expected, str):
            if filename == expected:
                return True
        elif isinstance(expected, tuple):
            if (filename, mimetype) == tuple(expected):
                return True
        elif callable(expected) and expected(filename, content, mimetype):
            return True
    return False


def _mismatches(
    outbox: Outbox, message: EmailMessage, checks: list[Check]
) -> list[str]:
    """Why *message* does not match (empty: it matches)."""
    reasons: list[str] = []
    parsed: email.message.EmailMessage | None = None

    def rendered() -> email.message.EmailMessage:
        nonlocal parsed
        if parsed is None:
            parsed = outbox.parsed(message)
        return parsed

    for name, expected in checks:
        if name in _ADDRESS_FIELDS:
            have = _field(message, name)
            missing = [
                str(a) for a in _address_list(expected) if _mailbox(a) not in have
            ]
            if missing:
                reasons.append(f"{name} lacks {', '.join(missing)} (has {have})")
        elif name == "from_email":
            have_from = _mailbox(message.from_email)
            if have_from != _mailbox(expected):
                reasons.append(f"from_email is {have_from!r}, not {str(expected)!r}")
        elif name == "subject":
            subject = str(rendered().get("Subject", message.subject))
            if not _text_ok(subject, expected, exact=True):
                reasons.append(f"subject is {subject!r}, not {_show(expected)}")
        elif name in ("body", "html"):
            parts = _text_parts(rendered(), html_only=name == "html")
            if not parts:
                reasons.append(
                    "there is no HTML part" if name == "html" else "no text part"
                )
            elif not any(_text_ok(text, expected, exact=False) for _, text in parts):
                shown = "; ".join(f"{kind}: {_snippet(text)}" for kind, text in parts)
                reasons.append(f"{name} does not contain {_show(expected)} ({shown})")
        elif name == "attachment":
            found = _attachments(rendered())
            wanted = expected if isinstance(expected, list) else [expected]
            for item in wanted:
                if not _attachment_ok(found, item):
                    names = [f"{f!r} ({t})" for f, _, t in found] or ["none"]
                    reasons.append(
                        f"no attachment {_show(item)} (has {', '.join(names)})"
                    )
        elif name == "headers":
            headers = rendered()
            for header, value in expected.items():
                have_value = headers.get(header)
                if have_value is None:
                    reasons.append(f"no {header} header")
                elif not _text_ok(str(have_value), value, exact=True):
                    reasons.append(
                        f"{header} is {str(have_value)!r}, not {_show(value)}"
                    )
        elif name == "where" and not expected(message):
            reasons.append(f"{_show(expected)}(message) is false")
    return reasons


def _snippet(text: str) -> str:
    flat = " ".join(text.split())
    return repr(flat if len(flat) <= _SNIPPET else flat[: _SNIPPET - 1] + "…")


def _describe_criteria(criteria: Mapping[str, Any]) -> str:
    shown = []
    for name, value in criteria.items():
        if value is None:
            continue
        text = repr(value) if isinstance(value, (list, dict, tuple)) else _show(value)
        shown.append(f"{name}={text}")
    return ", ".join(shown)


def _summary(outbox: Outbox, message: EmailMessage) -> str:
    to = ", ".join(_field(message, "to")) or "-"
    extra = ""
    if message.cc:
        extra += f" cc {', '.join(_field(message, 'cc'))}"
    if message.bcc:
        extra += f" bcc {', '.join(_field(message, 'bcc'))}"
    try:
        subject = str(outbox.parsed(message).get("Subject", message.subject))
    except Exception:  # a message that cannot render: show the model's
        subject = message.subject
    return f"{subject!r} from {_mailbox(message.from_email)} to {to}{extra}"


def _report(
    outbox: Outbox,
    verdicts: list[tuple[EmailMessage, list[str]]],
    with_reasons: bool,
) -> str:
    if not verdicts:
        return "No e-mail was sent at all."
    lines = [f"{len(verdicts)} sent:"]
    for number, (message, reasons) in enumerate(verdicts, 1):
        lines.append(f"  #{number}: {_summary(outbox, message)}")
        if with_reasons:
            lines.extend(f"      - {reason}" for reason in reasons or ["matches"])
    return "\n".join(lines)
