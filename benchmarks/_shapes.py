"""The messages every benchmark sends or builds, as plain data.

Every contender (Django, stdlib, aiosmtplib, fastapi-mail, asyncmail) builds
its messages from these values, so all sides produce the same message and the
comparison is about the library, not the input.  Only the standard library is
imported here, because this module is loaded by interpreters that have
different packages installed.
"""

from __future__ import annotations

import random
import textwrap
from dataclasses import dataclass, field

SENDER = "sender@example.com"
RECIPIENT = "rcpt@example.com"


def recipient(i: int) -> str:
    """A distinct recipient for message number i (the honest harness: no
    address cache on either side hits every time, as with real bulk mail)."""
    return f"rcpt{i}@example.com"


_WORDS = (
    *("asyncio", "mail", "relay", "queue", "message", "header", "body"),
    *("address", "transport", "pipeline", "connection", "latency"),
    *("throughput", "benchmark", "envelope", "recipient", "sender", "policy"),
)


def _text(n_chars: int, seed: int) -> str:
    """Deterministic prose of about n_chars ASCII characters in 72-column lines."""
    rng = random.Random(seed)
    words: list[str] = []
    size = 0
    while size < n_chars:
        word = rng.choice(_WORDS)
        words.append(word)
        size += len(word) + 1
    return "\n".join(textwrap.wrap(" ".join(words), 72)) + "\n"


# Throughput scenarios (loopback, relay): a plain text message of about 2 KB
# once serialised with its headers.  The subject gets " #<n>" appended so
# that every message in a run is distinct.
LOOPBACK_SUBJECT = "Benchmark message"
LOOPBACK_BODY = _text(1750, seed=1)


@dataclass(frozen=True)
class Attachment:
    """One attachment: file name, raw content and MIME type."""

    filename: str
    content: bytes
    mimetype: str


@dataclass(frozen=True)
class Shape:
    """One message shape for the build benchmark (scenario 3)."""

    name: str
    subject: str
    body: str
    from_email: str
    to: tuple[str, ...]
    html: str | None = None
    attachments: tuple[Attachment, ...] = field(default_factory=tuple)


def _binary(size: int, seed: int) -> bytes:
    """Deterministic incompressible bytes (like a real PDF or image)."""
    return random.Random(seed).randbytes(size)


_HTML_BODY = (
    "<!doctype html><html><body><h1>Your weekly report</h1>"
    + "".join(f"<p>{line}</p>" for line in _text(1500, seed=3).splitlines() if line)
    + "</body></html>\n"
)

SHAPES: dict[str, Shape] = {
    "plain": Shape(
        name="plain",
        subject="Your weekly report",
        body=_text(1000, seed=2),
        from_email=SENDER,
        to=(RECIPIENT,),
    ),
    "html": Shape(
        name="html",
        subject="Your weekly report",
        body=_text(1500, seed=3),
        html=_HTML_BODY,
        from_email=SENDER,
        to=(RECIPIENT,),
    ),
    "attachment": Shape(
        name="attachment",
        subject="Your weekly report",
        body=_text(1000, seed=2),
        from_email=SENDER,
        to=(RECIPIENT,),
        attachments=(
            Attachment(
                "report.bin", _binary(100 * 1024, seed=4), "application/octet-stream"
            ),
        ),
    ),
    "unicode": Shape(
        name="unicode",
        subject="Grüße aus Zürich: Ihr Bericht für März ✓ — 日本語の件名",
        body=(
            "Hallo Jürgen,\n\nhier ist der Bericht für März. Ça va? "
            "Ελληνικά, русский, 中文, emoji 📬.\n\n" + _text(800, seed=5)
        ),
        from_email="Zoë Ångström <zoe@example.com>",
        to=("Jürgen Müller <juergen@example.com>",),
    ),
}

# Memory scenario (4): one message with a big binary attachment.
BIG_ATTACHMENT_SIZE = 50 * 1024 * 1024
BIG_ATTACHMENT_NAME = "big.bin"
BIG_ATTACHMENT_MIMETYPE = "application/octet-stream"


def big_attachment(size: int = BIG_ATTACHMENT_SIZE) -> bytes:
    """The memory scenario's attachment: incompressible, deterministic bytes."""
    return _binary(size, seed=6)
