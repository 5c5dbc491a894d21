"""A message that cannot be sent fails alone, with its reason, and nothing
of it is kept.

Content of the wrong type, an attachment that vanished, changed size or was
never there: that message fails with an InvalidMessageError saying why, the
rest of the batch is sent, on every backend. A batch that fails silently
keeps no message alive.
"""

from __future__ import annotations

import gc
import weakref
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import asyncmail
import asyncmail.dnsname
from asyncmail import (
    EmailMessage,
    EmailMultiAlternatives,
    InvalidMessageError,
    MessageResult,
    MessageStatus,
    Outcome,
)
from asyncmail.backends.smtp import EmailBackend
from asyncmail.message import STREAM_THRESHOLD
from helpers import (
    make_backend,
    message,
    outcomes,
    result_of,
    scripted,
    unused_port,
)

pytestmark = pytest.mark.anyio

TEMPORARY, PERMANENT = Outcome.TEMPORARY, Outcome.PERMANENT


# -- content of the wrong type fails its message alone ----------------------

BAD_CONTENT = pytest.mark.parametrize(
    ("kind", "raw_error"),
    [("wrong-type", TypeError), ("undecodable", UnicodeDecodeError)],
)


def bad_message(kind: str) -> EmailMultiAlternatives:
    msg = EmailMultiAlternatives(
        "Message 2", "Body.\n", "sender2@example.com", ["rcpt2@example.com"]
    )
    if kind == "wrong-type":
        msg.attach("x.bin", 12345, "application/octet-stream")  # type: ignore[arg-type]
    else:
        msg.attach_alternative(b"\xff\xfe<p>hi</p>", "text/html")
    return msg


@BAD_CONTENT
def test_bad_content_still_raises_directly_outside_backends(
    kind: str, raw_error: type[Exception]
) -> None:
    """The counterpart: only backends turn the error into an
    InvalidMessageError; the message API raises it as it always did."""
    with pytest.raises(raw_error) as info:
        bad_message(kind).as_bytes()
    assert not isinstance(info.value, InvalidMessageError)


@BAD_CONTENT
@pytest.mark.parametrize("max_connections", [1, 3])
@pytest.mark.parametrize("silent", [True, False], ids=["silent", "raises"])
async def test_message_with_bad_content_fails_alone(
    kind: str, raw_error: type[Exception], max_connections: int, silent: bool
) -> None:
    with scripted() as server:
        messages = [message(1), bad_message(kind), message(3)]
        backend = make_backend(server, max_connections=max_connections)

        if silent:
            assert await backend.send_messages(messages, fail_silently=True) == 2
        else:
            with pytest.raises(InvalidMessageError) as info:
                await backend.send_messages(messages)
            assert info.value.sent == 2
            assert info.value is messages[1].result.error  # type: ignore[union-attr]
            assert list(info.value.results) == [m.result for m in messages]

    assert sorted(item.mail_from for item in server.accepted) == [
        "sender1@example.com",
        "sender3@example.com",
    ]
    assert "sender2@example.com" not in " ".join(server.commands)
    bad = result_of(messages[1])
    assert bad.status is MessageStatus.FAILED
    assert isinstance(bad.error, InvalidMessageError)
    assert isinstance(bad.error.__cause__, raw_error)
    assert outcomes(messages[1]) == {"rcpt2@example.com": PERMANENT}
    assert result_of(messages[0]).ok
    assert result_of(messages[2]).ok


# -- attachments that cannot be read ---------------------------------------------


