"""Big renders leave the event loop (issue #8, class 4): the SMTP backend
renders a message in a worker thread when render_is_heavy() says it holds
more than RENDER_IN_THREAD octets of content to encode now (or long header
values, or foreign parts); small messages render inline. The figures behind
the threshold are in benchmarks/worst_case.py."""

from __future__ import annotations

import email.message
import threading
from typing import Any

import pytest

from asyncmail import EmailMessage, RawMessage
from asyncmail.message import RENDER_IN_THREAD, RenderedMessage, render_is_heavy
from hostile import FROM, TO, send_batch
from smtpserver import SMTPServer

pytestmark = pytest.mark.anyio


class Recording(EmailMessage):
    """Remembers which thread rendered it."""

    threads: list[int]

    def render(self, *, allow_8bit: bool = True) -> RenderedMessage:
        self.threads.append(threading.get_ident())
        return super().render(allow_8bit=allow_8bit)


def recording(subject: str, body: str) -> Recording:
    message = Recording(subject, body, FROM, [TO])
    message.threads = []
    return message


@pytest.fixture
def server() -> Any:
    with SMTPServer() as running:
        yield running


def test_which_messages_are_heavy() -> None:
    assert not render_is_heavy(EmailMessage("s", "small", FROM, [TO]))
    assert render_is_heavy(EmailMessage("s", "a" * (RENDER_IN_THREAD + 1), FROM, [TO]))
    assert render_is_heavy(EmailMessage("s" * 5000, "b", FROM, [TO]))
    mail = EmailMessage("s", "b", FROM, [TO])
    mail.attach("big.txt", "t" * (RENDER_IN_THREAD + 1), "text/plain")
    assert render_is_heavy(mail)
    mail = EmailMessage("s", "b", FROM, [TO])
    mail.attachments.append(email.message.Message())
    assert render_is_heavy(mail)
    assert render_is_heavy(
        RawMessage(b"S: x\r\n\r\n" + b"a" * RENDER_IN_THREAD, FROM, [TO])
    )
    # A small raw message is one quick pass over its bytes: on the loop (a
    # thread hop per prebuilt message would cost more than the render).
    assert not render_is_heavy(RawMessage(b"S: x\r\n\r\nsmall\r\n", FROM, [TO]))

    class Custom(RawMessage):
        def render(self, *, allow_8bit: bool = True) -> RenderedMessage:
            return super().render(allow_8bit=allow_8bit)

    # A render() of a subclass's own: unknown work, so off the loop.
    assert render_is_heavy(Custom(b"S: x\r\n\r\nsmall\r\n", FROM, [TO]))
    # A big binary attachment streams as it is sent: nothing to encode now.
    mail = EmailMessage("s", "b", FROM, [TO])
    mail.attach("big.bin", b"\x00" * (4 << 20), "application/octet-stream")
    assert not render_is_heavy(mail)


async def test_heavy_messages_render_in_a_worker_thread(server: SMTPServer) -> None:
    loop_thread = threading.get_ident()
    small = recording("small", "b")
    big = recording("big", "line of text\n" * 100_000)
    assert await send_batch(server, [small, big]) == []
    assert small.threads == [loop_thread]
    assert big.threads
    assert all(ident != loop_thread for ident in big.threads)
    assert server.messages[1].data.count(b"line of text\r\n") == 100_000
