"""Hostile values in every door that leads to a header (issue #8, classes 1,
3 and 4; MIME parameters from issue #11).

Class 1: message attributes (content_subtype, encoding, mixed_subtype,
alternative_subtype), settings (DEFAULT_CHARSET), mimetypes and their
parameters (attach, attach_alternative, attachment tuples, attach_inline),
filenames and Content-IDs all pass one validation path
(asyncmail.headers); a bad value raises BadHeaderError naming the field and
nothing reaches the server.

Class 3: no serialised line exceeds 998 octets, whatever the input, in every
header kind; the value still round-trips through a standard parser.

Class 4: the parsers are linear; huge inputs get an answer (the timings are
in benchmarks/worst_case.py, never asserted here).
"""

from __future__ import annotations

import email.header
import email.policy
import email.utils
from email.headerregistry import Address
from email.parser import BytesParser
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

import asyncmail
from asyncmail import (
    BadHeaderError,
    ConfigurationError,
    EmailMessage,
    EmailMultiAlternatives,
)
from asyncmail.message import EmailAttachment
from hostile import (
    FROM,
    LINE_SEPARATORS,
    TO,
    assert_clean_message,
    max_line,
    send_batch,
)
from smtpserver import SMTPServer

pytestmark = pytest.mark.anyio

INJECTIONS = [
    *(f"x{sep}Bcc: victim@example.com" for sep in LINE_SEPARATORS),
    "x\x00",
    "x\x1b[2J",
    "x\x7f",
    "x\x08",
    "x\x9b",
]
# Things that are not a token (a MIME subtype or a charset name).
NOT_TOKENS = [
    *INJECTIONS,
    "",
    "ht ml",
    "html;charset=x",
    'html"',
    "html/x",
    "a" * 200,
    "h\u00e9",
]


def parse(data: bytes) -> email.message.EmailMessage:
    return BytesParser(policy=email.policy.default).parsebytes(  # type: ignore[return-value]
        data.replace(b"\r\n", b"\n")
    )


def display_names(data: bytes, header: str) -> list[str]:
    """The display names in an address header, decoded by RFC 2047's rules
    (whitespace between adjacent encoded words is dropped: the modern
    policy's address parser keeps it, a CPython bug)."""
    raw = email.message_from_bytes(data.replace(b"\r\n", b"\n"))
    names = []
    for name, _ in email.utils.getaddresses(raw.get_all(header, [])):
        names.append(str(email.header.make_header(email.header.decode_header(name))))
    return names


@pytest.fixture
def server() -> Any:
    with SMTPServer() as running:
        yield running


def message(**kwargs: Any) -> EmailMessage:
    return EmailMessage("s", "b", FROM, [TO], **kwargs)


# -- class 1: attributes and settings -----------------------------------------------


@pytest.mark.parametrize("value", NOT_TOKENS)
def test_content_subtype_is_a_token(value: str) -> None:
    mail = message()
    mail.content_subtype = value
    with pytest.raises(BadHeaderError, match="content_subtype") as info:
        mail.as_bytes()
    assert info.value.header == "content_subtype"


@pytest.mark.parametrize("attribute", ["mixed_subtype", "alternative_subtype"])
@pytest.mark.parametrize("value", NOT_TOKENS)
def test_multipart_subtypes_are_tokens(attribute: str, value: str) -> None:
    mail = EmailMultiAlternatives("s", "b", FROM, [TO])
    mail.attach_alternative("<p>x</p>", "text/html")
    mail.attach("a.bin", b"x", "application/octet-stream")
    setattr(mail, attribute, value)
    with pytest.raises(BadHeaderError, match=attribute):
        mail.as_bytes()


BAD_CHARSETS = [
    *INJECTIONS,
    "utf-8\r\nBcc: victim@example.com",
    "utf-8\nX: y",
    "utf 8",
    "utf-8;x=y",
    'utf-8"',
    "klingon",
    "a" * 41,
    # Python codecs that are no charset: bytes transforms, Python-only codecs.
    "rot13",
    "base64",
    "hex",
    "zlib",
    "idna",
    "punycode",
    "unicode_escape",
    "undefined",
]