def streamed_attachment(tmp_path: Path, n: int = 1) -> tuple[EmailMessage, Path]:
    """Message *n* with a file attached by reference (over the threshold)."""
    path = tmp_path / f"big{n}.bin"
    path.write_bytes(bytes(range(256)) * (STREAM_THRESHOLD // 256 + 1))
    mail = message(n)
    mail.attach_file(path, "application/octet-stream")
    return mail, path


def local_backend(kind: str, tmp_path: Path, **options: Any) -> Any:
    import io

    if kind == "console":
        options["stream"] = io.StringIO()
    elif kind == "filebased":
        options["file_path"] = tmp_path / "outbox"
    return asyncmail.get_connection(
        f"asyncmail.backends.{kind}.EmailBackend", **options
    )


@pytest.mark.parametrize("kind", ["console", "filebased", "locmem"])
async def test_a_vanished_attachment_fails_its_message_alone(
    kind: str, tmp_path: Path
) -> None:
    """Not a raw FileNotFoundError (which even fail_silently let through,
    stopping the batch): that message fails with the reason, the next is sent."""
    asyncmail.outbox.clear()
    gone, path = streamed_attachment(tmp_path)
    path.unlink()
    second = message(2)

    backend = local_backend(kind, tmp_path)
    assert await backend.send_messages([gone, second], fail_silently=True) == 1
    failed = result_of(gone)
    assert failed.status is MessageStatus.FAILED
    assert isinstance(failed.error, InvalidMessageError)
    assert str(path) in str(failed.error)
    assert result_of(second).status is MessageStatus.SENT
    if kind == "locmem":
        assert [m.subject for m in asyncmail.outbox] == ["Message 2"]

    gone.result = None
    with pytest.raises(InvalidMessageError, match="cannot be read"):
        await local_backend(kind, tmp_path).send_messages([gone])


async def test_an_attachment_given_as_a_missing_path_fails_cleanly(
    tmp_path: Path,
) -> None:
    mail = message(1)
    mail.attach("x.bin", tmp_path / "missing.bin", "application/octet-stream")
    backend = local_backend("locmem", tmp_path)
    assert await backend.send_messages([mail], fail_silently=True) == 0
    assert isinstance(result_of(mail).error, InvalidMessageError)


async def test_locmem_keeps_the_attached_file_as_it_was_when_sent(
    tmp_path: Path,
) -> None:
    asyncmail.outbox.clear()
    mail, path = streamed_attachment(tmp_path)
    sent_bytes = path.read_bytes()
    assert await local_backend("locmem", tmp_path).send_messages([mail]) == 1
    path.write_bytes(b"changed afterwards")

    (stored,) = asyncmail.outbox
    (attachment,) = stored.attachments
    assert attachment.content == sent_bytes
    parsed = stored.message()
    (part,) = list(parsed.iter_attachments())
    assert part.get_content() == sent_bytes


async def test_locmem_fails_a_file_that_changed_size_since_attached(
    tmp_path: Path,
) -> None:
    asyncmail.outbox.clear()
    mail, path = streamed_attachment(tmp_path)
    with path.open("ab") as file:
        file.write(b"more")
    assert (
        await local_backend("locmem", tmp_path).send_messages(
            [mail], fail_silently=True
        )
        == 0
    )
    assert "changed size" in str(result_of(mail).error)
    assert asyncmail.outbox == []


# -- a silent failure keeps no message alive ---------------------------------


@pytest.mark.parametrize("via", ["call", "backend"])
async def test_silent_failure_keeps_no_message_alive(via: str) -> None:
    """Nothing listening: every message fails. Afterwards none of them is
    still referenced (not by the backend's open_error, nor by a traceback).
    The "backend" case (the backend's own fail_silently) is the counterpart:
    its open_error is kept, with no results."""
    samples: list[weakref.ref[EmailMessage]] = []
    seen: Counter[tuple[MessageStatus, str]] = Counter()

    def source() -> Iterator[EmailMessage]:
        for n in range(2000):
            msg = message(n)
            if n % 100 == 0:
                samples.append(weakref.ref(msg))
            yield msg

    def on_result(result: MessageResult) -> None:
        seen[result.status, type(result.error).__name__] += 1

    backend = EmailBackend(
        host="127.0.0.1",
        port=unused_port(),
        timeout=2.0,
        retries=0,
        local_hostname="client.example",
        fail_silently=via == "backend",
    )

    count = await backend.send_messages(
        source(), fail_silently=via == "call", on_result=on_result
    )
    gc.collect()

    assert count == 0
    assert seen == {(MessageStatus.FAILED, "SMTPConnectError"): 2000}
    assert len(samples) == 20
    assert [ref for ref in samples if ref() is not None] == []
    # send_messages connects per message (open_error is for open() alone).
    assert backend.open_error is None
