"""The message model: Django 6's EmailMessage API and asyncmail's wire form.

Expected bytes were checked against what Django 6.1 emits for the same
message (differences are deliberate and named where they occur).
"""

from __future__ import annotations

import email.message
import email.mime.base
import email.policy
import os
import pickle
import re
import time
from base64 import b64encode
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from email.headerregistry import Address
from email.parser import BytesParser
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import pytest

import asyncmail
import asyncmail.dnsname
import asyncmail.message
from asyncmail import (
    DEFAULT_ATTACHMENT_MIME_TYPE,
    BadHeaderError,
    EmailAlternative,
    EmailAttachment,
    EmailMessage,
    EmailMultiAlternatives,
    InvalidAddressError,
    make_msgid,
)
from asyncmail.backends.locmem import EmailBackend as LocmemBackend
from asyncmail.dnsname import get_fqdn
from asyncmail.headers import LINE_SEPARATORS

DATE = "Tue, 01 Jan 2030 00:00:00 +0000"
FIXED = {"Date": DATE, "Message-ID": "<id@example.com>"}
TAIL = f"Date: {DATE}\r\nMessage-ID: <id@example.com>\r\n"
PLAIN_HEAD = (
    'Content-Type: text/plain; charset="utf-8"\r\n'
    "Content-Transfer-Encoding: 7bit\r\n"
    "MIME-Version: 1.0\r\n"
)


def make(*args: Any, **kwargs: Any) -> EmailMessage:
    """An EmailMessage with fixed Date and Message-ID, so output is exact."""
    kwargs["headers"] = {**FIXED, **kwargs.get("headers", {})}
    return EmailMessage(*args, **kwargs)


def make_alternatives(*args: Any, **kwargs: Any) -> EmailMultiAlternatives:
    kwargs["headers"] = {**FIXED, **kwargs.get("headers", {})}
    return EmailMultiAlternatives(*args, **kwargs)


def parse(data: bytes) -> email.message.EmailMessage:
    """Parse wire bytes with the stdlib (LF line endings, as message() does,
    so that text content reads back with "\n")."""
    assert_wire_safe(data)
    data = data.replace(b"\r\n", b"\n")
    parsed = BytesParser(policy=email.policy.default).parsebytes(data)
    assert isinstance(parsed, email.message.EmailMessage)
    return parsed


def head_of(data: bytes) -> str:
    return data.partition(b"\r\n\r\n")[0].decode("utf-8") + "\r\n"


def header_names(data: bytes) -> list[str]:
    return re.findall(r"^([^\s:]+):", head_of(data), flags=re.MULTILINE)


def without_boundaries(data: bytes) -> bytes:
    """Number the random multipart boundaries in order of appearance."""
    found: dict[bytes, bytes] = {}
    for boundary in re.findall(rb'boundary="([^"]+)"', data):
        found.setdefault(boundary, b"B%d" % len(found))
    for boundary, name in found.items():
        data = data.replace(boundary, name)
    return data


def assert_wire_safe(data: bytes) -> None:
    assert re.search(rb"\r(?!\n)", data) is None, "bare CR"
    assert re.search(rb"(?<!\r)\n", data) is None, "bare LF"
    assert data.endswith(b"\r\n")
    assert max(len(line) for line in data.split(b"\r\n")) <= 998


def shape(part: email.message.Message) -> Any:
    """The MIME tree as nested (content type, [children]) / content type."""
    if part.is_multipart():
        children = part.get_payload()
        assert isinstance(children, list)
        return (part.get_content_type(), [shape(child) for child in children])
    return part.get_content_type()


# -- constructor and recipients --------------------------------------------------


@pytest.mark.parametrize("argument", ["to", "cc", "bcc", "reply_to"])
def test_recipient_arguments_must_not_be_a_string(argument: str) -> None:
    with pytest.raises(TypeError, match=f'"{argument}" argument must be a list'):
        EmailMessage(**{argument: "someone@example.com"})


@pytest.mark.parametrize("argument", ["to", "cc", "bcc", "reply_to"])
def test_recipient_arguments_must_not_be_a_single_address_object(
    argument: str,
) -> None:
    with pytest.raises(TypeError, match=f'"{argument}" argument must be a list'):
        EmailMessage(**{argument: Address("A", "a", "example.com")})


@pytest.mark.parametrize("argument", ["to", "cc", "bcc", "reply_to"])
@pytest.mark.parametrize(
    "single", ["someone@example.com", Address("A", "a", "example.com")]
)
def test_a_single_address_set_after_construction_is_refused_when_used(
    argument: str, single: object
) -> None:
    """Set after construction, a lone address (not a list of them) fails as
    the constructor fails, with the attribute's name, wherever the message
    is used: never read as a list of one-character addresses."""
    message = EmailMessage("s", "b", "f@example.com", ["ok@example.com"])
    setattr(message, argument, single)
    refused = pytest.raises(TypeError, match=f'"{argument}" must be a list or tuple')
    if argument != "bcc":  # in a header
        with refused:
            message.render()
    if argument != "reply_to":  # in the envelope
        with refused:
            message.envelope()
    message = EmailMessage("s", "b", "f@example.com", ["ok@example.com"])
    setattr(message, argument, ("x@example.com",))  # any sequence is fine
    if argument == "reply_to":
        assert "Reply-To: x@example.com" in message.render().data.decode()
    else:
        assert "x@example.com" in message.envelope()[1]


def test_recipient_arguments_accept_any_iterable_and_store_lists() -> None:
    message = EmailMessage(
        to=("a@example.com",),
        cc=(address for address in ["c@example.com"]),
        bcc=["b@example.com"],
        reply_to=("r@example.com",),
    )
    assert message.to == ["a@example.com"]
    assert message.cc == ["c@example.com"]
    assert message.bcc == ["b@example.com"]
    assert message.reply_to == ["r@example.com"]


def test_missing_arguments_are_empty() -> None:
    message = EmailMessage()
    assert (message.subject, message.body) == ("", "")
    assert (message.to, message.cc, message.bcc, message.reply_to) == ([], [], [], [])
    assert message.attachments == []
    assert message.extra_headers == {}
    assert message.connection is None
    assert message.recipients() == []


def test_recipients_are_to_cc_bcc_in_order_without_empty_entries() -> None:
    message = EmailMessage(
        to=["to1@example.com", "", "to2@example.com"],
        cc=["", "cc@example.com"],
        bcc=["bcc@example.com", ""],
        reply_to=["reply@example.com"],
    )
    assert message.recipients() == [
        "to1@example.com",
        "to2@example.com",
        "cc@example.com",
        "bcc@example.com",
    ]


def test_recipients_keep_the_given_objects() -> None:
    pair = ("Ann", "ann@example.com")
    address = Address("Bob", "bob", "example.com")
    message = EmailMessage(to=[pair], cc=[address])
    assert message.recipients() == [pair, address]


def test_from_email_defaults_to_default_from_email() -> None:
    assert EmailMessage().from_email == "webmaster@localhost"
    with asyncmail.settings.override(DEFAULT_FROM_EMAIL="App <app@example.com>"):
        message = make("s", "b", to=["t@example.com"])
    assert message.from_email == "App <app@example.com>"
    assert "From: App <app@example.com>\r\n" in head_of(message.as_bytes())


# -- exact output and header order ---------------------------------------------


