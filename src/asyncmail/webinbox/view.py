"""What the web inbox shows of a received message, parsed defensively.

The input is whatever reached the debug server: any bytes. Parsing never
raises (a header or part that cannot be decoded is shown raw, with
replacement characters); everything returned is plain data (str, int,
lists) that the app serialises to JSON or sends with safe headers, never
markup built from message content.
"""

from __future__ import annotations

import email.message
import email.policy
import re
from dataclasses import dataclass
from email.parser import BytesParser
from typing import Any

from .store import StoredMessage

__all__ = ["Attachment", "ParsedMessage", "parse", "safe_filename"]

_UNSAFE_FILENAME = re.compile(r"[\x00-\x1f\x7f\"\\/:*?<>|]+")


@dataclass(frozen=True, slots=True)
class Attachment:
    index: int
    filename: str
    content_type: str
    size: int


class ParsedMessage:
    """A stored message with its headers, bodies and attachments decoded."""

    def __init__(self, stored: StoredMessage) -> None:
        self.stored = stored
        # The stdlib parser expects "\n" line endings (it keeps "\r" otherwise).
        data = stored.data.replace(b"\r\n", b"\n")
        self._message = BytesParser(policy=email.policy.default).parsebytes(data)
        self._parts: list[email.message.EmailMessage] = []

    def header(self, name: str) -> str:
        try:
            value = self._message.get(name)
            return "" if value is None else str(value)
        except Exception:  # malformed headers are shown raw
            return _raw_header(self._message, name)

    def headers(self) -> list[tuple[str, str]]:
        result: list[tuple[str, str]] = []
        for name, value in self._message.raw_items():
            try:
                shown = str(value)
            except Exception:  # a header the policy cannot parse
                shown = str(getattr(value, "_parse_tree", value))
            result.append((str(name), shown))
        return result

    def _body(self, kind: str) -> str | None:
        try:
            part = self._message.get_body(preferencelist=(kind,))
        except Exception:
            return None
        if part is None:
            return None
        return _content(part)

    @property
    def text(self) -> str | None:
        return self._body("plain")

    @property
    def html(self) -> str | None:
        return self._body("html")

    def attachments(self) -> list[Attachment]:
        found: list[Attachment] = []
        self._parts = []
        for part in self._message.walk():
            if part.is_multipart():
                continue
            try:
                filename = part.get_filename()
                disposition = part.get_content_disposition()
            except Exception:
                filename, disposition = None, None
            if disposition != "attachment" and not filename:
                continue
            payload = _payload(part)
            assert isinstance(part, email.message.EmailMessage)
            self._parts.append(part)
            found.append(
                Attachment(
                    len(found),
                    str(filename or f"attachment-{len(found) + 1}"),
                    part.get_content_type(),
                    len(payload),
                )
            )
        return found

    def attachment_data(self, index: int) -> bytes | None:
        if not self._parts:
            self.attachments()
        if not 0 <= index < len(self._parts):
            return None
        return _payload(self._parts[index])

    def summary(self) -> dict[str, Any]:
        stored = self.stored
        return {
            "id": stored.id,
            "received": stored.received,
            "mail_from": stored.mail_from,
            "rcpt_tos": list(stored.rcpt_tos),
            "from": self.header("From"),
            "to": self.header("To"),
            "subject": self.header("Subject"),
            "date": self.header("Date"),
            "size": len(stored.data),
        }

    def detail(self) -> dict[str, Any]:
        return {
            **self.summary(),
            "peer": self.stored.peer,
            "headers": [list(pair) for pair in self.headers()],
            "text": self.text,
            "has_html": self.html is not None,
            "attachments": [
                {
                    "index": a.index,
                    "filename": a.filename,
                    "content_type": a.content_type,
                    "size": a.size,
                }
                for a in self.attachments()
            ],
        }

    def matches(self, query: str) -> bool:
        """Whether *query* (case-insensitive) occurs in the envelope, the
        main headers or the text body."""
        needle = query.casefold()
        haystack = [
            self.stored.mail_from,
            *self.stored.rcpt_tos,
            self.header("From"),
            self.header("To"),
            self.header("Cc"),
            self.header("Subject"),
            self.text or "",
        ]
        return any(needle in item.casefold() for item in haystack)


def parse(stored: StoredMessage) -> ParsedMessage:
    return ParsedMessage(stored)


def _raw_header(message: email.message.Message, name: str) -> str:
    for key, value in message.raw_items():
        if key.lower() == name.lower():
            return str(getattr(value, "_parse_tree", value))
    return ""


def _payload(part: email.message.Message) -> bytes:
    try:
        data = part.get_payload(decode=True)
    except Exception:
        data = None
    if isinstance(data, bytes):
        return data
    raw = part.get_payload()
    return raw.encode("utf-8", "replace") if isinstance(raw, str) else b""


def _content(part: email.message.Message) -> str:
    try:
        content = part.get_content()  # type: ignore[attr-defined]
    except Exception:  # unknown charset, bad encoding: decoded leniently
        content = None
    if isinstance(content, str):
        return content
    return _payload(part).decode("utf-8", "replace")


def safe_filename(name: str) -> str:
    """A file name for Content-Disposition: no path, no controls, no quotes."""
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = _UNSAFE_FILENAME.sub("_", name).strip(" .")
    return name[:200] or "attachment"
