"""Special files (issue #8, class 8): only regular files are attached or
read. A FIFO (which would block forever), /dev/zero (endless), devices,
directories and sockets are refused with a clear error, without blocking,
through every door: attach_file, aattach_file, a Path as attach() content,
attach_inline_file. A file that grows after it was attached is not read past
its recorded size: the send of that message fails and nothing is sent."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import pytest

from asyncmail import EmailMessage, InvalidMessageError
from asyncmail.message import STREAM_THRESHOLD, Base64Payload, EmailAttachment
from hostile import FROM, TO, send_batch
from smtpserver import SMTPServer

pytestmark = pytest.mark.anyio


@pytest.fixture
def server() -> Any:
    with SMTPServer() as running:
        yield running


@pytest.fixture(params=["fifo", "dev-zero", "dev-null", "directory", "socket", "link"])
def special(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    kind = request.param
    listener = socket.socket(socket.AF_UNIX)
    if kind == "fifo":
        path = tmp_path / "pipe.txt"
        os.mkfifo(path)
    elif kind == "dev-zero":
        path = Path("/dev/zero")
    elif kind == "dev-null":
        path = Path("/dev/null")
    elif kind == "directory":
        path = tmp_path / "folder.bin"
        path.mkdir()
    elif kind == "socket":
        path = tmp_path / "s.sock"
        listener.bind(str(path))
    else:  # a symlink to a FIFO
        fifo = tmp_path / "target"
        os.mkfifo(fifo)
        path = tmp_path / "link.txt"
        path.symlink_to(fifo)
    with listener:
        yield path


def message() -> EmailMessage:
    return EmailMessage("s", "b", FROM, [TO])


MESSAGE = r"only regular files can be attached"


def test_attach_file_refuses_special_files(special: Path) -> None:
    for mimetype in (None, "text/plain", "application/octet-stream"):
        with pytest.raises(InvalidMessageError, match=MESSAGE) as info:
            message().attach_file(special, mimetype)
        assert str(special) in str(info.value)


async def test_aattach_file_refuses_special_files(special: Path) -> None:
    for mimetype in (None, "text/plain", "application/octet-stream"):
        with pytest.raises(InvalidMessageError, match=MESSAGE):
            await message().aattach_file(special, mimetype)


def test_a_path_as_content_is_refused_when_special(special: Path) -> None:
    for mimetype in ("text/plain", "application/octet-stream", "message/rfc822"):
        with pytest.raises(InvalidMessageError, match=MESSAGE):
            message().attach("x", special, mimetype)
    with pytest.raises(InvalidMessageError, match=MESSAGE):
        message().attach_inline_file(special, "image/png")
    with pytest.raises(InvalidMessageError, match=MESSAGE):
        Base64Payload(special)
    for mimetype in ("text/plain", "application/octet-stream"):
        mail = message()  # an attachment tuple added without attach()
        mail.attachments.append(EmailAttachment("x", special, mimetype))
        with pytest.raises(InvalidMessageError, match=MESSAGE):
            mail.as_bytes()


async def test_a_file_swapped_for_a_fifo_is_refused_when_sent(
    server: SMTPServer, tmp_path: Path
) -> None:
    """Checked again when read (non-blocking open + fstat): no hang."""
    batch = []
    for mimetype, size in (
        ("text/plain", 10),
        ("application/x", 10),
        ("application/x", STREAM_THRESHOLD + 10),
    ):
        path = tmp_path / f"swap-{len(batch)}"
        path.write_bytes(b"a" * size)
        mail = message()
        mail.attach("x", path, mimetype)
        path.unlink()
        os.mkfifo(path)
        batch.append(mail)
    failed = await send_batch(server, batch)
    assert failed == batch
    for mail in batch:
        assert MESSAGE in str(mail.result.error)  # type: ignore[union-attr]


@pytest.mark.parametrize("size", [10, STREAM_THRESHOLD + 10])
@pytest.mark.parametrize("mimetype", ["text/plain", "application/octet-stream"])
async def test_a_file_that_grows_is_not_read_past_its_size(
    server: SMTPServer, tmp_path: Path, size: int, mimetype: str
) -> None:
    path = tmp_path / "growing"
    path.write_bytes(b"a" * size)
    mail = message()
    mail.attach("g", path, mimetype)
    with path.open("ab") as file:
        file.write(b"b" * (3 * Base64Payload.BLOCK))
    failed = await send_batch(server, [mail])
    assert failed == [mail]
    assert "changed size" in str(mail.result.error)  # type: ignore[union-attr]
    assert b"YmJi" not in bytes(server.recorder.wire)  # base64 of "bbb"


def test_reading_stops_once_past_the_recorded_size(tmp_path: Path) -> None:
    path = tmp_path / "grows"
    path.write_bytes(b"a" * 1000)
    payload = Base64Payload(path)
    with path.open("ab") as file:
        file.write(b"b" * (10 * Base64Payload.BLOCK))
    produced = []
    with pytest.raises(InvalidMessageError, match="1000 octets then, 1001 or more now"):
        produced.extend(payload.blocks())
    assert produced == []  # nothing past the size was encoded
    with pytest.raises(InvalidMessageError, match="changed size"):
        payload.read()


async def test_async_reading_stops_once_past_the_recorded_size(tmp_path: Path) -> None:
    path = tmp_path / "grows"
    path.write_bytes(b"a" * 1000)
    payload = Base64Payload(path)
    with path.open("ab") as file:
        file.write(b"b" * (10 * Base64Payload.BLOCK))
    with pytest.raises(InvalidMessageError, match="changed size"):
        async for _ in payload.ablocks():
            pass
    with pytest.raises(InvalidMessageError, match="changed size"):
        await payload.aread()


def test_regular_files_and_links_to_them_still_work(tmp_path: Path) -> None:
    path = tmp_path / "r.txt"
    path.write_text("hello")
    link = tmp_path / "l.txt"
    link.symlink_to(path)
    mail = message()
    mail.attach_file(path)
    mail.attach_file(link)
    mail.attach("p.txt", path)
    data = mail.as_bytes()
    assert data.count(b"\r\nhello\r\n") == 3


def test_a_missing_file_still_raises_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        message().attach_file(tmp_path / "missing")