def test_simple_message_exact_bytes() -> None:
    message = make(
        "Subject here",
        "Here is the message.\nSecond line.",
        "from@example.com",
        ["to@example.com", "Other <other@example.com>"],
        cc=["cc@example.com"],
        bcc=["bcc@example.com"],
        reply_to=["reply@example.com"],
        headers={"X-Mailer": "asyncmail"},
    )
    assert message.as_bytes() == (
        PLAIN_HEAD + "Subject: Subject here\r\n"
        "From: from@example.com\r\n"
        "To: to@example.com, Other <other@example.com>\r\n"
        "Cc: cc@example.com\r\n"
        "Reply-To: reply@example.com\r\n" + TAIL + "X-Mailer: asyncmail\r\n"
        "\r\n"
        "Here is the message.\r\nSecond line.\r\n"
    ).encode("ascii")


def test_generated_header_order_for_a_single_part_message() -> None:
    message = EmailMessage(
        "s",
        "b",
        "f@example.com",
        ["t@example.com"],
        cc=["c@example.com"],
        reply_to=["r@example.com"],
        headers={"X-B": "2", "X-A": "1", "List-Id": "<list.example.com>"},
    )
    assert header_names(message.as_bytes()) == [
        "Content-Type",
        "Content-Transfer-Encoding",
        "MIME-Version",
        "Subject",
        "From",
        "To",
        "Cc",
        "Reply-To",
        "Date",
        "Message-ID",
        "X-B",
        "X-A",
        "List-Id",
    ]


def test_generated_header_order_for_a_multipart_message() -> None:
    message = EmailMessage("s", "b", "f@example.com", ["t@example.com"])
    message.attach("a.bin", b"\x00", "application/octet-stream")
    assert header_names(message.as_bytes()) == [
        "MIME-Version",
        "Content-Type",
        "Subject",
        "From",
        "To",
        "Date",
        "Message-ID",
    ]


def test_empty_cc_and_reply_to_are_left_out() -> None:
    names = header_names(make("s", "b", "f@example.com", ["t@example.com"]).as_bytes())
    assert "Cc" not in names
    assert "Reply-To" not in names


def test_no_recipients_renders_without_to() -> None:
    data = make("s", "b", "f@example.com").as_bytes()
    assert "To" not in header_names(data)


def test_given_date_and_message_id_keep_their_place_among_extra_headers() -> None:
    message = EmailMessage(
        "s",
        "b",
        "f@example.com",
        ["t@example.com"],
        headers={"X-First": "1", "Message-ID": "<m@example.com>", "Date": DATE},
    )
    names = header_names(message.as_bytes())
    assert names[-3:] == ["X-First", "Message-ID", "Date"]
    assert names.count("Date") == 1
    assert names.count("Message-ID") == 1


def test_extra_header_values_may_be_int_or_datetime() -> None:
    moment = datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=2)))
    message = EmailMessage(
        "s",
        "b",
        "f@example.com",
        ["t@example.com"],
        headers={"Date": moment, "X-Priority": 1, "Message-ID": "<m@example.com>"},
    )
    head = head_of(message.as_bytes())
    assert "Date: Wed, 02 Jan 2030 03:04:05 +0200\r\n" in head
    assert "X-Priority: 1\r\n" in head


def test_extra_header_value_of_another_type_is_a_type_error() -> None:
    message = make("s", "b", "f@example.com", ["t@example.com"])
    message.extra_headers["X-List"] = ["a", "b"]
    with pytest.raises(TypeError, match="'X-List' must be a str, int or datetime"):
        message.as_bytes()


def test_subject_is_converted_with_str() -> None:
    class Lazy:
        def __str__(self) -> str:
            return "Translated"

    message = make(Lazy(), "b", "f@example.com", ["t@example.com"])
    assert "Subject: Translated\r\n" in head_of(message.as_bytes())


# -- visible-header overrides ---------------------------------------------------


def test_overrides_change_only_the_visible_headers_in_their_usual_place() -> None:
    message = make(
        "Real subject",
        "b",
        "envelope@example.com",
        ["real-to@example.com"],
        cc=["real-cc@example.com"],
        bcc=["bcc@example.com"],
        reply_to=["real-reply@example.com"],
        headers={
            "X-Extra": "x",
            "Reply-To": "Shown Reply <shown-reply@example.com>",
            "Cc": "shown-cc@example.com",
            "To": "Shown <shown@example.com>, second@example.com",
            "From": "Shown From <shown-from@example.com>",
            "Subject": "Shown subject",
        },
    )
    assert message.as_bytes() == (
        PLAIN_HEAD + "Subject: Shown subject\r\n"
        "From: Shown From <shown-from@example.com>\r\n"
        "To: Shown <shown@example.com>, second@example.com\r\n"
        "Cc: shown-cc@example.com\r\n"
        "Reply-To: Shown Reply <shown-reply@example.com>\r\n" + TAIL + "X-Extra: x\r\n"
        "\r\n"
        "b\r\n"
    ).encode("ascii")
    # The envelope is untouched.
    assert message.from_email == "envelope@example.com"
    assert message.recipients() == [
        "real-to@example.com",
        "real-cc@example.com",
        "bcc@example.com",
    ]


def test_override_names_are_case_insensitive() -> None:
    # Django 6 compares "From"/"To"/"Cc"/"Reply-To" case-sensitively and
    # silently drops e.g. a "to" key; asyncmail honours it.
    message = make(
        "s",
        "b",
        "f@example.com",
        ["t@example.com"],
        headers={"to": "shown@example.com", "FROM": "x@example.com", "subject": "S2"},
    )
    head = head_of(message.as_bytes())
    assert "To: shown@example.com\r\n" in head
    assert "From: x@example.com\r\n" in head
    assert "Subject: S2\r\n" in head
    assert "t@example.com" not in head
    assert header_names(message.as_bytes()).count("To") == 1


def test_override_accepts_a_pair_or_address_object() -> None:
    message = make(
        "s",
        "b",
        "f@example.com",
        ["t@example.com"],
        headers={
            "From": ("Pair Name", "pair@example.com"),
            "Reply-To": Address("Obj", "obj", "example.com"),
            "Sender": ("Zo\u00eb", "zoe@example.com"),
        },
    )
    data = message.as_bytes()
    head = head_of(data)
    assert "From: Pair Name <pair@example.com>\r\n" in head
    assert "Reply-To: Obj <obj@example.com>\r\n" in head
    assert "Sender: =?utf-8?q?Zo=C3=AB?= <zoe@example.com>\r\n" in head
    assert parse(data)["Sender"].addresses[0].display_name == "Zo\u00eb"


def test_to_override_with_an_empty_group() -> None:
    message = make(
        "s",
        "b",
        "f@example.com",
        bcc=["hidden@example.com"],
        headers={"To": "undisclosed-recipients:;"},
    )
    data = message.as_bytes()
    assert "To: undisclosed-recipients:;\r\n" in head_of(data)
    assert message.recipients() == ["hidden@example.com"]
    assert parse(data)["To"].groups[0].display_name == "undisclosed-recipients"


def test_invalid_override_address_names_the_header() -> None:
    message = make(
        "s", "b", "f@example.com", ["t@example.com"], headers={"Cc": "a@b@c"}
    )
    with pytest.raises(InvalidAddressError, match="'Cc'") as excinfo:
        message.as_bytes()
    assert excinfo.value.header == "Cc"


def test_other_address_headers_in_extra_headers_are_parsed_strictly() -> None:
    good = make(
        "s",
        "b",
        "f@example.com",
        ["t@example.com"],
        headers={"Sender": "Zoë <s@bücher.example>"},
    )
    assert "Sender: =?utf-8?q?Zo=C3=AB?= <s@xn--bcher-kva.example>\r\n" in head_of(
        good.as_bytes()
    )
    bad = make(
        "s", "b", "f@example.com", ["t@example.com"], headers={"Sender": "x@y <z@w>"}
    )
    with pytest.raises(InvalidAddressError) as excinfo:
        bad.as_bytes()
    assert excinfo.value.header == "Sender"


