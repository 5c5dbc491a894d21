"""Header safety checks and encoding: RFC 5322 folding, RFC 2047 encoded words.

Everything here is pure string work, written for speed: a typical ASCII header
takes the fast path (one regex test and an f-string). The guarantees, for any
input, are the ones SECURITY.md asks of the library itself, independent of the
running CPython's :mod:`email` package:

* a CR, LF or any other line separator in a header name or value raises
  :class:`~asyncmail.exceptions.BadHeaderError` naming the header;
* other control characters never appear raw: they are carried inside encoded
  words (unstructured text) or rejected (names, addresses, message ids);
* every emitted line ends in CRLF and is at most 998 octets (folded at 78
  where the text allows it).

Structured MIME values (types, charsets, RFC 2231 parameters) are checked and
written by :mod:`asyncmail.mimeparams`, on top of these.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable

from .exceptions import BadHeaderError

__all__ = [
    "ADDRESS_HEADERS",
    "LINE_SEPARATORS",
    "MAX_HEADER_VALUE",
    "MSGID_HEADERS",
    "check_header_length",
    "check_header_lines",
    "check_header_name",
    "check_no_line_separators",
    "encode_phrase",
    "encode_words",
    "first_word_room",
    "fold",
    "format_unstructured",
]

#: Every character that some mail software treats as ending a line.
LINE_SEPARATORS = "\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"

_LINE_SEPARATOR = re.compile(f"[{re.escape(LINE_SEPARATORS)}]")

# Printable ASCII and the two folding-whitespace characters.
_PLAIN_TEXT = re.compile(r"[\x21-\x7e \t]*\Z")
_SAFE_WORD = re.compile(r"[\x21-\x7e]*\Z")
_FIELD_NAME = re.compile(r"[\x21-\x39\x3b-\x7e]+\Z")
_WSP_SPLIT = re.compile(r"([ \t]+)")

#: Longest line we aim for (RFC 2047 caps lines holding encoded words at 76;
#: RFC 5322 suggests 78), and the hard limit of RFC 5322 (without CRLF).
SOFT_LIMIT = 76
HARD_LIMIT = 998

# Longest plain word kept as is; longer ones are carried in encoded words so
# that no line can grow past HARD_LIMIT whatever the header name's length.
_LONGEST_PLAIN_WORD = 800
# Longest run of whitespace kept literally between words.
_LONGEST_PLAIN_SPACE = 40
# An encoded word is at most 75 characters (RFC 2047 section 2).
_ENCODED_WORD_MAX = 75

# Characters Q-encoding may leave literal even inside a phrase (RFC 2047 5.3).
_Q_LITERAL = frozenset(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!*+-/"
)
_Q_TABLE = tuple(
    "_" if byte == 0x20 else chr(byte) if byte in _Q_LITERAL else f"={byte:02X}"
    for byte in range(256)
)


#: The longest header value (in characters) asyncmail looks at. Longer values
#: fail at once, before any parsing or encoding: no legitimate header comes
#: near it, and every check below then runs on bounded input.
MAX_HEADER_VALUE = 65536


#: Headers whose value is a list of mailboxes.
ADDRESS_HEADERS = frozenset(
    {
        "from",
        "sender",
        "reply-to",
        "to",
        "cc",
        "resent-from",
        "resent-sender",
        "resent-to",
        "resent-cc",
    }
)
#: Headers whose value is one or more <msg-id>s.
MSGID_HEADERS = frozenset(
    {"message-id", "in-reply-to", "references", "resent-message-id", "content-id"}
)


def check_header_length(header: str, value: str) -> None:
    """Raise :class:`BadHeaderError` if *value* is longer than MAX_HEADER_VALUE."""
    if len(value) > MAX_HEADER_VALUE:
        raise BadHeaderError(
            f"Header {header!r} is too long ({len(value)} characters; the "
            f"limit is {MAX_HEADER_VALUE})",
            header=header,
        )


def check_no_line_separators(header: str, value: str) -> None:
    """Raise :class:`BadHeaderError` if *value* holds any line separator (or
    is longer than :data:`MAX_HEADER_VALUE`)."""
    check_header_length(header, value)
    if _LINE_SEPARATOR.search(value) is not None:
        raise BadHeaderError(
            f"Header values can't contain newlines or other line separators "
            f"(got {value!r} for header {header!r})",
            header=header,
        )


def check_header_name(name: str) -> None:
    """Raise :class:`BadHeaderError` unless *name* is a valid RFC 5322 field name."""
    if not isinstance(name, str):
        raise BadHeaderError(
            f"Header names must be str, not {type(name).__name__}", header=str(name)
        )
    if _FIELD_NAME.match(name) is None or len(name) > 76:
        raise BadHeaderError(
            f"Invalid header name {name!r}: use 1 to 76 printable ASCII "
            "characters other than ':' and no whitespace",
            header=name,
        )


def _check_encodable(header: str, value: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise BadHeaderError(
            f"Header {header!r} holds text that is not valid Unicode "
            f"({exc.reason} at position {exc.start})",
            header=header,
        ) from None


def fold(name: str, pieces: Iterable[tuple[str, str]]) -> str:
    """Join ``(whitespace, word)`` pairs into a header field, folded at
    whitespace to lines of about 78 characters, ending in CRLF.

    A fold is a CRLF inserted *before* the whitespace, so unfolding restores
    the text exactly. Words are never split here; callers keep every word
    short enough for the 998-octet limit.
    """
    lines: list[str] = []
    current = [f"{name}:"]
    length = len(name) + 1
    # Fold only at whitespace, and never right after the field name: a
    # parser would keep the whitespace that starts the continuation line.
    after_name = True
    for space, word in pieces:
        added = len(space) + len(word)
        if space and not after_name and length + added > SOFT_LIMIT:
            lines.append("".join(current))
            current = [space, word]
            length = added
        else:
            current.append(space)
            current.append(word)
            length += added
        after_name = False
    lines.append("".join(current))
    return "\r\n".join(lines) + "\r\n"


def format_unstructured(name: str, value: str) -> str:
    """Render an unstructured header (Subject, X-*, ...) as CRLF-ended lines.

    Non-ASCII text, control characters, words that look like encoded words,
    overlong words and leading or trailing whitespace are carried in RFC 2047
    encoded words, so a standard parser gives back exactly *value*.
    """
    check_no_line_separators(name, value)
    if (
        len(name) + len(value) < SOFT_LIMIT - 1
        and _PLAIN_TEXT.match(value) is not None
        # "=?" could be taken by a decoder for the start of an encoded word.
        and "=?" not in value
        and value[:1] not in (" ", "\t")
        and value[-1:] not in (" ", "\t")
    ):
        return f"{name}: {value}\r\n" if value else f"{name}:\r\n"
    _check_encodable(name, value)
    return fold(name, _unstructured_pieces(name, value))


def first_word_room(name: str) -> int:
    """Room for the first word after ``Name: ``, which cannot be folded away."""
    return SOFT_LIMIT - len(name) - 2


def _unstructured_pieces(name: str, value: str) -> list[tuple[str, str]]:
    parts = _WSP_SPLIT.split(value)
    # parts alternates word, space, word, ...; it starts and ends with a word
    # (possibly empty).
    words = parts[0::2]
    spaces = parts[1::2]
    count = len(words)
    if _PLAIN_TEXT.match(value) is not None and "=?" not in value:
        # Printable ASCII (the usual case): only overlong words need encoding.
        encode = [len(word) > _LONGEST_PLAIN_WORD for word in words]
    else:
        encode = [_needs_encoding(word) for word in words]
    # Leading and trailing whitespace would be eaten by parsers: encode it
    # together with its neighbouring word.
    if words[0] == "" and count > 1:
        encode[0] = encode[1] = True
    if words[-1] == "" and count > 1:
        encode[-1] = encode[-2] = True
    # Odd whitespace (tabs are fine) that is too long to keep literally.
    for index, space in enumerate(spaces):
        if len(space) > _LONGEST_PLAIN_SPACE:
            encode[index] = encode[index + 1] = True

    if not any(encode):
        # Nothing to encode: words keep the whitespace before them (only the
        # first and last word can be empty, and those are encoded above).
        return list(zip([" ", *spaces], words, strict=True))
    pieces: list[tuple[str, str]] = []
    index = 0
    pending_space = " "
    while index < count:
        if not encode[index]:
            if words[index]:
                pieces.append((pending_space, words[index]))
            pending_space = spaces[index] if index < count - 1 else ""
            index += 1
            continue
        # A run of words to encode, with the whitespace between them, becomes
        # one stretch of encoded words (whitespace between encoded words is
        # dropped by decoders, so it must travel inside them).
        start = index
        while index + 1 < count and encode[index + 1]:
            index += 1
        text = words[start]
        for position in range(start, index):
            text += spaces[position] + words[position + 1]
        first = first_word_room(name) if not pieces else _ENCODED_WORD_MAX
        for number, word in enumerate(encode_words(text, first)):
            pieces.append((pending_space if number == 0 else " ", word))
        pending_space = spaces[index] if index < count - 1 else ""
        index += 1
    if pieces and pieces[0][0] != " ":
        pieces[0] = (" ", pieces[0][1])
    return pieces


def _needs_encoding(word: str) -> bool:
    return (
        _SAFE_WORD.match(word) is None
        or "=?" in word
        or len(word) > _LONGEST_PLAIN_WORD
    )


def encode_words(text: str, first: int = 75) -> list[str]:
    """Encode *text* as RFC 2047 encoded words of at most 75 characters, the
    first one at most *first* (to fit the rest of a header's first line).

    Chooses Q or B encoding per text, whichever is shorter (with a small bias
    toward the more readable Q), and never splits a character across words.
    Linear, and fast on long input: the text is encoded in one C-level pass,
    then cut into words.
    """
    data = text.encode("utf-8")
    quoted = data.decode("latin-1").translate(_Q_TRANSLATION)
    b_length = (len(data) + 2) // 3 * 4
    # A first word too short to carry anything useful keeps the full size.
    first_room = min(first, _ENCODED_WORD_MAX) - len(_Q_PREFIX) - 2
    if first_room < 8:
        first_room = _WORD_ROOM
    if len(quoted) - b_length < 5:
        return _q_words(quoted, first_room)
    return _b_words(data, first_room // 4 * 3)


_Q_PREFIX = "=?utf-8?q?"
_B_PREFIX = "=?utf-8?b?"
_WORD_ROOM = _ENCODED_WORD_MAX - len(_Q_PREFIX) - 2
_Q_TRANSLATION = dict(enumerate(_Q_TABLE))
# Q-encoded UTF-8 continuation octets (0x80-0xBF): "=8X", "=9X", "=AX", "=BX".
_CONTINUATION_DIGITS = frozenset("89AB")


def _q_cut_ok(quoted: str, index: int) -> bool:
    """Whether a Q-encoded word may start at *index*: not inside an "=XX"
    escape, and not on a UTF-8 continuation octet (mid-character)."""
    if quoted[index - 1] == "=" or (index >= 2 and quoted[index - 2] == "="):
        return False
    return not (quoted[index] == "=" and quoted[index + 1] in _CONTINUATION_DIGITS)


def _q_words(quoted: str, room: int) -> list[str]:
    """Cut Q-encoded text into encoded words (the first at most *room*)."""
    words: list[str] = []
    start = 0
    length = len(quoted)
    limit = room
    while length - start > limit:
        cut = start + limit
        while cut > start and not _q_cut_ok(quoted, cut):
            cut -= 1
        if cut == start:
            # One character longer than a tiny first room: it goes whole.
            cut = start + 1
            while cut < length and not _q_cut_ok(quoted, cut):
                cut += 1
        words.append(_Q_PREFIX + quoted[start:cut] + "?=")
        start = cut
        limit = _WORD_ROOM
    if start < length or not words:
        words.append(_Q_PREFIX + quoted[start:] + "?=")
    return words


# 60 characters of base64 carry 45 octets.
_B_ROOM = _WORD_ROOM // 4 * 3


def _b_words(data: bytes, room: int) -> list[str]:
    """Cut UTF-8 *data* into base64 encoded words (the first carrying at most
    *room* octets), never inside a character."""
    words: list[str] = []
    start = 0
    length = len(data)
    limit = room
    while length - start > limit:
        cut = start + limit
        while cut > start and 0x80 <= data[cut] < 0xC0:
            cut -= 1
        if cut == start:
            cut = start + 1
            while cut < length and 0x80 <= data[cut] < 0xC0:
                cut += 1
        words.append(_B_PREFIX + base64.b64encode(data[start:cut]).decode() + "?=")
        start = cut
        limit = _B_ROOM
    if start < length or not words:
        words.append(_B_PREFIX + base64.b64encode(data[start:]).decode() + "?=")
    return words


# Atom text of RFC 5322 (ASCII part); a display name made only of such words
# separated by single spaces needs no quoting.
_ATOM = r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+"
_ATOM_PHRASE = re.compile(rf"{_ATOM}(?: {_ATOM})*\Z")
_QUOTABLE = re.compile(r"[\x20-\x7e]*\Z")


def encode_phrase(text: str, first: int = _ENCODED_WORD_MAX) -> list[str]:
    """Render a display name as a list of words to place in an address header.

    Plain atoms stay as they are; other printable ASCII becomes one quoted
    string; anything else (non-ASCII, control characters, a text that would
    look like an encoded word) becomes encoded words. Each returned word can
    be separated from the next by a fold.
    """
    if _ATOM_PHRASE.match(text) is not None and "=?" not in text:
        words = text.split(" ")
        # An atom too long for a line (it cannot be folded) is encoded.
        if max(map(len, words)) <= _LONGEST_PLAIN_WORD:
            return words
        return encode_words(text, first)
    if (
        _QUOTABLE.match(text) is not None
        and "=?" not in text
        and text == text.strip(" ")
    ):
        escaped = text.replace("\\", "\\\\").replace('"', '\\"')
        # The quoted string is one unbreakable word: bound its escaped length.
        if len(escaped) + 2 <= _LONGEST_PLAIN_WORD:
            return [f'"{escaped}"']
    return encode_words(text, first)


def check_header_lines(head: str) -> None:
    """The last line of defence: raise :class:`BadHeaderError` if a rendered
    header block has a line over HARD_LIMIT octets or a bare CR or LF.

    The formatters above never produce one; this makes the guarantee hold
    even for a code path that forgot them.
    """
    stripped = head.replace("\r\n", "")
    if len(head) > HARD_LIMIT or "\r" in stripped or "\n" in stripped:
        lines = head.split("\r\n")
        for line in lines:
            if len(line.encode("utf-8", "surrogateescape")) > HARD_LIMIT or (
                "\r" in line or "\n" in line
            ):
                name = line.partition(":")[0][:76]
                raise BadHeaderError(
                    f"Header {name!r} would have a line longer than {HARD_LIMIT} "
                    "octets or a bare line break",
                    header=name,
                )
