"""Property tests: any text either is refused as a header injection or
survives the trip through as_bytes() and a standard parser unchanged."""

from __future__ import annotations

import email.policy
import re
from email.header import decode_header, make_header
from email.message import EmailMessage as StdlibMessage
from email.parser import BytesParser

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from asyncmail import (
    BadHeaderError,
    EmailMessage,
    EmailMultiAlternatives,
    InvalidAddressError,
)
from asyncmail.address import (
    envelope_address,
    format_address_header,
    parse_address,
)
from asyncmail.headers import LINE_SEPARATORS

PROPERTY_SETTINGS = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

# Text that stresses the serialiser: every control character, every line
# separator, quotes, backslashes, encoded-word look-alikes, non-ASCII.
_TRICKY = st.sampled_from(
    [
        *LINE_SEPARATORS,
        "\x00",
        "\x01",
        "\x1f",
        "\x7f",
        "\t",
        " ",
        '"',
        "\\",
        "=?",
        "?=",
        "=?utf-8?q?x?=",
        ";",
        ",",
        "<",
        ">",
        "@",
        "(",
        ")",
        "é",
        "€",
        "😀",
        "\u200b",
        "\ufeff",
        ".",
        "'",
        "%",
        "*",
    ]
)
TEXT = st.one_of(
    st.text(),
    st.lists(st.one_of(_TRICKY, st.text(max_size=5)), max_size=12).map("".join),
    st.text(alphabet="ab ", min_size=70, max_size=400),
    st.text(min_size=200, max_size=1200),
)

_PARSER = BytesParser(policy=email.policy.default)


def _has_line_separator(*values: str) -> bool:
    return any(char in value for value in values for char in LINE_SEPARATORS)


def _assert_wire_safe(data: bytes) -> None:
    """Only CRLF line endings, and no line over 998 octets."""
    assert re.search(rb"\r(?!\n)", data) is None, "bare CR"
    assert re.search(rb"(?<!\r)\n", data) is None, "bare LF"
    assert data.endswith(b"\r\n")
    longest = max(len(line) for line in data.split(b"\r\n"))
    assert longest <= 998


def _normalise_body(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _assert_same_body(parsed: str, given: str) -> None:
    expected = _normalise_body(given)
    if not expected.endswith("\n"):
        expected += "\n"
    assert _normalise_body(parsed) == expected


def _build(
    cls: type[EmailMessage],
    *,
    subject: str,
    body: str,
    from_name: str,
    to_name: str,
    filename: str,
    content: bytes,
) -> EmailMessage:
    message = cls(
        subject,
        body,
        (from_name, "sender@example.com"),
        [(to_name, "rcpt@example.org")],
        bcc=["hidden@example.net"],
        headers={"Message-ID": "<fixed@example.com>"},
    )
    message.attach(filename, content, "application/octet-stream")
    return message


def _raw_header(parsed: StdlibMessage, name: str) -> str:
    """The header's text as sent, unfolded."""
    (raw,) = [value for key, value in parsed.raw_items() if key == name]
    return re.sub(r"\r?\n(?=[ \t])", "", raw).strip(" \t")


def _display_name(raw: str) -> str:
    """Decode the display name of a one-mailbox address header.

    asyncmail writes a display name as plain atoms, one quoted string, or
    RFC 2047 encoded words only. The stdlib's structured parser is not used
    for the name: it puts a space between adjacent encoded words of a phrase
    (RFC 2047 6.2 says to drop it) and squeezes runs of whitespace, so it
    cannot tell whether the text survived; decode_header() follows the RFC.
    """
    if not raw.endswith(">"):
        return ""
    phrase = raw[:-1].rpartition("<")[0].rstrip(" \t")
    if phrase.startswith('"'):
        assert phrase.endswith('"')
        return re.sub(r"\\(.)", r"\1", phrase[1:-1])
    if phrase.startswith("=?"):
        return str(make_header(decode_header(phrase)))
    return phrase


def _filename(part: StdlibMessage) -> str:
    """The filename parameter exactly as decoded (get_filename() would strip
    leading and trailing whitespace)."""
    filename = part["Content-Disposition"].params["filename"]
    assert isinstance(filename, str)
    return filename


@PROPERTY_SETTINGS
@given(
    subject=TEXT,
    body=TEXT,
    from_name=TEXT,
    to_name=TEXT,
    filename=TEXT,
    content=st.binary(max_size=300),
)
@example(
    subject="Re: =?utf-8?q?x?= \x00 tail ",
    body="line\r\n.\r\nbare\rcr\n",
    from_name='Doe, "J" \\ é',
    to_name="  ",
    filename='naïve \x7f;"name".txt',
    content=b"\x00\xff",
)
@example(
    subject="x" * 2000,
    body="y" * 2000,
    from_name="z" * 900,
    to_name="é" * 300,
    filename="f" * 500,
    content=b"",
)
def test_message_round_trips_or_refuses_injection(
    *,
    subject: str,
    body: str,
    from_name: str,
    to_name: str,
    filename: str,
    content: bytes,
) -> None:
    try:
        message = _build(
            EmailMessage,
            subject=subject,
            body=body,
            from_name=from_name,
            to_name=to_name,
            filename=filename,
            content=content,
        )
        data = message.as_bytes()
    except BadHeaderError:
        assert _has_line_separator(subject, from_name, to_name, filename)
        return
    assert not _has_line_separator(subject, from_name, to_name, filename)
    _assert_wire_safe(data)
    assert b"hidden@example.net" not in data

    parsed = _PARSER.parsebytes(data)
    assert parsed["Subject"] == subject
    assert [a.addr_spec for a in parsed["From"].addresses] == ["sender@example.com"]
    assert [a.addr_spec for a in parsed["To"].addresses] == ["rcpt@example.org"]
    assert _display_name(_raw_header(parsed, "From")) == from_name
    assert _display_name(_raw_header(parsed, "To")) == to_name
    assert parsed.get_content_type() == "multipart/mixed"
    if body:
        body_part, attachment = parsed.get_payload()
        _assert_same_body(body_part.get_content(), body)
    else:
        # Like Django, an empty body next to attachments is left out.
        (attachment,) = parsed.get_payload()
    assert _filename(attachment) == filename
    assert attachment.get_content_type() == "application/octet-stream"
    assert attachment.get_payload(decode=True) == content


@PROPERTY_SETTINGS
@given(
    subject=TEXT,
    body=TEXT,
    html=TEXT,
    filename=TEXT,
    content=st.binary(max_size=300),
)
def test_alternatives_round_trip_or_refuse_injection(
    subject: str, body: str, html: str, filename: str, content: bytes
) -> None:
    try:
        message = _build(
            EmailMultiAlternatives,
            subject=subject,
            body=body,
            from_name="Sender",
            to_name="Rcpt",
            filename=filename,
            content=content,
        )
        assert isinstance(message, EmailMultiAlternatives)
        message.attach_alternative(html, "text/html")
        data = message.as_bytes()
    except BadHeaderError:
        assert _has_line_separator(subject, filename)
        return
    assert not _has_line_separator(subject, filename)
    _assert_wire_safe(data)

    parsed = _PARSER.parsebytes(data)
    assert parsed["Subject"] == subject
    assert parsed.get_content_type() == "multipart/mixed"
    alternative, attachment = parsed.get_payload()
    assert alternative.get_content_type() == "multipart/alternative"
    if body:
        plain, rich = alternative.get_payload()
        _assert_same_body(plain.get_content(), body)
    else:
        (rich,) = alternative.get_payload()
    assert rich.get_content_type() == "text/html"
    _assert_same_body(rich.get_content(), html)
    assert _filename(attachment) == filename
    assert attachment.get_payload(decode=True) == content


@PROPERTY_SETTINGS
@given(
    name=st.text(
        st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters=":"),
        max_size=30,
    ),
    value=TEXT,
)
def test_extra_headers_round_trip_or_refuse_injection(name: str, value: str) -> None:
    header = "X-" + name
    message = EmailMessage(
        "s",
        "b",
        "f@example.com",
        ["t@example.com"],
        headers={header: value, "Message-ID": "<fixed@example.com>"},
    )
    if _has_line_separator(value):
        with pytest.raises(BadHeaderError) as excinfo:
            message.as_bytes()
        assert excinfo.value.header == header
        return
    data = message.as_bytes()
    _assert_wire_safe(data)
    parsed = _PARSER.parsebytes(data)
    assert parsed[header] == value


