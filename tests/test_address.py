"""asyncmail.address: the one strict parser behind headers and the envelope."""

from __future__ import annotations

import email.policy
from email.headerregistry import Address
from email.parser import BytesParser
from typing import Any

import pytest

from asyncmail import BadHeaderError, EmailMessage, InvalidAddressError
from asyncmail.address import (
    Mailbox,
    envelope_address,
    format_address_header,
    is_empty_group,
    parse_address,
    parse_address_list,
)
from asyncmail.headers import LINE_SEPARATORS

# Every control character a header must never carry raw.
CONTROLS = [
    pytest.param(chr(code), id=f"U+{code:04X}")
    for code in [*range(0x09), *range(0x0A, 0x20), 0x7F, 0x85]
] + [pytest.param(char, id=f"U+{ord(char):04X}") for char in "\u2028\u2029"]


# -- ambiguous input raises, never repaired ----------------------------------------


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("a@b@c", "more than one '@'"),
        ("a@b@c.example", "more than one '@'"),
        ("x@y <z@w>", "special characters"),
        ("a@x, b@x", "more than one address"),
        ("a@x.com,b@x.com", "more than one address"),
        ("@", "local part \\(before '@'\\) is empty"),
        ("to@", "domain \\(after '@'\\) is empty"),
        ("@example.com", "local part \\(before '@'\\) is empty"),
        ('"a\r\nb"@example.com', "control character"),
        ('"a\nb"@example.com', "control character"),
        ('"a\rb"@example.com', "control character"),
        ("alice@x)<bob@y>", "special characters"),
        ("alice@x.com (comment)", "not a valid host name"),
        ("(comment) alice@x.com", "not valid"),
        ("Name <a@x.com> trailing", "unbalanced angle brackets"),
        ("Name <a@x.com", "unbalanced angle brackets"),
        ("a@x.com>", "unbalanced angle brackets"),
        ("Name <<a@x.com>>", "more than one pair"),
        ("A <a@x.com> <b@x.com>", "more than one pair"),
        ("<>", "no '@'"),
        ("plainaddress", "no '@'"),
        ("", "empty"),
        ("   ", "empty"),
        ('"unterminated@x.com', "unterminated quoted string"),
        ('"a\\"@x.com', "unterminated quoted string"),
        ('"a"b@x.com', "expected '@' after the quoted local part"),
        ("a b@x.com", "local part 'a b' is not valid"),
        ("a..b@x.com", "is not valid"),
        (".a@x.com", "is not valid"),
        ("a.@x.com", "is not valid"),
        ("a@-x.com", "not a valid host name"),
        ("a@x-.com", "not a valid host name"),
        ("a@x..com", "not a valid host name"),
        ("a@x.com.", "not a valid host name"),
        ("a@_x.com", "not a valid host name"),
        ("a@[1.2.3]", "not a valid host name"),
        ("a@[IPv6:zz::1]", "not a valid host name"),
        ("a@x" + "y" * 63 + ".com", "not a valid host name"),
    ],
)
def test_ambiguous_or_malformed_strings_raise(value: str, reason: str) -> None:
    with pytest.raises(InvalidAddressError, match=reason):
        parse_address(value)
    with pytest.raises(InvalidAddressError):
        envelope_address(value)


def test_invalid_address_error_is_a_bad_header_error_and_a_value_error() -> None:
    with pytest.raises(InvalidAddressError) as excinfo:
        parse_address("a@b@c")
    assert isinstance(excinfo.value, BadHeaderError)
    assert isinstance(excinfo.value, ValueError)
    assert str(excinfo.value) == "Invalid address 'a@b@c': it has more than one '@'"


@pytest.mark.parametrize("char", CONTROLS)
@pytest.mark.parametrize(
    "template",
    [
        "a{c}@example.com",
        "a@exa{c}mple.com",
        "a@example.com{c}",
        "{c}a@example.com",
        "Na{c}me <a@example.com>",
        '"Na{c}me" <a@example.com>',
        "Name <a{c}@example.com>",
        '"a{c}b"@example.com',
        "a@example.com{c}Bcc: victim@example.com",
    ],
)
def test_control_characters_are_refused_in_strings(char: str, template: str) -> None:
    with pytest.raises(InvalidAddressError, match="control character"):
        parse_address(template.format(c=char))


