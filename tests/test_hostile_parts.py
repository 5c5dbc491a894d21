"""Foreign parts (issue #8, class 2): stdlib MIME parts and messages, raw
message bytes, and the message a message() override returns.

They are rendered again by asyncmail.message.foreign: header values re-validated
(control characters encoded in unstructured text, refused in structured
headers, Content-ID and filenames checked), lines re-folded to at most 998
octets whatever the policy (compat32, refold_source="none"), boundaries
replaced, and every Bcc / Resent-Bcc header removed at every depth (the
decision documented in docs/pages/security.md).
"""

from __future__ import annotations

import email
import email.message
import email.mime.base
import email.mime.multipart
import email.mime.text
import email.policy
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from asyncmail import BadHeaderError, EmailMessage, InvalidMessageError
from hostile import FROM, TO, assert_clean_message, max_line, send_batch
from smtpserver import SMTPServer

pytestmark = pytest.mark.anyio

CONTROLS = ["\x00", "\x01", "\x07", "\x08", "\x1b", "\x7f", "\x1b[2J\x1b]0;pwned\x07"]
SEPARATORS = ["\r\n", "\n", "\r", "\x0b", "\x0c", "\x85", "\u2028"]


@pytest.fixture
def server() -> Any:
    with SMTPServer() as running:
        yield running


def outer() -> EmailMessage:
    return EmailMessage("s", "b", FROM, [TO])