def test_duplicate_extra_headers_differing_in_case_are_refused() -> None:
    message = make(
        "s", "b", "f@example.com", ["t@example.com"], headers={"X-A": "1", "x-a": "2"}
    )
    with pytest.raises(BadHeaderError, match="given twice"):
        message.as_bytes()


@pytest.mark.parametrize(
    "name", ["Content-Type", "content-transfer-encoding", "MIME-Version"]
)
def test_structural_headers_cannot_be_given(name: str) -> None:
    message = make("s", "b", "f@example.com", ["t@example.com"], headers={name: "x"})
    with pytest.raises(BadHeaderError, match="set by asyncmail") as excinfo:
        message.as_bytes()
    assert excinfo.value.header == name


# -- Bcc ------------------------------------------------------------------------


def test_bcc_never_appears_in_any_header_or_in_the_bytes() -> None:
    message = EmailMultiAlternatives(
        "s",
        "b",
        "f@example.com",
        ["t@example.com"],
        bcc=["Secret Name <secret@example.com>", ("Pair", "pair-secret@example.com")],
    )
    message.attach_alternative("<p>b</p>", "text/html")
    message.attach("a.txt", "text")
    data = message.as_bytes()
    # The random parts (MIME boundaries, the Message-ID) may hold "bcc" by
    # chance, as hex: look at everything else.
    for random_part in re.findall(rb'boundary="([^"]+)"', data) + re.findall(
        rb"Message-ID: (<[^>]+>)", data
    ):
        data = data.replace(random_part, b"")
    for needle in (b"secret", b"Secret", b"Bcc", b"bcc", b"Pair"):
        assert needle not in data
    assert "bcc" not in message.message()
    assert message.recipients()[-2:] == message.bcc


@pytest.mark.parametrize("name", ["Bcc", "bcc", "BCC", "Resent-Bcc"])
def test_bcc_in_headers_is_an_error_that_points_to_the_bcc_argument(
    name: str,
) -> None:
    message = make(
        "s", "b", "f@example.com", ["t@example.com"], headers={name: "x@example.com"}
    )
    with pytest.raises(BadHeaderError) as excinfo:
        message.as_bytes()
    assert str(excinfo.value) == (
        'Bcc is not a valid email header. Use the "bcc" argument to specify '
        "blind carbon copy recipients."
    )
    assert excinfo.value.header == name
    with pytest.raises(BadHeaderError):
        message.message()


# -- Date and Message-ID -------------------------------------------------------


def test_date_is_generated_in_utc() -> None:
    before = int(time.time())
    data = EmailMessage("s", "b", "f@example.com", ["t@example.com"]).as_bytes()
    after = time.time()
    (value,) = re.findall(r"^Date: (.*)\r$", head_of(data), flags=re.MULTILINE)
    assert re.fullmatch(
        r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug"
        r"|Sep|Oct|Nov|Dec) \d{4} \d\d:\d\d:\d\d \+0000",
        value,
    )
    stamp = parsedate_to_datetime(value).timestamp()
    assert before <= stamp <= after


@contextmanager
def local_timezone(spec: str) -> Iterator[None]:
    saved = os.environ.get("TZ")
    os.environ["TZ"] = spec
    time.tzset()
    try:
        yield
    finally:
        if saved is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = saved
        time.tzset()