@pytest.mark.parametrize("char", [*LINE_SEPARATORS])
def test_line_separators_are_refused_in_pairs_and_address_objects(char: str) -> None:
    with pytest.raises(InvalidAddressError, match="line break"):
        parse_address((f"Name{char}Bcc: x@example.com", "a@example.com"))
    # Not stripped away as whitespace: refused, never repaired.
    for address in (f"a@example.com{char}", f"{char}a@example.com"):
        with pytest.raises(InvalidAddressError, match="control character"):
            parse_address(("Name", address))
    if char not in "\r\n":  # Address() itself refuses CR and LF
        with pytest.raises(InvalidAddressError, match="line break"):
            parse_address(Address(f"Name{char}", "a", "example.com"))
        with pytest.raises(InvalidAddressError, match="control character"):
            parse_address(Address("Name", f"a{char}", "example.com"))


@pytest.mark.parametrize("char", ["\x00", "\x01", "\x1b", "\x1f", "\x7f"])
def test_control_characters_in_a_pair_display_name_are_encoded(char: str) -> None:
    mailbox = parse_address((f"Bad{char}Name", "a@example.com"))
    assert mailbox == Mailbox(f"Bad{char}Name", "a", "example.com")
    header = format_address_header("From", [mailbox])
    assert char not in header
    assert header.isascii()
    parsed = BytesParser(policy=email.policy.default).parsebytes(
        header.encode() + b"\r\n"
    )
    assert parsed["From"].addresses[0].display_name == f"Bad{char}Name"


def test_lone_surrogates_are_refused() -> None:
    with pytest.raises(InvalidAddressError, match="not valid Unicode"):
        parse_address(("\udc80", "a@example.com"))
    with pytest.raises(InvalidAddressError, match="not valid Unicode"):
        parse_address(Address("", "a\udc80", "example.com"))


@pytest.mark.parametrize(
    "value", [123, None, b"a@example.com", ["a@example.com"], ("a", "b", "c")]
)
def test_other_types_are_type_errors(value: Any) -> None:
    with pytest.raises(TypeError, match="An address must be a str"):
        parse_address(value)


def test_pair_must_hold_two_strings() -> None:
    with pytest.raises(InvalidAddressError, match="must hold two strings"):
        parse_address((1, "a@example.com"))  # type: ignore[arg-type]
    with pytest.raises(InvalidAddressError, match="must hold two strings"):
        parse_address(("Name", None))  # type: ignore[arg-type]


def test_pair_address_part_is_a_bare_addr_spec() -> None:
    with pytest.raises(InvalidAddressError):
        parse_address(("Name", "Other <a@example.com>"))
    with pytest.raises(InvalidAddressError):
        parse_address(("Name", "a@example.com, b@example.com"))


# -- oversized input ----------------------------------------------------------------


def test_local_part_limit_is_64_octets() -> None:
    assert parse_address("a" * 64 + "@example.com").local_part == "a" * 64
    with pytest.raises(InvalidAddressError, match="longer than 64 octets"):
        parse_address("a" * 65 + "@example.com")
    # Octets, not characters: 33 two-octet characters are 66 octets.
    with pytest.raises(InvalidAddressError, match="longer than 64 octets"):
        parse_address("\u00e9" * 33 + "@example.com")
    with pytest.raises(InvalidAddressError, match="longer than 64 octets"):
        parse_address(Address("", "a" * 65, "example.com"))


def _domain(length: int) -> str:
    """A host name of exactly *length* characters (63-character labels)."""
    labels = []
    while length > 64:
        labels.append("d" * 63)
        length -= 64
    labels.append("e" * length)
    return ".".join(labels)


