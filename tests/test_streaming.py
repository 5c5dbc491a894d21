"""Large attachments, raw messages, 8BITMIME and SIZE, on the wire.

Large binary attachments (over STREAM_THRESHOLD) are encoded while they are
sent, from bytes or straight from a file; what the server receives must be
the same message as ``as_bytes()`` and must decode to the source. Raw
messages go out exactly as given. A server's missing 8BITMIME and its SIZE
limit change what is sent, or refuse before a byte of the message is written.
"""

from __future__ import annotations

import email.policy
import random
import re
from collections.abc import Iterator
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import anyio
import pytest

from asyncmail import (
    BadHeaderError,
    EmailAttachment,
    EmailMessage,
    MailError,
    MessageRefusedError,
    MessageStatus,
    Outcome,
    RawMessage,
    SMTPNotSupportedError,
)
from asyncmail.backends.smtp import EmailBackend
from asyncmail.message import STREAM_THRESHOLD, Base64Payload
from scriptserver import DEFAULT_EXTENSIONS, ScriptServer, reply
from smtpserver import SMTPServer
from wire import dot_stuff

pytestmark = pytest.mark.anyio

FROM = "sender@example.com"
PINNED = {"Date": "Tue, 02 Jan 2024 03:04:05 +0000", "Message-ID": "<pin@example.com>"}
BIG = random.Random(20240102).randbytes(3 * 1024 * 1024)
HARD_LIMIT = 998


def backend_for(port: int, **options: Any) -> EmailBackend:
    options.setdefault("timeout", 10)
    options.setdefault("retries", 0)
    options.setdefault("local_hostname", "client.example")
    return EmailBackend(host="127.0.0.1", port=port, **options)


def pinned(subject: str = "Hello", body: str = "Body\n", **kwargs: Any) -> EmailMessage:
    kwargs.setdefault("to", ["to@example.com"])
    headers = {**PINNED, **kwargs.pop("headers", {})}
    return EmailMessage(subject, body, FROM, headers=headers, **kwargs)


def parse(data: bytes) -> email.message.EmailMessage:
    """Parsed as the stdlib expects it (line endings "\n")."""
    parsed = BytesParser(policy=email.policy.default).parsebytes(
        data.replace(b"\r\n", b"\n")
    )
    assert isinstance(parsed, email.message.EmailMessage)
    return parsed


def only_crlf(data: bytes) -> bool:
    return re.search(rb"\r(?!\n)|(?<!\r)\n", data) is None


def longest_line(data: bytes) -> int:
    return max(len(line) for line in data.split(b"\r\n"))


def same_boundaries(rendered: bytes, received: bytes) -> bytes:
    """*rendered* with the MIME boundaries of *received* (they are random)."""
    pattern = re.compile(rb'boundary="([^"]+)"')
    ours, theirs = pattern.findall(rendered), pattern.findall(received)
    assert len(ours) == len(theirs) > 0
    for old, new in zip(ours, theirs, strict=True):
        rendered = rendered.replace(old, new)
    return rendered


def mail_command(server: ScriptServer) -> str:
    (command,) = [c for c in server.commands if c.startswith("MAIL FROM")]
    return command


@pytest.fixture
def server() -> Iterator[SMTPServer]:
    with SMTPServer() as running:
        yield running


@pytest.fixture
def big_file(tmp_path: Path) -> Path:
    path = tmp_path / "big.bin"
    path.write_bytes(BIG)
    return path


async def attach_big(message: EmailMessage, source: str, path: Path) -> None:
    if source == "bytes":
        message.attach("big.bin", BIG, "application/octet-stream")
    elif source == "attach_file":
        message.attach_file(path)
    else:
        await message.aattach_file(path)


SOURCES = pytest.mark.parametrize("source", ["bytes", "attach_file", "aattach_file"])


# -- large attachments ---------------------------------------------------------


@SOURCES
async def test_large_attachment_reaches_the_server_intact(
    server: SMTPServer, big_file: Path, source: str
) -> None:
    mail = pinned(body="See the attachment.\n")
    await attach_big(mail, source, big_file)
    (attachment,) = mail.attachments
    assert isinstance(attachment, EmailAttachment)
    if source == "bytes":
        assert attachment.content is BIG
    else:
        # By reference, not read: the file and its size at attach time.
        assert isinstance(attachment.content, Base64Payload)
        assert attachment.content.source == big_file
        assert attachment.content.size == len(BIG)
    assert attachment.mimetype == "application/octet-stream"
    assert mail.render().streamed

    assert await backend_for(server.port).send_messages([mail]) == 1

    (received,) = server.messages
    parsed = parse(received.data)
    (part,) = parsed.iter_attachments()
    assert part.get_filename() == "big.bin"
    assert part.get_content_type() == "application/octet-stream"
    assert part.get_content() == BIG
    body = parsed.get_body(("plain",))
    assert body is not None
    assert body.get_content() == "See the attachment.\n"
    assert only_crlf(received.data)
    assert longest_line(received.data) <= HARD_LIMIT
    (raw,) = server.recorder.raw
    assert only_crlf(bytes(raw))
    assert longest_line(bytes(raw)) <= HARD_LIMIT
    assert mail.result is not None
    assert mail.result.status is MessageStatus.SENT