@pytest.mark.parametrize("value", BAD_CHARSETS)
def test_encoding_is_a_known_charset_name(value: str) -> None:
    mail = message()
    mail.encoding = value
    with pytest.raises(BadHeaderError, match="encoding"):
        mail.as_bytes()


@pytest.mark.parametrize("value", BAD_CHARSETS)
def test_default_charset_setting_is_checked_like_every_charset(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ConfigurationError, match="DEFAULT_CHARSET"):
        asyncmail.configure(DEFAULT_CHARSET=value)
    if "\x00" not in value:  # the environment cannot hold a NUL
        monkeypatch.setenv("DEFAULT_CHARSET", value)
        asyncmail.settings.reload_environment()
        with pytest.raises(ConfigurationError, match=r"\$DEFAULT_CHARSET"):
            message().as_bytes()


def test_good_charsets_still_work() -> None:
    for charset in ("utf-8", "UTF-8", "iso-8859-1", "latin1", "us-ascii", "cp1252"):
        mail = message()
        mail.encoding = charset
        assert f'charset="{charset}"'.encode() in mail.as_bytes()


BAD_MIMETYPES = [
    *(f"text/plain{injection}" for injection in INJECTIONS),
    *(f'text/plain; name="x{sep}y"' for sep in LINE_SEPARATORS),
    'text/plain; charset="utf-8\r\nBcc: victim@example.com"',
    "text/plain; charset=utf-8\r\n",
    "nonsense",
    "text/",
    "/plain",
    "text/pl ain",
    "text/plain; a=b; a=c",
    "text/plain; =x",
    "text/plain; a",
    'text/plain; a="unterminated',
    "text/plain; a=b c",
    "application/octet-stream; boundary=x",
    "text/plain; charset=klingon",
    'text/plain; charset="utf-8\x00"',
    "a" * 200 + "/b",
]


def _doors(mimetype: str) -> list[tuple[str, Any]]:
    """Every public way to give a mimetype: each a callable that adds it."""

    def attach(mail: Any) -> None:
        mail.attach("a.txt", "text", mimetype)

    def attach_bytes(mail: Any) -> None:
        mail.attach("a.bin", b"\x00\x01", mimetype)

    def alternative(mail: Any) -> None:
        mail.attach_alternative("<p>x</p>", mimetype)

    def inline(mail: Any) -> None:
        mail.attach_inline(b"\x89PNG", mimetype)

    def constructor(mail: Any) -> None:
        mail.attachments.append(EmailAttachment("a.txt", "text", mimetype))

    def swapped(mail: Any) -> None:
        mail.attach("a.txt", "text", "text/plain")
        mail.attachments[0] = mail.attachments[0]._replace(mimetype=mimetype)

    return [
        ("attach", attach),
        ("attach bytes", attach_bytes),
        ("attach_alternative", alternative),
        ("attach_inline", inline),
        ("attachments list", constructor),
        ("replaced after attach", swapped),
    ]


@pytest.mark.parametrize("mimetype", BAD_MIMETYPES)
def test_bad_mimetypes_are_refused_through_every_door(mimetype: str) -> None:
    for door, add in _doors(mimetype):
        mail = EmailMultiAlternatives("s", "b", FROM, [TO])
        with pytest.raises(BadHeaderError) as info:  # noqa: PT012 - either step
            add(mail)
            mail.as_bytes()
        assert info.value.header, door
        assert "mimetype" in str(info.value) or "Content-Type" in str(info.value), door


def test_attachment_tuples_in_the_constructor_are_checked() -> None:
    with pytest.raises(BadHeaderError):
        EmailMessage(
            "s",
            "b",
            FROM,
            [TO],
            attachments=[("a.txt", "x", "text/plain\r\nBcc: victim@example.com")],
        )


