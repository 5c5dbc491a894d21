"""Foreign MIME content: stdlib :mod:`email` parts and messages, and raw
message bytes, made as safe as what asyncmail renders itself.

A :class:`email.message.MIMEPart` given to ``attach()``, a stdlib message or
raw bytes attached as ``message/rfc822``, and the message a subclass's
``message()`` override returns are not trusted: the stdlib lets a part carry
control characters in header values, 3,000-octet header lines (compat32,
``refold_source="none"``) and a ``Bcc`` header. So nothing here reuses the
stdlib's generator for headers. Each part is rendered again, recursively:

* every header name is checked, every value unfolded and checked for line
  separators; ``Content-Type`` and ``Content-Disposition`` are rebuilt from
  their parsed parameters through the same validation as asyncmail's own
  (:func:`asyncmail.mimeparams.format_content_type`), ``Content-ID`` and the
  other message-id headers are checked as msg-ids;
* other values are re-folded at whitespace to lines of at most 998 octets;
  an unstructured value (Subject, X-...) that holds control characters,
  non-ASCII text or an unbreakable overlong word is re-encoded as RFC 2047
  encoded words; a structured one that cannot be carried safely is refused
  with :class:`~asyncmail.exceptions.BadHeaderError` naming the header;
* ``Bcc`` and ``Resent-Bcc`` headers are **removed**, at every depth (a
  forwarded message's blind copies must not reach the new recipients);
* multipart boundaries are replaced by fresh unpredictable ones, bodies are
  normalised to CRLF, and a NUL or a line over 998 octets is refused.
"""

from __future__ import annotations

import email.header
import email.message
import email.policy
import email.utils
import re
import secrets

from ..exceptions import BadHeaderError, InvalidMessageError
from ..headers import (
    ADDRESS_HEADERS,
    HARD_LIMIT,
    MSGID_HEADERS,
    check_header_length,
    check_header_lines,
    check_header_name,
    check_no_line_separators,
    fold,
    format_unstructured,
)
from ..mimeparams import check_token, format_content_type, parameter_words

__all__ = [
    "BCC_HEADERS",
    "MAX_PARTS",
    "check_part",
    "clean_crlf",
    "foreign_bytes",
    "parse_message",
    "render_message",
    "render_part",
]

#: Headers removed from foreign content wherever they appear.
BCC_HEADERS = frozenset({"bcc", "resent-bcc"})

# A folding line break inside a raw header value.
_FOLD = re.compile(r"(?:\r\n|\r|\n)(?=[ \t])")
_WSP_SPLIT = re.compile(r"[ \t]+")
# Controls other than tab, DEL, and the C1 controls.
_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f]")
_PRINTABLE = re.compile(r"[\x20-\x7e\t]*\Z")
# Headers whose syntax is structured: never re-encoded (that would change
# their meaning), so refused when they cannot be carried as they are.
_STRUCTURED = (
    ADDRESS_HEADERS
    | {
        "date",
        "resent-date",
        "mime-version",
        "received",
        "return-path",
        "dkim-signature",
        "authentication-results",
        "content-location",
        "content-language",
        "auto-submitted",
    }
    | MSGID_HEADERS
)
_MSGID_CHARS = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    "!#$%&'*+-/=?^_`{|}~.@<>[]"
)
_MAX_DEPTH = 32  # nested parts and messages
#: The longest foreign header value (characters) looked at; longer: refused.
MAX_FOREIGN_HEADER = 16384


# -- bodies -------------------------------------------------------------------------


def clean_crlf(data: bytes) -> bool:
    """Every line of *data* ends with CRLF and no CR or LF is alone: what
    :func:`foreign_bytes` checks without making a copy."""
    crlf = data.count(b"\r\n")
    return crlf == data.count(b"\n") == data.count(b"\r") and data.endswith(b"\r\n")


def foreign_bytes(data: bytes, what: str) -> tuple[bytes, bool]:
    """Normalise bytes asyncmail did not produce to CRLF line endings and
    refuse what the wire cannot carry (a NUL, a line over 998 octets).
    Returns (data, has 8-bit octets)."""
    if clean_crlf(data):
        # Already clean CRLF (the usual case): check without copying.
        if len(data) > HARD_LIMIT and max(map(len, data.split(b"\r\n"))) > HARD_LIMIT:
            raise InvalidMessageError(
                f"{what} has a line longer than {HARD_LIMIT} octets"
            )
        if b"\0" in data:
            raise InvalidMessageError(f"{what} contains a NUL byte")
        return data, not data.isascii()
    if b"\r" in data:
        data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    if not data.endswith(b"\n"):
        data += b"\n"
    if len(data) > HARD_LIMIT and max(map(len, data.split(b"\n"))) > HARD_LIMIT:
        raise InvalidMessageError(f"{what} has a line longer than {HARD_LIMIT} octets")
    if b"\0" in data:
        raise InvalidMessageError(f"{what} contains a NUL byte")
    return data.replace(b"\n", b"\r\n"), not data.isascii()