async def test_small_and_text_files_are_read_when_attached(tmp_path: Path) -> None:
    small = tmp_path / "small.bin"
    small.write_bytes(BIG[:STREAM_THRESHOLD])  # not over the threshold
    text = tmp_path / "notes.txt"
    text.write_text("a line of notes\n" * (STREAM_THRESHOLD // 8))  # 2 MiB
    mail = pinned()
    mail.attach_file(small)
    await mail.aattach_file(text)

    first, second = mail.attachments
    assert isinstance(first, EmailAttachment)
    assert isinstance(second, EmailAttachment)
    assert first.content == BIG[:STREAM_THRESHOLD]
    assert isinstance(first.content, bytes)
    assert second.mimetype == "text/plain"
    assert not isinstance(second.content, Path)  # read now (decoded text)
    assert second.content == text.read_text()
    assert not mail.render().streamed


@SOURCES
async def test_sent_bytes_are_as_bytes_and_message(
    server: SMTPServer, big_file: Path, source: str
) -> None:
    mail = pinned(body="Grüße, see the attachment.\n")
    await attach_big(mail, source, big_file)

    assert await backend_for(server.port).send_messages([mail]) == 1

    (received,) = server.messages
    assert received.data == same_boundaries(mail.as_bytes(), received.data)
    stdlib = mail.message().as_bytes(policy=email.policy.SMTP)
    assert received.data == same_boundaries(stdlib, received.data)
    (raw,) = server.recorder.raw
    after_data = bytes(raw).split(b"DATA\r\n", 1)[1].removesuffix(b"QUIT\r\n")
    assert after_data == dot_stuff(received.data)


@pytest.mark.parametrize("change", ["grows", "shrinks"])
async def test_file_changing_while_the_message_is_sent(
    big_file: Path, change: str
) -> None:
    def change_the_file() -> None:  # at DATA: after the message was prepared
        if change == "grows":
            with big_file.open("ab") as file:
                file.write(b"more")
        else:
            big_file.write_bytes(BIG[:1000])

    with ScriptServer() as server:
        server.on("DATA", reply("354 Go ahead", hook=change_the_file))
        backend = backend_for(server.port)
        mail = pinned()
        mail.attach_file(big_file)
        after = pinned("after")

        async with backend:
            with pytest.raises(MailError) as info:
                await backend.send_messages([mail])
            assert await backend.send_messages([after]) == 1

    assert info.value.sent == 0
    assert "attachment" in str(info.value)
    assert "changed size" in str(info.value)
    assert mail.result is not None
    assert mail.result.status is MessageStatus.FAILED
    (result,) = mail.result.recipients.values()
    assert result.outcome is Outcome.PERMANENT
    assert "attachment" in result.text
    # Nothing was accepted but the second message, and that over a new
    # session: the first was abandoned in the middle of the data.
    assert [item.data for item in server.accepted] == [dot_stuff(after.as_bytes())[:-3]]
    first, second = server.sessions
    assert first.verbs()[-1] == "DATA"
    assert first.data == []  # never finished
    assert second.verbs().count("MAIL") == 1


async def test_file_changed_between_attach_and_send_is_refused(
    server: SMTPServer, big_file: Path
) -> None:
    """Changed after attach_file() but before the send: attach_file recorded
    the size, so the message fails (PERMANENT, saying why) as soon as the
    difference shows, the server never accepts it, and it is not reported
    sent."""
    changed = BIG[:2_000_000] + b"tail"
    mail = pinned()
    mail.attach_file(big_file)
    await anyio.Path(big_file).write_bytes(changed)

    count = await backend_for(server.port).send_messages([mail], fail_silently=True)

    assert count == 0
    assert mail.result is not None
    (result,) = mail.result.recipients.values()
    assert result.outcome is Outcome.PERMANENT
    assert "changed size" in result.text
    assert server.messages == []


def test_base64_payload_blocks_are_the_whole_encoding(big_file: Path) -> None:
    import base64

    for source in (BIG, big_file, b"", BIG[: Base64Payload.BLOCK * 2]):
        payload = Base64Payload(source)
        data = b"".join(payload.blocks())
        raw = source.read_bytes() if isinstance(source, Path) else source
        assert data.replace(b"\r\n", b"") == base64.b64encode(raw)
        assert len(data) == payload.encoded_size
        assert longest_line(data) <= 76
        assert data.endswith(b"\r\n")


# -- 8BITMIME ------------------------------------------------------------------

TEXT = "Grüße aus Köln, ça va?\n"


@pytest.mark.parametrize("pinned_id", [True, False], ids=["pinned", "generated"])
async def test_without_8bitmime_the_body_is_re_encoded(pinned_id: bool) -> None:
    extensions = tuple(e for e in DEFAULT_EXTENSIONS if e != "8BITMIME")
    with ScriptServer(extensions) as server:
        mail = (
            pinned(body=TEXT)
            if pinned_id
            else EmailMessage("Hello", TEXT, FROM, ["to@example.com"])
        )
        assert mail.render().eight_bit

        assert await backend_for(server.port).send_messages([mail]) == 1

    assert "BODY=8BITMIME" not in mail_command(server)
    (accepted,) = server.accepted
    assert accepted.data.isascii()
    parsed = parse(accepted.data)
    assert parsed.get_content().replace("\r\n", "\n") == TEXT
    assert parsed["Content-Transfer-Encoding"] in ("quoted-printable", "base64")
    # The result names the Message-ID the server actually got.
    assert mail.result is not None
    assert mail.result.message_id == parsed["Message-ID"]


async def test_with_8bitmime_the_body_goes_as_8bit() -> None:
    with ScriptServer() as server:
        mail = pinned(body=TEXT)

        assert await backend_for(server.port).send_messages([mail]) == 1

    assert mail_command(server).endswith(" BODY=8BITMIME")
    (accepted,) = server.accepted
    assert TEXT.replace("\n", "\r\n").encode() in accepted.data
    assert accepted.data == dot_stuff(mail.as_bytes())[:-3]


# -- RawMessage ----------------------------------------------------------------

RAW = (
    b"From: Someone Else <else@example.com>\r\n"
    b"To: list@example.com\r\n"
    b"Subject: Raw\r\n"
    b"Message-ID: <raw@example.com>\r\n"
    b"DKIM-Signature: v=1; a=rsa-sha256; d=example.com; s=sel;\r\n"
    b"  h=from:to:subject; bh=abc=; b=def=\r\n"
    b"\r\n"
    b"Line one.\r\n"
    b".A line starting with a dot.\r\n"
    b"\r\n"
    b"Last line.\r\n"
)


async def test_raw_message_is_sent_exactly_as_given(server: SMTPServer) -> None:
    mail = RawMessage(
        RAW, "bounce@example.com", ["a@example.com"], bcc=["hidden@example.com"]
    )

    assert await backend_for(server.port).send_messages([mail]) == 1

    (received,) = server.messages
    assert received.data == RAW
    assert received.mail_from == "bounce@example.com"
    assert received.rcpt_tos == ["a@example.com", "hidden@example.com"]
    assert b"hidden" not in received.data
    assert b"else@example.com" not in server.recorder.wire.split(b"DATA\r\n")[0]
    assert mail.result is not None
    assert mail.result.message_id == "<raw@example.com>"


@pytest.mark.parametrize("ending", [b"\n", b"\r"], ids=["LF", "CR"])
async def test_raw_message_line_endings_become_crlf(
    server: SMTPServer, ending: bytes
) -> None:
    mail = RawMessage(RAW.replace(b"\r\n", ending), FROM, ["a@example.com"])

    assert await backend_for(server.port).send_messages([mail]) == 1

    (received,) = server.messages
    assert received.data == RAW
    assert only_crlf(server.recorder.wire)


@pytest.mark.parametrize("header", [b"Bcc: secret@example.com", b"bcc :x@example.com"])
async def test_raw_message_with_a_bcc_header_is_refused(
    server: SMTPServer, header: bytes
) -> None:
    data = RAW.replace(b"Subject: Raw\r\n", b"Subject: Raw\r\n" + header + b"\r\n")
    mail = RawMessage(data, FROM, ["a@example.com"])
    with pytest.raises(BadHeaderError):
        mail.render()

    with pytest.raises(BadHeaderError) as info:
        await backend_for(server.port).send_messages([mail])

    assert info.value.sent == 0
    assert mail.result is not None
    assert mail.result.status is MessageStatus.FAILED
    assert server.messages == []
    assert b"MAIL FROM" not in server.recorder.wire
    assert b"secret" not in server.recorder.wire


async def test_raw_8bit_message_to_a_server_without_8bitmime() -> None:
    data = RAW.replace(b"Line one.", "Grüße.".encode())
    extensions = tuple(e for e in DEFAULT_EXTENSIONS if e != "8BITMIME")
    with ScriptServer(extensions) as server:
        backend = backend_for(server.port)
        raw = RawMessage(data, FROM, ["a@example.com"])
        fine = RawMessage(RAW, FROM, ["b@example.com"])

        async with backend:
            with pytest.raises(SMTPNotSupportedError, match="8BITMIME") as info:
                await backend.send_messages([raw])
            assert await backend.send_messages([fine]) == 1

    assert info.value.sent == 0
    assert raw.result is not None
    (result,) = raw.result.recipients.values()
    assert result.outcome is Outcome.PERMANENT
    assert "8BITMIME" in result.text
    # Refused before MAIL; the connection carried the next message.
    (session,) = server.sessions
    assert session.verbs().count("MAIL") == 1
    assert [item.rcpt_tos for item in server.accepted] == [("b@example.com",)]


async def test_raw_8bit_message_to_a_server_with_8bitmime(server: SMTPServer) -> None:
    data = RAW.replace(b"Line one.", "Grüße.".encode())

    assert await backend_for(server.port).send_messages(
        [RawMessage(data, FROM, ["a@example.com"])]
    )

    (received,) = server.messages
    assert received.data == data
    assert "BODY=8BITMIME" in received.mail_options


# -- SIZE ----------------------------------------------------------------------


@pytest.mark.parametrize("attachment", [False, True], ids=["plain", "streamed"])
async def test_mail_from_announces_the_size(attachment: bool, big_file: Path) -> None:
    with ScriptServer() as server:
        mail = pinned(body=".leading dot\n" * 10)
        if attachment:
            mail.attach_file(big_file)

        assert await backend_for(server.port).send_messages([mail]) == 1

    announced = re.search(r" SIZE=(\d+)", mail_command(server))
    assert announced is not None
    (accepted,) = server.accepted
    # The DATA as on the wire (dot-stuffed) plus the end-of-data line.
    assert int(announced.group(1)) == len(accepted.data) + len(b".\r\n")
    sent = dot_stuff(mail.as_bytes())[:-3]
    assert accepted.data == (
        same_boundaries(sent, accepted.data) if attachment else sent
    )


async def test_no_size_parameter_when_not_offered() -> None:
    extensions = tuple(e for e in DEFAULT_EXTENSIONS if not e.startswith("SIZE"))
    with ScriptServer(extensions) as server:
        assert await backend_for(server.port).send_messages([pinned()]) == 1

    assert "SIZE=" not in mail_command(server)


@pytest.mark.parametrize("attachment", [False, True], ids=["plain", "streamed"])
async def test_message_over_the_size_limit(attachment: bool, big_file: Path) -> None:
    limit = 2_000_000 if attachment else 2000
    extensions = (*(e for e in DEFAULT_EXTENSIONS if not e.startswith("SIZE")),)
    with ScriptServer((*extensions, f"SIZE {limit}")) as server:
        backend = backend_for(server.port)
        big = pinned("big", body="x" * 3000 + "\n")
        if attachment:
            big.attach_file(big_file)
        small = pinned("small")

        async with backend:
            with pytest.raises(MessageRefusedError, match="size limit") as info:
                await backend.send_messages([big])
            assert await backend.send_messages([small]) == 1

    assert info.value.sent == 0
    assert big.result is not None
    (result,) = big.result.recipients.values()
    assert result.outcome is Outcome.PERMANENT
    assert str(limit) in result.text
    (session,) = server.sessions  # the connection stayed usable
    assert session.verbs().count("MAIL") == 1  # refused before MAIL
    assert [item.data for item in server.accepted] == [dot_stuff(small.as_bytes())[:-3]]


class OwnMessage(EmailMessage):
    """A subclass that overrides message(), as Django code often does."""

    def message(
        self, *, policy: email.policy.Policy = email.policy.default
    ) -> email.message.EmailMessage:
        msg = super().message(policy=policy)
        msg["X-Own"] = "yes"
        return msg


async def test_8bit_message_of_a_subclass_to_a_server_without_8bitmime() -> None:
    extensions = tuple(e for e in DEFAULT_EXTENSIONS if e != "8BITMIME")
    with ScriptServer(extensions) as server:
        backend = backend_for(server.port)
        mail = OwnMessage("Hello", TEXT, FROM, ["a@example.com"], headers=PINNED)
        fine = OwnMessage("Hello", "plain\n", FROM, ["b@example.com"], headers=PINNED)
        assert mail.render(allow_8bit=False).eight_bit  # it cannot re-encode

        async with backend:
            with pytest.raises(SMTPNotSupportedError, match="8BITMIME"):
                await backend.send_messages([mail])
            assert await backend.send_messages([fine]) == 1

    assert all(item.data.isascii() for item in server.accepted)
    assert [item.rcpt_tos for item in server.accepted] == [("b@example.com",)]
    assert b"X-Own: yes\r\n" in server.accepted[0].data
    assert len(server.sessions) == 1
