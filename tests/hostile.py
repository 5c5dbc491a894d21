"""Helpers for the hostile-input suites (tests/test_hostile_*.py & co).

Every suite sends its hostile messages end to end to the recording server of
tests/smtpserver.py, in one batch next to a harmless control message, and
checks what arrived: the control message (so the server did work), nothing
of the hostile ones, and nothing hostile anywhere on the wire.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from asyncmail import EmailMessage
from helpers import backend_for
from smtpserver import SMTPServer

FROM = "sender@example.com"
TO = "to@example.com"
HARD_LIMIT = 998

#: Every character some mail software treats as ending a line.
LINE_SEPARATORS = "\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
#: Characters that must never appear raw in a header block: every C0 control
#: but tab (CR and LF only as the CRLF line end), DEL.
_RAW_CONTROL = re.compile(rb"[\x00-\x08\x0b-\x0c\x0e-\x1f\x7f]")
_BCC_LINE = re.compile(rb"(?im)^(?:resent-)?bcc[ \t]*:")


def control(marker: str = "control") -> EmailMessage:
    """A harmless message whose subject says which it is."""
    return EmailMessage(marker, "ok", FROM, [TO])


async def send_batch(
    server: SMTPServer, messages: Sequence[EmailMessage]
) -> list[EmailMessage]:
    """Send *messages* and a control message in one call (fail_silently);
    assert that the control message, and only the messages that did not
    fail, reached the server. Returns the messages that failed."""
    good = control()
    before = len(server.messages)
    backend = backend_for(server.port)
    await backend.send_messages([*messages, good], fail_silently=True)
    await backend.close()
    received = server.messages[before:]
    failed = [m for m in messages if m.result is None or m.result.error is not None]
    assert len(received) == len(messages) - len(failed) + 1
    assert b"Subject: control\r\n" in received[-1].data
    for item in received:
        assert_clean_message(item.data)
    assert_clean_message(bytes(server.recorder.wire))
    return failed


def headers_of(data: bytes) -> bytes:
    """The header block of a message (up to the first empty line)."""
    return data.split(b"\r\n\r\n", 1)[0] + b"\r\n"


def all_header_blocks(data: bytes) -> list[bytes]:
    """The header blocks of the message and of every MIME part in it (any
    block of lines that follows a boundary delimiter)."""
    blocks = [headers_of(data)]
    for match in re.finditer(rb"\r\n--[^\r\n]+\r\n", data):
        rest = data[match.end() :]
        if rest.startswith(b"\r\n") or not rest:
            continue
        blocks.append(headers_of(rest))
    return blocks


def assert_clean_message(data: bytes) -> None:
    """What SECURITY.md promises for anything on the wire: CRLF line endings
    only, lines of at most 998 octets, no raw control characters and no Bcc
    header in any header block."""
    lines = data.split(b"\r\n")
    for line in lines:
        assert len(line) <= HARD_LIMIT, f"a {len(line)}-octet line: {line[:60]!r}"
        assert b"\r" not in line, line[:80]
        assert b"\n" not in line, line[:80]
    for block in all_header_blocks(data):
        assert _RAW_CONTROL.search(block) is None, block[:300]
        assert _BCC_LINE.search(block) is None, block[:300]


def max_line(data: bytes) -> int:
    return max(map(len, data.split(b"\r\n")))
