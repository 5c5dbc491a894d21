"""What asyncmail relies on in aiosmtplib, private parts included.

asyncmail.smtp.session sets the session up with aiosmtplib and then takes
its transport over (asyncmail.smtp.session.hand_over), reading the
protocol's private ``_buffer`` (bytes read but not parsed: unsolicited data)
on the way. These tests fail when an aiosmtplib release changes any of it,
so that an upgrade is a deliberate change, never a silent one; the
dependency is pinned below aiosmtplib's next major version.
"""

from __future__ import annotations

import asyncio
import re
import tomllib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiosmtplib
import pytest

from asyncmail.smtp.session import hand_over

pytestmark = pytest.mark.anyio

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"
EHLO_REPLY = b"250-test.example greets you\r\n250-PIPELINING\r\n250 SIZE 1000\r\n"


@asynccontextmanager
async def server(*, after_ehlo: bytes = b"") -> AsyncIterator[tuple[int, list[str]]]:
    """A minimal SMTP server on 127.0.0.1: greets, answers EHLO (then sends
    *after_ehlo* in the same write), 250 to NOOP, 221 to QUIT; records the
    command lines."""
    seen: list[str] = []

    async def session(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        writer.write(b"220 test.example ESMTP\r\n")
        try:
            while line := await reader.readline():
                command = line.decode().rstrip("\r\n")
                seen.append(command)
                verb = command.split(" ", 1)[0].upper()
                if verb == "EHLO":
                    writer.write(EHLO_REPLY + after_ehlo)
                elif verb == "QUIT":
                    writer.write(b"221 bye\r\n")
                    await writer.drain()
                    break
                else:
                    writer.write(b"250 OK\r\n")
                await writer.drain()
        finally:
            writer.close()

    listener = await asyncio.start_server(session, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    try:
        yield port, seen
    finally:
        listener.close()
        await listener.wait_closed()


async def connected(port: int) -> aiosmtplib.SMTP:
    # The keyword arguments asyncmail.smtp.session passes.
    client = aiosmtplib.SMTP(
        hostname="127.0.0.1",
        port=port,
        local_hostname="client.example",
        timeout=5.0,
        use_tls=False,
        start_tls=False,
        tls_context=None,
    )
    await client.connect()
    await client.ehlo()
    return client


def test_the_pin_stops_below_the_next_major() -> None:
    pins = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    (pin,) = [p for p in pins if p.startswith("aiosmtplib")]
    assert re.fullmatch(r"aiosmtplib>=5\.\d+(\.\d+)?,<6", pin.replace(" ", ""))
    major = int(aiosmtplib.__version__.split(".")[0])
    assert major == 5  # what the hand-over was written and tested against


async def test_session_state_after_ehlo() -> None:
    async with server() as (port, _):
        client = await connected(port)
        try:
            # The extensions, by lower-case name, with their parameters.
            assert client.esmtp_extensions["size"] == "1000"
            assert "pipelining" in client.esmtp_extensions
            assert client.supports_extension("size")
            # The transport can be taken over.
            assert client.transport is not None
            assert hasattr(client.transport, "set_protocol")
            # Private: the protocol's buffer of bytes read but not parsed.
            protocol = client.protocol
            assert protocol is not None
            buffer = protocol._buffer
            assert isinstance(buffer, (bytes, bytearray))
            assert bytes(buffer) == b""
            # Public, used for the clear-text AUTH rule.
            assert client.get_transport_info("sslcontext") is None
            peer = client.get_transport_info("peername")
            assert isinstance(peer, tuple)
            assert peer[0] == "127.0.0.1"
        finally:
            client.close()


async def test_unparsed_bytes_stay_in_the_private_buffer() -> None:
    """Bytes that arrive with a reply, past its end, wait in ``_buffer``:
    the hand-over must see them to call the session out of step."""
    async with server(after_ehlo=b"250 unsolicited\r\n") as (port, _):
        client = await connected(port)
        try:
            assert client.protocol is not None
            for _ in range(100):  # the same write: normally there already
                if client.protocol._buffer:
                    break
                await asyncio.sleep(0.01)
            assert bytes(client.protocol._buffer) == b"250 unsolicited\r\n"
            connection = hand_over(client, 5.0)
            assert not connection.usable  # never used for a message
        finally:
            client.close()


async def test_after_the_hand_over_our_protocol_speaks() -> None:
    async with server() as (port, seen):
        client = await connected(port)
        connection = hand_over(client, 5.0)
        assert connection.usable
        assert connection.pipelining
        assert connection.size_limit == 1000
        assert client.transport is not None
        assert client.transport.get_protocol() is connection.stream
        assert await connection.noop()
        await connection.close()
        for _ in range(100):
            if seen[-1:] == ["QUIT"]:
                break
            await asyncio.sleep(0.01)
        assert seen == ["EHLO client.example", "NOOP", "QUIT"]


def test_the_errors_mapped_at_the_boundary() -> None:
    """asyncmail.smtp.errors.map_error reads ``code`` and ``message``."""
    for kind in (
        aiosmtplib.SMTPConnectResponseError,
        aiosmtplib.SMTPAuthenticationError,
        aiosmtplib.SMTPResponseException,
        aiosmtplib.SMTPHeloError,
    ):
        error = kind(421, "4.3.2 busy")
        assert (error.code, error.message) == (421, "4.3.2 busy")
        assert isinstance(error, aiosmtplib.SMTPException)
    assert issubclass(aiosmtplib.SMTPConnectResponseError, aiosmtplib.SMTPConnectError)
    assert issubclass(aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPException)
    assert issubclass(aiosmtplib.SMTPTimeoutError, aiosmtplib.SMTPException)