def parse(data: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(  # type: ignore[return-value]
        data.replace(b"\r\n", b"\n"), policy=email.policy.default
    )


def modern_part(**headers: str) -> email.message.MIMEPart:
    part = email.message.MIMEPart()
    part.set_content(b"data", maintype="application", subtype="octet-stream")
    for name, value in headers.items():
        part[name.replace("_", "-")] = value
    return part


def legacy_part(**headers: str) -> email.message.Message:
    part = email.mime.base.MIMEBase("application", "octet-stream")
    part.set_payload("ZGF0YQ==")
    part["Content-Transfer-Encoding"] = "base64"
    for name, value in headers.items():
        part[name.replace("_", "-")] = value
    return part


def raw_message(headers: str, body: str = "body\n") -> bytes:
    return (headers + "\n" + body).encode("utf-8", "surrogateescape")


# Every door a foreign part comes in by: each takes a stdlib part or message
# and returns an EmailMessage holding it.
def _attach(part: Any) -> EmailMessage:
    mail = outer()
    mail.attach(part)
    return mail


def _constructor(part: Any) -> EmailMessage:
    return EmailMessage("s", "b", FROM, [TO], attachments=[part])


def _appended(part: Any) -> EmailMessage:
    mail = outer()
    mail.attachments.append(part)  # skips attach(): checked when rendered
    return mail


def _rfc822(part: Any) -> EmailMessage:
    mail = outer()
    mail.attach("fwd.eml", part, "message/rfc822")
    return mail


def _rfc822_bytes(part: Any) -> EmailMessage:
    mail = outer()
    mail.attach(None, part.as_bytes(policy=email.policy.compat32), "message/rfc822")
    return mail


def _nested(part: Any) -> EmailMessage:
    container = email.mime.multipart.MIMEMultipart()
    container.attach(email.mime.text.MIMEText("hi"))
    container.attach(part)
    mail = outer()
    mail.attach(container)
    return mail


DOORS: list[Callable[[Any], EmailMessage]] = [
    _attach,
    _constructor,
    _appended,
    _rfc822,
    _rfc822_bytes,
    _nested,
]
DOOR_IDS = [door.__name__.strip("_") for door in DOORS]


def render(door: Callable[[Any], EmailMessage], part: Any) -> bytes:
    return door(part).as_bytes()


@pytest.mark.parametrize("door", DOORS, ids=DOOR_IDS)
@pytest.mark.parametrize("control", CONTROLS)
@pytest.mark.parametrize("make", [modern_part, legacy_part])
def test_controls_in_unstructured_values_are_encoded(
    door: Any, control: str, make: Any
) -> None:
    part = make(X_Note=f"a{control}b", Content_Description=f"d{control}")
    data = render(door, part)
    assert_clean_message(data)
    found = [p for p in parse(data).walk() if p["X-Note"] is not None]
    assert [str(p["X-Note"]) for p in found] == [f"a{control}b"]


@pytest.mark.parametrize("door", DOORS, ids=DOOR_IDS)
@pytest.mark.parametrize("control", CONTROLS)
def test_controls_in_content_id_are_refused(door: Any, control: str) -> None:
    part = legacy_part(Content_ID=f"<a{control}@example.com>")
    with pytest.raises(BadHeaderError, match="Content-ID"):
        render(door, part)


@pytest.mark.parametrize("door", DOORS, ids=DOOR_IDS)
@pytest.mark.parametrize("control", CONTROLS)
def test_controls_in_filenames_never_reach_the_wire_raw(
    door: Any, control: str
) -> None:
    part = legacy_part()
    part.add_header("Content-Disposition", "attachment", filename=f"f{control}.bin")
    data = render(door, part)
    assert_clean_message(data)
    names = [p.get_filename() for p in parse(data).walk() if p.get_filename()]
    assert names[-1] == f"f{control}.bin"


@pytest.mark.parametrize("door", DOORS[:4], ids=DOOR_IDS[:4])
@pytest.mark.parametrize("separator", SEPARATORS)
def test_line_separators_in_foreign_values_are_refused(
    door: Any, separator: str
) -> None:
    part = email.message.MIMEPart()
    part.set_content(b"x", maintype="application", subtype="octet-stream")
    part.set_raw("X-Evil", f"a{separator}Bcc: victim@example.com")
    with pytest.raises(BadHeaderError) as info:
        render(door, part)
    assert info.value.header == "X-Evil"


@pytest.mark.parametrize("door", DOORS, ids=DOOR_IDS)
@pytest.mark.parametrize(
    "value",
    ["a" * 3000, " ".join(["w" * 50] * 60), "=?utf-8?q?" + "x" * 2000 + "?="],
)
def test_overlong_foreign_header_lines_are_refolded(door: Any, value: str) -> None:
    legacy = email.message.Message()  # compat32: never refolds
    legacy["X-Long"] = value
    legacy["Subject"] = value
    legacy.set_payload("body\n")
    data = render(door, legacy)
    assert max_line(data) <= 998
    assert_clean_message(data)


def test_refold_source_none_and_long_raw_lines() -> None:
    policy = email.policy.default.clone(refold_source="none")
    raw = b"Subject: " + b"s" * 3000 + b"\nX-Words: " + b"word " * 700 + b"\n\nbody\n"
    parsed = email.message_from_bytes(raw, policy=policy)
    mail = outer()
    mail.attach("fwd.eml", parsed, "message/rfc822")
    mail.attach(None, raw, "message/rfc822")
    data = mail.as_bytes()
    assert max_line(data) <= 998
    inner = [p for p in parse(data).walk() if p.get_content_type() == "message/rfc822"]
    for part in inner:
        attached = part.get_payload(0)
        assert str(attached["Subject"]) == "s" * 3000
        assert str(attached["X-Words"]).split() == ["word"] * 700


def test_structured_headers_that_cannot_be_carried_are_refused() -> None:
    for header in ("From", "To", "Date", "Received", "DKIM-Signature"):
        raw = f"{header}: a\x1b@example.com\nSubject: x\n\nbody\n".encode()
        mail = outer()
        mail.attach(None, raw, "message/rfc822")
        with pytest.raises(BadHeaderError) as info:
            mail.as_bytes()
        assert info.value.header == header
        unbreakable = f"{header}: {'a' * 1200}@example.com\n\nbody\n".encode()
        mail = outer()
        mail.attach(None, unbreakable, "message/rfc822")
        with pytest.raises(BadHeaderError, match="too long to fold"):
            mail.as_bytes()


BCC_HEADERS = ["Bcc", "BCC", "bcc", "Resent-Bcc", "RESENT-BCC"]


@pytest.mark.parametrize("door", DOORS, ids=DOOR_IDS)
@pytest.mark.parametrize("name", BCC_HEADERS)
def test_bcc_headers_in_foreign_content_are_removed(door: Any, name: str) -> None:
    inner = email.message.Message()
    inner["Subject"] = "forwarded"
    inner[name] = "secret-bcc@example.com"
    inner.set_payload("body\n")
    data = render(door, inner)
    assert b"secret-bcc" not in data
    assert_clean_message(data)


def test_bcc_is_removed_at_every_depth_of_raw_bytes() -> None:
    deepest = b"Bcc: deep-secret@example.com\nSubject: deepest\n\nbody\n"
    middle = (
        b"Subject: middle\nBcc: middle-secret@example.com\n"
        b'Content-Type: multipart/mixed; boundary="b1"\n\n'
        b"--b1\nContent-Type: message/rfc822\n\n" + deepest + b"\n--b1--\n"
    )
    mail = outer()
    mail.attach("m.eml", middle, "message/rfc822")
    data = mail.as_bytes()
    assert b"secret" not in data
    subjects = [str(p["Subject"]) for p in parse(data).walk() if p["Subject"]]
    assert subjects == ["s", "middle", "deepest"]


def test_foreign_boundaries_are_replaced() -> None:
    raw = (
        b"Subject: x\n"
        b'Content-Type: multipart/mixed; boundary="evil"\n\n'
        b"--evil\nContent-Type: text/plain\n\none\n--evil\n"
        b"Content-Type: text/plain\n\ntwo\n--evil--\n"
    )
    mail = outer()
    mail.attach(None, raw, "message/rfc822")
    data = mail.as_bytes()
    assert b"evil" not in data
    texts = [
        p.get_content()
        for p in parse(data).walk()
        if p.get_content_type() == "text/plain"
    ]
    assert texts[1:] == ["one\n", "two\n"]


def test_raw_eight_bit_bodies_are_kept() -> None:
    mail = outer()
    mail.attach(None, b"Subject: raw\n\nb\xc3\xb6dy\n", "message/rfc822")
    assert b"\r\n\r\nb\xc3\xb6dy\r\n" in mail.as_bytes()


def test_a_message_override_is_rendered_like_foreign_content() -> None:
    class Custom(EmailMessage):
        def message(self, *, policy: Any = email.policy.default) -> Any:
            msg = super().message(policy=policy)
            msg["X-Tracking"] = "t\x1bx"
            msg["Bcc"] = "override-secret@example.com"
            return msg

    data = Custom("s", "b", FROM, [TO]).as_bytes()
    assert b"override-secret" not in data
    assert_clean_message(data)
    assert str(parse(data)["X-Tracking"]) == "t\x1bx"


async def test_end_to_end_nothing_hostile_on_the_wire(server: SMTPServer) -> None:
    batch: list[EmailMessage] = []
    refused_early = 0
    for door in DOORS:
        for control in CONTROLS:
            batch.append(door(legacy_part(X_Note=f"a{control}b")))
            try:
                batch.append(door(legacy_part(Content_ID=f"<a{control}@x>")))
            except BadHeaderError:
                refused_early += 1  # attach() checks a MIMEPart at once
        legacy = email.message.Message()
        legacy["X-Long"] = "a" * 3000
        legacy["Bcc"] = "secret-bcc@example.com"
        legacy.set_payload("body\n")
        batch.append(door(legacy))
    failed = await send_batch(server, batch)
    # The Content-IDs: refused by attach() or when rendered for sending.
    assert len(failed) + refused_early == len(DOORS) * len(CONTROLS)
    assert refused_early == 3 * len(CONTROLS)  # attach(): direct, constructor, nested
    assert all(isinstance(m.result.error, BadHeaderError) for m in failed)  # type: ignore[union-attr]
    assert b"secret-bcc" not in bytes(server.recorder.wire)


@hsettings(max_examples=300, deadline=None)
@given(
    value=st.binary(max_size=400),
    name=st.sampled_from(
        [
            "X-Any",
            "Subject",
            "From",
            "Content-ID",
            "Content-Type",
            "Content-Disposition",
        ]
    ),
)
def test_any_raw_header_is_refused_or_carried_safely(value: bytes, name: str) -> None:
    raw = (
        b"Subject: x\n"
        + name.encode()
        + b": "
        + value
        + b"\nBcc: hidden@example.com\n\nbody\n"
    )
    mail = outer()
    try:
        mail.attach(None, raw, "message/rfc822")
        data = mail.as_bytes()
    except (BadHeaderError, InvalidMessageError):
        return
    assert_clean_message(data)
    marker = b"Content-Disposition: attachment\r\n\r\n"
    inner = data.split(marker, 1)[1].split(b"\r\n\r\n", 1)[0] + b"\r\n"
    assert_clean_message(inner)
    assert b"hidden@example.com" not in inner


def test_too_many_parts_are_refused_before_the_work() -> None:
    raw = b'Content-Type: multipart/mixed; boundary="b"\n\n' + b"--b\n\nx\n" * 3000
    mail = outer()
    mail.attach(None, raw + b"--b--\n", "message/rfc822")
    with pytest.raises(InvalidMessageError, match="more than 500 parts"):
        mail.as_bytes()
    container = email.mime.multipart.MIMEMultipart()
    for _ in range(501):
        container.attach(email.mime.text.MIMEText("x"))
    with pytest.raises(InvalidMessageError, match="more than 500 parts"):
        outer().attach(container)


def test_too_many_header_lines_are_refused_before_parsing() -> None:
    mail = outer()
    mail.attach(None, b"X-A: a\n" * 3000 + b"\nbody\n", "message/rfc822")
    with pytest.raises(InvalidMessageError, match="header lines"):
        mail.as_bytes()