async def test_nothing_hostile_reaches_the_server(server: SMTPServer) -> None:
    batch: list[EmailMessage] = []
    for value in NOT_TOKENS:
        mail = message()
        mail.content_subtype = value
        batch.append(mail)
    for value in BAD_CHARSETS:
        mail = message()
        mail.encoding = value
        batch.append(mail)
    for mimetype in BAD_MIMETYPES:
        mail = message()
        mail.attachments.append(EmailAttachment("a.txt", "text", mimetype))
        batch.append(mail)
        alternative = EmailMultiAlternatives("s", "b", FROM, [TO])
        alternative.alternatives.append(
            asyncmail.message.EmailAlternative("<p>x</p>", mimetype)
        )
        batch.append(alternative)
    failed = await send_batch(server, batch)
    assert failed == batch
    for mail in batch:
        assert isinstance(mail.result.error, BadHeaderError)  # type: ignore[union-attr]
    assert b"victim" not in bytes(server.recorder.wire)


@hsettings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(
    subtype=st.text(max_size=20),
    charset=st.text(max_size=12),
    value=st.text(max_size=40),
)
def test_any_attribute_value_is_refused_or_harmless(
    subtype: str, charset: str, value: str
) -> None:
    mail = EmailMultiAlternatives("s", "b", FROM, [TO])
    mail.content_subtype = subtype or "plain"
    mail.encoding = charset or None
    mail.attach_alternative("<p>x</p>", "text/html")
    try:
        mail.attach("a.ics", "BEGIN:VCALENDAR", f'text/calendar; method="{value}"')
        data = mail.as_bytes()
    except (BadHeaderError, ValueError, UnicodeError):
        return
    assert_clean_message(data)
    parsed = parse(data)
    assert parsed.get_all("bcc") is None
    calendar = [p for p in parsed.walk() if p.get_content_type() == "text/calendar"]
    assert len(calendar) == 1
    if value.isalnum():
        assert calendar[0].get_param("method") == value


# -- MIME parameters (issue #11) --------------------------------------------------


def test_a_calendar_invite_alternative_keeps_its_method() -> None:
    mail = EmailMultiAlternatives("Meeting", "See the invite", FROM, [TO])
    ics = "BEGIN:VCALENDAR\r\nMETHOD:REQUEST\r\nEND:VCALENDAR\r\n"
    mail.attach_alternative(ics, "text/calendar; method=REQUEST")
    data = mail.as_bytes()
    assert b'Content-Type: text/calendar; charset="utf-8"; method="REQUEST"\r\n' in data
    part = next(
        p for p in parse(data).walk() if p.get_content_type() == "text/calendar"
    )
    assert part.get_param("method") == "REQUEST"
    assert part.get_content() == ics.replace("\r\n", "\n")


def test_a_charset_parameter_chooses_the_attachment_charset() -> None:
    mail = message()
    mail.attach("l.txt", "caf\u00e9", "text/plain; charset=iso-8859-1")
    data = mail.as_bytes()
    assert b'Content-Type: text/plain; charset="iso-8859-1"\r\n' in data
    (part,) = parse(data).iter_attachments()
    assert part.get_content() == "caf\u00e9\n"


def test_parameters_are_quoted_or_rfc2231_encoded() -> None:
    mail = message()
    mail.attach("r.bin", b"x", 'application/x-thing; name="a \\"b\\" c"; level=1')
    mail.attach("u.bin", b"x", 'application/x-thing; title="na\u00efve"')
    data = mail.as_bytes()
    assert (
        b'Content-Type: application/x-thing; name="a \\"b\\" c"; level="1"\r\n' in data
    )
    assert b"title*=utf-8''na%C3%AFve" in data
    parts = list(parse(data).iter_attachments())
    assert parts[0].get_param("name") == 'a "b" c'
    assert parts[1].get_param("title") == "na\u00efve"


@pytest.mark.parametrize("control", ["\x00", "\x01", "\x1b", "\x7f", "\x9b", "\t"])
def test_controls_in_parameters_and_filenames_are_encoded_never_raw(
    control: str,
) -> None:
    mail = message()
    mail.attach(f"f{control}.bin", b"x", f'application/x; p="a{control}b"')
    data = mail.as_bytes()
    assert_clean_message(data)
    (part,) = parse(data).iter_attachments()
    assert part.get_filename() == f"f{control}.bin"
    assert part.get_param("p") == f"a{control}b"