def test_email_use_localtime_uses_the_local_offset(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # asyncmail uses the process's local time zone (Django: its TIME_ZONE).
    monkeypatch.setattr(asyncmail.message.fields, "_date_cache", (0, False, ""))
    with (
        local_timezone("XYZ-05:30"),
        asyncmail.settings.override(EMAIL_USE_LOCALTIME=True),
    ):
        before = int(time.time())
        data = EmailMessage("s", "b", "f@example.com", ["t@example.com"]).as_bytes()
        after = time.time()
    (value,) = re.findall(r"^Date: (.*)\r$", head_of(data), flags=re.MULTILINE)
    assert value.endswith(" +0530")
    assert before <= parsedate_to_datetime(value).timestamp() <= after


def test_message_id_is_generated_with_the_cached_fqdn() -> None:
    first = EmailMessage("s", "b", "f@example.com", ["t@example.com"])
    second = EmailMessage("s", "b", "f@example.com", ["t@example.com"])
    ids = []
    for message in (first, second):
        rendered = message.render()
        (value,) = re.findall(
            r"^Message-ID: (.*)\r$", head_of(rendered.data), flags=re.MULTILINE
        )
        assert re.fullmatch(rf"<\d+\.\d+\.\d+@{re.escape(get_fqdn())}>", value)
        assert rendered.message_id == value
        ids.append(value)
    assert ids[0] != ids[1]
    # Each rendering is a new message.
    assert first.render().message_id != ids[0]


def test_message_id_domain_is_idna_encoded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(asyncmail.dnsname, "_fqdn", None)
    monkeypatch.setattr(asyncmail.dnsname.socket, "getfqdn", lambda: "mail.bücher.de")
    assert make_msgid().endswith("@mail.xn--bcher-kva.de>")
    monkeypatch.setattr(asyncmail.dnsname, "_fqdn", None)
    monkeypatch.setattr(asyncmail.dnsname.socket, "getfqdn", lambda: "bad\r\nname")
    assert make_msgid().endswith("@localhost>")


def test_make_msgid_with_idstring_and_domain() -> None:
    value = make_msgid("note", "example.org")
    assert re.fullmatch(r"<\d+\.\d+\.\d+\.note@example\.org>", value)
    with pytest.raises(BadHeaderError):
        make_msgid("x\r\ny")


def test_given_message_id_is_used_and_reported() -> None:
    rendered = make("s", "b", "f@example.com", ["t@example.com"]).render()
    assert rendered.message_id == "<id@example.com>"
    assert head_of(rendered.data).count("Message-ID:") == 1


@pytest.mark.parametrize(
    "value", ["<a\x00@example.com>", "<é@example.com>", "<a\x7f@b>", "", "  "]
)
def test_bad_message_ids_are_refused(value: str) -> None:
    message = make(
        "s", "b", "f@example.com", ["t@example.com"], headers={"Message-ID": value}
    )
    with pytest.raises(BadHeaderError, match="Message-ID") as excinfo:
        message.as_bytes()
    assert excinfo.value.header == "Message-ID"


def test_references_are_folded_between_ids() -> None:
    ids = " ".join(f"<{number}.long-message-id@example.com>" for number in range(10))
    message = make(
        "s", "b", "f@example.com", ["t@example.com"], headers={"References": ids}
    )
    data = message.as_bytes()
    assert_wire_safe(data)
    assert parse(data)["References"] == ids
    assert all(len(line) <= 78 for line in head_of(data).split("\r\n"))


# -- bodies and transfer encodings -------------------------------------------------


def body_part(data: bytes) -> tuple[str, bytes]:
    """(Content-Transfer-Encoding, raw body) of a single-part message."""
    head, _, body = data.partition(b"\r\n\r\n")
    (cte,) = re.findall(rb"Content-Transfer-Encoding: (\S+)", head)
    return cte.decode(), body


@pytest.mark.parametrize(
    ("body", "cte", "raw"),
    [
        ("plain ascii", "7bit", b"plain ascii\r\n"),
        ("", "7bit", b"\r\n"),
        ("ends with newline\n", "7bit", b"ends with newline\r\n"),
        (
            "bare\rcr and\nlf and\r\ncrlf",
            "7bit",
            b"bare\r\ncr and\r\nlf and\r\ncrlf\r\n",
        ),
        ("d\u00e9j\u00e0 vu", "8bit", "d\u00e9j\u00e0 vu\r\n".encode()),
        ("x" * 998, "7bit", b"x" * 998 + b"\r\n"),
        ("a\x00b", "quoted-printable", b"a=00b\r\n"),
        # Base64 carries the canonical (CRLF) form of the text.
        ("\x00" * 20, "base64", b64encode(b"\x00" * 20 + b"\r\n") + b"\r\n"),
    ],
)
def test_transfer_encoding_choice(body: str, cte: str, raw: bytes) -> None:
    data = make("s", body, "f@example.com", ["t@example.com"]).as_bytes()
    assert body_part(data) == (cte, raw)
    assert_wire_safe(data)


def test_line_over_998_octets_is_quoted_printable() -> None:
    body = "x" * 999 + "\nshort line"
    data = make("s", body, "f@example.com", ["t@example.com"]).as_bytes()
    cte, raw = body_part(data)
    assert cte == "quoted-printable"
    assert raw.split(b"\r\n")[:2] == [b"x" * 75 + b"=", b"x" * 75 + b"="]
    assert raw.endswith(b"x" * 24 + b"\r\nshort line\r\n")
    assert_wire_safe(data)
    assert parse(data).get_content() == body + "\n"


def test_long_non_ascii_line_is_base64_when_shorter() -> None:
    body = "\u00e9" * 600
    data = make("s", body, "f@example.com", ["t@example.com"]).as_bytes()
    cte, raw = body_part(data)
    assert cte == "base64"
    assert all(len(line) <= 76 for line in raw.split(b"\r\n"))
    assert_wire_safe(data)
    assert parse(data).get_content().replace("\r\n", "\n") == body + "\n"


def test_without_8bit_non_ascii_text_is_quoted_printable_or_base64() -> None:
    message = make("s", "d\u00e9j\u00e0 vu, mostly", "f@example.com", ["t@example.com"])
    rendered = message.render(allow_8bit=False)
    assert body_part(rendered.data) == (
        "quoted-printable",
        b"d=C3=A9j=C3=A0 vu, mostly\r\n",
    )
    short = make("s", "d\u00e9j\u00e0", "f@example.com", ["t@example.com"])
    # 14 octets of base64 beat 16 of quoted-printable.
    assert body_part(short.render(allow_8bit=False).data) == (
        "base64",
        b"ZMOpasOgDQo=\r\n",
    )
    assert rendered.eight_bit is False
    assert rendered.data.isascii()
    assert message.render().eight_bit is True


def test_body_bytes_are_decoded_with_the_message_encoding() -> None:
    message = make("s", "caf\u00e9".encode(), "f@example.com", ["t@example.com"])
    assert body_part(message.as_bytes()) == ("8bit", "caf\u00e9\r\n".encode())


def test_content_subtype_html() -> None:
    message = make("s", "<p>Hi</p>", "f@example.com", ["t@example.com"])
    message.content_subtype = "html"
    data = message.as_bytes()
    assert data.startswith(b'Content-Type: text/html; charset="utf-8"\r\n')
    assert parse(data).get_content() == "<p>Hi</p>\n"


def test_encoding_iso_8859_1() -> None:
    message = make("s", "B\u00f6dy \u00e9", "f@example.com", ["t@example.com"])
    message.encoding = "iso-8859-1"
    data = message.as_bytes()
    assert data.startswith(
        b'Content-Type: text/plain; charset="iso-8859-1"\r\n'
        b"Content-Transfer-Encoding: 8bit\r\n"
    )
    assert data.endswith(b"\r\n\r\nB\xf6dy \xe9\r\n")
    assert parse(data).get_content() == "B\u00f6dy \u00e9\n"


def test_default_charset_setting_applies() -> None:
    with asyncmail.settings.override(DEFAULT_CHARSET="iso-8859-1"):
        data = make("s", "\u00e9", "f@example.com", ["t@example.com"]).as_bytes()
    assert data.startswith(b'Content-Type: text/plain; charset="iso-8859-1"\r\n')
    assert data.endswith(b"\r\n\r\n\xe9\r\n")


def test_unencodable_body_gives_a_clear_value_error() -> None:
    message = make("s", "Price: 5 \u20ac", "f@example.com", ["t@example.com"])
    message.encoding = "iso-8859-1"
    with pytest.raises(ValueError, match="can't be encoded as 'iso-8859-1'") as info:
        message.as_bytes()
    assert "'\u20ac'" in str(info.value)
    assert "encoding to 'utf-8'" in str(info.value)
    assert not isinstance(info.value, BadHeaderError)


# -- attachments ----------------------------------------------------------------


def attachment_part(data: bytes, index: int = -1) -> bytes:
    """The raw text of one part of a multipart/mixed message."""
    parts = without_boundaries(data).split(b"--B0")
    return parts[1:-1][index]


def test_binary_attachment_exact_part() -> None:
    message = make("s", "b", "f@example.com", ["t@example.com"])
    message.attach("data.bin", b"\x00\x01\x02\xff", "application/octet-stream")
    assert attachment_part(message.as_bytes()) == (
        b"\r\nContent-Type: application/octet-stream\r\n"
        b"Content-Transfer-Encoding: base64\r\n"
        b'Content-Disposition: attachment; filename="data.bin"\r\n'
        b"\r\n"
        b"AAEC/w==\r\n"
        b"\r\n"
    )
    assert message.attachments == [
        EmailAttachment("data.bin", b"\x00\x01\x02\xff", "application/octet-stream")
    ]


def test_multipart_mixed_exact_bytes() -> None:
    message = make("Hi", "Body", "f@example.com", ["t@example.com"])
    message.attach("notes.txt", "Some notes")
    assert without_boundaries(message.as_bytes()) == (
        b"MIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed;\r\n boundary="B0"\r\n'
        b"Subject: Hi\r\n"
        b"From: f@example.com\r\n"
        b"To: t@example.com\r\n" + TAIL.encode() + b"\r\n"
        b"--B0\r\n"
        + PLAIN_HEAD.encode().replace(b"MIME-Version: 1.0\r\n", b"")
        + b"\r\n"
        b"Body\r\n"
        b"\r\n"
        b"--B0\r\n"
        + PLAIN_HEAD.encode().replace(b"MIME-Version: 1.0\r\n", b"")
        + (b'Content-Disposition: attachment; filename="notes.txt"\r\n')
        + b"\r\n"
        b"Some notes\r\n"
        b"\r\n"
        b"--B0--\r\n"
    )


def test_boundaries_are_random() -> None:
    message = make("s", "b", "f@example.com", ["t@example.com"])
    message.attach("a.txt", "x")
    first = re.findall(rb'boundary="([^"]+)"', message.as_bytes())
    second = re.findall(rb'boundary="([^"]+)"', message.as_bytes())
    assert first != second
    assert re.fullmatch(rb"===[0-9a-f]{32}===", first[0])


@pytest.mark.parametrize(
    ("filename", "mimetype"),
    [
        ("a.txt", "text/plain"),
        ("a.html", "text/html"),
        ("a.pdf", "application/pdf"),
        ("a.png", "image/png"),
        ("noextension", DEFAULT_ATTACHMENT_MIME_TYPE),
        ("a.unknown-extension", DEFAULT_ATTACHMENT_MIME_TYPE),
        (None, DEFAULT_ATTACHMENT_MIME_TYPE),
    ],
)
def test_mimetype_is_guessed_from_the_filename(
    filename: str | None, mimetype: str
) -> None:
    message = EmailMessage()
    content = "text" if mimetype.startswith("text/") else b"\x00data"
    message.attach(filename, content)
    assert message.attachments[0].mimetype == mimetype
    assert DEFAULT_ATTACHMENT_MIME_TYPE == "application/octet-stream"


def test_attachment_without_filename_has_a_bare_disposition() -> None:
    message = make("s", "b", "f@example.com", ["t@example.com"])
    message.attach(content=b"\x00", mimetype="application/octet-stream")
    assert b"Content-Disposition: attachment\r\n" in attachment_part(message.as_bytes())


def test_text_bytes_are_decoded_as_utf8() -> None:
    message = EmailMessage()
    message.attach("a.txt", "h\u00e9llo".encode())
    assert message.attachments == [EmailAttachment("a.txt", "h\u00e9llo", "text/plain")]


def test_text_bytes_that_are_not_utf8_become_octet_stream() -> None:
    message = make("s", "b", "f@example.com", ["t@example.com"])
    message.attach("latin.txt", b"caf\xe9")
    assert message.attachments == [
        EmailAttachment("latin.txt", b"caf\xe9", DEFAULT_ATTACHMENT_MIME_TYPE)
    ]
    part = attachment_part(message.as_bytes())
    assert b"Content-Type: application/octet-stream\r\n" in part
    assert b"Y2Fm6Q==" in part


def test_text_bytes_put_in_attachments_directly_are_handled_at_render() -> None:
    message = make("s", "b", "f@example.com", ["t@example.com"])
    message.attachments.append(EmailAttachment("raw.txt", b"\xff\xfe", "text/plain"))
    message.attachments.append(EmailAttachment("ok.txt", b"fine", "text/plain"))
    data = message.as_bytes()
    assert b"Content-Type: application/octet-stream\r\n" in attachment_part(data, 1)
    assert b'Content-Type: text/plain; charset="utf-8"\r\n' in attachment_part(data, 2)
    _, first, second = parse(data).iter_parts()
    assert first.get_content() == b"\xff\xfe"
    assert second.get_content() == "fine\n"


def test_non_ascii_filename_uses_rfc2231() -> None:
    message = make("s", "b", "f@example.com", ["t@example.com"])
    message.attach("r\u00e9sum\u00e9 \u65e5\u672c.pdf", b"%PDF", "application/pdf")
    data = message.as_bytes()
    assert (
        b"Content-Disposition: attachment;\r\n"
        b" filename*=utf-8''r%C3%A9sum%C3%A9%20%E6%97%A5%E6%9C%AC.pdf\r\n"
    ) in attachment_part(data)
    assert parse(data).get_payload()[1].get_filename() == (
        "r\u00e9sum\u00e9 \u65e5\u672c.pdf"
    )


def test_attach_errors() -> None:
    message = EmailMessage()
    with pytest.raises(ValueError, match="content must be provided"):
        message.attach("a.txt")
    part = email.message.MIMEPart()
    with pytest.raises(ValueError, match="must not be given when a MIMEPart"):
        message.attach(part, "content")
    with pytest.raises(ValueError, match="Invalid MIME type"):
        message.attach("a", b"x", "nonsense")
    with pytest.raises(ValueError, match="Invalid MIME parameter"):
        message.attach("a", b"x", "text/plain; charset")  # parameters: name=value
    with pytest.raises(TypeError, match="filenames must be str"):
        message.attach(b"a.txt", b"x", "text/plain")  # type: ignore[arg-type]
    message.attach("mp", b"x", "multipart/mixed")
    message.to = ["t@example.com"]
    with pytest.raises(ValueError, match="multipart/\\* attachments must be given"):
        message.as_bytes()


def test_attachments_argument_accepts_triples_named_tuples_and_mime_parts() -> None:
    part = email.message.MIMEPart()
    part.set_content(b"data", maintype="application", subtype="x-custom")
    message = EmailMessage(
        attachments=[
            ("a.txt", "text", "text/plain"),
            EmailAttachment("b.bin", b"\x00", "application/octet-stream"),
            part,
        ]
    )
    assert message.attachments == [
        EmailAttachment("a.txt", "text", "text/plain"),
        EmailAttachment("b.bin", b"\x00", "application/octet-stream"),
        part,
    ]


def test_attach_file(tmp_path: Path) -> None:
    path = tmp_path / "report.pdf"
    path.write_bytes(b"%PDF-1.4\x00\xff")
    text = tmp_path / "notes.txt"
    text.write_text("n\u00f6tes", encoding="utf-8")
    binary_text = tmp_path / "binary.txt"
    binary_text.write_bytes(b"\xff\x00")
    message = EmailMessage()
    message.attach_file(path)
    message.attach_file(str(text))
    message.attach_file(binary_text)
    message.attach_file(path, mimetype="application/x-forced")
    assert message.attachments == [
        EmailAttachment("report.pdf", b"%PDF-1.4\x00\xff", "application/pdf"),
        EmailAttachment("notes.txt", "n\u00f6tes", "text/plain"),
        EmailAttachment("binary.txt", b"\xff\x00", DEFAULT_ATTACHMENT_MIME_TYPE),
        EmailAttachment("report.pdf", b"%PDF-1.4\x00\xff", "application/x-forced"),
    ]


def test_attach_file_missing_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        EmailMessage().attach_file(tmp_path / "missing.pdf")


@pytest.mark.anyio
async def test_aattach_file_matches_attach_file(tmp_path: Path) -> None:
    path = tmp_path / "\u00e9t\u00e9.csv"
    path.write_bytes(b"a,b\r\n1,2\r\n")
    blocking = make("s", "b", "f@example.com", ["t@example.com"])
    blocking.attach_file(path)
    concurrent = make("s", "b", "f@example.com", ["t@example.com"])
    await concurrent.aattach_file(path)
    await concurrent.aattach_file(path, "application/x-csv")
    assert concurrent.attachments[0] == blocking.attachments[0]
    assert concurrent.attachments[0] == EmailAttachment(
        "\u00e9t\u00e9.csv", "a,b\r\n1,2\r\n", "text/csv"
    )
    assert concurrent.attachments[1].mimetype == "application/x-csv"
    parsed = parse(concurrent.as_bytes())
    first = parsed.get_payload()[1]
    assert first.get_filename() == "\u00e9t\u00e9.csv"
    # Text is sent in canonical form: its line breaks become CRLF on the wire.
    assert first.get_content() == "a,b\n1,2\n"


@pytest.mark.anyio
async def test_aattach_file_missing_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        await EmailMessage().aattach_file(tmp_path / "missing.bin")


def test_inline_part_with_content_id() -> None:
    image = email.message.MIMEPart()
    image.set_content(
        b"\x89PNG\r\n",
        maintype="image",
        subtype="png",
        disposition="inline",
        cid="<logo@example.com>",
    )
    message = make_alternatives("s", "", "f@example.com", ["t@example.com"])
    message.attach_alternative('<img src="cid:logo@example.com">', "text/html")
    message.attach(image)
    data = message.as_bytes()
    assert attachment_part(data) == (
        b"\r\nContent-Type: image/png\r\n"
        b"Content-Transfer-Encoding: base64\r\n"
        b"Content-Disposition: inline\r\n"
        b"Content-ID: <logo@example.com>\r\n"
        b"\r\n"
        b"iVBORw0K\r\n"
        b"\r\n"
    )
    inline = parse(data).get_payload()[1]
    assert inline["Content-ID"] == "<logo@example.com>"
    assert inline.get_content() == b"\x89PNG\r\n"
    assert_wire_safe(data)


def test_mime_part_with_unsafe_header_is_refused() -> None:
    # The modern policy hides a CR/LF stored with set_raw() from items(), but
    # the generator writes it.
    part = email.message.MIMEPart()
    part.set_content(b"x", maintype="application", subtype="octet-stream")
    part.set_raw("X-Evil", "a\r\nContent-Type: text/html")
    message = make("s", "b", "f@example.com", ["t@example.com"])
    with pytest.raises(BadHeaderError) as excinfo:
        message.attach(part)  # refused at once...
    assert excinfo.value.header == "X-Evil"
    message.attachments.append(part)
    with pytest.raises(BadHeaderError) as excinfo:
        message.as_bytes()  # ... and when rendered (if added another way)
    assert excinfo.value.header == "X-Evil"
    legacy = email.mime.base.MIMEBase("application", "octet-stream")
    legacy["X-Evil"] = "a\nBcc: victim@example.com"
    legacy.set_payload("eA==")
    message.attachments[0] = legacy
    with pytest.raises(BadHeaderError) as excinfo:
        message.as_bytes()
    assert excinfo.value.header == "X-Evil"


def test_folded_headers_of_a_parsed_part_are_refolded_with_the_same_value() -> None:
    part = email.message_from_bytes(
        b"Content-Type: text/plain\r\nX-Folded: first\r\n second\r\n\r\nhi\r\n",
        policy=email.policy.default,
    )
    message = make("s", "b", "f@example.com", ["t@example.com"])
    message.attach(part)
    data = message.as_bytes()
    # Foreign headers are re-folded like asyncmail's own (short: one line).
    assert b"\r\nX-Folded: first second\r\n" in data
    assert parse(data).get_payload()[1]["X-Folded"] == "first second"


# -- message/rfc822 ----------------------------------------------------------------


def test_attached_asyncmail_message() -> None:
    inner = make(
        "Inner \u00e9",
        "inner b\u00f6dy",
        "i@example.com",
        ["j@example.com"],
        bcc=["inner-secret@example.com"],
    )
    outer = make("s", "b", "f@example.com", ["t@example.com"])
    outer.attach("inner.eml", inner)
    assert outer.attachments[0].mimetype == "message/rfc822"
    data = outer.as_bytes()
    assert attachment_part(data) == (
        b"\r\nContent-Type: message/rfc822\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n"
        b'Content-Disposition: attachment; filename="inner.eml"\r\n'
        b"\r\n" + inner.as_bytes() + b"\r\n"
    )
    assert b"inner-secret" not in data
    attached = parse(data).get_payload()[1].get_content()
    assert attached["Subject"] == "Inner \u00e9"
    assert attached.get_content() == "inner b\u00f6dy\n"


def test_attached_message_is_7bit_when_the_server_lacks_8bitmime() -> None:
    inner = make("i", "inner b\u00f6dy", "i@example.com", ["j@example.com"])
    outer = make("s", "b", "f@example.com", ["t@example.com"])
    outer.attach(None, inner, "message/rfc822")
    rendered = outer.render(allow_8bit=False)
    assert rendered.eight_bit is False
    assert rendered.data.isascii()
    assert (
        b"Content-Transfer-Encoding: 7bit\r\nContent-Disposition: attachment\r\n"
        in rendered.data
    )
    attached = parse(rendered.data).get_payload()[1].get_content()
    assert attached.get_content() == "inner b\u00f6dy\n"


def test_attached_stdlib_message_and_bytes() -> None:
    stdlib = email.message_from_string("Subject: fwd\nFrom: a@example.com\n\nhello\n")
    outer = make("s", "b", "f@example.com", ["t@example.com"])
    outer.attach("fwd.eml", stdlib, "message/rfc822")
    outer.attach(
        None,
        b"Subject: raw\nFrom: r@example.com\n\nraw b\xc3\xb6dy\n",
        "message/rfc822",
    )
    data = outer.as_bytes()
    assert attachment_part(data, 1) == (
        b"\r\nContent-Type: message/rfc822\r\n"
        b"Content-Transfer-Encoding: 7bit\r\n"
        b'Content-Disposition: attachment; filename="fwd.eml"\r\n'
        b"\r\n"
        b"Subject: fwd\r\nFrom: a@example.com\r\n\r\nhello\r\n"
        b"\r\n"
    )
    assert attachment_part(data, 2) == (
        b"\r\nContent-Type: message/rfc822\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n"
        b"Content-Disposition: attachment\r\n"
        b"\r\n"
        b"Subject: raw\r\nFrom: r@example.com\r\n\r\nraw b\xc3\xb6dy\r\n"
        b"\r\n"
    )
    assert_wire_safe(data)
    raw = parse(data).get_payload()[2].get_content()
    assert raw["Subject"] == "raw"


def test_attached_message_with_unsafe_lines_is_refused() -> None:
    outer = make("s", "b", "f@example.com", ["t@example.com"])
    outer.attach(None, b"Subject: x\n\n" + b"y" * 1000 + b"\n", "message/rfc822")
    with pytest.raises(ValueError, match="longer than 998"):
        outer.as_bytes()
    outer.attachments[0] = EmailAttachment(
        None, b"Subject: x\n\nnul\x00\n", "message/rfc822"
    )
    with pytest.raises(ValueError, match="NUL"):
        outer.as_bytes()


# -- alternatives and MIME tree shapes ---------------------------------------------


TEXT = "text/plain"
HTML = "text/html"
FILE = "application/pdf"
MIXED = "multipart/mixed"
ALTERNATIVE = "multipart/alternative"


@pytest.mark.parametrize(
    ("body", "alternatives", "attachments", "expected"),
    [
        ("b", False, False, TEXT),
        ("", False, False, TEXT),
        ("b", True, False, (ALTERNATIVE, [TEXT, HTML])),
        ("", True, False, (ALTERNATIVE, [HTML])),
        ("b", False, True, (MIXED, [TEXT, FILE])),
        ("", False, True, (MIXED, [FILE])),
        ("b", True, True, (MIXED, [(ALTERNATIVE, [TEXT, HTML]), FILE])),
        ("", True, True, (MIXED, [(ALTERNATIVE, [HTML]), FILE])),
    ],
)
def test_mime_tree_shapes(
    body: str, alternatives: bool, attachments: bool, expected: Any
) -> None:
    message = make_alternatives("s", body, "f@example.com", ["t@example.com"])
    if alternatives:
        message.attach_alternative("<p>html</p>", "text/html")
    if attachments:
        message.attach("f.pdf", b"%PDF", "application/pdf")
    data = message.as_bytes()
    assert shape(parse(data)) == expected
    assert_wire_safe(data)
    # asyncmail puts MIME-Version on the top level only; Django 6 also
    # leaves a stray copy in sub-parts (and, without a body, only there).
    assert data.count(b"MIME-Version: 1.0\r\n") == 1
    assert header_names(data)[:3] in (
        ["MIME-Version", "Content-Type", "Subject"],
        ["Content-Type", "Content-Transfer-Encoding", "MIME-Version"],
    )


@pytest.mark.parametrize(
    ("body", "attachments", "expected"),
    [
        ("b", False, TEXT),
        ("", False, TEXT),
        ("b", True, (MIXED, [TEXT, FILE])),
        ("", True, (MIXED, [FILE])),
    ],
)
def test_email_message_tree_shapes(body: str, attachments: bool, expected: Any) -> None:
    message = make("s", body, "f@example.com", ["t@example.com"])
    if attachments:
        message.attach("f.pdf", b"%PDF", "application/pdf")
    assert shape(parse(message.as_bytes())) == expected


def test_alternatives_exact_bytes() -> None:
    message = make_alternatives("s", "plain", "f@example.com", ["t@example.com"])
    message.attach_alternative("<p>rich</p>", "text/html")
    part_head = PLAIN_HEAD.replace("MIME-Version: 1.0\r\n", "")
    assert without_boundaries(message.as_bytes()) == (
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/alternative;\r\n boundary="B0"\r\n'
        "Subject: s\r\nFrom: f@example.com\r\nTo: t@example.com\r\n" + TAIL + "\r\n"
        "--B0\r\n" + part_head + "\r\nplain\r\n\r\n"
        "--B0\r\n" + part_head.replace("text/plain", "text/html") + "\r\n"
        "<p>rich</p>\r\n\r\n"
        "--B0--\r\n"
    ).encode("ascii")


def test_alternatives_argument_and_named_tuples() -> None:
    message = EmailMultiAlternatives(
        alternatives=[("<p>a</p>", "text/html"), EmailAlternative(b"%PDF", FILE)]
    )
    assert message.alternatives == [
        EmailAlternative("<p>a</p>", "text/html"),
        EmailAlternative(b"%PDF", FILE),
    ]
    assert message.alternatives[0].content == "<p>a</p>"
    assert message.alternatives[0].mimetype == "text/html"


def test_attach_alternative_requires_content_and_mimetype() -> None:
    message = EmailMultiAlternatives()
    with pytest.raises(ValueError, match="Both content and mimetype"):
        message.attach_alternative(None, "text/html")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Both content and mimetype"):
        message.attach_alternative("<p>x</p>", None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Invalid MIME type"):
        message.attach_alternative("<p>x</p>", "html")


def test_non_text_and_bytes_alternatives() -> None:
    message = make_alternatives("s", "plain", "f@example.com", ["t@example.com"])
    message.attach_alternative("<p>b\u00f6th</p>".encode(), "text/html")
    message.attach_alternative(b"%PDF\x00", FILE)
    alternative = parse(message.as_bytes())
    _, html, pdf = alternative.iter_parts()
    assert html.get_content() == "<p>b\u00f6th</p>\n"
    assert html["Content-Transfer-Encoding"] == "8bit"
    assert pdf.get_content_type() == FILE
    assert pdf["Content-Transfer-Encoding"] == "base64"
    assert pdf.get_content() == b"%PDF\x00"


def test_body_contains() -> None:
    message = EmailMultiAlternatives("s", "I am content.")
    assert message.body_contains("I am content.")
    message.attach_alternative("<p>I am content.</p>", "text/html")
    message.attach_alternative(b"%PDF binary", FILE)
    assert message.body_contains("I am content.")
    assert not message.body_contains("<p>I am content.</p>")
    assert not message.body_contains("binary")
    message.attach_alternative(b"I am content. too", "text/x-bytes")
    assert message.body_contains("I am content.")
    message.attach_alternative("other text", "text/markdown")
    assert not message.body_contains("I am content.")


# -- message(), rendering flags, subclasses ------------------------------------------


def test_message_returns_a_stdlib_email_message() -> None:
    message = make(
        "Hi",
        "Body",
        "f@example.com",
        ["t@example.com"],
        bcc=["b@example.com"],
    )
    msg = message.message()
    assert type(msg) is email.message.EmailMessage
    assert msg.policy is email.policy.default
    assert msg["Subject"] == "Hi"
    assert msg["Message-ID"] == "<id@example.com>"
    assert msg.get_content() == "Body\n"
    assert "Bcc" not in msg
    assert msg.as_bytes() == message.as_bytes().replace(b"\r\n", b"\n")


def test_message_with_another_policy() -> None:
    message = make("Hi", "Body", "f@example.com", ["t@example.com"])
    msg = message.message(policy=email.policy.compat32)
    assert isinstance(msg, email.message.EmailMessage)
    assert msg.policy is email.policy.compat32
    assert msg["Subject"] == "Hi"


def test_render_reports_8bit_and_smtputf8() -> None:
    ascii_message = make("s", "b", "f@example.com", ["t@example.com"])
    rendered = ascii_message.render()
    assert (rendered.eight_bit, rendered.smtputf8) == (False, False)
    assert rendered.data == ascii_message.as_bytes()

    local = make("s", "b", "f@example.com", ["j\u00f6rg@example.com"])
    rendered = local.render()
    assert (rendered.eight_bit, rendered.smtputf8) == (False, True)
    assert "To: j\u00f6rg@example.com\r\n" in head_of(rendered.data)

    idna = make(
        "s", "b\u00f6dy", "f@example.com", [("Z\u00f6e", "z@b\u00fccher.example")]
    )
    rendered = idna.render()
    assert (rendered.eight_bit, rendered.smtputf8) == (True, False)
    assert "To: =?utf-8?q?Z=C3=B6e?= <z@xn--bcher-kva.example>\r\n" in head_of(
        rendered.data
    )


class SubclassedMessage(EmailMessage):
    """The Django pattern: tweak the stdlib message after super().message()."""

    def message(
        self, *, policy: email.policy.Policy = email.policy.default
    ) -> email.message.EmailMessage:
        msg = super().message(policy=policy)
        msg["X-Tweaked"] = "y\u00e9s"
        return msg


def test_subclass_overriding_message_is_rendered_through_it() -> None:
    message = SubclassedMessage(
        "s",
        "b",
        "f@example.com",
        ["t@example.com"],
        bcc=["b@example.com"],
        headers=FIXED,
    )
    rendered = message.render()
    assert rendered.data == (
        PLAIN_HEAD.encode()
        + b"Subject: s\r\nFrom: f@example.com\r\nTo: t@example.com\r\n"
        + TAIL.encode()
        + b"X-Tweaked: =?utf-8?q?y=C3=A9s?=\r\n\r\nb\r\n"
    )
    assert (rendered.eight_bit, rendered.smtputf8) == (False, False)
    assert rendered.message_id == "<id@example.com>"
    assert message.message()["X-Tweaked"] == "y\u00e9s"


def test_subclass_keeps_a_non_ascii_local_part_raw_for_smtputf8() -> None:
    message = SubclassedMessage(
        "s", "b", "f@example.com", ["j\u00f6rg@example.com"], headers=FIXED
    )
    rendered = message.render()
    assert "To: j\u00f6rg@example.com\r\n" in head_of(rendered.data)
    assert (rendered.eight_bit, rendered.smtputf8) == (False, True)


def test_subclass_adding_bcc_in_message_still_never_sends_it() -> None:
    class Leaky(EmailMessage):
        def message(
            self, *, policy: email.policy.Policy = email.policy.default
        ) -> email.message.EmailMessage:
            msg = super().message(policy=policy)
            msg["Bcc"] = "hidden@example.com"
            return msg

    data = Leaky("s", "b", "f@example.com", ["t@example.com"]).as_bytes()
    assert b"hidden" not in data
    assert_wire_safe(data)


# -- pickling ------------------------------------------------------------------------


def test_pickle_round_trip_drops_the_connection() -> None:
    message = make_alternatives(
        "S\u00fcbject",
        "body",
        ("N\u00e4me", "f@example.com"),
        ["t@example.com"],
        cc=[Address("C", "c", "example.com")],
        bcc=["b@example.com"],
        connection=LocmemBackend(),
    )
    message.attach_alternative("<p>body</p>", "text/html")
    message.attach("a.bin", b"\x00\x01", "application/octet-stream")
    message.content_subtype = "plain"
    restored = pickle.loads(pickle.dumps(message))  # noqa: S301
    assert type(restored) is EmailMultiAlternatives
    assert restored.connection is None
    assert message.connection is not None
    for name in (
        "subject",
        "body",
        "from_email",
        "to",
        "cc",
        "bcc",
        "reply_to",
        "attachments",
        "alternatives",
        "extra_headers",
    ):
        assert getattr(restored, name) == getattr(message, name)
    assert without_boundaries(restored.as_bytes()) == without_boundaries(
        message.as_bytes()
    )


# -- injection safety at the message level --------------------------------------------


SEPARATORS = [pytest.param(char, id=f"U+{ord(char):04X}") for char in LINE_SEPARATORS]


def injections(sep: str) -> dict[str, Callable[[], EmailMessage]]:
    evil = f"x{sep}Bcc: victim@example.com"

    def with_attachment(filename: str) -> EmailMessage:
        message = make("s", "b", "f@example.com", ["t@example.com"])
        message.attach(filename, b"x", "application/octet-stream")
        return message

    return {
        "Subject": lambda: make(evil, "b", "f@example.com", ["t@example.com"]),
        "From": lambda: make("s", "b", f"f@example.com{sep}", ["t@example.com"]),
        "To": lambda: make("s", "b", "f@example.com", [f"t@example.com{sep}x"]),
        "Cc": lambda: make("s", "b", "f@example.com", cc=[f"{sep}c@example.com"]),
        "Reply-To": lambda: make(
            "s", "b", "f@example.com", reply_to=[f"Name{sep} <r@example.com>"]
        ),
        "From ": lambda: make("s", "b", (evil, "f@example.com"), ["t@example.com"]),
        # email.headerregistry.Address itself refuses CR and LF only.
        "To ": lambda: make(
            "s",
            "b",
            "f@example.com",
            [
                Address(evil, "t", "example.com")
                if sep not in "\r\n"
                else (evil, "t@x.com")
            ],
        ),
        "X-Custom": lambda: make(
            "s", "b", "f@example.com", ["t@example.com"], headers={"X-Custom": evil}
        ),
        f"X-Name{sep}Bcc": lambda: make(
            "s",
            "b",
            "f@example.com",
            ["t@example.com"],
            headers={f"X-Name{sep}Bcc": "v"},
        ),
        "Message-ID": lambda: make(
            "s",
            "b",
            "f@example.com",
            ["t@example.com"],
            headers={"Message-ID": f"<a@example.com>{sep}Bcc: v@example.com"},
        ),
        "Subject ": lambda: make(
            "s", "b", "f@example.com", ["t@example.com"], headers={"Subject": evil}
        ),
        "To  ": lambda: make(
            "s", "b", "f@example.com", ["t@example.com"], headers={"To": evil}
        ),
        "Content-Disposition (filename)": lambda: with_attachment(f"a{sep}.txt"),
    }


@pytest.mark.parametrize("sep", SEPARATORS)
def test_every_line_separator_in_every_header_input_raises_naming_it(
    sep: str,
) -> None:
    for header, build in injections(sep).items():
        with pytest.raises(BadHeaderError) as excinfo:
            build().as_bytes()
        assert excinfo.value.header == header.strip(), header


def test_bcc_with_a_line_separator_never_reaches_the_bytes() -> None:
    message = make(
        "s", "b", "f@example.com", ["t@example.com"], bcc=["b@x.com\r\nX: y"]
    )
    assert b"X: y" not in message.as_bytes()
    with pytest.raises(InvalidAddressError):
        asyncmail.address.envelope_address(message.bcc[0])


@pytest.mark.parametrize("char", ["\x00", "\x01", "\x08", "\x1b", "\x1f", "\x7f"])
def test_other_controls_are_encoded_in_text_and_refused_in_addresses(
    char: str,
) -> None:
    message = make(
        f"a{char}b",
        "b",
        (f"N{char}", "f@example.com"),
        ["t@example.com"],
        headers={"X-Note": f"n{char}"},
    )
    message.attach(f"f{char}.bin", b"x", "application/octet-stream")
    data = message.as_bytes()
    assert char.encode() not in head_of(data).encode()
    assert char.encode() not in attachment_part(data).partition(b"\r\n\r\n")[0]
    parsed = parse(data)
    assert parsed["Subject"] == f"a{char}b"
    assert parsed["X-Note"] == f"n{char}"
    assert parsed.get_payload()[1]["Content-Disposition"].params["filename"] == (
        f"f{char}.bin"
    )
    for bad in (
        make("s", "b", f"f{char}@example.com", ["t@example.com"]),
        make("s", "b", "f@example.com", [f"t@exa{char}mple.com"]),
        make("s", "b", "f@example.com", [f'"t{char}"@example.com']),
    ):
        with pytest.raises(InvalidAddressError, match="control character"):
            bad.as_bytes()


def test_every_rendering_is_wire_safe() -> None:
    message = make_alternatives(
        "\u00e9" * 300 + " " + "word " * 200,
        "line\r\n.\r\nbare\rcr\nx" + "y" * 5000 + "\x00",
        ("\u00e9" * 200, "f@example.com"),
        [(f"Name {n}", f"t{n}@example.com") for n in range(40)],
        headers={"X-" + "N" * 74: "z" * 3000, "X-Short": "\u00e9" * 500},
    )
    message.attach_alternative("<p>" + "\u00e9" * 3000 + "</p>", "text/html")
    message.attach("\u00e9" * 200 + ".txt", "t" * 3000 + "\r" + "u" * 10)
    message.attach(None, make("i", "j" * 2000, "i@example.com"), "message/rfc822")
    for allow_8bit in (True, False):
        assert_wire_safe(message.render(allow_8bit=allow_8bit).data)
    assert message.render(allow_8bit=False).data.isascii()


# -- the package's layout ------------------------------------------------------------

PACKAGE = Path(asyncmail.message.__file__).parent


def _imports(path: Path) -> tuple[set[str], set[str]]:
    """(module-level, function-level) asyncmail modules *path* imports,
    without the ones under ``if TYPE_CHECKING:``."""
    import ast

    package = ["asyncmail", "message"]
    eager: set[str] = set()
    lazy: set[str] = set()

    def target(node: ast.ImportFrom) -> list[str]:
        parts = package[: len(package) - node.level + 1] if node.level else []
        base = ".".join([*parts, *([node.module] if node.module else [])])
        return [f"{base}.{alias.name}" for alias in node.names] + [base]

    def walk(body: list[ast.stmt], into: set[str]) -> None:
        for node in body:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                for sub in ast.walk(node):
                    if isinstance(sub, ast.ImportFrom):
                        lazy.update(target(sub))
                continue
            if isinstance(node, ast.ImportFrom):
                into.update(target(node))

    walk(ast.parse(path.read_text(encoding="utf-8")).body, eager)
    return eager, lazy


def test_no_part_of_the_message_package_imports_the_package_itself() -> None:
    # The model (__init__) imports its parts; a part importing the model
    # at import time would be a circle.
    parts = [p for p in PACKAGE.glob("*.py") if p.name != "__init__.py"]
    assert {p.stem for p in parts} == {
        "base",
        "fields",
        "foreign",
        "mime",
        "payload",
        "raw",
        "tree",
    }
    for path in parts:
        eager, lazy = _imports(path)
        assert "asyncmail.message" not in eager | lazy, path.name


def test_only_the_send_path_imports_lazily() -> None:
    # The one lazy import Django's message.send() API implies: a message
    # finds its backend (api), the blocking portal (sync) and the result
    # recorder when it is sent.
    lazy_modules: dict[str, set[str]] = {}
    for path in PACKAGE.glob("*.py"):
        _, lazy = _imports(path)
        found = {name for name in lazy if name.startswith("asyncmail.")}
        found = {n for n in found if n.count(".") == 1}  # the modules themselves
        if found:
            lazy_modules[path.stem] = found
    assert lazy_modules == {
        "base": {"asyncmail.api", "asyncmail.results", "asyncmail.sync"}
    }
