"""RawMessage: bytes already serialised, sent exactly as given.

It is a :class:`~asyncmail.message.BaseMessage` (an envelope, rendering,
sending), not an :class:`~asyncmail.message.EmailMessage`: it has no body,
subject, headers or attachments that could be changed and then silently not
sent. Reading ``subject`` gives the Subject the bytes carry; setting it, or
calling ``attach()`` and the like, raises an error saying what to do instead.
"""

from __future__ import annotations

import email.parser
import email.policy
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, ClassVar, NoReturn

from ..address import AddressLike
from ..exceptions import BadHeaderError, InvalidMessageError, MailError
from .base import BaseMessage
from .foreign import clean_crlf, foreign_bytes
from .mime import RENDER_IN_THREAD, RenderedMessage

if TYPE_CHECKING:
    from ..connection import ConnectionLike

__all__ = ["RawMessage", "render_raw"]

# The header lines a raw message is checked for: Bcc (refused) and
# Message-ID (reported in the result), in one pass.
_RAW_HEADER = re.compile(
    rb"(?:^|\r\n)(bcc|resent-bcc|message-id)[ \t]*:[ \t]*([^\r\n]*)", re.IGNORECASE
)

# What an EmailMessage has and a RawMessage has not: its content is its bytes.
_MODEL_ATTRIBUTES = frozenset(
    {
        "body",
        "attachments",
        "inline_attachments",
        "alternatives",
        "extra_headers",
        "reply_to",
        "content_subtype",
        "mixed_subtype",
        "alternative_subtype",
        "encoding",
    }
)
_MODEL_METHODS = frozenset(
    {
        "attach",
        "attach_file",
        "aattach_file",
        "attach_inline",
        "attach_inline_file",
        "aattach_inline_file",
        "attach_alternative",
        "body_contains",
    }
)
_MODEL_NAMES = _MODEL_ATTRIBUTES | _MODEL_METHODS

# What an envelope is reused for (see RawMessage._envelope_key): the methods
# as this module found them, so that a patched or redefined one is seen.
_BASE_RECIPIENTS = BaseMessage.recipients
_BASE_ENVELOPE = BaseMessage.envelope
_SEQUENCES = (list, tuple)


def _refuse(name: str) -> NoReturn:
    raise AttributeError(
        f"RawMessage has no {name!r}: it is sent exactly as its data gives it "
        "(headers, body and attachments included); build an EmailMessage to "
        "compose a message, or change the bytes and make a new RawMessage",
        name=name,
    )