# -- inline images -----------------------------------------------------------------


PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4


def test_inline_image_goes_in_multipart_related_with_the_html() -> None:
    mail = EmailMultiAlternatives("s", "text", FROM, [TO])
    cid = mail.attach_inline(PNG, "image/png", filename="logo.png")
    mail.attach_alternative(f'<img src="cid:{cid}">', "text/html")
    mail.attach("report.pdf", b"%PDF", "application/pdf")
    parsed = parse(mail.as_bytes())
    tree = [part.get_content_type() for part in parsed.walk()]
    assert tree == [
        "multipart/mixed",
        "multipart/alternative",
        "text/plain",
        "multipart/related",
        "text/html",
        "image/png",
        "application/pdf",
    ]
    image = next(p for p in parsed.walk() if p.get_content_type() == "image/png")
    assert image["Content-ID"] == f"<{cid}>"
    assert image.get_content_disposition() == "inline"
    assert image.get_filename() == "logo.png"
    assert image.get_content() == PNG


def test_inline_image_with_an_html_body_and_a_chosen_cid() -> None:
    mail = EmailMessage("s", '<img src="cid:logo@example.com">', FROM, [TO])
    mail.content_subtype = "html"
    assert mail.attach_inline(PNG, "image/png", cid="<logo@example.com>") == (
        "logo@example.com"
    )
    parsed = parse(mail.as_bytes())
    assert [p.get_content_type() for p in parsed.walk()] == [
        "multipart/related",
        "text/html",
        "image/png",
    ]
    with pytest.raises(ValueError, match="already used"):
        mail.attach_inline(PNG, "image/png", cid="logo@example.com")


@pytest.mark.parametrize(
    "cid",
    [*INJECTIONS, "", "a b@c", "<a@b", "a@b>", "a\u00e9@b", "a" * 300, "a@<b>"],
)
def test_bad_content_ids_are_refused(cid: str) -> None:
    with pytest.raises(BadHeaderError, match="Content-ID"):
        EmailMessage().attach_inline(PNG, "image/png", cid=cid)


def test_inline_file(tmp_path: Any) -> None:
    path = tmp_path / "logo.png"
    path.write_bytes(PNG)
    mail = EmailMultiAlternatives("s", "t", FROM, [TO])
    cid = mail.attach_inline_file(path)
    mail.attach_alternative(f'<img src="cid:{cid}">', "text/html")
    image = next(
        p for p in parse(mail.as_bytes()).walk() if p.get_content_maintype() == "image"
    )
    assert image.get_content_type() == "image/png"
    assert image.get_filename() == "logo.png"
    assert image.get_content() == PNG


# -- class 3: folding ---------------------------------------------------------------


LONG_NAMES = [
    "a" * 1020,
    "b" * 1024,
    " ".join(["w" * 500] * 2),
    '"' * 600,
    "\\" * 700,
    "x." * 500,
    "\u00e9" * 700,
    "a" * 990 + " " + "b" * 10,
]


@pytest.mark.parametrize("name", LONG_NAMES)
def test_long_display_names_fold_in_every_form(name: str) -> None:
    forms: list[Any] = [
        (name, "b@example.com"),
        Address(display_name=name, addr_spec="b@example.com"),
    ]
    if '"' not in name and "\\" not in name and len(name) < 1000:
        forms.append(f'"{name}" <b@example.com>')
    for form in forms:
        for field in ("to", "cc", "reply_to"):
            mail = EmailMessage("s", "b", FROM, **{"to": [TO], field: [form]})
            data = mail.as_bytes()
            assert max_line(data) <= 998, (field, max_line(data))
            header = {"to": "To", "cc": "Cc", "reply_to": "Reply-To"}[field]
            assert display_names(data, header)[-1] == name
        mail = EmailMessage("s", "b", form, [TO])
        data = mail.as_bytes()
        assert max_line(data) <= 998
        assert display_names(data, "From") == [name]


UNBREAKABLE = [
    "a" * 3000,
    "=?" + "a" * 2000,
    "\u00e9" * 3000,
    "a\x01" * 1500,
    "x" * 65000,
]