# -- headers ------------------------------------------------------------------------


def _fail(name: str, what: str, reason: str) -> BadHeaderError:
    return BadHeaderError(f"Header {name!r} of {what} {reason}", header=name)


def _raw_text(name: str, value: object, policy: email.policy.Policy) -> str:
    """The header's source text (folded, encoded words as they are).

    Parsed headers are kept as their source; headers set in code under a
    modern policy are header objects, folded here by the stdlib (ASCII,
    RFC 2047) and then checked like any other source text.
    """
    if isinstance(value, email.header.Header):
        return value.encode(linesep="\r\n")
    if hasattr(value, "fold"):
        fold_policy = (
            policy.clone(max_line_length=78, linesep="\r\n", utf8=False)
            if isinstance(policy, email.policy.EmailPolicy)
            else email.policy.SMTP
        )
        try:
            text: str = value.fold(policy=fold_policy)
        except Exception as exc:  # the stdlib's folder has many failure modes
            raise BadHeaderError(
                f"Header {name!r} cannot be serialised: {exc}", header=name
            ) from None
        return text.partition(":")[2].rstrip("\r\n")
    return str(value)


def _decoded_source(name: str, raw: str, what: str) -> str:
    """Turn 8-bit source octets (kept by the parser as surrogate escapes) into
    text; they must be UTF-8."""
    try:
        return raw.encode("utf-8", "surrogateescape").decode("utf-8")
    except UnicodeError:
        raise _fail(name, what, "holds octets that are not UTF-8") from None


def _check_msgids(name: str, value: str, what: str) -> list[str]:
    words = value.split()
    if not words or any(not set(word) <= _MSGID_CHARS for word in words):
        raise _fail(
            name, what, f"is not a valid message id ({value[:80]!r}): use <id@domain>"
        )
    return words


def _header_line(
    name: str, value: object, part: email.message.Message, what: str
) -> tuple[str, bool]:
    """One foreign header, validated and re-folded. Returns (lines, 8-bit)."""
    raw = _raw_text(name, value, part.policy)
    check_header_length(name, raw)
    if len(raw) > MAX_FOREIGN_HEADER:
        raise _fail(name, what, f"is longer than {MAX_FOREIGN_HEADER} characters")
    # A line break followed by whitespace is a fold; any other is injection.
    text = _FOLD.sub("", raw)
    check_no_line_separators(name, text)
    text = text.strip(" \t")
    lowered = name.lower()
    if not text.isascii():
        text = _decoded_source(name, text, what)
    if lowered in MSGID_HEADERS:
        words = _check_msgids(name, text, what)
        if any(len(word) > HARD_LIMIT - len(name) - 2 for word in words):
            raise _fail(name, what, "has an overlong message id")
        return fold(name, [(" ", word) for word in words]), False
    words = _WSP_SPLIT.split(text) if text else []
    plain = (
        _PRINTABLE.match(text) is not None
        and max(map(len, words), default=0) <= HARD_LIMIT - len(name) - 3
    )
    if plain:
        return fold(name, [(" ", word) for word in words]), False
    if lowered not in _STRUCTURED:
        # Unstructured text: control characters, non-ASCII text and overlong
        # words travel inside encoded words. Modern policies give the
        # decoded value; compat32 keeps encoded words as source text.
        decoded = text
        if text.isascii() and isinstance(part.policy, email.policy.EmailPolicy):
            decoded = str(part.policy.header_fetch_parse(name, str(value)))
            check_no_line_separators(name, decoded)
        return format_unstructured(name, decoded), False
    if _CONTROL.search(text) is not None:
        raise _fail(name, what, "holds control characters")
    if max(map(len, words), default=0) > HARD_LIMIT // 2 - len(name):
        raise _fail(name, what, "holds a word too long to fold into 998-octet lines")
    # Non-ASCII UTF-8 in a structured header (RFC 6532): carried as 8-bit.
    return fold(name, [(" ", word) for word in words]), True