def test_domain_limit_is_255_octets() -> None:
    long_domain = _domain(256)
    assert len(long_domain) == 256
    with pytest.raises(InvalidAddressError, match="domain is longer than 255"):
        parse_address(f"a@{long_domain}")
    with pytest.raises(InvalidAddressError, match="domain is longer than 255"):
        parse_address(("", f"a@{long_domain}"))


def test_path_limit_is_256_octets_with_the_angle_brackets() -> None:
    # local@domain plus "<" and ">" must fit in 256 octets.
    fits = "a" * 64 + "@" + _domain(189)
    assert len(fits) == 254
    assert parse_address(fits).addr_spec == fits
    too_long = "a" * 64 + "@" + _domain(190)
    with pytest.raises(InvalidAddressError, match="longer than 254 octets"):
        parse_address(too_long)
    with pytest.raises(InvalidAddressError, match="longer than 254 octets"):
        envelope_address(("Name", too_long))


@pytest.mark.parametrize(
    "value",
    [
        "(" * 100_000 + "a@example.com",
        "(" * 50_000 + "a@example.com" + ")" * 50_000,
        '"' * 100_000,
        '"' + "\\" * 100_000 + '"@example.com',
        "<" * 100_000 + "a@example.com" + ">" * 100_000,
        "a" * 100_000 + "@example.com",
        "a@" + "b." * 50_000 + "com",
        "Name " * 20_000 + "<a@example.com>",
    ],
    ids=[
        "comments",
        "balanced-comments",
        "quotes",
        "escapes",
        "brackets",
        "local",
        "labels",
        "display-name",
    ],
)
def test_100_kb_inputs_are_refused(value: str) -> None:
    assert len(value) >= 100_000
    with pytest.raises(InvalidAddressError, match="longer than 1024 characters"):
        parse_address(value)
    with pytest.raises(InvalidAddressError, match="too long"):
        parse_address_list(value)


@pytest.mark.parametrize(
    "value",
    [
        ("x", "(" * 100_000 + "a@example.com"),
        ("x", '"' + '\\"' * 50_000 + '"@example.com'),
        ("x", '"' + "q" * 100_000 + '"@example.com'),
        ("x", "a@" + "b." * 50_000 + "com"),
        Address("x", "a" * 100_000, "example.com"),
        Address("x", "a", "b." * 50_000 + "com"),
    ],
    ids=["comments", "escapes", "quoted", "labels", "address-local", "address-domain"],
)
def test_100_kb_pairs_and_address_objects_are_refused(value: Any) -> None:
    with pytest.raises(InvalidAddressError):
        parse_address(value)


def test_an_oversized_pair_display_name_is_refused_with_a_short_message() -> None:
    with pytest.raises(InvalidAddressError, match="longer than 1024") as caught:
        parse_address(("(" * 100_000, "a@example.com"))
    assert len(str(caught.value)) < 300


def test_a_long_pair_display_name_is_literal_text_and_encoded() -> None:
    name = "(" * 1000
    mailbox = parse_address((name, "a@example.com"))
    header = format_address_header("To", [mailbox])
    assert all(len(line) <= 76 for line in header.split("\r\n"))
    parsed = BytesParser(policy=email.policy.default).parsebytes(
        header.encode() + b"\r\n"
    )
    assert parsed["To"].addresses[0].addr_spec == "a@example.com"


def test_many_short_list_items_are_handled() -> None:
    value = ", ".join(f"user{n}@example.com" for n in range(3000))
    assert len(parse_address_list(value)) == 3000
    with pytest.raises(InvalidAddressError, match="empty"):
        parse_address_list("," * 60_000)