class RawMessage(BaseMessage):
    """A message that is already serialised, sent exactly as given.

    For messages built elsewhere, queued as bytes, or signed (DKIM) so that
    they must not change. *data* is the whole message, headers and body;
    *from_email* and *to* (plus *bcc*) are the SMTP envelope only: nothing is
    added to the headers. Line endings become CRLF; a line over 998 octets,
    a NUL or a ``Bcc`` header is an error (nothing Bcc'd may leak).
    """

    _decode_for_utf8 = False  # the headers are shown as the bytes give them
    #: A subclass whose render() does no more than this class's (one linear
    #: pass over the bytes) says so: a small one is then rendered on the
    #: event loop, not in a thread (see render_is_heavy).
    light_render: ClassVar[bool] = False

    def __init__(
        self,
        data: bytes,
        from_email: AddressLike | None = None,
        to: Iterable[AddressLike] | None = None,
        *,
        bcc: Iterable[AddressLike] | None = None,
        connection: ConnectionLike | None = None,
    ) -> None:
        super().__init__(from_email, to, bcc=bcc, connection=connection)
        if not isinstance(data, bytes):
            raise TypeError(f"RawMessage data must be bytes, not {type(data).__name__}")
        self.data = data
        # Checked once, here: a send of the same bytes (the usual case)
        # reuses the outcome. Nothing is raised here: what fails is not
        # kept, and fails again, with its error, when the message is
        # rendered (sent).
        self._raw_checked = self._check_once()
        self._raw_envelope = self._address_once()

    def _check_once(self) -> tuple[bytes, RenderedMessage] | None:
        """The data and its check (see :meth:`render`), for data that is
        clean CRLF and small enough to check on the event loop: bare line
        feeds are normalised when the message is sent, rather than held
        twice while it waits, and big data is checked where it is sent
        (off the event loop, see ``render_is_heavy``)."""
        data = self.data
        if len(data) > RENDER_IN_THREAD or not clean_crlf(data):
            return None
        try:
            return data, _checked_data(data)
        except MailError:
            return None

    def _address_once(self) -> tuple[tuple[str, ...], tuple[str, list[str]]] | None:
        """The envelope and what it was computed from, where it can be
        reused (see :meth:`_envelope_key`)."""
        try:
            key = self._envelope_key()
            if key is None:
                return None
            return key, _BASE_ENVELOPE(self)
        except Exception:  # nothing kept: envelope() raises it when called
            return None

    def _envelope_key(self) -> tuple[str, ...] | None:
        """All the envelope depends on, when it is BaseMessage's envelope of
        these addresses and nothing else: plain strings in lists or tuples
        (a lazy string's text changes with the active language, an iterator
        is used up), and recipients() and envelope() not redefined by a
        subclass, a mixin or the instance."""
        cls = type(self)
        if (
            cls.recipients is not _BASE_RECIPIENTS
            or "recipients" in self.__dict__
            or super(RawMessage, cls).envelope is not _BASE_ENVELOPE
        ):
            return None
        to, cc, bcc = self.to, self.cc, self.bcc
        if not all(type(given) in _SEQUENCES for given in (to, cc, bcc)):
            return None
        key = (self.from_email, *to, *cc, *bcc)
        for item in key:
            if type(item) is not str:
                return None
        return key  # type: ignore[return-value]

    @property
    def subject(self) -> str:
        """The Subject header of the data, decoded ("" without one): what
        recipients see. Read-only: the bytes are sent as given."""
        head = self.data.replace(b"\r\n", b"\n").partition(b"\n\n")[0]
        parsed = email.parser.BytesHeaderParser(policy=email.policy.default).parsebytes(
            head + b"\n\n"
        )
        return str(parsed.get("Subject", ""))

    @subject.setter
    def subject(self, value: object) -> None:
        _refuse("subject")

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _MODEL_NAMES:
            _refuse(name)
        if name == "data":
            # New bytes: the old ones' check goes, and with it the old bytes.
            self.__dict__.pop("_raw_checked", None)
        super().__setattr__(name, value)

    def __getattr__(self, name: str) -> Any:
        # Called only for names the instance lacks.
        if name in _MODEL_NAMES:
            _refuse(name)
        raise AttributeError(
            f"{type(self).__name__!r} object has no attribute {name!r}", name=name
        )

    def envelope(self) -> tuple[str, list[str]]:
        addressed = self.__dict__.get("_raw_envelope")
        if isinstance(addressed, tuple) and addressed[0] == self._envelope_key():
            sender, recipients = addressed[1]
            return sender, list(recipients)
        return super().envelope()

    def render(self, *, allow_8bit: bool = True) -> RenderedMessage:
        """The data, checked and with CRLF line endings, as one chunk.

        Raises :class:`~asyncmail.exceptions.BadHeaderError` for a Bcc
        header and :class:`~asyncmail.exceptions.InvalidMessageError` for a
        NUL, an overlong line, or 8-bit content when *allow_8bit* is false
        (raw bytes cannot be re-encoded)."""
        checked = self.__dict__.get("_raw_checked")
        if isinstance(checked, tuple) and checked[0] is self.data:
            return _allowed(checked[1], allow_8bit)  # checked when constructed
        return render_raw(self.data, allow_8bit=allow_8bit)

    def __getstate__(self) -> dict[str, Any]:
        # A copy or an unpickled message is checked and addressed again.
        state = super().__getstate__()
        state.pop("_raw_checked", None)
        state.pop("_raw_envelope", None)
        return state

    def _message_source(self, allow_8bit: bool) -> bytes:
        # The bytes as they are sent, whatever the policy's cte_type: raw
        # content is never re-encoded.
        return self.render().data


def render_raw(data: bytes, *, allow_8bit: bool = True) -> RenderedMessage:
    """*data* rendered as :meth:`RawMessage.render` renders a raw message's
    (checked, with CRLF line endings), for a caller that has bytes and no
    message to make of them (the message's addresses play no part)."""
    return _allowed(_checked_data(data), allow_8bit)


def _allowed(rendered: RenderedMessage, allow_8bit: bool) -> RenderedMessage:
    if rendered.eight_bit and not allow_8bit:
        raise InvalidMessageError(
            "The raw message has 8-bit content and cannot be re-encoded "
            "for a server without 8BITMIME"
        )
    return rendered


def _checked_data(data: bytes) -> RenderedMessage:
    """*data* checked (no Bcc header, NUL or overlong line) and with CRLF
    line endings, as one chunk; the Message-ID it carries."""
    data, _ = foreign_bytes(data, "The raw message")
    head, _, body = data.partition(b"\r\n\r\n")
    message_id = ""
    for match in _RAW_HEADER.finditer(head):
        if match.group(1).lower() != b"message-id":
            raise BadHeaderError(
                "A raw message must not carry a Bcc header; give Bcc "
                "recipients with bcc= (they go in the envelope only)",
                header="Bcc",
            )
        message_id = match.group(2).decode("ascii", "replace").strip()
    return RenderedMessage((data,), not body.isascii(), not head.isascii(), message_id)