def _check_raw(name: str, value: object, part: email.message.Message) -> None:
    check_no_line_separators(name, _FOLD.sub("", _raw_text(name, value, part.policy)))


def _params(part: email.message.Message, header: str) -> list[tuple[str, str]]:
    params = part.get_params(header=header, unquote=True) or []
    result: list[tuple[str, str]] = []
    for name, value in params[1:]:
        text = email.utils.collapse_rfc2231_value(value)
        if "\r" in text or "\n" in text:
            raise BadHeaderError(
                f"The {name} parameter of {header} holds a line break", header=header
            )
        result.append((name.lower(), text))
    return result


def _content_type(part: email.message.Message, boundary: str | None) -> str:
    maintype = check_token("Content-Type", part.get_content_maintype(), "MIME type")
    subtype = check_token("Content-Type", part.get_content_subtype(), "MIME subtype")
    params = [item for item in _params(part, "content-type") if item[0] != "boundary"]
    if boundary is not None:
        params.append(("boundary", boundary))
    return format_content_type(maintype, subtype, params)


def _content_disposition(part: email.message.Message) -> str:
    kind = part.get_content_disposition()
    if kind is None:
        raise BadHeaderError(
            "A MIME part has an empty Content-Disposition", header="Content-Disposition"
        )
    check_token("Content-Disposition", kind, "disposition")
    words = parameter_words(_params(part, "content-disposition"), "Content-Disposition")
    first = kind + (";" if words else "")
    return fold("Content-Disposition", [(" ", first), *((" ", w) for w in words)])


# -- parts ----------------------------------------------------------------------------


def render_part(
    part: email.message.Message, what: str = "a MIME part", depth: int = 0
) -> tuple[str, bytes, bool]:
    """Render a foreign part: (CRLF-ended header lines, body, 8-bit)."""
    if depth == 0:
        _count_parts(part, what)
    if depth > _MAX_DEPTH:
        raise InvalidMessageError(f"{what} nests parts more than {_MAX_DEPTH} deep")
    maintype, multipart = _kind(part, what)
    boundary = f"==={secrets.token_hex(16)}===" if multipart else None
    lines, eight_bit = _headers(part, boundary, what)
    if multipart:
        assert boundary is not None
        body, body_8bit = _multipart_body(part, boundary, what, depth)
    elif maintype == "message" and isinstance(part.get_payload(), list):
        inner: list[object] = part.get_payload()  # type: ignore[assignment]
        if len(inner) != 1 or not isinstance(inner[0], email.message.Message):
            raise InvalidMessageError(f"{what} is a message/* part without a message")
        body, body_8bit = render_message(inner[0], "an attached message", depth + 1)
    else:
        body, body_8bit = _leaf_body(part, what)
    return "".join(lines), body, eight_bit or body_8bit


#: The most parts (at any depth, attached messages included) foreign content
#: may hold.
MAX_PARTS = 500


def _count_parts(part: email.message.Message, what: str) -> None:
    for count, _ in enumerate(part.walk(), 1):
        if count > MAX_PARTS:
            raise InvalidMessageError(f"{what} holds more than {MAX_PARTS} parts")


def _kind(part: email.message.Message, what: str) -> tuple[str, bool]:
    """(maintype, whether it is a multipart holding sub-parts)."""
    maintype = part.get_content_maintype()
    # A message/rfc822 part holds its message as a one-item list too.
    multipart = part.is_multipart() and maintype != "message"
    if multipart and maintype != "multipart":
        raise InvalidMessageError(
            f"{what} holds sub-parts but is {part.get_content_type()}, not multipart"
        )
    return maintype, multipart


def check_part(part: email.message.Message, what: str = "a MIME part") -> None:
    """Raise as :func:`render_part` would for *part*'s headers, at every
    depth, without rendering any body (a cheap check when a part is
    attached; the full rendering happens when the message is sent)."""
    _count_parts(part, what)
    for sub in part.walk():
        _, multipart = _kind(sub, what)
        _headers(sub, "===check===" if multipart else None, what)