# -- good forms ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected", "rendered"),
    [
        ("a@example.com", ("", "a", "example.com"), "a@example.com"),
        ("<a@example.com>", ("", "a", "example.com"), "a@example.com"),
        ("  a@example.com\t", ("", "a", "example.com"), "a@example.com"),
        ("Name <a@example.com>", ("Name", "a", "example.com"), "Name <a@example.com>"),
        ("Name<a@example.com>", ("Name", "a", "example.com"), "Name <a@example.com>"),
        (
            "John   Smith  <js@example.com>",
            ("John Smith", "js", "example.com"),
            "John Smith <js@example.com>",
        ),
        (
            "John Q. Public <j@example.com>",
            ("John Q. Public", "j", "example.com"),
            '"John Q. Public" <j@example.com>',
        ),
        (
            '"Doe, John" <j@example.com>',
            ("Doe, John", "j", "example.com"),
            '"Doe, John" <j@example.com>',
        ),
        (
            '"Say \\"hi\\"" <a@example.com>',
            ('Say "hi"', "a", "example.com"),
            '"Say \\"hi\\"" <a@example.com>',
        ),
        (
            '"a@x.example" <b@example.com>',
            ("a@x.example", "b", "example.com"),
            '"a@x.example" <b@example.com>',
        ),
        (
            "Zo\u00eb <z@example.com>",
            ("Zo\u00eb", "z", "example.com"),
            "=?utf-8?q?Zo=C3=AB?= <z@example.com>",
        ),
        (
            "first.last+tag@sub.example.co.uk",
            ("", "first.last+tag", "sub.example.co.uk"),
            "first.last+tag@sub.example.co.uk",
        ),
        ('"a b"@example.com', ("", '"a b"', "example.com"), '"a b"@example.com'),
        ('"a\\"b"@example.com', ("", '"a\\"b"', "example.com"), '"a\\"b"@example.com'),
        ("a@[127.0.0.1]", ("", "a", "[127.0.0.1]"), "a@[127.0.0.1]"),
        (
            "a@[IPv6:2001:db8::1]",
            ("", "a", "[IPv6:2001:db8::1]"),
            "a@[IPv6:2001:db8::1]",
        ),
        ("a@localhost", ("", "a", "localhost"), "a@localhost"),
    ],
)
def test_good_strings(
    value: str, expected: tuple[str, str, str], rendered: str
) -> None:
    mailbox = parse_address(value)
    assert mailbox == Mailbox(*expected)
    assert str(mailbox) == rendered
    assert mailbox.addr_spec == f"{expected[1]}@{expected[2]}"
    assert envelope_address(value) == mailbox.addr_spec


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (("Name", "a@example.com"), ("Name", "a", "example.com")),
        (("", "a@example.com"), ("", "a", "example.com")),
        (("Doe, John", " j@example.com "), ("Doe, John", "j", "example.com")),
        (("x@y <z@w>", "a@example.com"), ("x@y <z@w>", "a", "example.com")),
        (
            ("Zo\u00eb", "z@b\u00fccher.example"),
            ("Zo\u00eb", "z", "xn--bcher-kva.example"),
        ),
        (Address("Name", "a", "example.com"), ("Name", "a", "example.com")),
        (Address(addr_spec="a@example.com"), ("", "a", "example.com")),
        (Address("", "a b", "example.com"), ("", '"a b"', "example.com")),
        (Address("", 'a"b', "example.com"), ("", '"a\\"b"', "example.com")),
        (Address("", "a", "b\u00fccher.example"), ("", "a", "xn--bcher-kva.example")),
    ],
)
def test_good_pairs_and_address_objects(value: Any, expected: tuple[str, ...]) -> None:
    mailbox = parse_address(value)
    assert mailbox == Mailbox(*expected)
    assert envelope_address(value) == mailbox.addr_spec


def test_mailbox_header_words() -> None:
    assert Mailbox("", "a", "example.com").header_words() == ["a@example.com"]
    assert Mailbox("John Smith", "j", "example.com").header_words() == [
        "John",
        "Smith",
        "<j@example.com>",
    ]
    assert Mailbox("Doe, J", "j", "example.com").header_words() == [
        '"Doe, J"',
        "<j@example.com>",
    ]


