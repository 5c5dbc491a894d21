"""SMTP replies from bytes, with no I/O and no asyncio (like h11's
``receive_data``): feed whatever bytes arrived, take the complete replies.

The parser is strict, because a client that guesses keeps sending into a
session it no longer understands:

* a reply line is at most ``MAX_REPLY_LINE`` octets and a multi-line reply at
  most ``MAX_REPLY_LINES`` lines (an endless reply fails, it does not eat
  memory);
* every line starts with three digits and a space, a hyphen (more lines
  follow) or nothing; the lines of one reply share one code;
* the caller announces how many replies its commands will produce
  (:meth:`ReplyParser.expect`); any byte beyond them is unsolicited and an
  error: the session is out of step.

A violation raises :class:`~asyncmail.exceptions.SMTPResponseError`; the
replies completed before it stay readable (they were said, and they stand).
"""

from __future__ import annotations

import re
from collections import deque
from typing import Final, NamedTuple

from ..exceptions import SMTPResponseError
from ..results import Outcome, reply_outcome

__all__ = ["MAX_REPLY_LINE", "MAX_REPLY_LINES", "Reply", "ReplyParser"]

MAX_REPLY_LINE: Final = 4096
MAX_REPLY_LINES: Final = 256

_ENHANCED_STATUS = re.compile(r"([245]\.\d{1,3}\.\d{1,3})(?:\s|$)")


class Reply(NamedTuple):
    """One SMTP reply: the code and the text (lines joined with "\\n")."""

    code: int
    text: str

    @property
    def enhanced_status(self) -> str | None:
        match = _ENHANCED_STATUS.match(self.text)
        return match.group(1) if match else None

    @property
    def outcome(self) -> Outcome:
        return reply_outcome(self.code)

    @property
    def positive(self) -> bool:
        """A 2xx reply: the command was done."""
        return 200 <= self.code < 300

    def __str__(self) -> str:
        return f"{self.code} {self.text}"


class ReplyParser:
    """Turns received bytes into :class:`Reply` objects, in order.

    :param max_line: the longest reply line accepted, in octets.
    :param max_lines: the most lines one reply may have.
    """

    __slots__ = ("_lines", "_max_line", "_max_lines", "_partial", "expected", "replies")

    def __init__(
        self, *, max_line: int = MAX_REPLY_LINE, max_lines: int = MAX_REPLY_LINES
    ) -> None:
        self._max_line = max_line
        self._max_lines = max_lines
        self._partial = b""
        self._lines: list[bytes] = []
        #: Replies announced and not received yet.
        self.expected = 0
        #: Complete replies not taken yet (oldest first).
        self.replies: deque[Reply] = deque()

    def expect(self, replies: int) -> None:
        """The commands just written will produce *replies* more replies."""
        self.expected += replies

    def next_reply(self) -> Reply | None:
        """The oldest complete reply not taken yet, or None."""
        return self.replies.popleft() if self.replies else None

    def take_all(self) -> list[Reply]:
        """Every complete reply not taken yet."""
        replies = list(self.replies)
        self.replies.clear()
        return replies

    def feed(self, data: bytes) -> None:
        """Parse *data*, the next bytes from the server.

        Raises SMTPResponseError for unsolicited, malformed or overlong
        data; the replies completed before the fault stay in
        :attr:`replies`. After an error the parser must not be fed again
        (the session is out of step).
        """
        if not self.expected:
            raise SMTPResponseError(f"Unsolicited data from the server: {data[:80]!r}")
        if self._partial:
            data = self._partial + data
        lines = data.split(b"\n")
        self._partial = lines.pop()  # after the last line break: incomplete
        if len(self._partial) > self._max_line:
            raise SMTPResponseError("The server sent an overlong reply line")
        replies, max_line = self.replies, self._max_line
        for raw in lines:
            if not self.expected:
                raise SMTPResponseError("The server sent more replies than commands")
            line = raw[:-1] if raw.endswith(b"\r") else raw
            if (
                not self._lines
                and line[3:4] == b" "
                and line[:3].isdigit()
                and len(line) <= max_line
            ):
                # The common case inline: a whole one-line reply (the checks
                # of _line, which takes everything else).
                replies.append(
                    Reply(int(line[:3]), line[4:].decode("utf-8", "replace"))
                )
                self.expected -= 1
            else:
                self._line(line)
        if not self.expected and self._partial:
            raise SMTPResponseError("The server sent more replies than commands")

    def _line(self, line: bytes) -> None:
        if len(line) > self._max_line:
            raise SMTPResponseError("The server sent an overlong reply line")
        code = line[:3]
        separator = line[3:4]
        if not code.isdigit() or len(code) < 3 or separator not in (b" ", b"-", b""):
            raise SMTPResponseError(f"Malformed reply from the server: {line[:80]!r}")
        pending = self._lines
        if pending and code != pending[0][:3]:
            raise SMTPResponseError("Reply lines with different codes")
        if separator == b"-":
            pending.append(line)
            if len(pending) > self._max_lines:
                raise SMTPResponseError("The server sent an endless multi-line reply")
            return
        if pending:
            pending.append(line)
            text = "\n".join(item[4:].decode("utf-8", "replace") for item in pending)
            self._lines = []
        else:
            text = line[4:].decode("utf-8", "replace")
        self.replies.append(Reply(int(code), text))
        self.expected -= 1