_ADDRESS_PIECES = st.sampled_from(
    [
        "a",
        "b.c",
        "user",
        "@",
        "@",
        "<",
        ">",
        '"',
        "\\",
        ",",
        ";",
        ":",
        "(",
        ")",
        "[",
        "]",
        ".",
        " ",
        "\t",
        "example.com",
        "b\u00fccher.example",
        "\u00e9",
        "j\u00f6rg",
        "127.0.0.1",
        "IPv6:",
        "-",
        "=?utf-8?q?x?=",
        *LINE_SEPARATORS,
        "\x00",
        "\x7f",
    ]
)
ADDRESS_TEXT = st.one_of(
    st.lists(_ADDRESS_PIECES, max_size=14).map("".join),
    st.text(max_size=40),
)


def _utf8_addr_spec(address: object) -> str:
    spec = getattr(address, "addr_spec", "")
    assert isinstance(spec, str)
    # Raw UTF-8 (an SMTPUTF8 local part) is read back as surrogate escapes.
    return spec.encode("ascii", "surrogateescape").decode("utf-8")


@PROPERTY_SETTINGS
@given(value=ADDRESS_TEXT)
@example(value='"a b"@example.com')
@example(value="Zo\u00eb <j\u00f6rg@b\u00fccher.example>")
def test_address_parser_is_strict_and_its_output_is_stable(value: str) -> None:
    try:
        mailbox = parse_address(value)
    except InvalidAddressError:
        return
    assert not _has_line_separator(value)
    assert re.search(r"[\x00-\x08\x0a-\x1f\x7f]", value) is None
    # Its text form parses back to the very same mailbox...
    assert parse_address(mailbox.as_text()) == mailbox
    assert envelope_address(value) == mailbox.addr_spec
    # ...and a standard parser sees exactly one address with the same
    # addr-spec, the one the envelope would use.
    header = format_address_header("To", [mailbox]).encode("utf-8")
    _assert_wire_safe(header)
    parsed = _PARSER.parsebytes(header + b"\r\n")
    (address,) = parsed["To"].addresses
    assert _utf8_addr_spec(address) == mailbox.addr_spec