def test_parsing_is_stable_and_cached_results_are_equal() -> None:
    first = parse_address("Name <a@example.com>")
    second = parse_address("Name <a@example.com>")
    assert first == second
    assert parse_address(str(first)) == first
    assert parse_address((first.display_name, first.addr_spec)) == first


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("a@example.com", "a@example.com"),
        (("Zo\u00eb", "z@b\u00fccher.example"), "Zo\u00eb <z@xn--bcher-kva.example>"),
        (("John Q. Public", "j@example.com"), "John Q. Public <j@example.com>"),
        (("Doe, John", "j@example.com"), '"Doe, John" <j@example.com>'),
        (("  padded  ", "p@example.com"), '"  padded  " <p@example.com>'),
        (('say "hi" \\', "s@example.com"), '"say \\"hi\\" \\\\" <s@example.com>'),
        (("=?utf-8?q?x?=", "e@example.com"), "=?utf-8?q?x?= <e@example.com>"),
        (Address("", "a b", "example.com"), '"a b"@example.com'),
    ],
)
def test_as_text_is_the_readable_form_that_parses_back(value: Any, text: str) -> None:
    mailbox = parse_address(value)
    assert mailbox.as_text() == text
    assert parse_address(text) == mailbox
    # str() is the header form instead.
    if not mailbox.display_name.isascii():
        assert str(mailbox) != text


# -- IDNA and SMTPUTF8 ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("domain", "ascii_domain"),
    [
        ("b\u00fccher.example", "xn--bcher-kva.example"),
        ("m\u00fcnchen.de", "xn--mnchen-3ya.de"),
        ("\u00c9XAMPLE.com", "xn--xample-9ua.com"),
        ("\u4f8b\u3048.\u30c6\u30b9\u30c8", "xn--r8jz45g.xn--zckzah"),
        ("xn--bcher-kva.example", "xn--bcher-kva.example"),
        ("Example.COM", "Example.COM"),
    ],
)
def test_domains_are_idna_encoded(domain: str, ascii_domain: str) -> None:
    mailbox = parse_address(f"user@{domain}")
    assert mailbox.domain == ascii_domain
    assert envelope_address(("N", f"user@{domain}")) == f"user@{ascii_domain}"
    assert not mailbox.needs_smtputf8


@pytest.mark.parametrize(
    "domain",
    [
        "\u00e9" * 60 + ".com",
        "a\u00e9b..com",
        "a b\u00e9.com",
        "\u00e9_x.com",
        "\u00e9.-com",
        "xn--.com",
    ],
)
def test_invalid_idna_domains_raise(domain: str) -> None:
    with pytest.raises(InvalidAddressError, match="not a valid host name"):
        parse_address(f"user@{domain}")


def test_non_ascii_local_part_needs_smtputf8() -> None:
    mailbox = parse_address("J\u00f6rg <j\u00f6rg@b\u00fccher.example>")
    assert mailbox.local_part == "j\u00f6rg"
    assert mailbox.domain == "xn--bcher-kva.example"
    assert mailbox.needs_smtputf8
    assert envelope_address("j\u00f6rg@example.com") == "j\u00f6rg@example.com"
    assert parse_address(Address("", "\u7528\u6237", "example.com")).needs_smtputf8
    assert not parse_address("ascii@example.com").needs_smtputf8
    assert not parse_address('"quoted ascii"@example.com').needs_smtputf8


def test_smtputf8_flag_follows_the_header_addresses() -> None:
    plain = EmailMessage("s", "b", "f@example.com", ["t@b\u00fccher.example"])
    assert plain.render().smtputf8 is False
    local = EmailMessage("s", "b", "f@example.com", cc=["\u00fc@example.com"])
    assert local.render().smtputf8 is True
    sender = EmailMessage("s", "b", "\u00fc@example.com", ["t@example.com"])
    assert sender.render().smtputf8 is True


# -- lists and groups -----------------------------------------------------------------


def test_parse_address_list() -> None:
    assert parse_address_list(
        'a@example.com, "Doe, J" <j@example.com>,Zo\u00eb <z@b\u00fccher.example>'
    ) == [
        Mailbox("", "a", "example.com"),
        Mailbox("Doe, J", "j", "example.com"),
        Mailbox("Zo\u00eb", "z", "xn--bcher-kva.example"),
    ]
    assert parse_address_list("single@example.com") == [
        Mailbox("", "single", "example.com")
    ]