@pytest.mark.parametrize("word", UNBREAKABLE)
def test_unbreakable_words_in_every_unstructured_header(word: str) -> None:
    for name in ("Subject", "X-Custom", "Comments", "X-" + "n" * 70):
        mail = EmailMessage(
            word, "b", FROM, [TO], headers={name: word} if name != "Subject" else None
        )
        data = mail.as_bytes()
        assert max_line(data) <= 998
        assert str(parse(data)[name]) == word


def test_long_filenames_and_parameters_fold() -> None:
    mail = message()
    for name in ("f" * 999, "\u00e9" * 900, "a b " * 239 + "a", '"' * 900):
        mail.attach(name, b"x", "application/octet-stream")
    mail.attach("p.bin", b"x", 'application/x; p="' + "v" * 990 + '"')
    data = mail.as_bytes()
    assert max_line(data) <= 998
    # compat32: the modern policy strips the quotes around a quoted filename.
    parts = list(email.message_from_bytes(data).walk())[2:]
    names = [p.get_filename() for p in parts]
    assert names[:4] == ["f" * 999, "\u00e9" * 900, "a b " * 239 + "a", '"' * 900]


def test_long_message_ids_and_references() -> None:
    references = " ".join(f"<{i}.{'r' * 80}@example.com>" for i in range(100))
    mail = message(
        headers={"References": references, "In-Reply-To": "<" + "i" * 900 + "@x>"}
    )
    data = mail.as_bytes()
    assert max_line(data) <= 998
    assert parse(data)["References"].split() == references.split()
    with pytest.raises(BadHeaderError):
        message(headers={"Message-ID": "<" + "i" * 1100 + "@x>"}).as_bytes()


@hsettings(max_examples=200, deadline=None)
@given(
    name=st.text(min_size=0, max_size=1100).filter(
        lambda t: not set(t) & set(LINE_SEPARATORS)
    ),
    subject=st.text(max_size=1500).filter(lambda t: not set(t) & set(LINE_SEPARATORS)),
)
def test_no_line_over_998_octets_for_any_name_or_subject(
    name: str, subject: str
) -> None:
    try:
        mail = EmailMessage(subject, "b", (name, "from@example.com"), [(name, TO)])
        data = mail.as_bytes()
    except (BadHeaderError, UnicodeError):
        return
    assert max_line(data) <= 998


async def test_long_headers_arrive_folded(server: SMTPServer) -> None:
    batch = [
        EmailMessage("s" * 3000, "b", ("a" * 1020, FROM), [("b" * 1020, TO)]),
        message(headers={"X-Long": "x" * 5000, "Keywords": " ".join(["k" * 900] * 3)}),
    ]
    assert await send_batch(server, batch) == []
    assert len(server.messages) == 3


# -- class 4: parsers on huge input ---------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        " " * 32768 + "a@example.com",
        " " * 32768 + "undisclosed-recipients:;",
        " " * 32768 + "x",
        "\t " * 16384 + ":;",
        "a" * 60000 + ":;",
        "," * 60000,
        ", a@example.com" * 3000,
        '"' * 60000,
        "a@" * 30000,
        "<" * 60000,
    ],
)
def test_huge_address_headers_get_an_answer(value: str) -> None:
    for name in ("To", "From", "Cc", "Sender", "Reply-To"):
        mail = message(headers={name: value})
        try:
            data = mail.as_bytes()
        except BadHeaderError:
            continue
        assert max_line(data) <= 998


def test_huge_header_values_are_refused_before_parsing() -> None:
    for name in ("Subject", "X-Big", "To", "References", "Content-Language"):
        with pytest.raises(BadHeaderError, match=r"too long|longer"):
            message(headers={name: "a " * 40000}).as_bytes()
    with pytest.raises(BadHeaderError, match="too long"):
        EmailMessage("a" * 70000, "b", FROM, [TO]).as_bytes()
    with pytest.raises(BadHeaderError):
        message().attach("a.txt", "x", "text/plain; p=" + "v" * 70000)