def _headers(
    part: email.message.Message, boundary: str | None, what: str
) -> tuple[list[str], bool]:
    """A part's header lines, re-validated and re-folded; (lines, 8-bit)."""
    lines: list[str] = []
    eight_bit = False
    seen_type = False
    for name, value in part.raw_items():
        check_header_name(name)
        lowered = name.lower()
        if lowered in BCC_HEADERS:
            continue  # never passed on: see the module docstring
        if lowered == "content-type":
            if seen_type:
                continue  # the first one is the one readers use
            seen_type = True
            # Check the raw value for injection before the stdlib parses it.
            _check_raw(name, value, part)
            lines.append(_content_type(part, boundary))
            continue
        if lowered == "content-disposition":
            _check_raw(name, value, part)
            lines.append(_content_disposition(part))
            continue
        if lowered == "content-transfer-encoding":
            encoding = _FOLD.sub("", _raw_text(name, value, part.policy)).strip()
            check_token(name, encoding, "transfer encoding")
            lines.append(f"Content-Transfer-Encoding: {encoding.lower()}\r\n")
            continue
        line, line_8bit = _header_line(name, value, part, what)
        lines.append(line)
        eight_bit = eight_bit or line_8bit
    if boundary is not None and not seen_type:
        lines.append(_content_type(part, boundary))
    return lines, eight_bit


def _multipart_body(
    part: email.message.Message, boundary: str, what: str, depth: int
) -> tuple[bytes, bool]:
    delimiter = f"--{boundary}\r\n".encode("ascii")
    chunks: list[bytes] = []
    eight_bit = False
    children = part.get_payload()
    assert isinstance(children, list)
    for child in children:
        if not isinstance(child, email.message.Message):
            raise InvalidMessageError(f"{what} holds a sub-part that is not a part")
        headers, body, child_8bit = render_part(child, what, depth + 1)
        eight_bit = eight_bit or child_8bit
        chunks += [delimiter, headers.encode("utf-8"), b"\r\n", body, b"\r\n"]
    chunks.append(f"--{boundary}--\r\n".encode("ascii"))
    return b"".join(chunks), eight_bit


def _leaf_body(part: email.message.Message, what: str) -> tuple[bytes, bool]:
    # The stored payload, not get_payload(): that one turns the 8-bit octets
    # the parser kept as surrogate escapes into U+FFFD.
    payload: object = getattr(part, "_payload", None)
    if payload is None:
        return b"", False
    if isinstance(payload, bytes):
        data = payload
    elif isinstance(payload, str):
        # The parser keeps 8-bit octets as surrogate escapes.
        data = payload.encode("utf-8", "surrogateescape")
    else:
        raise InvalidMessageError(f"{what} has a body of type {type(payload).__name__}")
    if not data:
        return b"", False
    return foreign_bytes(data, what[:1].upper() + what[1:])


def render_message(
    message: email.message.Message, what: str = "the attached message", depth: int = 0
) -> tuple[bytes, bool]:
    """A whole foreign message (headers, blank line, body) as CRLF bytes,
    re-validated and re-folded as :func:`render_part` does; returns
    (data, 8-bit)."""
    headers, body, eight_bit = render_part(message, what, depth)
    check_header_lines(headers)  # the backstop asyncmail's own headers get
    data = headers.encode("utf-8") + b"\r\n" + body
    return data, eight_bit or not headers.isascii()


#: The most header lines (folded continuations included) a foreign header
#: block may have; checked before the stdlib parser sees raw bytes.
MAX_FOREIGN_HEADER_LINES = 1000


def parse_message(data: bytes | str) -> email.message.Message:
    """Parse raw message bytes (or text) for :func:`render_message`.

    A length guard runs first: a header block of more than
    MAX_FOREIGN_HEADER_LINES lines is refused before any parsing (real
    messages have a few dozen; tens of thousands only cost time).
    """
    from email.parser import BytesParser

    raw = data.encode("utf-8") if isinstance(data, str) else data
    if raw.count(b"\n--") > MAX_PARTS:
        raise InvalidMessageError(
            f"The attached message holds more than {MAX_PARTS} parts"
        )
    end = raw.find(b"\n\n")
    end2 = raw.find(b"\r\n\r\n")
    ends = [index for index in (end, end2) if index != -1]
    head_end = min(ends) if ends else len(raw)
    if raw.count(b"\n", 0, head_end) + raw.count(b"\r", 0, head_end) > (
        2 * MAX_FOREIGN_HEADER_LINES
    ):
        raise InvalidMessageError(
            f"The attached message has more than {MAX_FOREIGN_HEADER_LINES} "
            "header lines"
        )
    return BytesParser(policy=email.policy.compat32).parsebytes(raw)