@pytest.mark.parametrize(
    "value",
    [
        "undisclosed-recipients:;",
        " undisclosed-recipients: ; ",
        "Undisclosed recipients:;",
        "list.members:;",
    ],
)
def test_empty_group_yields_no_mailboxes(value: str) -> None:
    assert is_empty_group(value)
    assert parse_address_list(value) == []


@pytest.mark.parametrize(
    "value", ["team: a@example.com;", "a@example.com", "group:", ":;", "a@x:;"]
)
def test_not_an_empty_group(value: str) -> None:
    assert not is_empty_group(value)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("", "empty"),
        ("a@example.com,", "empty"),
        ("a@example.com,,b@example.com", "empty"),
        ("team: a@example.com;", "not valid"),
        ("a@example.com, b@b@c", "more than one '@'"),
        ("a@example.com, x@y <z@w>", "special characters"),
        ("undisclosed-recipients:;, a@example.com", "no '@'"),
    ],
)
def test_bad_lists_raise_naming_the_header(value: str, reason: str) -> None:
    with pytest.raises(InvalidAddressError, match=reason) as excinfo:
        parse_address_list(value, "Reply-To")
    assert excinfo.value.header == "Reply-To"
    assert "(in header 'Reply-To')" in str(excinfo.value)


def test_format_address_header_folds_between_words() -> None:
    mailboxes = [
        parse_address(f"Person Number {n} <person{n}@example.com>") for n in range(4)
    ]
    assert format_address_header("To", mailboxes) == (
        "To: Person Number 0 <person0@example.com>, Person Number 1\r\n"
        " <person1@example.com>, Person Number 2 <person2@example.com>,"
        " Person Number\r\n"
        " 3 <person3@example.com>\r\n"
    )
    assert format_address_header("Cc", [Mailbox("", "a", "example.com")]) == (
        "Cc: a@example.com\r\n"
    )


# -- the envelope equals the header ---------------------------------------------------


def _header_addr_spec(data: bytes, header: str) -> list[str]:
    parsed = BytesParser(policy=email.policy.default).parsebytes(data)
    return [
        # Raw UTF-8 (SMTPUTF8) is read back as surrogate escapes.
        address.addr_spec.encode("ascii", "surrogateescape").decode("utf-8")
        for address in parsed[header].addresses
    ]


ENVELOPE_CASES: list[Any] = [
    "plain@example.com",
    "Name <named@example.com>",
    '"Doe, John" <doe@example.com>',
    '"quoted local"@example.com',
    '"a\\"b"@example.com',
    "user@b\u00fccher.example",
    "j\u00f6rg@example.com",
    "a@[127.0.0.1]",
    ("Pair Name", "pair@example.com"),
    ("x@y <z@w>", "real@example.com"),
    ("Zo\u00eb", "zoe@m\u00fcnchen.de"),
    Address("Obj", "obj", "example.com"),
    Address("", "with space", "example.com"),
]


@pytest.mark.parametrize("value", ENVELOPE_CASES)
def test_envelope_recipient_equals_the_header_addr_spec(value: Any) -> None:
    message = EmailMessage(
        "s", "b", value, [value], cc=[value], reply_to=[value], bcc=["b@example.com"]
    )
    data = message.as_bytes()
    envelope = envelope_address(value)
    for header in ("From", "To", "Cc", "Reply-To"):
        assert _header_addr_spec(data, header) == [envelope]
    assert [envelope_address(item) for item in message.recipients()] == [
        envelope,
        envelope,
        "b@example.com",
    ]


@pytest.mark.parametrize(
    "value", ["a@example.com, b@example.com", "a@b@c", "x@y <z@w>", "alice@x)<bob@y>"]
)
@pytest.mark.parametrize("field", ["to", "cc", "reply_to"])
def test_messages_refuse_ambiguous_addresses_naming_the_header(
    field: str, value: str
) -> None:
    message = EmailMessage("s", "b", "f@example.com", **{field: [value]})
    with pytest.raises(InvalidAddressError) as excinfo:
        message.as_bytes()
    assert (
        excinfo.value.header == {"to": "To", "cc": "Cc", "reply_to": "Reply-To"}[field]
    )
