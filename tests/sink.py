"""A fast counting SMTP sink on 127.0.0.1 for bulk tests (aiosmtpd is too
slow for ten thousand messages in a test).

A small SMTP server written on asyncio's Protocol: ESMTP with PIPELINING,
8BITMIME and SMTPUTF8, replies in order for pipelined commands, and it counts
what it accepted: messages, and each message's envelope (and its data when
``keep_data``). A recipient containing ``refuse`` is refused with 550.
``delay`` holds each end-of-data reply that many seconds (messages stay "in
flight"). It runs its own event loop in a thread, like tests/smtpserver.py.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self


@dataclass
class Envelope:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes = b""


@dataclass
class Counts:
    messages: int = 0
    envelopes: list[Envelope] = field(default_factory=list)
    sessions: int = 0


class _Sink(asyncio.Protocol):
    def __init__(self, server: SinkServer) -> None:
        self.server = server
        self.buffer = bytearray()
        self.in_data = False
        self.held = False
        self.mail_from = ""
        self.rcpts: list[str] = []
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.server.counts.sessions += 1
        transport.write(b"220 sink ESMTP\r\n")

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.held:
            self._process()

    def _process(self) -> None:
        out: list[bytes] = []
        while not self.held:
            if self.in_data:
                if self.buffer.startswith(b".\r\n"):
                    end, size = 0, 3
                else:
                    found = self.buffer.find(b"\r\n.\r\n")
                    if found < 0:
                        break
                    end, size = found + 2, 5
                body = bytes(self.buffer[:end])
                del self.buffer[: end + size - 2 if end else size]
                self.in_data = False
                reply = self._accept(body)
                if self.server.delay:
                    self._write(out)
                    out = []
                    self.held = True
                    loop = asyncio.get_running_loop()
                    loop.call_later(self.server.delay, self._release, reply)
                    return
                out.append(reply)
                continue
            index = self.buffer.find(b"\r\n")
            if index < 0:
                break
            line = bytes(self.buffer[:index]).decode("utf-8", "replace")
            del self.buffer[: index + 2]
            verb = line[:4].upper()
            if verb == "EHLO":
                out.append(
                    b"250-sink\r\n250-PIPELINING\r\n250-8BITMIME\r\n"
                    b"250-SMTPUTF8\r\n250 SIZE 10485760\r\n"
                )
            elif verb in ("HELO", "RSET", "NOOP"):
                if verb == "RSET":
                    self.rcpts = []
                out.append(b"250 OK\r\n")
            elif verb == "MAIL":
                self.mail_from = _path(line)
                self.rcpts = []
                out.append(b"250 2.1.0 OK\r\n")
            elif verb == "RCPT":
                address = _path(line)
                if "refuse" in address:
                    out.append(b"550 5.1.1 No such user here\r\n")
                else:
                    self.rcpts.append(address)
                    out.append(b"250 2.1.5 OK\r\n")
            elif verb == "DATA":
                if self.rcpts:
                    self.in_data = True
                    out.append(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                else:
                    out.append(b"554 5.5.1 No valid recipients\r\n")
            elif verb == "QUIT":
                out.append(b"221 Bye\r\n")
                self._write(out)
                assert self.transport is not None
                self.transport.close()
                return
            else:
                out.append(b"502 5.5.2 Command not recognised\r\n")
        self._write(out)

    def _accept(self, body: bytes) -> bytes:
        counts = self.server.counts
        counts.messages += 1
        data = body if self.server.keep_data else b""
        counts.envelopes.append(Envelope(self.mail_from, self.rcpts, data))
        self.rcpts = []
        return f"250 2.0.0 Ok: queued as Q{counts.messages}\r\n".encode()

    def _release(self, reply: bytes) -> None:
        self.held = False
        if self.transport is None or self.transport.is_closing():
            return
        self.transport.write(reply)
        self._process()

    def _write(self, out: list[bytes]) -> None:
        if out and self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(out))


def _path(line: str) -> str:
    start, end = line.find("<"), line.find(">")
    return line[start + 1 : end] if 0 <= start < end else ""


class SinkServer:
    """``with SinkServer() as sink:`` a sink on ``sink.port`` until the block
    ends; ``sink.counts`` says what it accepted."""

    def __init__(self, *, delay: float = 0.0, keep_data: bool = False) -> None:
        self.delay = delay
        self.keep_data = keep_data
        self.counts = Counts()
        self.host = "127.0.0.1"
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._start(), self._loop)
        future.result(timeout=10)
        return self

    async def _start(self) -> None:
        self._server = await self._loop.create_server(lambda: _Sink(self), self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _stop(self) -> None:
        assert self._server is not None
        self._server.close()
        if hasattr(self._server, "close_clients"):  # Python 3.13
            self._server.close_clients()
        await self._server.wait_closed()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()
