"""Structured MIME values: Content-Type and Content-Disposition.

MIME types and subtypes (RFC 6838 names), charsets (RFC 2978), parameter
names and values, and their rendering: quoted strings, or RFC 2231 extended
values split into numbered continuations, folded through
:func:`asyncmail.headers.fold`. Every value asyncmail writes into a structured
header passes through here, whatever door it came in by, so one set of rules
decides what is allowed. Pure string work, as :mod:`asyncmail.headers`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import NamedTuple
from urllib.parse import quote

from .exceptions import BadHeaderError
from .headers import _LINE_SEPARATOR, check_no_line_separators, fold

__all__ = [
    "MAX_PARAMETER_VALUE",
    "ContentType",
    "check_charset",
    "check_parameter_value",
    "check_token",
    "format_content_type",
    "format_parameter",
    "parameter_words",
    "parse_content_type",
]

# RFC 2231 attribute-char: what may stand unencoded in an extended value.
_ATTRIBUTE_SAFE = "!#$&+-.^_`|~"
_TOKEN_OR_QUOTABLE = re.compile(r"[\x20-\x7e]*\Z")
_PARAMETER_ROOM = 60


def format_parameter(name: str, value: str) -> list[str]:
    """Render a MIME parameter (``filename=...``) as foldable ``;``-ended words.

    Printable ASCII is sent as a quoted string. Anything else uses RFC 2231
    (``name*=utf-8''...``), split into numbered continuations when long, so
    every line stays short. So does a value holding "=?": many readers
    (Python's email package among them) decode RFC 2047 encoded words even
    inside a quoted parameter, which would change the name.
    """
    if (
        _TOKEN_OR_QUOTABLE.match(value) is not None
        and len(value) <= _PARAMETER_ROOM
        and "=?" not in value
    ):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return [f'{name}="{escaped}"']
    encoded = quote(value.encode("utf-8"), safe=_ATTRIBUTE_SAFE)
    if len(encoded) <= _PARAMETER_ROOM:
        return [f"{name}*=utf-8''{encoded}"]
    # Split into continuations without cutting a %XX escape in two.
    sections: list[str] = []
    start = 0
    while start < len(encoded):
        end = min(start + _PARAMETER_ROOM, len(encoded))
        percent = encoded.rfind("%", max(end - 2, start), end)
        if percent != -1 and end < len(encoded):
            end = percent
        sections.append(encoded[start:end])
        start = end
    words = [f"{name}*0*=utf-8''{sections[0]}"]
    words += [f"{name}*{number}*={text}" for number, text in enumerate(sections[1:], 1)]
    return [word + ";" for word in words[:-1]] + [words[-1]]


# -- structured values: tokens, charsets, MIME types and their parameters -------
#
# Every value asyncmail writes into a structured header (Content-Type and
# Content-Disposition, whatever door it came in by: a message attribute, a
# setting, an attach() argument or a foreign MIME part) passes through these
# functions, so one set of rules decides what is allowed.

# RFC 6838 restricted-name: MIME types and subtypes (also disposition types
# and transfer encodings).
_RESTRICTED_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9!#$&\-^_.+]{0,126}\Z")
# RFC 2978 mime-charset (plus "." which some aliases use), at most 40 chars.
_CHARSET = re.compile(r"[A-Za-z0-9!#$%&'+\-^_`{}~.]{1,40}\Z")
# RFC 2231 attribute (a parameter name): a token without "*", "'" and "%".
_PARAMETER_NAME = re.compile(r"[A-Za-z0-9!#$&+\-.^_`|~]{1,60}\Z")
# RFC 2045 token characters (the unquoted form of a parameter value).
_TOKEN_CHAR = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!#$%&'*+-.^_`{|}~"
)
#: The longest parameter value (e.g. a filename), in characters.
MAX_PARAMETER_VALUE = 1000


def _quoted(value: object) -> str:
    shown = repr(value)
    return shown if len(shown) <= 80 else shown[:80] + "..."


def check_token(field: str, value: object, what: str = "value") -> str:
    """Return *value* if it is an RFC 6838 name (a MIME type, subtype,
    disposition or transfer encoding), else raise :class:`BadHeaderError`
    naming *field* (the attribute or header the value came from)."""
    if not isinstance(value, str) or _RESTRICTED_NAME.match(value) is None:
        raise BadHeaderError(
            f"Invalid {what} {_quoted(value)} for {field}: use 1 to 127 letters, "
            "digits and !#$&-^_.+ (starting with a letter or digit)",
            header=field,
        )
    return value


def check_charset(field: str, value: object) -> str:
    """Return *value* if it is a charset name Python knows, safe in a header.

    :func:`codecs.lookup` alone is not enough: it normalises punctuation away,
    so ``"utf-8\\r\\nBcc: x"`` would look up as a codec. The name must first
    be an RFC 2978 charset name (letters, digits and a few symbols).
    """
    import codecs

    if not isinstance(value, str) or _CHARSET.match(value) is None:
        raise BadHeaderError(
            f"{field}: invalid charset {_quoted(value)}: use a charset name "
            "such as 'utf-8' (at most 40 letters, digits and -_.+)",
            header=field,
        )
    try:
        codec = codecs.lookup(value)
    except LookupError:
        raise BadHeaderError(
            f"{field}: unknown charset {value!r}", header=field
        ) from None
    # Python codecs that are no charset a mail reader knows: bytes-to-bytes
    # transforms (base64, rot13...) and Python-only text codecs.
    if not getattr(codec, "_is_text_encoding", True) or codec.name in _NOT_CHARSETS:
        raise BadHeaderError(
            f"{field}: {value!r} is a Python codec, not a charset", header=field
        )
    return value


_NOT_CHARSETS = frozenset(
    {
        "idna",
        "punycode",
        "undefined",
        "unicode-escape",
        "raw-unicode-escape",
    }
)


def check_parameter_value(field: str, name: str, value: object) -> str:
    """Return *value* if it may be a MIME parameter (``filename``, ``method``
    ...): a str of at most MAX_PARAMETER_VALUE characters without line
    separators, in valid Unicode. Other control characters are allowed: they
    never appear raw, as :func:`format_parameter` percent-encodes them."""
    header = f"{field} ({name})"
    if not isinstance(value, str):
        raise BadHeaderError(
            f"The {name} parameter of {field} must be a str, not "
            f"{type(value).__name__}",
            header=header,
        )
    if len(value) > MAX_PARAMETER_VALUE:
        raise BadHeaderError(
            f"The {name} parameter of {field} is longer than "
            f"{MAX_PARAMETER_VALUE} characters",
            header=header,
        )
    if _LINE_SEPARATOR.search(value) is not None:
        raise BadHeaderError(
            f"Header values can't contain newlines or other line separators "
            f"(got {_quoted(value)} for the {name} parameter of {field})",
            header=header,
        )
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadHeaderError(
            f"The {name} parameter of {field} is not valid Unicode", header=header
        ) from None
    return value


class ContentType(NamedTuple):
    """A parsed, validated MIME type: ``maintype/subtype`` (lower case) and
    its parameters as ``(name, value)`` pairs (names lower case)."""

    maintype: str
    subtype: str
    params: tuple[tuple[str, str], ...] = ()

    @property
    def mimetype(self) -> str:
        """``maintype/subtype`` without parameters."""
        return f"{self.maintype}/{self.subtype}"

    def param(self, name: str) -> str | None:
        """The value of parameter *name*, or None."""
        for key, value in self.params:
            if key == name:
                return value
        return None

    def without(self, *names: str) -> tuple[tuple[str, str], ...]:
        """The parameters other than *names*."""
        return tuple(item for item in self.params if item[0] not in names)


def parse_content_type(field: str, value: object) -> ContentType:
    """Parse ``"type/subtype; name=value; name="quoted value""`` strictly.

    One pass over the text (linear whatever the input); the type, subtype
    and parameter names must be tokens, values tokens or quoted strings, each
    name at most once. Raises :class:`BadHeaderError` naming *field*.
    """
    if not isinstance(value, str):
        raise BadHeaderError(
            f"Invalid MIME type {_quoted(value)} for {field}: use 'type/subtype'",
            header=field,
        )
    check_no_line_separators(field, value)
    main, semicolon, rest = value.partition(";")
    maintype, slash, subtype = main.strip(" \t").partition("/")
    if not slash:
        raise BadHeaderError(
            f"Invalid MIME type {_quoted(value)} for {field}: use 'type/subtype'",
            header=field,
        )
    check_token(field, maintype, "MIME type")
    check_token(field, subtype, "MIME subtype")
    params: list[tuple[str, str]] = []
    seen: set[str] = set()
    position = 0
    length = len(rest)
    while semicolon and position < length:
        # name
        while position < length and rest[position] in " \t":
            position += 1
        if position == length:
            break  # a trailing ";" is harmless
        equals = rest.find("=", position)
        if equals == -1:
            raise BadHeaderError(
                f"Invalid MIME parameter {_quoted(rest[position:])} for {field}: "
                "use name=value",
                header=field,
            )
        name = rest[position:equals].strip(" \t").lower()
        if _PARAMETER_NAME.match(name) is None:
            raise BadHeaderError(
                f"Invalid MIME parameter name {_quoted(name)} for {field}",
                header=field,
            )
        if name in seen:
            raise BadHeaderError(
                f"The MIME parameter {name!r} is given twice for {field}",
                header=field,
            )
        seen.add(name)
        position = equals + 1
        while position < length and rest[position] in " \t":
            position += 1
        if position < length and rest[position] == '"':
            chars: list[str] = []
            position += 1
            while True:
                if position >= length:
                    raise BadHeaderError(
                        f"Unterminated quoted MIME parameter {name!r} for {field}",
                        header=field,
                    )
                char = rest[position]
                if char == "\\" and position + 1 < length:
                    chars.append(rest[position + 1])
                    position += 2
                    continue
                position += 1
                if char == '"':
                    break
                chars.append(char)
            text = "".join(chars)
        else:
            start = position
            while position < length and rest[position] in _TOKEN_CHAR:
                position += 1
            text = rest[start:position]
            if not text:
                raise BadHeaderError(
                    f"The MIME parameter {name!r} of {field} has no value "
                    '(quote it: name="value")',
                    header=field,
                )
        while position < length and rest[position] in " \t":
            position += 1
        if position < length:
            if rest[position] != ";":
                raise BadHeaderError(
                    f"Invalid MIME parameters {_quoted(rest)} for {field}: "
                    'separate them with ";" and quote values holding '
                    "special characters",
                    header=field,
                )
            position += 1
        params.append((name, check_parameter_value(field, name, text)))
    return ContentType(maintype.lower(), subtype.lower(), tuple(params))


def parameter_words(params: Iterable[tuple[str, str]], field: str) -> list[str]:
    """``;``-separated foldable words for MIME parameters, each value checked."""
    words: list[str] = []
    for name, value in params:
        if _PARAMETER_NAME.match(name) is None:
            raise BadHeaderError(
                f"Invalid MIME parameter name {_quoted(name)} for {field}",
                header=field,
            )
        check_parameter_value(field, name, value)
        if words:
            words[-1] += ";"
        words.extend(format_parameter(name, value))
    return words


def format_content_type(
    maintype: str,
    subtype: str,
    params: Iterable[tuple[str, str]] = (),
    field: str = "Content-Type",
) -> str:
    """A ``Content-Type:`` header line (folded, CRLF-ended); every part is
    checked as :func:`parse_content_type` checks it."""
    check_token(field, maintype, "MIME type")
    check_token(field, subtype, "MIME subtype")
    words = parameter_words(params, field)
    first = f"{maintype}/{subtype}" + (";" if words else "")
    return fold("Content-Type", [(" ", first), *((" ", word) for word in words)])
